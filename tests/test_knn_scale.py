"""The k-NN head at scale (featx.search.knn_index): one index per head, exact up to EXACT_MAX_ROWS
reference rows, IVF candidates re-ranked exactly above; saved and reloaded without re-training."""

from __future__ import annotations

import gc
import json

import numpy as np
import pytest

from featx.search import knn_index
from featx.probes.baselines import K_GRID, fit_baseline
from featx.heads.io import Head, save_head
from featx.heads.scoring import knn_scores, scores


def _clusters(n: int, seed: int, dim: int = 32, centers: int = 60, classes: int = 4):
    """Rows around `centers` seeded centres (a label each), like deep features of many images."""
    rng = np.random.default_rng(0)
    middle = rng.normal(size=(centers, dim))
    rng = np.random.default_rng(seed)
    which = rng.integers(0, centers, n)
    x = (middle[which] + rng.normal(scale=0.6, size=(n, dim))).astype(np.float32)
    return x, which % classes


def _brute_force(train: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    return np.argsort(-(unit(queries.astype(np.float64)) @ unit(train.astype(np.float64)).T),
                      axis=1, kind="stable")[:, :k]


@pytest.fixture
def approximate(monkeypatch):
    """Reference sets above 2,000 rows take the approximate path."""
    monkeypatch.setattr(knn_index, "EXACT_MAX_ROWS", 2_000)


def test_small_reference_sets_stay_exact_float32_and_vote_like_brute_force():
    x, y = _clusters(600, 1)
    xv, yv = _clusters(150, 2)
    fit = fit_baseline("knn", x, y, xv, yv, 4)
    assert fit.tensors["train_x"].dtype == np.float32 and "knn.centroids" not in fit.tensors
    assert fit.params["neighbours"].startswith("exact")
    k = fit.params["k"]
    expected = np.stack([np.bincount(y[ids], minlength=4) / k for ids in _brute_force(x, xv, k)])
    assert np.allclose(knn_scores(fit.tensors, xv, k, 4), expected)


def test_approximate_search_agrees_with_exact_search(approximate):
    x, y = _clusters(6_000, 3)
    xv, yv = _clusters(400, 4)
    fit = fit_baseline("knn", x, y, xv, yv, 4)
    tensors = fit.tensors
    assert tensors["train_x"].dtype == np.float16 and tensors["train_x"].shape == x.shape
    assert tensors["knn.projection"].dtype == tensors["knn.centroids"].dtype == np.float32
    assert fit.params["neighbours"].startswith("approximate: IVF") and "re-ranked exactly" in fit.params["neighbours"]
    found = knn_index.knn_index(tensors).search(tensors["train_x"], xv, 10)
    exact = _brute_force(x, xv, 10)
    assert (found.ids[:, 0] == exact[:, 0]).mean() >= 0.95
    k = fit.params["k"]
    exact_votes = np.stack([np.bincount(y[ids], minlength=4) for ids in _brute_force(x, xv, k)])
    assert (knn_scores(tensors, xv, k, 4).argmax(1) == exact_votes.argmax(1)).mean() >= 0.95
    assert np.all(np.diff(found.sims, axis=1) <= 0)  # re-ranked: best first


def test_approximate_search_votes_every_k_from_one_search_as_each_k_alone(approximate):
    x, y = _clusters(5_000, 5)
    xv, yv = _clusters(300, 6)
    fit = fit_baseline("knn", x, y, xv, yv, 4)
    alone = [float((knn_scores(fit.tensors, xv, k, 4).argmax(1) == yv).mean()) for k in K_GRID]
    assert [s["val_top1"] for s in fit.search] == alone


def test_the_index_is_built_once_per_head_and_let_go_with_it(approximate, monkeypatch):
    x, y = _clusters(3_000, 7)
    xv, yv = _clusters(100, 8)
    built = []
    real = knn_index.build_index
    monkeypatch.setattr(knn_index, "build_index", lambda t: built.append(1) or real(t))
    fit = fit_baseline("knn", x, y, xv, yv, 4)
    for start in range(0, 100, 7):  # train-head scores val and test block by block
        scores("knn", dict(fit.tensors), xv[start:start + 7], fit.params)
    assert len(built) == 1
    key = id(fit.tensors["train_x"])
    assert key in knn_index._CACHE
    del fit
    gc.collect()
    assert key not in knn_index._CACHE  # no head, no index held in memory


def test_a_saved_head_reloads_its_index_without_training_and_predicts_the_same(approximate, monkeypatch,
                                                                                tmp_path):
    x, y = _clusters(4_000, 9)
    xv, yv = _clusters(300, 10)
    fit = fit_baseline("knn", x, y, xv, yv, 4)
    fitted = scores("knn", fit.tensors, xv, fit.params)
    meta = {"kind": "knn", "classes": list("abcd"), "feature_dim": x.shape[1], "backbone": "x",
            "normalize": "none", "params": fit.params}
    path = save_head(tmp_path / "h", fit.tensors, meta)
    monkeypatch.setattr(knn_index, "learn_ivf", lambda rows: pytest.fail("k-means re-trained on load"))
    head = Head.load(path)
    assert np.array_equal(head.scores(xv), fitted)
    assert np.array_equal(head.scores(xv[:50]), fitted[:50])  # a later batch: the same index
    assert json.loads(path.with_suffix(".json").read_text())["params"]["neighbours"] == fit.params["neighbours"]


def test_an_old_float32_head_above_the_threshold_still_scores_exactly(approximate):
    x, y = _clusters(3_000, 11)
    xv, _ = _clusters(80, 12)
    old = {"train_x": (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), "train_y": y}
    expected = np.stack([np.bincount(y[ids], minlength=4) / 5 for ids in _brute_force(x, xv, 5)])
    assert np.allclose(knn_scores(old, xv, 5, 4), expected)


def test_the_same_data_gives_the_same_head_tensors(approximate):
    x, y = _clusters(3_000, 13)
    xv, yv = _clusters(100, 14)
    a, b = (fit_baseline("knn", x, y, xv, yv, 4) for _ in range(2))
    assert a.tensors.keys() == b.tensors.keys()
    for name in a.tensors:
        np.testing.assert_array_equal(a.tensors[name], b.tensors[name], err_msg=name)
    assert a.params == b.params and a.search == b.search


def test_train_head_streams_the_knn_reference_set_and_its_head_reloads(approximate, tmp_path, monkeypatch):
    from featx.store import FeatureStore
    from featx.probes.train import train_head
    from tests.conftest import make_feature_store

    store = make_feature_store(tmp_path / "s.h5", n_per_class=1_500, dim=16, views=0)
    searched = []
    real_search = knn_index.KnnIndex.search

    def counted(self, rows, queries, k):
        searched.append(len(queries))
        return real_search(self, rows, queries, k)

    monkeypatch.setattr(knn_index.KnnIndex, "search", counted)
    head = train_head(store, "knn", out=tmp_path / "h", show_progress=False)
    queries = sum(searched)
    assert head.tensors["train_x"].dtype == np.float16 and "knn.centroids" in head.tensors
    assert head.params["neighbours"].startswith("approximate")
    with FeatureStore(store) as st:
        x, y = st.features("test")
        xv, yv = st.features("val")
    # val is searched once (its metrics come from the search that chose k), then test once
    assert queries == len(yv) + len(y)
    assert (head.scores(x).argmax(1) == y).mean() == pytest.approx(head.test.top1)
    assert (head.scores(xv).argmax(1) == yv).mean() == pytest.approx(head.val.top1)


def test_a_knn_head_with_a_broken_index_is_one_clear_error(approximate, tmp_path):
    from safetensors.numpy import save_file

    from featx.errors import FeatxError
    from featx.runtime.hashing import file_sha256

    x, y = _clusters(3_000, 11)
    xv, yv = _clusters(100, 12)
    fit = fit_baseline("knn", x, y, xv, yv, 4)
    meta = {"kind": "knn", "classes": list("abcd"), "feature_dim": x.shape[1], "backbone": "x",
            "normalize": "none", "params": fit.params}
    head = Head.load(save_head(tmp_path / "h", fit.tensors, meta))
    tensors = dict(head.tensors)
    assert "knn.code_range" in tensors
    for name, bad in (("knn.code_range", tensors["knn.code_range"][:1]),
                      ("train_y", tensors["train_y"][:-1])):
        broken = {**tensors, name: bad}
        weights = tmp_path / "broken.safetensors"
        save_file(broken, str(weights))
        meta = {**head.meta, "weights_file_sha256": file_sha256(weights)}
        (tmp_path / "broken.json").write_text(json.dumps(meta))
        with pytest.raises(FeatxError, match="not a usable k-NN head"):
            Head.load(weights)
