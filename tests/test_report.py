"""featx.report / featx.comparison: the comparison a person looks at, in HTML and Markdown."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from featx.comparison import compare
from featx.data import DatasetOptions, open_dataset
from featx.errors import FeatxError
from featx.extraction import ExtractConfig
from featx.report import load_results, table, write_report
from tests.conftest import make_class_tree

PLOTS = ["Accuracy vs extraction throughput", "Per-class accuracy vs training images",
         "Confusion matrices (test)", "Training curves", "Learning-rate finder", "Reliability"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """Two backbones compared end to end on a tiny image tree, plus an LR-finder curve."""
    tmp = tmp_path_factory.mktemp("compare")
    root = make_class_tree(tmp / "data", classes=("ants", "bees", "wasps"), per_class=8)
    ds = open_dataset(root, DatasetOptions(val_frac=0.25, test_frac=0.25))
    config = ExtractConfig(weights="none", input_size=32, workers=0)
    result = compare(ds, ["resnet18", "squeezenet1_1"], tmp / "out", config,
                     heads=("linear", "logreg"), show_progress=False)
    (tmp / "out" / "heads" / "x.lr-find.csv").write_text("lr,loss\n1e-5,1.1\n1e-3,0.9\n1e-1,2.0\n")
    return tmp / "out", result


def test_compare_trains_every_backbone_and_head(compared):
    out, result = compared
    assert len(result.extractions) == 2 and len(result.heads) == 4
    assert result.report == out / "report.html" and result.report.is_file()


def test_table_highlights_the_best_per_column(compared):
    out, _ = compared
    results = load_results(out)
    headers, cells, best = table(results)
    assert len(cells) == 4 and headers[:3] == ["backbone", "dim", "params"]
    top1 = headers.index("top-1")
    values = [float(row[top1]) for row in cells]
    assert [b[top1] for b in best] == [v == max(values) for v in values]
    nll = headers.index("NLL")
    nlls = [float(row[nll]) for row in cells]
    assert [b[nll] for b in best] == [v == min(nlls) for v in nlls]
    assert {row[0] for row in cells} == {"resnet18", "squeezenet1_1"}


def test_html_is_one_self_contained_file_with_every_plot(compared):
    out, _ = compared
    path = write_report(out, out / "r.html")
    text = path.read_text()
    for section in PLOTS + ["Worst errors"]:
        assert f"<h2>{section}</h2>" in text, section
    assert "src='file:" not in text and "src='http" not in text
    images = re.findall(r"src='data:image/(png|jpeg);base64,", text)
    assert images.count("png") >= 1 + 1 + 4 + 1 + 1 + 1 and "jpeg" in images  # thumbnails too
    assert text.count("class='best'") >= 5


def test_markdown_form(compared):
    out, _ = compared
    path = write_report(out, out / "r.md", "md")
    text = path.read_text()
    assert "| backbone | dim | params | extract img/s |" in text and "**" in text
    links = re.findall(r"\]\((r_files/[^)]+)\)", text)
    assert len(links) >= 9 and all((out / link).is_file() for link in links)
    for section in PLOTS:
        assert f"## {section}" in text


def test_failed_backbones_are_listed_beside_the_results(compared):
    out, _ = compared
    failed = [("resnet18", "no pretrained weights on this machine <here>")]
    text = write_report(out, out / "f.html", failed=failed).read_text()
    assert "<table id='comparison'>" in text and "4 result(s); 1 backbone(s) failed" in text
    assert "<h2>Failed backbones</h2>" in text and "<b>resnet18</b>: no pretrained weights" in text
    assert "&lt;here&gt;" in text  # escaped
    text = write_report(out, out / "f.md", "md", failed=failed).read_text()
    assert "## Failed backbones" in text and "- **resnet18**: no pretrained weights" in text


def test_compare_records_a_backbone_that_cannot_run_and_still_writes_the_report(tmp_path):
    root = make_class_tree(tmp_path / "data", per_class=4)
    ds = open_dataset(root, DatasetOptions(val_frac=0.25, test_frac=0.25))
    result = compare(ds, ["no_such_net"], tmp_path / "out", ExtractConfig(weights="none"),
                     show_progress=False)
    assert result.all_failed and result.failed[0][0] == "no_such_net"
    assert "unknown backbone" in result.failed[0][1]
    text = result.report.read_text()
    assert "0 result(s); 1 backbone(s) failed" in text and "no_such_net" in text
    assert "<table" not in text


def test_no_results_is_a_clear_error(tmp_path):
    with pytest.raises(FeatxError, match="no head results"):
        write_report(tmp_path, tmp_path / "r.html")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="Chromium not installed (make test installs "
                    "Debian's chromium when it can; apt-get install chromium)")
def test_report_renders_in_headless_chromium(compared, tmp_path):
    out, result = compared
    browser = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               f"--user-data-dir={tmp_path / 'profile'}"]
    url = result.report.resolve().as_uri()
    dom = subprocess.run(browser + ["--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<tr>") == 5  # header + 4 results, as the browser parsed them
    assert dom.stdout.count('src="data:image/png;base64,') == 8  # the report compare wrote
    shot = tmp_path / "shot.png"
    subprocess.run(browser + [f"--screenshot={shot}", "--window-size=1200,3000", url],
                   capture_output=True, timeout=120)
    from PIL import Image

    with Image.open(shot) as img:
        colors = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # plots drawn, not a blank page
