"""One command from images to a backbone comparison: extract + train-head per backbone, report.

    result = compare(open_dataset("elpv"), ["efficientnet_lite0", "resnet50"], Path("runs/cmp"))
    result.report, result.heads, result.failed    # failed: [(backbone, reason)]
    result.table                                   # out_dir/comparison.json (+ .csv beside it)

One backbone that cannot run (no weights on this machine, out of memory, an unknown name) does
not end the comparison: it is recorded with its reason, the others go on, and the report names
it. The report is always written.

Every test metric carries its 95% bootstrap interval, and heads on the same test images are
compared by a paired test (featx.report.ties): the report, comparison.json and comparison.csv
mark which results are tied with the best instead of one winner.

`splits=N` (N >= 2) also repeats split -> heads over N seeded, stratified re-splits of the same
samples (featx.probes.resplits): features are extracted once per backbone and reused, only the
train/val/test assignment changes; each metric is reported as mean +- standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from featx.data import Dataset, as_dataset
from featx.errors import ConfigError, FeatxError
from featx.extraction import ExtractConfig, ExtractResult, extract
from featx.heads.io import Head
from featx.probes.sweep import HeadConfig
from featx.report import write_report
from featx.report.tables import comparison_table, write_table
from featx.probes.resplits import RESPLIT_NOTE, Resplits, resplit_heads
from featx.probes.train import default_head_stem, train_head


@dataclass
class CompareResult:
    report: Path
    extractions: list[ExtractResult] = field(default_factory=list)
    heads: list[Head] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (backbone, reason)
    table: Path | None = None  # comparison.json: every metric, its interval, tie marks (+ repeats)
    resplits: list[Resplits] = field(default_factory=list)  # per backbone, with splits >= 2

    @property
    def all_failed(self) -> bool:
        """Every backbone failed: the report holds only their reasons."""
        return bool(self.failed) and not self.extractions


def compare(dataset: Dataset | str | Path, backbones: list[str], out_dir: str | Path,
            config: ExtractConfig = ExtractConfig(), heads: tuple[str, ...] = ("linear",),
            fmt: str = "html", show_progress: bool = True, splits: int = 1) -> CompareResult:
    """Stores in out_dir/stores, heads in out_dir/heads, the report at out_dir/report.{html,md},
    the table at out_dir/comparison.{json,csv}; `splits` >= 2 adds the repeated re-splits."""
    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 1:
        raise ConfigError(f"--splits must be a whole number >= 1 (1: the store's split only), got {splits!r}")
    dataset = as_dataset(dataset)  # a Dataset, or what open_dataset takes
    out_dir = Path(out_dir)
    for folder in (out_dir, out_dir / "stores", out_dir / "heads"):  # before any backbone runs
        if folder.exists() and not folder.is_dir():
            raise FeatxError(f"{folder}: exists and is not a folder (compare writes stores/, heads/ "
                             "and the report in out_dir)")
    result = CompareResult(out_dir / f"report.{fmt}")
    for name in backbones:
        try:
            extracted = extract(dataset, name, out_dir / "stores", config, show_progress=show_progress)
            trained = [train_head(extracted.store, kind, HeadConfig(head=kind),
                                  default_head_stem(extracted.store, kind, out_dir / "heads"),
                                  show_progress=show_progress) for kind in heads]
            repeated = (resplit_heads(extracted.store, heads, splits, show_progress=show_progress)
                        if splits > 1 else None)
        except (FeatxError, MemoryError) as exc:
            result.failed.append((name, _reason(exc)))
            continue
        except RuntimeError as exc:  # torch's out-of-memory errors on CUDA (a RuntimeError)
            if "out of memory" not in str(exc).lower():
                raise
            result.failed.append((name, _reason(exc)))
            continue
        result.extractions.append(extracted)
        result.heads.extend(trained)
        if repeated:
            result.resplits.append(repeated)
    table = comparison_table(out_dir / "heads", result.resplits)
    if result.heads:  # every backbone failed: the report names the reasons; there is no table
        result.table = write_table(table, out_dir / "comparison.json")
    extra = [table.resplit_section(RESPLIT_NOTE)] if result.resplits else []
    write_report(out_dir / "heads", result.report, fmt, failed=result.failed,
                 title=f"featx: {len(backbones)} backbone(s) on {dataset.name}", extra=extra)
    return result


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
