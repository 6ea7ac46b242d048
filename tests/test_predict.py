"""featx.predict: a saved head re-attached to its backbone classifies new images."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from featx.data import DatasetOptions, open_dataset
from featx.errors import FeatxError
from featx.extract import ExtractConfig, extract
from featx.heads import HeadConfig
from featx.predict import predict
from featx.train import train_head
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
    result = predict(head.head, [new], tmp_path / "p.csv", top_k=2)
    assert result.predicted == 2 and [p for p, _ in result.failed] == [str(new / "broken.jpg")]
    rows = _rows(tmp_path / "p.csv")
    assert list(rows[0]) == ["path", "class_1", "prob_1", "class_2", "prob_2"]
    from_store = {r["path"]: r for r in _rows(predict(head.head, [store], tmp_path / "s.csv").csv)}
    for row in rows:
        name = row["path"].rsplit("/", 1)[1]
        ref = from_store[f"{name.split('_')[0]}/{name}"]
        assert row["class_1"] == ref["class_1"]
        assert float(row["prob_1"]) == pytest.approx(float(ref["prob_1"]), abs=2e-4)
        assert float(row["prob_1"]) + float(row["prob_2"]) == pytest.approx(1.0, abs=2e-3)


def test_class_map_renames_predictions(tmp_path, trained):
    root, _, head = trained
    (tmp_path / "map.json").write_text('{"ants": "Formicidae", "bees": "Apidae"}')
    predict(head.head, [root / "ants"], tmp_path / "p.csv", class_map=str(tmp_path / "map.json"))
    assert {r["class_1"] for r in _rows(tmp_path / "p.csv")} <= {"Formicidae", "Apidae"}


def test_head_refuses_features_of_another_backbone(tmp_path, trained):
    root, _, head = trained
    ds = open_dataset(root, DatasetOptions(val_frac=0.25, test_frac=0.25))
    other = extract(ds, "resnet18", tmp_path / "other",
                    ExtractConfig(weights="none", seed=5, input_size=32, workers=0),
                    show_progress=False).store
    with pytest.raises(FeatxError, match="head was trained on resnet18"):
        predict(head.head, [other], tmp_path / "p.csv")
