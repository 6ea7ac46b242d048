"""The comparison as data: every result's test metrics with their 95% intervals and tie marks,
and (with `compare --splits N`) the mean +- sd over re-splits, as JSON and CSV.

    table = comparison_table("runs/cmp/heads", resplits)
    write_table(table, "runs/cmp/comparison.json")   # and comparison.csv beside it
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from featx.runtime.atomic import atomic_write_text
from featx.report.results import read_results
from featx.report.ties import HOW, METRICS, number, split_metrics, standings
from featx.evaluation.uncertainty import CONFIDENCE, RESAMPLES, SEED

TITLES = {"top1": "top-1", "top5": "top-5", "balanced_accuracy": "bal. acc", "macro_f1": "macro-F1",
          "nll": "NLL", "ece": "ECE"}


@dataclass
class ComparisonTable:
    rows: list[dict] = field(default_factory=list)
    resplits: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"interval": f"{CONFIDENCE:.0%} percentile bootstrap over the test images "
                            f"({RESAMPLES} resamples, seed {SEED})",
                "paired_test": HOW, "alpha": round(1 - CONFIDENCE, 2),
                "marks": {"best": "the best value of the metric", "tied": "tied with the best",
                          "worse": "significantly worse than the best", "unpaired": "not compared "
                          "(other test images, or a result saved without per-image predictions)"},
                "results": self.rows, "resplits": self.resplits}

    def csv_text(self) -> str:
        metrics = [m for m in METRICS if any(r["metrics"].get(m) for r in self.rows)]
        header = ["backbone", "head", "test_images"]  # test_images: n of the test (or val) split
        for m in metrics:
            header += [m, f"{m}_low", f"{m}_high", f"{m}_mark"]
            if self.resplits:
                header += [f"{m}_splits_mean", f"{m}_splits_sd"]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        for r in self.rows:
            line = [r["backbone"], r["head"], _g(r["test_images"])]
            for m in metrics:
                cell = r["metrics"].get(m) or {}
                line += [_g(cell.get("value")), _g(cell.get("low")), _g(cell.get("high")), cell.get("mark", "")]
                if self.resplits:
                    spread = (r.get("splits") or {}).get(m) or {}
                    line += [_g(spread.get("mean")), _g(spread.get("sd"))]
            writer.writerow(line)
        return buffer.getvalue()

    def resplit_section(self, note: str) -> tuple[str, str, list[str], list[list[str]]]:
        """(title, note, headers, rows) of the report's table of re-split results."""
        metrics = [m for m in METRICS if any(m in (r.get("splits") or {}) for r in self.rows)]
        rows = [[r["backbone"], r["head"], str(r["split_count"])]
                + [_spread((r["splits"]).get(m)) for m in metrics] for r in self.rows if r.get("splits")]
        n = max((r["split_count"] for r in self.rows if r.get("splits")), default=0)
        return (f"Repeated splits ({n})", f"Test metrics as mean ± standard deviation [min, max] over {n} "
                f"seeded re-splits: {note}.",
                ["backbone", "head", "splits"] + [TITLES[m] for m in metrics], rows)


def _g(value) -> str:
    return "" if value is None else f"{value:.6g}"


def _spread(s: dict | None) -> str:
    return "-" if not s else f"{s['mean']:.3f} ± {s['sd']:.3f} [{s['low']:.3f}, {s['high']:.3f}]"


def comparison_table(folder: str | Path, resplits: list = ()) -> ComparisonTable:
    """Every usable head result under `folder`, with intervals and marks; `resplits`
    (featx.probes.resplits.Resplits) adds each result's spread over re-splits of its store."""
    results = read_results(folder, required=False).heads
    by_store = {(str(r.store), kind): (r, kind) for r in resplits for kind in r.scores}
    table = ComparisonTable(resplits=[r.to_dict() for r in resplits])
    for meta, ranked in zip(results, standings(results)):
        metrics = {}
        for m, s in ranked.items():
            if s.value is None:
                continue
            d = s.difference
            metrics[m] = {"value": s.value, "low": s.interval[0] if s.interval else None,
                          "high": s.interval[1] if s.interval else None, "mark": s.mark,
                          "minus_best": None if d is None else {"delta": d.delta, "low": d.low, "high": d.high}}
        row = {"backbone": meta["backbone"], "head": meta["kind"], "result": meta["_path"],
               "test_images": None if (n := number(split_metrics(meta).get("n"))) is None else int(n),
               "metrics": metrics}
        found = by_store.get((str(meta.get("store")), meta["kind"]))
        if found:
            repeated, kind = found
            row["split_count"] = repeated.splits
            row["splits"] = {m: vars(s) for m, s in repeated.summary(kind).items()}
        table.rows.append(row)
    return table


def write_table(table: ComparisonTable, path: str | Path) -> Path:
    """`path` (JSON) and the same stem .csv beside it; returns the JSON path."""
    path = Path(path)
    atomic_write_text(path, json.dumps(table.to_dict(), indent=2) + "\n")
    atomic_write_text(path.with_suffix(".csv"), table.csv_text())
    return path
