"""featx's small work, quiet and beside a competing CPU load, side by side in one run (issue 31).

    python benchmarks/busy_machine.py                      # writes benchmarks/results/busy_machine.md
    python benchmarks/busy_machine.py --images 100 --store /work/stores/elpv4/....h5

Each measurement runs twice: on the machine as it is, then with one busy-loop process per
--load core spinning beside it. Measured: a full `featx extract` of --images synthetic images
and its no-op re-run (the store is complete), a warm 1-image predict_proba (the head and its
backbone already loaded), `featx predict` of 20 images (a fresh process, as a user runs it), and
one train-head (the default cross-validated linear sweep, --epochs epochs) with the threads
featx chooses (featx.runtime.device.head_threads) vs torch's default.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STORE = "/work/stores/elpv4/elpv_efficientnet_lite0_224px_clean.h5"
FEATX = [sys.executable, "-m", "featx"]


def spin() -> None:
    while True:
        pass


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cli(*args: str) -> None:
    subprocess.run(FEATX + list(args), check=True, capture_output=True)


def measure(data: Path, work: Path, store: str, epochs: int) -> dict[str, float]:
    import torch

    import featx
    from featx.probes.sweep import HeadConfig
    from featx.runtime.device import head_threads, torch_threads
    from featx.store import FeatureStore

    out: dict[str, float] = {}
    stores = work / "stores"
    args = ["extract", str(data), "--backbone", "resnet18", "--weights", "none", "--input-size", "112",
            "--out", str(stores), "--overwrite"]
    out["extract, full (new store)"] = timed(lambda: cli(*args))
    out["extract, no-op re-run (complete store)"] = timed(lambda: cli(*args[:-1]))
    small = next(stores.glob("*.h5"))
    head = featx.train_head(small, "logreg", out=work / "head", show_progress=False)
    image = str(next(data.rglob("*.png")))
    head.predict_proba([image])  # loads the backbone: what follows is warm
    out["predict_proba, 1 image, warm"] = timed(lambda: head.predict_proba([image]))
    images = [str(p) for p in sorted(data.rglob("*.png"))[:20]]
    out["featx predict, 20 images (new process)"] = timed(
        lambda: cli("predict", *images, "--head", str(head.path), "--out", str(work / "p.csv")))
    with FeatureStore(store) as st:
        dim = st.feature_dim
    config = HeadConfig(epochs=epochs)
    chosen = head_threads(config.batch_size, dim)
    default = torch.get_num_threads()
    for label, threads in ((f"train-head, chosen threads ({chosen})", chosen),
                           (f"train-head, torch default ({default})", default)):
        with torch_threads(threads):
            out[label] = timed(lambda: featx.train_head(store, "linear", config, out=work / "lin",
                                                        show_progress=False))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="synthetic images to extract")
    parser.add_argument("--store", default=STORE, help="the store train-head is timed on")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--load", type=int, default=1, help="busy-loop processes in the loaded run")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "busy_machine.md")
    args = parser.parse_args()
    args.load_before = os.getloadavg()[0]  # what else the machine was doing: 'quiet' is relative
    from tests.image_trees import make_class_tree  # not conftest: it pins torch to one thread

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_class_tree(Path(tmp) / "data", classes=("a", "b"), per_class=args.images // 2)
        for name, load in (("quiet", 0), (f"{args.load} core(s) busy", args.load)):
            spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(load)]
            for p in spinners:
                p.start()
            try:
                runs[name] = measure(data, Path(tmp) / name.replace(" ", "_"), args.store, args.epochs)
            finally:
                for p in spinners:
                    p.terminate()
                    p.join()
            print(name, runs[name], flush=True)
    write(args, runs)


def write(args, runs: dict[str, dict[str, float]]) -> None:
    names = list(runs)
    rows = [f"| {what} | " + " | ".join(f"{runs[n][what]:.2f}" for n in names) + " |" for what in runs[names[0]]]
    text = "\n".join([
        "# featx on a busy machine (benchmarks/busy_machine.py)", "",
        f"Machine: {platform.node()}, {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"the 2-core dev box, shared with other engineers' jobs (1-minute load average {args.load_before:.1f} "
        "when the run began): 'quiet' is featx beside whatever else ran, and the other column adds one "
        f"busy-loop process per --load core ({args.load}).", "",
        f"Extraction: {args.images} synthetic images, resnet18 (random init), 112 px. train-head: the "
        f"default cross-validated linear sweep, {args.epochs} epoch(s), on {args.store}.", "",
        "| seconds | " + " | ".join(names) + " |", "|---|" + "---|" * len(names), *rows, ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
