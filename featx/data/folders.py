"""Folder layouts: train/val/test split folders, class folders, a loose folder of images.

Deliberate choices (docs/reliability.md item 12): hidden files and folders are ignored; symlinks are
followed and each real folder is visited once (a symlink loop cannot hang a scan); broken
symlinks and non-UTF-8 names are reported in `skipped`; files without an image extension are
counted in `ignored_files`; empty class folders are dropped with a note.
"""

from __future__ import annotations

import os
from pathlib import Path

from featx.data.dataset import SPLIT_ALIASES, Dataset, DatasetOptions, make_sample, relative_path
from featx.data.splits import stratified_split
from featx.errors import DataError
from featx.images import is_image_file

Skipped = list[tuple[str, str]]  # (path, reason)


def from_folder(root: Path, options: DatasetOptions) -> Dataset:
    """Split folders if there is a train/ folder, else class folders, else unlabeled images."""
    subdirs = _visible_subdirs(root)
    split_dirs = {SPLIT_ALIASES[d.name.lower()]: d for d in subdirs if d.name.lower() in SPLIT_ALIASES}
    if "train" in split_dirs:
        return _from_split_folders(root, split_dirs, [d for d in subdirs if d not in split_dirs.values()])
    loose, skipped, ignored = walk_images(root, recursive=False)
    if subdirs:
        dataset = _from_class_folders(root, options)
        if loose:
            dataset.notes.append(f"{len(loose)} image(s) at the top level are not in a class "
                                 "folder and were ignored")
        return dataset
    samples = [make_sample(root, p, -1, "unlabeled") for p in loose]
    return Dataset(root, root.name, "unlabeled-folder", samples, [], [], skipped,
                   ignored_files=ignored)


def _from_split_folders(root: Path, split_dirs: dict[str, Path], others: list[Path]) -> Dataset:
    notes = [f"folder '{d.name}' is not a split (train/val/test) and was ignored" for d in others]
    per_split: dict[str, dict[str, list[Path]]] = {}
    skipped: Skipped = []
    ignored = 0
    for split, folder in split_dirs.items():
        per_split[split], sk, ig, empty = _images_by_class(folder)
        skipped += sk
        ignored += ig
        notes += [f"empty class folder '{split}/{c}' ignored" for c in empty]
    classes = sorted({c for by_class in per_split.values() for c in by_class})
    index = {c: i for i, c in enumerate(classes)}
    samples = [make_sample(root, p, index[c], split)
               for split, by_class in per_split.items() for c, paths in by_class.items() for p in paths]
    samples.sort(key=lambda s: s.path)
    return Dataset(root, root.name, "split-folders", samples, classes, list(classes), skipped,
                   notes, ignored)


def _from_class_folders(root: Path, options: DatasetOptions) -> Dataset:
    by_class, skipped, ignored, empty = _images_by_class(root)
    classes = sorted(by_class)
    labels = {p: i for i, c in enumerate(classes) for p in by_class[c]}
    paths = sorted(labels, key=lambda p: relative_path(root, p))
    splits = stratified_split([labels[p] for p in paths], options)
    samples = [make_sample(root, p, labels[p], split) for p, split in zip(paths, splits)]
    notes = [f"empty class folder '{c}' ignored" for c in empty]
    return Dataset(root, root.name, "class-folders", samples, classes, list(classes), skipped,
                   notes, ignored)


def _images_by_class(folder: Path) -> tuple[dict[str, list[Path]], Skipped, int, list[str]]:
    """({class: images}, skipped, ignored file count, empty class folders) of `folder`'s subfolders."""
    by_class: dict[str, list[Path]] = {}
    skipped: Skipped = []
    ignored = 0
    empty = []
    for sub in _visible_subdirs(folder):
        images, sk, ig = walk_images(sub, recursive=True)
        skipped += sk
        ignored += ig
        if images:
            by_class[sub.name] = images
        else:
            empty.append(sub.name)
    return by_class, skipped, ignored, empty


def _visible_subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())


def walk_images(folder: Path, recursive: bool) -> tuple[list[Path], Skipped, int]:
    """(image files, skipped, ignored count) under `folder`, following symlinks but visiting
    each real folder once."""
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


def list_images(paths: list[str | os.PathLike]) -> tuple[Dataset, Skipped]:
    """Image files and folders (searched recursively) as one unlabeled dataset, for prediction."""
    files, skipped = [], []
    for item in map(Path, paths):
        if item.is_dir():
            found, sk, _ = walk_images(item, recursive=True)
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
    samples = [make_sample(root, f, -1, "unlabeled") for f in files]
    return Dataset(root, root.name, "unlabeled-folder", samples, [], [], skipped), skipped


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # surrogate-escaped bytes from a non-UTF-8 file system name
        return False
