"""A complete store on a read-only mount (issue 32): `featx extract` on the unchanged dataset
reports the store complete, as docs/store.md promises; only a run that must write says it cannot."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_a_batch_that_cannot_fit_in_memory_is_refused_before_any_store(tmp_path, monkeypatch):
    """--input-size 4096 x --batch-size 64 was OOM-killed at 22.8 GB leaving an incomplete store;
    here the same arithmetic at the tiny backbone's 32 px against 1 MB available."""
    from featx.errors import FeatxError
    from featx.extraction import extract

    data = make_class_tree(tmp_path / "data", per_class=2)
    monkeypatch.setattr("featx.runtime.memory.available_memory_bytes", lambda: 1_000_000)
    with pytest.raises(FeatxError, match=r"--batch-size 64 at --input-size 32 needs at least 1\.6 MB of memory, "
                                         r"1\.0 MB is available; lower --batch-size \(at most 40\)"):
        extract(data, "tiny_cnn", tmp_path / "stores", weights="none", workers=0, show_progress=False)
    assert not list(tmp_path.rglob("*.h5"))
