"""Folder layouts: train/val/test split folders, class folders, a loose folder of images.

Deliberate choices (docs/reliability.md item 12): hidden files and folders are ignored; symlinks are
followed and each real folder is read once per dataset, by the class it really lies in (featx.data.walk:
a symlink loop can neither hang a scan nor relabel images); broken symlinks and non-UTF-8 names are
reported in `skipped`; files without an image extension are counted in `ignored_files`; empty class
folders are dropped with a note.

A folder named `unlabeled` or `unlabelled` (any case) holds unlabelled images (label -1, split
"unlabeled": the pool `featx select` picks from), never a class: beside class folders, beside
train/val/test split folders, or inside a split where a class folder would be. A user labels an
image by moving it into a class folder; the store update finds it by its content (a relabel).
"""

from __future__ import annotations

import os
from pathlib import Path

from featx.data.dataset import Dataset, gc_paused, make_sample, relative_paths
from featx.data.identity import samples_by_identity
from featx.data.records import SPLIT_WORDS, DatasetOptions
from featx.data.walk import FolderWalk, Skipped, walk_images
from featx.errors import DataError
from featx.runtime.atomic import OUTPUT_MARKER, is_output_folder

# Folder names (compared in lower case) that hold unlabelled images, not a class.
UNLABELED_FOLDERS = ("unlabeled", "unlabelled")


def is_unlabeled_folder(name: str) -> bool:
    """Whether a folder of this name holds unlabelled images rather than a class."""
    return name.lower() in UNLABELED_FOLDERS


def from_folder(root: Path, options: DatasetOptions) -> Dataset:
    """Split folders if there is a train/ folder, else class folders, else unlabeled images."""
    with gc_paused():  # a million files' paths and samples: nothing for the collector to find
        return _from_folder(root, options)


def _from_folder(root: Path, options: DatasetOptions) -> Dataset:
    dataset = _read_layout(root, options)
    outputs = [p.name for p in _visible_subdirs(root, outputs=True) if is_output_folder(p)]
    if outputs:  # `cd DATA; featx extract .` writes stores/ (and heads/, ...) inside the dataset
        dataset.notes.append(f"folder(s) {', '.join(outputs)} skipped: featx's own outputs "
                             f"({OUTPUT_MARKER}), not data")
    return dataset


def _read_layout(root: Path, options: DatasetOptions) -> Dataset:
    subdirs = _visible_subdirs(root)
    split_dirs = {SPLIT_WORDS[d.name.lower()]: d for d in subdirs if d.name.lower() in SPLIT_WORDS}
    if "train" in split_dirs:
        return _from_split_folders(root, split_dirs, [d for d in subdirs if d not in split_dirs.values()])
    loose, skipped, ignored = walk_images(root, recursive=False)
    if subdirs:
        dataset = _from_class_folders(root, options)
        if loose:
            dataset.notes.append(f"{len(loose)} image(s) at the top level are not in a class "
                                 "folder and were ignored (unlabelled images go in unlabeled/)")
        return dataset
    samples = [make_sample(root, p, -1, "unlabeled") for p in loose]
    return Dataset(root, root.name, "unlabeled-folder", samples, [], [], skipped,
                   ignored_files=ignored)


def _from_split_folders(root: Path, split_dirs: dict[str, Path], others: list[Path]) -> Dataset:
    pools = [d for d in others if is_unlabeled_folder(d.name)]
    notes = [f"folder '{d.name}' is not a split (train/val/test) and was ignored"
             for d in others if d not in pools]
    walk = FolderWalk(root, reserved=tuple(split_dirs.values()))
    # (split, folder): a class folder of a split, or (None, folder) a folder of unlabelled images.
    tops = [(split, sub) for split, folder in split_dirs.items() for sub in _visible_subdirs(folder)]
    tops = [(None if is_unlabeled_folder(sub.name) else split, sub) for split, sub in tops]
    tops += [(None, d) for d in pools]
    per_split: dict[str, dict[str, list[str]]] = {split: {} for split in split_dirs}
    unlabelled: list[str] = []
    skipped: Skipped = []
    ignored = 0
    for (split, sub), found in zip(tops, walk.walk([sub for _, sub in tops])):
        skipped += found.skipped
        ignored += found.ignored
        name = sub.relative_to(root).as_posix()
        if split is None:
            unlabelled += found.images
            notes += [_pool_note(name, len(found.images), "a class folder of a split")] if found.images else []
        elif found.images:
            per_split[split][sub.name] = found.images
        elif sub not in walk.skipped_tops:
            notes.append(f"empty class folder '{name}' ignored")
    notes += walk.notes
    classes = sorted({c for by_class in per_split.values() for c in by_class})
    index = {c: i for i, c in enumerate(classes)}
    samples = [make_sample(root, p, index[c], split)
               for split, by_class in per_split.items() for c, paths in by_class.items() for p in paths]
    samples += [make_sample(root, p, -1, "unlabeled") for p in unlabelled]
    samples.sort(key=lambda s: s.path)
    return Dataset(root, root.name, "split-folders", samples, classes, list(classes), skipped,
                   notes, ignored)


