"""featx export: the store's features as numpy shards + Parquet metadata + a FAISS index, read
back with numpy, pyarrow and faiss alone (no featx) and compared with the store."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest

from featx.errors import StoreError
from featx.store.export import export
from featx.store import FeatureStore


@pytest.mark.parametrize("index", ["flat", "ivf"])
def test_export_reads_back_equal_to_the_store(blob_store, tmp_path, index):
    out = tmp_path / "exp"
    result = export(blob_store, out, shard_rows=50, index=index)
    x = np.concatenate([np.load(p) for p in sorted((out / "embeddings").glob("*.npy"))])
    meta = pq.read_table(out / "metadata").to_pydict()
    assert result.shards == len(list((out / "metadata").glob("*.parquet"))) == 3
    with FeatureStore(blob_store) as st:
        rows = st.rows()
        assert np.array_equal(x, st.read_clean(rows, dtype=x.dtype))
        assert meta["row"] == list(rows) and meta["path"] == list(st.paths[rows])
        assert meta["split"] == list(st.splits[rows])
        assert meta["label"] == [st.classes[i] for i in st.labels[rows]]
    idx = faiss.read_index(str(out / "index.faiss"))
    assert idx.ntotal == len(x)
    if index == "ivf":
        idx.nprobe = idx.nlist  # every list: exact up to the 8-bit quantisation
    q = x[:5] / np.linalg.norm(x[:5], axis=1, keepdims=True)
    _, ids = idx.search(q.astype(np.float32), 1)
    assert list(ids[:, 0]) == [0, 1, 2, 3, 4]
    assert json.loads((out / "export.json").read_text())["rows"] == len(x)


def test_export_refuses_an_incomplete_store(tmp_path):
    from tests.conftest import make_feature_store

    store = make_feature_store(tmp_path / "s.h5")
    import h5py  # the test damages the store as a kill would: not complete

    with h5py.File(store, "r+") as f:
        f.attrs["complete"] = np.uint8(0)
    with pytest.raises(StoreError, match="incomplete"):
        export(store, tmp_path / "out")
    assert not (tmp_path / "out").exists()
