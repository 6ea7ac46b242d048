"""Issue 32: a DataLoader worker that dies while the main process receives its batch.

The main process then gets ConnectionResetError, EOFError or BrokenPipeError from the queue or
the shared-memory handle (not the RuntimeError a worker's exit status gives): the user sees one
line naming the likely cause and what to do, and the store keeps its finished batches."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from featx.data import DatasetOptions, open_dataset
from featx.extraction import ExtractConfig, extract
from featx.extraction.runner import Runner
from tests.conftest import assert_same_store

ARGS = ["-b", "tiny_cnn", "--weights", "none", "--input-size", "32", "--batch-size", "4", "--views", "1",
        "--workers", "0", "--engine", "torch", "--val-frac", "0", "--test-frac", "0.5"]
CONFIG = ExtractConfig(weights="none", input_size=32, batch_size=4, views=1, workers=0, engine="torch")


def dies_receiving(exc: BaseException, after: int):
    """Runner.loader whose iteration raises `exc` (as the worker's end of the queue went away)
    once `after` batches were received."""
    original = Runner.loader

    def loader(self, todo):
        batches = iter(original(self, todo))

        def receive():
            for i, item in enumerate(batches):
                if i == after:
                    raise exc
                yield item
        return receive()
    return loader


def _done_rows(folder: Path) -> int:
    (store,) = folder.glob("*.h5")
    with h5py.File(store, "r") as f:
        return int(np.count_nonzero(f["done/clean"][:]))


@pytest.mark.parametrize("exc", [ConnectionResetError(104, "Connection reset by peer"), EOFError(),
                                 BrokenPipeError(32, "Broken pipe")], ids=lambda e: type(e).__name__)
def test_a_worker_dying_mid_receive_is_one_line_naming_the_cause(class_tree, tmp_path, monkeypatch, exc):
    from featx.cli import app

    monkeypatch.setattr(Runner, "loader", dies_receiving(exc, after=2))
    result = CliRunner().invoke(app, ["extract", str(class_tree), *ARGS, "--out", str(tmp_path / "s")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert f"a data loading worker died ({type(exc).__name__}" in line
    assert "out of memory" in line and "--workers 0" in line and "re-run the same command to resume" in line
    assert 0 < _done_rows(tmp_path / "s") < 12  # the batches received before are kept


def test_a_store_left_by_a_worker_dying_mid_receive_resumes_to_a_clean_runs(class_tree, tmp_path, monkeypatch):
    from featx.errors import FeatxError

    ds = open_dataset(class_tree, DatasetOptions(val_frac=0.0, test_frac=0.5))
    monkeypatch.setattr(Runner, "loader", dies_receiving(ConnectionResetError(104, "reset"), after=1))
    with pytest.raises(FeatxError, match="a data loading worker died"):
        extract(ds, "tiny_cnn", tmp_path / "s", CONFIG, show_progress=False)
    monkeypatch.undo()
    resumed = extract(ds, "tiny_cnn", tmp_path / "s", CONFIG, show_progress=False)
    assert resumed.status == "resumed"
    clean = extract(ds, "tiny_cnn", tmp_path / "clean", CONFIG, show_progress=False)
    assert_same_store(Path(resumed.store), Path(clean.store))


def test_an_in_memory_embed_does_not_promise_saved_batches(class_tree, monkeypatch):
    """embed() keeps nothing on disk: its worker-death line gives the cause and the fix only."""
    from featx.backbones import create_backbone
    from featx.errors import FeatxError
    from featx.extraction.run import embed

    ds = open_dataset(class_tree, DatasetOptions(val_frac=0.0, test_frac=0.5))
    monkeypatch.setattr(Runner, "loader", dies_receiving(EOFError(), after=1))
    with pytest.raises(FeatxError, match="a data loading worker died") as info:
        embed(ds, create_backbone("tiny_cnn", "none", input_size=32), batch_size=4, workers=0, engine="torch")
    assert "--workers 0" in str(info.value) and "resume" not in str(info.value)
