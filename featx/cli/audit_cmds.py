"""featx audit | search | export: what the features say about the data, and features leaving featx."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from featx.cli import options as o
from featx.cli.core import err, next_step, out, plural
from featx.cli.outputs import out_file, out_folder

CHECKS = ("duplicates", "labels", "outliers")  # featx.audit.CHECKS
SEARCHES = ("auto", "exact", "ivf")  # featx.audit.run.SEARCHES
INDEXES = ("auto", "flat", "ivf", "none")  # featx.store.export.INDEXES

AuditOut = Annotated[Path, typer.Option("--out", metavar="DIR", help="Folder for the findings (CSV, "
                                        "audit.json, audit.html).")]
Checks = Annotated[list[str], typer.Option("--checks", metavar="|".join(CHECKS), callback=o.one_of(*CHECKS),
                                           help="What to look for (repeat; leakage comes with duplicates).")]
Threshold = Annotated[float, typer.Option("--threshold", metavar="COS", callback=o.at_least(-1.0),
                                          help="Near-duplicates: cosine of clean features at least this, "
                                          "and pixel hashes within --hash-bits.")]
HashBits = Annotated[int, typer.Option("--hash-bits", metavar="N", min=0, max=64,
                                       help="Near-duplicates: most bits of 64 their pixel hashes may differ.")]
ThresholdNoPixels = Annotated[float, typer.Option(
    "--threshold-without-pixels", metavar="COS", callback=o.at_least(-1.0),
    help="Near-duplicates by cosine alone, when the images cannot be read (or --no-pixels).")]
Pixels = Annotated[bool, typer.Option("--pixels/--no-pixels", help="Hash the images' pixels (needs the "
                                      "dataset where the store says).")]
K = Annotated[int, typer.Option("--k", metavar="N", min=1, help="Nearest samples searched per sample.")]
OutlierK = Annotated[int, typer.Option("--outlier-k", metavar="N", min=1,
                                       help="Outlier score: distance to the N-th nearest sample.")]
Search = Annotated[str, typer.Option("--search", metavar="|".join(SEARCHES), callback=o.one_of(*SEARCHES),
                                     help="Neighbour search: exact, IVF index, or auto (exact up to 50,000 rows).")]
Images = Annotated[list[str], typer.Argument(metavar="IMAGES...", help="Query images or folders of images.",
                                             show_default=False)]
TopK = Annotated[int, typer.Option("--top-k", metavar="K", min=1, help="Stored samples listed per query.")]
GalleryOut = Annotated[Optional[Path], typer.Option("--out", metavar="FILE", show_default="none: print only",
                                                    help="Also write an HTML gallery to FILE.")]
ExportOut = Annotated[Path, typer.Option("--out", metavar="DIR", help="Folder for embeddings/, metadata/, "
                                         "index.faiss.")]
Index = Annotated[str, typer.Option("--index", metavar="|".join(INDEXES), callback=o.one_of(*INDEXES),
                                    help="FAISS index: flat (exact), ivf, auto (flat up to 50,000 rows), none.")]
ShardRows = Annotated[int, typer.Option("--shard-rows", metavar="N", min=1, help="Rows per .npy shard.")]


def audit(store: o.Store, out_dir: AuditOut = Path("audit"), checks: Checks = list(CHECKS),
          threshold: Threshold = 0.85, hash_bits: HashBits = 4,
          threshold_without_pixels: ThresholdNoPixels = 0.97, pixels: Pixels = True, k: K = 10,
          outlier_k: OutlierK = 5, search: Search = "auto", seed: o.Seed = 0, maps: o.Map = True,
          config: o.Config = None) -> None:
    """Duplicates, train/test leakage, label suspects and outliers in STORE, as CSVs and a page.

    A CSV per finding, audit.json and audit.html; `featx report` shows the audit when its folder sits
    beside the heads."""
    from featx.audit import AuditConfig, DuplicateSettings, audit as run_audit
    from featx.audit.page import summary_lines

    out_folder(out_dir)
    settings = AuditConfig(DuplicateSettings(threshold, hash_bits, threshold_without_pixels),
                           tuple(dict.fromkeys(checks)), k, outlier_k, search=search, pixels=pixels, seed=seed)
    result = run_audit(store, out_dir, settings, log=lambda line: err.print(line, markup=False, highlight=False))
    if maps:
        from featx.report.maps import audit_map  # map.html beside audit.html: the page shows it

        audit_map(out_dir, store, log=lambda line: err.print(line, markup=False, highlight=False))
    for line in summary_lines(result.summary):
        out.print(line, markup=False, highlight=False)
    out.print(f"audit written to {result.files['page']}", markup=False, highlight=False)
    if maps:
        next_step("featx select --budget 50", store)  # which images to label next
    else:
        next_step(f"featx map --audit {out_dir}", store)  # the findings on the map of the data


def search(store: o.Store, images: Images, top_k: TopK = 5, out_path: GalleryOut = None,
           device: o.Device = "auto", batch_size: o.BatchSize = 64) -> None:
    """The stored samples nearest to each query image, by the store's own backbone and preprocessing."""
    from featx.audit.search import search as run_search, write_gallery

    if out_path is not None:
        out_file(out_path, example="search.html")
    result = run_search(store, images, top_k, device, batch_size)
    for path, reason in result.failed:
        err.print(f"note: skipped {path}: {reason}", markup=False, highlight=False)
    for hit in result.hits:
        out.print(f"{hit.query}\t{hit.rank}\t{hit.similarity:.4f}\t{hit.split}\t{hit.label}\t{hit.path}",
                  markup=False, highlight=False)
    if out_path is not None:
        out.print(f"gallery written to {write_gallery(result, out_path)}", markup=False, highlight=False)


def export(store: o.Store, out_dir: ExportOut = Path("export"), index: Index = "auto",
           shard_rows: ShardRows = 100_000) -> None:
    """STORE's clean features as numpy shards, Parquet metadata and a FAISS index.

    embedding-reader, autofaiss and clip-retrieval read this layout."""
    from featx.store.export import export as run_export

    out_folder(out_dir)
    result = run_export(store, out_dir, shard_rows, index)
    index = f", FAISS index {result.index}" if result.index else ""
    out.print(f"exported {result.rows} rows in {plural(result.shards, 'shard')}{index}: {result.folder}",
              markup=False, highlight=False)
    if result.index:  # a raw row as query scores its norm, not 1: say what the index expects
        out.print(f"note: the index scores the {result.metric}: divide a query by its L2 norm first; "
                  "embeddings/*.npy hold the raw rows (export.json says so too)",
                  markup=False, highlight=False, soft_wrap=False)
