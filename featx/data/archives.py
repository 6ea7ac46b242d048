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

Each file's mtime is set to the newest source file's, so unpacking again (a cleared cache, another
machine) gives the same dataset fingerprint. The unpacked folder is reused while source.json
matches the archive's files (names, sizes, mtimes); a changed archive is unpacked again. One
process unpacks at a time (a file lock; torchrun ranks wait for the first), into NAME.tmp that is
renamed into place, so a killed unpack leaves nothing a later run would trust.
The cost: the images are written once more to disk (one small file each).
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from featx.data.records import DatasetOptions, Record
from featx.data.packaged import dataset_cache
from featx.errors import DataError
from featx.data.images import IMAGE_EXTENSIONS

FORMAT_VERSION = 2  # 2: a row without an image is kept (an empty file), not dropped
NAME_MAX = 250  # bytes of one path part of a key: 255 on common file systems, less the extension
_MAGIC = ((b"\x89PNG", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"),
          (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))


def archive_kind(path: Path) -> str | None:
    """'webdataset', 'hf' (save_to_disk), 'parquet', or None for a folder/manifest of images."""
    if path.is_file():
        name = path.name.lower()
        return "webdataset" if name.endswith(".tar") else "parquet" if name.endswith(".parquet") else None
    if not path.is_dir():
        return None
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return "hf"
    for folder in (path, path / "data"):
        suffix = _archive_suffix(folder, top=folder == path)
        if suffix != "":
            return {".tar": "webdataset", ".parquet": "parquet"}.get(suffix)
    return None


def _archive_suffix(folder: Path, top: bool) -> str | None:
    """'.tar' or '.parquet' when `folder` holds such files and no image or other subfolder; None
    as soon as an image file or a subfolder shows (a tree of images: stop reading at once); ''
    for neither (look in data/)."""
    found = ""
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name.lower()
                if name.startswith("."):
                    continue
                if name.endswith((".tar", ".parquet")) and entry.is_file():
                    found = found or name[name.rindex("."):]
                elif entry.is_dir():
                    if not (top and name == "data"):
                        return None
                elif Path(name).suffix in IMAGE_EXTENSIONS:
                    return None
    except OSError:
        return None
    return found


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
             "label_col": options.label_col,
             "files": {str(f.resolve()): [f.stat().st_size, f.stat().st_mtime_ns] for f in files}}
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
