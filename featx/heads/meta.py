"""A head's JSON sidecar as one dataclass: what the weights mean, validated when read.

    meta = HeadMeta.from_dict(json.loads(text), source=sidecar)   # a one-line FeatxError if bad
    meta.kind, meta.classes, meta.feature_dim, meta.pool
    meta.to_dict()                                                # the JSON save_head writes
    meta["selection"], meta.get("pool")                           # read-only Mapping of the keys

The sidecar's keys are the fields, by name, so every featx-head/1 file reads as it always did:
a key an older head lacks takes the value its readers assumed when it was missing, and keys a
newer featx wrote are kept in `extra` and written back. Nested records (config, params, metrics,
preprocess, ...) stay the JSON they were written as.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featx.errors import FeatxError
from featx.heads.kinds import KINDS

FORMAT = "featx-head/1"
REQUIRED = ("kind", "classes", "feature_dim", "backbone")


@dataclass(frozen=True, kw_only=True)
class HeadMeta(Mapping):
    """Everything a head's sidecar records; the field order is the order of the file's keys."""

    kind: str  # a featx.heads.kinds name
    classes: list[str]  # the store's class folders, in score column order
    class_names: list[str] | None = None  # display names (--class-map); None: the classes
    backbone: str
    backbone_seed: int = 0  # of a random-init backbone
    weights: dict | None = None  # the backbone weights: source and sha256
    weights_sha256: str | None = None
    feature_dim: int
    preprocess: dict | None = None  # the store's clean transform: predict rebuilds it
    store: str | None = None  # the store trained on (None for a fine-tuned head)
    store_dataset_fingerprint: str | None = None
    normalize: str = "none"  # none | standard | l2 (norm.mean/std in the weights when standard)
    store_version: int | None = None  # `predict` and `report` say when the store is newer
    config: dict = field(default_factory=dict)  # the training settings (HeadConfig, FinetuneConfig)
    features: str | None = None  # all | final (without the pooled block maps of extract --pool)
    pool: str | None = None  # the block whose pooled maps follow the final features
    tta: str | None = None  # features averaged over these symmetries (extract --tta)
    params: dict = field(default_factory=dict)  # the hyper-parameters chosen
    search: list = field(default_factory=list)  # every candidate tried, with its val scores
    curve: list = field(default_factory=list)  # per epoch: losses and val top-1
    metrics: dict = field(default_factory=dict)  # {"val": Metrics dict | None, "test": ...}
    train_samples: int | None = None
    views_used: int | None = None  # augmented views per training image sampled
    streamed: bool = False  # features read from HDF5 block by block
    notes: list[str] = field(default_factory=list)
    train_counts: list[int] | None = None  # training images per class
    dataset_root: str | None = None
    dataset_name: str | None = None
    extraction: dict | None = None  # speed, device and engine of the store's extraction
    seconds: float = 0.0  # training time
    selection: dict = field(default_factory=dict)  # how the head was chosen: val, cv or finetune
    warm_start: str | None = None  # a fine-tuned head: the head it started from
    aug: dict | None = None  # a fine-tuned head: its training augmentation
    temperature: float = 1.0  # logits are divided by it (calibration); 1.0: as trained
    weights_file_sha256: str | None = None  # of the .safetensors beside it: the pair is bound
    extra: dict = field(default_factory=dict, repr=False)  # keys of a newer featx, kept as read

    @classmethod
    def from_dict(cls, data: Mapping, source: str | Path = "head sidecar") -> "HeadMeta":
        """The sidecar `data` (as json.load gives it), checked key by key; `source` names the file
        in the one-line error."""
        if not isinstance(data, Mapping):
            raise FeatxError(f"{source}: not a featx head (format {type(data).__name__!r})")
        if data.get("format", FORMAT) != FORMAT:
            raise FeatxError(f"{source}: not a featx head (format {data.get('format')!r})")
        for key in REQUIRED:
            if key not in data:
                raise FeatxError(f"{source}: not a complete featx head (no {key!r})")
        if not isinstance(data["kind"], str) or data["kind"] not in KINDS:
            raise FeatxError(f"{source}: unknown head kind {data['kind']!r} (featx knows {', '.join(KINDS)})")
        known = {f.name: f for f in _FIELDS}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in known:
                if value is not None or _optional(known[key]):  # null where a value is expected: the default
                    _check(source, key, value, known[key])
                    values[key] = value
            elif key != "format":
                values.setdefault("extra", {})[key] = value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The sidecar as JSON-ready values, in file order (numpy scalars are left to the writer)."""
        out: dict[str, Any] = {"format": FORMAT}
        out.update((f.name, getattr(self, f.name)) for f in _FIELDS)
        out.update(self.extra)
        return out

    # --- the Mapping of the sidecar's keys (code written against the dict reads it unchanged)

    def __getitem__(self, key: str) -> Any:
        if key == "format":
            return FORMAT
        if key in _NAMES:
            return getattr(self, key)
        return self.extra[key]

    def __iter__(self) -> Iterator[str]:
        yield "format"
        yield from (f.name for f in _FIELDS)
        yield from self.extra

    def __len__(self) -> int:
        return 1 + len(_FIELDS) + len(self.extra)


_FIELDS = tuple(f for f in dataclasses.fields(HeadMeta) if f.name != "extra")
_NAMES = frozenset(f.name for f in _FIELDS)

# What each annotation accepts from JSON, and how the error says it.
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "str": ((str,), "text"), "int": ((int,), "a whole number"), "float": ((int, float), "a number"),
    "bool": ((bool,), "true or false"), "dict": ((dict,), "a mapping"), "list": ((list,), "a list"),
    "list[str]": ((list,), "a list of names"), "list[int]": ((list,), "a list of whole numbers"),
}


def _optional(f: dataclasses.Field) -> bool:
    return str(f.type).endswith("| None")


def _check(source, key: str, value: Any, f: dataclasses.Field) -> None:
    if value is None and _optional(f):
        return
    base = str(f.type).removesuffix(" | None")
    types, what = _TYPES[base]
    ok = isinstance(value, types) and (base in ("bool", "dict", "list") or not isinstance(value, bool))
    if ok and base.startswith("list["):
        item = str if base == "list[str]" else int
        ok = all(isinstance(v, item) and not isinstance(v, bool) for v in value)
    if not ok:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise FeatxError(f"{source}: {key} must be {what}, got {shown}")
