"""What every featx command shares: the consoles, one-line errors and exit codes, readable help,
--config, and opening a dataset from the data options.

Exit codes: 0 done; 1 a FeatxError (bad data, missing weights, a locked store...); 2 a usage
error (an unknown or invalid option or config value, a missing argument: click's convention,
and featx's ConfigError); 130 interrupted (Ctrl-C). Anything else is a featx bug and keeps
its traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from featx.errors import ConfigError, FeatxError

out = Console(soft_wrap=True)  # long paths stay on one line (greppable, copyable)
err = Console(stderr=True, soft_wrap=True)

# typer >= 0.2x vendors click (typer._click), older typer uses the click package: take the
# exception classes from typer's own BadParameter so either works.
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

# Commands whose finished work survives Ctrl-C: re-running the same command resumes.
RESUMABLE = {"extract", "finetune", "compare"}
OLD_CONFIG_KEYS = {"lrs": "lr", "weight_decays": "weight_decay"}  # HeadConfig's field names


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
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # typer turns it into exit status 130, silently
            err.print("interrupted; finished batches are saved, re-run the same command to resume"
                      if self.name in RESUMABLE else "interrupted")
            raise


def _untyped(param):
    """No type label beside a flag or an argument (typer >= 0.2x prints '<bool>', '<path>')."""
    if param is not None:
        param.display_type_rich = _no_type
    return param


def _no_type(ctx: Any = None) -> None:
    return None


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


# --- --config FILE ----------------------------------------------------------------------------

def apply_config(ctx: typer.Context, path: Optional[Path]) -> Optional[Path]:
    """--config FILE: the file's values become this command's defaults (click's default_map),
    so the command line still wins, and each value is checked by its option's own type, range
    and choices before anything runs."""
    if path is None or ctx.resilient_parsing:
        return path
    from featx.config import load_config

    params = {p.name: p for p in ctx.command.params
              if p.expose_value and p.name not in ("config", "help")}
    aliases = {opt.lstrip("-").replace("-", "_"): p.name for p in params.values()
               for opt in getattr(p, "opts", ()) if opt.startswith("--")}
    aliases.update({old: new for old, new in OLD_CONFIG_KEYS.items() if new in params})
    values = load_config(path, set(params), aliases)
    for name, value in values.items():
        param = params[name]
        value = _shaped(param, value)
        try:
            param.process_value(ctx, value)
        except ClickException as exc:
            raise ConfigError(f"{path}: {name}: {getattr(exc, 'message', exc)}") from None
        values[name] = value
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return path


def _shaped(param, value: Any) -> Any:
    """A YAML/TOML value in the shape the option takes: one value for a repeatable option
    becomes a list; a list for a one-value option ('hidden: [1024, 256]') becomes '1024,256'."""
    many = getattr(param, "multiple", False) or param.nargs != 1
    if many and not isinstance(value, (list, tuple)):
        return [value]
    if not many and isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value
