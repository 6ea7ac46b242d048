"""The HDF5 feature store (docs/store.md): create, validate, resume, write batches, read by split/view.

    schema  what a store is: format, identity keys, layout of a new file, mismatch messages
    lock    one writer per store (flock on `<store>.lock`)
    check   check_layout: is an open file a featx store (cheap checks at every open)
    space   check_room (planned size vs free disk), check_writable (the --out folder)
    writer  prepare_store (create / resume / complete), store_state, is_complete, StoreWriter
    update  plan_update, assemble_update: a changed dataset re-extracts only its new rows
    versions  history (one entry per version) and head_staleness (what a head trained earlier misses)
    names   class display names across updates (--class-map renames; none given keeps them)
    reader  FeatureStore (by split and view, shapes for `featx info`), open_h5, open_store_file
    merge   the shards of a distributed run -> one store

Only this package touches h5py: everything else reads and writes stores through these names.
"""

from featx.store.check import check_layout
from featx.store.files import SampleFiles, inside_root
from featx.store.lock import StoreLock
from featx.store.merge import MODES as MERGE_MODES
from featx.store.merge import merge_shards, shard_path
from featx.store.reader import (FeatureStore, StoreSummary, count_failed, open_h5, open_store_file,
                                read_attrs)
from featx.store.schema import (EXECUTION_KEYS, FORMAT_VERSION, IDENTITY_KEYS, JSON_ATTRS,
                                REASON_BYTES, StoreSpec, create_store, differences, planned_bytes)
from featx.store.space import check_room, check_writable
from featx.store.update import UpdatePlan, assemble_update, plan_update
from featx.store.versions import change_words, head_staleness, history
from featx.store.writer import StoreWriter, is_complete, prepare_store, read_done, store_state

__all__ = [
    "EXECUTION_KEYS", "FORMAT_VERSION", "IDENTITY_KEYS", "JSON_ATTRS", "MERGE_MODES", "REASON_BYTES",
    "FeatureStore", "StoreLock", "StoreSpec", "StoreSummary", "StoreWriter", "UpdatePlan",
    "assemble_update", "change_words", "check_layout", "head_staleness", "history", "plan_update", "store_state",
    "check_room", "check_writable", "count_failed", "create_store", "differences", "is_complete",
    "merge_shards", "open_h5", "open_store_file", "planned_bytes", "prepare_store", "read_attrs",
    "read_done", "shard_path", "SampleFiles", "inside_root",
]
