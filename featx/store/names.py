"""A store's class display names across updates: the names a run gives win, none keeps the store's.

`--class-map FILE` (or a packaged dataset's own names) sets the names a store shows for its
classes (`class_names`, beside `classes`, the folder or manifest labels). A later `featx
extract` that gives other names renames them in the store, an update with no forward; one that
gives none (display names equal to the labels) keeps the names the store has, rather than
dropping them the day images are added.
"""

from __future__ import annotations

from dataclasses import replace

import h5py

from featx.data import Dataset


def names_given(dataset: Dataset) -> bool:
    """Does this run name the classes (a class map, a packaged dataset's names)?"""
    return list(dataset.display_names) != list(dataset.classes)


def stored_names(f: h5py.File) -> dict[str, str]:
    """{class: display name} of an open store."""
    classes = list(f["classes"].asstr()[:])
    names = list(f["class_names"].asstr()[:]) if "class_names" in f else classes
    return dict(zip(classes, names))


def with_store_names(dataset: Dataset, stored: dict[str, str]) -> tuple[Dataset, int]:
    """`dataset` with the display names its store will have, and how many classes the store
    shows under another name than before (0 when the run gives no names)."""
    if not names_given(dataset):
        dataset = replace(dataset, display_names=[stored.get(c, c) for c in dataset.classes])
    renamed = sum(1 for c, n in zip(dataset.classes, dataset.display_names) if c in stored and stored[c] != n)
    return dataset, renamed


def renames(f: h5py.File, dataset: Dataset) -> bool:
    """Would this run show the store's classes under other names? (a change: an update)"""
    return with_store_names(dataset, stored_names(f))[1] > 0
