"""WebDataset tar shards -> records (key, image bytes, extension, label, split) for featx.data.archives.

A sample is the tar members sharing a key (the name up to its first dot, WebDataset's rule):
its image is the first member with an image extension (jpg, png, webp, ...); its label the text of
a `cls`, `label`, `class` or `target` member (a class name or number), or a `label` field of its
`json` member; its split the split word in the shard's file name (train-000.tar), else none
(featx then gives each sample a split from its content, as for a class-folder tree).
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

from featx.data.records import Record, split_from_name
from featx.errors import DataError
from featx.data.images import IMAGE_EXTENSIONS

LABEL_EXTENSIONS = ("cls", "label", "class", "target")


def webdataset_records(shards: list[Path]) -> Iterator[Record]:
    """Every sample of `shards`, in shard order, as (key, bytes, ext, label, split).

    Raises:
        DataError: a shard that is not a readable tar file.
    """
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    for shard in shards:
        split = split_from_name(shard.name)
        try:
            with open(shard, "rb") as f:
                files = ({**member, "__url__": str(shard)} for member in tar_file_iterator(f))
                for sample in group_by_keys(files):
                    record = _record(sample, split)
                    if record is not None:
                        yield record
        except (OSError, tarfile.TarError, ValueError) as exc:
            raise DataError(f"{shard}: not a readable WebDataset tar shard ({str(exc)[:160]})") from None


def _record(sample: dict, split: str | None) -> Record | None:
    image = next((ext for ext in sample if not ext.startswith("__")
                  and f".{ext.rsplit('.', 1)[-1].lower()}" in IMAGE_EXTENSIONS), None)
    if image is None:
        return None  # a sample with no image (captions only, say): nothing to extract
    label = next((sample[e].decode("utf-8", "replace").strip() for e in LABEL_EXTENSIONS if e in sample), None)
    if label is None and "json" in sample:
        try:
            meta = json.loads(sample["json"])
        except ValueError:
            meta = None
        if isinstance(meta, dict) and meta.get("label") is not None:
            label = str(meta["label"])
    ext = "." + image.rsplit(".", 1)[-1].lower()
    return sample["__key__"], sample[image], ext, label or None, split
