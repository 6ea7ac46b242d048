"""featx report | compare: the comparison a person reads, from trained heads or from scratch."""

from __future__ import annotations

from pathlib import Path

import typer

from featx.cli import options as o
from featx.cli.core import err, next_step, old_spelling, open_data, out, require_data
from featx.cli.outputs import out_file, out_folder
from featx.errors import FeatxError


def report(results: o.Results, out_path: o.ReportOut = None, fmt: o.Format = "html", maps: o.Map = True) -> None:
    """Compare every trained head in RESULTS: table, plots, worst errors.

    A damaged head sidecar or LR-finder curve is skipped with a note (and listed in the report)."""
    from featx.report import read_results, write_report

    target = out_file(out_path or results / f"report.{fmt}", example=f"report.{fmt}")
    found = read_results(results)
    for path, reason in found.skipped:
        err.print(f"note: skipped {path}: {reason}", markup=False, highlight=False)
    path = write_report(results, target, fmt, found=found, maps=maps)
    out.print(f"report written to {path}", markup=False, highlight=False)
    best = best_head([(_top1(m, "test"), _top1(m, "val"), Path(m["_path"]).with_suffix(".safetensors"))
                      for m in found.heads])
    if best:
        next_step("featx predict IMAGES --head", best)


def compare(
    ctx: typer.Context,
    backbone: o.Backbones,
    data: o.DataOrConfig = None,
    out_dir: o.CompareOut = Path("runs/compare"),
    kind: o.Kinds = ("linear",),
    views: o.Views = 0,
    aug: o.Aug = "mild",
    batch_size: o.BatchSize = 64,
    workers: o.Workers = None,
    device: o.Device = "auto",
    engine: o.Engine = "auto",
    weights: o.Weights = "default",
    input_size: o.InputSize = None,
    seed: o.Seed = 0,
    fmt: o.Format = "html",
    label_col: o.LabelCol = None, binarize: o.Binarize = None, val_frac: o.ValFrac = 0.15,
    test_frac: o.TestFrac = 0.25, split_seed: o.SplitSeed = 0, class_map: o.ClassMap = None,
    subset: o.Subset = None,
    splits: o.Splits = 1,
    config: o.Config = None,
    head: o.OldHeadKinds = None,
) -> None:
    """Extract + train-head for each backbone on DATA, then write the comparison report.

    Every test metric carries its 95% bootstrap interval; heads on the same test images are
    compared with a paired bootstrap, and the best and those tied with it are marked (report,
    DIR/comparison.json and .csv). --splits N also trains the heads on N seeded re-splits of the
    features extracted once, and reports mean +- sd. A backbone that cannot run (no weights here,
    say) is reported as failed and the others go on; the exit status is 1 only when every
    backbone failed.
    """
    from featx.compare.run import compare as run_compare
    from featx.extraction import ExtractConfig

    kinds = old_spelling(ctx, "--head", "--kind", head, kind)
    data = require_data(data)
    for folder in (out_dir, out_dir / "stores", out_dir / "heads"):
        out_folder(folder)
    out_file(out_dir / f"report.{fmt}")
    ds = open_data(data, ctx.params)
    settings = ExtractConfig(views=views, aug=aug, batch_size=batch_size, workers=workers, device=device,
                             engine=engine, weights=weights, input_size=input_size, seed=seed)
    result = run_compare(ds, list(backbone), out_dir, settings, tuple(kinds), fmt, splits=splits)
    for line in summary_lines(result):
        out.print(line, markup=False, highlight=False)
    for name, reason in result.failed:
        err.print(f"{name}: failed: {reason}", markup=False, highlight=False)
    if result.all_failed:
        raise FeatxError(f"every backbone failed ({', '.join(n for n, _ in result.failed)}); "
                         f"the report names the reasons: {result.report}")
    out.print(f"report written to {result.report}; table in {result.table} (+ .csv)", markup=False,
              highlight=False)
    best = best_head([(h.test.top1 if h.test else None, h.val.top1 if h.val else None, Path(h.path))
                      for h in result.heads])
    if best:
        next_step("featx predict IMAGES --head", best)


def best_head(heads: list[tuple[float | None, float | None, Path]]) -> Path | None:
    """Of (test top-1, val top-1, weights) per head, the weights with the best test top-1 (val
    where no head has a test split); None when no head has either."""
    for split in (0, 1):
        scored = [(head[split], str(head[2])) for head in heads if head[split] is not None]
        if scored:
            return Path(max(scored)[1])
    return None


def _top1(sidecar: dict, split: str) -> float | None:
    return ((sidecar.get("metrics") or {}).get(split) or {}).get("top1")


def summary_lines(result) -> list[str]:
    """Per head: top-1 and balanced accuracy with their 95% intervals and tie marks; with
    re-splits, their mean +- sd over the splits."""
    import json

    if result.table is None:  # every backbone failed: no table
        return []
    rows = json.loads(result.table.read_text(encoding="utf-8"))["results"]
    by_path = {Path(r["result"]).resolve(): r for r in rows}
    lines = []
    for head in result.heads:
        row = by_path.get(Path(head.path).with_suffix(".json").resolve())
        if row is None:
            continue
        cells = []
        for metric, name in (("top1", "top-1"), ("balanced_accuracy", "balanced")):
            m = row["metrics"].get(metric)
            if m:
                bounds = f" [{m['low']:.3f}, {m['high']:.3f}]" if m["low"] is not None else " (no CI)"
                mark = {"best": " best", "tied": " tie", "worse": " worse",
                        "unpaired": " not compared"}.get(m["mark"], "")
                cells.append(f"{name} {m['value']:.3f}{bounds}{mark}")
            spread = (row.get("splits") or {}).get(metric)
            if spread:
                cells.append(f"{name} over {row['split_count']} splits {spread['mean']:.3f} ± {spread['sd']:.3f}")
        lines.append(f"{Path(head.path).name}: " + ", ".join(cells))
    return lines
