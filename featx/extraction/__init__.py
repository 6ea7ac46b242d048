"""Run a frozen backbone once over a dataset (clean view + K augmented views) into a store.

    ds = open_dataset("elpv")
    result = extract(ds, "efficientnet_lite0", Path("stores"), ExtractConfig(views=4))
    features, failed = embed(ds, create_backbone("efficientnet_lite0"))   # in memory, no store

    config         ExtractConfig (what to do), ExtractResult (what happened)
    plan           the fixed batch plan (same on every run: resume is bit-identical), store paths
    decode         DataLoader workers: files -> uint8 views, failures recorded
    engine_choice  which engine runs (ONNX Runtime checked against torch), --cut modules
    runner         one run: load, forward (GPU-decoded JPEGs merged in), hand to the writer
    writer_thread  commits batches to HDF5 while the next one computes
    store_run      one process, one store;  sharded  torchrun ranks -> shards -> merged store
    update         a changed dataset: only its new rows, as a delta store; the rest kept bit for bit
    run            extract and embed, the entry points
"""

from featx.runtime.device import JPEG_SUFFIXES, resolve_device, use_device_decode
from featx.extraction.config import STORE_DTYPES, ExtractConfig, ExtractResult
from featx.extraction.decode import BatchDecoder
from featx.extraction.engine_choice import engine_for
from featx.extraction.plan import Batch, plan_batches, store_path_for
from featx.extraction.run import embed, extract
from featx.extraction.sharded import SHARDING, extract_shard

__all__ = [
    "JPEG_SUFFIXES", "SHARDING", "STORE_DTYPES", "Batch", "BatchDecoder", "ExtractConfig",
    "ExtractResult", "embed", "engine_for", "extract", "extract_shard", "plan_batches",
    "resolve_device", "store_path_for", "use_device_decode",
]
