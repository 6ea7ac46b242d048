"""What the commands print, as a new user reads it at an 80-column terminal: lines that fit
with every number whole, a last line naming the next command, and the options they share."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from featx.cli import app
from tests.conftest import make_class_tree

NUMBER_CUT = re.compile(r"\d[.,]$|^[.,]?\d*\]|\d…|…\d")  # a number broken over lines, or cut


def run(*args, columns: int = 80):
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": str(columns), "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    return result


def fits(text: str, width: int = 80) -> None:
    """Every line fits `width` (but one that is a path alone), and no number is cut."""
    for line in text.splitlines():
        assert len(line) <= width or " " not in line.strip(), line
        assert not NUMBER_CUT.search(line.strip(" │┃")), line


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """An image folder, its tiny_cnn store and a linear head on it (one setting, one epoch)."""
    from featx.data import DatasetOptions, open_dataset
    from featx.extraction import ExtractConfig, extract
    from featx.probes.sweep import HeadConfig
    from featx.probes.train import train_head

    tmp = tmp_path_factory.mktemp("small")
    root = make_class_tree(tmp / "cells", per_class=6)
    ds = open_dataset(root, DatasetOptions())
    config = ExtractConfig(weights="none", workers=0, engine="torch", dtype="float32")
    store = Path(extract(ds, "tiny_cnn", tmp / "stores", config, show_progress=False).store)
    settings = HeadConfig(epochs=1, lrs=(0.1,), weight_decays=(0.0,), select="val")
    head = train_head(store, "linear", settings, out=tmp / "heads" / "cells", show_progress=False)
    return root, store, head.path


def test_predict_takes_threads_as_extract_does(small, tmp_path, monkeypatch):
    import featx.extraction.run as run_module

    root, _, head = small
    helps = {name: run(name, "--help").output for name in ("extract", "predict")}
    threads = [re.search(r"--threads N\s+(.*?)(?=\n\s*--|\Z)", text, re.S).group(1) for text in helps.values()]
    assert " ".join(threads[0].split()) == " ".join(threads[1].split())
    assert "[default: torch's thread count" in " ".join(threads[1].split())
    seen = []
    real = run_module.engine_for

    def spy(backbone, config, *args, **kwargs):
        seen.append(config.threads)
        return real(backbone, config, *args, **kwargs)

    monkeypatch.setattr(run_module, "engine_for", spy)
    run("predict", root / "ants", "--head", head, "--threads", 1, "--engine", "torch", "--workers", 0,
        "--out", tmp_path / "p.csv")
    assert seen == [1]
