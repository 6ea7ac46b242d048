"""Classify new images (or a store's features) with a trained head, in memory or into a CSV.

    preds = featx.predict("heads/elpv_efficientnet_lite0.linear", ["new_cells/"])
    preds.labels[:4], preds.scores.shape, preds.failed
    preds.to_csv("predictions.csv", top_k=3)

The head's sidecar names its backbone, weights (by sha256) and preprocessing: the backbone is
rebuilt the same way, and a mismatch is refused instead of giving quietly wrong answers.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from featx.runtime.atomic import atomic_write
from featx.data import read_class_map
from featx.errors import ConfigError, FeatxError
from featx.heads.backbone import check_same_features
from featx.heads.io import Head
from featx.runtime.display import html_table, listed, percent
from featx.runtime.progress import console
from featx.store import FeatureStore, head_staleness

STORE_SUFFIXES = (".h5", ".hdf5")
HTML_ROWS = 20  # predictions shown in a notebook's table
SCORE_ROWS = 16_384  # store rows scored at a time (84 MB of float32 features at D=1280)


@dataclass
class Predictions:
    """Scores of each input that could be used; the others are listed in `failed`."""

    paths: list[str]
    scores: np.ndarray  # [n, C]: probabilities (margins for an SVM head)
    class_names: list[str]
    probabilistic: bool = True
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    # From a store: each row's split and true class name ("" when unlabeled); None for images.
    splits: list[str] | None = None
    true_labels: list[str] | None = None

    @property
    def labels(self) -> list[str]:
        """The most likely class of each input."""
        return [self.class_names[i] for i in self.scores.argmax(1)] if len(self.paths) else []

    def __repr__(self) -> str:
        lines = [f"Predictions({len(self.paths)} inputs x {len(self.class_names)} classes"
                 + (f", {len(self.failed)} failed)" if self.failed else ")")]
        counts = Counter(self.labels)
        if counts:
            lines.append("  predicted: " + listed([f"{name} {n}" for name, n in counts.most_common()]))
        accuracy = self.accuracy()
        if accuracy is not None:
            lines.append(f"  top-1 {percent(accuracy)} against the store's labels")
        if self.failed:
            lines.append(f"  failed: {self.failed[0][0]} ({self.failed[0][1]})"
                         + (f" and {len(self.failed) - 1} more" if len(self.failed) > 1 else ""))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        value = "probability" if self.probabilistic else "score"
        shown = min(len(self.paths), HTML_ROWS)
        rows = [(self.paths[i], self.labels[i], f"{self.scores[i].max():.3f}") for i in range(shown)]
        caption = f"Predictions: {len(self.paths)} inputs, {len(self.class_names)} classes"
        accuracy = self.accuracy()
        if accuracy is not None:
            caption += f", top-1 {percent(accuracy)}"
        if shown < len(self.paths):
            caption += f" (first {shown} shown; to_pandas() for all)"
        html = html_table(rows, header=["path", "predicted", value], caption=caption)
        if self.failed:
            html += html_table(self.failed[:HTML_ROWS], header=["failed", "why"])
        return html

    def accuracy(self) -> float | None:
        """Top-1 against the true classes of a store's labelled rows; None for images."""
        if self.true_labels is None:
            return None
        known = [(t, p) for t, p in zip(self.true_labels, self.labels) if t]
        return sum(t == p for t, p in known) / len(known) if known else None

    def to_pandas(self):
        """A pandas DataFrame: path, (split, true_class,) predicted, then prob_<class> (score_<class>
        for an SVM head) per class, in the head's class order."""
        try:
            import pandas as pd
        except ImportError:
            raise FeatxError("Predictions.to_pandas needs pandas: pip install pandas") from None
        columns: dict[str, object] = {"path": self.paths}
        if self.splits is not None:
            columns.update(split=self.splits, true_class=self.true_labels)
        columns["predicted"] = self.labels
        value = "prob" if self.probabilistic else "score"
        for j, name in enumerate(self.class_names):
            columns[f"{value}_{name}"] = self.scores[:, j]
        return pd.DataFrame(columns)

    def to_csv(self, path: str | os.PathLike, top_k: int = 3) -> Path:
        """path, class_1, prob_1, ..., class_k, prob_k per input (from a store also split and
        true class, so accuracy per split can be read off); written atomically."""
        if top_k < 1:
            raise ConfigError(f"--top-k must be at least 1, got {top_k}")
        k = min(top_k, len(self.class_names))
        value = "prob" if self.probabilistic else "score"

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                known = self.splits is not None
                writer.writerow(["path"] + (["split", "true_class"] if known else [])
                                + [c for i in range(1, k + 1) for c in (f"class_{i}", f"{value}_{i}")])
                for i, (p, s) in enumerate(zip(self.paths, self.scores)):
                    top = np.argsort(-s, kind="stable")[:k]
                    truth = [self.splits[i], self.true_labels[i]] if known else []
                    writer.writerow([p] + truth + [c for j in top for c in (self.class_names[j], f"{s[j]:.4f}")])

        return atomic_write(Path(path), write)


