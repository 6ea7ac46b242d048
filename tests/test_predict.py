"""featx.heads.predict: a saved head re-attached to its backbone classifies new images."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from featx.data import DatasetOptions, open_dataset
from featx.errors import FeatxError
from featx.extraction import ExtractConfig, extract
from featx.probes.sweep import HeadConfig
from featx.heads.predict import predict
from featx.store import FeatureStore
from featx.probes.train import train_head
from tests.conftest import make_class_tree, write_image


@pytest.fixture
def trained(tmp_path):
    root = make_class_tree(tmp_path / "data", per_class=8)
    ds = open_dataset(root, DatasetOptions(val_frac=0.25, test_frac=0.25))
    config = ExtractConfig(weights="none", input_size=32, workers=0, dtype="float32")
    store = extract(ds, "resnet18", tmp_path / "stores", config, show_progress=False).store
    head = train_head(store, "logreg", HeadConfig(), out=tmp_path / "head", show_progress=False)
    return root, store, head


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_images_matches_the_store_and_skips_bad_files(tmp_path, trained):
    root, store, head = trained
    new = tmp_path / "new"
    new.mkdir()
    for name in ("ants_00.png", "bees_03.png"):
        (new / name).write_bytes((root / name.split("_")[0] / name).read_bytes())
    (new / "broken.jpg").write_text("not an image")
    result = predict(head, [new])
    assert len(result.paths) == 2 and [p for p, _ in result.failed] == [str(new / "broken.jpg")]
    rows = _rows(result.to_csv(tmp_path / "p.csv", top_k=2))
    assert list(rows[0]) == ["path", "class_1", "prob_1", "class_2", "prob_2"]
    from_store = {r["path"]: r for r in _rows(predict(head.path, [store]).to_csv(tmp_path / "s.csv"))}
    for row in rows:
        name = row["path"].rsplit("/", 1)[1]
        ref = from_store[f"{name.split('_')[0]}/{name}"]
        assert row["class_1"] == ref["class_1"]
        assert float(row["prob_1"]) == pytest.approx(float(ref["prob_1"]), abs=2e-4)
        assert float(row["prob_1"]) + float(row["prob_2"]) == pytest.approx(1.0, abs=2e-3)


def test_class_map_renames_predictions(tmp_path, trained):
    root, _, head = trained
    (tmp_path / "map.json").write_text('{"ants": "Formicidae", "bees": "Apidae"}')
    result = predict(head, [root / "ants"], class_map=str(tmp_path / "map.json"))
    assert set(result.labels) <= {"Formicidae", "Apidae"} and len(result.labels) == 8


def test_head_refuses_features_of_another_backbone(tmp_path, trained):
    root, _, head = trained
    ds = open_dataset(root, DatasetOptions(val_frac=0.25, test_frac=0.25))
    other = extract(ds, "resnet18", tmp_path / "other",
                    ExtractConfig(weights="none", seed=5, input_size=32, workers=0),
                    show_progress=False).store
    with pytest.raises(FeatxError, match="head was trained on resnet18"):
        predict(head, [other])


def test_predict_proba_on_images_keeps_the_input_order(tmp_path, trained):
    root, store, head = trained
    files = [root / "bees" / "bees_03.png", root / "ants" / "ants_00.png", root / "bees" / "bees_01.png"]
    probs = head.predict_proba(files)
    embedded = head.embed(files)
    assert embedded.paths == [str(f.resolve()) for f in files]
    np.testing.assert_allclose(probs, head.scores(embedded.features))
    with FeatureStore(store) as st:
        rows = [list(st.paths).index(f"{f.parent.name}/{f.name}") for f in files]
        x, _ = st.features()
        np.testing.assert_allclose(probs, head.predict_proba(x[[list(st.rows()).index(r) for r in rows]]),
                                   atol=2e-4)
    assert head.predict(files) == [head.class_names[i] for i in probs.argmax(1)]


def test_predict_proba_raises_on_an_unreadable_image(tmp_path, trained):
    _, _, head = trained
    (tmp_path / "broken.png").write_text("not an image")
    with pytest.raises(FeatxError, match="broken.png"):
        head.predict_proba([tmp_path / "broken.png"])


def test_a_store_preprocessed_differently_is_refused(tmp_path, trained):
    root, _, head = trained
    ds = open_dataset(root, DatasetOptions(val_frac=0.25, test_frac=0.25))
    other = extract(ds, "resnet18", tmp_path / "other",
                    ExtractConfig(weights="none", input_size=48, workers=0, dtype="float32"),
                    show_progress=False).store
    with pytest.raises(FeatxError, match="preprocessed differently.*input_size 48 vs 32"):
        predict(head, [other])


def test_top_k_must_be_positive(tmp_path, trained):
    _, store, head = trained
    with pytest.raises(FeatxError, match="--top-k must be at least 1"):
        predict(head, [store]).to_csv(tmp_path / "p.csv", top_k=0)
    assert not (tmp_path / "p.csv").exists()


def test_predictions_from_a_store_carry_split_and_true_class(tmp_path, trained):
    _, store, head = trained
    rows = _rows(predict(head, [store]).to_csv(tmp_path / "s.csv", top_k=1))
    assert list(rows[0]) == ["path", "split", "true_class", "class_1", "prob_1"]
    with FeatureStore(store) as st:
        expected = {str(st.paths[r]): (str(st.splits[r]), st.classes[st.labels[r]]) for r in st.rows()}
    assert {r["path"]: (r["split"], r["true_class"]) for r in rows} == expected


def test_a_store_is_scored_block_by_block_as_a_whole_would_be(trained, monkeypatch):
    import featx.heads.predict

    _, store, head = trained
    whole = predict(head, [store])
    monkeypatch.setattr(featx.heads.predict, "SCORE_ROWS", 3)  # several blocks, the last one short
    blocks = predict(head, [store])
    with FeatureStore(store) as st:
        x, _ = st.features()
    assert len(blocks.paths) == len(x) > 3
    # float32 products differ in their last bits with the block size; a head's temperature
    # scales the logits, and those bits with them.
    np.testing.assert_allclose(blocks.scores, whole.scores, rtol=1e-5)
    from featx.heads.io import Head, load_head

    loaded = head if isinstance(head, Head) else load_head(head)
    np.testing.assert_allclose(blocks.scores, loaded.scores(x[:, :loaded.feature_dim]), rtol=1e-5)


def test_a_warm_head_probes_its_backbone_once_and_starts_no_worker_for_one_batch(trained, monkeypatch):
    """Issue 29: a warm predict_proba of one image paid a shape-probe forward and a DataLoader
    worker's start on every call (0.25 s of ELPV lite0's; 0.07 s without, 2-core box)."""
    import torch

    import featx.extraction.engine_choice as engine_choice
    from featx.heads.io import Head

    root, _, head_result = trained
    probes, workers = [], []
    real_probe, real_loader = engine_choice.tapped_module, torch.utils.data.DataLoader
    monkeypatch.setattr(engine_choice, "tapped_module", lambda *a, **k: probes.append(a) or real_probe(*a, **k))
    monkeypatch.setattr(torch.utils.data, "DataLoader",
                        lambda *a, **k: workers.append(k.get("num_workers")) or real_loader(*a, **k))
    head = Head.load(head_result.path)
    image = root / "ants" / "ants_00.png"
    first = head.predict_proba([image])
    again = head.predict_proba([image])
    np.testing.assert_array_equal(first, again)
    assert len(probes) == 1 and workers == [0, 0]
