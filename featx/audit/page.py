"""The audit as one self-contained HTML page: the summary, then each finding with thumbnails
(pairs side by side, suspects with their given and predicted labels, outliers), read back from
the CSVs that featx.audit.run wrote, so the page shows exactly what the files say.

`gallery` draws rows of thumbnails for `featx search` too. Images are small JPEG data URIs; an
image that cannot be read shows its path instead.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path

from featx.runtime.atomic import atomic_write_text
from featx.store.files import SampleFiles

THUMB = 112  # pixels, the longer side
SEP = " | "  # as featx.audit.run writes leakage.csv
SHOWN = 50  # rows per finding on the page (the CSVs hold them all)
MAP_FILE = "map.html"  # the map of the store beside the page (featx.report.maps.audit_map writes it)
CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1300px}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
th{background:#f3f3f3;text-align:left}figure{display:inline-block;margin:4px;vertical-align:top}
figcaption{font-size:0.8em;max-width:160px;word-break:break-all}.bad{color:#b00;font-weight:bold}
img{border:1px solid #ddd}object.map{width:100%;height:760px;border:1px solid #ccc}"""


def thumbnail(path: Path, why: str = "") -> str:
    """An <img> of the file as a small JPEG data URI, or the path in words when it cannot be read
    (or `why` says it is not the sample's file)."""
    if why:
        return f"<span class='bad'>({html.escape(path.name)}: {html.escape(why)})</span>"
    try:
        from featx.data.images import load_image

        img = load_image(path)
        img.thumbnail((THUMB, THUMB))
        buffer = io.BytesIO()
        img.save(buffer, "JPEG", quality=80)
    except Exception:  # any decode failure: the page still renders
        return f"<span class='bad'>(unreadable: {html.escape(path.name)})</span>"
    return f"<img src='data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def figure(files: SampleFiles, rel: str, caption: str) -> str:
    """A sample's thumbnail (only its own file: featx.store.files) and caption."""
    path, why = files.locate(rel)
    return (f"<figure>{thumbnail(path or Path(rel), why)}<figcaption>{html.escape(caption)}"
            "</figcaption></figure>")


def gallery(title: str, files: SampleFiles, rows: list[tuple[str, list[tuple[str, str]]]]) -> str:
    """A section: per row a heading and figures (relative path, caption)."""
    parts = [f"<h2>{html.escape(title)}</h2><table>"]
    for head, items in rows:
        parts.append(f"<tr><th>{html.escape(head)}</th><td>"
                     + "".join(figure(files, rel, cap) for rel, cap in items) + "</td></tr>")
    return "".join(parts) + "</table>"


def page(title: str, body: list[str]) -> str:
    e = html.escape
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{e(title)}</h1>" + "".join(body) + "</body></html>\n")


def summary_lines(summary: dict) -> list[str]:
    """The audit in a few sentences (also what `featx audit` prints and `featx report` shows)."""
    lines = [f"{summary['samples']} samples of {summary.get('backbone', '?')}; neighbours: {summary['search']}."]
    dup = summary.get("duplicates")
    if dup:
        lines.append(f"Duplicates: {dup['exact_groups']} groups of identical files, {dup['near_pairs']} "
                     f"near-duplicate pairs (cosine >= {dup['threshold']} and pixel hash within "
                     f"{dup['hash_bits']} bits; pixels {dup['pixels']}; without pixels cosine >= "
                     f"{dup['threshold_without_pixels']}).")
    for split, leak in (summary.get("leakage") or {}).items():
        if leak["samples"]:
            lines.append(f"Leakage: {leak['leaked']} of {leak['samples']} {split} samples have a duplicate "
                         f"in train ({leak['conflicting_label']} with another label).")
    labels = summary.get("labels") or {}
    if "suspects" in labels:
        lines.append(f"Label suspects: {labels['suspects']} ({', '.join(f'{k} {v}' for k, v in labels['by_split'].items())}).")
        acc = labels.get("test_accuracy") or {}
        if acc.get("without_leaked") is not None:
            lines.append(f"Probe test accuracy {acc['all']:.3f} on all {acc['samples']} test samples, "
                         f"{acc['without_leaked']:.3f} without the {acc['removed']} leaked ones.")
    elif labels:
        lines.append(f"Label checks skipped: {labels['skipped']}.")
    out = summary.get("outliers")
    if out:
        lines.append(f"Outliers: {out['flagged']} samples farther than {out['cut']} (1 - cosine) from their "
                     f"{out['k']}-th nearest sample (median {out['median_distance']}).")
    return lines


