"""Progress lines: they fit the width without cutting a number, and show in notebooks and logs."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from featx.runtime import progress
from featx.runtime.progress import progress_bar, progress_line

NUMBERS = re.compile(r"[\d,]+/[\d,]+  [\d.,]+ img/s  [\d:]+ eta [\d:]+$")


@pytest.mark.parametrize("width", [60, 79, 100, 160])
def test_a_line_fits_its_width_and_keeps_every_number(width):
    line = progress_line("cross-validate 32 linear head(s), 5 folds", 8200, 16000, 1234.4, 75.0,
                         "img", width)
    assert len(line) <= width
    assert line.endswith("8,200/16,000  1,234 img/s  1:15 eta 0:06")
    assert line.startswith("cross-validate")


def test_the_bar_gives_way_before_the_description():
    wide = progress_line("scan elpv", 10, 20, 5.0, 2.0, "img", 100)
    narrow = progress_line("cross-validate 32 linear head(s), 5 folds", 10, 20, 5.0, 2.0, "img", 72)
    assert "━" in wide and "scan elpv" in wide
    assert "━" not in narrow and "─" not in narrow


def test_a_notebook_sees_the_line_rewritten_in_place(monkeypatch, capsys):
    monkeypatch.setattr(progress, "display_mode", lambda target=None: "notebook")
    monkeypatch.setattr(progress, "NOTEBOOK_REFRESH_S", 0.0)
    with progress_bar(3, "embed tiny") as advance:
        for _ in range(3):
            advance(1)
    err = capsys.readouterr().err
    frames = err.split("\r")
    assert len(frames) >= 4  # three updates and the final line, each over the last
    assert frames[-1].startswith("embed tiny") and "3/3" in frames[-1] and err.endswith("\n")
    assert "ipywidgets" not in err


def test_a_log_gets_one_final_line(monkeypatch, capsys):
    monkeypatch.setattr(progress, "display_mode", lambda target=None: "plain")
    with progress_bar(500, "hash images") as advance:
        for _ in range(500):
            advance(1)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\r" not in err and "500/500" in err


def test_an_80_column_terminal_gets_whole_numbers(monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=screen, width=80, force_terminal=True,
                                                     color_system=None))
    with progress_bar(1600, "cross-validate 32 linear head(s), 5 folds, epoch 30 of 30") as advance:
        for _ in range(16):
            advance(100)
    frames = [f for f in re.split(r"[\r\n]", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())) if f]
    assert frames and all(len(f) <= 80 for f in frames)
    assert NUMBERS.search(frames[-1].rstrip()) and "1,600/1,600" in frames[-1]


def test_disabled_progress_writes_nothing(capsys):
    with progress_bar(5, "quiet", enabled=False) as advance:
        advance(5)
    assert capsys.readouterr().err == ""


def test_a_terminal_extract_says_what_it_loads_before_torch(tmp_path):
    """The seconds of importing torch and building a backbone are announced where someone
    watches (a terminal: here a pty), before the first progress frame. (A pipe gets no such line:
    test_cli's one-line errors would have two.)"""
    import os
    import pty
    import subprocess
    import sys

    from tests.image_trees import make_class_tree

    root = make_class_tree(tmp_path / "data", classes=("a", "b"), per_class=3, seed=0)
    probe = ("import sys, builtins\n"
             "real = builtins.__import__\n"
             "def spy(name, *a, **k):\n"
             "    if name == 'torch' and 'torch' not in sys.modules:\n"
             "        sys.stderr.write('<torch import>')\n"
             "    return real(name, *a, **k)\n"
             "builtins.__import__ = spy\n"
             "from featx.cli import main\nsys.argv = ['featx'] + sys.argv[1:]\nmain()\n")
    # A built-in backbone: tests' tiny_cnn is registered by a module that imports torch first.
    command = [sys.executable, "-c", probe, "extract", str(root), "--backbone", "efficientnet_lite0",
               "--weights", "none", "--input-size", "32", "--engine", "torch", "--workers", "0", "--out"]
    env = dict(os.environ, COLUMNS="80")
    leader, follower = pty.openpty()
    proc = subprocess.Popen(command + [str(tmp_path / "stores")], stdout=follower, stderr=follower, env=env)
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    text = screen.decode(errors="replace")
    assert proc.wait(60) == 0, text
    said, torch_at, frame = (text.find("efficientnet_lite0: loading torch and the backbone"),
                             text.find("<torch import>"), text.find("extract efficientnet_lite0"))
    assert 0 <= said < torch_at < frame, text
