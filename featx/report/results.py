"""What a results folder holds for a report, read defensively: a head sidecar or an LR-finder
curve that is damaged is skipped with its reason, never a traceback.

    found = read_results("runs/compare/heads")
    found.heads      # usable head sidecars (dicts), sorted by backbone and head
    found.curves     # (file name, lrs, losses) of every *.lr-find.csv
    found.skipped    # (path, reason) of damaged files that looked like ours
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from featx.errors import FeatxError
from featx.heads.io import FORMAT


@dataclass
class Results:
    """What a results folder holds for a report: head sidecars, LR-finder curves, and the files
    that look like ours but cannot be used (each with its reason; the report names them)."""
    heads: list[dict] = field(default_factory=list)
    curves: list[tuple[str, list[float], list[float]]] = field(default_factory=list)  # (file, lrs, losses)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    stale: list[tuple[Path, str]] = field(default_factory=list)  # heads older than their store


def read_results(folder: str | Path, required: bool = True) -> Results:
    """Every featx head sidecar and `*.lr-find.csv` under `folder` (recursively).

    A sidecar or curve that is damaged (not JSON, a field missing or of the wrong type, a row
    that is not numbers) is skipped with its reason in `skipped`; other JSON files are not ours
    and are left alone. Raises FeatxError when there is no folder, or no usable head result,
    unless `required` is False.
    """
    folder = Path(folder)
    if not folder.is_dir():
        if not required:
            return Results()
        raise FeatxError(f"{folder}: no such folder")
    found = Results()
    for path in sorted(folder.rglob("*.json")):
        meta, problem = _read_sidecar(path)
        if problem:
            found.skipped.append((path, problem))
        elif meta is not None:
            found.heads.append({**meta, "_path": str(path)})
    found.stale = [(Path(m["_path"]), note) for m in found.heads if (note := _staleness(m))]
    for path in sorted(folder.rglob("*.lr-find.csv")):
        curve, problem = _read_curve(path)
        if problem:
            found.skipped.append((path, problem))
        elif curve:
            found.curves.append((path.name, *curve))
    if not found.heads and required:
        if found.skipped:
            raise FeatxError(f"{folder}: no usable head results; skipped {len(found.skipped)}: "
                             + "; ".join(f"{p}: {why}" for p, why in found.skipped))
        raise FeatxError(f"{folder}: no head results (*.json from `featx train-head`) found")
    found.heads.sort(key=lambda m: (m["backbone"], m["kind"], m["_path"]))
    return found


def _staleness(meta: dict) -> str | None:
    """Whether the head's store has been updated since it was trained (issue 19), or None."""
    from featx.store import head_staleness, read_attrs

    try:
        return head_staleness(meta, read_attrs(Path(meta["store"])))
    except (FeatxError, KeyError, TypeError, ValueError):
        return None  # no store here (a shared head folder): nothing to compare with


def load_results(folder: str | Path, required: bool = True) -> list[dict]:
    """The usable head sidecars under `folder`, sorted by backbone and head (see read_results)."""
    return read_results(folder, required).heads


def _read_sidecar(path: Path) -> tuple[dict | None, str | None]:
    """(meta, None) for a usable head sidecar; (None, reason) for a damaged one; (None, None)
    for a JSON file that is not a head's (a checkpoint record, a class map)."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        if path.with_suffix(".safetensors").exists():  # beside weights: a damaged sidecar
            return None, f"unreadable head sidecar ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"
        return None, None
    if not isinstance(meta, dict) or not str(meta.get("format", "")).startswith("featx-head"):
        return None, None
    if meta["format"] != FORMAT:
        return None, f"format {meta['format']!r}, this featx reads {FORMAT!r}"
    return meta, _problem(meta)


def _read_curve(path: Path) -> tuple[tuple[list[float], list[float]] | None, str | None]:
    """((lrs, losses), None), or (None, reason) for a curve that is not rows of numbers."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return None, f"unreadable CSV ({type(exc).__name__})"
    if rows and not {"lr", "loss"} <= set(rows[0]):
        return None, "no 'lr' and 'loss' columns"
    lrs, losses = [], []
    for i, row in enumerate(rows, 1):
        try:
            lr, loss = float(row["lr"]), float(row["loss"])
        except (TypeError, ValueError):
            bad = "lr" if not _is_number(row["lr"]) else "loss"
            return None, f"row {i}: {bad} {row[bad]!r} is not a number"
        if not (math.isfinite(lr) and lr > 0):
            return None, f"row {i}: lr {row['lr']!r} is not a positive learning rate"
        lrs.append(lr)
        losses.append(loss)
    return ((lrs, losses) if rows else None), None


