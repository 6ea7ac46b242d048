"""A trained head: safetensors (the numbers) + a JSON sidecar (what they mean), never a pickle.

    head = featx.load_head("heads/elpv_efficientnet_lite0.linear")
    head.predict_proba(features)              # [n, C] from backbone features [n, D]
    head.predict_proba(["a.png", "b.png"])    # images: the backbone is rebuilt from the sidecar
    head.metrics["test"].top1

The sidecar holds the classes, the backbone and its weights' sha256, the preprocessing, the
store it was trained on, hyper-parameters, metrics and the training curve, and the sha256 of
its own weights file: the pair is bound, so a kill between the two renames of a save can never
pair new weights with old metadata unnoticed (docs/reliability.md, 17). It is read into a
HeadMeta (featx.heads.meta), each key checked, and written by `save_head` only.

Loading a head and scoring features imports numpy and safetensors only; images pull in the
backbone stack on first use.
"""

from __future__ import annotations

import importlib
import json
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from safetensors.numpy import load_file, save_file

from featx.runtime.atomic import atomic_write, atomic_write_text
from featx.runtime.display import html_table, listed, percent
from featx.errors import FeatxError
from featx.heads.kinds import head_kind
from featx.heads.meta import FORMAT, HeadMeta
from featx.heads.scoring import Normalizer, scores
from featx.runtime.hashing import file_sha256

if TYPE_CHECKING:
    from featx.heads.backbone import Embedded
    from featx.evaluation.metrics import Metrics

__all__ = ["FORMAT", "WARM_START", "Head", "HeadMeta", "file_sha256", "head_paths", "load_head", "save_head"]

ONNX_EXPORTER = "featx.deploy"  # Head.to_onnx: the module whose export_model writes the file
# Tensor-name prefix of a cross-validated head's train-only refit (fine-tuning starts from it).
WARM_START = "warm_start."
CLASSES_KEY = "featx.classes"  # the weights file's own record of its class lists


def head_paths(stem: str | os.PathLike) -> tuple[Path, Path]:
    """(NAME.safetensors, NAME.json) for a head given as NAME, NAME.safetensors or NAME.json."""
    stem = Path(stem)
    if not stem.name or stem.name in (".", ".."):
        raise FeatxError(f"{str(stem)!r}: not a head (a head is NAME.safetensors + NAME.json)")
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_head(stem: str | os.PathLike, tensors: dict[str, np.ndarray], meta: HeadMeta | Mapping) -> Path:
    """Write the weights, then the sidecar that names their sha256; returns the weights path.
    `meta` given as a dict is checked as a sidecar read back would be."""
    weights, sidecar = head_paths(stem)
    if not isinstance(meta, HeadMeta):
        meta = HeadMeta.from_dict(meta, source=sidecar)
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    # Written straight from the arrays and hashed from the file before it takes its name (a
    # concurrent save to the same stem cannot slip its weights under this sidecar): with
    # safetensors >= 0.8 a 1.5 GB k-NN head is never copied in memory.
    digest: list[str] = []
    # One metadata key: safetensors keeps its metadata in a hash map, so the order of several keys
    # (and the file's bytes) would change from one save to the next.
    names = {CLASSES_KEY: json.dumps({"classes": list(meta.classes),
                                      "class_names": list(meta.class_names or meta.classes)})}
    atomic_write(weights, lambda tmp: digest.append(_save_tensors(tensors, tmp, names)))
    meta = replace(meta, weights_file_sha256=digest[0])
    atomic_write_text(sidecar, json.dumps(meta.to_dict(), indent=2, default=_jsonable) + "\n")
    return weights


def _save_tensors(tensors: dict[str, np.ndarray], path: Path, metadata: dict[str, str]) -> str:
    """Write `tensors` (and the class lists, as the file's metadata) to `path`; returns its sha256."""
    path.touch()  # a new file gets the umask's mode; safetensors writes 0600, so it is put back
    mode = path.stat().st_mode & 0o777
    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, mode)
    return file_sha256(path)


