"""The report itself: the comparison table, the plots, the worst errors; HTML or Markdown.

    write_report("runs/compare", "runs/compare/report.html")      # self-contained HTML
    write_report("runs/compare", "runs/compare/report.md", "md")  # Markdown + PNGs beside it

What it reads comes from featx/report/results.py (damaged files skipped, each with its reason,
listed under "Skipped files"); backbones that failed (`compare` records them) are listed with
their reasons, and with failures the report is written even when no head result exists.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from featx.report import plots
from featx.runtime.atomic import atomic_write_text, make_output_folder
from featx.errors import FeatxError
from featx.evaluation.figures import lr_find_png
from featx.report.calibration import calibration_section
from featx.report.results import Results, read_results
from featx.report.settings import FORMATS
from featx.report.ties import HOW, number, split_metrics, standings

WORST_IN_GALLERY = 8


@dataclass(frozen=True)
class Column:
    title: str
    value: Callable[[dict], float | str | None]
    metric: str | None = None  # a test metric: shown with its interval and marked against the best
    fmt: str = "{:.3f}"


def _test(meta: dict, key: str):
    return split_metrics(meta).get(key)


def _extraction(meta: dict, key: str):
    return (meta.get("extraction") or {}).get(key)


def _metric(key: str) -> Callable[[dict], float | None]:
    return lambda m: _test(m, key)


def _head_label(meta: dict) -> str:
    """The kind, and how it differs from plain: selected by k-fold CV, pooled block, TTA."""
    extras = [f"+{meta['pool']}" if meta.get("pool") else "", f"tta {meta['tta']}" if meta.get("tta") else "",
              "cv" if isinstance(meta.get("selection"), dict) and meta["selection"].get("method") == "cv" else ""]
    extras = [e for e in extras if e]
    return f"{meta['kind']} ({', '.join(extras)})" if extras else str(meta["kind"])


COLUMNS = [
    Column("backbone", lambda m: m["backbone"], fmt="{}"),
    Column("dim", lambda m: m.get("feature_dim"), fmt="{}"),
    Column("params", lambda m: (_extraction(m, "backbone_params") or 0) / 1e6 or None, fmt="{:.1f}M"),
    Column("extract img/s", lambda m: _extraction(m, "images_per_second"), fmt="{:.1f}"),
    Column("device", lambda m: " ".join(filter(None, [_extraction(m, "device"), _extraction(m, "engine")])),
           fmt="{}"),
    Column("head", lambda m: _head_label(m), fmt="{}"),
    Column("top-1", _metric("top1"), "top1"),
    Column("top-5", _metric("top5"), "top5"),
    Column("bal. acc", _metric("balanced_accuracy"), "balanced_accuracy"),
    Column("macro-F1", _metric("macro_f1"), "macro_f1"),
    Column("NLL", _metric("nll"), "nll"),
    Column("ECE", _metric("ece"), "ece"),
    Column("train s", lambda m: m.get("seconds"), fmt="{:.1f}"),
]
NO_INTERVAL = "(no CI)"
SUFFIX = {"best": " (best)", "tied": " (tie)", "unpaired": " †"}
LEGEND = ("(best): the best value of the column; (tie): tied with the best; unmarked: significantly worse "
          "than the best; †: not compared (other test images, or a result saved without per-image "
          f"predictions); {NO_INTERVAL}: a result saved without intervals.")


def metric_cell(value: float, bounds: tuple[float, float] | None, fmt: str = "{:.3f}") -> str:
    """'0.774 [0.742, 0.806]', or '0.774 (no CI)' for a result saved without intervals."""
    text = fmt.format(value)
    return f"{text} [{fmt.format(bounds[0])}, {fmt.format(bounds[1])}]" if bounds else f"{text} {NO_INTERVAL}"


def table(results: list[dict]) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """Headers, formatted cells (metrics as value [95% interval]), and each cell's mark:
    "best", "tied" (with the best, paired test), "worse", "unpaired" (not compared) or ""."""
    ranked = standings(results, tuple(c.metric for c in COLUMNS if c.metric))
    cells, marks = [], []
    for meta, standing in zip(results, ranked):
        row, row_marks = [], []
        for column in COLUMNS:
            value = column.value(meta)
            if column.metric and number(value) is not None:
                s = standing[column.metric]
                row.append(metric_cell(s.value, s.interval, column.fmt))
                row_marks.append(s.mark)
            else:
                row.append("-" if value is None or value == "" else column.fmt.format(value))
                row_marks.append("")
        cells.append(row)
        marks.append(row_marks)
    return [c.title for c in COLUMNS], cells, marks


def ties_note(marks: list[list[str]]) -> str:
    """One sentence on how the table is marked (which test, which level)."""
    if len(marks) == 1:
        return ("Metrics on the test split with 95% bootstrap intervals over the test images. One result: "
                "with more heads or backbones here, the table marks the best value of each column and "
                "every result tied with it.")
    if not any("tied" in row or "worse" in row for row in marks):
        return ("Metrics on the test split with 95% bootstrap intervals over the test images; no two "
                "results here share their test images' predictions, so none are compared.")
    return ("Metrics on the test split with 95% bootstrap intervals over the test images. Per column, "
            f"the best value and every result tied with it are marked: {HOW} (alpha 0.05).")


def _sections(results: list[dict], curves: list) -> list[tuple[str, list[tuple[str, bytes]]]]:
    """(section title, [(caption, PNG bytes)]) in report order, empty ones dropped."""
    def one(caption, png):
        return [(caption, png)] if png else []

    sections = [
        ("Accuracy vs extraction throughput", one("", plots.accuracy_vs_throughput(results))),
        ("Per-class accuracy vs training images", one("", plots.per_class_vs_train_count(results))),
        ("Confusion matrices (test)", [("", png) for m in results  # titled inside the plot
                                       if (png := plots.confusion(m))]),
        ("Training curves", one("", plots.training_curves(results))),
        ("Learning-rate finder", [(name, lr_find_png(lrs, losses)) for name, lrs, losses in curves]),
        ("Reliability", one("", plots.reliability(results))),
    ]
    return [(title, images) for title, images in sections if images]


def _gallery(results: list[dict]) -> list[tuple[str, list[dict]]]:
    """Per result, its worst test errors with a thumbnail (JPEG bytes) when the file is there."""
    out = []
    for m in results:
        worst = (((m.get("metrics") or {}).get("test") or {}).get("worst") or [])[:WORST_IN_GALLERY]
        items = []
        for w in worst:
            if not w.get("path"):
                continue
            full = Path(m.get("dataset_root") or "") / w["path"]  # None is as missing (SIDECAR)
            items.append({**w, "thumbnail": plots.thumbnail_jpeg(full)})
        if items:
            out.append((plots.label(m), items))
    return out


def write_report(folder: str | Path, out: str | Path, fmt: str = "html",
                 title: str = "featx backbone comparison",
                 failed: Sequence[tuple[str, str]] = (), found: Results | None = None,
                 extra: Sequence[tuple[str, str, list[str], list[list[str]]]] = (),
                 maps: bool = False) -> Path:
    """Write the report of every head result under `folder` to `out` (html or md).

    Args:
        failed: (backbone, reason) of backbones that produced no result; listed in the report.
            With failures, a folder without results still gives a report (naming them).
        found: `read_results(folder)` when the caller has read it already (to print what
            was skipped); the report lists skipped files too.
        extra: more tables after the comparison, each (title, note, headers, rows) (compare
            --splits adds its repeated-splits table).
        maps: end with the 2-D map of each store the heads were trained on (featx.explore,
            umap-learn; coordinates cached per store). `featx report` does by default.
    """
    folder, out = Path(folder), Path(out)
    if fmt not in FORMATS:
        raise FeatxError(f"report format must be {' or '.join(FORMATS)}, got {fmt!r}")
    assets = out.with_name(out.stem + "_files")
    if fmt == "md" and assets.exists() and not assets.is_dir():
        raise FeatxError(f"{assets}: exists and is not a folder (the Markdown report's images go there)")
    found = found or read_results(folder, required=not failed)
    calibrated = calibration_section(found.heads)  # after the comparison, before `extra`
    extra = ([calibrated] if calibrated else []) + list(extra)
    make_output_folder(out.parent)
    render = _render_html if fmt == "html" else _render_markdown
    render(found, folder, out, title, list(failed), list(extra), maps)
    return out


# --- HTML: one self-contained file, images as data URIs -------------------------------------------

CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1320px}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 6px;text-align:right}
th{background:#f3f3f3;vertical-align:bottom}td.text{text-align:left}td.best{background:#b9e8ad;font-weight:bold}
td.tied{background:#e3f6dd;font-weight:bold}td.unpaired{color:#777}p.legend{font-size:0.9em;color:#444}
td{white-space:nowrap}td.text{white-space:normal;min-width:6em}span.ci{font-size:0.8em;color:#555;font-weight:normal}
span.mark{font-size:0.8em}div.wide{max-width:100%;overflow-x:auto}
figure{display:inline-block;margin:0.5em;vertical-align:top}figcaption{font-size:0.85em;max-width:240px}
img.plot{max-width:100%}.gallery figure{width:130px}.gallery figcaption{max-width:130px;overflow-wrap:anywhere}
table.plain td{white-space:normal}table.plain td:first-child{text-align:left}iframe.map{width:100%;height:760px;border:1px solid #ccc}"""


