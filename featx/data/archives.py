"""Datasets packed in archives: WebDataset tar shards, Hugging Face `datasets`, Parquet files.

    featx extract shards/                 # a folder of WebDataset .tar shards (or one .tar)
    featx extract my_dataset/             # `datasets` save_to_disk (a Dataset or a DatasetDict)
    featx extract train.parquet           # Parquet with an image column (a file or a folder)

Every loader in featx reads image files (decoding, views, content hashes, the change check), so
an archive is unpacked once: each sample's image bytes, unchanged, become the file KEY.EXT under
$FEATX_CACHE/datasets/KIND-NAME-HASH/ (default ~/.cache/featx), with a manifest.csv
(path, label[, split]) that the manifest reader opens. KEY is the sample's stable key: the
WebDataset `__key__`, a key/id column of a `datasets` table, or else its split and row number.
So a sample's path, bytes and content hash are the same on every run and every rank: resume,
torchrun sharding, updates and the store's identity work as for a folder of the same files, and
a folder tree whose files are KEY.EXT with the same labels gives the same store.

A folder is an archive dataset when its top level (else its data/) holds .tar shards or .parquet
files and no subfolder but featx's own output folders (`cd shards; featx extract .` writes
stores/ there). Stray files beside them (a cover.png, a README) are not read, and a note names
them; more than STRAY_IMAGES_MAX images beside them, or shards beside Parquet files, are refused
in one line, as which one is the dataset is not for featx to guess.

Each file's mtime is set to the newest source file's, so unpacking again (a cleared cache, another
machine) gives the same dataset fingerprint. The unpacked folder is reused while source.json
matches the archive's files (names, sizes, mtimes and content hashes: a rewrite that kept its
size and mtime is seen); a changed archive is unpacked again. One
process unpacks at a time (a file lock; torchrun ranks wait for the first), into NAME.tmp that is
renamed into place, so a killed unpack leaves nothing a later run would trust.
The cost: the images are written once more to disk (one small file each).
"""

from __future__ import annotations

import bisect
import csv
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from featx.data.records import DatasetOptions, Record
from featx.data.packaged import dataset_cache
from featx.errors import DataError
from featx.data.identity import hash_files
from featx.data.images import IMAGE_EXTENSIONS
from featx.runtime.atomic import is_output_folder