def _read_weights(weights: Path) -> dict[str, np.ndarray]:
    """The tensors, read once into their arrays (pread; older safetensors map the file)."""
    try:
        return load_file(weights, backend="pread")
    except TypeError:  # safetensors < 0.8 has no backend choice
        return load_file(weights)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


@dataclass
class Head:
    """A head fitted on one backbone's features; scores features or images. `meta` is its
    sidecar (a HeadMeta, which also reads as the sidecar's dict: `head.meta["selection"]`)."""

    meta: HeadMeta = field(repr=False)
    tensors: dict[str, np.ndarray] = field(repr=False)
    path: Path | None = None
    _embedder: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.meta, HeadMeta):
            self.meta = HeadMeta.from_dict(self.meta, source=self.path or "head sidecar")

    @classmethod
    def load(cls, stem: str | os.PathLike) -> "Head":
        """Read NAME.safetensors + NAME.json, checking that they belong together."""
        if Path(stem).suffix in (".h5", ".hdf5"):
            raise FeatxError(f"{stem}: this is a feature store, not a head (a head is NAME.safetensors "
                             "+ NAME.json, written by train-head)")
        weights, sidecar = head_paths(stem)
        for p in (weights, sidecar):
            if not p.is_file():
                raise FeatxError(f"{p}: no such file (a head is NAME.safetensors + NAME.json)")
        meta = _read_sidecar(sidecar)
        expected = meta.weights_file_sha256
        before = _identity(weights)
        if expected and file_sha256(weights) != expected:
            raise FeatxError(f"{weights}: these weights are not the ones {sidecar.name} describes "
                             "(a save was interrupted, or one file was replaced); train the head again")
        try:
            tensors = _read_weights(weights)
        except Exception as exc:  # safetensors raises its own error types on malformed headers
            raise FeatxError(f"{weights}: unreadable head weights ({exc})") from None
        if _identity(weights) != before:  # replaced between the hash and the read
            raise FeatxError(f"{weights}: the file changed while it was being loaded; load it again")
        head = cls(meta, tensors, weights)
        head._check_shapes(sidecar)  # a class count that does not fit says so first
        _check_class_order(meta, weights, sidecar)
        return head

    def save(self, stem: str | os.PathLike) -> Path:
        self.path = save_head(stem, self.tensors, self.meta)
        return self.path

    # --- what it is --------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return self.meta.kind

    @property
    def classes(self) -> list[str]:
        return self.meta.classes

    @property
    def class_names(self) -> list[str]:
        return self.meta.class_names or self.classes

    @property
    def backbone(self) -> str:
        return self.meta.backbone

    @property
    def feature_dim(self) -> int:
        return self.meta.feature_dim

    @property
    def probabilistic(self) -> bool:
        """False for the SVM, whose scores are margins, not probabilities."""
        return head_kind(self.kind).probabilistic

    @property
    def params(self) -> dict:
        """The hyper-parameters chosen on val."""
        return self.meta.params

    @property
    def metrics(self) -> dict[str, "Metrics | None"]:
        """{"val": Metrics | None, "test": Metrics | None} measured when the head was trained."""
        from featx.evaluation.metrics import Metrics

        stored = self.meta.metrics
        return {split: Metrics.from_dict(m) if m else None for split, m in stored.items()}

    @property
    def val(self) -> "Metrics | None":
        return self.metrics.get("val")

    @property
    def test(self) -> "Metrics | None":
        return self.metrics.get("test")

    @property
    def search(self) -> list[dict]:
        """Every candidate tried, with its val scores."""
        return self.meta.search

    @property
    def curve(self) -> list[dict]:
        """Per epoch: train loss, val loss and top-1 (torch heads)."""
        return self.meta.curve

    @property
    def notes(self) -> list[str]:
        return self.meta.notes

    def normalizer(self, prefix: str = "") -> Normalizer:
        mode = self.meta.normalize
        return Normalizer(mode, self.tensors.get(f"{prefix}norm.mean"), self.tensors.get(f"{prefix}norm.std"))

    @property
    def warm_start_prefix(self) -> str:
        """Where the weights a fine-tune starts from live: WARM_START for a head refitted on
        train+val after cross-validation (it also keeps a refit on train only, so the fine-tune's
        val split is not one the start was trained on), else the head's own."""
        return WARM_START if f"{WARM_START}layers.0.weight" in self.tensors else ""

    # --- using it ----------------------------------------------------------------------------

    def scores(self, features: np.ndarray) -> np.ndarray:
        """[n, C] probabilities (margins for an SVM) from raw backbone features [n, D], at the
        head's temperature (1.0 for heads saved before calibration, or trained --calibrate none)."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise FeatxError(f"features of shape {features.shape} given to a head that takes "
                             f"[n, {self.feature_dim}] ({self.backbone} features)")
        x = self.normalizer()(features)
        layers = {k: v for k, v in self.tensors.items() if not k.startswith(("norm.", WARM_START))}
        return scores(self.kind, layers, x, self.params, self.meta.temperature)

    def predict_proba(self, inputs: np.ndarray | Sequence[str | os.PathLike] | str | os.PathLike,
                      **embed_options) -> np.ndarray:
        """Class probabilities [n, C] for features [n, D], or for images: files and folders, PIL
        images, or arrays [H, W, C] / [n, H, W, C] (uint8, or floats in [0, 1]).

        Images are featurised by the head's own backbone, rebuilt from the sidecar (same
        weights by sha256, same preprocessing); `embed_options` go to it (device, batch_size,
        workers, engine). Unreadable images raise; use `featx.heads.predict` to skip and list them.
        """
        if _is_features(inputs):
            return self.scores(np.asarray(inputs))
        embedded = self.embed(inputs, **embed_options)
        if embedded.failed:
            path, reason = embedded.failed[0]
            more = len(embedded.failed) - 1
            raise FeatxError(f"{path}: {reason}" + (f" (and {more} more)" if more else ""))
        return self.scores(embedded.features)

    def predict(self, inputs, **embed_options) -> list[str]:
        """The most likely class name for each row of features or each image."""
        return [self.class_names[i] for i in self.predict_proba(inputs, **embed_options).argmax(1)]

    def to_onnx(self, path: str | os.PathLike) -> Path:
        """This head with its backbone, pooling, standardiser and softmax as one ONNX file
        (`featx.export_model`, docs/deploy.md). The exporter sits a layer above heads (it imports
        them), so it is looked up by name when called: loading a head never imports it."""
        return importlib.import_module(ONNX_EXPORTER).export_model(self, path).path

    def __repr__(self) -> str:
        """A few lines: what the head is, its sizes, its test (else val) score; never its data."""
        lines = [f"Head({self.kind} on {self.backbone}: {self.feature_dim} features -> "
                 f"{len(self.classes)} classes)", f"  classes: {listed(self.class_names)}"]
        split, m = next(((s, m) for s, m in (("test", self.test), ("val", self.val)) if m), (None, None))
        if m:
            lines.append(f"  {split}: {m.headline()}")
        if self.path:
            lines.append(f"  path: {self.path}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = [("kind", self.kind), ("backbone", self.backbone), ("features", self.feature_dim),
                ("classes", f"{len(self.classes)}: {listed(self.class_names)}"),
                ("parameters", ", ".join(f"{k}={v}" for k, v in self.params.items()) or "-"),
                ("trained on", f"{self.meta.store or '-'} ({self.meta.train_samples or '-'} images)")]
        rows += [(f"{split} top-1", percent(m.top1, m.interval("top1"))) for split, m in
                 (("val", self.val), ("test", self.test)) if m]
        rows += [("path", str(self.path))] if self.path else []
        return html_table(rows, caption=f"featx head: {self.kind} on {self.backbone}")

    def embed(self, images, **embed_options) -> "Embedded":
        """Features of image files/folders through this head's backbone, in input order;
        unreadable images are left out and listed in `.failed`."""
        from featx.heads.backbone import HeadEmbedder

        if self._embedder is None:
            self._embedder = HeadEmbedder(self.meta)
        return self._embedder(images, **embed_options)

    def _check_shapes(self, sidecar: Path) -> None:
        """The weights fit the sidecar (its keys were checked as it was read: HeadMeta.from_dict)."""
        reference = head_kind(self.kind).needs_reference_set  # rows of train_x, not layers
        t = self.meta.temperature
        if not (np.isfinite(t) and t > 0):  # every probability is softmax(logits / t)
            raise FeatxError(f"{sidecar}: temperature must be a positive number, got {t!r}")
        out = None if reference else _output_size(self.tensors)
        if out is not None and out != len(self.classes):
            raise FeatxError(f"{sidecar}: {len(self.classes)} classes, but the weights score {out}")
        first = self.tensors.get("train_x" if reference else "layers.0.weight")
        takes = None if first is None else first.shape[-1 if reference else 0]
        if takes is not None and takes != self.feature_dim:
            raise FeatxError(f"{sidecar}: feature_dim {self.feature_dim}, but the weights take {takes} features")
        if reference:
            problem = _knn_problem(self.tensors, self.feature_dim)
            if problem:
                raise FeatxError(f"{self.path}: not a usable k-NN head ({problem})")


def _knn_problem(tensors: dict[str, np.ndarray], dim: int) -> str | None:
    """What is wrong with a k-NN head's tensors (reference rows, labels, saved index), or None."""
    x, y = tensors.get("train_x"), tensors.get("train_y")
    if x is None or y is None or x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        return "train_x [n, D] and train_y [n] are needed, with one label per row"
    index = [tensors[k] for k in ("knn.projection", "knn.centroids") if k in tensors]
    if not index:
        return None  # searched exactly
    d = index[0].shape[-1] if index[0].ndim == 2 else -1
    shapes = {"knn.projection": (dim, d), "knn.centroids": (None, d), "knn.code_range": (2, d)}
    for name, shape in shapes.items():
        t = tensors.get(name)
        if t is None or t.ndim != 2 or any(want not in (None, got) for want, got in zip(shape, t.shape)):
            return f"{name} should have shape [{', '.join('*' if w is None else str(w) for w in shape)}]"
    return None


