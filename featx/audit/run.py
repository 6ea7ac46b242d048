"""`featx audit STORE`: duplicates, leakage, label suspects and outliers, from one store.

    result = audit("stores/elpv_efficientnet_lite0_224px_mildx2.h5", "runs/audit")
    result.summary["leakage"]["test"]      # test samples with a duplicate in train

Steps: (1) each sample's k nearest samples by clean features (featx.search.neighbours: exact FAISS up
to 50k rows, an IVF index above); (2) file and pixel hashes of the images, when the dataset is
still where the store says (else pixel checks are skipped and said so); (3) exact and near
duplicate pairs, and the val/test samples with one in train (featx.audit.duplicates); (4) label
suspects from a cross-validated probe and cleanlab (featx.audit.labels); (5) outliers: the
distance (1 - cosine) to the k-th nearest sample, largest first. Each finding is a CSV in `out`,
the summary audit.json, and audit.html shows them with thumbnails (featx.audit.page).
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from featx.runtime.atomic import atomic_write_text
from featx.audit.duplicates import DuplicateSettings, duplicate_pairs, exact_groups, leakage, leakage_by_class
from featx.errors import ConfigError, StoreError
from featx.search.neighbours import self_neighbours
from featx.runtime.progress import progress_bar
from featx.store import FeatureStore

CHECKS = ("duplicates", "labels", "outliers")  # leakage comes with duplicates
SEARCHES = ("auto", "exact", "ivf")
SEP = " | "  # between the several train duplicates of one sample in leakage.csv
PAIR_FIELDS = ["path_a", "split_a", "label_a", "path_b", "split_b", "label_b", "cosine", "hash_bits", "exact"]
OUTLIER_MAD = 4.0  # flagged: distance above median + 4 x 1.4826 MAD (a robust 4 sigma)


@dataclass(frozen=True)
class AuditConfig:
    duplicates: DuplicateSettings = field(default_factory=DuplicateSettings)
    checks: tuple[str, ...] = CHECKS
    k: int = 10  # nearest samples searched per sample (near-duplicate candidates, outliers)
    outlier_k: int = 5  # outlier score: distance to this nearest sample
    top: int = 50  # suspects and outliers shown on the page
    search: str = "auto"  # exact | ivf | auto (exact up to featx.search.neighbours.EXACT_MAX_ROWS)
    pixels: bool = True  # hash the images' pixels (needs the dataset where the store says)
    seed: int = 0

    def __post_init__(self):
        unknown = sorted(set(self.checks) - set(CHECKS))
        if unknown or not self.checks:
            raise ConfigError(f"--checks: unknown {', '.join(unknown) or 'empty list'} (use {', '.join(CHECKS)})")
        if self.search not in SEARCHES:
            raise ConfigError(f"--search {self.search!r}: use one of {', '.join(SEARCHES)}")
        if not 1 <= self.outlier_k <= self.k:
            raise ConfigError(f"--outlier-k {self.outlier_k}: must be between 1 and --k ({self.k})")
        for name in ("threshold", "threshold_without_pixels"):
            value = getattr(self.duplicates, name)
            if not -1.0 <= value <= 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} {value}: a cosine, between -1 and 1")


@dataclass
class AuditResult:
    folder: Path
    summary: dict  # what audit.json holds
    files: dict[str, Path]  # finding -> file


class StoreRows:
    """The written, non-failed rows of a store's clean final features (the backbone's own, without
    the pooled block columns of extract --pool: the audit's thresholds were measured on them), as
    a featx.search.neighbours source."""

    def __init__(self, store: FeatureStore, rows: np.ndarray):
        self.store, self.index = store, rows
        self.rows, self.dim = len(rows), store.final_dim

    def read(self, start: int, stop: int) -> np.ndarray:
        rows = self.index[start:stop]
        if not len(rows):
            return np.zeros((0, self.dim), np.float32)
        block = self.store.read_span(int(rows[0]), int(rows[-1]) + 1)  # one span, then pick
        return np.ascontiguousarray(block[rows - rows[0], :self.dim])

    def take(self, positions: np.ndarray) -> np.ndarray:
        rows = self.index[positions]
        return np.concatenate([self.store.read_clean(rows[i:i + 4096])[:, :self.dim]
                               for i in range(0, len(rows), 4096)]) \
            if len(rows) else np.zeros((0, self.dim), np.float32)


def audit(store: str | Path, out: str | Path, config: AuditConfig = AuditConfig(),
          log=print) -> AuditResult:
    """Audit `store`, writing each finding under `out`; `log` receives one-line notes."""
    times: dict[str, float] = {}
    out = Path(out)
    with FeatureStore(store) as st:
        st.require_complete()
        rows = st.rows()
        if len(rows) < 2:
            raise StoreError(f"{store}: fewer than 2 usable samples, nothing to compare")
        st.check_features()  # degenerate features: one line, not outliers at distance 1.0
        config = _bounded(config, len(rows), log)
        if st.failed:
            log(f"note: {len(st.failed)} samples failed at extraction and are left out")
        labels, splits, paths = st.labels[rows], st.splits[rows], st.paths[rows]
        labelled = bool((labels >= 0).any())
        source = StoreRows(st, rows)
        t = time.perf_counter()
        with progress_bar(len(rows), "neighbours", unit="row") as advance:
            found = self_neighbours(source, config.k, config.search, advance)
        times["neighbours"] = time.perf_counter() - t
        summary = {"store": str(Path(store).resolve()), "backbone": st.attrs["backbone"],
                   "samples": int(len(rows)), "failed_left_out": len(st.failed),
                   "search": found.method, "k": config.k, "classes": st.classes}
        files: dict[str, Path] = {}
        leaked_rows: set[int] = set()
        if "duplicates" in config.checks:
            t = time.perf_counter()
            hashes, pixel_note = _hashes(st, rows, config.pixels, log)
            pairs = duplicate_pairs(source, found, hashes, config.duplicates)
            leaks = leakage(pairs, labels, splits)
            leaked_rows = {leak.row for leak in leaks}
            groups = exact_groups(hashes.sha256) if hashes is not None else []
            summary["duplicates"] = {
                **asdict(config.duplicates), "pixels": pixel_note,
                "exact_groups": len(groups), "exact_pairs": int(pairs.exact.sum()),
                "near_pairs": int((~pairs.exact).sum()),
                "samples_in_a_pair": int(len(np.unique(pairs.ab))) if len(pairs) else 0}
            summary["leakage"] = {split: {
                "samples": int((splits == split).sum()),
                "leaked": sum(1 for leak in leaks if splits[leak.row] == split),
                "conflicting_label": sum(1 for leak in leaks if splits[leak.row] == split and leak.conflicting)}
                for split in ("val", "test")}
            files["duplicates"] = _csv(out / "duplicates.csv", _pair_rows(pairs, paths, splits, labels, st.classes),
                                       PAIR_FIELDS)
            files["leakage"] = _csv(out / "leakage.csv", [{
                "path": paths[leak.row], "split": splits[leak.row], "label": _name(labels[leak.row], st.classes),
                "train_paths": SEP.join(paths[leak.train_rows]),
                "train_labels": SEP.join(_name(labels[r], st.classes) for r in leak.train_rows),
                "best_cosine": round(leak.best_cosine, 4), "conflicting": leak.conflicting} for leak in leaks],
                ["path", "split", "label", "train_paths", "train_labels", "best_cosine", "conflicting"])
            if labelled:
                files["leakage_by_class"] = _csv(out / "leakage_by_class.csv",
                                                 leakage_by_class(leaks, labels, splits, st.classes),
                                                 ["split", "class", "samples", "leaked_same_label",
                                                  "leaked_conflicting_label"])
            times["duplicates"] = time.perf_counter() - t
        if "labels" in config.checks:
            t = time.perf_counter()
            summary["labels"], files["labels"] = _labels(st, source, labels, splits, paths, leaked_rows,
                                                          config, out, log)
            times["labels"] = time.perf_counter() - t
        if "outliers" in config.checks:
            summary["outliers"], files["outliers"] = _outliers(found.sims, config, paths, splits, labels,
                                                              st.classes, out)
        summary["seconds"] = {k: round(v, 2) for k, v in times.items()}
        files["summary"] = out / "audit.json"
        atomic_write_text(files["summary"], json.dumps(summary, indent=2, default=_plain) + "\n")
        from featx.audit.page import write_page

        files["page"] = write_page(out, summary, st.sample_files(rows))
    return AuditResult(out, summary, files)


def _bounded(config: AuditConfig, n: int, log) -> AuditConfig:
    """--k and --outlier-k within the store: each sample has n - 1 others to be near."""
    from dataclasses import replace

    k = min(config.k, n - 1)
    outlier_k = min(config.outlier_k, k)
    if k < config.k or outlier_k < config.outlier_k:
        log(f"note: {n} samples: neighbours searched k={k} (asked {config.k}), outlier score from "
            f"the {outlier_k}-th nearest (asked {config.outlier_k})")
        return replace(config, k=k, outlier_k=outlier_k)
    return config


def _hashes(st: FeatureStore, rows: np.ndarray, pixels: bool, log):
    """File and pixel hashes of the audited rows, or (None, why) when the images are not there.
    A store that keeps each file's sha256 gives exact duplicates even without the images."""
    from featx.audit.pixels import PixelHashes, hash_pixels

    known = st.content_hashes()
    known = [known[r] or None for r in rows] if known is not None else None
    root = Path(st.attrs["dataset_root"])
    if not root.is_dir():
        log(f"note: pixel checks skipped: the dataset folder {root} is not here (moved?); "
            "near-duplicates are judged by features alone")
        none = PixelHashes(known, np.zeros((len(rows), 8), np.uint8), np.zeros(len(rows), bool)) if known else None
        return none, f"skipped: {root} not found"
    paths = list(st.paths[rows])
    with progress_bar(len(paths), "hash images") as advance:
        hashes = hash_pixels(root, paths, known, pixels=pixels, advance=advance)
    if hashes.missing:
        log(f"note: {len(hashes.missing)} images could not be read for pixel checks "
            f"(e.g. {hashes.missing[0][0]}: {hashes.missing[0][1]})")
    if not pixels:
        return hashes, "skipped (pixels off): near-duplicates are judged by features alone"
    return hashes, f"checked {int(hashes.ok.sum())} of {len(paths)} images"


