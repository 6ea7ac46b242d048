"""A store's versions: its history of updates, and what a head trained on an older one misses.

Each update that changes the data adds an entry to the store's `history` attribute (JSON, oldest
first: version, date, featx version, dataset root, counts) and sets `store_version`; a head's
sidecar records the version it was trained on (featx.store.update writes them, docs/store.md).
"""

from __future__ import annotations

import json


def history(attrs: dict) -> list[dict]:
    """The store's versions, oldest first (a store before issue 19: one version, its creation)."""
    try:
        found = json.loads(attrs.get("history", ""))
        if isinstance(found, list) and found:
            return found
    except (TypeError, ValueError):
        pass
    return [{"version": 1, "date": attrs.get("created", ""), "featx_version": attrs.get("featx_version", ""),
             "dataset_root": attrs.get("dataset_root", "")}]


def change_words(counts: dict) -> list[str]:
    """An update's counts beyond new/changed/removed/kept, in words: ['5 relabelled', '2 moved',
    '1 class renamed'] (the update's summary and `featx info`'s version line say them alike)."""
    words = [f"{counts[k]:,} {k}" for k in ("relabelled", "moved", "copied", "resplit", "retried") if counts.get(k)]
    renamed = int(counts.get("renamed", 0))
    return words + ([f"{renamed:,} class{'es' * (renamed != 1)} renamed"] if renamed else [])


def head_staleness(head_meta: dict, attrs: dict) -> str | None:
    """What a head misses of its store, or None when it was trained on the store as it is:
    'trained on version 3; the store is at version 5, with 240 new training images since'."""
    versions = history(attrs)
    current = int(attrs.get("store_version", versions[-1].get("version", 1)))
    trained = head_meta.get("store_version")
    if trained is None:  # a head from before issue 19: its store's dataset fingerprint tells
        if head_meta.get("store_dataset_fingerprint") in (None, attrs.get("dataset_fingerprint")):
            return None
        return (f"trained on an earlier version of the store (now version {current}); "
                "re-run `featx train-head` to train on everything")
    if int(trained) >= current:
        return None
    new = sum(int(v.get("train_new", 0)) for v in versions if int(v.get("version", 1)) > int(trained))
    return (f"trained on version {trained}; the store is at version {current}, with {new:,} new "
            "training images since (re-run `featx train-head` to train on everything)")
