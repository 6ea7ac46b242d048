"""In a notebook: heads, metrics, stores and predictions print a few lines and render as tables."""

from __future__ import annotations

import builtins
from html.parser import HTMLParser

import numpy as np
import pytest

from featx.errors import FeatxError
from featx.heads.predict import Predictions, predict
from featx.probes.sweep import HeadConfig
from featx.probes.train import train_head
from featx.store import FeatureStore
from tests.conftest import make_feature_store

SHORT = 400  # characters a repr may take: a notebook cell's output stays a glance


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("repr")
    store = make_feature_store(tmp / "blobs.h5", n_per_class=60, separation=0.6)
    head = train_head(store, "logreg", HeadConfig(), out=tmp / "head", show_progress=False)
    return store, head


class Table(HTMLParser):
    """The cells' text and the tags, checking every tag that is opened is closed in order."""

    VOID = {"br", "hr", "img", "meta", "col"}

    def __init__(self):
        super().__init__()
        self.open: list[str] = []
        self.cells: list[str] = []
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.open.append(tag)
        self.tables += tag == "table"
        if tag in ("td", "th"):
            self.cells.append("")

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()

    def handle_data(self, data):
        if self.open and self.open[-1] in ("td", "th"):
            self.cells[-1] += data


def parsed(html: str) -> Table:
    table = Table()
    table.feed(html)
    table.close()
    assert not table.open, f"unclosed tags: {table.open}"
    assert table.tables >= 1
    return table


def assert_short(text: str) -> None:
    assert len(text) < SHORT, text
    assert 1 <= len(text.splitlines()) <= 6, text


def test_a_head_prints_what_it_is_and_its_test_score(trained):
    _, head = trained
    text = repr(head)
    assert_short(text)
    assert "logreg" in text and "resnet18" in text and "16 features" in text and "3 classes" in text
    assert f"{100 * head.test.top1:.1f}%" in text
    assert str(head.path) in text
    cells = parsed(head._repr_html_()).cells
    assert "logreg" in cells and "resnet18" in cells and "16" in cells
    assert any(c.startswith(f"{100 * head.test.top1:.1f}%") for c in cells)


def test_metrics_print_the_headline_numbers_with_their_intervals(trained):
    _, head = trained
    m = head.test
    assert len(repr(m.samples)) > SHORT  # the data a default dataclass repr would print
    text = repr(m)
    assert_short(text)
    lo, hi = m.interval("top1")
    assert f"{100 * m.top1:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]" in text
    assert f"{100 * m.balanced_accuracy:.1f}%" in text and f"NLL {m.nll:.3f}" in text
    table = parsed(m._repr_html_())
    assert f"{100 * m.top1:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]" in table.cells
    assert table.tables == 3  # the numbers, per class, the confusion matrix
    # Every confusion count is a cell of the matrix table, row by row.
    corner = table.cells.index("true \\ predicted")
    assert table.cells[corner + 1:corner + 4] == ["a", "b", "c"]
    for i, row in enumerate(m.confusion):
        start = corner + 4 * (i + 1)
        assert table.cells[start:start + 4] == [["a", "b", "c"][i]] + [str(v) for v in row]


def test_a_store_prints_its_sizes_and_splits(trained):
    store, _ = trained
    with FeatureStore(store) as st:
        text = repr(st)
        html = st._repr_html_()
    assert_short(text)
    assert "180 images x 16 features" in text and "complete" in text
    assert "train 90" in text and "val 45" in text and "test 45" in text
    cells = parsed(html).cells
    assert "180" in cells and "16" in cells and "train" in cells and "90" in cells
    assert "closed" in repr(st)  # a closed store says so instead of raising


def test_predictions_print_counts_and_accuracy_not_every_path(trained):
    store, head = trained
    preds = predict(head, store)
    assert len(repr(preds.paths)) > SHORT
    text = repr(preds)
    assert_short(text)
    truth = [t == p for t, p in zip(preds.true_labels, preds.labels)]
    assert "180 inputs x 3 classes" in text
    assert f"top-1 {100 * np.mean(truth):.1f}%" in text
    cells = parsed(preds._repr_html_()).cells
    assert preds.paths[0] in cells and preds.paths[19] in cells and preds.paths[20] not in cells
    assert f"{preds.scores[0].max():.3f}" in cells


def test_predictions_become_a_dataframe(trained):
    pytest.importorskip("pandas")
    store, head = trained
    preds = predict(head, store)
    frame = preds.to_pandas()
    assert list(frame.columns) == ["path", "split", "true_class", "predicted", "prob_a", "prob_b", "prob_c"]
    assert frame["path"].tolist() == preds.paths and frame["predicted"].tolist() == preds.labels
    np.testing.assert_array_equal(frame[["prob_a", "prob_b", "prob_c"]].to_numpy(), preds.scores)
    assert frame["split"].tolist() == preds.splits


def test_to_pandas_without_pandas_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_pandas(name, *args, **kwargs):
        if name == "pandas":
            raise ImportError("No module named 'pandas'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    preds = Predictions(["x.png"], np.array([[0.2, 0.8]]), ["a", "b"])
    with pytest.raises(FeatxError, match="pip install pandas"):
        preds.to_pandas()
    assert "b 1" in repr(preds)
