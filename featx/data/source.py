"""open_dataset: a folder, a manifest file or a packaged dataset name -> one Dataset."""

from __future__ import annotations

import difflib

import json
import os
from dataclasses import replace
from pathlib import Path

from featx.data.archives import archive_kind, archive_note, unpack_archive
from featx.data.dataset import Dataset
from featx.data.records import DatasetOptions
from featx.data.folders import from_folder
from featx.data.manifest import from_manifest
from featx.data.packaged import packaged_datasets
from featx.config import as_config
from featx.errors import ConfigError, DataError


def open_dataset(source: str | os.PathLike, options: DatasetOptions | dict | None = None) -> Dataset:
    """Scan `source` (a folder, a manifest file, or a packaged dataset name) into a Dataset.

    `options` is a DatasetOptions or a dict of its fields ({"val_frac": 0.2}).

    Raises:
        ConfigError: `source` is empty (Path("") would be the current folder), or `options` is
            neither a DatasetOptions nor a dict of its fields.
        DataError: no such source, an unreadable manifest, or no images found.
    """
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"DATA must be a folder, a manifest file or a packaged dataset name, got "
                          f"{type(source).__name__}")
    if not str(source).strip():  # Path("") is the current folder: never what was meant
        raise ConfigError("DATA is empty: give a folder, a manifest file or a packaged dataset name")
    explicit = options is not None
    options = as_config(DatasetOptions, options, "options")
    path = Path(source).expanduser()
    packaged = packaged_datasets()
    name, names = None, {}
    if not path.exists() and str(source) in packaged:
        path, defaults, names = packaged[str(source)]
        name = str(source)
        if not explicit or options.label_col is None:
            options = replace(options, label_col=defaults.label_col)
    if not path.exists():
        close = difflib.get_close_matches(str(source), sorted(packaged), n=1)
        hint = (f"; did you mean {close[0]}?" if close else
                f" (packaged datasets: {', '.join(sorted(packaged))})" if packaged else "")
        raise DataError(f"{source}: no such file or folder{hint}")
    if path.is_file() and path.suffix.lower() in (".h5", ".hdf5", ".safetensors"):
        raise DataError(f"{source}: a feature store or weights file, not a dataset (a folder, a CSV/TSV "
                        "manifest or a packaged name); to fine-tune on a store's cached maps, add "
                        "--from-block CUT (from_block=) with a store made by `extract --cut`")
    kind = archive_kind(path)
    note = archive_note(path, kind) if kind else None  # a cover or README beside the shards
    if kind:  # WebDataset shards, a saved `datasets` dataset, Parquet: unpacked once (archives.py)
        name = name or path.resolve().name.split(".")[0] or None
        path = unpack_archive(path, kind, options)
        options = replace(options, label_col=None, split_col=None)  # the unpacked manifest's own
    dataset = from_manifest(path, options) if path.is_file() else from_folder(path, options)
    if note:
        dataset.notes.append(note)
    if not name and not dataset.name:  # `featx extract .`: Path(".").name is ""
        dataset.name = Path(dataset.root).resolve().name or "data"
    if name:
        dataset.name = name
        dataset.display_names = [names.get(c, c) for c in dataset.classes]
        dataset.given_names = {c: str(n) for c, n in names.items() if c in dataset.classes}
    if options.class_map:
        mapping = read_class_map(options.class_map)
        dataset.display_names = [str(mapping.get(c, c)) for c in dataset.classes]
        dataset.given_names = {**dataset.given_names,
                               **{c: str(n) for c, n in mapping.items() if c in dataset.classes}}
    if not dataset.samples:
        raise DataError(f"{source}: no images found (layout: {dataset.layout}{_first_skipped(dataset)})")
    return dataset


def _first_skipped(dataset: Dataset) -> str:
    if not dataset.skipped:
        return ""
    path, reason = dataset.skipped[0]
    reasons = sorted({r for _, r in dataset.skipped})
    return (f"; {len(dataset.skipped)} file(s) skipped ({', '.join(reasons[:3])}), "
            f"the first: {path}: {reason}")


def read_class_map(path: str | os.PathLike) -> dict[str, str]:
    """A JSON {class: display name} file, like the flowers tutorial's cat_to_name.json.

    Raises:
        DataError: the file cannot be read, is not JSON, or is not one object.
    """
    try:
        mapping = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read class map ({exc})") from None
    if not isinstance(mapping, dict):
        raise DataError(f"{path}: class map must be a JSON object {{class: name}}")
    return {str(k): str(v) for k, v in mapping.items()}


def as_dataset(data: "Dataset | str | os.PathLike") -> "Dataset":
    """`data` itself when it is a Dataset, else `open_dataset(data)` (the API takes either)."""
    return data if isinstance(data, Dataset) else open_dataset(data)
