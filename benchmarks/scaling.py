"""featx extract with 1 and 2 processes (torchrun), files to merged store, on this machine.

    python benchmarks/scaling.py                          # ELPV, efficientnet_lite0, CPU
    python benchmarks/scaling.py --nprocs 1 2 4 --device cuda   # on a multi-GPU node

Each run is a fresh `featx extract` in a subprocess (torchrun for N > 1); the time is the whole
command's wall time (start-up, ONNX export from the cache, extraction, merge), and the images/s
the store reports. With N CPU processes each rank gets cores/N threads.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from featx.store import FeatureStore


def run(nproc: int, args, out: Path) -> tuple[float, float]:
    command = ["-m", "featx.cli", "extract", args.data, "-b", args.backbone, "--out", str(out),
               "--views", str(args.views), "--device", args.device]
    if nproc > 1:
        command = ["-m", "torch.distributed.run", "--nproc-per-node", str(nproc), *command]
    threads = max(1, (os.cpu_count() or 1) // nproc)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run([sys.executable, *command], env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    (store,) = out.glob("*.h5")
    with FeatureStore(store) as st:
        summary = st.summary()
    images = summary.clean_shape[0] + summary.aug_total
    return wall, images / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="elpv")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"{args.backbone} on {args.data}, clean + {args.views} views, device {args.device}, "
          f"{os.cpu_count()} CPUs")
    base = None
    for nproc in args.nprocs:
        with tempfile.TemporaryDirectory() as tmp:
            wall, rate = run(nproc, args, Path(tmp))
        base = base or rate
        print(f"  {nproc} process(es): {wall:6.1f} s wall, {rate:7.1f} img/s end to end "
              f"({rate / base:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