def _from_class_folders(root: Path, options: DatasetOptions) -> Dataset:
    """Class folders, and unlabelled images in `unlabeled/` (an `unlabeled/` alone: no classes
    yet, every image unlabelled; still this layout, so labelling it is a store update)."""
    walk = FolderWalk(root)
    subs = _visible_subdirs(root)
    by_class: dict[str, list[str]] = {}  # class -> relative paths (strings: 1M Paths hold ~350 MB)
    unlabelled: list[str] = []
    skipped: Skipped = []
    ignored = 0
    notes = []
    for sub, found in zip(subs, walk.walk(subs)):
        skipped += found.skipped
        ignored += found.ignored
        if is_unlabeled_folder(sub.name):
            unlabelled += relative_paths(root, found.images)
            notes += [_pool_note(sub.name, len(found.images), "a class folder")] if found.images else []
        elif found.images:
            by_class[sub.name] = relative_paths(root, found.images)
        elif sub not in walk.skipped_tops:
            notes.append(f"empty class folder '{sub.name}' ignored")
        found.images.clear()  # a million full paths need not outlive the relative ones
    classes = sorted(by_class)
    rels = [rel for c in classes for rel in by_class[c]] + unlabelled
    labels = [y for y, c in enumerate(classes) for _ in by_class[c]] + [-1] * len(unlabelled)
    by_class.clear()
    del unlabelled
    order = sorted(range(len(rels)), key=rels.__getitem__)
    rels = [rels[i] for i in order]
    labels = [labels[i] for i in order]
    del order
    samples = samples_by_identity(root, rels, labels, options)  # label -1: split "unlabeled"
    return Dataset(root, root.name, "class-folders", samples, classes, list(classes), skipped,
                   notes + walk.notes, ignored)


def _pool_note(folder: str, count: int, where: str) -> str:
    return (f"folder '{folder}': {count} unlabelled image(s), not a class (`featx select` picks "
            f"from them; move one into {where} to label it)")


def _visible_subdirs(folder: Path, outputs: bool = False) -> list[Path]:
    """The folder's visible subfolders, sorted; featx's output folders only with `outputs`."""
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir()
                      and (outputs or not is_output_folder(p)))
    except OSError as exc:
        raise DataError(f"{folder}: cannot read folder ({exc.strerror or exc})") from None


def list_images(paths: list[str | os.PathLike]) -> tuple[Dataset, Skipped]:
    """Image files and folders (searched recursively) as one unlabeled dataset, for prediction."""
    files, skipped = [], []
    for item in map(Path, paths):
        try:
            item.stat()
        except OSError as exc:  # missing, a name too long, a loop of links, no permission
            skipped.append((str(item), "no such file or folder" if isinstance(exc, FileNotFoundError)
                            else f"cannot read ({exc.strerror or exc})"))
            continue
        if item.is_dir():
            found, sk, _ = walk_images(item, recursive=True)
            files += found
            skipped += sk
        elif item.is_file():
            files.append(item)
        else:
            skipped.append((str(item), "not a file or a folder"))
    files = sorted({Path(f).resolve() for f in files})
    if not files:
        raise DataError(f"no images found in {', '.join(map(str, paths))}")
    root = Path(os.path.commonpath([str(f.parent) for f in files]))
    samples = [make_sample(root, f, -1, "unlabeled") for f in files]
    return Dataset(root, root.name, "unlabeled-folder", samples, [], [], skipped), skipped

