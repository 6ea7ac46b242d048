"""The harness of the standing adversarial suite (tests/test_bad_inputs.py).

A case is one bad input given to the real `featx` command (the same click group the console
script runs, so its error handling is the one users see). Each area of featx keeps its own table
in tests/bad_inputs_<area>.py: a list CASES of Case(...). The suite asserts, for every case:
a non-zero exit status (2 for usage/config errors when `code` says so), no traceback, one
`error:` line on stderr that matches `names` (the file or option and the problem), and nothing
left behind in the case's output folder `OUT` (no partial files, no `.tmp-` leftovers).

Args of a case may hold these placeholders, filled from the shared `World` and the case's own
folder: {data} a class tree of 2x8 images, {store} a complete store of it (tiny_cnn),
{head} a linear head trained on that store, {out} the case's output folder (must stay empty),
{tmp} the case's scratch folder (for inputs the case's `setup` writes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from typer.testing import CliRunner


@dataclass(frozen=True)
class World:
    data: Path
    store: Path
    head: Path  # NAME.safetensors


@dataclass(frozen=True)
class Case:
    id: str  # short, unique: shown in the test name
    args: list[str]
    names: str  # a regex the error line must match: the file or option, and the problem
    code: int | None = None  # the exact exit status when it matters (2: usage errors); else any != 0
    setup: Callable[[Path, World], None] | None = None  # writes the bad input under {tmp}
    stdin: str | None = None
    tags: tuple[str, ...] = field(default=())


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    exception: BaseException | None


def run_case(case: Case, world: World, tmp: Path) -> tuple[Outcome, Path]:
    """Run the case's command in `tmp` (its scratch folder); returns the outcome and OUT."""
    from featx.cli import app

    out = tmp / "out"
    scratch = tmp / "in"
    scratch.mkdir(parents=True, exist_ok=True)
    if case.setup:
        case.setup(scratch, world)
    fill = {"data": world.data, "store": world.store, "head": world.head, "out": out, "tmp": scratch}
    args = [a.format(**{k: str(v) for k, v in fill.items()}) for a in case.args]
    result = CliRunner().invoke(app, args, input=case.stdin, env={"COLUMNS": "200"})
    return Outcome(result.exit_code, result.stdout, result.stderr, result.exception), out


def check_clean_failure(case: Case, outcome: Outcome, out: Path) -> None:
    assert outcome.code != 0, f"{case.id}: exit 0 on a bad input\n{outcome.stdout}"
    if case.code is not None:
        assert outcome.code == case.code, f"{case.id}: exit {outcome.code}, expected {case.code}\n{outcome.stderr}"
    exc = outcome.exception
    assert exc is None or isinstance(exc, SystemExit), f"{case.id}: traceback: {exc!r}"
    text = outcome.stdout + outcome.stderr
    assert "Traceback" not in text, f"{case.id}: traceback in the output\n{text}"
    lines = [l for l in outcome.stderr.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1, f"{case.id}: expected one 'error:' line on stderr, got\n{outcome.stderr}"
    assert re.search(case.names, lines[0]), f"{case.id}: {lines[0]!r} does not match {case.names!r}"
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*")) if out.exists() else []
    leftovers = [p for p in left if ".tmp-" in p or p.endswith((".h5", ".safetensors", ".json", ".csv"))]
    assert not leftovers, f"{case.id}: files left behind in OUT: {leftovers}"


# Setups that several tables use.

def write_file(name: str, data: str | bytes):
    """A setup that writes {tmp}/NAME holding `data`."""
    def setup(tmp: Path, world: World) -> None:
        (tmp / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    return setup


def make_dir(name: str):
    """A setup that makes the folder {tmp}/NAME."""
    def setup(tmp: Path, world: World) -> None:
        (tmp / name).mkdir()
    return setup


def config(text: str | bytes, name: str = "c.yaml"):
    """A --config file {tmp}/NAME (c.yaml) holding `text`."""
    return write_file(name, text)


# {tmp}/file: a file where an option expects a folder.
a_file = write_file("file", "not a folder")