def _data_uri(png: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(png).decode()}"


def _html_cell(cell: str, mark: str) -> str:
    """The value, its interval in small grey below it, and the mark."""
    value, _, rest = cell.partition(" ")  # the mark beside the value: the interval line stays short
    return (html.escape(value) + (f" <span class='mark'>{html.escape(SUFFIX[mark].strip())}</span>" if mark in SUFFIX else "")
            + (f"<br><span class='ci'>{html.escape(rest)}</span>" if rest else ""))


def _summary(results: list[dict], failed: list[tuple[str, str]]) -> str:
    text = f"{len(results)} result(s)"
    return text + (f"; {len(failed)} backbone(s) failed (listed below)" if failed else "")


def _render_html(found: Results, folder: Path, out: Path, title: str,
                 failed: list[tuple[str, str]], extra: list,
                 maps: bool = False) -> None:
    results = found.heads
    headers, cells, marks = table(results)
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{e(title)}</h1>",
             f"<p>{e(_summary(results, failed))} from {e(str(folder))}. {e(ties_note(marks))}</p>"]
    if results:
        # A wide table (long backbone names, many columns) scrolls in its own box, not the page.
        parts.append("<div class='wide'><table id='comparison'><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in headers)
                     + "</tr></thead><tbody>")
        for row, row_marks in zip(cells, marks):
            parts.append("<tr>" + "".join(
                f"<td class='{mark if mark in SUFFIX else ('text' if j in (0, 4, 5) else '')}'>"
                f"{_html_cell(c, mark) if COLUMNS[j].metric else e(c)}</td>"
                for j, (c, mark) in enumerate(zip(row, row_marks))) + "</tr>")
        parts.append("</tbody></table></div>" + (f"<p class='legend'>{e(LEGEND)}</p>" if len(results) > 1 else ""))
    for name, note, headers_, rows in extra:
        parts.append(f"<h2>{e(name)}</h2><p>{e(note)}</p><div class='wide'><table class='plain'><thead><tr>"
                     + "".join(f"<th>{e(h)}</th>" for h in headers_) + "</tr></thead><tbody>"
                     + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
                     + "</tbody></table></div>")
    if failed:
        parts.append("<h2>Failed backbones</h2><ul id='failed'>" + "".join(
            f"<li><b>{e(name)}</b>: {e(reason)}</li>" for name, reason in failed) + "</ul>")
    from featx.audit.page import audit_html  # the audit beside the heads, if any

    parts.append(audit_html(folder))
    if found.stale:
        parts.append("<h2>Heads older than their store</h2><ul id='stale'>" + "".join(
            f"<li>{e(str(path))}: {e(note)}</li>" for path, note in found.stale) + "</ul>")
    if found.skipped:
        parts.append("<h2>Skipped files</h2><ul id='skipped'>" + "".join(
            f"<li>{e(str(path))}: {e(reason)}</li>" for path, reason in found.skipped) + "</ul>")
    for section, images in _sections(results, found.curves):
        parts.append(f"<h2>{e(section)}</h2>")
        for caption, png in images:
            parts.append(f"<figure><img class='plot' alt='{e(section)} {e(caption)}' "
                         f"src='{_data_uri(png)}'>" + (f"<figcaption>{e(caption)}</figcaption>" if caption else "")
                         + "</figure>")
    gallery = _gallery(results)
    if gallery:
        parts.append("<h2>Worst errors</h2>")
        for name, items in gallery:
            parts.append(f"<h3>{e(name)}</h3><div class='gallery'>")
            for w in items:
                image = (f"<img alt='{e(w['path'])}' src='{_data_uri(w['thumbnail'], 'image/jpeg')}'>"
                         if w["thumbnail"] else "<div>(image not found)</div>")
                parts.append(f"<figure>{image}<figcaption>{e(w['path'])}<br>true {e(w['true'])} "
                             f"({w['p_true']:.2f})<br>predicted {e(w['predicted'])} "
                             f"({w['p_predicted']:.2f})</figcaption></figure>")
            parts.append("</div>")
    if maps:
        from featx.report.maps import maps_html

        parts.append(maps_html(results, folder))
    parts.append("</body></html>")
    atomic_write_text(out, "\n".join(parts))


