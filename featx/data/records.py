"""The vocabulary every data source shares: the options, the split words, an archive's records.

Below every other module of featx.data (folders, manifests, archives and splits all read it), so
no two of them need each other for a name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from featx.errors import ConfigError

SPLITS = ("train", "val", "test", "unlabeled")
# A folder, a manifest cell, an archive's file or split name -> featx's split (one table for all).
SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "dev": "val", "test": "test", "testing": "test"}

# (key, image bytes, extension hint like ".png" or "", label or None, split or None)
Record = tuple[str, bytes, str, "str | None", "str | None"]


@dataclass(frozen=True)
class DatasetOptions:
    label_col: str | int | None = None  # manifest label column (name or 0-based index)
    split_col: str | int | None = None  # manifest split column; default "split" if present
    binarize: float | None = None  # numeric labels -> "<=T" / ">T" (ELPV: defective = p > 0.5)
    # 60/15/25 by default: ELPV's published protocol holds out 25% for test.
    val_frac: float = 0.15
    test_frac: float = 0.25
    split_seed: int = 0
    class_map: str | None = None  # JSON {class: display name}, like cat_to_name.json

    def __post_init__(self) -> None:
        # Option errors (exit 2 on the command line); the messages give both spellings.
        for name in ("val_frac", "test_frac"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:  # also NaN
                raise ConfigError(f"{name} (--{name.replace('_', '-')}) must be in [0, 1), got {value}")
        if self.val_frac + self.test_frac >= 1.0:
            raise ConfigError(f"val_frac + test_frac (--val-frac + --test-frac) must be < 1 to leave "
                              f"a training split, got {self.val_frac} + {self.test_frac}")


def split_from_name(name: str) -> str | None:
    """'train' for train-000.tar or data/train-00000-of-00002.parquet; None if no split word."""
    words = re.split(r"[^a-z]+", PurePosixPath(name).name.lower())
    found = {SPLIT_WORDS[w] for w in words if w in SPLIT_WORDS}
    return found.pop() if len(found) == 1 else None