def predict(head: Head | str | os.PathLike, inputs: Sequence[str | os.PathLike] | str | os.PathLike,
            class_map: str | os.PathLike | None = None, device: str = "auto", batch_size: int = 64,
            workers: int | None = None, engine: str = "auto", threads: int | None = None) -> Predictions:
    """Score image files/folders, or every usable row of one complete feature store (.h5);
    `threads`: ONNX Runtime threads for the images' forward (None: torch's thread count)."""
    head = head if isinstance(head, Head) else Head.load(head)
    names = _display_names(head, class_map)
    from featx.heads.backbone import image_items

    items = image_items(inputs)  # files, folders or a store; or PIL images and image arrays
    stores = [str(i) for i in items if str(i).endswith(STORE_SUFFIXES)]
    if stores and len(items) > 1:
        raise ConfigError(f"{stores[0]}: a feature store is predicted on its own; give it alone, or "
                          "only images and folders")
    if stores:
        paths, scores, failed, splits, truth = _from_store(head, Path(items[0]), names)
    else:
        embedded = head.embed(items, device=device, batch_size=batch_size, workers=workers, engine=engine,
                              threads=threads)
        paths, features, failed = embedded.paths, embedded.features, embedded.failed
        splits = truth = None
        scores = head.scores(features) if len(features) else np.zeros((0, len(names)))
    return Predictions(paths, scores, names, head.probabilistic, failed, splits, truth)


def _display_names(head: Head, class_map: str | os.PathLike | None) -> list[str]:
    if not class_map:
        return head.class_names
    mapping = read_class_map(class_map)
    return [str(mapping.get(c, n)) for c, n in zip(head.classes, head.class_names)]


def _from_store(head: Head, path: Path, names: list[str]):
    with FeatureStore(path) as store:
        attrs = store.attrs
        check_same_features(head.meta, attrs["backbone"], attrs["weights_sha256"], path)
        _check_same_preprocessing(head, attrs["transform"]["clean"], path)
        stale = head_staleness(head.meta, attrs)
        if stale:  # a store updated since the head was trained (issue 19)
            console.print(f"[yellow]note:[/] {head.path.name}: {stale}", highlight=False, soft_wrap=True)
        if not store.complete:
            raise FeatxError(f"{path}: the store is incomplete ({len(store.rows())} of {len(store.labels)} "
                             "rows written); re-run `featx extract` to finish it first")
        _check_same_columns(head, store, path)
        rows = store.rows()
        labels = store.labels[rows]
        scores = np.zeros((0, len(names)))
        if len(rows):  # scored a block at a time: a million rows' features never sit in memory
            # [:, :D]: a head on the final features only (--features final)
            blocks = (store.read_clean(rows[i:i + SCORE_ROWS])[:, :head.feature_dim]
                      for i in range(0, len(rows), SCORE_ROWS))
            scores = np.concatenate([head.scores(x) for x in blocks])
        failed = [(str(store.paths[r]), reason) for r, reason in sorted(store.failed.items())]
        # The store's own classes, shown under the head's display names where the head knows them.
        shown = dict(zip(head.classes, names))
        truth = [shown.get(store.classes[y], store.classes[y]) if y >= 0 else "" for y in labels]
        return [str(store.paths[r]) for r in rows], scores, failed, [str(store.splits[r]) for r in rows], truth


def _check_same_columns(head: Head, store: FeatureStore, where) -> None:
    """The store's columns are the head's: the same pooled block (or the final features only,
    which every store begins with) and the same TTA averaging."""
    final_only = head.meta.features == "final" or not head.meta.pool
    wanted_dim = store.final_dim if final_only else store.feature_dim
    problems = []
    if not final_only and head.meta.pool != store.pool:
        problems.append(f"pooled block {store.pool or 'none'} vs the head's {head.meta.pool}")
    if (head.meta.tta or None) != (store.attrs.get("tta") or None):
        problems.append(f"tta {store.attrs.get('tta') or 'none'} vs the head's {head.meta.tta or 'none'}")
    if not problems and wanted_dim != head.feature_dim:
        problems.append(f"{wanted_dim} columns vs the head's {head.feature_dim}")
    if problems:
        raise FeatxError(f"{where}: its features are not the head's ({'; '.join(problems)}); extract the "
                         "images again with the head's settings, or predict on the image files")


def _check_same_preprocessing(head: Head, clean: dict, where) -> None:
    trained = head.meta.preprocess
    if trained and trained != clean:
        differing = sorted(k for k in set(trained) | set(clean) if trained.get(k) != clean.get(k))
        shown = ", ".join(f"{k} {clean.get(k)!r} vs {trained.get(k)!r}" for k in differing)
        raise FeatxError(f"{where}: preprocessed differently from the head's training store ({shown}); "
                         "extract the store with the head's settings")
