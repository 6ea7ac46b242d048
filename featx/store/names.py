"""A store's class display names across updates: the names a run gives win, none keeps the store's.

`--class-map FILE` (or a packaged dataset's own names) sets the names a store shows for its
classes (`class_names`, beside `classes`, the folder or manifest labels). A later `featx
extract` whose map names a class otherwise renames it in the store, an update with no forward
(a class mapped to itself gets its folder name back); a class the run's map leaves out, or a run
with no map, keeps the name the store has, rather than losing it the day images are added.
"""

from __future__ import annotations

from dataclasses import replace

import h5py

from featx.data import Dataset


def with_store_names(dataset: Dataset, stored: dict[str, str]) -> tuple[Dataset, int]:
    """`dataset` with the display names its store will have: the names this run gives
    (dataset.given_names), else the store's, else the class itself; and how many classes the
    store shows under another name than before."""
    names = [dataset.given_names.get(c, stored.get(c, c)) for c in dataset.classes]
    renamed = sum(1 for c, n in zip(dataset.classes, names) if c in stored and stored[c] != n)
    return replace(dataset, display_names=names), renamed


def stored_names(f: h5py.File) -> dict[str, str]:
    """{class: display name} of an open store."""
    classes = list(f["classes"].asstr()[:])
    names = list(f["class_names"].asstr()[:]) if "class_names" in f else classes
    return dict(zip(classes, names))


def renames(f: h5py.File, dataset: Dataset) -> bool:
    """Would this run show the store's classes under other names? (a change: an update)"""
    return with_store_names(dataset, stored_names(f))[1] > 0
