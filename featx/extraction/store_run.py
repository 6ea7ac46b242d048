"""One process, one store: create, resume or update it, run the missing batches, report.

An update of a store whose dataset changed extracts only the new rows, keeping the rest bit for
bit: the plan (featx.store.update) says which rows keep their numbers; the others are extracted
as a store of their own, the delta (`STORE.delta.h5`: a normal store of the sub-dataset, so a kill
resumes it, under torchrun its rows are shared by the ranks, and it is made with the store's own
engine); then the new store is assembled from the old one and the delta and renamed into place.
The old store stays intact until that rename. The store's lock is held throughout.

The store records how its numbers were made (engine, device, decode, AMP, batch size): a resumed
run must compute the same way, so it takes its batch size from the store and `auto` takes the
engine the store was started with.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from featx.data import Dataset, with_content_hashes
from featx.extraction.engines import ENGINES, engine_version
from featx.errors import FeatxError
from featx.extraction.config import ExtractConfig, ExtractResult
from featx.extraction.engine_choice import engine_for, resumed_engine
from featx.extraction.job import ExtractJob
from featx.extraction.plan import delta_path, remove_delta
from featx.extraction.runner import Runner
from featx.runtime import memory
from featx.store import (StoreLock, StoreSpec, assemble_update, check_room, check_writable,
                         count_failed, plan_update, planned_bytes, prepare_store, read_attrs,
                         store_state)
from featx.data.transforms import transform_provenance


def extract_store(job: ExtractJob, extra_provenance: dict | None = None, check_only: bool = False):
    """Extract `job.dataset` into the store at `job.path` (created, resumed, updated, or found
    complete).

    check_only: only check the store at `path` against this run's settings (the StoreError of
    other settings) and return its state (None, complete, resumable, changed); no lock is taken.
    """
    path, config, dataset = job.path, job.config, job.dataset
    # The pooled block and the TTA recipe are identity (other numbers); pool_dim says where the
    # final features end.
    extra = {"pool": job.taps.pool or "", "pool_dim": job.taps.pool_dim,
             "tta": "" if config.tta == "none" else config.tta, **(extra_provenance or {})}
    spec = _spec(job, store_engine(path, config), extra)
    state = None if config.overwrite else store_state(path, dataset, spec, config.update)  # no lock
    if check_only:
        return state
    if state == "complete":
        remove_delta(path)  # an update killed after its rename
        return _complete(job)
    if state == "changed":
        return update_store(job)
    _check_target(path, dataset, spec, config.overwrite)  # before any export, lock or file
    check_batch_memory(job)
    engine = engine_for(job.backbone, config, job.device, spec.provenance["engine"], taps=job.taps)
    spec = _spec(job, engine.name, extra)
    with StoreLock(path):
        if config.overwrite or not path.is_file():
            remove_delta(path)
            job = job.but(dataset=with_content_hashes(dataset))  # each row's identity, for updates
        status = prepare_store(path, job.dataset, spec, config.overwrite)
        if status == "complete":  # finished by another run since the check above
            return _complete(job)
        # A resumed run keeps the batch plan of the run it resumes (same numbers, bit for bit).
        batch_size = read_attrs(path).get("batch_size", config.batch_size)
        seconds, images = Runner(job, engine, batch_size).run()
        n_failed = count_failed(path)
    return ExtractResult(str(path), job.backbone.name, status, len(dataset.samples), images, n_failed,
                         seconds, images / seconds if seconds else 0.0, str(job.device), version=1)


def check_batch_memory(job: ExtractJob) -> None:
    """A batch of input images must fit in memory: collating it holds two float32 copies (the
    images and the stacked batch), and the network's activations only add to that. Refused up
    front rather than OOM-killed mid-store (--input-size 4096 x 64 images: 26 GB)."""
    size, batch = job.backbone.preprocess.input_size, job.config.batch_size
    per_image = 2 * 3 * size * size * 4
    fits = (memory.available_memory_bytes() or 0) // per_image
    memory.require_memory(batch * per_image, f"--batch-size {batch} at --input-size {size}",
                   f"lower --batch-size (at most {fits})" if fits else "lower --input-size")


def store_engine(path: Path, config: ExtractConfig) -> str:
    """`auto` keeps the engine of an existing store: an unfinished one resumes with it, and an
    update computes its new rows with it (engines agree only to rounding)."""
    if config.engine != "auto" or config.overwrite or not path.is_file():
        return config.engine
    try:
        engine = read_attrs(path).get("engine")
    except FeatxError:
        return config.engine  # a corrupt store is reported by store_state
    return str(engine) if engine in ENGINES else resumed_engine(path, config)


def drop_stale_delta(delta: Path, sub: Dataset) -> None:
    """A delta left by a killed update of other data (the dataset changed again) is scratch."""
    if not delta.is_file():
        return
    try:
        same = read_attrs(delta).get("dataset_fingerprint") == sub.fingerprint
    except FeatxError:
        same = False  # damaged: start it again
    if not same:
        delta.unlink()


def _complete(job: ExtractJob) -> ExtractResult:
    return ExtractResult(str(job.path), job.backbone.name, "complete", len(job.dataset.samples), 0,
                         count_failed(job.path), 0.0, 0.0, str(job.device))


def _check_target(path: Path, dataset: Dataset, spec: StoreSpec, overwrite: bool) -> None:
    """A folder we may write to, then room on its disk for a new store: one line each, before
    anything is created (a resumed store is allocated already). Writability first: a folder
    nobody may write in reports no free space either, and that would name the wrong problem."""
    check_writable(path.parent)
    exists = path.is_file()
    if overwrite or not exists:
        check_room(path, planned_bytes(dataset, spec), freed=path.stat().st_size if exists else 0)


def _spec(job: ExtractJob, engine: str, extra: dict) -> StoreSpec:
    """What the store records: identity (what the numbers are) and execution (how computed)."""
    backbone, config, device = job.backbone, job.config, job.device
    provenance = {
        "backbone": backbone.name, "weights": backbone.weights,
        "weights_sha256": backbone.weights.get("sha256", backbone.weights["source"]),
        "input_size": backbone.preprocess.input_size,
        "transform": transform_provenance(backbone.preprocess, job.recipe, config.views),
        "seed": config.seed, "device": device.type, "batch_size": config.batch_size,
        "engine": engine, "engine_version": engine_version(engine),
        "decode": "gpu" if job.gpu_decode else "cpu",
        "amp": config.amp if device.type == "cuda" else "off",
        **extra,
    }
    return StoreSpec(provenance=provenance, feature_dim=backbone.spec.feature_dim + extra["pool_dim"],
                     num_aug_views=config.views, dtype=config.dtype, cut=config.cut,
                     cut_shape=job.taps.cut_shape)


def update_store(job: ExtractJob) -> ExtractResult:
    """Bring the store at `job.path` (same settings, other data) up to `job.dataset`."""
    start, path = time.perf_counter(), job.path
    check_writable(path.parent)  # the --out line of a new store, not the lock file's
    with StoreLock(path):
        dataset, plan = plan_update(path, job.dataset)
        images, delta = 0, None
        if len(plan.compute):
            delta = delta_path(path)
            sub = replace(dataset, samples=[dataset.samples[i] for i in plan.compute])
            drop_stale_delta(delta, sub)
            images = extract_store(delta_job(job, sub, delta)).images
        seconds = time.perf_counter() - start
        entry = assemble_update(path, dataset, plan, delta, seconds)
        remove_delta(path)
    return ExtractResult(str(path), job.backbone.name, "updated", len(dataset.samples), images,
                         count_failed(path), seconds, images / seconds if seconds else 0.0,
                         str(job.device), update=plan.summary(), version=entry["version"],
                         same_data=entry["version"] == entry["previous"])


def delta_job(job: ExtractJob, sub: Dataset, delta: Path) -> ExtractJob:
    """The job of an update's new rows `sub`: a store of their own at `delta`, made with the
    store's engine, never itself updated or overwritten."""
    settings = replace(job.config, overwrite=False, update=False, engine=store_engine(job.path, job.config))
    return job.but(dataset=sub, path=delta, config=settings)
