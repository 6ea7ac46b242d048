"""featx.probes.train + featx.heads.io: train every head kind on a store, save, reload, agree."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featx.errors import ConfigError, FeatxError
from featx.probes.feature_data import FeatureData
from featx.heads.io import Head
from featx.probes.sweep import HeadConfig
from featx.store import FeatureStore
from featx.probes.train import train_head

# One val split: these tests are about training and saving (tests/test_selection.py: k-fold CV).
FAST = HeadConfig(epochs=8, batch_size=16, select="val")


@pytest.mark.parametrize("kind,config", [
    ("linear", FAST),
    ("mlp", HeadConfig(head="mlp", hidden=(16,), optimizer="adamw", lrs=(1e-2,), weight_decays=(1e-4,),
                       epochs=15, batch_size=16)),
    ("logreg", FAST), ("svm", FAST), ("knn", FAST)])
def test_every_head_kind_learns_saves_and_reloads(blob_store, tmp_path, kind, config):
    result = train_head(blob_store, kind, config, out=tmp_path / f"h.{kind}", show_progress=False)
    assert result.test.top1 > 0.9 and result.val.top1 > 0.9
    assert result.path.name == f"h.{kind}.safetensors"
    meta = json.loads(result.path.with_suffix(".json").read_text())
    assert meta["kind"] == kind and meta["classes"] == ["a", "b", "c"]
    assert meta["backbone"] == "resnet18" and meta["metrics"]["test"]["top1"] == result.test.top1
    assert meta["store_dataset_fingerprint"] and meta["search"]
    if kind in ("linear", "mlp"):
        assert len(meta["curve"]) == meta["params"]["epochs_run"]
    # The saved head, reloaded, gives exactly the reported test predictions.
    head = Head.load(result.path)
    with FeatureStore(blob_store) as st:
        x, y = st.features("test")
    predicted = head.scores(x).argmax(1)
    assert (predicted == y).mean() == pytest.approx(result.test.top1)
    assert (result.test.nll is None) == (kind == "svm") and (result.test.ece is None) == (kind == "svm")


def test_linear_default_is_a_32_head_sweep_with_views(blob_store, tmp_path):
    result = train_head(blob_store, "linear", FAST, out=tmp_path / "h", show_progress=False)
    assert len(result.search) == 32 and {"lr", "weight_decay"} <= set(result.params)
    assert json.loads(result.path.with_suffix(".json").read_text())["views_used"] == 2


def test_same_seed_same_head(blob_store, tmp_path):
    a = train_head(blob_store, "linear", FAST, out=tmp_path / "a", show_progress=False)
    b = train_head(blob_store, "linear", FAST, out=tmp_path / "b", show_progress=False)
    assert a.path.read_bytes() == b.path.read_bytes()


def test_errors(blob_store, tmp_path):
    with pytest.raises(ConfigError, match="unknown head kind 'tree'"):
        train_head(blob_store, "tree")
    with pytest.raises(ConfigError, match="optimizer must be"):
        HeadConfig(optimizer="lbfgs")
    with pytest.raises(FeatxError, match="no such file"):
        Head.load(tmp_path / "missing")


def test_store_without_val_split_holds_out_part_of_train(tmp_path):
    from tests.conftest import make_feature_store

    store = make_feature_store(tmp_path / "s.h5", splits=("train", "train", "train", "test"))
    result = train_head(store, "linear", FAST, out=tmp_path / "h", show_progress=False)
    assert result.notes and "no val split" in result.notes[0]
    n_train = 3 * 40 * 3 // 4
    assert result.val.n == round(n_train / 3 * 0.15) * 3
    meta = json.loads(result.path.with_suffix(".json").read_text())
    assert meta["train_samples"] + result.val.n == n_train and result.test.top1 > 0.9
    # Baselines fit on the same train rows: the held-out val never leaks into their fit.
    with FeatureStore(store) as st:
        data = FeatureData(st)
        _, _, train_rows = data.split_arrays("train")
        assert len(train_rows) == meta["train_samples"]
        assert not set(train_rows) & set(data.rows("val"))


def test_unlabeled_store_is_refused(tmp_path):
    from tests.conftest import make_feature_store

    store = make_feature_store(tmp_path / "s.h5", classes=("only",))
    with pytest.raises(FeatxError, match="nothing to train on"):
        train_head(store, "linear", FAST, out=tmp_path / "h", show_progress=False)


def test_the_config_decides_the_kind_and_its_defaults(blob_store, tmp_path):
    """HeadConfig(head="mlp") trains the MLP with the MLP defaults, as `--head mlp` does."""
    head = train_head(blob_store, config=HeadConfig(head="mlp", hidden=(8,), epochs=3),
                      out=tmp_path / "m", show_progress=False)
    assert head.kind == "mlp" and "layers.1.weight" in head.tensors
    assert head.meta["config"]["optimizer"] == "adamw" and len(head.search) == 1
    assert HeadConfig(head="mlp") == HeadConfig(head="mlp", optimizer="adamw", lrs=(1e-3,),
                                                weight_decays=(1e-4,))
    # A shared config given with another kind takes that kind's defaults where it set none.
    shared = HeadConfig(epochs=3)
    assert shared.for_kind("mlp").optimizer == "adamw" and shared.for_kind("mlp").epochs == 3
    assert HeadConfig(optimizer="sgd").for_kind("mlp").optimizer == "sgd"


def test_out_folder_holds_the_head(blob_store, tmp_path):
    (tmp_path / "heads").mkdir()
    head = train_head(blob_store, "logreg", out=tmp_path / "heads", show_progress=False)
    assert head.path == tmp_path / "heads" / "blobs.logreg.safetensors"


def test_a_torn_head_is_refused(blob_store, tmp_path):
    """New weights beside an old sidecar (a kill between the two renames) must not load."""
    a = train_head(blob_store, "linear", FAST, out=tmp_path / "a", show_progress=False)
    b = train_head(blob_store, "linear", HeadConfig(epochs=2, batch_size=16, seed=1),
                   out=tmp_path / "b", show_progress=False)
    (tmp_path / "a.safetensors").write_bytes(b.path.read_bytes())
    with pytest.raises(FeatxError, match="not the ones a.json describes"):
        Head.load(tmp_path / "a")
    assert a.path.exists()


@pytest.mark.parametrize("change,message", [
    (lambda m: m.pop("classes"), "no 'classes'"),
    (lambda m: m.update(kind="tree"), "unknown head kind 'tree'"),
    (lambda m: m.update(classes=["a", "b"]), "2 classes, but the weights score 3"),
    (lambda m: m.update(format="other/1"), "not a featx head"),
])
def test_tampered_sidecars_are_one_line_errors(blob_store, tmp_path, change, message):
    head = train_head(blob_store, "logreg", out=tmp_path / "h", show_progress=False)
    sidecar = head.path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    change(meta)
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(FeatxError, match=message):
        Head.load(head.path)


def test_random_bytes_as_weights_are_refused(tmp_path, blob_store):
    head = train_head(blob_store, "logreg", out=tmp_path / "h", show_progress=False)
    meta = json.loads(head.path.with_suffix(".json").read_text())
    meta.pop("weights_file_sha256")  # an older head: no hash to compare, the parser must refuse
    head.path.with_suffix(".json").write_text(json.dumps(meta))
    head.path.write_bytes(b"\x80\x04not safetensors at all")
    with pytest.raises(FeatxError, match="unreadable head weights"):
        Head.load(head.path)


def test_features_of_the_wrong_width_are_refused(blob_store, tmp_path):
    head = train_head(blob_store, "linear", FAST, out=tmp_path / "h", show_progress=False)
    with pytest.raises(FeatxError, match=r"takes \[n, 16\]"):
        head.predict_proba(np.zeros((2, 5), np.float32))


# --- issue 17: nothing silent --------------------------------------------------------------

def test_a_sweep_where_every_head_diverges_saves_nothing(blob_store, tmp_path):
    """`--lr 1e30` with weight decay: every head's weights and val loss become NaN. Nothing is
    saved; the one line names the rates (issue 17, 8)."""
    config = HeadConfig(lrs=(1e30,), weight_decays=(1e-3,), epochs=3, batch_size=16)
    with pytest.raises(FeatxError, match=r"not finite .*1e\+30"):
        train_head(blob_store, "linear", config, out=tmp_path / "h", show_progress=False)
    assert not list(tmp_path.glob("h*"))


def test_a_diverged_head_is_never_selected_nor_recorded_as_a_number(blob_store, tmp_path):
    config = HeadConfig(lrs=(1e30, 0.1), weight_decays=(1e-3,), epochs=3, batch_size=16)
    head = train_head(blob_store, "linear", config, out=tmp_path / "h", show_progress=False)
    assert head.params["lr"] == 0.1
    assert all(np.isfinite(v).all() for v in head.tensors.values())
    diverged = [s for s in head.search if s["lr"] == 1e30]
    assert diverged and diverged[0]["val_loss"] is None and diverged[0]["diverged"]
    assert "NaN" not in head.path.with_suffix(".json").read_text()  # strict JSON


def test_an_empty_val_split_is_said_instead_of_selecting_on_nothing(tmp_path):
    """Too few training samples to hold out a val split, and none given: a sweep (or a baseline's
    search, or early stopping) has nothing to select on."""
    from tests.conftest import make_feature_store

    store = make_feature_store(tmp_path / "s.h5", n_per_class=5, splits=("train", "test"))
    for kind, config in (("linear", FAST), ("logreg", FAST),
                         ("linear", HeadConfig(lrs=(0.1,), weight_decays=(0.0,), patience=2))):
        with pytest.raises(ConfigError, match="val split is empty"):
            train_head(store, kind, config, out=tmp_path / "h", show_progress=False)
    # One candidate and no early stopping: nothing to select, it trains.
    head = train_head(store, "linear", HeadConfig(lrs=(0.1,), weight_decays=(0.0,), epochs=3),
                      out=tmp_path / "h", show_progress=False)
    assert head.val is None and head.test is not None
    # Cross-validation needs no val split: the sweep is chosen on folds of the training samples.
    head = train_head(store, "linear", HeadConfig(lrs=(0.01, 0.1), weight_decays=(0.0,), epochs=3, folds=2),
                      out=tmp_path / "h", show_progress=False)
    assert head.meta["selection"]["method"] == "cv" and head.val.n == head.meta["train_samples"]


def test_an_unwritable_out_fails_before_training(blob_store, tmp_path, monkeypatch):
    import featx.probes.baselines
    import featx.probes.train

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking the output")

    monkeypatch.setattr(featx.probes.train, "train_heads", no_training)
    monkeypatch.setattr(featx.probes.baselines, "fit_baseline", no_training)
    (tmp_path / "file").write_text("x")
    for kind in ("linear", "logreg"):
        with pytest.raises(FeatxError, match=r"file/sub: .*file is a file, not a folder"):
            train_head(blob_store, kind, FAST, out=tmp_path / "file" / "sub" / "h", show_progress=False)


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root writes into read-only folders")
def test_a_read_only_out_folder_fails_before_training(blob_store, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(FeatxError, match="cannot write"):
            train_head(blob_store, "linear", FAST, out=folder / "h", show_progress=False)
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("fields,name", [
    ({"batch_size": 2.7}, "batch_size"), ({"epochs": True}, "epochs"), ({"epochs": 0}, "epochs"),
    ({"batch_size": 0}, "batch_size"), ({"hidden": (0,)}, "hidden"), ({"hidden": ("512",)}, "hidden"),
    ({"hidden": 2.5}, "hidden"), ({"step_size": 0}, "step_size"), ({"patience": -1}, "patience"),
    ({"patience": 0}, "patience"), ({"patience": 1.5}, "patience"), ({"dropout": 1.0}, "dropout"),
    ({"label_smoothing": 2.0}, "label_smoothing"), ({"lrs": (-1.0,)}, "lrs"), ({"lrs": ("fast",)}, "lrs"),
    ({"lrs": (float("inf"),)}, "lrs"), ({"weight_decays": (float("nan"),)}, "weight_decays"),
    ({"momentum": float("nan")}, "momentum"), ({"gamma": "x"}, "gamma"), ({"seed": 1.0}, "seed"),
    ({"lrs": ()}, "lrs"), ({"hidden": None}, "hidden"),
])
def test_head_config_values_are_checked_by_type_and_range(fields, name):
    with pytest.raises(ConfigError, match=rf"^{name} must be"):
        HeadConfig(**fields)


def test_lr_find_settings_are_checked(blob_store):
    from featx.probes.train import find_head_lr

    for start, end, steps in ((0.0, 1.0, 10), (1.0, 0.1, 10), (1e-5, 1.0, 0), (1e-5, float("inf"), 10),
                              (float("nan"), 1.0, 10), (1e-5, 1.0, 2.5)):
        with pytest.raises(ConfigError, match="range test"):
            find_head_lr(blob_store, HeadConfig(lrs=(1.0,)), start, end, steps)
