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
    store_run      one process, one store, and its updates (only new rows, as a delta store)
    noop           a re-run over a complete store, decided before torch (no backbone built)
    sharded        torchrun ranks -> shards -> merged store
    job            ExtractJob: one extraction's values (and its --pool), resolved once, passed down
    run            extract and embed, the entry points

Names load on first use, so the torch-free `settings` can be imported alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from featx.runtime.lazy import lazy_names

# The public names, listed once (featx.runtime.lazy loads them on first use).
if TYPE_CHECKING:
    from featx.extraction.config import ExtractConfig, ExtractResult
    from featx.extraction.decode import BatchDecoder
    from featx.extraction.engine_choice import engine_for
    from featx.extraction.plan import Batch, plan_batches, store_path_for
    from featx.extraction.run import embed, extract
    from featx.extraction.settings import STORE_DTYPES
    from featx.extraction.sharded import SHARDING, extract_shard
    from featx.runtime.device import JPEG_SUFFIXES, resolve_device, use_device_decode

__getattr__, __dir__, __all__ = lazy_names(__name__, __file__)