def _is_number(text) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


# What the report reads of a head sidecar, and of what type: a missing key or None is fine
# unless Required; a value of another type would fail a table cell or a plot.
class Required:
    def __init__(self, shape):
        self.shape = shape


SPLIT = {"top1": Required(float), "top5": float, "balanced_accuracy": float, "macro_f1": float,
         "nll": float, "ece": float, "per_class": Required([{"recall": Required(float)}]),
         "confusion": Required([[float]]),
         "worst": [{"path": str, "true": Required(str), "predicted": Required(str),
                    "p_true": Required(float), "p_predicted": Required(float)}],
         "reliability": [{"confidence": Required(float), "accuracy": Required(float)}]}
CALIBRATED = {"nll": float, "ece": float, "intervals": {"nll": [float], "ece": [float]}}
SIDECAR = {"backbone": Required(str), "kind": Required(str), "classes": Required([str]),
           "class_names": [str], "feature_dim": float, "seconds": float, "dataset_root": str,
           "train_counts": [float],
           "extraction": {"images_per_second": float, "backbone_params": float, "device": str, "engine": str},
           # A fine-tune's epoch 0 (its warm start, before any training) has no train_loss.
           "curve": [{"epoch": Required(float), "train_loss": float, "val_loss": float,
                      "val_top1": float}],
           "metrics": {"val": SPLIT, "test": SPLIT},
           "calibration": {"method": str, "temperature": float, "fitted_on": str, "why": str,
                           "fit_images": float, "fit_top1": float, "fit_margin": float,
                           "test": {"before": CALIBRATED, "after": CALIBRATED}}}


def _problem(meta: dict) -> str | None:
    """Why the report cannot use this sidecar, or None."""
    problem = _shape_problem(meta, SIDECAR, "")
    if problem:
        return problem
    for split in ("val", "test"):
        metrics = (meta.get("metrics") or {}).get(split)
        if not metrics:
            continue
        if len({len(row) for row in metrics["confusion"]}) > 1:
            return f"metrics.{split}.confusion is not a square matrix"
        if metrics.get("reliability") and metrics.get("ece") is None:
            return f"metrics.{split} has a reliability diagram but no 'ece'"
        counts = meta.get("train_counts")
        if counts and len(counts) != len(metrics["per_class"]):
            return f"{len(counts)} train_counts for {len(metrics['per_class'])} classes in metrics.{split}"
    return None


def _shape_problem(value, shape, where: str) -> str | None:
    required = isinstance(shape, Required)
    shape = shape.shape if required else shape
    if value is None:
        return f"no '{where}'" if required else None
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"'{where}' is not a mapping"
        for key, inner in shape.items():
            problem = _shape_problem(value.get(key), inner, f"{where}.{key}" if where else key)
            if problem:
                return problem
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"'{where}' is not a list"
        return next((p for i, item in enumerate(value)
                     if (p := _shape_problem(item, Required(shape[0]), f"{where}[{i}]"))), None)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if shape is float and not number:
        return f"'{where}' is not a number"
    if shape is str and not isinstance(value, str):
        return f"'{where}' is not text"
    return None
