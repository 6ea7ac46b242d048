"""Property tests of the command line: whatever a config file or an option value holds, featx
answers with exit status 0, 1 or 2, never a traceback, and an error is exactly one `error:` line.

Every run points at DATA (or a STORE, a head) that does not exist, so validation must happen
before any work: no model runs, each example takes milliseconds.
"""

from __future__ import annotations

import datetime

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.main import get_command
from typer.testing import CliRunner

from featx.cli import app

COMMANDS = {  # command -> its arguments, all naming things that do not exist
    "extract": ["extract", "no-such-data"],
    "train-head": ["train-head", "no-such-store.h5"],
    "finetune": ["finetune", "no-such-data", "--head", "no-such-head.safetensors"],
}
GROUP = get_command(app)


def option_names(command: str) -> list[str]:
    """The config keys of `command`: each option's long name, as written in a file (both spellings)."""
    names = []
    for param in GROUP.commands[command].params:
        for opt in getattr(param, "opts", ()):
            if opt.startswith("--") and param.name != "config":
                names += [opt[2:], opt[2:].replace("-", "_")]
    return sorted(set(names)) + ["data"]


def option_flags(command: str) -> list[tuple[str, bool]]:
    """(--name, takes a value) of every option of `command` but --config and --help."""
    return [(opt, not getattr(param, "is_flag", False)) for param in GROUP.commands[command].params
            if param.param_type_name == "option" and param.name not in ("config", "help")
            for opt in param.opts if opt.startswith("--")]


TRICKY = ["", "-1", "0", "nan", "inf", "-inf", "1e400", "auto", "none", "true", "..", "a,b", "1,0",
          "\x00", "mild", "cpu", "cuda:99", "linear", "  ", "-", "--", "é"]
text = st.one_of(st.sampled_from(TRICKY),
                 st.text(st.characters(blacklist_characters="/\\", blacklist_categories=("Cs",)), max_size=12))
scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(), text,
                   st.dates(min_value=datetime.date(1, 1, 1)))
value = st.one_of(scalar, st.lists(scalar, max_size=3), st.dictionaries(text, scalar, max_size=2),
                  st.lists(st.lists(scalar, max_size=2), max_size=2))


def config_docs(command: str):
    keys = st.one_of(st.sampled_from(option_names(command)), text)
    return st.dictionaries(keys, value, max_size=4)


def raw_files():
    """File contents that are not a mapping at all: lists, scalars, junk, binary."""
    return st.one_of(st.binary(max_size=40), st.sampled_from(["", "- a\n- b\n", "3\n", "{", "a: [", "::"]),
                     st.text(max_size=40))


def run(args: list[str]):
    return CliRunner().invoke(app, args, env={"COLUMNS": "200"})


def check(result) -> None:
    """Exit 0, 1 or 2; no traceback; a failure is one `error:` line."""
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), f"traceback: {exc!r}"
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output)
    assert "Traceback" not in result.output
    if result.exit_code:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, result.stderr


FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("command", sorted(COMMANDS))
@FUZZ
@given(data=st.data())
def test_any_config_file_fails_cleanly(command, data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suffix = data.draw(st.sampled_from([".yaml", ".toml"]))
    path = tmp_path / f"c{suffix}"
    if data.draw(st.booleans()):
        doc = data.draw(config_docs(command))
        path.write_text(toml_text(doc) if suffix == ".toml" else yaml.safe_dump(doc, allow_unicode=True))
    else:
        content = data.draw(raw_files())
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    check(run(COMMANDS[command] + ["--config", str(path)]))


@pytest.mark.parametrize("command", sorted(COMMANDS))
@FUZZ
@given(data=st.data())
def test_any_option_values_fail_cleanly(command, data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = list(COMMANDS[command])
    for flag, takes_value in data.draw(st.lists(st.sampled_from(option_flags(command)), max_size=4)):
        args += [flag, data.draw(text)] if takes_value else [flag]
    check(run(args))


def toml_text(doc: dict) -> str:
    """A TOML rendering of what TOML can hold (inline tables for mappings, arrays for lists)."""
    def key(k) -> str:
        escaped = str(k).replace("\\", "\\\\").replace('"', '\\"')
        return '"' + escaped.encode("unicode_escape").decode().replace("\\\\\\\\", "\\\\") + '"'

    def literal(v) -> str:
        if v is None:
            return '""'
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, float) and v != v:
            return "nan"
        if isinstance(v, float) and abs(v) == float("inf"):
            return "inf" if v > 0 else "-inf"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, datetime.date):
            return f"{v.year:04d}-{v.month:02d}-{v.day:02d}"
        if isinstance(v, list):
            return "[" + ", ".join(literal(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{key(k)} = {literal(x)}" for k, x in v.items()) + "}"
        return key(v)

    return "".join(f"{key(k)} = {literal(v)}\n" for k, v in doc.items())
