"""Issue 18, datasets at scale: scanning lists without decoding everything; hashing in chunks."""

from __future__ import annotations

import subprocess
import sys

from featx.data import hash_files, open_dataset, scan_images
from featx.runtime.hashing import file_sha256
from featx.data import identity
from tests.conftest import make_class_tree


def test_scan_decodes_an_even_sample_when_asked(tmp_path):
    root = make_class_tree(tmp_path / "d", classes=("a", "b"), per_class=10, seed=1)
    (root / "a" / "a_00.png").write_bytes(b"\x89PNG broken")  # row 0: in every sample
    (root / "b" / "b_09.png").write_bytes(b"\x89PNG broken")  # the last row: in no small sample
    ds = open_dataset(root)
    whole = scan_images(ds)
    assert whole.decoded == 20 and {p for p, _ in whole.unreadable} == {"a/a_00.png", "b/b_09.png"}
    part = scan_images(ds, sample=5)
    assert part.decoded == 5 and sum(part.sizes.values()) == 4
    assert [p for p, _ in part.unreadable] == ["a/a_00.png"]
    assert scan_images(ds, sample=50).decoded == 20  # a sample larger than the dataset: all of it
    done = subprocess.run([sys.executable, "-m", "featx.cli", "scan", str(root), "--decode-sample", "5"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "decoded 5 of 20 images" in done.stdout and "1 unreadable file(s)" in done.stdout


def test_hashing_in_chunks_gives_each_files_own_hash(tmp_path, monkeypatch):
    monkeypatch.setattr(identity, "HASH_CHUNK", 7)
    monkeypatch.setattr(identity, "_MEMO", {})
    files = []
    for i in range(40):
        files.append(tmp_path / f"f{i:02d}.bin")
        files[-1].write_bytes(bytes([i]) * (i + 1))
    files.append(tmp_path / "missing.bin")
    shas = hash_files(files)
    assert shas[:-1] == [file_sha256(f) for f in files[:-1]] and shas[-1] == ""
    assert len(set(shas[:-1])) == 40


def _blobs(n: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(0, 1, (n, 8)).astype(np.float32) + 2.5 * np.eye(3, 8, dtype=np.float32)[y]
    return x, y


def test_knn_votes_every_k_from_one_search_as_each_k_alone():
    import numpy as np

    from featx.probes.baselines import K_GRID, fit_baseline
    from featx.heads.scoring import knn_scores

    x, y = _blobs(300, 0)
    xv, yv = _blobs(80, 1)
    fit = fit_baseline("knn", x, y, xv, yv, 3)
    alone = [float((knn_scores(fit.tensors, xv, k, 3).argmax(1) == yv).mean()) for k in K_GRID]
    assert [s["val_top1"] for s in fit.search] == alone
    assert fit.params["k"] == K_GRID[int(np.argmax(alone))]


def test_logreg_beyond_large_n_fits_a_stratified_subsample(monkeypatch):
    import numpy as np
    from sklearn.linear_model import LogisticRegression  # baselines imports it when it fits

    from featx.probes import baselines

    x, y = _blobs(3000, 2)
    xv, yv = _blobs(300, 3)
    seen = []
    real_fit = LogisticRegression.fit
    monkeypatch.setattr(LogisticRegression, "fit",
                        lambda self, a, b: seen.append(len(b)) or real_fit(self, a, b))
    monkeypatch.setattr(baselines, "LARGE_N", 500)
    fit = baselines.fit_baseline("logreg", x, y, xv, yv, 3)
    assert set(seen) == {500} and len(seen) == len(baselines.C_GRID["logreg"])
    assert max(s["val_top1"] for s in fit.search) > 0.9  # the blobs are easy: the subsample suffices
    rows = baselines.stratified_rows(y, 500, 0)
    assert len(rows) == 500 and np.all(np.diff(rows) > 0)
    assert abs(np.bincount(y[rows]) / 500 - np.bincount(y) / 3000).max() < 0.01


def test_a_big_listing_is_not_remembered_but_hashes_the_same(tmp_path, monkeypatch):
    monkeypatch.setattr(identity, "_MEMO", {})
    files = []
    for i in range(12):
        files.append(tmp_path / f"g{i:02d}.bin")
        files[-1].write_bytes(bytes([i]) * 3)
    monkeypatch.setattr(identity, "MEMO_MAX", 10)
    first = hash_files(files)
    assert identity._MEMO == {}  # 12 files > MEMO_MAX: nothing kept for the process's life
    monkeypatch.setattr(identity, "MEMO_MAX", 100)
    assert hash_files(files) == first and len(identity._MEMO) == 12
    assert hash_files(files[:3]) == first[:3]


def test_train_head_reads_only_the_logreg_subsample_and_fits_what_the_arrays_give(tmp_path, monkeypatch):
    import numpy as np

    from featx.probes import baselines
    from featx.probes.feature_data import FeatureData
    from featx.heads.scoring import Normalizer
    from featx.store import FeatureStore
    from featx.probes.train import train_head
    from tests.conftest import make_feature_store

    store = make_feature_store(tmp_path / "s.h5", n_per_class=200, views=0)
    monkeypatch.setattr(baselines, "LARGE_N", 120)
    read = []
    real = FeatureData.normalized
    monkeypatch.setattr(FeatureData, "normalized",
                        lambda self, rows, norm: read.append(len(rows)) or real(self, rows, norm))
    head = train_head(store, "logreg", out=tmp_path / "h", show_progress=False)
    with FeatureStore(store) as st:
        x, y = st.features("train")
        xv, yv = st.features("val")
    assert read[0] == len(baselines.stratified_rows(y, 120, 0)) < len(y)  # only the subsample was read
    normalizer = Normalizer.fit("standard", x)
    whole = baselines.fit_baseline("logreg", normalizer(x), y, normalizer(xv), yv, 3)
    np.testing.assert_allclose(head.tensors["layers.0.weight"], whole.tensors["layers.0.weight"], rtol=1e-4, atol=1e-6)
    assert head.meta["params"] == whole.params


def test_the_linear_svm_beyond_large_n_fits_the_same_subsample(monkeypatch):
    from featx.probes import baselines

    x, y = _blobs(3000, 2)
    xv, yv = _blobs(300, 3)
    monkeypatch.setattr(baselines, "LARGE_N", 500)
    rows = baselines.subsample_rows("svm", y, 0)
    assert rows is not None and len(rows) == 500
    fit = baselines.fit_baseline("svm", x, y, xv, yv, 3)
    alone = baselines.fit_baseline("svm", x[rows], y[rows], xv, yv, 3, subsampled=True)
    assert fit.params == alone.params and fit.search == alone.search
    assert baselines.subsample_rows("knn", y, 0) is None  # the k-NN keeps every row
