"""`featx export STORE --out DIR`: the clean features leave featx, for tools that read plain files.

    result = export("stores/elpv_efficientnet_lite0_224px_mildx2.h5", "exports/elpv")

The layout is the one embedding-reader and autofaiss read (clip-retrieval writes the same):

    DIR/embeddings/0000.npy     [n_0, D] features in the store's dtype, rows in store order
    DIR/metadata/0000.parquet   row (in the store), path, label (class name), label_index, split
    DIR/index.faiss             cosine search: inner product over the L2-normalised rows; the
                                id of a vector is its position across the shards in order
    DIR/export.json             store, dataset root, backbone, dims, shards, index kind and
                                metric, and what a query needs (QUERY)

Only written, non-failed rows are exported. An export replaces the previous one as a whole: it is
written into DIR.tmp-PID beside DIR, then swapped in (DIR.old-PID removed), so a re-export with
fewer shards or no index never leaves an old shard or index.faiss beside the new export.json. A
DIR that holds anything but a featx export is refused (an export never deletes other files);
what a killed export leaves beside DIR is swept by the next one. Read back without featx:

    x = np.concatenate([np.load(p) for p in sorted(glob("DIR/embeddings/*.npy"))])
    meta = pyarrow.parquet.read_table("DIR/metadata").to_pandas()
    index = faiss.read_index("DIR/index.faiss"); sims, ids = index.search(unit(q), 5)

The shards hold the store's rows as they are; the index holds them L2-normalised, so a query is
divided by its norm first (unit(q) above): a raw row as query scores its own norm, not 1.

The index is exact (IndexFlatIP) up to featx.search.neighbours.EXACT_MAX_ROWS rows; above, an
IVF index of 8-bit scalar-quantised vectors (4 sqrt(N) lists, approximate; set its nprobe).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featx.runtime.atomic import (OUTPUT_MARKER, atomic_write, atomic_write_text, fsync_dir,
                                  make_output_folder, process_alive)
from featx.errors import ConfigError, StoreError
from featx.search.neighbours import EXACT_MAX_ROWS, TRAIN_ROWS, unit
from featx.runtime.progress import progress_bar
from featx.store import FeatureStore

INDEXES = ("auto", "flat", "ivf", "none")
SHARD_ROWS = 100_000  # rows per .npy shard (256 MB of float16 at D = 1280)
# What an export folder holds; anything else in DIR is the user's, and refused.
LAYOUT = ("embeddings", "metadata", "index.faiss", "export.json", OUTPUT_MARKER)
INDEX_METRIC = "inner product of L2-normalised rows (cosine)"
QUERY = ("divide a query by its L2 norm before index.search: the index holds L2-normalised rows, "
         "embeddings/*.npy the store's raw rows")


@dataclass
class ExportResult:
    folder: Path
    rows: int
    shards: int
    index: str  # the FAISS index written ("" for none)
    metric: str = INDEX_METRIC  # what the index scores (export.json's index_metric)


def export(store: str | Path, out: str | Path, shard_rows: int = SHARD_ROWS, index: str = "auto") -> ExportResult:
    """Write the store's clean features as numpy shards + Parquet metadata (+ a FAISS index)."""
    if index not in INDEXES:
        raise ConfigError(f"--index {index!r}: use one of {', '.join(INDEXES)}")
    if shard_rows < 1:
        raise ConfigError(f"--shard-rows {shard_rows}: must be at least 1")
    final = Path(out)
    _check_target(final)
    with FeatureStore(store) as st:
        st.require_complete()
        _sweep(final)
        out = final.with_name(f"{final.name}.tmp-{os.getpid()}")
        try:
            result = _write(st, store, out, shard_rows, index)
            _swap(out, final)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return ExportResult(final, result.rows, result.shards, result.index)


