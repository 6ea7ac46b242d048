"""featx extract | merge: run each backbone once into a feature store (torchrun: one shard per
process, merged at the end)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from featx.cli import options as o
from featx.cli.core import err, next_step, open_data, out, plural, require_data, say
from featx.cli.outputs import out_file, out_folder

DEFAULT_BACKBONE = "efficientnet_lite0"  # `featx backbones` shows its store's width


def extract(
    ctx: typer.Context,
    data: o.DataOrConfig = None,
    backbone: o.Backbones = (DEFAULT_BACKBONE,),
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
    from featx.extraction.config import ExtractConfig
    from featx.extraction.noop import complete_result

    data = require_data(data)
    # A complete store on a read-only mount is reported complete: the run checks --out for writes
    # when it has something to write (before any file), not here
    out_folder(out_dir, probe=False)
    ds = open_data(data, ctx.params)
    settings = ExtractConfig(views=views, aug=aug, batch_size=batch_size, workers=workers, device=device,
                             dtype=dtype, seed=seed, weights=weights, input_size=input_size, decode=decode,
                             amp=amp, engine=engine, threads=threads, cut=cut, pool=pool,
                             tta=tta, overwrite=overwrite, update=update)
    quiet = _rank() != 0  # under torchrun, rank 0 speaks for all
    stores = []
    try:
        for name in backbone:
            # A re-run over a complete store is decided before torch is imported (seconds sooner).
            r = complete_result(ds, name, out_dir, settings, device=device) or _run(ds, name, out_dir, settings, quiet)
            stores.append(r.store)
            if not quiet:
                _print_extraction(r)
    finally:
        _finish()
    if not quiet:
        _print_next(stores)


def _run(ds, name: str, out_dir: Path, settings, quiet: bool = False):
    """The full run (torch from here on): create, resume, update, or find the store complete."""
    from featx.runtime.progress import note_start

    # Importing torch and building the backbone take seconds before the first progress frame.
    note_start(f"{name}: loading torch and the backbone", enabled=not quiet)
    from featx.extraction.run import extract as run_extract

    return run_extract(ds, name, out_dir, settings)


def _rank() -> int:
    """This process's torchrun rank (0 alone); featx.runtime.distributed imports torch."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return 0
    from featx.runtime.distributed import context

    return context().rank


def _finish() -> None:
    """Leave the process group, if a run joined one (never imports torch to find out)."""
    if "featx.runtime.distributed" in sys.modules:
        from featx.runtime.distributed import finish

        finish()


def _print_extraction(r) -> None:
    """What the run did, in words that wrap at 80 columns, then the store's path on its own line."""
    for warning in r.warnings:
        err.print(f"warning: {warning}", markup=False, highlight=False)
    failed = f"{r.failed:,} failed" + (" (see `featx info`)" if r.failed else "")
    if r.status == "updated" and r.same_data:
        say(f"{r.backbone}: only file times changed ({r.update}); the store keeps version {r.version}, "
            f"{plural(r.samples, 'sample')}, {failed}:")
    elif r.status == "updated":
        say(f"{r.backbone}: updated to version {r.version}: {r.update}; {plural(r.images, 'image')} "
            f"forwarded in {r.seconds:.1f} s, {plural(r.samples, 'sample')}, {failed}:")
    elif r.status == "complete":
        say(f"{r.backbone}: already complete ({plural(r.samples, 'sample')}, {failed}); nothing to do:")
    else:
        say(f"{r.backbone}: {r.status}, {plural(r.images, 'image')} in {r.seconds:.1f} s "
            f"({r.images_per_second:.1f} img/s on {r.device}), {plural(r.samples, 'sample')}, {failed}:")
    out.print(f"  {r.store}", markup=False, highlight=False)


def _print_next(stores: list[str]) -> None:
    """A head on the store (on each, when there are several: the first named); for a store with
    no labels yet, which images to label first (train-head would have nothing to learn from)."""
    if stores and not _has_labels(stores[0]):
        next_step(f"featx select --strategy {_first_labels_strategy()} --budget 50", stores[0])
    elif len(stores) == 1:
        next_step("featx train-head", stores[0])
    elif stores:
        next_step(f"featx train-head on each of the {len(stores)} stores, e.g. featx train-head", stores[0])


def merge(shards: o.Shards, out_path: o.MergeOut, mode: o.MergeMode = "copy") -> None:
    """Merge the shard stores of a torchrun extraction into one store (rank 0 does it itself)."""
    from featx.store import merge_shards

    out_file(out_path, example="merged.h5")
    path = merge_shards(shards, out_path, mode)
    out.print(f"merged {len(shards)} shards into {path} ({mode})", markup=False, highlight=False)


def _has_labels(store: str) -> bool:
    from featx.store import FeatureStore

    with FeatureStore(store) as st:
        return bool((st.labels >= 0).any())


def _first_labels_strategy() -> str:
    """TypiClust for a store with no labels (a few typical images of each cluster); random where
    scikit-activeml, which implements it, is not installed (the `explore` extra)."""
    import importlib.util

    return "typiclust" if importlib.util.find_spec("skactiveml") else "random"
