"""featx extract | merge: run each backbone once into a feature store (torchrun: one shard per
process, merged at the end)."""

from __future__ import annotations

from pathlib import Path

import typer

from featx.cli import options as o
from featx.cli.core import err, open_data, out, require_data
from featx.cli.outputs import out_file, out_folder


def extract(
    ctx: typer.Context,
    data: o.DataOrConfig = None,
    backbone: o.Backbones = ("efficientnet_lite0",),
    out_dir: o.StoresOut = Path("stores"),
    views: o.Views = 0,
    aug: o.Aug = "mild",
    batch_size: o.BatchSize = 64,
    workers: o.Workers = None,
    device: o.Device = "auto",
    dtype: o.Dtype = "float16",
    seed: o.Seed = 0,
    weights: o.Weights = "default",
    input_size: o.InputSize = None,
    decode: o.Decode = "auto",
    amp: o.Amp = "bf16",
    engine: o.Engine = "auto",
    threads: o.Threads = None,
    cut: o.Cut = None,
    pool: o.Pool = "auto",
    tta: o.Tta = "none",
    overwrite: o.Overwrite = False,
    update: o.Update = True,
    label_col: o.LabelCol = None, binarize: o.Binarize = None, val_frac: o.ValFrac = 0.15,
    test_frac: o.TestFrac = 0.25, split_seed: o.SplitSeed = 0, class_map: o.ClassMap = None,
    subset: o.Subset = None,
    config: o.Config = None,
) -> None:
    """Run each backbone once over DATA (clean + K augmented views) into a feature store."""
    from featx.runtime.distributed import context, finish
    from featx.extraction import ExtractConfig
    from featx.extraction import extract as run_extract

    data = require_data(data)
    # A complete store on a read-only mount is reported complete: the run checks --out for writes
    # when it has something to write (before any file), not here
    out_folder(out_dir, probe=False)
    ds = open_data(data, ctx.params)
    settings = ExtractConfig(views=views, aug=aug, batch_size=batch_size, workers=workers, device=device,
                             dtype=dtype, seed=seed, weights=weights, input_size=input_size, decode=decode,
                             amp=amp, engine=engine, threads=threads, cut=cut, pool=pool,
                             tta=tta, overwrite=overwrite, update=update)
    quiet = context().rank != 0  # under torchrun, rank 0 speaks for all
    try:
        for name in backbone:
            r = run_extract(ds, name, out_dir, settings)
            if not quiet:
                _print_extraction(r)
    finally:
        finish()


def _print_extraction(r) -> None:
    for warning in r.warnings:
        err.print(f"warning: {warning}", markup=False, highlight=False)
    if r.status == "updated":
        out.print(f"{r.backbone}: updated {r.store} to version {r.version}: {r.update}; {r.images} "
                  f"images forwarded in {r.seconds:.1f} s, {r.samples} samples, {r.failed} failed",
                  markup=False, highlight=False)
    elif r.status == "complete":
        out.print(f"{r.backbone}: {r.store} is already complete ({r.samples} samples, "
                  f"{r.failed} failed); nothing to do", markup=False, highlight=False)
    else:
        out.print(f"{r.backbone}: {r.status} {r.store}: {r.images} images in {r.seconds:.1f} s "
                  f"({r.images_per_second:.1f} img/s on {r.device}), {r.samples} samples, "
                  f"{r.failed} failed" + (" (see `featx info`)" if r.failed else ""),
                  markup=False, highlight=False)


def merge(shards: o.Shards, out_path: o.MergeOut, mode: o.MergeMode = "copy") -> None:
    """Merge the shard stores of a torchrun extraction into one store (rank 0 does it itself)."""
    from featx.store import merge_shards

    out_file(out_path, example="merged.h5")
    path = merge_shards(shards, out_path, mode)
    out.print(f"merged {len(shards)} shards into {path} ({mode})", markup=False, highlight=False)
