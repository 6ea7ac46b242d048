"""Classify new images (or a store of features) with a saved head, into a CSV.

    rows = predict("heads/elpv_efficientnet_lite0.linear", ["new_cells/"], "predictions.csv")

The head's sidecar names its backbone, weights (by sha256) and preprocessing: the backbone is
rebuilt the same way, and a mismatch is refused instead of giving quietly wrong answers.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featx.backbones import create_backbone
from featx.backbones.weights import weights_arg
from featx.data import list_images
from featx.errors import FeatxError
from featx.extract import embed
from featx.head_io import Head
from featx.store import FeatureStore


@dataclass
class PredictResult:
    csv: Path
    predicted: int
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def predict(head_path: str | os.PathLike, inputs: list[str | os.PathLike], out_csv: str | os.PathLike,
            top_k: int = 3, class_map: str | None = None, device: str = "auto",
            batch_size: int = 64, workers: int | None = None, engine: str = "auto") -> PredictResult:
    head = Head.load(head_path)
    names = _names(head, class_map)
    if len(inputs) == 1 and str(inputs[0]).endswith((".h5", ".hdf5")):
        paths, features, failed = _from_store(head, Path(inputs[0]))
    else:
        paths, features, failed = _from_images(head, inputs, device, batch_size, workers, engine)
    scores = head.scores(features) if len(features) else np.zeros((0, len(names)))
    _write_csv(Path(out_csv), paths, scores, names, min(top_k, len(names)), head.probabilistic)
    return PredictResult(Path(out_csv), len(paths), failed)


def _names(head: Head, class_map: str | None) -> list[str]:
    if not class_map:
        return head.class_names
    try:
        mapping = json.loads(Path(class_map).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FeatxError(f"{class_map}: cannot read class map ({exc})") from None
    return [str(mapping.get(c, n)) for c, n in zip(head.classes, head.class_names)]


def _from_store(head: Head, path: Path):
    with FeatureStore(path) as store:
        _check_same_features(head, store.attrs["backbone"], store.attrs["weights_sha256"], path)
        rows = store.rows()
        features = store.f["features/clean"][:][rows].astype(np.float32)
        failed = [(store.paths[r], reason) for r, reason in sorted(store.failed.items())]
        return [store.paths[r] for r in rows], features, failed


def _from_images(head: Head, inputs, device: str, batch_size: int, workers: int | None, engine: str):
    dataset, skipped = list_images(list(inputs))
    pre = head.meta["preprocess"]
    backbone = create_backbone(head.meta["backbone"], weights_arg(head.meta["weights"]),
                               head.meta.get("backbone_seed", 0),
                               pre["input_size"])
    _check_same_features(head, backbone.name, backbone.weights.get("sha256", backbone.weights["source"]),
                         "this machine's weights")
    features, failed_rows = embed(dataset, backbone, device, batch_size, workers, engine)
    ok = [i for i in range(len(dataset.samples)) if i not in failed_rows]
    failed = skipped + [(str(dataset.abspath(dataset.samples[i])), r) for i, r in sorted(failed_rows.items())]
    return [str(dataset.abspath(dataset.samples[i])) for i in ok], features[ok], failed


def _check_same_features(head: Head, backbone: str, sha: str, where) -> None:
    if backbone != head.meta["backbone"] or sha != head.meta["weights_sha256"]:
        raise FeatxError(f"{where}: features come from {backbone} (weights {sha[:12]}), but the head "
                         f"was trained on {head.meta['backbone']} (weights "
                         f"{head.meta['weights_sha256'][:12]}); use the matching backbone weights")


def _write_csv(path: Path, paths: list[str], scores: np.ndarray, names: list[str], k: int,
               probabilistic: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    value = "prob" if probabilistic else "score"
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path"] + [c for i in range(1, k + 1) for c in (f"class_{i}", f"{value}_{i}")])
        for p, s in zip(paths, scores):
            top = np.argsort(-s, kind="stable")[:k]
            writer.writerow([p] + [c for j in top for c in (names[j], f"{s[j]:.4f}")])
    os.replace(tmp, path)
