"""Temperature scaling (featx.evaluation.calibration) and train-head's calibrated heads (issue 28):
probabilities a user can trust on small data, fitted without the test split."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from featx.errors import ConfigError, FeatxError
from featx.evaluation.calibration import (T_MAX, T_MIN, TRUSTED_MARGIN, accuracy_interval, accuracy_margin,
                                          fit_temperature, images_for_margin, nll_at, softmax_at, temperature_of)
from featx.probes.calibrated import check_calibration, rough_probabilities
from featx.heads.io import Head
from featx.heads.predict import predict
from featx.heads.scoring import linear_scores
from featx.probes.sweep import HeadConfig
from featx.probes.train import train_head
from featx.store import open_h5
from tests.conftest import make_feature_store


def _draw(rng, logits: np.ndarray) -> np.ndarray:
    """One label per row drawn from softmax(logits)."""
    p = softmax_at(logits)
    return (p.cumsum(1) > rng.random((len(p), 1))).argmax(1)


def test_the_temperature_of_overconfident_logits_is_recovered():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(4000, 5)) * 2
    y = _draw(rng, true)
    t = fit_temperature(3.0 * true, y)  # a head three times too sure of itself
    assert t == pytest.approx(3.0, rel=0.1)
    assert nll_at(3.0 * true, y, t) < nll_at(3.0 * true, y)


def test_the_fit_is_the_minimum_of_the_held_out_cross_entropy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(500, 3)) * 4
    y = _draw(rng, logits / 2)
    t = fit_temperature(logits, y)
    for other in (t * 0.9, t * 1.1):
        assert nll_at(logits, y, t) <= nll_at(logits, y, other)


def test_the_temperature_keeps_the_argmax():
    logits = np.random.default_rng(2).normal(size=(50, 4))
    for t in (0.2, 1.0, 7.0):
        assert (softmax_at(logits, t).argmax(1) == logits.argmax(1)).all()


def test_degenerate_held_out_sets_stay_in_range():
    logits = np.array([[5.0, 0.0], [0.0, 5.0]])
    assert fit_temperature(logits, np.array([0, 1])) == T_MIN  # all right: sharpen, but only so far
    assert fit_temperature(logits, np.array([1, 0])) == T_MAX  # all wrong: as flat as allowed
    assert fit_temperature(np.zeros((0, 2)), np.zeros(0, np.int64)) == 1.0
    r = temperature_of(logits, np.array([1, 0]), "two images")
    assert r.fitted_on == "two images" and r.nll_after < r.nll_before


def test_calibrate_takes_none_or_temperature():
    check_calibration("none")
    check_calibration("temperature")
    with pytest.raises(ConfigError, match=re.escape("--calibrate must be none | temperature")):
        check_calibration("platt")


def test_the_accuracy_margin_is_the_wilson_interval():
    assert accuracy_margin(0.5, 100) == pytest.approx(0.0962, abs=1e-4)
    lo, hi = accuracy_interval(0.0, 4)  # none right of 4: not certainty of 0, and never below it
    assert lo == pytest.approx(0.0, abs=1e-12) and 0.45 < hi < 0.5
    assert 0.04 < accuracy_margin(1.0, 40) < 0.05 and accuracy_interval(1.0, 40)[1] == pytest.approx(1.0)
    assert accuracy_margin(0.45, 40) > accuracy_margin(0.45, 80) > accuracy_margin(0.45, 400)
    n = images_for_margin(0.45)  # the fewest images that know a top-1 of 0.45 to +-0.05
    assert accuracy_margin(0.45, n) <= TRUSTED_MARGIN < accuracy_margin(0.45, n - 1)
    assert images_for_margin(0.99) < images_for_margin(0.8) < images_for_margin(0.5)


def test_a_temperature_records_the_top1_it_was_fitted_at():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [1.0, 0.0]])
    t = temperature_of(logits, np.array([0, 1, 1, 0]), "test")
    assert (t.images, t.top1) == (4, 0.75)
    record = t.to_dict()
    assert record["fit_margin"] == pytest.approx(accuracy_margin(0.75, 4))


def _fit(top1: float, images: int, fitted_on: str = "the val split's predictions") -> dict:
    return {"method": "temperature", "fitted_on": fitted_on, "fit_images": images, "fit_top1": top1,
            "fit_margin": accuracy_margin(top1, images)}


def test_rough_probabilities_are_said_only_when_the_fit_is_too_small_to_trust():
    note = rough_probabilities(_fit(0.45, 40))
    lo, hi = accuracy_interval(0.45, 40)
    assert note and "fitted on 40 images" in note and "(0.450)" in note and "±0.15" in note
    assert f"between {lo:.2f} and {hi:.2f} (95%)" in note
    needed = images_for_margin(0.5)  # the least favourable accuracy the interval allows
    assert f"about {needed:,} labelled val images ({needed - 40:,} more)" in note
    cv = rough_probabilities(_fit(0.45, 40, "out-of-fold predictions of 5-fold cross-validation (40 images)"))
    assert "labelled train+val images" in cv and "the test split comes on top" in cv
    assert rough_probabilities(_fit(0.45, 2000)) is None
    assert rough_probabilities({"method": "temperature", "temperature": 2.0}) is None  # saved before
    assert rough_probabilities({**_fit(0.45, 40), "method": "none"}) is None


def test_a_lucky_or_unlucky_small_fit_does_not_promise_a_few_images_will_do():
    """0 (or 4) of 4 right is not an accuracy of 0 (or 1): the images asked for are those the
    least favourable accuracy in its interval needs, about 380 for +-0.05, not 35."""
    for top1 in (0.0, 0.25, 1.0):
        asked = int(re.search(r"about ([\d,]+) labelled", rough_probabilities(_fit(top1, 4))).group(1).replace(",", ""))
        assert 370 <= asked <= images_for_margin(0.5), (top1, asked)


# --- train-head's calibrated heads -----------------------------------------------------------

SMALL = HeadConfig(epochs=30, batch_size=32, lrs=(0.01, 0.3, 3.0), weight_decays=(0.0, 1e-3), folds=3)
# Few training images and many test ones: 16 train + 8 val per class, 40 test, in 64 dimensions
# where the classes overlap, so an unregularised head can be sure of every training image.
SPLITS = ("train", "train", "val", "test", "test", "test", "test", "test")


def _small_store(path: Path) -> Path:
    return make_feature_store(path, n_per_class=64, dim=64, separation=0.35, views=0, splits=SPLITS)


def _csv_errors(head, store: Path, out: Path) -> list[float]:
    """The top probability `predict` prints for each wrong test prediction."""
    predict(head, store).to_csv(out, top_k=1)
    with open(out, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    return [float(r["prob_1"]) for r in rows if r["class_1"] != r["true_class"]]


def test_a_head_trained_on_a_small_store_is_not_sure_of_its_errors(tmp_path):
    store = _small_store(tmp_path / "s.h5")
    head = train_head(store, "linear", SMALL, out=tmp_path / "h", show_progress=False)
    printed = _csv_errors(head, store, tmp_path / "p.csv")
    assert len(printed) >= 20  # a hard task: plenty of errors to look at
    assert np.mean([p >= 0.99995 for p in printed]) < 0.5  # "1.0000" on few of them, if any
    assert head.test.ece <= 0.15
    record = head.meta["calibration"]
    assert record["method"] == "temperature" and record["temperature"] == head.meta.temperature
    assert "out-of-fold" in record["fitted_on"]
    assert record["fit_images"] == 72 and record["fit_top1"] == pytest.approx(head.val.top1)  # train+val, out-of-fold
    assert record["test"]["after"]["ece"] == pytest.approx(head.test.ece)
    for side in ("before", "after"):
        lo, hi = record["test"][side]["intervals"]["nll"]
        assert lo <= record["test"][side]["nll"] <= hi


def test_the_temperature_is_fitted_without_test_data(tmp_path):
    """Two stores that differ only in their test labels give the same temperature."""
    a, b = _small_store(tmp_path / "a.h5"), _small_store(tmp_path / "b.h5")
    with open_h5(b, "r+") as f:
        test = f["samples/split"].asstr()[:] == "test"
        labels = f["samples/label"][:]
        labels[test] = (labels[test] + 1) % 3
        f["samples/label"][:] = labels
    for select in ("cv", "val"):
        config = replace(SMALL, select=select)
        ha = train_head(a, "linear", config, out=tmp_path / f"ha{select}", show_progress=False)
        hb = train_head(b, "linear", config, out=tmp_path / f"hb{select}", show_progress=False)
        assert ha.meta.temperature == hb.meta.temperature != 1.0
        assert ha.test.nll != hb.test.nll  # the test labels did differ
    assert "val split" in hb.meta["calibration"]["fitted_on"]


def test_an_old_head_file_loads_at_temperature_1(tmp_path):
    store = _small_store(tmp_path / "s.h5")
    head = train_head(store, "linear", SMALL, out=tmp_path / "h", show_progress=False)
    x = np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32)
    logits = linear_scores(head.tensors, head.normalizer()(x), softmax_output=False)
    np.testing.assert_allclose(head.predict_proba(x), softmax_at(logits, head.meta.temperature), atol=1e-5)
    sidecar = head.path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    del meta["temperature"], meta["calibration"]  # as featx wrote heads before issue 28
    sidecar.write_text(json.dumps(meta))
    old = Head.load(head.path)
    assert old.meta.temperature == 1.0
    np.testing.assert_allclose(old.predict_proba(x), softmax_at(logits), atol=1e-5)
    meta["temperature"] = 0.0
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(FeatxError, match="temperature must be a positive number"):
        Head.load(head.path)


def test_calibrate_none_keeps_the_probabilities_as_trained(tmp_path):
    store = _small_store(tmp_path / "s.h5")
    head = train_head(store, "linear", SMALL, out=tmp_path / "h", show_progress=False, calibrate="none")
    assert head.meta.temperature == 1.0
    assert head.meta["calibration"] == {"method": "none", "temperature": 1.0, "why": "--calibrate none"}
    with pytest.raises(ConfigError, match="--calibrate"):
        train_head(store, "linear", SMALL, out=tmp_path / "h2", show_progress=False, calibrate="platt")


def test_train_head_says_what_it_chose_and_how_it_calibrated(tmp_path):
    from typer.testing import CliRunner

    from featx.cli import app

    runner = CliRunner()
    wide = {"COLUMNS": "400", "TERMINAL_WIDTH": "400"}
    shown = " ".join(runner.invoke(app, ["train-head", "--help"], env=wide).output.replace("│", " ").split())
    assert "--calibrate none|temperature" in shown and "[default: temperature]" in shown
    store = _small_store(tmp_path / "s.h5")
    result = runner.invoke(app, ["train-head", str(store), "--lr", "0.01", "--lr", "3", "--weight-decay", "0",
                                 "--epochs", "10", "--folds", "3", "--out", str(tmp_path / "h.safetensors")],
                           env=wide)
    assert result.exit_code == 0, result.output
    # Prose wraps at the console's width, which rich fixes when featx.cli is first imported (an
    # earlier test's COLUMNS): read it with its line breaks folded.
    said = " ".join(result.output.split())
    assert "selected by 3-fold cross-validation on train+val" in said
    assert re.search(r"calibrated: temperature [\d.]+, fitted on out-of-fold predictions", said)
    assert re.search(r"test NLL [\d.]+ \[[\d.]+, [\d.]+\] -> [\d.]+ \[", said)
    # 72 train+val images cannot say the head's accuracy to +-0.05: the user is told so
    assert re.search(r"note: probabilities are rough: the temperature was fitted on 72 images, whose top-1 "
                     r"\([\d.]+\) puts the head's accuracy between 0\.\d\d and [01]\.\d\d \(95%\)", said)
    assert said.index("note: probabilities are rough") > said.index("worst errors")  # near the end, read
    bad = runner.invoke(app, ["train-head", str(store), "--calibrate", "platt"])
    assert bad.exit_code == 2 and "--calibrate" in bad.output
