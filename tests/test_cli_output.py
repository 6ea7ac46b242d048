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
    """Every line fits `width` but for a path at its end (a long one stays whole, to copy), and
    no number is cut."""
    for line in text.splitlines():
        words = line.rstrip().rsplit(" ", 1)
        path_last = len(words) == 2 and "/" in words[1]
        assert len(line) <= width or (path_last and len(words[0]) < width), line
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


def test_scan_shows_decimal_keys_compactly_and_names_only_where_there_are_some(tmp_path, monkeypatch):
    from tests.conftest import write_image

    monkeypatch.chdir(tmp_path)
    labels = ["0.0", "0.3333333333333333", "0.6666666666666666", "1.0"]
    rows = []
    for i in range(8):
        write_image(tmp_path / "imgs" / f"{i}.png", i)
        rows.append(f"imgs/{i}.png,{labels[i % 4]}")
    (tmp_path / "m.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    (tmp_path / "names.json").write_text('{"0.0": "good", "1.0": "broken"}')
    text = run("scan", "m.csv", "--class-map", "names.json").stdout
    fits(text)
    assert "0.3333" not in text and re.search(r"│ 0\.333 +│ +│", text) and re.search(r"│ 1\.0 +│ broken", text)
    plain = run("scan", "m.csv").stdout
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


def test_extract_at_80_columns_then_names_the_next_command(tmp_path, monkeypatch):
    make_class_tree(tmp_path / "cells", per_class=4)
    monkeypatch.chdir(tmp_path)
    args = ["extract", "cells", "-b", "tiny_cnn", "--weights", "none", "--engine", "torch", "--workers", "0"]
    for status in ("created", "already complete"):
        text = run(*args).stdout
        fits(text)
        lines = text.splitlines()
        assert lines[0].startswith(f"tiny_cnn: {status}") and "8 samples, 0 failed" in text
        assert lines[-2:] == ["  stores/cells_tiny_cnn-init0_32px_clean.h5",
                              "next: featx train-head stores/cells_tiny_cnn-init0_32px_clean.h5"]
    assert not list((tmp_path / "stores").glob("*.lock"))  # the writer's lock went with it


def test_predict_at_80_columns_counts_in_words_and_names_the_next_command(small, tmp_path, monkeypatch):
    root, _, head = small
    monkeypatch.chdir(tmp_path)
    text = run("predict", root / "ants" / "ants_00.png", "--head", head, "--engine", "torch",
               "--workers", "0", "--out", "p.csv").stdout
    fits(text)
    assert text.splitlines() == ["1 prediction written to p.csv", f"next: featx export-model {head}"]


def test_scan_names_extract_with_the_same_data_options(tmp_path, monkeypatch):
    make_class_tree(tmp_path / "cells", per_class=4)
    (tmp_path / "names.json").write_text('{"ants": "formicidae"}')
    monkeypatch.chdir(tmp_path)
    text = run("scan", "cells", "--class-map", "names.json", "--val-frac", "0.25").stdout
    fits(text)
    assert text.splitlines()[-1] == "next: featx extract --val-frac 0.25 --class-map names.json cells"


def test_report_names_the_best_head_next(small, tmp_path, monkeypatch):
    import featx.report

    root, store, head = small
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(featx.report, "write_report", lambda results, target, fmt, **kw: target)  # no plots
    assert run("report", head.parent, "--out", "r.html").stdout.splitlines()[-1] == \
        f"next: featx predict IMAGES --head {head}"


def test_audit_names_the_next_command(small, tmp_path, monkeypatch):
    from types import SimpleNamespace

    import featx.audit
    import featx.audit.page

    root, store, head = small
    monkeypatch.chdir(tmp_path)
    done = SimpleNamespace(summary={}, files={"page": Path("audit/audit.html")})  # the audit's own tests run it
    monkeypatch.setattr(featx.audit, "audit", lambda *args, **kwargs: done)
    monkeypatch.setattr(featx.audit.page, "summary_lines", lambda summary: ["2 outliers"])
    import featx.report.maps

    drawn = []
    monkeypatch.setattr(featx.report.maps, "audit_map", lambda folder, st, log: drawn.append(folder))
    audited = run("audit", store, "--out", "audit", "--checks", "outliers", "--no-pixels").stdout
    assert drawn == [Path("audit")]  # the page shows the map: next, which images to label
    assert audited.splitlines()[-1] == f"next: featx select --budget 50 {store}"
    unmapped = run("audit", store, "--out", "audit", "--checks", "outliers", "--no-pixels", "--no-map").stdout
    assert len(drawn) == 1 and unmapped.splitlines()[-1] == f"next: featx map --audit audit {store}"


def test_the_best_head_is_named_by_test_then_val_top1():
    from featx.cli.report_cmds import best_head

    assert best_head([(0.7, 0.9, Path("a")), (0.8, 0.1, Path("b"))]) == Path("b")
    assert best_head([(None, 0.6, Path("a")), (None, 0.9, Path("b"))]) == Path("b")
    assert best_head([(None, None, Path("a"))]) is None


def test_backbones_shows_the_pooled_columns_the_default_store_has(tmp_path):
    from featx.backbones import get_spec
    from featx.data import DatasetOptions, open_dataset
    from featx.extraction import ExtractConfig, extract
    from featx.store import FeatureStore

    text = run("backbones", "efficientnet_lite").stdout
    fits(text)
    assert re.search(r"│ efficientnet_lite0 │ packaged │ 1280 │ 224 +│", text)
    assert "1280 final + 224 pooled at block11 = 1504 with the default --pool" in " ".join(text.split())
    # The listed width is the store's: tiny_features has cut points, so --pool auto appends.
    ds = open_dataset(make_class_tree(tmp_path / "cells", per_class=2), DatasetOptions())
    config = ExtractConfig(weights="none", workers=0, engine="torch", dtype="float32")
    store = extract(ds, "tiny_features", tmp_path / "stores", config, show_progress=False).store
    spec = get_spec("tiny_features")
    with FeatureStore(store) as st:
        assert (st.final_dim, st.feature_dim - st.final_dim, st.pool) == \
            (spec.feature_dim, spec.pooled["dim"], spec.pooled["block"])
    assert get_spec("tiny_cnn").pooled is None  # no cut points: nothing appended
