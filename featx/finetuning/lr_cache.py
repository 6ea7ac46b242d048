"""The learning rate for a fine-tune, found once by the LR range test and reused after.

    found = suggest_lr(dataset, "heads/lin", Path("runs/ft"), config)     # or a store with from_block
    finetune(dataset, "heads/lin", Path("runs/ft"), replace(config, lr=found.lr))

The test's result is kept beside the run (OUT.lr-find.json, with the curve as .csv/.png), keyed
by everything the curve depends on: the data, the warm-start head (by hash) and the settings
other than the rate itself and the length of the run. Re-running a fine-tune that found its rate,
to resume it, starts from the same rate without repeating the test (`featx finetune --lr auto`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from featx.runtime.atomic import check_writable
from featx.backbones.weights import sha256_file
from featx.data import Dataset, as_dataset
from featx.errors import FeatxError
from featx.finetuning.config import FinetuneConfig
from featx.finetuning.top import find_lr_top
from featx.finetuning.whole import find_lr
from featx.heads.io import head_paths
from featx.training.lr_range import LRFindResult, cached_range_test
from featx.store import FeatureStore

# Neither the rate the test looks for, nor the length and stopping of the run it is for, nor
# where it runs changes the curve.
NOT_IN_KEY = ("lr", "epochs", "head_epochs", "patience", "schedule", "device", "workers", "decode")


@dataclass
class SuggestedLR:
    result: LRFindResult  # the curve and its suggestion
    reused: bool  # True: read from `curve`.json, found by an earlier run with these settings
    curve: Path  # stem of the files: .json (the record), .csv and .png (the curve)

    @property
    def lr(self) -> float:
        return self.result.suggestion


def range_test_settings(config: FinetuneConfig) -> dict:
    """The settings a range test's result depends on."""
    return {k: v for k, v in asdict(config).items() if k not in NOT_IN_KEY}


def suggest_lr(data: Dataset | str | Path, head_path: str | Path, out: str | Path, config: FinetuneConfig,
               data_key: dict | None = None, rerun: bool = False) -> SuggestedLR:
    """The range test's rate for `finetune(data, ...)`, or with `config.from_block`, for
    `finetune_top(data = a store, ...)`; found once per settings (`rerun` finds it again).

    `data_key` identifies the data in the record; by default the dataset's fingerprint, or the
    store's path and the fingerprint of the data it was extracted from.
    """
    head_path = getattr(head_path, "path", None) or head_path  # a Head, or its path
    head_file = head_paths(head_path)[0]
    if not head_file.is_file():
        raise FeatxError(f"{head_file}: no such head")
    if not config.from_block:
        data = as_dataset(data)  # a dataset name or folder, as finetune() takes
    settings = range_test_settings(config)
    settings.update(data=data_key if data_key is not None else _data_key(data, config),
                    head_sha256=sha256_file(head_file))
    out = Path(out)
    check_writable(out.parent)  # before the range test, not after it
    curve = out.with_name(out.name + ".lr-find")
    find = partial(find_lr_top if config.from_block else find_lr, data, head_path, config)
    result, reused = cached_range_test(curve, settings, find, rerun)
    return SuggestedLR(result, reused, curve)


def _data_key(data: Dataset | str | Path, config: FinetuneConfig) -> dict:
    if config.from_block:
        if isinstance(data, Dataset):
            raise FeatxError("with from_block the data is a store made by `featx extract --cut`, "
                             "not a dataset")
        with FeatureStore(data) as store:
            return {"store": str(data), "dataset_fingerprint": store.attrs.get("dataset_fingerprint")}
    if not isinstance(data, Dataset):
        raise FeatxError(f"{data}: a whole-network fine-tune takes a dataset (featx.data.open_dataset)")
    return {"dataset_fingerprint": data.fingerprint}
