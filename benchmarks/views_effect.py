"""Do stored augmented views help a head? Clean-only vs with-views, per recipe, on ELPV.

    python benchmarks/views_effect.py --views 2 --recipes mild flips tutorial

For each recipe: extract clean + K views once, then train the default linear sweep (and an MLP)
with and without the views; prints test top-1 and balanced accuracy side by side.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from featx.data import open_dataset
from featx.extraction import ExtractConfig, extract
from featx.probes.sweep import HeadConfig
from featx.probes.train import train_head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--recipes", nargs="+", default=["mild", "flips", "tutorial"])
    args = parser.parse_args()
    dataset = open_dataset("elpv")
    print(f"ELPV 4 classes, {args.backbone}, K={args.views}")
    print(f"{'recipe':10} {'head':7} {'clean-only top1/bal':>20} {'with views top1/bal':>20}")
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipes:
            start = time.perf_counter()
            r = extract(dataset, args.backbone, Path(tmp),
                        ExtractConfig(views=args.views, aug=recipe), show_progress=False)
            for kind in ("linear", "mlp"):
                cells = []
                for views in (False, True):
                    config = HeadConfig(head=kind, views=views)  # each kind's own defaults
                    m = train_head(r.store, kind, config, out=Path(tmp) / f"{recipe}.{kind}.{views}",
                                   show_progress=False).test
                    cells.append(f"{m.top1:.3f} / {m.balanced_accuracy:.3f}")
                print(f"{recipe:10} {kind:7} {cells[0]:>20} {cells[1]:>20}", flush=True)
            print(f"{'':10} (extract + heads {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
