"""featx compare --splits N: heads over N seeded re-splits of features extracted once."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from featx.backbones import register_backbone
from featx.cli import app
from featx.compare.run import compare
from featx.data import DatasetOptions, open_dataset
from featx.errors import ConfigError
from featx.extraction import ExtractConfig
from featx.probes.resplits import resplit_heads
from featx.store import FeatureStore
from tests.conftest import make_class_tree
from tests.tiny_backbone import tiny_cnn

IMAGES_SEEN: list[int] = []  # batch sizes through counting_cnn's forward, every call


@register_backbone("counting_cnn", feature_dim=16, input_size=32)
def counting_cnn(weights):
    net = tiny_cnn(weights)
    net.register_forward_hook(lambda module, inputs, output: IMAGES_SEEN.append(len(inputs[0])))
    return net


@pytest.fixture
def counted():
    IMAGES_SEEN.clear()
    yield IMAGES_SEEN
    IMAGES_SEEN.clear()


def test_splits_reuse_the_features_the_backbone_ran_once_per_image(tmp_path, counted):
    root = make_class_tree(tmp_path / "data", classes=("a", "b", "c"), per_class=10)
    ds = open_dataset(root, DatasetOptions(val_frac=0.2, test_frac=0.3))
    config = ExtractConfig(weights="none", input_size=32, workers=0, engine="torch")
    result = compare(ds, ["counting_cnn"], tmp_path / "out", config, heads=("linear", "logreg"),
                     show_progress=False, fmt="md", splits=3)
    assert sum(counted) == 30  # 30 images, each through the backbone once, for 3 splits x 2 heads
    (repeated,) = result.resplits
    with FeatureStore(result.extractions[0].store) as store:  # the store's own fractions are kept
        own_test = int((store.splits == "test").sum())
        assert repeated.val_frac == pytest.approx((store.splits == "val").mean())
    assert repeated.test_frac == pytest.approx(own_test / 30) and repeated.test_sizes == [own_test] * 3
    assert set(repeated.scores) == {"linear", "logreg"}
    assert all(len(per_split) == 3 for per_split in repeated.scores.values())
    table = json.loads(result.table.read_text())
    spread = table["results"][0]["splits"]["top1"]
    top1s = [s["top1"] for s in repeated.scores[table["results"][0]["head"]]]
    assert spread["mean"] == pytest.approx(sum(top1s) / 3) and spread["low"] == min(top1s)
    rows = list(csv.DictReader(open(result.table.with_suffix(".csv"))))
    assert len(rows) == 2 and rows[0]["top1_splits_mean"] and rows[0]["top1_mark"] in ("best", "tied", "worse")
    report = result.report.read_text()
    assert "## Repeated splits (3)" in report and " ± " in report and "clean features" in report


def test_resplits_are_seeded_and_differ_from_split_to_split(tmp_path):
    root = make_class_tree(tmp_path / "data", classes=("a", "b"), per_class=12)
    ds = open_dataset(root, DatasetOptions(val_frac=0.25, test_frac=0.25))
    result = compare(ds, ["tiny_cnn"], tmp_path / "out", ExtractConfig(weights="none", input_size=32, workers=0),
                     heads=("logreg",), show_progress=False, splits=2)
    store = result.extractions[0].store
    again = resplit_heads(store, ("logreg",), 2, show_progress=False)
    assert again.scores == result.resplits[0].scores  # same seeds, same numbers


def test_splits_must_be_a_positive_whole_number(tmp_path):
    with pytest.raises(ConfigError, match="--splits must be a whole number >= 1"):
        compare("nowhere", ["tiny_cnn"], tmp_path, splits=0)


def test_cli_compare_splits_5_on_an_elpv_subset(tmp_path, counted):
    pytest.importorskip("elpv_dataset")
    result = CliRunner().invoke(app, ["compare", "elpv", "--subset", "120", "-b", "counting_cnn",
                                      "--weights", "none", "--input-size", "32", "--workers", "0",
                                      "--engine", "torch", "--splits", "5", "--format", "md",
                                      "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    assert sum(counted) == 120  # extracted once, used by the heads of all 5 splits
    assert "top-1 over 5 splits" in result.output and "[" in result.output
    table = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert table["resplits"][0]["splits"] == 5 and len(table["resplits"][0]["scores"]["linear"]) == 5
    assert "paired bootstrap" in table["paired_test"]
    assert "## Repeated splits (5)" in (tmp_path / "cmp" / "report.md").read_text()
