"""featx map | select | label-curve: see the data, label what matters, know how many labels you need.

    featx map stores/cells.h5 --head heads/cells.linear --audit audit --out map.html
    featx select stores/cells.h5 --budget 50 --out picks.csv --copy-to to_label/
    featx label-curve stores/cells.h5 --strategy random --strategy margin --seeds 3 --out curve/
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from featx.cli import options as o
from featx.cli.core import err, next_step, out, plural
from featx.cli.outputs import out_file, out_folder

STRATEGIES = ("random", "margin", "entropy", "coreset", "typiclust", "probcover")  # featx.explore.STRATEGIES
DEFAULT_STRATEGY = "margin"  # featx.explore.DEFAULT_STRATEGY
METHODS = ("umap", "pca")  # featx.explore.coords.METHODS

MapOut = Annotated[Path, typer.Option("--out", metavar="FILE", help="The page (its coordinates go to FILE "
                                      "with .csv).")]
MapHead = Annotated[Optional[Path], typer.Option("--head", metavar="FILE", show_default="none",
                                                 help="Colour by this head's predictions and whether they are right.")]
MapAudit = Annotated[Optional[Path], typer.Option("--audit", metavar="DIR", show_default="none",
                                                  help="Colour by the findings of `featx audit --out DIR`.")]
Method = Annotated[str, typer.Option("--method", metavar="|".join(METHODS), callback=o.one_of(*METHODS),
                                     help="UMAP after PCA, or PCA's first two components alone.")]
PcaDims = Annotated[int, typer.Option("--pca-dims", metavar="N", min=2, help="PCA dimensions before UMAP.")]
Neighbours = Annotated[int, typer.Option("--neighbours", metavar="N", min=2, help="UMAP's n_neighbors.")]
MaxPoints = Annotated[int, typer.Option("--max-points", metavar="N", min=1,
                                        help="Points on the page; above it a stratified sample by class.")]
Thumbnails = Annotated[bool, typer.Option("--thumbnails/--no-thumbnails", help="Thumbnails on hover "
                                          "(needs the dataset where the store says).")]
Budget = Annotated[int, typer.Option("--budget", metavar="N", min=1, help="How many images to pick.",
                                     show_default=False)]
Strategy = Annotated[str, typer.Option("--strategy", metavar="|".join(STRATEGIES), callback=o.one_of(*STRATEGIES),
                                       help="How to pick (benchmarks/results/label_efficiency.md).")]
SelectHead = Annotated[Optional[Path], typer.Option(
    "--head", metavar="FILE", show_default="a head fitted on the store's labels",
    help="margin/entropy: this head's probabilities on the unlabelled images.")]
PicksOut = Annotated[Path, typer.Option("--out", metavar="FILE", help="The picks: path, score, strategy, reason.")]
CopyTo = Annotated[Optional[Path], typer.Option("--copy-to", metavar="DIR", show_default="none",
                                                help="Also copy the picked images into DIR (paths as in the dataset), "
                                                "to view or label elsewhere; the copies an earlier "
                                                "select made there go first (files changed since, "
                                                "and any others, stay).")]
Threshold = Annotated[float, typer.Option("--threshold", metavar="COS", callback=o.at_least(-1.0),
                                          help="Near-copies: cosine at least this, with pixel hashes within 4 bits.")]
Pixels = Annotated[bool, typer.Option("--pixels/--no-pixels", help="Confirm near-copies by the images' pixels.")]
Strategies = Annotated[list[str], typer.Option("--strategy", metavar="|".join(STRATEGIES),
                                               callback=o.one_of(*STRATEGIES), help="Strategies to simulate (repeat).")]
Seeds = Annotated[int, typer.Option("--seeds", metavar="N", min=1, help="Runs per strategy (the interval is over them).")]
CurveOut = Annotated[Path, typer.Option("--out", metavar="DIR", help="Folder for curve.json and curve.png.")]
CurvePca = Annotated[int, typer.Option("--pca-dims", metavar="N", min=0,
                                       help="PCA dimensions the simulation works in (0: the stored features).")]
PoolLimit = Annotated[Optional[int], typer.Option("--pool-limit", metavar="N", min=2, show_default="all",
                                                  help="Simulate on a seeded subsample of N training rows.")]


def map_(store: o.Store, out_path: MapOut = Path("map.html"), head: MapHead = None, audit: MapAudit = None,
         method: Method = "umap", pca_dims: PcaDims = 50, neighbours: Neighbours = 15,
         max_points: MaxPoints = 50_000, thumbnails: Thumbnails = True, seed: o.Seed = 0,
         config: o.Config = None) -> None:
    """A 2-D map of STORE's clean features, one point per sample, as one self-contained HTML page.

    Coordinates are cached beside the store (STORE.map.npz): a second map is instant."""
    from featx.explore import MapConfig, map_store
    from featx.explore.coords import Projection

    out_file(out_path, example="map.html")
    settings = MapConfig(head, audit, Projection(method, pca_dims, neighbours, seed=seed), max_points, thumbnails)
    result = map_store(store, out_path, settings, log=_note)
    how = "cached coordinates" if result.cached else result.method
    out.print(f"{result.shown:,} of {len(result.paths):,} samples mapped ({how}) in {result.seconds:.1f} s: "
              f"{result.page} (coordinates: {result.table})", markup=False, highlight=False)
    next_step("featx select --budget N", store)  # the unlabelled images worth labelling


def select(store: o.Store, budget: Budget, strategy: Strategy = DEFAULT_STRATEGY, head: SelectHead = None,
           out_path: PicksOut = Path("picks.csv"), copy_to: CopyTo = None, threshold: Threshold = 0.85,
           pixels: Pixels = True, seed: o.Seed = 0, config: o.Config = None) -> None:
    """The unlabelled images of STORE to label next.

    Near-copies of a labelled image, and all but
    one of each group of near-duplicates, are never picked. Label them in the manifest, or in a
    folder dataset move them from unlabeled/ into class folders, and run `featx extract` again:
    a relabel, no forward."""
    from featx.audit import DuplicateSettings
    from featx.explore import SelectConfig, select as run_select

    out_file(out_path, example="picks.csv")
    if copy_to is not None:
        out_folder(copy_to, "--copy-to")
    settings = SelectConfig(budget, strategy, head, DuplicateSettings(threshold=threshold), pixels, seed)
    picks = run_select(store, budget, config=settings, log=_note)
    picks.to_csv(out_path)
    copied = picks.copy_to(copy_to) if copy_to is not None else None
    out.print(f"{len(picks)} of {picks.pool:,} unlabelled images picked by {picks.strategy} "
              f"({len(picks.excluded)} near-copies left out): {out_path}"
              + (_copied(copy_to, len(copied), picks) if copied is not None else ""),
              markup=False, highlight=False)
    next_step(picks.how_to_label())  # for a folder dataset: mv out of unlabeled/ into class folders


def _copied(folder: Path, copied: int, picks) -> str:
    """'; 3 picks copied into DIR (the last round's 5 copies removed first; 1 pick not copied: ...)'."""
    text = f"; {plural(copied, 'pick')} copied into {folder}"
    earlier = "1 copy" if picks.cleared == 1 else f"{picks.cleared:,} copies"
    notes = [f"the last round's {earlier} removed first"] if picks.cleared else []
    notes += ([f"{plural(picks.left_alone, 'pick')} not copied: a file featx did not copy is at its path, "
               "kept as it is"] if picks.left_alone else [])
    return text + (f" ({'; '.join(notes)})" if notes else "")


