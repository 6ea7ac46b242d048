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


def test_scan_shows_decimal_keys_compactly_and_names_only_where_there_are_some(tmp_path):
    from tests.conftest import write_image

    labels = ["0.0", "0.3333333333333333", "0.6666666666666666", "1.0"]
    rows = []
    for i in range(8):
        write_image(tmp_path / "imgs" / f"{i}.png", i)
        rows.append(f"imgs/{i}.png,{labels[i % 4]}")
    (tmp_path / "m.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    (tmp_path / "names.json").write_text('{"0.0": "good", "1.0": "broken"}')
    text = run("scan", tmp_path / "m.csv", "--class-map", tmp_path / "names.json").stdout
    fits(text)
    assert "0.3333" not in text and re.search(r"│ 0\.333 +│ +│", text) and re.search(r"│ 1\.0 +│ broken", text)
    plain = run("scan", tmp_path / "m.csv").stdout
    assert "name" not in plain and re.search(r"┃ class ┃ train ┃", plain) and "│ 0.667 " in plain


def test_compact_keys_keep_every_class_apart():
    from featx.cli.data_cmds import compact_keys

    assert compact_keys(["0.0", "0.3333333333333333", "12", "ants"]) == ["0.0", "0.333", "12", "ants"]
    assert compact_keys(["0.33331", "0.33334"]) == ["0.33331", "0.33334"]
    assert compact_keys(["0.123456", "0.123457", "2.5"]) == ["0.123456", "0.123457", "2.5"]
    assert compact_keys(["0.1234561", "0.1234572"]) == ["0.123456", "0.123457"]


def test_a_rate_not_known_is_left_out_and_a_one_step_task_still_has_one():
    from rich.progress import Progress

    from featx.runtime.progress import progress_line, task_rate

    line = progress_line("embed tiny_cnn", 0, 1, None, 0.0, "img", 80)
    assert line.endswith("0/1  0:00 eta -:--") and "- img/s" not in line and "/s" not in line
    with Progress() as progress:  # one advance: rich keeps no speed of it
        task_id = progress.add_task("embed", total=1)
        progress.advance(task_id, 1)
        progress.stop_task(task_id)
        task = progress.tasks[0]
        assert task_rate(task) and task_rate(task) == pytest.approx(1 / task.elapsed)


def test_tta_family_and_range_test_kinds_are_the_librarys_own():
    from featx.backbones.registry import FAMILIES, list_backbones
    from featx.backbones.symmetry import TTA_RECIPES
    from featx.cli import options
    from featx.extraction.settings import EXTRACT
    from featx.heads.kinds import names

    assert EXTRACT["tta"].choices == tuple(TTA_RECIPES)  # the recipes symmetry.py computes
    assert "--tta none|flip|hv-flip|dihedral" in run("extract", "--help").output
    assert all(list_backbones(family=family) for family in FAMILIES)  # each lists something
    assert "--family " + "|".join(FAMILIES) in run("backbones", "--help").output
    assert options.SWEPT_KINDS.choices == names(backend="torch")
    source = Path(options.__file__).read_text()
    assert '"hv-flip"' not in source and '"packaged"' not in source and '"mlp"' not in source
