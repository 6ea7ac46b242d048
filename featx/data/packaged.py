"""Datasets that ship inside PyPI packages, usable offline by name (`open_dataset("elpv")`)."""

from __future__ import annotations

from pathlib import Path

from featx.data.dataset import DatasetOptions

# ELPV's labels are defect probabilities from raters; 1/3 and 2/3 mean the raters were unsure.
ELPV_NAMES = {"0.0": "functional (p=0)", "0.3333333333333333": "doubtful (p=1/3)",
              "0.6666666666666666": "doubtful (p=2/3)", "1.0": "defective (p=1)",
              "<=0.5": "functional", ">0.5": "defective"}


def packaged_datasets() -> dict[str, tuple[Path, DatasetOptions, dict[str, str]]]:
    """{name: (labels file, default options, display names)} of the installed packaged datasets."""
    out = {}
    try:
        import elpv_dataset

        labels = Path(elpv_dataset.__file__).parent / "data" / "labels.csv"
        out["elpv"] = (labels, DatasetOptions(label_col=1), ELPV_NAMES)
    except ImportError:
        pass
    return out
