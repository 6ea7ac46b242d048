"""Saved heads: safetensors (the numbers) + a JSON sidecar (what they mean), never a pickle.

    head = Head.load("heads/elpv_efficientnet_lite0.linear")
    probs = head.scores(features)          # features straight from the backbone / store

The sidecar holds the classes, the backbone and its weights' sha256, the preprocessing, the
store it was trained on, hyper-parameters, metrics and the training curve; `featx predict`
uses it to re-attach the head to its backbone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from featx.baselines import linear_scores, scores
from featx.errors import FeatxError
from featx.feature_data import Normalizer

FORMAT = "featx-head/1"


def head_paths(stem: str | os.PathLike) -> tuple[Path, Path]:
    stem = Path(stem)
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_head(stem: str | os.PathLike, tensors: dict[str, np.ndarray], meta: dict) -> Path:
    """Write both files atomically (temp file, fsync, rename); returns the safetensors path."""
    weights, sidecar = head_paths(stem)
    weights.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, **meta}
    tmp_w = weights.with_name(weights.name + f".tmp-{os.getpid()}")
    tmp_j = sidecar.with_name(sidecar.name + f".tmp-{os.getpid()}")
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp_w))
        tmp_j.write_text(json.dumps(meta, indent=2, default=_jsonable) + "\n", encoding="utf-8")
        for tmp in (tmp_w, tmp_j):
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp_w, weights)
        os.replace(tmp_j, sidecar)
    finally:
        tmp_w.unlink(missing_ok=True)
        tmp_j.unlink(missing_ok=True)
    return weights


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


@dataclass
class Head:
    meta: dict
    tensors: dict[str, np.ndarray]
    path: Path

    @classmethod
    def load(cls, stem: str | os.PathLike) -> "Head":
        weights, sidecar = head_paths(stem)
        for p in (weights, sidecar):
            if not p.is_file():
                raise FeatxError(f"{p}: no such file (a head is NAME.safetensors + NAME.json)")
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
            tensors = load_file(str(weights))
        except (ValueError, OSError) as exc:
            raise FeatxError(f"{weights.with_suffix('')}: unreadable head ({exc})") from None
        if meta.get("format") != FORMAT:
            raise FeatxError(f"{sidecar}: not a featx head (format {meta.get('format')!r})")
        return cls(meta, tensors, weights)

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    @property
    def class_names(self) -> list[str]:
        return self.meta.get("class_names") or self.classes

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def probabilistic(self) -> bool:
        return self.kind != "svm"

    def normalizer(self) -> Normalizer:
        mode = self.meta.get("normalize", "none")
        return Normalizer(mode, self.tensors.get("norm.mean"), self.tensors.get("norm.std"))

    def scores(self, features: np.ndarray) -> np.ndarray:
        """[n, C] probabilities (scores for an SVM) from raw backbone features [n, D]."""
        x = self.normalizer()(features.astype(np.float32))
        layers = {k: v for k, v in self.tensors.items() if not k.startswith("norm.")}
        if self.kind in ("logreg", "svm", "knn"):
            return scores(self.kind, layers, x, self.meta.get("params", {}))
        return linear_scores(layers, x)
