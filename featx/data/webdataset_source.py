"""WebDataset tar shards -> records (key, image bytes, extension, label, split) for featx.data.archives.

A sample is the tar members sharing a key (the name up to its first dot, WebDataset's rule):
its image is the first member with an image extension (jpg, png, webp, ...); its label the text of
a `cls`, `label`, `class` or `target` member (a class name or number), or a `label` field of its
`json` member; its split the split word in the shard's file name (train-000.tar), else none
(featx then gives each sample a split from its content, as for a class-folder tree).

Read as WebDataset reads a shard (members grouped while their key repeats), with two checks it
lacks: a key that comes back later in the shard (a label member after other samples: it would be
lost, or a second image) is an error, and so is a shard that ends early (cut at a member boundary
or inside a header: no end-of-archive block), which tar readers take for the end.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

from featx.data.records import Record, split_from_name
from featx.errors import DataError
from featx.data.images import IMAGE_EXTENSIONS

LABEL_EXTENSIONS = ("cls", "label", "class", "target")
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # WebDataset's key: the name up to its first dot
_META = re.compile(r"__[^/]*__($|/)")  # WebDataset skips such members


def webdataset_records(shards: list[Path]) -> Iterator[Record]:
    """Every sample of `shards`, in shard order, as (key, bytes, ext, label, split).

    Raises:
        DataError: a shard that is not a readable tar file, ends early, or has a key whose
            members are not adjacent.
    """
    for shard in shards:
        split = split_from_name(shard.name)
        try:
            with open(shard, "rb") as f:
                for sample in _samples(f, shard):
                    record = _record(sample, split)
                    if record is not None:
                        yield record
        except (OSError, tarfile.TarError, ValueError) as exc:
            raise DataError(f"{shard}: not a readable WebDataset tar shard ({str(exc)[:160]})") from None


def _samples(f, shard: Path) -> Iterator[dict]:
    """The shard's samples: {"__key__": key, ext: bytes, ...}, members grouped by key."""
    stream = tarfile.open(fileobj=f, mode="r|*")  # as WebDataset: a compressed tar is read too
    done: set[str] = set()
    current: dict | None = None
    for member in stream:
        if not member.isreg() or _META.match(member.name):
            continue
        found = _KEY_EXT.match(member.name)
        if not found:
            continue
        key, ext = found.group(1), found.group(2).lower()
        data = stream.extractfile(member).read()
        stream.members = []  # a stream reader keeps every header otherwise
        if current is not None and key != current["__key__"]:
            done.add(current["__key__"])
            yield current
            current = None
        if key in done:
            raise DataError(f"{shard}: sample key {key!r} appears twice (member {member.name!r} comes "
                            "after other samples; a sample's members must be adjacent in the shard, "
                            "as WebDataset reads them)")
        current = current or {"__key__": key}
        if ext in current:
            raise DataError(f"{shard}: sample key {key!r} appears twice ({member.name!r} again)")
        current[ext] = data
    if getattr(stream.fileobj, "comptype", "tar") == "tar":  # offsets are the file's own
        _check_ended(f, stream.offset, shard)
    if current is not None:
        yield current


def _check_ended(f, offset: int, shard: Path) -> None:
    """A complete tar ends with zero blocks after its last member; without one the shard was cut
    (at a member boundary, or inside a header) and its later samples are missing."""
    f.seek(offset)
    tail = f.read(512)
    if len(tail) < 512 or tail.count(0) != 512:
        raise DataError(f"{shard}: the shard ends early (no end-of-archive block after byte {offset:,}: "
                        "cut short by an interrupted copy or download?); copy it again")


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
