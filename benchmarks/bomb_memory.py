"""Peak memory of an extraction with and without a 4,000,000x1 PNG (issue 17; docs/reliability.md 19).

    python benchmarks/bomb_memory.py                  # tiny_cnn over 10 good images, +/- the strip
    python benchmarks/bomb_memory.py --json           # one JSON line (tests/test_images.py reads it)

The strip is a 3,957-byte grayscale PNG that passes a pixel-count bomb guard (4 Mpx); resized
whole to a network's input it once asked for 16 GB (tiny_cnn, 37 px) or 64 GB (256 px). Each
extraction runs in a fresh process, since ru_maxrss is a process's high-water mark. It passes
when the strip is recorded as failed with a reason naming the aspect ratio and the peak stays
within 1.2x of the run without it (exit status 1 otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 1.2


def make_tree(root: Path, with_strip: bool) -> Path:
    """Two classes of 5 good 40x32 PNGs; with `with_strip`, a 4,000,000x1 PNG among the ants."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(("ants", "bees")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    if with_strip:
        Image.new("L", (4_000_000, 1), 128).save(root / "ants" / "strip.png")
    return root


def child(data: str, out: str, backbone: str) -> None:
    """Extract `data` here and print {"maxrss_mb", "failed"} as JSON."""
    import resource

    from featx.data import open_dataset
    from featx.extraction import ExtractConfig, extract
    from featx.store import FeatureStore

    result = extract(open_dataset(data), backbone, out, ExtractConfig(weights="none", workers=0),
                     show_progress=False)
    with FeatureStore(result.store) as store:
        failed = {store.paths[i]: reason for i, reason in store.failed.items()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"maxrss_mb": round(peak, 1), "failed": failed}))


def measure(backbone: str = "tiny_cnn") -> dict:
    """Both runs, each in its own process: {"without": ..., "with": ..., "ratio": ...}."""
    env = dict(os.environ, FEATX_BACKBONE_MODULES="tests.tiny_backbone",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, strip in (("without", False), ("with", True)):
            data = make_tree(Path(tmp) / name, strip)
            done = subprocess.run([sys.executable, __file__, "--child", str(data), str(Path(tmp) / f"s-{name}"),
                                   "--backbone", backbone], env=env, capture_output=True, text=True,
                                  timeout=300)
            if done.returncode != 0:
                raise RuntimeError(f"extraction {name} the strip failed:\n{done.stderr[-2000:]}")
            runs[name] = json.loads(done.stdout.strip().splitlines()[-1])
    runs["ratio"] = round(runs["with"]["maxrss_mb"] / runs["without"]["maxrss_mb"], 3)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tiny_cnn")
    parser.add_argument("--json", action="store_true", help="one JSON line")
    parser.add_argument("--child", nargs=2, metavar=("DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child, args.backbone)
    runs = measure(args.backbone)
    reason = runs["with"]["failed"].get("ants/strip.png", "")
    ok = runs["ratio"] <= LIMIT and "aspect ratio" in reason
    if args.json:
        print(json.dumps(runs))
    else:
        print(f"peak without the strip: {runs['without']['maxrss_mb']} MB")
        print(f"peak with the strip:    {runs['with']['maxrss_mb']} MB ({runs['ratio']}x, limit {LIMIT}x)")
        print(f"ants/strip.png: {reason or 'NOT recorded as failed'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
