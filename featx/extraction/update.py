"""Updating a store whose dataset changed: extract only the new rows, keep the rest bit for bit.

    featx extract DATA ...        # the store exists, DATA grew: "+240 new, 3 removed, 2,369 kept"

The plan (featx.store.update) says which rows keep their numbers. The others are extracted as a
store of their own, the delta (`STORE.delta.h5`: a normal store of the sub-dataset, so a kill
resumes it, under torchrun its rows are shared by the ranks, and it is made with the store's own
engine); then the new store is assembled from the old one and the delta and renamed into place.
The old store stays intact until that rename. The store's lock is held throughout.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

from featx.backbones import Backbone
from featx.data import Dataset
from featx.extraction.config import ExtractConfig, ExtractResult
from featx.extraction.store_run import (delta_path, drop_stale_delta, extract_store, remove_delta,
                                        store_engine)
from featx.store import StoreLock, assemble_update, count_failed, plan_update
from featx.transforms import AugRecipe


def update_store(dataset: Dataset, backbone: Backbone, recipe: AugRecipe | None, path: Path,
                 config: ExtractConfig, device: torch.device, show_progress: bool) -> ExtractResult:
    """Bring the store at `path` (same settings, other data) up to `dataset`."""
    start = time.perf_counter()
    with StoreLock(path):
        dataset, plan = plan_update(path, dataset)
        images, delta = 0, None
        if len(plan.compute):
            delta = delta_path(path)
            sub = replace(dataset, samples=[dataset.samples[i] for i in plan.compute])
            drop_stale_delta(delta, sub)
            settings = replace(config, overwrite=False, update=False, engine=store_engine(path, config))
            images = extract_store(sub, backbone, recipe, delta, settings, device, show_progress).images
        seconds = time.perf_counter() - start
        entry = assemble_update(path, dataset, plan, delta, seconds)
        remove_delta(path)
    return ExtractResult(str(path), backbone.name, "updated", len(dataset.samples), images,
                         count_failed(path), seconds, images / seconds if seconds else 0.0,
                         str(device), update=plan.summary(), version=entry["version"])
