"""featx.heads.meta: a head's sidecar as HeadMeta. Heads written before it load as they did,
a sidecar round-trips, keys of a newer featx survive, and a bad key is a one-line error."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from featx.errors import FeatxError
from featx.heads.io import Head, load_head, save_head
from featx.heads.meta import HeadMeta
from featx.probes.train import train_head
from tests.conftest import make_feature_store

# The keys train-head wrote before HeadMeta (featx-head/1), in the order it wrote them.
OLD_KEYS = ("format", "kind", "classes", "class_names", "backbone", "backbone_seed", "weights",
            "weights_sha256", "feature_dim", "preprocess", "store", "store_dataset_fingerprint", "normalize",
            "store_version", "config", "features", "pool", "tta", "params", "search", "curve", "metrics",
            "train_samples", "views_used", "streamed", "notes", "train_counts", "dataset_root",
            "dataset_name", "extraction", "seconds", "selection", "weights_file_sha256")
NEW_KEYS = ("warm_start", "aug", "temperature")  # the fine-tune's two, and calibration's


@pytest.fixture(scope="module")
def _once(tmp_path_factory) -> Head:
    root = tmp_path_factory.mktemp("meta")
    return train_head(make_feature_store(root / "blobs.h5"), "logreg", out=root / "h", show_progress=False)


@pytest.fixture
def trained(_once, tmp_path) -> Head:
    """A copy of one logreg head trained on blobs, for a test to rewrite."""
    for suffix in (".safetensors", ".json"):
        shutil.copy(_once.path.with_suffix(suffix), tmp_path / f"h{suffix}")
    return load_head(tmp_path / "h")


def _sidecar(head: Head) -> dict:
    return json.loads(head.path.with_suffix(".json").read_text())


def _rewrite(head: Head, meta: dict) -> None:
    head.path.with_suffix(".json").write_text(json.dumps(meta))


def test_train_head_writes_every_key_it_wrote_before_in_the_same_order(trained):
    written = list(_sidecar(trained))
    assert [k for k in written if k in OLD_KEYS] == list(OLD_KEYS)
    assert set(NEW_KEYS) <= set(written)


def test_a_sidecar_in_the_old_format_loads_as_before(trained):
    features = np.random.default_rng(0).normal(size=(5, trained.feature_dim)).astype(np.float32)
    old = {k: v for k, v in _sidecar(trained).items() if k in OLD_KEYS}
    assert set(old) == set(OLD_KEYS)
    _rewrite(trained, old)
    head = load_head(trained.path)
    for key, value in old.items():  # the dict view reads every old key as the file has it
        assert head.meta[key] == value, key
    assert head.meta.temperature == 1.0 and head.meta.warm_start is None
    assert (head.kind, head.classes, head.class_names, head.feature_dim) == ("logreg", ["a", "b", "c"],
                                                                             ["a", "b", "c"], 16)
    assert head.params == old["params"] and head.search == old["search"] and head.notes == old["notes"]
    assert head.test.top1 == old["metrics"]["test"]["top1"] and head.val.n == old["metrics"]["val"]["n"]
    assert head.normalizer().mode == "standard" and head.probabilistic
    # As trained: an old sidecar has no temperature (calibration), so the softmax takes the logits as they are.
    as_trained = Head(replace(trained.meta, temperature=1.0), trained.tensors)
    np.testing.assert_array_equal(head.predict_proba(features), as_trained.predict_proba(features))


def test_an_older_sidecar_missing_keys_takes_what_its_readers_assumed(tmp_path):
    tensors = {"layers.0.weight": np.eye(3, 2, dtype=np.float32), "layers.0.bias": np.zeros(2, np.float32)}
    path = save_head(tmp_path / "h", tensors, {"kind": "svm", "classes": ["x", "y"], "feature_dim": 3,
                                              "backbone": "tiny_cnn"})
    head = load_head(path)
    assert head.class_names == ["x", "y"] and head.params == {} and head.search == [] and head.curve == []
    assert head.notes == [] and head.val is None and head.normalizer().mode == "none"
    assert head.meta.get("selection", {}).get("why") is None and head.meta["pool"] is None
    assert not head.probabilistic  # the SVM's scores are margins
    np.testing.assert_allclose(head.scores(np.array([[1.0, -1.0, 5.0]])), [[1.0, -1.0]])


def test_a_sidecar_round_trips(trained, tmp_path):
    meta = HeadMeta.from_dict(_sidecar(trained))
    assert meta.to_dict() == _sidecar(trained) and meta == trained.meta
    again = load_head(trained.save(tmp_path / "copy"))
    assert again.meta == trained.meta and dict(again.meta) == dict(trained.meta)


def test_keys_of_a_newer_featx_are_kept_and_written_back(trained, tmp_path):
    _rewrite(trained, {**_sidecar(trained), "ensemble": {"members": 3}, "ood_threshold": 0.7})
    head = load_head(trained.path)
    assert head.meta["ensemble"] == {"members": 3}
    assert {k: head.meta.extra[k] for k in ("ensemble", "ood_threshold")} == {"ensemble": {"members": 3},
                                                                             "ood_threshold": 0.7}
    head.save(tmp_path / "copy")
    assert json.loads((tmp_path / "copy.json").read_text())["ood_threshold"] == 0.7


def test_null_where_a_value_is_expected_takes_the_default(trained):
    _rewrite(trained, {**_sidecar(trained), "config": None, "notes": None, "temperature": None})
    head = load_head(trained.path)
    assert head.meta.config == {} and head.notes == [] and head.meta.temperature == 1.0


@pytest.mark.parametrize("key,value,message", [
    ("normalize", 3, "normalize must be text, got 3"),
    ("params", [1, 2], r"params must be a mapping, got \[1, 2\]"),
    ("notes", ["ok", 4], "notes must be a list of names"),
    ("streamed", "yes", "streamed must be true or false, got 'yes'"),
    ("temperature", "hot", "temperature must be a number, got 'hot'"),
    ("train_counts", [1.5, 2], "train_counts must be a list of whole numbers"),
    ("backbone_seed", True, "backbone_seed must be a whole number, got True"),
    ("feature_dim", "16", "feature_dim must be a whole number, got '16'"),
    ("classes", "abc", "classes must be a list of names"),
    ("kind", "forest", "unknown head kind 'forest'"),
])
def test_a_bad_key_is_a_one_line_error_naming_the_file_and_the_key(trained, key, value, message):
    _rewrite(trained, {**_sidecar(trained), key: value})
    with pytest.raises(FeatxError, match=message) as error:
        load_head(trained.path)
    assert str(error.value).startswith(str(trained.path.with_suffix(".json"))) and "\n" not in str(error.value)


def test_a_long_bad_value_is_shown_shortened(trained):
    _rewrite(trained, {**_sidecar(trained), "dataset_root": list(range(1000))})
    with pytest.raises(FeatxError, match=r"dataset_root must be text, got \[0, 1, .*\.\.\.$"):
        load_head(trained.path)


def test_save_head_refuses_a_dict_it_could_not_read_back(tmp_path):
    tensors = {"layers.0.weight": np.eye(3, 2, dtype=np.float32), "layers.0.bias": np.zeros(2, np.float32)}
    with pytest.raises(FeatxError, match="no 'backbone'"):
        save_head(tmp_path / "h", tensors, {"kind": "linear", "classes": ["x", "y"], "feature_dim": 3})
    assert not list(tmp_path.iterdir())


def _two_class_head(tmp_path):
    from featx.heads.io import save_head

    meta = {"kind": "linear", "classes": ["a", "b"], "class_names": ["ants", "bees"], "feature_dim": 2,
            "backbone": "x", "normalize": "none"}
    tensors = {"layers.0.weight": np.eye(2, dtype=np.float32), "layers.0.bias": np.zeros(2, np.float32)}
    return save_head(tmp_path / "h", tensors, meta)


@pytest.mark.parametrize("key", ["classes", "class_names"])
def test_a_sidecar_whose_classes_were_reordered_is_refused(tmp_path, key):
    import json

    from featx.heads.io import load_head

    weights = _two_class_head(tmp_path)
    assert load_head(weights).predict(np.array([[1.0, 0.0], [0.0, 1.0]])) == ["ants", "bees"]
    sidecar = weights.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta[key] = meta[key][::-1]  # every prediction would carry the other class's name
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(FeatxError, match=rf"h.json: its {key} .* are not the ones its weights were trained with"):
        load_head(weights)


def test_a_head_saved_without_class_metadata_still_loads(tmp_path):
    from safetensors.numpy import load_file, save_file

    from featx.heads.io import load_head
    from featx.runtime.hashing import file_sha256

    weights = _two_class_head(tmp_path)
    save_file(load_file(weights), str(weights))  # as featx wrote heads before: no metadata
    sidecar = weights.with_suffix(".json")
    import json
    meta = json.loads(sidecar.read_text())
    meta["weights_file_sha256"] = file_sha256(weights)
    sidecar.write_text(json.dumps(meta))
    assert load_head(weights).classes == ["a", "b"]
