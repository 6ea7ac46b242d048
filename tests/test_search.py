"""featx search and the FAISS neighbour search behind audit, search and the knn baseline."""

from __future__ import annotations

import numpy as np
import pytest

from featx.search.neighbours import ArrayRows, nearest, nearest_streamed, self_neighbours
from featx.heads.scoring import knn_scores


def brute(x: np.ndarray, k: int) -> np.ndarray:
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = u @ u.T
    np.fill_diagonal(s, -np.inf)
    return np.sort(s, axis=1)[:, ::-1][:, :k]


def test_exact_self_neighbours_match_brute_force():
    x = np.random.default_rng(0).normal(size=(300, 24)).astype(np.float32)
    found = self_neighbours(ArrayRows(x), 5, "exact")
    assert np.allclose(found.sims, brute(x, 5), atol=1e-5)
    assert not (found.ids == np.arange(300)[:, None]).any()


def test_ivf_finds_the_near_copies_of_a_larger_set():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(3000, 64)).astype(np.float32)
    x = np.concatenate([base, base[:200] + rng.normal(size=(200, 64)).astype(np.float32) * 0.05])
    found = self_neighbours(ArrayRows(x), 3, "ivf")
    assert "IVF" in found.method and "approximate" in found.method
    hit = (found.ids[3000:, 0] == np.arange(200)).mean()
    assert hit >= 0.95, hit


def test_streamed_search_equals_in_memory_search():
    rng = np.random.default_rng(2)
    base, q = rng.normal(size=(40_000, 8)).astype(np.float32), rng.normal(size=(7, 8)).astype(np.float32)
    a, b = nearest(q, base, 4), nearest_streamed(q, ArrayRows(base), 4)
    assert np.array_equal(a.ids, b.ids) and np.allclose(a.sims, b.sims, atol=1e-6)


def test_knn_baseline_votes_like_a_brute_force_search():
    rng = np.random.default_rng(3)
    train, y, x = rng.normal(size=(200, 16)), rng.integers(0, 3, 200), rng.normal(size=(30, 16))
    unit = train / np.linalg.norm(train, axis=1, keepdims=True)
    votes = knn_scores({"train_x": unit.astype(np.float32), "train_y": y}, x, 5, 3)
    sims = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ unit.T
    expected = np.stack([np.bincount(y[np.argsort(-s)[:5]], minlength=3) / 5 for s in sims])
    assert np.allclose(votes, expected)


@pytest.fixture(params=["tiny_cnn", "tiny_features"])
def image_store(tmp_path, request):
    """tiny_features has cut points: its default store carries pooled block columns and is
    searched on its final features."""
    from featx.data import open_dataset
    from featx.extraction import ExtractConfig, extract
    from tests.conftest import make_class_tree

    root = make_class_tree(tmp_path / "data", per_class=5)
    config = ExtractConfig(weights="none", input_size=32, workers=0, dtype="float32", tta="flip")
    store = extract(open_dataset(root), request.param, tmp_path / "stores", config, show_progress=False).store
    return root, store


def test_search_finds_a_stored_image_first_and_skips_a_bad_query(image_store, tmp_path):
    from featx.audit.search import search, write_gallery

    root, store = image_store
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    query = root / "bees" / "bees_03.png"
    result = search(store, [query, bad], k=3, device="cpu")
    first = [h for h in result.hits if h.rank == 1]
    assert len(first) == 1 and first[0].path == "bees/bees_03.png" and first[0].similarity > 0.999
    assert first[0].label == "bees" and [h.rank for h in result.hits] == [1, 2, 3]
    assert [p for p, _ in result.failed] == [str(bad.resolve())] or result.failed[0][0].endswith("bad.png")
    page = write_gallery(result, tmp_path / "g.html").read_text()
    assert page.count("<figure>") == 3


def test_search_with_only_undecodable_queries_is_one_error(image_store, tmp_path):
    from featx.audit.search import search
    from featx.errors import FeatxError

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8garbage")
    with pytest.raises(FeatxError, match="bad.jpg"):
        search(image_store[1], [bad], device="cpu")
