"""The 2-D map of each store (featx.explore.map_store) in the report, and beside an audit page.

    sections = report_maps(results, folder)      # one per store the heads were trained on
    audit_map("runs/audit", "stores/cells.h5")    # map.html beside audit.html (the page shows it)

The report embeds each map page whole (an iframe's srcdoc): the report stays one file, and the
map's own script and styles stay apart from the report's. Coordinates come from explore's cache
(per store content), so a second report draws the map in seconds. Without umap-learn no map is
drawn: the section says what to install, and the report is written all the same.

featx.audit is a lower layer than explore: its page shows a `map.html` written beside it (an
<object> with a fallback line when there is none), and audit_map here writes that file.
"""

from __future__ import annotations

import importlib.util
import tempfile
from dataclasses import dataclass
from pathlib import Path

from featx.errors import FeatxError
from featx.report.plots import label

INSTALL = "The map of the features needs umap-learn: pip install 'featx[explore]'"


@dataclass(frozen=True)
class MapSection:
    store: Path
    head: str | None  # the result whose predictions colour the map
    page: str | None  # the map's self-contained HTML; None when it could not be drawn
    note: str  # how the map was made, or why there is none


def umap_installed() -> bool:
    return importlib.util.find_spec("umap") is not None


def report_maps(results: list[dict], folder: Path, log=lambda line: None) -> list[MapSection]:
    """One map per store the results were trained on, coloured by the best (test top-1) head
    on it and, with an audit of that store beside the heads, by its findings."""
    from featx.audit.page import find_audits
    from featx.explore import MapConfig, map_store

    audits = {_resolved(s.get("store")): path.parent for path, s in find_audits(folder)}
    sections = []
    for store, meta in _best_per_store(results).items():
        if not store.is_file():
            sections.append(MapSection(store, label(meta), None, f"{store}: the store is not here"))
            continue
        try:
            with tempfile.TemporaryDirectory(prefix="featx-map-") as tmp:
                made = map_store(store, Path(tmp) / "map.html",
                                 MapConfig(head=meta["_path"], audit=audits.get(_resolved(str(store)))), log=log)
                page = made.page.read_text(encoding="utf-8")
        except FeatxError as exc:  # a store that changed shape, a head that no longer loads
            sections.append(MapSection(store, label(meta), None, str(exc).splitlines()[0]))
            continue
        sections.append(MapSection(store, label(meta), page, f"{made.method}; {made.shown:,} points"
                                   + (" (coordinates from the cache)" if made.cached else "")))
    return sections


def _best_per_store(results: list[dict]) -> dict[Path, dict]:
    best: dict[Path, dict] = {}
    for m in results:
        if not isinstance(m.get("store"), str):
            continue  # a fine-tuned head: no store of its own
        store = Path(m["store"])
        if store not in best or _top1(m) > _top1(best[store]):
            best[store] = m
    return best


def _top1(meta: dict) -> float:
    value = ((meta.get("metrics") or {}).get("test") or {}).get("top1")
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else float("-inf")


def _resolved(path) -> Path | None:
    return Path(path).resolve() if isinstance(path, str) else None


def audit_map(folder: str | Path, store: str | Path, log=print) -> Path | None:
    """Write map.html (coloured by the audit's findings) beside the audit page in `folder`; the
    page shows it. None, with a one-line note, without umap-learn or when the map fails."""
    from featx.audit.page import MAP_FILE
    from featx.explore import MapConfig, map_store

    if not umap_installed():
        log(f"note: no map beside the audit page. {INSTALL}")
        return None
    try:
        return map_store(store, Path(folder) / MAP_FILE, MapConfig(audit=folder), log=log).page
    except FeatxError as exc:
        log(f"note: no map beside the audit page: {str(exc).splitlines()[0]}")
        return None


TITLE = "Map of the features"


def maps_html(results: list[dict], folder: Path, log=lambda line: None) -> str:
    """The report's map section: per store, a line saying how it was drawn, and the map page."""
    import html

    e = html.escape
    if not umap_installed():
        return f"<h2>{TITLE}</h2><p id='map-note'>{e(INSTALL)}</p>"
    parts = [f"<h2>{TITLE}</h2>"]
    for s in report_maps(results, folder, log):
        parts.append(f"<h3>{e(s.store.name)}</h3><p class='legend'>Coloured by class, split, and the "
                     f"predictions of {e(s.head)} (switch in the map): {e(s.note)}</p>")
        if s.page:  # srcdoc: the page whole, its script and styles kept apart from the report's
            parts.append(f"<iframe class='map' title='map of {e(s.store.name)}' "
                         f"srcdoc=\"{e(s.page, quote=True)}\"></iframe>")
    return "".join(parts) if len(parts) > 1 else ""


def maps_markdown(results: list[dict], folder: Path, assets: Path, log=lambda line: None) -> list[str]:
    """The Markdown report's map section: each map page written into `assets`, linked."""
    if not umap_installed():
        return ["", f"## {TITLE}", "", INSTALL]
    lines = []
    for i, s in enumerate(report_maps(results, folder, log), 1):
        lines += ["", f"### {s.store.name}", "", f"Coloured by class, split, and the predictions of {s.head}: "
                  f"{s.note}."]
        if s.page:
            (assets / f"map{i:02d}.html").write_text(s.page, encoding="utf-8")
            lines += ["", f"[open the map]({assets.name}/map{i:02d}.html)"]
    return ["", f"## {TITLE}"] + lines if lines else []
