"""`featx map STORE --out map.html`: every sample as a point, near ones alike to the backbone.

    result = featx.map_store("stores/cells.h5", "map.html", MapConfig(head="heads/cells.linear"))
    result.coords          # [rows, 2], every usable row (also written to map.csv)

Colours switch in the page between class, split, and with a head its predicted class and
correct/wrong, with an audit folder (featx audit --out DIR) its findings: leaked, label suspect,
near-duplicate, outlier. Coordinates come from featx.explore.coords (PCA then UMAP, cached per
content). Above `max_points` rows the page shows a stratified sample (by class, seeded) while
every row keeps its coordinates in the CSV beside the page.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featx.audit.run import StoreRows
from featx.errors import ConfigError
from featx.explore import coords as c
from featx.explore.page import render
from featx.runtime.atomic import atomic_write_text
from featx.store import FeatureStore

THUMB_THREADS = 8  # at most; one per core below that
MAX_THUMBNAILS = 5_000  # 40 px JPEGs are ~1 kB of base64 each: ELPV's 2,624 stay under 5 MB
# (finding, audit CSV, how a row of it is flagged); the first that flags a sample names it
FINDINGS = (("leaked", "leakage.csv"), ("label suspect", "label_issues.csv"),
            ("near-duplicate", "duplicates.csv"), ("outlier", "outliers.csv"))


@dataclass(frozen=True)
class MapConfig:
    head: str | Path | None = None  # colour by its predictions and their correctness
    audit: str | Path | None = None  # a `featx audit --out` folder: colour by its findings
    projection: c.Projection = field(default_factory=c.Projection)
    max_points: int = 50_000  # shown on the page; above it a stratified sample
    thumbnails: bool = True
    thumb_px: int = 40

    def __post_init__(self):
        if self.projection.method not in c.METHODS:
            raise ConfigError(f"--method {self.projection.method!r}: use one of {', '.join(c.METHODS)}")
        if self.max_points < 1:
            raise ConfigError(f"--max-points {self.max_points}: must be at least 1")
        if self.audit is not None and not Path(self.audit).is_dir():
            raise ConfigError(f"--audit {self.audit}: not a folder (give the --out folder of `featx audit`)")


@dataclass
class MapResult:
    page: Path
    table: Path  # CSV: every row's path, x, y, label, split
    coords: np.ndarray  # [rows, 2]
    paths: list[str]
    shown: int
    method: str
    cached: bool
    seconds: float


def map_store(store: str | Path, out: str | Path, config: MapConfig = MapConfig(), log=print) -> MapResult:
    """Write the map page of `store` to `out` (and its coordinates to `out` with .csv)."""
    start = time.perf_counter()
    out = Path(out)
    with FeatureStore(store) as st:
        st.require_complete()
        rows = st.rows()
        if not len(rows):
            raise ConfigError(f"{store}: no usable samples to map")
        source = StoreRows(st, rows)
        xy, method, cached = c.coordinates(st, rows, lambda: source.take(np.arange(len(rows))),
                                           config.projection, log)
        paths = st.paths_of(rows)
        labels, splits = st.labels[rows], st.splits[rows]
        names = [st.class_names[y] if y >= 0 else "" for y in labels]  # as heads name them
        points = [{"path": p, "x": round(float(x), 4), "y": round(float(y), 4), "label": n, "split": str(s)}
                  for p, (x, y), n, s in zip(paths, xy, names, splits)]
        colour_by, notes = ["label", "split"], []
        if config.head is not None:
            colour_by += _add_predictions(points, config.head, store, names)
        if config.audit is not None:
            colour_by += _add_findings(points, Path(config.audit), notes)
        shown = stratified(labels, config.max_points, config.projection.seed)
        if len(shown) < len(rows):
            notes.append(f"{len(shown):,} of {len(rows):,} samples shown (a stratified sample by class); "
                         f"every sample's coordinates are in {out.with_suffix('.csv').name}")
        root = Path(st.attrs["dataset_root"])
        if config.thumbnails:
            _add_thumbnails(st, points, shown, rows, root, config, notes, log)
        meta = {"title": f"featx map: {Path(store).name}", "store": str(Path(store).resolve()),
                "backbone": st.attrs.get("backbone"), "method": method, "rows": int(len(rows)),
                "shown": int(len(shown)), "colour_by": colour_by, "notes": notes}
    table = _write_table(out.with_suffix(".csv"), points)
    atomic_write_text(out, render(meta, [points[i] for i in shown]))
    return MapResult(out, table, xy, list(paths), int(len(shown)), method, cached, time.perf_counter() - start)


def stratified(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Positions of at most `limit` rows, each class (and the unlabelled) in its share, at least
    one per class; all rows when they fit. Sorted."""
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    groups, sizes = np.unique(labels, return_counts=True)
    exact = limit * sizes / len(labels)
    take = np.maximum(np.floor(exact).astype(np.int64), 1)
    for g in np.argsort(-(exact - np.floor(exact)), kind="stable"):  # largest remainders first
        if take.sum() >= limit:
            break
        take[g] += take[g] < sizes[g]
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == y), size=min(t, s), replace=False)
                                   for y, t, s in zip(groups, take, sizes)]))
    return np.sort(rng.choice(keep, size=limit, replace=False)) if len(keep) > limit else keep


