"""Backbone comparison reports: every head result in a folder, as one HTML file or Markdown.

    write_report("runs/compare", "runs/compare/report.html")      # self-contained HTML
    write_report("runs/compare", "runs/compare/report.md", "md")  # Markdown + PNGs beside it

Results are the JSON sidecars that `featx train-head` writes next to each head, and the
`*.lr-find.csv` curves beside them: results.py reads them (a damaged one is skipped with its
reason), ties.py marks which results are tied with the best (paired tests on the same test
images), render.py draws the report with plots.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from featx.runtime.lazy import lazy_names

# The public names, loaded on first use: `featx --help` reads featx.report.settings alone,
# without the report's plotting (featx.runtime.lazy).
if TYPE_CHECKING:
    from featx.report.render import COLUMNS, WORST_IN_GALLERY, Column, table, write_report
    from featx.report.results import Results, load_results, read_results
    from featx.report.ties import Standing, standings

__getattr__, __dir__, __all__ = lazy_names(__name__, __file__)
