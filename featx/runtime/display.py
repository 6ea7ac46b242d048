"""What featx objects show in a notebook: a repr of a few lines and an HTML table.

    html_table([("backbone", "resnet18"), ("classes", "2")], caption="Head")
    html_table([["a", "0.91"]], header=["class", "recall"])
    listed(["ants", "bees", "wasps"], 2)       # 'ants, bees, ... (3)'

Reprs stay short on purpose: a head's or a prediction's data (paths, probabilities) runs to
thousands of rows, and a notebook prints the repr of whatever a cell ends with.
"""

from __future__ import annotations

from html import escape
from typing import Sequence

LISTED = 6  # items of a list named in a repr before "..."


def listed(items: Sequence, limit: int = LISTED) -> str:
    """'a, b, c' or 'a, b, ..., (12)': the first `limit` items and how many there are."""
    items = [str(x) for x in items]
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f", ... ({len(items)})"


def percent(value: float | None, interval: Sequence[float] | None = None) -> str:
    """'91.5%' or '91.5% [87.5, 95.0]' (a 95% interval); '-' when not measured."""
    if value is None:
        return "-"
    text = f"{100 * value:.1f}%"
    if interval:
        text += f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"
    return text


def html_table(rows: Sequence[Sequence], header: Sequence[str] | None = None,
               caption: str | None = None) -> str:
    """An HTML table of `rows` (each cell escaped); the first column is a row header when there
    is no `header` (key/value tables)."""
    out = ["<table>"]
    if caption:
        out.append(f"<caption style=\"text-align:left\"><b>{escape(caption)}</b></caption>")
    if header:
        out.append("<thead><tr>" + "".join(f"<th>{escape(str(h))}</th>" for h in header) + "</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        cells = [str(c) for c in row]
        first = f"<th style=\"text-align:left\">{escape(cells[0])}</th>" if not header and cells else None
        body = "".join(f"<td>{escape(c)}</td>" for c in (cells[1:] if first else cells))
        out.append(f"<tr>{first or ''}{body}</tr>")
    out.append("</tbody></table>")
    return "".join(out)