def _add_predictions(points: list[dict], head_path, store, names: list[str]) -> list[str]:
    from featx.heads.predict import predict

    scored = predict(head_path, [store])
    at = {p: i for i, p in enumerate(scored.paths)}
    for point, truth in zip(points, names):
        i = at.get(point["path"])
        if i is None:
            continue
        j = int(np.argmax(scored.scores[i]))
        point["predicted"] = scored.class_names[j]
        point["probability"] = round(float(scored.scores[i, j]), 3)
        if truth:
            point["correct"] = "correct" if scored.class_names[j] == truth else "wrong"
    return ["predicted", "correct"]


def _add_findings(points: list[dict], folder: Path, notes: list[str]) -> list[str]:
    flagged: dict[str, str] = {}
    for finding, name in FINDINGS:
        path = folder / name
        if not path.is_file():
            continue
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if name == "outliers.csv" and row.get("flagged") != "True":
                    continue
                for key in ("path", "path_a", "path_b"):
                    if row.get(key):
                        flagged.setdefault(row[key], finding)
    if not flagged and not any((folder / name).is_file() for _, name in FINDINGS):
        notes.append(f"{folder}: no audit CSVs found; run `featx audit STORE --out {folder}`")
    for point in points:
        point["finding"] = flagged.get(point["path"], "")
    return ["finding"]


def _add_thumbnails(st, points, shown, rows, root: Path, config: MapConfig, notes, log) -> None:
    if not root.is_dir():
        notes.append(f"no thumbnails: the dataset folder {root} is not here")
        return
    chosen = shown if len(shown) <= MAX_THUMBNAILS else np.sort(
        np.random.default_rng(config.projection.seed).choice(shown, MAX_THUMBNAILS, replace=False))
    if len(chosen) < len(shown):
        notes.append(f"thumbnails for {len(chosen):,} of the {len(shown):,} points shown")
    path = c.cache_path(Path(st.path))
    cached = c.read_cache(path)
    key = c.content_key(st, rows, config.projection) + f"|thumbs{config.thumb_px}|" + hashlib.sha256(chosen.astype(np.int64).tobytes()).hexdigest()
    if cached.get("thumb_key") is not None and str(cached["thumb_key"]) == key:
        blob, offsets = cached["thumb_blob"].tobytes(), cached["thumb_offsets"]
        thumbs = [blob[offsets[i]:offsets[i + 1]].decode() for i in range(len(chosen))]
    else:
        thumbs = _thumbnails([root / points[i]["path"] for i in chosen], config.thumb_px)
        encoded = [t.encode() for t in thumbs]
        offsets = np.cumsum([0] + [len(t) for t in encoded]).astype(np.int64)
        c.write_cache(path, {**cached, "thumb_key": np.array(key),
                             "thumb_blob": np.frombuffer(b"".join(encoded) or b"\0", np.uint8),
                             "thumb_offsets": offsets}, log)
    for i, thumb in zip(chosen, thumbs):
        if thumb:
            points[i]["thumb"] = thumb


def _thumbnails(paths: list[Path], px: int) -> list[str]:
    """_thumbnail of each path, in order, on a thread per core: decoding is most of a cold map's
    time (13 of 18 s on ELPV, 2-core box), and Pillow's decoders release the GIL."""
    workers = min(THUMB_THREADS, os.cpu_count() or 1)
    if workers < 2 or len(paths) < 2:
        return [_thumbnail(p, px) for p in paths]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda p: _thumbnail(p, px), paths, chunksize=64))


def _thumbnail(path: Path, px: int) -> str:
    """A small JPEG data URI, or "" when the file cannot be read (the point keeps its fields)."""
    from featx.data.images import load_image
    from featx.errors import ImageError

    try:
        img = load_image(path)
    except ImageError:
        return ""
    img.thumbnail((px, px))
    if img.mode == "RGB" and _is_grey(img):
        img = img.convert("L")  # grey cells (ELPV) at a third of the bytes
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _is_grey(img) -> bool:
    a = np.asarray(img, np.int16)
    return bool(np.abs(a[..., 0] - a[..., 1]).max() <= 2 and np.abs(a[..., 1] - a[..., 2]).max() <= 2)


def _write_table(path: Path, points: list[dict]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "x", "y", "label", "split"])
    writer.writerows([p["path"], p["x"], p["y"], p["label"], p["split"]] for p in points)
    return atomic_write_text(path, buffer.getvalue())
