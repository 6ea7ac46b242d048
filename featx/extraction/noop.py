"""A no-op re-run decided before torch: the complete store a run would find, and its result.

`featx extract` on a dataset whose store is complete has nothing to do, but the full path
(run.extract) imports torch, builds the backbone with its weights and runs a shape probe for
--pool's width before it finds that out: seconds on a 2-core machine. Everything a store's
identity holds (featx.store.schema.IDENTITY_KEYS) is known without a model for the built-in
families: their cards are static tables (featx/backbones/specs.json, --pool auto's block and
width included), and the weights are named by their file's sha256. So the store's path and spec
are computed from the card, and `store_state`, the very check of the full run (same listing,
root, content hashes, labels and splits; same identity), says whether the store is complete.

A changed dataset whose update computes no row (relabels, moves, copies, removals: the labelling
loop's `select -> mv -> extract`) is updated here too, by the full run's own plan_update and
assemble_update: about 1 s instead of 5 on the 2-core dev box (6-image store, quiet).

Conservative by construction: what this cannot decide without torch (views, whose recipe loader
imports torch; torchrun; a CUDA device; --cut with --pool auto; a custom or timm backbone, whose
card may need a model), and every answer but "complete" or a changed dataset with no row to
compute (no store, unfinished, new or changed images, other settings, any error), is None: the
full run takes over and does and says what it always did.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from featx.backbones.registry import get_entry, get_spec
from featx.backbones.spec import BackboneSpec
from featx.data import Dataset, class_warnings, require_decodable
from featx.errors import FeatxError
from featx.extraction.config import ExtractConfig, ExtractResult
from featx.extraction.plan import remove_delta, store_clean, store_path_named
from featx.runtime.hashing import file_sha256
from featx.store import (EXECUTION_KEYS, FeatureStore, StoreLock, StoreSpec, assemble_update, check_writable,
                         count_failed, plan_update, read_attrs, store_state)

# Families whose cards are static tables (no model is built to describe them).
STATIC_FAMILIES = ("packaged", "torchvision")


def complete_result(dataset: Dataset, backbone_name: str, out_dir: str | os.PathLike,
                    config: ExtractConfig, store_path: Path | None = None,
                    device: str = "") -> ExtractResult | None:
    """The result of a run that finds its store complete (what run.extract returns then), or
    that only has to update it without a forward (relabel_update); None when the full run must
    decide. `device`: what the result names (nothing ran)."""
    found = decided_store(dataset, backbone_name, Path(out_dir), config, store_path)
    if found is None:
        return None
    name, path, state = found
    if state == "changed":
        return relabel_update(dataset, name, path, device)
    remove_delta(path)  # an update killed after its rename
    result = ExtractResult(str(path), name, "complete", len(dataset.samples), 0, count_failed(path),
                           0.0, 0.0, device)
    if result.failed:
        check_failures(dataset, result)
    return result


def complete_store(dataset: Dataset, backbone_name: str, out_dir: Path, config: ExtractConfig,
                   store_path: Path | None = None) -> tuple[str, Path] | None:
    """(backbone name, store path) when the run's store is complete for `dataset`; else None."""
    found = decided_store(dataset, backbone_name, out_dir, config, store_path)
    return (found[0], found[1]) if found and found[2] == "complete" else None


def decided_store(dataset: Dataset, backbone_name: str, out_dir: Path, config: ExtractConfig,
                  store_path: Path | None = None) -> tuple[str, Path, str] | None:
    """(backbone name, store path, "complete" or "changed") for the run's finished store, where
    that is decidable without torch; else None."""
    if not _decidable(backbone_name, config):
        return None
    try:
        found = _store_and_spec(dataset, backbone_name, out_dir, config, store_path)
        if found is None:
            return None
        name, path, spec = found
        state = store_state(path, dataset, spec, config.update)
    except (FeatxError, OSError):
        return None  # the full run meets it again and reports it in its own words
    if state == "changed" and not _asks_as_made(config, spec.provenance):
        return None  # the full run refuses an update computed otherwise, rows to compute or not
    return (name, path, state) if state in ("complete", "changed") else None


def _asks_as_made(config: ExtractConfig, made: dict) -> bool:
    """Does the run ask for the engine the store was made with (or leave it to auto, which takes
    the store's on an update), on the CPU it was made on? (made: the store's own, _store_and_spec;
    a store made on a GPU is updated by the full run, which knows what `auto` means here.)"""
    return config.engine in ("auto", made.get("engine")) and made.get("device") == "cpu"


