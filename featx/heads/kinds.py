"""The head kinds featx knows, in one table: what each is, so no module keeps its own list.

    head_kind("svm").probabilistic          # False: its scores are margins
    names(backend="torch")                  # ("linear", "mlp"): the heads the sweep trains
    FEATURE_KINDS                           # what train-head accepts, in --help order

Imports nothing but the errors: `featx --help` reads it without torch or scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from featx.errors import ConfigError


@dataclass(frozen=True)
class HeadKind:
    """One kind of head, as the code that trains, saves, scores and fine-tunes heads asks about it."""

    name: str
    # Who fits it: the batched torch sweep, scikit-learn (featx.probes.baselines), or a fine-tune.
    backend: Literal["torch", "sklearn", "finetune"]
    probabilistic: bool  # its scores are class probabilities (an SVM's are margins)
    # It scores by searching its stored training rows (train_x, train_y), not by linear layers:
    # no layers to fine-tune from, its class count is in its params, not its weights.
    needs_reference_set: bool
    exportable: bool  # one ONNX graph whose output is class probabilities (featx export-model)
    trainable_on_features: bool  # train-head fits it on a store's cached features
    not_exportable_because: str = ""  # the reason export-model gives when it refuses the kind


KINDS: dict[str, HeadKind] = {k.name: k for k in (
    HeadKind("linear", "torch", probabilistic=True, needs_reference_set=False, exportable=True,
             trainable_on_features=True),
    HeadKind("mlp", "torch", probabilistic=True, needs_reference_set=False, exportable=True,
             trainable_on_features=True),
    HeadKind("logreg", "sklearn", probabilistic=True, needs_reference_set=False, exportable=True,
             trainable_on_features=True),
    # A linear SVM (LinearSVC): one linear layer, but its scores are margins, not probabilities.
    HeadKind("svm", "sklearn", probabilistic=False, needs_reference_set=False, exportable=False,
             trainable_on_features=True,
             not_exportable_because="an SVM head scores margins, not probabilities, and the exported "
             "model's output is class probabilities; train a logreg head (the same linear model, "
             "calibrated) to export"),
    HeadKind("knn", "sklearn", probabilistic=True, needs_reference_set=True, exportable=False,
             trainable_on_features=True,
             not_exportable_because="a k-NN head votes among its stored training rows (a search, "
             "not a network); train a linear, mlp or logreg head on the same store to export"),
    # Layers on a tuned backbone: written by `featx finetune`, never fitted on cached features.
    HeadKind("finetune", "finetune", probabilistic=True, needs_reference_set=False, exportable=True,
             trainable_on_features=False),
)}


def names(**wanted: object) -> tuple[str, ...]:
    """The names of the kinds whose attributes equal `wanted`, in table order:
    names(backend="sklearn") -> ("logreg", "svm", "knn")."""
    known = {f.name for f in fields(HeadKind)}
    if not set(wanted) <= known:
        raise TypeError(f"HeadKind has no {', '.join(sorted(set(wanted) - known))}")
    return tuple(k.name for k in KINDS.values() if all(getattr(k, a) == v for a, v in wanted.items()))


FEATURE_KINDS = names(trainable_on_features=True)  # linear, mlp, logreg, svm, knn
TORCH_KINDS = names(backend="torch")  # the batched sweep's heads (linear, mlp)


def head_kind(name: str, among: tuple[str, ...] = tuple(KINDS)) -> HeadKind:
    """The kind called `name`; a one-line ConfigError naming the valid ones when it is not one
    of `among` (all kinds by default; FEATURE_KINDS for what train-head fits)."""
    if isinstance(name, str) and name in among:
        return KINDS[name]
    valid = " | ".join(among)
    if isinstance(name, str) and name in KINDS:
        raise ConfigError(f"head kind {name!r} is not accepted here (use {valid})")
    raise ConfigError(f"unknown head kind {name!r} (use {valid})")
