"""What every featx command shares: the consoles, one-line errors and exit codes, readable help,
Ctrl-C, and opening a dataset from the data options. --config is featx/cli/config_file.py,
--out checks featx/cli/outputs.py.

Exit codes: 0 done; 1 a FeatxError (bad data, missing weights, a locked store...); 2 a usage
error (an unknown or invalid option or config value, a missing argument: click's convention,
and featx's ConfigError); 130 interrupted (Ctrl-C). Anything else is a featx bug and keeps
its traceback.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from featx.cli.config_file import ClickException, not_finite
from featx.errors import ConfigError, FeatxError

out = Console(soft_wrap=True)  # long paths stay on one line (greppable, copyable)
err = Console(stderr=True, soft_wrap=True)
# Below this many columns a command's help is click's plain two-column layout: rich's four-column
# table splits metavars mid-word there (`auto|torch|onnxrunti` / `me`) and cuts option names.
PLAIN_HELP_BELOW = 100

# What Ctrl-C leaves behind, per command: finished work survives, re-running resumes it.
INTERRUPTED = {
    "extract": "finished batches are saved, re-run the same command to resume",
    "finetune": "finished epochs are saved, re-run the same command to resume",
    "compare": "finished stores are saved, re-run the same command to resume",
    "train-head": "no head was saved; re-run the same command to train it",
    "lr-find": "no curve was saved; re-run the same command to measure it",
}


def error_line(message: str) -> None:
    """One line on stderr, `error: ...` (a message with newlines is joined)."""
    text = "; ".join(line.strip() for line in str(message).splitlines() if line.strip())
    err.print(f"[bold red]error:[/] {escape(text)}", highlight=False)


class FeatxGroup(TyperGroup):
    """The `featx` group: every failure ends as one line on stderr and an exit code."""

    def get_help_option(self, ctx: typer.Context):
        return _untyped(super().get_help_option(ctx))

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        prog_name = prog_name or "featx"  # not `python -m featx` or `root` in messages
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except ClickException as exc:
            sys.exit(_usage_error(exc))
        except ConfigError as exc:
            error_line(str(exc))
            sys.exit(2)
        except FeatxError as exc:
            error_line(str(exc))
            sys.exit(1)
        except typer.Abort:
            error_line("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # before a command runs (reading options); typer would exit silently
            err.print("interrupted", markup=False, highlight=False)
            raise typer.Exit(130) from None


def _usage_error(exc) -> int:
    if type(exc).__name__ == "NoArgsIsHelpError":  # bare `featx`: the help (rich printed it already)
        message = exc.format_message()
        if message:
            err.print(message, markup=False, highlight=False)
        return exc.exit_code
    ctx = getattr(exc, "ctx", None)
    hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    error_line(exc.format_message() + hint)
    return exc.exit_code


class FeatxCommand(TyperCommand):
    """A featx command: help without type labels on flags and arguments (their names say it),
    a conventional usage line (STORE required, [DATA] optional), and a word on Ctrl-C."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.param_type_name == "argument" or getattr(param, "is_flag", False):
                _untyped(param)
            if isinstance(getattr(param, "show_default", None), str):
                _described_default(param)

    def format_help(self, ctx: typer.Context, formatter) -> None:
        if shutil.get_terminal_size().columns >= PLAIN_HELP_BELOW:
            return super().format_help(ctx, formatter)
        mode, self.rich_markup_mode = self.rich_markup_mode, None
        try:
            return super().format_help(ctx, formatter)
        finally:
            self.rich_markup_mode = mode

    def get_help_option(self, ctx: typer.Context):
        return _untyped(super().get_help_option(ctx))

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = param.metavar or param.name.upper()
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def invoke(self, ctx: typer.Context) -> Any:
        check_values(ctx, self.params)
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # typer would turn it into exit status 130, silently
            reason = INTERRUPTED.get(self.name)
            err.print("interrupted" + (f"; {reason}" if reason else ""), markup=False, highlight=False)
            raise typer.Exit(130) from None


def check_values(ctx: typer.Context, params) -> None:
    """What no option's type catches: nan and inf where a number is expected, a NUL character
    in text or a path (no file name can hold one)."""
    for param in params:
        value = ctx.params.get(param.name)
        problem = not_finite(value)
        items = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(item, (str, Path)) and "\x00" in str(item) for item in items):
            problem = "contains a NUL character"
        if problem:
            raise typer.BadParameter(problem, ctx=ctx, param=param)


def _described_default(param) -> None:
    """`[default: 1 on CPU, up to 16 on CUDA]` for a default described in words, as a value's
    `[default: 64]` is shown (typer and click would print `[default: (1 on CPU, ...)]`)."""
    text = param.show_default
    param._get_default_string = lambda *args, **kwargs: text


def _untyped(param):
    """No type label beside a flag or an argument (typer >= 0.2x prints '<bool>', '<path>')."""
    if param is not None:
        param.display_type_rich = _no_type
    return param


def _no_type(ctx: Any = None) -> None:
    return None


def next_step(command: str, *paths) -> None:
    """A command's last line, what to run next: `next: featx train-head STORE`. The paths come
    last (shell-quoted), so the words before them fit 80 columns whatever their length."""
    import shlex

    tail = " ".join(shlex.quote(str(p)) for p in paths)
    out.print(f"next: {command}" + (f" {tail}" if tail else ""), markup=False, highlight=False)


def say(text: str) -> None:
    """A line of prose, wrapped at words to the terminal (numbers stay whole; paths go on lines
    of their own or last)."""
    out.print(text, markup=False, highlight=False, soft_wrap=False)


def plural(count: int, noun: str) -> str:
    """'1 shard', '3 shards', '1,200 predictions'."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def given(ctx: typer.Context, name: str) -> bool:
    """Did the user set option `name` (command line, environment, or --config), rather than
    leave its default?"""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


def old_spelling(ctx: typer.Context, old: str, new: str, old_value: Any, value: Any) -> Any:
    """The value of `new`, or of its deprecated spelling `old` (`--head linear` for `--kind`)."""
    if old_value is None or old_value == [] or old_value == ():
        return value
    new_name = new.lstrip("-").replace("-", "_")
    if given(ctx, new_name):
        raise ConfigError(f"{old} is the old spelling of {new}; give only {new}")
    err.print(f"note: `featx {ctx.command.name} {old}` is the old spelling of {new}; use {new}",
              markup=False, highlight=False)
    return old_value


def require_data(data: Optional[str]) -> str:
    if data is None:
        raise ConfigError("missing DATA: give it on the command line, or as `data:` in --config")
    return data


DATA_OPTIONS = ("label_col", "binarize", "val_frac", "test_frac", "split_seed", "class_map")


def open_data(data: str, params: dict):
    """The dataset DATA as the data options in `params` (a command's ctx.params) describe it."""
    from featx.data import DatasetOptions, open_dataset, subset

    options = DatasetOptions(**{name: params[name] for name in DATA_OPTIONS})
    dataset = open_dataset(data, options)
    return subset(dataset, params["subset"], options.split_seed) if params.get("subset") else dataset


def data_options_given(ctx: typer.Context) -> list[str]:
    """The data options the user set, as `--label-col`, ..."""
    return ["--" + name.replace("_", "-") for name in (*DATA_OPTIONS, "subset") if given(ctx, name)]
