"""`featx search STORE IMAGES...`: what the backbone thinks is similar to these images.

    found = search("stores/elpv_efficientnet_lite0_224px_mildx2.h5", ["cell.png"], k=5)
    for hit in found.hits: print(hit.query, hit.rank, hit.path, hit.similarity)

The queries are embedded with the store's own backbone, weights (checked by sha256) and clean
preprocessing (featx.heads.backbone.HeadEmbedder, as `featx predict` does), then compared with
every stored sample by cosine similarity, exactly, one block of the store at a time.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from featx.runtime.atomic import atomic_write_text
from featx.errors import FeatxError
from featx.search.neighbours import nearest_streamed
from featx.runtime.progress import progress_bar
from featx.store import FeatureStore, SampleFiles


@dataclass
class Hit:
    query: str
    rank: int  # 1 = most similar
    path: str  # relative to the dataset root
    label: str  # class name, "" when unlabeled
    split: str
    similarity: float  # cosine of the clean features


@dataclass
class SearchResult:
    hits: list[Hit]
    failed: list[tuple[str, str]] = field(default_factory=list)  # queries that did not decode
    dataset_root: Path = Path(".")
    files: SampleFiles | None = None  # the hits' files, each checked before it is shown


def store_meta(attrs: dict) -> dict:
    """What HeadEmbedder needs to rebuild the store's backbone, from the store's attributes."""
    return {"backbone": attrs["backbone"], "backbone_seed": attrs["seed"], "weights": attrs["weights"],
            "weights_sha256": attrs["weights_sha256"], "preprocess": attrs["transform"]["clean"],
            # as the store averaged them (--tta); search compares final features only (StoreRows)
            "pool": None, "tta": attrs.get("tta") or None}


def search(store: str | Path, images: Sequence[str | os.PathLike], k: int = 5, device: str = "auto",
           batch_size: int = 64) -> SearchResult:
    """The k stored samples nearest to each query image (files or folders of images)."""
    from featx.audit.run import StoreRows
    from featx.heads.backbone import HeadEmbedder

    with FeatureStore(store) as st:
        st.require_complete()
        st.check_features()  # degenerate features would answer every query with one similarity
        attrs = st.attrs
        embedder = HeadEmbedder(store_meta(attrs))
        pre = json.loads(json.dumps(embedder.backbone().preprocess.to_dict()))  # tuples as lists
        if pre != attrs["transform"]["clean"]:
            raise FeatxError(f"{store}: this featx preprocesses {attrs['backbone']} as {pre}, the store "
                             f"was made with {attrs['transform']['clean']}; re-extract the store")
        embedded = embedder(images, device=device, batch_size=batch_size)
        if not embedded.paths:
            path, reason = embedded.failed[0] if embedded.failed else (str(images[0]), "no images")
            raise FeatxError(f"{path}: cannot search with it: {reason}")
        rows = st.rows()
        with progress_bar(len(rows), "search", unit="row") as advance:
            found = nearest_streamed(embedded.features, StoreRows(st, rows), k, advance)
        hits = [Hit(q, r + 1, st.paths[rows[i]], st.classes[st.labels[rows[i]]] if st.labels[rows[i]] >= 0 else "",
                    st.splits[rows[i]], float(s))
                for q, ids, sims in zip(embedded.paths, found.ids, found.sims)
                for r, (i, s) in enumerate(zip(ids, sims)) if i >= 0]
        files = st.sample_files(rows[sorted({int(i) for ids in found.ids for i in ids if i >= 0})])
    return SearchResult(hits, embedded.failed, Path(attrs["dataset_root"]), files)


def write_gallery(result: SearchResult, out: str | Path) -> Path:
    """An HTML page: each query beside its nearest stored samples (thumbnails)."""
    from featx.audit.page import figure, page, thumbnail

    rows = []
    files = result.files or SampleFiles(result.dataset_root, {})
    for query in dict.fromkeys(h.query for h in result.hits):
        cells = "".join(figure(files, h.path, f"#{h.rank} {h.similarity:.3f} {h.split} {h.label}")
                        for h in result.hits if h.query == query)
        rows.append(f"<tr><th>{thumbnail(Path(query))}<br>{html.escape(Path(query).name)}</th><td>{cells}</td></tr>")
    body = ["<table>" + "".join(rows) + "</table>"]
    if result.failed:
        body.append("<p>Not searched: " + "; ".join(html.escape(f"{p}: {r}") for p, r in result.failed) + "</p>")
    return atomic_write_text(out, page("featx search", body))
