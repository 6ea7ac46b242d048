"""Datasets: turn a folder tree, a CSV manifest or a loose folder into an ordered sample list.

    ds = open_dataset("path/to/hymenoptera")          # train/ val/ [test/] class folders
    ds = open_dataset("cell_images", DatasetOptions(val_frac=0.2, test_frac=0.1))
    ds = open_dataset("elpv")                          # the packaged ELPV labels.csv
    ds = open_dataset("labels.csv", DatasetOptions(label_col=1, binarize=0.5))

Every layout gives the same thing: `Dataset.samples`, a list of (path, label, split) in a stable
order (sorted by path), the class names, and a fingerprint that changes when a file is added,
removed or changed (size or mtime), so a feature store made from other data is never reused.

Deliberate choices (RELIABILITY.md item 12):
- hidden files and folders (names starting with ".") are ignored: .DS_Store, ._AppleDouble, .git;
- symlinks are followed, each real folder is visited once (a symlink loop cannot hang a scan);
  broken symlinks and non-UTF-8 file names are reported in `skipped` and excluded;
- files without an image extension are ignored (counted in `ignored_files`); a file *with* one
  that does not decode is reported when it is read;
- empty class folders are dropped with a note: a class with no image cannot be learned.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featx.errors import DataError, ImageError
from featx.images import is_image_file, load_image

SPLITS = ("train", "val", "test", "unlabeled")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}
PATH_COLUMNS = ("path", "file", "filename", "image", "filepath")


@dataclass(frozen=True)
class Sample:
    path: str  # POSIX path relative to Dataset.root (absolute if outside it)
    label: int  # index into Dataset.classes; -1 = unlabeled
    split: str  # train | val | test | unlabeled
    size: int = 0  # bytes, for the fingerprint and for explaining what changed
    mtime_ns: int = 0


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
        for name in ("val_frac", "test_frac"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise DataError(f"{name} must be in [0, 1), got {value}")
        if self.val_frac + self.test_frac >= 1.0:
            raise DataError(f"val_frac + test_frac must leave a training split, got "
                            f"{self.val_frac} + {self.test_frac}")


@dataclass
class Dataset:
    root: Path
    name: str
    layout: str  # split-folders | class-folders | manifest | unlabeled-folder
    samples: list[Sample]
    classes: list[str]
    display_names: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) found at scan
    notes: list[str] = field(default_factory=list)
    ignored_files: int = 0

    def abspath(self, sample: Sample) -> Path:
        return self.root / sample.path

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([self.layout, self.classes]).encode())
        for s in self.samples:
            h.update(f"{s.path}\0{s.label}\0{s.split}\0{s.size}\0{s.mtime_ns}\n".encode())
        return h.hexdigest()

    def counts(self) -> dict[str, Counter]:
        """{split: Counter(class name -> count)} for splits that have samples."""
        out: dict[str, Counter] = {}
        for s in self.samples:
            name = self.classes[s.label] if s.label >= 0 else "(unlabeled)"
            out.setdefault(s.split, Counter())[name] += 1
        return out


# ELPV's labels are defect probabilities from raters; 1/3 and 2/3 mean the raters were unsure.
ELPV_NAMES = {"0.0": "functional (p=0)", "0.3333333333333333": "doubtful (p=1/3)",
              "0.6666666666666666": "doubtful (p=2/3)", "1.0": "defective (p=1)",
              "<=0.5": "functional", ">0.5": "defective"}


def packaged_datasets() -> dict[str, tuple[Path, DatasetOptions, dict[str, str]]]:
    """Datasets that ship inside PyPI packages, usable offline by name: (file, options, names)."""
    out = {}
    try:
        import elpv_dataset

        labels = Path(elpv_dataset.__file__).parent / "data" / "labels.csv"
        out["elpv"] = (labels, DatasetOptions(label_col=1), ELPV_NAMES)
    except ImportError:
        pass
    return out


def open_dataset(source: str | os.PathLike, options: DatasetOptions | None = None) -> Dataset:
    """Scan `source` (a folder, a manifest file, or a packaged dataset name) into a Dataset."""
    explicit = options is not None
    options = options or DatasetOptions()
    path = Path(source).expanduser()
    packaged = packaged_datasets()
    name, names = None, {}
    if not path.exists() and str(source) in packaged:
        path, defaults, names = packaged[str(source)]
        name = str(source)
        if not explicit or options.label_col is None:
            options = _merge_defaults(options, defaults)
    if not path.exists():
        hint = f" (packaged datasets: {', '.join(sorted(packaged))})" if packaged else ""
        raise DataError(f"{source}: no such file or folder{hint}")
    if path.is_file():
        dataset = _from_manifest(path, options)
    else:
        dataset = _from_folder(path, options)
    if name:
        dataset.name = name
        dataset.display_names = [names.get(c, c) for c in dataset.classes]
    if options.class_map:
        dataset.display_names = _apply_class_map(Path(options.class_map), dataset.classes)
    if not dataset.samples:
        raise DataError(f"{source}: no images found (layout: {dataset.layout})")
    return dataset


def _merge_defaults(options: DatasetOptions, defaults: DatasetOptions) -> DatasetOptions:
    from dataclasses import replace

    return replace(options, label_col=defaults.label_col if options.label_col is None
                   else options.label_col)


# --- folders ---------------------------------------------------------------------------------

def _from_folder(root: Path, options: DatasetOptions) -> Dataset:
    subdirs = _visible_subdirs(root)
    split_dirs = {SPLIT_ALIASES[d.name.lower()]: d for d in subdirs if d.name.lower() in SPLIT_ALIASES}
    if "train" in split_dirs:
        return _from_split_folders(root, split_dirs, [d for d in subdirs if d not in split_dirs.values()])
    loose, skipped, ignored = _list_images(root, recursive=False)
    if subdirs:
        dataset = _from_class_folders(root, subdirs, options)
        if loose:
            dataset.notes.append(f"{len(loose)} image(s) at the top level are not in a class "
                                 "folder and were ignored")
        return dataset
    samples = [_sample(root, p, -1, "unlabeled") for p in loose]
    return Dataset(root, root.name, "unlabeled-folder", samples, [], [], skipped,
                   ignored_files=ignored)


def _from_split_folders(root: Path, split_dirs: dict[str, Path], others: list[Path]) -> Dataset:
    notes = [f"folder '{d.name}' is not a split (train/val/test) and was ignored" for d in others]
    per_split: dict[str, dict[str, list[Path]]] = {}
    skipped: list[tuple[str, str]] = []
    ignored = 0
    for split, folder in split_dirs.items():
        per_split[split], sk, ig, empty = _images_by_class(folder)
        skipped += sk
        ignored += ig
        notes += [f"empty class folder '{split}/{c}' ignored" for c in empty]
    classes = sorted({c for by_class in per_split.values() for c in by_class})
    index = {c: i for i, c in enumerate(classes)}
    samples = [_sample(root, p, index[c], split)
               for split, by_class in per_split.items() for c, paths in by_class.items() for p in paths]
    samples.sort(key=lambda s: s.path)
    return Dataset(root, root.name, "split-folders", samples, classes, list(classes), skipped,
                   notes, ignored)


def _from_class_folders(root: Path, subdirs: list[Path], options: DatasetOptions) -> Dataset:
    by_class, skipped, ignored, empty = _images_by_class(root)
    classes = sorted(by_class)
    labels = {p: i for i, c in enumerate(classes) for p in by_class[c]}
    paths = sorted(labels, key=lambda p: _relative(root, p))
    splits = stratified_split([labels[p] for p in paths], options)
    samples = [_sample(root, p, labels[p], split) for p, split in zip(paths, splits)]
    notes = [f"empty class folder '{c}' ignored" for c in empty]
    return Dataset(root, root.name, "class-folders", samples, classes, list(classes), skipped,
                   notes, ignored)


def _images_by_class(folder: Path):
    by_class: dict[str, list[Path]] = {}
    skipped: list[tuple[str, str]] = []
    ignored = 0
    empty = []
    for sub in _visible_subdirs(folder):
        images, sk, ig = _list_images(sub, recursive=True)
        skipped += sk
        ignored += ig
        if images:
            by_class[sub.name] = images
        else:
            empty.append(sub.name)
    return by_class, skipped, ignored, empty


def _visible_subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())


def _list_images(folder: Path, recursive: bool) -> tuple[list[Path], list[tuple[str, str]], int]:
    """Image files under `folder`, following symlinks but visiting each real folder once."""
    images, skipped, ignored = [], [], 0
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop or a second link to the same folder
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            if not is_image_file(name):
                ignored += 1
            elif not _utf8(name):
                skipped.append((os.fsdecode(full), "file name is not valid UTF-8"))
            elif not full.exists():
                skipped.append((str(full), "broken symlink"))
            else:
                images.append(full)
    return images, skipped, ignored


def list_images(paths: list[str | os.PathLike]) -> tuple[Dataset, list[tuple[str, str]]]:
    """Image files and folders (searched recursively) as one unlabeled dataset, for prediction."""
    files, skipped = [], []
    for item in map(Path, paths):
        if item.is_dir():
            found, sk, _ = _list_images(item, recursive=True)
            files += found
            skipped += sk
        elif item.is_file():
            files.append(item)
        else:
            skipped.append((str(item), "no such file or folder"))
    files = sorted({f.resolve() for f in files})
    if not files:
        raise DataError(f"no images found in {', '.join(map(str, paths))}")
    root = Path(os.path.commonpath([str(f.parent) for f in files]))
    samples = [_sample(root, f, -1, "unlabeled") for f in files]
    return Dataset(root, root.name, "unlabeled-folder", samples, [], [], skipped), skipped


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # surrogate-escaped bytes from a non-UTF-8 file system name
        return False


def _relative(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _sample(root: Path, path: Path, label: int, split: str) -> Sample:
    st = path.stat()
    return Sample(_relative(root, path), label, split, st.st_size, st.st_mtime_ns)


# --- splits ----------------------------------------------------------------------------------

def stratified_split(labels: list[int], options: DatasetOptions) -> list[str]:
    """Seeded, per-class split into train/val/test; unlabeled (-1) samples stay unlabeled."""
    splits = ["unlabeled" if y < 0 else "train" for y in labels]
    rng = np.random.default_rng(options.split_seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        if y >= 0:
            by_class.setdefault(y, []).append(i)
    for y in sorted(by_class):
        members = [by_class[y][j] for j in rng.permutation(len(by_class[y]))]
        n_test = int(round(len(members) * options.test_frac))
        n_val = int(round(len(members) * options.val_frac))
        if n_test + n_val >= len(members):  # tiny classes keep at least one training image
            n_val = max(0, min(n_val, len(members) - 1 - n_test))
            n_test = max(0, min(n_test, len(members) - 1 - n_val))
        for i in members[:n_test]:
            splits[i] = "test"
        for i in members[n_test:n_test + n_val]:
            splits[i] = "val"
    return splits


# --- CSV manifests ---------------------------------------------------------------------------

def _from_manifest(path: Path, options: DatasetOptions) -> Dataset:
    rows, header = _read_table(path)
    if not rows:
        raise DataError(f"{path}: manifest has no rows")
    path_i = _column(header, None, PATH_COLUMNS, 0, path, "path")
    label_i = _column(header, options.label_col, ("label", "class", "target"), 1, path, "label")
    split_i = _column(header, options.split_col, ("split", "subset"), None, path, "split")
    root = path.parent
    raw_labels, files, splits_given, skipped = [], [], [], []
    for n, row in enumerate(rows, start=2 if header else 1):
        if path_i >= len(row) or (label_i is not None and label_i >= len(row)):
            raise DataError(f"{path}:{n}: expected at least {max(path_i, label_i or 0) + 1} "
                            f"columns, got {len(row)}: {row}")
        file = (root / row[path_i]).resolve() if not os.path.isabs(row[path_i]) else Path(row[path_i])
        if not file.exists():
            skipped.append((row[path_i], "file not found"))
            continue
        files.append(file)
        raw_labels.append(row[label_i].strip() if label_i is not None else "")
        splits_given.append(_split_name(row[split_i], path, n) if split_i is not None else None)
    raw_labels = _binarize(raw_labels, options.binarize, path) if options.binarize is not None else raw_labels
    classes = _order_classes({x for x in raw_labels if x != ""}, binarized=options.binarize is not None)
    index = {c: i for i, c in enumerate(classes)}
    labels = [index[x] if x != "" else -1 for x in raw_labels]
    order = sorted(range(len(files)), key=lambda i: _relative(root, files[i]))
    files, labels, splits_given = ([seq[i] for i in order] for seq in (files, labels, splits_given))
    if split_i is not None:
        splits = [s if y >= 0 else "unlabeled" for s, y in zip(splits_given, labels)]
    else:
        splits = stratified_split(labels, options)
    samples = [_sample(root.resolve(), f, y, s) for f, y, s in zip(files, labels, splits)]
    name = root.name if path.name.lower() in ("labels.csv", "manifest.csv") else path.stem
    return Dataset(root.resolve(), name, "manifest", samples, classes, list(classes), skipped)


def _read_table(path: Path) -> tuple[list[list[str]], list[str] | None]:
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
    # A header row is one whose first cell is not a file name with an image extension.
    if not is_image_file(rows[0][0]) and any(is_image_file(r[0]) for r in rows[1:2]):
        return rows[1:], [c.lower() for c in rows[0]]
    return rows, None


def _column(header, wanted, names, default, path, role) -> int | None:
    if wanted is not None:
        if isinstance(wanted, int) or str(wanted).isdigit():
            return int(wanted)
        if header and str(wanted).lower() in header:
            return header.index(str(wanted).lower())
        raise DataError(f"{path}: no {role} column named '{wanted}' (columns: {header or 'no header'})")
    if header:
        for name in names:
            if name in header:
                return header.index(name)
    return default


def _split_name(value: str, path: Path, line: int) -> str:
    split = SPLIT_ALIASES.get(value.strip().lower())
    if split is None:
        raise DataError(f"{path}:{line}: unknown split '{value}' (use train, val or test)")
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
            raise DataError(f"{path}: --binarize needs numeric labels, found '{x}'") from None
    return out


def _order_classes(names: set[str], binarized: bool) -> list[str]:
    try:
        if binarized:
            return sorted(names, key=lambda s: s.startswith(">"))
        return sorted(names, key=float)  # numeric labels in numeric order (0, 1/3, 2/3, 1)
    except ValueError:
        return sorted(names)


def _apply_class_map(path: Path, classes: list[str]) -> list[str]:
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read class map ({exc})") from None
    if not isinstance(mapping, dict):
        raise DataError(f"{path}: class map must be a JSON object {{class: name}}")
    return [str(mapping.get(c, c)) for c in classes]


# --- subsets and scans -------------------------------------------------------------------------

def subset(dataset: Dataset, n: int, seed: int = 0) -> Dataset:
    """A stratified (per split and class), seeded subset of about `n` samples, for quick runs.

    The subset is a dataset of its own (name `<name>-sub<n>`, its own fingerprint), so its
    feature store never mixes with the full dataset's.
    """
    if n <= 0:
        raise DataError(f"subset size must be positive, got {n}")
    if n >= len(dataset.samples):
        return dataset
    groups: dict[tuple[str, int], list[int]] = {}
    for i, s in enumerate(dataset.samples):
        groups.setdefault((s.split, s.label), []).append(i)
    rng = np.random.default_rng(seed)
    keys = sorted(groups)
    # Largest-remainder apportionment: exactly n samples, each group in proportion.
    quotas = np.array([len(groups[k]) * n / len(dataset.samples) for k in keys])
    takes = np.floor(quotas).astype(int)
    for j in np.argsort(-(quotas - takes), kind="stable")[: n - int(takes.sum())]:
        takes[j] += 1
    keep: list[int] = []
    for key, take in zip(keys, takes):
        members = groups[key]
        keep += [members[j] for j in rng.permutation(len(members))[:take]]
    samples = [dataset.samples[i] for i in sorted(keep)]
    from dataclasses import replace

    return replace(dataset, name=f"{dataset.name}-sub{n}", samples=samples,
                   notes=dataset.notes + [f"stratified subset: {len(samples)} of "
                                          f"{len(dataset.samples)} samples (seed {seed})"])


@dataclass
class ScanReport:
    """What decoding every image found: sizes, modes, and the files that cannot be used."""

    sizes: Counter = field(default_factory=Counter)  # (width, height) -> count
    modes: Counter = field(default_factory=Counter)  # Pillow mode before conversion -> count
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def scan_images(dataset: Dataset, advance=lambda n: None) -> ScanReport:
    """Decode every sample fully (truncation shows only then) and summarise what was found."""
    from PIL import Image

    report = ScanReport(unreadable=list(dataset.skipped))
    for sample in dataset.samples:
        path = dataset.abspath(sample)
        try:
            load_image(path)
            with Image.open(path) as img:
                report.sizes[img.size] += 1
                report.modes[img.mode] += 1
        except ImageError as exc:
            report.unreadable.append((sample.path, exc.reason))
        advance(1)
    return report