FORMAT_VERSION = 3  # 2: a row without an image is kept (an empty file), not dropped; 3: files hashed
NAME_MAX = 250  # bytes of one path part of a key: 255 on common file systems, less the extension
_MAGIC = ((b"\x89PNG", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"),
          (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))
STRAYS_NAMED = 5  # stray files a note names (beyond: their count)
STRAY_IMAGES_MAX = 10  # images beside archives read as a cover or previews; more: ambiguous


@dataclass
class _Listing:
    """The top level of a folder, as archive detection sees it."""
    suffixes: set[str] = field(default_factory=set)  # '.tar' / '.parquet' found
    archives: int = 0
    images: int = 0  # loose image files (counted up to STRAY_IMAGES_MAX + 1)
    strays: int = 0  # files that are no archive: images, README, JSON, indexes
    named: list[str] = field(default_factory=list)  # the first STRAYS_NAMED of them, sorted
    tree: bool = False  # a subfolder (other than top-level data/ and featx's outputs)


def archive_kind(path: Path) -> str | None:
    """'webdataset', 'hf' (save_to_disk), 'parquet', or None for a folder/manifest of images.

    A folder whose top level (else data/) holds .tar shards or .parquet files and no subfolder is
    that archive, whatever few stray files lie beside them (archive_note names them).

    Raises:
        DataError: shards beside Parquet files, or beside more images than a cover and previews
            (STRAY_IMAGES_MAX): which one is the dataset is not for featx to guess.
    """
    if path.is_file():
        name = path.name.lower()
        return "webdataset" if name.endswith(".tar") else "parquet" if name.endswith(".parquet") else None
    if not path.is_dir():
        return None
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return "hf"
    for folder in (path, path / "data"):
        listing = _list(folder, top=folder == path)
        if listing.tree:
            return None
        if listing.suffixes:
            return _kind_of(folder, listing)
        if listing.images:  # a folder of images, no archive
            return None
    return None


def _kind_of(folder: Path, listing: _Listing) -> str:
    if len(listing.suffixes) > 1:
        raise DataError(f"{folder}: both .tar shards and .parquet files: one folder holds one archive "
                        "dataset; move one kind into a folder of its own")
    suffix = next(iter(listing.suffixes))
    if listing.images > STRAY_IMAGES_MAX:
        raise DataError(f"{folder}: {listing.archives} {suffix} {_ARCHIVE_WORD[suffix]}(s) and "
                        f"more than {STRAY_IMAGES_MAX} image files side by side: is it an archive dataset "
                        "or a folder of images? move the shards or the images into a folder of their own")
    return {".tar": "webdataset", ".parquet": "parquet"}[suffix]


_ARCHIVE_WORD = {".tar": "shard", ".parquet": "file"}


def archive_note(path: Path, kind: str) -> str | None:
    """The note naming the stray files beside an archive folder's shards or Parquet files (a
    cover image, a README), which are not read; None when there are none."""
    if kind not in ("webdataset", "parquet") or not path.is_dir():
        return None
    count, named = 0, []
    for folder in (path, path / "data"):
        listing = _list(folder, top=folder == path)
        count += listing.strays
        named += [n if folder == path else f"data/{n}" for n in listing.named]
        if listing.suffixes:
            break
    if not count:
        return None
    shown = ", ".join(named[:STRAYS_NAMED]) + (", ..." if count > STRAYS_NAMED else "")
    what = ".tar shards" if kind == "webdataset" else ".parquet files"
    return f"{count} file(s) beside the {what} ignored: {shown}"


def _list(folder: Path, top: bool) -> _Listing:
    """What the top level of `folder` holds (hidden files and featx's output folders left out);
    it stops at the first subfolder (a tree of images: read no further)."""
    listing = _Listing()
    try:
        with os.scandir(folder) as entries:
            for entry in entries:  # lean: a flat folder of a million images is read here too
                name = entry.name
                if name[0] == ".":
                    continue
                low = name.lower()
                if entry.is_dir():
                    if not (top and low == "data") and not is_output_folder(entry.path):
                        listing.tree = True
                        return listing
                elif low.endswith((".tar", ".parquet")):
                    listing.suffixes.add(low[low.rindex("."):])
                    listing.archives += 1
                else:
                    listing.strays += 1
                    if listing.images > STRAY_IMAGES_MAX:
                        continue  # already too many to be a cover: count no further
                    listing.images += low[low.rfind("."):] in IMAGE_EXTENSIONS if "." in low else 0
                    if len(listing.named) < STRAYS_NAMED or name < listing.named[-1]:
                        bisect.insort(listing.named, name)  # the first names, whatever the order
                        del listing.named[STRAYS_NAMED:]
    except OSError:
        listing.tree = True  # unreadable: not for archive detection to explain
    return listing


def source_files(path: Path, pattern: str) -> list[Path]:
    """The files of an archive dataset: `path` itself, or its top-level (else data/) `pattern`
    files, sorted."""
    if path.is_file():
        return [path]
    suffix = pattern.lstrip("*").lower()  # S-000.TAR is a shard too, as archive_kind says
    for folder in (path, path / "data"):
        try:
            found = sorted(p for p in folder.iterdir() if p.name.lower().endswith(suffix)
                           and p.is_file() and not p.name.startswith("."))
        except OSError:
            continue
        if found:
            return found
    return []


def unpack_archive(path: Path, kind: str, options: DatasetOptions) -> Path:
    """The manifest.csv of the archive at `path`, unpacked once (see the module docstring).

    Raises:
        DataError: an unreadable archive, a sample key used twice or unsafe as a path, no image
            column, or a cache folder that cannot be written.
    """
    files = _inputs(path, kind)
    stamp = {"format": FORMAT_VERSION, "kind": kind, "source": str(path.resolve()),
             "label_col": options.label_col, "files": _file_stamps(files)}
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    target = dataset_cache(f"{kind}-{path.name.split('.')[0] or 'data'}-{digest}")
    manifest = target / "manifest.csv"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.with_name(target.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released by the OS if this process dies
            if manifest.is_file() and _read_json(target / "source.json") == stamp:
                return manifest
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)  # a killed unpack's leftover
            _write(tmp, _records(path, kind, files, options), stamp)
            if target.exists():
                shutil.rmtree(target)
            os.rename(tmp, target)
    except OSError as exc:
        raise DataError(f"{target}: cannot unpack {path} ({exc.strerror or exc}); set FEATX_CACHE "
                        "to a writable folder with room for the images") from None
    return manifest


def _file_stamps(files: list[Path]) -> dict[str, list]:
    """{path: [size, mtime_ns, sha256]} of the archive's files. The content hash, as a same-size
    rewrite with its mtime restored (`cp -p`, `touch -r`, rsync -t) must not keep the old unpack;
    hashed once per process while a file's ctime holds (featx.data.identity's memo)."""
    stats = []
    for f in files:
        try:
            st = f.stat()
        except OSError as exc:  # removed since it was listed
            raise DataError(f"{f}: cannot read ({exc.strerror or exc})") from None
        stats.append((st.st_size, st.st_mtime_ns))
    shas = hash_files(files, stats)
    return {str(f.resolve()): [size, mtime, sha] for f, (size, mtime), sha in zip(files, stats, shas)}


def _inputs(path: Path, kind: str) -> list[Path]:
    if kind == "hf":  # every file of the saved dataset: arrow tables and their metadata
        return sorted(p for p in path.rglob("*") if p.is_file())
    files = source_files(path, "*.tar" if kind == "webdataset" else "*.parquet")
    if not files:
        raise DataError(f"{path}: no {'.tar shards' if kind == 'webdataset' else '.parquet files'} found")
    return files


def _records(path: Path, kind: str, files: list[Path], options: DatasetOptions) -> Iterator[Record]:
    if kind == "webdataset":
        from featx.data.webdataset_source import webdataset_records

        return webdataset_records(files)
    from featx.data.hf_source import hf_records, parquet_records

    label_col = None if isinstance(options.label_col, int) else options.label_col
    if kind == "hf":
        return hf_records(path, label_col)
    return parquet_records(files, label_col)


def _write(folder: Path, records: Iterator[Record], stamp: dict) -> None:
    """Image files, then source.json, then manifest.csv last."""
    mtime = max((v[1] for v in stamp["files"].values()), default=0)
    rows, seen, made = [], set(), set()
    folder.mkdir(parents=True)
    for key, data, hint, label, split in records:
        rel = _safe_key(key, stamp["source"])
        ext = hint.lower() if hint.lower() in IMAGE_EXTENSIONS else sniff_extension(data) or ".bin"
        name = rel + ext
        if rel in seen:
            raise DataError(f"{stamp['source']}: sample key {key!r} appears twice (keys must be unique)")
        seen.add(rel)
        file = folder / name
        if file.parent not in made:
            file.parent.mkdir(parents=True, exist_ok=True)
            made.add(file.parent)
        file.write_bytes(data)
        os.utime(file, ns=(mtime, mtime))  # the same fingerprint whenever it is unpacked
        rows.append((name, "" if label is None else str(label), split))
    if not rows:
        raise DataError(f"{stamp['source']}: no samples with an image found")
    with_split = any(s is not None for _, _, s in rows)
    if with_split and not all(s is not None for _, _, s in rows):
        raise DataError(f"{stamp['source']}: some shards name a split (train/val/test) and some do "
                        "not; name every shard's split or none")
    (folder / "source.json").write_text(json.dumps(stamp, sort_keys=True) + "\n", encoding="utf-8")
    with open(folder / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["path", "label", "split"] if with_split else ["path", "label"])
        for name, label, split in rows:
            out.writerow([name, label, split] if with_split else [name, label])


def _safe_key(key: str, source: str) -> str:
    """`key` as a relative POSIX path inside the unpacked folder (never outside it)."""
    parts = PurePosixPath(str(key).replace("\\", "/")).parts
    if (not parts or "\0" in str(key) or parts[0] == "/" or any(p in ("..", ".") for p in parts)
            or any(p.startswith(".") for p in parts)):
        raise DataError(f"{source}: sample key {key!r} cannot name a file (empty, absolute, hidden "
                        "or with '..')")
    if any(len(p.encode("utf-8", "surrogateescape")) > NAME_MAX for p in parts):
        raise DataError(f"{source}: sample key {str(key)[:40]!r}... is too long for a file name "
                        f"({len(str(key))} characters; a name holds at most {NAME_MAX} bytes with its "
                        "extension): shorten the keys")
    return "/".join(parts)


def sniff_extension(data: bytes) -> str | None:
    """The image file extension that the bytes' magic number says, or None."""
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