def write_page(folder: Path, summary: dict, files: SampleFiles) -> Path:
    """audit.html in `folder`, from the summary and the finding CSVs beside it; thumbnails of the
    store's own files only (`files`)."""
    body = ["<p>" + "<br>".join(html.escape(line) for line in summary_lines(summary)) + "</p>",
            map_section(folder, summary["store"])]
    leaks = _read(folder / "leakage.csv")
    if leaks:
        body.append(gallery("Val/test samples with a duplicate in train", files, [
            (f"{r['split']} {r['label']} (cos {r['best_cosine']}){' CONFLICTING LABEL' if r['conflicting'] == 'True' else ''}",
             [(r["path"], f"{r['split']}: {r['label']}")]
             + [(p, f"train: {lab}") for p, lab in zip(r["train_paths"].split(SEP)[:4], r["train_labels"].split(SEP))])
            for r in leaks[:SHOWN]]))
    pairs = [r for r in _read(folder / "duplicates.csv")][:SHOWN]
    if pairs:
        body.append(gallery("Duplicate pairs (exact first, then by cosine)", files, [
            (f"{'exact' if r['exact'] == 'True' else 'near'}: cos {r['cosine']}, {r['hash_bits']} bits",
             [(r["path_a"], f"{r['split_a']} {r['label_a']}"), (r["path_b"], f"{r['split_b']} {r['label_b']}")])
            for r in pairs]))
    suspects = _read(folder / "label_issues.csv")[:SHOWN]
    if suspects:
        body.append(gallery("Label suspects (most suspect first)", files, [
            (f"#{r['rank']} {r['split']}: given {r['given']} (p {r['p_given']}), predicted {r['predicted']} "
             f"(p {r['p_predicted']})", [(r["path"], r["path"])]) for r in suspects]))
    outliers = _read(folder / "outliers.csv")[:SHOWN]
    if outliers:
        body.append(gallery("Outliers (farthest first)", files, [
            (f"#{r['rank']} distance {r['distance']}{' flagged' if r['flagged'] == 'True' else ''}",
             [(r["path"], f"{r['split']} {r['label']}")]) for r in outliers]))
    return atomic_write_text(folder / "audit.html", page(f"featx audit: {Path(summary['store']).name}", body))


def map_section(folder: Path, store: str) -> str:
    """The store's map, from the map.html beside the page whenever it is there (written after the
    page, or redrawn later): an <object> shows its fallback line while there is none."""
    e = html.escape
    how = (f"No map beside this page yet: featx map {store} --audit {folder} --out {Path(folder) / MAP_FILE} "
           "draws it here (featx audit does, with umap-learn: pip install 'featx[explore]').")
    return (f"<h2>Map of the features</h2><p><a href='{MAP_FILE}'>{MAP_FILE}</a>: every sample, coloured "
            f"by class, split or audit finding.</p><object class='map' type='text/html' data='{MAP_FILE}'>"
            f"<p id='no-map'>{e(how)}</p></object>")


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --- in `featx report`: the audit that sits beside the heads ---------------------------------------

def find_audits(folder: Path) -> list[tuple[Path, dict]]:
    """(audit.json path, summary) of every audit under `folder` or in a sibling folder named
    audit*: `featx report runs/x/heads` finds runs/x/audit. Unreadable ones are left out."""
    import json

    folder = Path(folder)
    seen: dict[Path, dict] = {}
    candidates = list(folder.rglob("audit.json")) + list(folder.parent.glob("audit*/audit.json"))
    for path in sorted(set(p.resolve() for p in candidates)):
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
            summary_lines(summary)  # the fields the report shows are there
        except (OSError, ValueError, KeyError, TypeError):
            continue
        seen[path] = summary
    return list(seen.items())


NOTE = ("Test accuracies above include the leaked test samples; the audit's probe shows the size of the "
        "effect (without_leaked).")


def audit_html(folder: Path) -> str:
    """The report's "Data audit" section (empty when no audit is found)."""
    parts = [f"<h3>{html.escape(str(path.parent))} (<a href='{html.escape(path.with_name('audit.html').as_uri())}'>"
             f"page</a>)</h3><p>" + "<br>".join(html.escape(line) for line in summary_lines(summary)) + "</p>"
             for path, summary in find_audits(folder)]
    return f"<h2>Data audit</h2>{''.join(parts)}<p>{html.escape(NOTE)}</p>" if parts else ""


def audit_markdown(folder: Path) -> list[str]:
    lines = []
    for path, summary in find_audits(folder):
        lines += ["", f"### {path.parent}", ""] + [f"- {line}" for line in summary_lines(summary)]
    return ["", "## Data audit"] + lines + ["", NOTE] if lines else []