def _identity(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def load_head(path: str | os.PathLike) -> Head:
    """A saved head, from NAME, NAME.safetensors or NAME.json."""
    return Head.load(path)


def _read_sidecar(sidecar: Path) -> HeadMeta:
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FeatxError(f"{sidecar}: unreadable head sidecar ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:  # a file must say what it is
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise FeatxError(f"{sidecar}: not a featx head (format {found!r})")
    return HeadMeta.from_dict(meta, source=sidecar)


def _check_class_order(meta: HeadMeta, weights: Path, sidecar: Path) -> None:
    """The weights file keeps the class lists it was trained with (its metadata): a sidecar whose
    classes were reordered or renamed would name every prediction wrongly, so it is refused.
    Heads saved before featx wrote that metadata have none, and load as before."""
    from safetensors import safe_open

    with safe_open(weights, framework="np") as f:
        saved = json.loads((f.metadata() or {}).get(CLASSES_KEY, "{}"))
    found = {"classes": list(meta.classes), "class_names": list(meta.class_names or meta.classes)}
    for key, listed in found.items():
        if key in saved and saved[key] != listed:
            raise FeatxError(f"{sidecar}: its {key} {listed} are not the ones its weights were trained "
                             f"with ({saved[key]}); restore the sidecar or train the head again")


def _output_size(tensors: dict[str, np.ndarray]) -> int | None:
    n = sum(1 for k in tensors if k.startswith("layers.") and k.endswith(".weight"))
    last = tensors.get(f"layers.{n - 1}.bias")
    return None if last is None else int(last.shape[0])


def _is_features(inputs) -> bool:
    """Features: an array or tensor of at most 2 dimensions, or rows of numbers (else images)."""
    if isinstance(inputs, np.ndarray) or type(inputs).__module__.startswith("torch"):
        return inputs.ndim <= 2
    if isinstance(inputs, (list, tuple)) and inputs:
        return isinstance(inputs[0], (list, tuple, numbers.Number)) or (
            isinstance(inputs[0], np.ndarray) and inputs[0].ndim <= 1)
    return False
