"""featx.heads.kinds: the one table of head kinds that training, saving, scoring and the CLI read."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from featx.errors import ConfigError
from featx.heads.kinds import FEATURE_KINDS, KINDS, TORCH_KINDS, head_kind, names
from featx.heads.scoring import scores
from featx.probes.sweep import HeadConfig


def test_train_head_accepts_the_feature_kinds_in_help_order():
    assert FEATURE_KINDS == ("linear", "mlp", "logreg", "svm", "knn")
    assert TORCH_KINDS == ("linear", "mlp") and names(backend="sklearn") == ("logreg", "svm", "knn")
    assert set(KINDS) == {*FEATURE_KINDS, "finetune"}


def test_what_each_kind_is():
    assert [k for k in KINDS if not head_kind(k).probabilistic] == ["svm"]  # margins
    assert [k for k in KINDS if head_kind(k).needs_reference_set] == ["knn"]
    # export-model promises probabilities: a k-NN head is a search, an SVM scores margins
    assert [k for k in KINDS if not head_kind(k).exportable] == ["svm", "knn"]
    assert all(head_kind(k).not_exportable_because for k in ("svm", "knn"))
    assert not head_kind("finetune").trainable_on_features


@pytest.mark.parametrize("name,among,message", [
    ("tree", tuple(KINDS), r"unknown head kind 'tree' \(use linear \| mlp \| logreg \| svm \| knn \| finetune\)"),
    ("finetune", FEATURE_KINDS, r"head kind 'finetune' is not accepted here \(use linear \| mlp \| logreg \| svm \| knn\)"),
    (None, FEATURE_KINDS, r"unknown head kind None"),
])
def test_an_unknown_kind_is_a_one_line_error_naming_the_valid_ones(name, among, message):
    with pytest.raises(ConfigError, match=message):
        head_kind(name, among)


def test_a_head_config_takes_only_kinds_trained_on_features():
    with pytest.raises(ConfigError, match="'finetune' is not accepted"):
        HeadConfig(head="finetune")
    assert HeadConfig(head="logreg").torch_head is False and HeadConfig(head="mlp").torch_head


def test_names_refuses_an_attribute_no_kind_has():
    with pytest.raises(TypeError, match="no colour"):
        names(colour="red")


@pytest.mark.parametrize("kind", [k for k in KINDS if not head_kind(k).needs_reference_set])
def test_layered_kinds_score_probabilities_unless_the_registry_says_margins(kind):
    tensors = {"layers.0.weight": np.array([[2.0, -1.0], [0.0, 3.0]], np.float32),
               "layers.0.bias": np.zeros(2, np.float32)}
    s = scores(kind, tensors, np.array([[1.0, 1.0]], np.float32), {})
    if head_kind(kind).probabilistic:
        np.testing.assert_allclose(s.sum(1), 1.0, rtol=1e-6)
    else:
        np.testing.assert_allclose(s, [[2.0, 2.0]])


def test_the_registry_imports_neither_torch_nor_numpy():
    """`featx --help` reads the kinds: the registry must stay as light as the CLI's options."""
    code = ("import sys, featx.heads.kinds; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'sklearn')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