# --- Markdown: the table, and PNG files in a folder beside it --------------------------------------

def _md_cell(cell: str, mark: str) -> str:
    if mark in ("best", "tied"):  # the value bold, the interval plain: the group reads at a glance
        value, _, rest = cell.partition(" ")
        return f"**{value}** {rest}{SUFFIX[mark]}".replace("  ", " ")
    return cell + SUFFIX.get(mark, "")


def _render_markdown(found: Results, folder: Path, out: Path, title: str,
                     failed: list[tuple[str, str]], extra: list,
                     maps: bool = False) -> None:
    results = found.heads
    headers, cells, marks = table(results)
    assets = out.with_name(out.stem + "_files")
    make_output_folder(assets)
    lines = [f"# {title}", "", f"{_summary(results, failed)} from `{folder}`. {ties_note(marks)}"]
    if results:
        lines += ["", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row, row_marks in zip(cells, marks):
        lines.append("| " + " | ".join(_md_cell(c, mark) for c, mark in zip(row, row_marks)) + " |")
    if len(results) > 1:  # one result has no marks to explain
        lines += ["", LEGEND]
    for name, note, headers_, rows in extra:
        lines += ["", f"## {name}", "", note, "", "| " + " | ".join(headers_) + " |", "|" + "---|" * len(headers_)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    if failed:
        lines += ["", "## Failed backbones", ""] + [f"- **{name}**: {reason}" for name, reason in failed]
    from featx.audit.page import audit_markdown  # the audit beside the heads, if any

    lines += audit_markdown(folder)
    if found.stale:
        lines += ["", "## Heads older than their store", ""] + [f"- `{p}`: {note}" for p, note in found.stale]
    if found.skipped:
        lines += ["", "## Skipped files", ""] + [f"- `{path}`: {reason}" for path, reason in found.skipped]
    n = 0
    for section, images in _sections(results, found.curves):
        lines += ["", f"## {section}", ""]
        for caption, png in images:
            n += 1
            name = f"plot{n:02d}.png"
            (assets / name).write_bytes(png)
            lines.append(f"![{section} {caption}".rstrip() + f"]({assets.name}/{name})")
    gallery = _gallery(results)
    if gallery:
        lines += ["", "## Worst errors", ""]
        for name, items in gallery:
            lines += [f"### {name}", "", "| image | path | true | predicted |", "|---|---|---|---|"]
            for i, w in enumerate(items):
                cell = "-"
                if w["thumbnail"]:
                    thumb = f"worst{n:02d}_{i:02d}.jpg"
                    (assets / thumb).write_bytes(w["thumbnail"])
                    cell = f"![]({assets.name}/{thumb})"
                lines.append(f"| {cell} | {w['path']} | {w['true']} ({w['p_true']:.2f}) | "
                             f"{w['predicted']} ({w['p_predicted']:.2f}) |")
            n += 1
    if maps:
        from featx.report.maps import maps_markdown

        lines += maps_markdown(results, folder, assets)
    atomic_write_text(out, "\n".join(lines) + "\n")