def relabel_update(dataset: Dataset, name: str, path: Path, device: str) -> ExtractResult | None:
    """store_run.update_store for an update with no row to compute (labels, splits, moves,
    copies, removals, file times: the labelling loop's re-run), without importing torch; None
    when some row needs a forward (the full run does that update)."""
    start = time.perf_counter()
    try:
        check_writable(path.parent)
        with StoreLock(path):
            dataset, plan = plan_update(path, dataset)
            if len(plan.compute):
                return None
            entry = assemble_update(path, dataset, plan, None, time.perf_counter() - start)
            remove_delta(path)
    except (FeatxError, OSError):
        return None  # the full run meets it again and reports it in its own words
    seconds = time.perf_counter() - start
    result = ExtractResult(str(path), name, "updated", len(dataset.samples), 0, count_failed(path), seconds, 0.0,
                           device, update=plan.summary(), version=entry["version"],
                           same_data=entry["version"] == entry["previous"])
    if result.failed:
        check_failures(dataset, result)
    return result


def check_failures(dataset: Dataset, result: ExtractResult) -> None:
    """A store in which no image decoded holds nothing: it is removed and the run fails. Classes
    left with no usable training image are named in `result.warnings` (a head cannot learn them)."""
    with FeatureStore(result.store) as store:
        failed = {str(store.paths[row]): reason for row, reason in store.failed.items()}
    if len(failed) >= len(dataset.samples):
        Path(result.store).unlink(missing_ok=True)
        require_decodable(dataset, failed)
    result.warnings = class_warnings(dataset, failed)


def _decidable(backbone_name, config: ExtractConfig) -> bool:
    """Can the store be found complete without torch? (Each exception is explained above.)"""
    single = int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1  # featx.runtime.distributed.context
    return (isinstance(backbone_name, str) and single and not config.overwrite and not config.views
            and config.device in ("auto", "cpu") and not (config.cut and config.pool == "auto"))


def _store_and_spec(dataset: Dataset, backbone_name: str, out_dir: Path, config: ExtractConfig,
                    store_path: Path | None) -> tuple[str, Path, StoreSpec] | None:
    """The store this run would use and the identity it must have (as store_run._spec makes it)."""
    entry = get_entry(backbone_name)
    if entry.family not in STATIC_FAMILIES:
        return None
    card = get_spec(entry.name)
    weights = _weights(card, config)
    if weights is None:
        return None  # no such file: the full run says so
    pre = card.preprocess.with_input_size(config.input_size) if config.input_size else card.preprocess
    path = (Path(store_path) if store_path else
            store_path_named(out_dir, dataset, card.name, weights, pre.input_size, config, None))
    if not path.is_file():
        return None
    attrs = read_attrs(path)
    pool = _pool(card, config, attrs)
    if not attrs.get("complete") or pool is None:
        return None  # unfinished (the full run resumes it), or a --pool only a model resolves
    block, pool_dim = pool
    pre = pre.following(store_clean(path, config))  # the store's own resize (issue 29)
    provenance = {
        "backbone": card.name, "weights": weights,
        "weights_sha256": weights.get("sha256", weights["source"]), "input_size": pre.input_size,
        # featx.data.transforms.transform_provenance without views (that module imports torch)
        "transform": {"clean": pre.to_dict(), "aug": None, "views": 0},
        "seed": config.seed, "pool": block, "pool_dim": pool_dim,
        "tta": "" if config.tta == "none" else config.tta,
        # How rows were computed is the store's own: an update decided here computes no row
        # (relabel_update), and one that must goes to the full run, which checks these.
        **{k: attrs.get(k) for k in EXECUTION_KEYS},
    }
    spec = StoreSpec(provenance=provenance, feature_dim=card.feature_dim + pool_dim, num_aug_views=0,
                     dtype=config.dtype, cut=config.cut)
    return card.name, path, spec


def _weights(card: BackboneSpec, config: ExtractConfig) -> dict | None:
    """The weights provenance the built backbone would carry (None: no such file here)."""
    if str(config.weights) == "none":
        return {"source": f"random-init(seed={config.seed})"}
    path = card.default_weights if str(config.weights) == "default" else Path(config.weights)
    if path is None or not Path(path).is_file():
        return None
    return {"source": str(path), "sha256": file_sha256(path)}


def _pool(card: BackboneSpec, config: ExtractConfig, attrs: dict) -> tuple[str, int] | None:
    """--pool resolved (block, columns), as engine_choice.pool_block and the shape probe do:
    "auto" is the card's block; a named block's width is the store's, when it pooled that block."""
    if config.pool in (None, "", "none"):
        return "", 0
    if config.pool == "auto":
        return (str(card.pooled["block"]), int(card.pooled["dim"])) if card.pooled else ("", 0)
    if attrs.get("pool") == config.pool:
        return str(config.pool), int(attrs.get("pool_dim", 0))
    return None
