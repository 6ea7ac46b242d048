"""Run a frozen backbone once over a dataset (clean view + K augmented views) into a store.

    ds = open_dataset("elpv")
    result = extract(ds, "efficientnet_lite0", Path("stores"), ExtractConfig(views=4))
    features, failed = embed(ds, create_backbone("efficientnet_lite0"))   # in memory, no store

    settings       the choices and ranges of ExtractConfig (torch-free: `featx --help` reads them)
    config         ExtractConfig (what to do), ExtractResult (what happened)
    plan           the fixed batch plan (same on every run: resume is bit-identical), store paths
    decode         DataLoader workers: files -> uint8 views, failures recorded
    engine_choice  which engine runs (ONNX Runtime checked against torch), --cut modules
    runner         one run: load, forward (GPU-decoded JPEGs merged in), hand to the writer
    writer_thread  commits batches to HDF5 while the next one computes
    store_run      one process, one store;  sharded  torchrun ranks -> shards -> merged store
    update         a changed dataset: only its new rows, as a delta store; the rest kept bit for bit
    job            ExtractJob: one extraction's values (and its --pool), resolved once, passed down
    run            extract and embed, the entry points

Names load on first use, so the torch-free `settings` can be imported alone.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# public name -> module that defines it
_EXPORTS = {
    "JPEG_SUFFIXES": "featx.runtime.device", "resolve_device": "featx.runtime.device",
    "use_device_decode": "featx.runtime.device", "STORE_DTYPES": "featx.extraction.settings",
    "ExtractConfig": "featx.extraction.config", "ExtractResult": "featx.extraction.config",
    "BatchDecoder": "featx.extraction.decode", "engine_for": "featx.extraction.engine_choice",
    "Batch": "featx.extraction.plan", "plan_batches": "featx.extraction.plan",
    "store_path_for": "featx.extraction.plan", "embed": "featx.extraction.run",
    "extract": "featx.extraction.run", "SHARDING": "featx.extraction.sharded",
    "extract_shard": "featx.extraction.sharded",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:  # a submodule (featx.extraction.store_run), as an eager package gives
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for editors and type checkers; at run time names load lazily
    from featx.extraction.config import ExtractConfig, ExtractResult
    from featx.extraction.decode import BatchDecoder
    from featx.extraction.engine_choice import engine_for
    from featx.extraction.plan import Batch, plan_batches, store_path_for
    from featx.extraction.run import embed, extract
    from featx.extraction.settings import STORE_DTYPES
    from featx.extraction.sharded import SHARDING, extract_shard
    from featx.runtime.device import JPEG_SUFFIXES, resolve_device, use_device_decode
