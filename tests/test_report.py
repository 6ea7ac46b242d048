"""featx.report / featx.compare.run: the comparison a person looks at, in HTML and Markdown."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import html as html_module
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featx.compare.run import compare
from featx.data import DatasetOptions, open_dataset
from featx.errors import FeatxError
from featx.extraction import ExtractConfig
from featx.report import load_results, read_results, standings, table, write_report
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
    result = compare(ds, ["tiny_cnn", "tiny_features"], tmp / "out", config,
                     heads=("linear", "logreg"), show_progress=False)
    (tmp / "out" / "heads" / "x.lr-find.csv").write_text("lr,loss\n1e-5,1.1\n1e-3,0.9\n1e-1,2.0\n")
    return tmp / "out", result


def test_compare_trains_every_backbone_and_head(compared):
    out, result = compared
    assert len(result.extractions) == 2 and len(result.heads) == 4
    assert result.report == out / "report.html" and result.report.is_file()


INTERVAL = re.compile(r"^-?\d+\.\d{3} \[-?\d+\.\d{3}, -?\d+\.\d{3}\]$")


def test_table_shows_each_metric_with_its_interval_and_marks_the_best_and_ties(compared):
    out, _ = compared
    results = load_results(out)
    headers, cells, marks = table(results)
    assert len(cells) == 4 and headers[:3] == ["backbone", "dim", "params"]
    assert {row[0] for row in cells} == {"tiny_cnn", "tiny_features"}
    for title in ("top-1", "bal. acc", "macro-F1", "NLL", "ECE"):
        j = headers.index(title)
        assert all(INTERVAL.match(row[j]) for row in cells), [row[j] for row in cells]
        column = [row[j] for row in marks]
        assert column.count("best") == 1 and set(column) <= {"best", "tied", "worse"}, column
        values = [float(row[j].split()[0]) for row in cells]
        best = values[column.index("best")]
        assert best == (min(values) if title in ("NLL", "ECE") else max(values))
        for row, value in zip(cells, values):  # the value sits inside its own interval
            lo, hi = (float(x) for x in row[j].split("[")[1].rstrip("]").split(", "))
            assert lo - 1e-3 <= value <= hi + 1e-3 or title == "ECE"


def _twins(compared, tmp_path, change=lambda meta: None):
    """Two copies of one head result under other backbone names; `change` edits the second."""
    meta = _good_sidecar(compared)
    for name in ("first", "second"):
        twin = copy.deepcopy(meta)
        twin["backbone"] = name
        if name == "second":
            change(twin)
        (tmp_path / f"{name}.json").write_text(json.dumps(twin))
    return load_results(tmp_path)


def test_two_identical_heads_are_reported_as_tied(compared, tmp_path):
    results = _twins(compared, tmp_path)
    headers, cells, marks = table(results)
    for title in ("top-1", "bal. acc", "macro-F1", "NLL", "ECE"):
        j = headers.index(title)
        assert [row[j] for row in marks] == ["best", "tied"], title
    ranked = standings(results)
    assert ranked[1]["top1"].difference.delta == 0.0 and not ranked[1]["top1"].difference.significant
    text = write_report(tmp_path, tmp_path / "r.md", "md").read_text()
    assert "(best)" in text and "(tie)" in text and "paired bootstrap" in text
    html_text = write_report(tmp_path, tmp_path / "r.html").read_text()
    assert html_text.count("class='tied'") == 5 and html_text.count("class='best'") == 5


def test_a_result_without_intervals_is_reported_as_such_and_not_compared(compared, tmp_path):
    def old(meta):
        for key in ("intervals", "bootstrap", "samples"):
            meta["metrics"]["test"].pop(key)

    headers, cells, marks = table(_twins(compared, tmp_path, old))
    j = headers.index("top-1")
    assert cells[1][j].endswith("(no CI)") and INTERVAL.match(cells[0][j])
    assert [row[j] for row in marks] == ["best", "unpaired"]
    assert "(no CI)" in write_report(tmp_path, tmp_path / "r.md", "md").read_text()


def test_results_on_other_test_images_are_not_paired(compared, tmp_path):
    def other_images(meta):
        samples = meta["metrics"]["test"]["samples"]
        samples["path"] = [f"elsewhere/{p}" for p in samples["path"]]

    headers, cells, marks = table(_twins(compared, tmp_path, other_images))
    assert [row[headers.index("top-1")] for row in marks] == ["best", "unpaired"]
    assert "†" in write_report(tmp_path, tmp_path / "r.md", "md").read_text()


def test_heads_paired_by_path_whatever_the_order_of_their_images(compared, tmp_path):
    def reversed_order(meta):
        samples = meta["metrics"]["test"]["samples"]
        for key in samples:
            samples[key] = samples[key][::-1]

    headers, cells, marks = table(_twins(compared, tmp_path, reversed_order))
    assert [row[headers.index("top-1")] for row in marks] == ["best", "tied"]


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
    assert "| backbone | dim | params | extract img/s |" in text and "**" in text and "(best)" in text
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


def test_compare_refuses_a_file_where_its_folders_go_before_any_work(tmp_path, monkeypatch):
    import featx.compare.run

    def work(*args, **kwargs):
        raise AssertionError("extraction started")

    monkeypatch.setattr(featx.compare.run, "extract", work)
    ds = open_dataset(make_class_tree(tmp_path / "data", per_class=2), DatasetOptions(val_frac=0.25, test_frac=0.25))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stores").write_text("a file")
    with pytest.raises(FeatxError, match=r"out/stores: exists and is not a folder"):
        compare(ds, ["resnet18"], tmp_path / "out", show_progress=False)


def test_no_results_is_a_clear_error(tmp_path):
    with pytest.raises(FeatxError, match="no head results"):
        write_report(tmp_path, tmp_path / "r.html")


# --- damaged inputs: skipped with their reason, never a traceback (issue 17) -------------------

def _good_sidecar(compared) -> dict:
    out, _ = compared
    meta = next(m for m in load_results(out) if m["kind"] == "linear")
    return {k: v for k, v in meta.items() if k != "_path"}


@pytest.fixture(scope="module")
def good_sidecar(compared) -> dict:
    """_good_sidecar read once (the property test copies it for each example)."""
    return _good_sidecar(compared)


def _set(path: str, value):
    """A change to a sidecar: set (or with value DROP, remove) the key at dotted `path`."""
    def change(meta):
        *parents, last = path.split(".")
        node = meta
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is DROP:
            node.pop(last) if isinstance(node, dict) else node.pop(int(last))
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return change


DROP = object()
DAMAGE = {  # what is wrong -> the reason the report gives
    "no-backbone": (_set("backbone", DROP), "no 'backbone'"),
    "kind-a-number": (_set("kind", 3), "'kind' is not text"),
    "metrics-text": (_set("metrics", "x"), "'metrics' is not a mapping"),
    "ragged-confusion": (_set("metrics.test.confusion.0", [1]), "metrics.test.confusion is not a square matrix"),
    "no-confusion": (_set("metrics.test.confusion", DROP), "no 'metrics.test.confusion'"),
    "top1-text": (_set("metrics.test.top1", "high"), "'metrics.test.top1' is not a number"),
    "worst-without-p": (_set("metrics.test.worst", [{"path": "a.png", "true": "a", "predicted": "b"}]),
                        "no 'metrics.test.worst[0].p_true'"),
    "curve-text": (_set("curve", [{"epoch": "one", "train_loss": 1.0}]), "'curve[0].epoch' is not a number"),
    "train-counts-short": (_set("train_counts", [1]), "1 train_counts for 3 classes in metrics.val"),
    "extraction-list": (_set("extraction", [1]), "'extraction' is not a mapping"),
    "classes-missing": (_set("classes", DROP), "no 'classes'"),
    "dataset-root-number": (_set("dataset_root", 5), "'dataset_root' is not text"),
    "other-format": (_set("format", "featx-head/9"), "format 'featx-head/9', this featx reads 'featx-head/1'"),
}


def test_damaged_head_sidecars_are_skipped_with_their_reason(compared, tmp_path):
    good = _good_sidecar(compared)
    (tmp_path / "good.json").write_text(json.dumps(good))
    for name, (change, _) in DAMAGE.items():
        meta = copy.deepcopy(good)
        change(meta)
        (tmp_path / f"{name}.json").write_text(json.dumps(meta))
    (tmp_path / "torn.json").write_text('{"format": "featx-')  # a sidecar cut short, beside its weights
    (tmp_path / "torn.safetensors").write_bytes(b"")
    (tmp_path / "notes.json").write_text("[1, 2")  # not JSON and no weights beside it: not ours
    found = read_results(tmp_path)
    assert [m["_path"] for m in found.heads] == [str(tmp_path / "good.json")]
    reasons = {path.stem: reason for path, reason in found.skipped}
    for name, (_, reason) in DAMAGE.items():
        assert reasons[name] == reason, name
    assert reasons["torn"].startswith("unreadable head sidecar (JSONDecodeError")
    assert "notes" not in reasons
    html_text = write_report(tmp_path, tmp_path / "r.html").read_text()
    assert "<h2>Skipped files</h2>" in html_text and "no &#x27;backbone&#x27;" in html_text
    md_text = write_report(tmp_path, tmp_path / "r.md", "md").read_text()
    assert "## Skipped files" in md_text and f"- `{tmp_path / 'no-backbone.json'}`: no 'backbone'" in md_text


@pytest.mark.parametrize("content, reason", [
    ("lr,loss\nabc,1\n", "row 1: lr 'abc' is not a number"),
    ("lr,loss\n1e-3,1\n1e-2,low\n", "row 2: loss 'low' is not a number"),
    ("lr,loss\n-1,1\n", "row 1: lr '-1' is not a positive learning rate"),
    ("rate,value\n1,2\n", "no 'lr' and 'loss' columns"),
    (b"\xff\xfe\x00binary", "unreadable CSV (UnicodeDecodeError)"),
])
def test_a_malformed_lr_find_curve_is_skipped_with_its_reason(compared, tmp_path, content, reason):
    (tmp_path / "h.json").write_text(json.dumps(_good_sidecar(compared)))
    curve = tmp_path / "x.lr-find.csv"
    curve.write_bytes(content) if isinstance(content, bytes) else curve.write_text(content)
    found = read_results(tmp_path)
    assert found.skipped == [(curve, reason)] and found.curves == []
    assert "Learning-rate finder" not in write_report(tmp_path, tmp_path / "r.html").read_text()


def test_a_folder_of_only_damaged_heads_is_one_error_naming_them(compared, tmp_path):
    meta = _good_sidecar(compared)
    meta.pop("backbone")
    (tmp_path / "h.json").write_text(json.dumps(meta))
    with pytest.raises(FeatxError, match=r"no usable head results; skipped 1: .*h\.json: no 'backbone'"):
        write_report(tmp_path, tmp_path / "r.html")


def test_markdown_images_folder_that_is_a_file_is_one_error(compared, tmp_path):
    (tmp_path / "h.json").write_text(json.dumps(_good_sidecar(compared)))
    (tmp_path / "r_files").write_text("a file")
    with pytest.raises(FeatxError, match="r_files: exists and is not a folder"):
        write_report(tmp_path, tmp_path / "r.md", "md")


def _drawn_not_encoded(fig) -> bytes:
    """png_bytes for the property test: every artist drawn on the Agg canvas (where bad values and
    bad text raise), the layout pass and the PNG encoding (half the time, the same for any
    data) skipped. The tests above and below write reports with the real PNGs."""
    from featx.evaluation.figures import pyplot

    fig.canvas.draw()
    pyplot().close(fig)
    return b"drawn"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_damage_to_a_sidecar_is_a_report_or_one_error(good_sidecar, tmp_path_factory, monkeypatch, data):
    """Replace any value anywhere in a real sidecar with junk: the head is used and the report
    written, or one FeatxError line says why it was skipped; never another exception."""
    import featx.report.plots

    monkeypatch.setattr(featx.report.plots, "png_bytes", _drawn_not_encoded)
    folder = tmp_path_factory.mktemp("fuzz")
    meta = copy.deepcopy(good_sidecar)
    paths = list(_paths(meta))
    junk = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
                     st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
    for path in data.draw(st.lists(st.sampled_from(paths), min_size=1, max_size=3)):
        try:
            _set(path, data.draw(junk))(meta)
        except (KeyError, IndexError, TypeError, ValueError):
            pass  # an earlier change removed the parent (or made a list of it: no key 'val')
    (folder / "h.json").write_text(json.dumps(meta))
    try:
        found = read_results(folder)
    except FeatxError as error:  # h.json skipped with its reason, or not taken for a head at all
        assert re.fullmatch(rf"{re.escape(str(folder))}: no (usable head results; skipped 1: .*h\.json: .+"
                            r"|head results \(\*\.json from `featx train-head`\) found)", str(error)), error
        with pytest.raises(FeatxError, match=re.escape(str(error))):
            write_report(folder, folder / "r.html")
        assert not (folder / "r.html").exists()
        return
    assert len(found.heads) == 1  # the damage left a usable result: a written report compares it
    text = write_report(folder, folder / "r.html").read_text()
    assert "<table id='comparison'>" in text and text.endswith("</body></html>")


def _paths(node, prefix=""):
    """Dotted paths to every value in a JSON tree (the first item of each list only: it is enough)."""
    items = node.items() if isinstance(node, dict) else list(enumerate(node))[:1] if isinstance(node, list) else []
    for key, value in items:
        path = f"{prefix}{key}"
        yield path
        yield from _paths(value, path + ".")


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
    comparison = dom.stdout.split('id="comparison"')[1].split("</table>")[0]
    assert comparison.count("<tr>") == 5  # header + 4 results, as the browser parsed them
    assert dom.stdout.count('src="data:image/png;base64,') == 8  # the report compare wrote
    shot = tmp_path / "shot.png"
    subprocess.run(browser + [f"--screenshot={shot}", "--window-size=1200,3000", url],
                   capture_output=True, timeout=120)
    from PIL import Image

    with Image.open(shot) as img:
        colors = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # plots drawn, not a blank page


def test_a_count_beyond_int64_in_the_confusion_matrix_still_gives_a_report(compared, tmp_path):
    """Found by the property test above: it made an object array, and the plot raised TypeError."""
    meta = _good_sidecar(compared)
    meta["metrics"]["test"]["confusion"][0][0] = -18_446_656_112_779_329_536
    (tmp_path / "h.json").write_text(json.dumps(meta))
    assert write_report(tmp_path, tmp_path / "r.html").exists()


# --- what a person sees (issue 31): curves, per-class plot, intro, table width, captions; calibration ---

def _one_result(compared, tmp_path, kind: str = "linear") -> dict:
    out, _ = compared
    meta = next(m for m in load_results(out) if m["kind"] == kind)
    (tmp_path / "h.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "_path"}))
    return meta


def _drawn(ax) -> list[tuple[str, int]]:
    """(label, points with a value) of every line an axis draws."""
    import numpy as np

    return [(line.get_label(), int(np.isfinite(np.asarray(line.get_ydata(), float)).sum())) for line in ax.lines]


def test_curves_of_a_cross_validated_head_show_its_refit_and_no_empty_panel(compared):
    from featx.report.plots import curves_figure

    out, _ = compared
    results = load_results(out)
    assert all(m["selection"]["method"] == "cv" for m in results if m["kind"] == "linear")  # the default
    fig = curves_figure(results)
    (loss_ax,) = fig.axes[:1]
    assert len([a for a in fig.axes if a.get_ylabel()]) == 1  # no val top-1 panel: CV keeps no val curve
    drawn = _drawn(loss_ax)
    assert drawn and all(points > 0 for _, points in drawn), drawn
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == [name for name, _ in drawn]
    assert all("refitted on train+val" in name for name, _ in drawn)
    with_val = copy.deepcopy(results[0])  # a head chosen on val keeps its val curve: both panels
    for i, c in enumerate(with_val["curve"]):
        c.update(val_loss=1.0 - i / 100, val_top1=0.5 + i / 100)
    with_val["selection"] = {"method": "val"}
    fig = curves_figure([with_val])
    assert [a.get_ylabel() for a in fig.axes] == ["loss", "val top-1"]
    assert all(all(points > 0 for _, points in _drawn(a)) and _drawn(a) for a in fig.axes)
    assert [n for n, _ in _drawn(fig.axes[0])][-1].endswith(" val")


def test_per_class_plot_names_each_class_and_labels_its_ticks_plainly(compared, tmp_path):
    from featx.report.plots import per_class_figure

    meta = _one_result(compared, tmp_path)
    meta["train_counts"] = [73, 74, 76]  # a narrow range, as ELPV's classes: was 7.3x10^1 ... 7.6x10^1
    fig = per_class_figure([meta])
    fig.canvas.draw()
    ax = fig.axes[0]
    names = meta.get("class_names") or meta["classes"]
    assert sorted(t.get_text() for t in ax.texts) == sorted(names)
    xs = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    ys = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert xs and all(re.fullmatch(r"\d+", x) for x in xs), xs
    assert ys and all(re.fullmatch(r"\d+(\.\d+)?%", y) for y in ys), ys
    meta["train_counts"] = [5, 60, 900]  # spread over decades: a log axis, still plain numbers
    fig = per_class_figure([meta])
    fig.canvas.draw()
    assert fig.axes[0].get_xscale() == "log"
    assert all(re.fullmatch(r"\d+", t.get_text()) for t in fig.axes[0].get_xticklabels() if t.get_text())


def test_one_head_is_introduced_as_one_result_without_marks(compared, tmp_path):
    _one_result(compared, tmp_path)
    text = write_report(tmp_path, tmp_path / "r.html").read_text()
    assert "One result:" in text and "none are compared" not in text
    assert "(best)" not in text and "(tie)" not in text


def test_calibration_table_shows_nll_and_ece_before_and_after_with_intervals(compared, tmp_path):
    from featx.evaluation.calibration import accuracy_interval

    meta = _one_result(compared, tmp_path)
    record = meta["calibration"]
    assert record["method"] == "temperature"
    test = record["test"]
    cells = [f"{side[m]:.3f} [{side['intervals'][m][0]:.3f}, {side['intervals'][m][1]:.3f}]"
             for m in ("nll", "ece") for side in (test["before"], test["after"])]
    for path in (write_report(tmp_path, tmp_path / "r.html"), write_report(tmp_path, tmp_path / "r.md", "md")):
        text = path.read_text()
        assert "Calibration (temperature scaling)" in text and f"{record['temperature']:.3g}" in text
        assert all(cell in text for cell in cells), (cells, path)
        lo, hi = accuracy_interval(record["fit_top1"], record["fit_images"])
        assert f"{record['fitted_on']}, top-1 {record['fit_top1']:.3f} [{lo:.3f}, {hi:.3f}]" in text
    from featx.report.calibration import calibration_section

    none = {**meta, "calibration": {"method": "none", "temperature": 1.0, "why": "--calibrate none"}}
    assert calibration_section([none])[3] == [[f"{meta['backbone']} / linear", "1 (none)", "--calibrate none",
                                                "-", "-", "-", "-"]]
    assert calibration_section([{k: v for k, v in meta.items() if k != "calibration"}]) is None  # an old head


MEASURE = """<script>window.addEventListener('load', () => {
  const box = el => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const table = document.getElementById('comparison');
  const out = {page: document.documentElement.scrollWidth, table: table ? table.scrollWidth : null,
    captions: [...document.querySelectorAll('.gallery figcaption')].map(box),
    spilling: [...document.querySelectorAll('figcaption')].filter(c => c.scrollWidth > c.clientWidth + 1).length,
    plots: [...document.querySelectorAll('img.plot')].map(i => i.alt),
    maps: [...document.querySelectorAll('iframe.map')].map(f => f.contentDocument.getElementById('status').textContent),
    fallback: (n => n ? n.getClientRects().length : null)(document.getElementById('no-map'))};
  const pre = document.createElement('pre'); pre.id = 'featx-measure'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre); });</script></body>"""


def measure_in_chromium(page, tmp_path, width: int = 1400) -> dict:
    """Lay `page` out in headless Chromium `width` px wide and return what MEASURE reads."""
    measured = tmp_path / "measured.html"
    measured.write_text(page.read_text().replace("</body>", MEASURE))
    browser = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},2000", "--dump-dom"]
    dom = subprocess.run(browser + [measured.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="featx-measure">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    return json.loads(html_module.unescape(found.group(1)))


def _overlap(a, b) -> bool:
    return min(a[2], b[2]) - max(a[0], b[0]) > 0.5 and min(a[3], b[3]) - max(a[1], b[1]) > 0.5


def _long_paths(compared, tmp_path) -> None:
    """The compared results in `tmp_path`, their worst errors renamed to long paths (as real
    datasets have: images/cell_0001_mono_...png) with the images copied there."""
    out, _ = compared
    for m in load_results(out):
        meta = {k: v for k, v in m.items() if k != "_path"}
        for w in meta["metrics"]["test"]["worst"]:
            longer = f"a_long_folder_name/{Path(w['path']).stem}_of_a_long_file_name_without_spaces.png"
            (tmp_path / "data" / longer).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(meta["dataset_root"]) / w["path"], tmp_path / "data" / longer)
            w["path"] = longer
        meta["dataset_root"] = str(tmp_path / "data")
        (tmp_path / Path(m["_path"]).name).write_text(json.dumps(meta))


@pytest.mark.skipif(_chromium() is None, reason="Chromium not installed (apt-get install chromium)")
def test_report_fits_1400_px_and_its_captions_do_not_run_into_each_other(compared, tmp_path):
    _long_paths(compared, tmp_path)
    seen = measure_in_chromium(write_report(tmp_path, tmp_path / "r.html"), tmp_path)
    assert seen["page"] <= 1400 and seen["table"] <= 1400 - 2 * 16, seen  # the table fits, no scrolling
    captions = seen["captions"]
    assert len(captions) >= 4 and seen["spilling"] == 0, seen
    assert not [(a, b) for i, a in enumerate(captions) for b in captions[i + 1:] if _overlap(a, b)]
    assert "Training curves " in seen["plots"]


# --- the map of the features in the report and beside the audit page (issue 30) --------------------

class FakeUMAP:
    """umap.UMAP's interface, fast: the first two PCA components. The report test checks where
    the map goes and that cached coordinates are reused, not UMAP (tests/test_map.py does)."""
    fits = 0

    def __init__(self, **settings):
        pass

    def fit_transform(self, x):
        FakeUMAP.fits += 1
        return np.asarray(x, np.float32)[:, :2]


@pytest.fixture
def fast_umap(monkeypatch):
    import importlib.machinery
    import types

    fake = types.ModuleType("umap")
    fake.__spec__ = importlib.machinery.ModuleSpec("umap", None)
    fake.UMAP = FakeUMAP
    monkeypatch.setitem(sys.modules, "umap", fake)
    FakeUMAP.fits = 0
    return FakeUMAP


def _head_on_own_store(compared, tmp_path) -> Path:
    """One compared head and its store, copied into `tmp_path` (the map caches beside the store)."""
    meta = _one_result(compared, tmp_path)
    store = tmp_path / Path(meta["store"]).name
    shutil.copy(meta["store"], store)
    shutil.copy(Path(meta["_path"]).with_suffix(".safetensors"), tmp_path / "h.safetensors")
    sidecar = json.loads((tmp_path / "h.json").read_text())
    (tmp_path / "h.json").write_text(json.dumps({**sidecar, "store": str(store)}))
    return store


def test_report_ends_with_the_map_of_each_store_and_reuses_cached_coordinates(compared, tmp_path, fast_umap):
    store = _head_on_own_store(compared, tmp_path)
    text = write_report(tmp_path, tmp_path / "r.html", maps=True).read_text()
    assert "<h2>Map of the features</h2>" in text and f"<h3>{store.name}</h3>" in text
    frame = re.search(r'<iframe class=\'map\'[^>]*srcdoc="([^"]*)"', text)
    page = html_module.unescape(frame.group(1))
    points = json.loads(re.search(r"id='featx-map'>(.*?)</script>", page, re.S).group(1))["points"]
    assert len(points) == 24 and all("predicted" in p for p in points)  # coloured by the head too
    assert fast_umap.fits == 1 and (store.parent / (store.name + ".map.npz")).is_file()
    again = write_report(tmp_path, tmp_path / "r2.html", maps=True).read_text()
    assert fast_umap.fits == 1 and "coordinates from the cache" in again  # not recomputed
    md = write_report(tmp_path, tmp_path / "r.md", "md", maps=True).read_text()
    assert "## Map of the features" in md and (tmp_path / "r_files" / "map01.html").is_file()
    if _chromium():
        seen = measure_in_chromium(tmp_path / "r.html", tmp_path)
        assert seen["page"] <= 1400 and seen["maps"] == ["drawn 24 points, coloured by label"], seen


def test_without_umap_the_map_section_says_what_to_install_and_the_report_is_written(compared, tmp_path,
                                                                                     monkeypatch):
    import featx.report.maps

    monkeypatch.setattr(featx.report.maps, "umap_installed", lambda: False)
    _head_on_own_store(compared, tmp_path)
    text = write_report(tmp_path, tmp_path / "r.html", maps=True).read_text()
    assert "<p id='map-note'>The map of the features needs umap-learn: pip install &#x27;featx[explore]&#x27;</p>" in text
    assert "<iframe" not in text and "<table id='comparison'>" in text
    notes = []
    assert featx.report.maps.audit_map(tmp_path, tmp_path / "any.h5", log=notes.append) is None
    assert notes == ["note: no map beside the audit page. The map of the features needs umap-learn: "
                     "pip install 'featx[explore]'"]


def test_audit_page_shows_the_map_written_beside_it(compared, tmp_path, fast_umap):
    from featx.audit.page import MAP_FILE, write_page
    from featx.report.maps import audit_map

    store = _head_on_own_store(compared, tmp_path)
    folder = tmp_path / "audit"
    folder.mkdir()
    summary = {"store": str(store), "samples": 24, "backbone": "tiny_cnn", "search": "exact"}
    page = write_page(folder, summary, files=None)  # no finding CSVs: no thumbnails asked for
    text = page.read_text()
    assert f"data='{MAP_FILE}'" in text and f"featx map {store} --audit {folder}" in text  # the fallback line
    assert audit_map(folder, store, log=lambda line: None) == folder / MAP_FILE
    assert '"points"' in (folder / MAP_FILE).read_text() and fast_umap.fits == 1
    if _chromium():
        seen = measure_in_chromium(page, tmp_path)
        assert seen["fallback"] == 0 and seen["page"] <= 1400, seen  # the map shown, not the line
