"""One command from images to a backbone comparison: extract + train-head per backbone, report.

    compare(open_dataset("elpv"), ["efficientnet_lite0", "efficientnet_lite1"], Path("runs/cmp"))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from featx.data import Dataset
from featx.extract import ExtractConfig, ExtractResult, extract
from featx.heads import HeadConfig, head_defaults
from featx.report import write_report
from featx.train import TrainResult, default_head_stem, train_head


@dataclass
class CompareResult:
    report: Path
    extractions: list[ExtractResult] = field(default_factory=list)
    heads: list[TrainResult] = field(default_factory=list)


def compare(dataset: Dataset, backbones: list[str], out_dir: Path,
            config: ExtractConfig = ExtractConfig(), heads: tuple[str, ...] = ("linear",),
            fmt: str = "html", show_progress: bool = True) -> CompareResult:
    """Stores in out_dir/stores, heads in out_dir/heads, the report at out_dir/report.{html,md}."""
    out_dir = Path(out_dir)
    result = CompareResult(out_dir / f"report.{fmt}")
    for name in backbones:
        extracted = extract(dataset, name, out_dir / "stores", config, show_progress=show_progress)
        result.extractions.append(extracted)
        for kind in heads:
            head_config = HeadConfig(**head_defaults(kind)) if kind in ("linear", "mlp") else HeadConfig()
            stem = default_head_stem(Path(extracted.store), kind, out_dir / "heads")
            result.heads.append(train_head(extracted.store, kind, head_config, stem,
                                           show_progress=show_progress))
    write_report(out_dir / "heads", result.report, fmt,
                 title=f"featx: {len(backbones)} backbone(s) on {dataset.name}")
    return result
