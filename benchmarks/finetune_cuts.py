"""Top-block fine-tuning on cached maps, end to end, for several cut points (ELPV, CPU).

    python benchmarks/finetune_cuts.py                          # 4 classes, cuts block11 + block14
    python benchmarks/finetune_cuts.py --binarize 0.5           # 2 classes (defective = p > 0.5)
    python benchmarks/finetune_cuts.py --binarize 0.5 --val-frac 0   # the published 75/25 split
    python benchmarks/finetune_cuts.py --cut block14 --epochs 8
    python benchmarks/finetune_cuts.py --lr-find --seed 1       # also at the LR finder's rate

Per cut, timed from nothing to a fine-tuned network: `extract --cut CUT` (clean + K views of every
training image, ONNX Runtime on CPU), the default linear-head sweep on the store's features,
then `finetune --from-block CUT` warm-started from that head. Prints the probe's and the
fine-tune's test accuracy side by side, and the seconds of each step. ELPV split 60/15/25
(stratified, seed 0); the val split picks the heads and the best fine-tuning epoch. Without a
val split (--val-frac 0), the probe is chosen on 15% held out of train and the fine-tune, which
trains on all of train, keeps its last epoch.
With --lr-find, each cut is also fine-tuned at the rate the LR range test suggests (`finetune
--lr auto`), the test's seconds counted in that row's total.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from featx.data import DatasetOptions, open_dataset
from featx.extraction import ExtractConfig, extract
from featx.finetuning import FinetuneConfig, find_lr_top, finetune_top
from featx.probes.train import train_head


def run_cut(dataset, args, cut: str, tmp: Path) -> list[dict]:
    """One row per rate: featx's default (or --lr), then, with --lr-find, the found one."""
    start = time.perf_counter()
    store = extract(dataset, args.backbone, tmp, ExtractConfig(views=args.views, aug=args.aug, cut=cut),
                    show_progress=False).store
    extracted = time.perf_counter()
    probe = train_head(store, "linear", out=tmp / f"{cut}.linear", show_progress=False)
    probed = time.perf_counter()
    config = FinetuneConfig(from_block=cut, epochs=args.epochs, lr=args.lr, lr_ratio=args.lr_ratio,
                            patience=None, seed=args.seed)
    common = {"cut": cut, "probe": probe.test, "extract": extracted - start, "probe_s": probed - extracted,
              "map_mb": Path(store).stat().st_size / 2**20}
    rows = []
    for found in [False, True] if args.lr_find else [False]:
        begin = time.perf_counter()
        if found:
            config = replace(config, lr=find_lr_top(store, probe.path, config, show_progress=False).suggestion)
        tuned = finetune_top(store, probe.path, tmp / f"{cut}.top{int(found)}", config, show_progress=False)
        top_s = time.perf_counter() - begin
        rows.append({**common, "lr": config.lr, "found": found, "tuned": tuned.test, "top_s": top_s,
                     "total": common["extract"] + common["probe_s"] + top_s, "best_epoch": tuned.best_epoch})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--cut", action="append", help="Repeat; default block11 and block14.")
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--aug", default="flips")
    parser.add_argument("--epochs", type=int, help="Default: featx's (12).")
    parser.add_argument("--lr", type=float, help="Default: featx's (3e-4).")
    parser.add_argument("--lr-ratio", type=float, help="Default: featx's (1).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--binarize", type=float, default=None, help="0.5: ELPV 2 classes")
    parser.add_argument("--val-frac", type=float, default=0.15)
    parser.add_argument("--test-frac", type=float, default=0.25)
    parser.add_argument("--lr-find", action="store_true", help="Also fine-tune at the LR finder's rate.")
    args = parser.parse_args()
    dataset = open_dataset("elpv", DatasetOptions(binarize=args.binarize, val_frac=args.val_frac,
                                                  test_frac=args.test_frac))
    c = FinetuneConfig(from_block="any", epochs=args.epochs, lr=args.lr, lr_ratio=args.lr_ratio)
    split = f"{1 - args.val_frac - args.test_frac:.0%}/{args.val_frac:.0%}/{args.test_frac:.0%}"
    print(f"ELPV {len(dataset.classes)} classes, {len(dataset.samples)} images split {split}, {args.backbone}, "
          f"K={args.views} '{args.aug}' views, {c.epochs} epochs at lr {c.lr:g} (ratio "
          f"{c.lr_ratio:g}), {torch.get_num_threads()} CPU threads", flush=True)
    print(f"{'cut':9} {'lr':>8} {'store MB':>8} {'extract s':>9} {'probe s':>7} {'top s':>6} {'total s':>7}   "
          f"{'probe top-1/bal':>15}   {'tuned top-1/bal':>15}  best epoch")
    for cut in args.cut or ["block11", "block14"]:
        with tempfile.TemporaryDirectory() as tmp:
            rows = run_cut(dataset, args, cut, Path(tmp))
        for r in rows:
            p, t = r["probe"], r["tuned"]
            lr = f"{r['lr']:.2g}" + ("*" if r["found"] else "")
            print(f"{cut:9} {lr:>8} {r['map_mb']:8.0f} {r['extract']:9.1f} {r['probe_s']:7.1f} "
                  f"{r['top_s']:6.1f} {r['total']:7.1f}   {p.top1:.3f} / {p.balanced_accuracy:.3f}     "
                  f"{t.top1:.3f} / {t.balanced_accuracy:.3f}    {r['best_epoch']}", flush=True)
    if args.lr_find:
        print("* the rate suggested by the LR range test (its seconds are in 'top s')")


if __name__ == "__main__":
    main()