def _labels(st, source, labels, splits, paths, leaked_rows, config, out, log):
    from featx.audit.labels import label_suspects

    fields = ["rank", "path", "split", "given", "predicted", "p_given", "p_predicted"]
    if not (labels >= 0).any():
        log("note: the store has no labels: label checks skipped (duplicates and outliers only)")
        return {"skipped": "no labels"}, _csv(out / "label_issues.csv", [], fields)
    x = source.take(np.arange(source.rows))
    found = label_suspects(x, labels, splits, len(st.classes), leaked_rows, config.seed)
    if found is None:
        one = len(set(labels[(labels >= 0) & (splits == "train")].tolist())) < 2
        why = ("one class only: a probe has nothing to tell apart" if one
               else "too few labelled training samples per class for a cross-validated probe")
        log(f"note: {why}; label checks skipped")
        return {"skipped": why}, _csv(out / "label_issues.csv", [], fields)
    table = [{"rank": i + 1, "path": paths[r], "split": splits[r], "given": st.classes[g],
              "predicted": st.classes[p], "p_given": round(float(pg), 4), "p_predicted": round(float(pp), 4)}
             for i, (r, g, p, pg, pp) in enumerate(zip(found.rows, found.given, found.predicted,
                                                         found.p_given, found.p_predicted))]
    by_split = {s: int((splits[found.rows] == s).sum()) for s in ("train", "val", "test")}
    return ({"suspects": len(found.rows), "by_split": by_split, "probe": found.note,
             "probe_accuracy": found.probe_accuracy, "test_accuracy": found.test_without_leaked},
            _csv(out / "label_issues.csv", table, fields))


