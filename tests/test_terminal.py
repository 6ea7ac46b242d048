"""At an 80-column terminal: help that reads whole, and command output that never cuts a number."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from featx.cli import app

COMMANDS = sorted(typer.main.get_command(app).commands)


def run(args: list[str], columns: int = 80):
    result = CliRunner().invoke(app, args, env={"COLUMNS": str(columns), "TERM": "dumb"})
    return result


def summary(name: str) -> str:
    return (typer.main.get_command(app).commands[name].help or "").split("\n\n")[0]


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_summary_is_one_sentence_that_featx_help_shows_whole(name):
    text = summary(name).strip()
    assert "\n" not in text, f"{name}: its first help paragraph breaks mid-sentence: {text!r}"
    assert text.endswith(".") and text.count(". ") == 0, text
    listing = run(["--help"]).output
    # The rows of `featx --help` for this command, joined, are the whole summary.
    rows = listing.splitlines()
    start = next(i for i, row in enumerate(rows) if re.match(rf"\W*{re.escape(name)}\s", row))
    shown = [re.sub(rf"^\W*{re.escape(name)}\s+", "", rows[start]).strip(" │")]
    for row in rows[start + 1:]:
        cell = row.strip(" │")
        if not cell or not row.startswith("│" + " " * 14):
            break
        shown.append(cell)
    assert " ".join(shown) == text


@pytest.mark.parametrize("name", COMMANDS)
def test_help_at_80_columns_keeps_option_names_and_metavars_whole(name):
    text = run([name, "--help"]).output
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text  # rich's cut of a name too long for its column
    command = typer.main.get_command(app).commands[name]
    for param in command.params:
        for opt in getattr(param, "opts", []) + getattr(param, "secondary_opts", []):
            if opt.startswith("--") and not param.hidden:
                assert re.search(rf"(^|[\s,/]){re.escape(opt)}([\s,/=]|$)", text, re.M), (name, opt)
        metavar = getattr(param, "metavar", None)
        if metavar and not param.hidden and param.param_type_name == "option":
            assert metavar in text, (name, metavar)


@pytest.mark.parametrize("columns", [80, 160])
def test_a_default_described_in_words_reads_like_a_value(columns):
    text = run(["extract", "--help"], columns).output
    assert "[default: (" not in text
    assert re.search(r"\[default: 1 on CPU, up to 16 on\s*(│\s*)*CUDA", text)
    finetune = run(["finetune", "--help"], columns).output
    assert re.search(r"\[default:\s*(│\s*)*runs/finetune\]", finetune)


NUMBER_CUT = re.compile(r"\d[.,]$|^[.,]?\d*\]|…")  # a number or interval broken over lines, or cut


def test_train_head_at_80_columns_keeps_every_line_and_number_whole(tmp_path, monkeypatch):
    from tests.conftest import make_feature_store

    monkeypatch.chdir(tmp_path)
    make_feature_store(tmp_path / "blobs.h5", separation=0.8)
    result = run(["train-head", "blobs.h5", "--epochs", "3"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert not any(NUMBER_CUT.search(line.strip(" │┃")) for line in lines), result.stdout
    assert any("train+val (out-of-fold)" in line for line in lines)
    # Intervals whole, on the metric's own row; the confusion matrix is a table of counts.
    top1 = next(line for line in lines if line.startswith("│ top-1"))
    assert len(re.findall(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", top1)) == 2
    assert "[[" not in result.stdout and "true \\ predicted" in result.stdout
    assert lines[-1] == "next: featx predict IMAGES --head heads/blobs.linear.safetensors"


def test_train_head_uses_one_thread_for_small_products_unless_told(monkeypatch):
    from featx.runtime.device import THREADED_BATCH_X_DIM, head_threads, torch_threads
    import torch

    assert head_threads(256, 1504) == 1
    assert head_threads(256, 1504, requested=3) == 3
    assert head_threads(THREADED_BATCH_X_DIM, 1) == max(1, min(torch.get_num_threads(), __import__("os").cpu_count()))
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
