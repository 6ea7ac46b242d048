"""--config FILE: a YAML or TOML file of a command's options, checked as the command line is.

The file's values become the command's defaults (click's default_map), so the command line
still wins over them. Each value is checked before anything runs: first its shape (one value or
a list; a mapping, a date or true/false where a number or text is expected is never an option's
value), then the option's own type, range and choices. Every problem is one ConfigError naming
the file, the key as written in it, and what is wrong; the CLI exits 2.
"""

from __future__ import annotations

import datetime
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Optional

import typer

from featx.errors import ConfigError

OLD_CONFIG_KEYS = {"lrs": "lr", "weight_decays": "weight_decay"}  # HeadConfig's field names
JOINED = {"hidden"}  # one-value options a list may spell: `hidden: [1024, 256]` = --hidden 1024,256
TYPE_WORDS = {int: "an integer", float: "a number", str: "text", Path: "a path"}

# typer >= 0.2x vendors click (typer._click), older typer uses the click package: take the
# exception class from typer's own BadParameter so either works.
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def apply_config(ctx: typer.Context, path: Optional[Path]) -> Optional[Path]:
    """The --config callback: the file's values, checked, become this command's defaults."""
    if path is None or ctx.resilient_parsing:
        return path
    from featx.config import read_config, resolve_keys

    params = {p.name: p for p in ctx.command.params if p.expose_value and p.name not in ("config", "help")}
    spelled = spellings(ctx.command)
    aliases = {**spelled, **{old: new for old, new in OLD_CONFIG_KEYS.items() if new in params}}
    values = {}
    for name, (key, value) in resolve_keys(path, read_config(path), aliases).items():
        if name not in params:
            raise ConfigError(f"{path}: {unknown_key(ctx, key, name, spelled)}")
        values[name] = checked(ctx, params[name], value, f"{path}: {key}")
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return path


def checked(ctx: typer.Context, param, value: Any, where: str) -> Any:
    """`value` from the file in the shape the option takes, checked by the option itself."""
    value = shaped(param, value, where)
    try:
        result = param.process_value(ctx, value)
    except ClickException as exc:
        raise ConfigError(f"{where}: {getattr(exc, 'message', exc)}") from None
    problem = not_finite(result)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return value


def shaped(param, value: Any, where: str) -> Any:
    """One value for a one-value option, a list for a repeatable one (one value becomes a list
    of one); null only where the option's default is 'unset'."""
    many = getattr(param, "multiple", False) or param.nargs != 1
    if value is None:
        if param.default is None:
            return None
        raise ConfigError(f"{where}: no value (null); give one, or leave the key out")
    if isinstance(value, list):
        if many:
            return [scalar(param, item, where) for item in value]
        if param.name in JOINED:
            return ",".join(str(scalar(param, item, where)) for item in value)
        raise ConfigError(f"{where}: expected one value, got a list")
    item = scalar(param, value, where)
    return [item] if many else item


def scalar(param, value: Any, where: str) -> Any:
    """One value of the option's type; numbers become text where text is expected (`aug: 5`)."""
    expected = expected_type(param)
    if expected is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {describe(value)}")
    if isinstance(value, (bool, dict, list, datetime.date, datetime.time)) or \
            not isinstance(value, (str, int, float)):
        what = f"{param.metavar} ({TYPE_WORDS[expected]})" if param.metavar else TYPE_WORDS[expected]
        raise ConfigError(f"{where}: expected {what}, got {describe(value)}")
    if expected in (str, Path) and not isinstance(value, str):
        return str(value)
    return value


def describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (datetime.date, datetime.time)):
        return "a date" if isinstance(value, datetime.date) else "a time"
    if isinstance(value, (int, float, str)):
        return repr(value) if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)
    return type(value).__name__


def expected_type(param) -> type:
    """int, float, bool, str or Path: the type one value of the option converts to."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if annotation is None:  # older typer: click's ParamType
        if getattr(param, "is_flag", False):
            return bool
        name = getattr(getattr(param, "type", None), "name", "")
        return {"integer": int, "integer range": int, "float": float, "float range": float,
                "boolean": bool, "path": Path}.get(name, str)
    for _ in range(4):  # Optional[list[float]] -> list[float] -> float
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        elif origin in (list, tuple):
            annotation = typing.get_args(annotation)[0]
        elif origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return Path
    return annotation if annotation in (int, float, bool) else str


def not_finite(value: Any) -> str | None:
    """'must be a finite number, got inf' for a float value (or list item) that is nan or inf."""
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(item, float) and not math.isfinite(item):
            return f"must be a finite number, got {item:g}"
    return None


def spellings(command) -> dict[str, str]:
    """How a config file may name each option of `command`: `out` -> out_dir, `wd` -> weight_decay."""
    names = {}
    for param in command.params:
        if param.name in ("config", "help") or not param.expose_value:
            continue
        names[param.name] = param.name
        for opt in getattr(param, "opts", ()):
            if opt.startswith("--"):
                names[opt[2:].replace("-", "_")] = param.name
    return names


def unknown_key(ctx: typer.Context, key: str, name: str, spelled: dict[str, str]) -> str:
    """'viewz is not an option of featx extract (did you mean views?)', or which command has it."""
    command = ctx.command.name
    visible = sorted(k for k, target in spelled.items()
                     if not getattr(_param(ctx.command, target), "hidden", False))
    close = difflib.get_close_matches(name, visible, n=1)
    if close:
        return f"{key} is not an option of featx {command} (did you mean {close[0]}?)"
    group = ctx.find_root().command
    others = sorted(other for other, cmd in getattr(group, "commands", {}).items()
                    if other != command and name in spellings(cmd))
    if others:
        return f"{key} is not an option of featx {command} (it is one of {', '.join('featx ' + o for o in others)})"
    return f"{key} is not an option of featx {command} (its options: {', '.join(visible)})"


def _param(command, name: str):
    return next(p for p in command.params if p.name == name)
