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


def test_export_says_how_to_query_the_index_and_where_the_data_was(blob_store, tmp_path):
    from typer.testing import CliRunner

    from featx.cli import app

    out = tmp_path / "exp"
    result = CliRunner().invoke(app, ["export", str(blob_store), "--out", str(out)],
                                env={"COLUMNS": "80", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"exported 120 rows in 1 shard, FAISS index flat: {out}"
    note = " ".join(" ".join(lines[1:]).split())
    assert "L2-normalised rows" in note and "divide a query by its L2 norm" in note
    assert all(len(line) <= 80 for line in lines[1:])
    info = json.loads((out / "export.json").read_text())
    with FeatureStore(blob_store) as st:
        assert info["dataset_root"] == st.attrs["dataset_root"]
    assert info["index_metric"] == "inner product of L2-normalised rows (cosine)"
    assert "L2 norm" in info["query"] and "raw" in info["query"]
    # What the note says holds: a raw row scores its norm, a normalised one 1.0.
    x = np.load(out / "embeddings" / "0000.npy").astype(np.float32)
    idx = faiss.read_index(str(out / "index.faiss"))
    raw, _ = idx.search(x[:1], 1)
    unit_query, _ = idx.search(x[:1] / np.linalg.norm(x[:1]), 1)
    assert unit_query[0, 0] == pytest.approx(1.0, abs=1e-5) and raw[0, 0] == pytest.approx(np.linalg.norm(x[0]), rel=1e-4)
    two = CliRunner().invoke(app, ["export", str(blob_store), "--out", str(out), "--shard-rows", "60"])
    assert two.stdout.startswith("exported 120 rows in 2 shards")