def _check_target(out: Path) -> None:
    """DIR is absent, empty, or a featx export (replaced as a whole): never other files."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    if not out.is_dir():
        return
    other = sorted(p.name for p in out.iterdir() if p.name not in LAYOUT)
    wrong = [f"{name} is {'a file' if (out / name).is_file() else 'a folder'}"
             for name, folder in (("embeddings", True), ("metadata", True), ("index.faiss", False),
                                  ("export.json", False))
             if (out / name).exists() and (out / name).is_dir() != folder]
    if other or wrong:
        what = "; ".join(wrong + ([f"it holds {', '.join(other[:3])}{' ...' if len(other) > 3 else ''}"]
                                  if other else []))
        raise ConfigError(f"--out {out}: not a featx export folder ({what}); an export replaces its "
                          "folder as a whole, so give an empty or new folder")


def _sweep(out: Path) -> None:
    """DIR.tmp-PID / DIR.old-PID folders that a killed export left (their process is gone)."""
    for leftover in out.parent.glob(f"{out.name}.*-*"):
        kind, _, pid = leftover.name[len(out.name) + 1:].partition("-")
        if kind in ("tmp", "old") and pid.isdigit() and not process_alive(int(pid)) and leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


def _swap(staged: Path, out: Path) -> None:
    """Put the staged export at `out`; the previous export (or an empty folder) goes."""
    old = out.with_name(f"{out.name}.old-{os.getpid()}")
    try:
        if out.is_dir():
            os.rename(out, old)
        os.rename(staged, out)
        fsync_dir(out.parent)
    except OSError as exc:
        raise StoreError(f"--out {out}: cannot put the export in place ({exc.strerror or exc})") from None
    shutil.rmtree(old, ignore_errors=True)


def _write(st: FeatureStore, store: str | Path, out: Path, shard_rows: int, index: str) -> ExportResult:
    """The export, written into the staging folder `out`."""
    make_output_folder(out)  # marked (never read as data); its subfolders need no marker of their own
    for sub in ("embeddings", "metadata"):
        (out / sub).mkdir()
    rows = st.rows()
    if index == "auto":
        index = "flat" if len(rows) <= EXACT_MAX_ROWS else "ivf"
    faiss_index = _empty_index(st, rows, index)
    dtype = np.dtype(st.attrs["dtype"])  # the store's own: the shards equal it bit for bit
    shards = 0
    with progress_bar(len(rows), "export", unit="row") as advance:
        for shards, start in enumerate(range(0, len(rows), shard_rows), 1):
            part = rows[start:start + shard_rows]
            x = st.read_span(int(part[0]), int(part[-1]) + 1, dtype=dtype)[part - part[0]]
            name = f"{shards - 1:04d}"
            atomic_write(out / "embeddings" / f"{name}.npy", lambda tmp: _save_npy(tmp, x))
            atomic_write(out / "metadata" / f"{name}.parquet", lambda tmp: _save_parquet(tmp, st, part))
            if faiss_index is not None:
                faiss_index.add(unit(x))
            advance(len(part))
    kind = ""
    if faiss_index is not None:
        import faiss

        atomic_write(out / "index.faiss", lambda tmp: faiss.write_index(faiss_index, str(tmp)))
        kind = index if index == "flat" else f"ivf (IVF{faiss_index.nlist},SQ8, approximate)"
    info = {"store": str(Path(store).resolve()), "dataset_root": st.attrs.get("dataset_root"),
            "backbone": st.attrs["backbone"], "rows": int(len(rows)),
            "dim": st.feature_dim, "final_dim": st.final_dim, "pool": st.pool,
            "tta": st.attrs.get("tta") or None, "store_version": int(st.attrs.get("store_version", 1)),
            "dtype": str(dtype), "shards": shards,
            "index": kind or None, "index_metric": INDEX_METRIC if kind else None,
            "query": QUERY if kind else None, "classes": st.classes}
    atomic_write_text(out / "export.json", json.dumps(info, indent=2) + "\n")
    return ExportResult(out, int(len(rows)), shards, kind)


def _empty_index(st: FeatureStore, rows: np.ndarray, kind: str):
    if kind == "none" or not len(rows):
        return None
    import faiss

    dim = st.feature_dim
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    nlist = int(max(1, min(4 * np.sqrt(len(rows)), len(rows) // 39)))
    index = faiss.index_factory(dim, f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
    span = max(1, TRAIN_ROWS // 64)  # 64 evenly spaced spans of rows: cheap reads of a chunked file
    starts = np.unique(np.linspace(0, max(0, len(rows) - span), 64).astype(np.int64))
    sample = [st.read_span(int(rows[a]), int(rows[min(a + span, len(rows)) - 1]) + 1) for a in starts]
    index.train(unit(np.concatenate(sample)))
    return index


def _save_npy(tmp: Path, x: np.ndarray) -> None:
    with open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to the temporary name
        np.save(f, x)


def _save_parquet(tmp: Path, st: FeatureStore, part: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    labels = st.labels[part]
    names = [st.classes[i] if i >= 0 else None for i in labels]
    table = pa.table({"row": pa.array(part, pa.int64()), "path": pa.array(list(st.paths[part]), pa.string()),
                      "label": pa.array(names, pa.string()), "label_index": pa.array(labels, pa.int64()),
                      "split": pa.array(list(st.splits[part]), pa.string())})
    pq.write_table(table, tmp)