def label_curve(store: o.Store, strategies: Strategies = ["random", "margin", "coreset", "typiclust"],
                seeds: Seeds = 3, out_dir: CurveOut = Path("label-curve"), pca_dims: CurvePca = 128,
                pool_limit: PoolLimit = None, config: o.Config = None) -> None:
    """Simulated labelling on a fully labelled STORE: test accuracy vs the number of labels.

    Per strategy (mean and 95% interval over seeds), the k-shot curve, and the labels each needs to
    reach 95% of the accuracy with every label."""
    from featx.explore import CurveConfig, label_curve as run_curve

    out_folder(out_dir)
    settings = CurveConfig(tuple(dict.fromkeys(strategies)), seeds, pca_dims=pca_dims or None, pool_limit=pool_limit)
    result = run_curve(store, settings, log=_note)
    files = result.write(out_dir)
    out.print(f"all {result.train_rows:,} labels: {result.eval_split} top-1 {result.full['top1']:.3f}, "
              f"balanced {result.full['balanced']:.3f}", markup=False, highlight=False)
    for strategy, needed in result.labels_to_95.items():
        out.print(f"{strategy}: 95% of it at {needed if needed is not None else 'more than the train split'} labels",
                  markup=False, highlight=False)
    out.print(f"curve written to {files['json']} and {files['plot']}", markup=False, highlight=False)


def _note(line: str) -> None:
    err.print(line, markup=False, highlight=False)
