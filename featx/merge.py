"""Moved to featx.store.merge; this name stays until `featx merge` (cli.py) imports it from there."""

from featx.store.merge import MODES, merge_shards, shard_path  # noqa: F401
