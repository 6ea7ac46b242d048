"""Hugging Face `datasets` tables -> records (key, image bytes, extension, label, split).

    load_from_disk folders (save_to_disk of a Dataset or a DatasetDict) and Parquet files
    (Dataset.to_parquet, or the Hub's data/train-00000-of-00001.parquet layout)

Both are Arrow tables; neither is decoded to pixels here: an `Image` column holds each image's
encoded bytes (or the path of a file inside the archive's own folder: never one elsewhere), which
become the unpacked file as they are.
- image: the column whose feature is `Image`, else one named image/img/jpg/png/jpeg/webp;
- label: `label_col` if given, else the `ClassLabel` column (its class names), else one named
  label/labels/class/target; none means unlabeled samples;
- key: a column named __key__/key/id/image_id/file_name/filename (its extension dropped), else
  SPLIT/ROW (the row number within its split: stable while the table is not reordered);
- split: a DatasetDict's split names (train, validation/val/dev, test), a Parquet file's split
  word (train-00000-of-00001.parquet); otherwise featx draws splits from each image's content.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from featx.data.records import SPLIT_WORDS, Record, split_from_name
from featx.errors import DataError

IMAGE_COLUMNS = ("image", "img", "jpg", "png", "jpeg", "webp")
LABEL_COLUMNS = ("label", "labels", "class", "target")
KEY_COLUMNS = ("__key__", "key", "id", "image_id", "file_name", "filename")
BATCH_ROWS = 1024


def hf_records(path: Path, label_col: str | None = None) -> Iterator[Record]:
    """The samples of a `datasets.save_to_disk` folder (every split of a DatasetDict).

    Raises:
        DataError: `datasets` is not installed, the folder cannot be loaded, or it has no image column.
    """
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path}: a Hugging Face dataset; install the `datasets` package "
                        "(pip install 'featx[shards]')") from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds for a damaged folder
        raise DataError(f"{path}: cannot load the saved dataset ({type(exc).__name__}: {str(exc)[:160]})") from None
    parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
    for name, part in parts:
        split = _split_name(name, path) if name is not None else None
        features = part.features.to_dict()
        batches = (t for t in part.with_format("arrow").iter(batch_size=BATCH_ROWS))
        yield from _table_records(batches, features, split, name, label_col, path)


def parquet_records(files: list[Path], label_col: str | None = None) -> Iterator[Record]:
    """The samples of Parquet files, file by file (a file's split from its name).

    Raises:
        DataError: a file that is not Parquet, or one with no image column.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    for file in files:
        try:
            reader = pq.ParquetFile(file)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{file}: not a readable Parquet file ({str(exc)[:160]})") from None
        meta = (reader.schema_arrow.metadata or {}).get(b"huggingface")
        try:
            features = json.loads(meta)["info"]["features"] if meta else {}
        except (ValueError, KeyError, TypeError):
            features = {}
        split = split_from_name(file.name)
        prefix = file.name.split(".")[0] if len(files) > 1 else split
        batches = (pa.Table.from_batches([b]) for b in reader.iter_batches(batch_size=BATCH_ROWS))
        yield from _table_records(batches, features, split, prefix, label_col, file)


def _split_name(name: str, path: Path) -> str:
    split = SPLIT_WORDS.get(name.lower())
    if split is None:
        raise DataError(f"{path}: split {name!r} is not train, validation/val or test; save only "
                        "those splits, or one Dataset (featx then draws the splits)")
    return split


def _table_records(batches, features: dict, split: str | None, prefix: str | None,
                   label_col: str | None, source: Path) -> Iterator[Record]:
    row = 0
    for table in batches:
        names = table.column_names
        image = _image_column(names, features, source)
        label = _label_column(names, features, label_col, source)
        key = next((c for c in KEY_COLUMNS if c in names), None)
        classes = (features.get(label) or {}).get("names") if label else None
        cols = {c: table.column(c).to_pylist() for c in (image, label, key) if c}
        for i, cell in enumerate(cols[image]):
            data, hint = _image_bytes(cell, source, row + i)
            # A row without an image stays a sample (an empty file, failed at decode with its
            # reason), never a row dropped in silence that can take its class with it
            data = b"" if data is None else data
            y = cols[label][i] if label else None
            if classes is not None and y is not None:
                y = classes[y] if 0 <= y < len(classes) else None  # -1: unlabeled
            k = _without_suffix(str(cols[key][i])) if key else f"{prefix or 'rows'}/{row + i:08d}"
            yield k, data, hint, None if y is None else str(y), split
        row += table.num_rows


def _without_suffix(key: str) -> str:
    """The key without its extension; '' or '.' as given (pathlib cannot drop a suffix of an
    empty name), for the archive's key check to refuse in one line."""
    path = PurePosixPath(key)
    return str(path.with_suffix("")) if path.name and path.suffix else key


def _image_column(names: list[str], features: dict, source: Path) -> str:
    typed = [c for c in names if (features.get(c) or {}).get("_type") == "Image"]
    found = typed[0] if typed else next((c for c in names if c.lower() in IMAGE_COLUMNS), None)
    if found is None:
        raise DataError(f"{source}: no image column (an Image feature, or one named "
                        f"{'/'.join(IMAGE_COLUMNS)}); columns: {', '.join(names)}")
    return found


def _label_column(names: list[str], features: dict, label_col: str | None, source: Path) -> str | None:
    if label_col is not None:
        if label_col not in names:
            raise DataError(f"{source}: no label column {label_col!r} (--label-col); columns: {', '.join(names)}")
        return label_col
    typed = [c for c in names if (features.get(c) or {}).get("_type") == "ClassLabel"]
    return typed[0] if typed else next((c for c in names if c.lower() in LABEL_COLUMNS), None)


def _image_bytes(cell, source: Path, row: int) -> tuple[bytes | None, str]:
    """(encoded bytes, extension hint) of one image cell: {bytes, path}, raw bytes, or None.

    A cell without bytes may name a file, but only one inside the archive's own folder (resolved,
    links followed): a row is data, and must never make featx read an arbitrary local file.
    """
    if isinstance(cell, (bytes, bytearray)):
        return bytes(cell), ""
    if not isinstance(cell, dict):
        return None, ""
    path = cell.get("path") or ""
    hint = PurePosixPath(path).suffix if path else ""
    if cell.get("bytes"):
        return cell["bytes"], hint
    if not path:
        return None, ""
    file = _file_inside(source, str(path), row)
    try:
        return file.read_bytes(), hint
    except OSError as exc:
        raise DataError(f"{source}: row {row}: cannot read image file {file} "
                        f"({exc.strerror or exc})") from None


def _file_inside(source: Path, path: str, row: int) -> Path:
    """The file a cell names, relative to the archive's folder; DataError unless it lies inside."""
    folder = (source if source.is_dir() else source.parent).resolve()
    try:
        file = (folder / path).resolve()
    except (OSError, RuntimeError, ValueError):  # a loop of links, a NUL in the name
        file = None
    if file is None or not file.is_relative_to(folder):
        raise DataError(f"{source}: row {row}: image path {path[:200]!r} lies outside the archive's "
                        f"folder {folder}; an archive's images come from its own bytes (or files "
                        "inside its folder), never from elsewhere")
    if not file.is_file():
        raise DataError(f"{source}: row {row}: image path {path[:200]!r} has no bytes and no such "
                        f"file in {folder}")
    return file
