"""CSV / TSV / whitespace manifests: one row per image, with path, label and optional split.

    path,label,split            # a header names the columns (any order) ...
    img/001.png,cat,train
    img/002.png 1.0             # ... or none: path first, label second (ELPV's labels.csv)
"""

from __future__ import annotations

import csv
import errno
import io
import os
import stat
from pathlib import Path

from featx.data.dataset import Dataset, make_sample, relative_path
from featx.data.identity import split_by_identity
from featx.data.records import SPLIT_WORDS, DatasetOptions
from featx.errors import DataError
from featx.data.images import is_image_file

PATH_COLUMNS = ("path", "file", "filename", "image", "filepath")
LABEL_COLUMNS = ("label", "class", "target")
SPLIT_COLUMNS = ("split", "subset")


def from_manifest(path: Path, options: DatasetOptions) -> Dataset:
    """Read a manifest into a Dataset; rows whose file is missing go to `skipped`."""
    rows, header = read_table(path)
    if not rows:
        raise DataError(f"{path}: manifest has no rows")
    path_i = _column(header, None, PATH_COLUMNS, 0, path, "path")
    label_i = _column(header, options.label_col, LABEL_COLUMNS, 1, path, "label")
    split_i = _column(header, options.split_col, SPLIT_COLUMNS, None, path, "split")
    for role, index, given in (("label", label_i, options.label_col), ("split", split_i, options.split_col)):
        if given is not None and index >= len(rows[0]):
            raise DataError(f"{path}: no {role} column {index} (0-based; the rows have {len(rows[0])} columns)")
    root = path.parent
    raw_labels, files, splits_given, skipped = [], [], [], []
    for n, row in enumerate(rows, start=2 if header else 1):
        needed = max(i for i in (path_i, label_i, split_i) if i is not None) + 1
        if len(row) < needed:
            raise DataError(f"{path}:{n}: expected at least {needed} columns, got {len(row)}: {row}")
        file, problem = _image_file(root, row[path_i])
        if problem:
            skipped.append((row[path_i], problem))
            continue
        files.append(file)
        raw_labels.append(row[label_i].strip() if label_i is not None else "")
        splits_given.append(_split_name(row[split_i], path, n) if split_i is not None else None)
    if not files and not any(is_image_file(row[path_i]) for row in rows):
        raise DataError(f"{path}: no column of image file names (a header naming one of "
                        f"{', '.join(PATH_COLUMNS)}, or the paths in the first column)")
    if options.binarize is not None:
        raw_labels = _binarize(raw_labels, options.binarize, path)
    classes = _order_classes({x for x in raw_labels if x != ""}, binarized=options.binarize is not None)
    index = {c: i for i, c in enumerate(classes)}
    labels = [index[x] if x != "" else -1 for x in raw_labels]
    order = sorted(range(len(files)), key=lambda i: relative_path(root, files[i]))
    files, labels, splits_given = ([seq[i] for i in order] for seq in (files, labels, splits_given))
    if split_i is not None:
        splits = [s if y >= 0 else "unlabeled" for s, y in zip(splits_given, labels)]
        samples = [make_sample(root.resolve(), f, y, s) for f, y, s in zip(files, labels, splits)]
    else:  # no split column: each sample's split follows its content (featx.data.identity)
        samples = split_by_identity(root.resolve(), files, labels, options)
    name = root.name if path.name.lower() in ("labels.csv", "manifest.csv") else path.stem
    return Dataset(root.resolve(), name, "manifest", samples, classes, list(classes), skipped)


def _image_file(root: Path, name: str) -> tuple[Path, str | None]:
    """The file a manifest row names (relative to the manifest's folder), and why it cannot be
    used, if it cannot: missing, a folder, or a name the file system refuses."""
    if "\0" in name:
        return Path(), "file name holds a NUL character"
    file = Path(name) if os.path.isabs(name) else (root / name).resolve()
    try:
        st = os.stat(file)
    except (FileNotFoundError, NotADirectoryError):
        return file, "file not found"
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return file, "file name too long"
        return file, f"cannot read file ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        return file, "a folder, not an image file"
    return file, None


def read_table(path: Path) -> tuple[list[list[str]], list[str] | None]:
    """Rows of a comma, tab or whitespace separated file, and its header if it has one."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read manifest ({exc})") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return [], None
    first = lines[0]
    if "," in first or "\t" in first:
        rows = [r for r in csv.reader(io.StringIO("\n".join(lines)),
                                      delimiter="," if "," in first else "\t")]
    else:  # ELPV's labels.csv: columns separated by runs of spaces, no header
        rows = [ln.split() for ln in lines]
    rows = [[cell.strip() for cell in r] for r in rows]
    # A header row names no image file, where the row after it does (in any column), or names
    # only known columns (path,label: the row after it may be a file that is no image)
    names = {c.lower() for c in rows[0]}
    if not any(map(is_image_file, rows[0])) and (
            any(map(is_image_file, rows[1] if len(rows) > 1 else []))
            or (names & set(PATH_COLUMNS) and names <= {*PATH_COLUMNS, *LABEL_COLUMNS, *SPLIT_COLUMNS})):
        return rows[1:], [c.lower() for c in rows[0]]
    return rows, None


def _column(header: list[str] | None, wanted: str | int | None, names: tuple[str, ...],
            default: int | None, path: Path, role: str) -> int | None:
    """The index of the `role` column: as asked (name or index), else the first known name."""
    if wanted is not None:
        if isinstance(wanted, int) and wanted < 0:  # -1 would quietly be the last column
            raise DataError(f"{path}: {role} column index must be 0 or more, got {wanted}")
        if isinstance(wanted, int) or str(wanted).isdigit():
            return int(wanted)
        if header and str(wanted).lower() in header:
            return header.index(str(wanted).lower())
        columns = ", ".join(header) if header else "none named: the manifest has no header"
        raise DataError(f"{path}: no {role} column named {wanted!r} (columns: {columns})")
    if header:
        for name in names:
            if name in header:
                return header.index(name)
    return default


def _split_name(value: str, path: Path, line: int) -> str:
    split = SPLIT_WORDS.get(value.strip().lower())
    if split is None:
        raise DataError(f"{path}:{line}: unknown split {value!r} (use train, val or test)")
    return split


def _binarize(labels: list[str], threshold: float, path: Path) -> list[str]:
    out = []
    for x in labels:
        if x == "":
            out.append("")
            continue
        try:
            out.append(f">{threshold:g}" if float(x) > threshold else f"<={threshold:g}")
        except ValueError:
            raise DataError(f"{path}: --binarize needs numeric labels, found {x!r}") from None
    return out


def _order_classes(names: set[str], binarized: bool) -> list[str]:
    try:
        if binarized:
            return sorted(names, key=lambda s: s.startswith(">"))
        return sorted(names, key=float)  # numeric labels in numeric order (0, 1/3, 2/3, 1)
    except ValueError:
        return sorted(names)
