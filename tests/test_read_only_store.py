"""A complete store on a read-only mount (issue 32): `featx extract` on the unchanged dataset
reports the store complete, as docs/store.md promises; only a run that must write says it cannot."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from featx.cli import app
from tests.conftest import make_class_tree
from tests.test_store import read_only  # noqa: F401 (fixture)

EXTRACT = ["extract", ".", "-b", "tiny_cnn", "--weights", "none", "--workers", "0"]


def test_featx_extract_reports_a_complete_store_on_a_read_only_mount(tmp_path, read_only, monkeypatch):
    data = make_class_tree(tmp_path / "data", per_class=4)
    monkeypatch.chdir(data)  # `cd DATA; featx extract .`: the stores folder inside the mount
    runner = CliRunner()
    first = runner.invoke(app, EXTRACT)
    assert first.exit_code == 0, first.stderr
    stores = data / "stores"
    for lock in stores.glob("*.lock"):
        lock.unlink()
    before = sorted(p.name for p in stores.iterdir())
    for folder in (stores, data / "ants", data / "bees", data):
        read_only(folder)
    again = runner.invoke(app, EXTRACT)
    assert again.exit_code == 0, again.stderr
    assert "complete" in again.stdout and "cannot write" not in again.stderr
    assert sorted(p.name for p in stores.iterdir()) == before
    # Another backbone's store would have to be written: that is one line, naming --out.
    other = runner.invoke(app, EXTRACT[:3] + ["tiny_cnn", "--weights", "none", "--workers", "0", "--views", "1"])
    assert other.exit_code != 0 and "--out stores: cannot write" in other.stderr, other.stderr


def test_an_update_on_a_read_only_mount_says_it_cannot_write(tmp_path, read_only, monkeypatch):
    data = make_class_tree(tmp_path / "data", per_class=4)
    monkeypatch.chdir(data)
    runner = CliRunner()
    assert runner.invoke(app, EXTRACT).exit_code == 0
    for lock in (data / "stores").glob("*.lock"):
        lock.unlink()
    Path(data / "ants" / "ants_00.png").unlink()  # a changed dataset: an update must write
    read_only(data / "stores")
    again = runner.invoke(app, EXTRACT)
    assert again.exit_code != 0 and "--out stores: cannot write" in again.stderr and "Traceback" not in again.stderr, \
        again.stderr
