"""Backbone comparison reports: every head result in a folder, as one HTML file or Markdown.

    write_report("runs/compare", "runs/compare/report.html")      # self-contained HTML
    write_report("runs/compare", "runs/compare/report.md", "md")  # Markdown + PNGs beside it

Results are the JSON sidecars that `featx train-head` writes next to each head, and the
`*.lr-find.csv` curves beside them: results.py reads them (a damaged one is skipped with its
reason), ties.py marks which results are tied with the best (paired tests on the same test
images), render.py draws the report with plots.py.
"""

from featx.report.render import COLUMNS, WORST_IN_GALLERY, Column, table, write_report
from featx.report.results import Results, load_results, read_results
from featx.report.ties import Standing, standings

__all__ = ["COLUMNS", "WORST_IN_GALLERY", "Column", "Results", "Standing", "load_results", "read_results",
           "standings", "table", "write_report"]