def _outliers(sims, config, paths, splits, labels, classes, out):
    distance = 1.0 - sims[:, config.outlier_k - 1].astype(np.float64)
    median = float(np.median(distance))
    mad = float(np.median(np.abs(distance - median))) * 1.4826
    cut = median + OUTLIER_MAD * mad
    order = np.argsort(-distance, kind="stable")
    flagged = int((distance > cut).sum())
    shown = order[:min(max(config.top, flagged), 10_000)]
    table = [{"rank": i + 1, "path": paths[r], "split": splits[r], "label": _name(labels[r], classes),
              "distance": round(float(distance[r]), 4), "flagged": bool(distance[r] > cut)}
             for i, r in enumerate(shown)]
    summary = {"k": config.outlier_k, "median_distance": round(median, 4), "cut": round(cut, 4),
               "flagged": flagged}
    return summary, _csv(out / "outliers.csv", table, ["rank", "path", "split", "label", "distance", "flagged"])


def _pair_rows(pairs, paths, splits, labels, classes) -> list[dict]:
    return [{"path_a": paths[a], "split_a": splits[a], "label_a": _name(labels[a], classes),
             "path_b": paths[b], "split_b": splits[b], "label_b": _name(labels[b], classes),
             "cosine": round(float(c), 4), "hash_bits": int(h), "exact": bool(e)}
            for (a, b), c, h, e in zip(pairs.ab, pairs.cosine, pairs.bits, pairs.exact)]


def _name(label: int, classes: list[str]) -> str:
    return classes[label] if label >= 0 else ""


def _csv(path: Path, rows: list[dict], fields: list[str]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")
