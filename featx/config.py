"""Run configs: YAML or TOML files whose keys are a command's option names.

    # configs/elpv_lite0.yaml, for `featx extract --config configs/elpv_lite0.yaml`
    data: elpv
    backbone: [efficientnet_lite0]
    views: 4
    aug: mild

Precedence: the command line wins over the file, which wins over the option's default.
Keys may be written with dashes or underscores (`batch-size`, `batch_size`); a key no option
has is refused, so a typo never passes silently.
"""

from __future__ import annotations

from pathlib import Path

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, packaged as tomli
    import tomli as tomllib

from featx.errors import ConfigError


def load_config(path: str | Path, allowed: set[str], aliases: dict[str, str] | None = None) -> dict:
    """Read `path` into {option name: value}.

    Args:
        path: a .toml file, or YAML (any other suffix).
        allowed: the option names the command has (underscores, as Python names).
        aliases: other accepted spellings -> option name (`wd` -> `weight_decay`).

    Raises:
        ConfigError: unreadable or invalid file, a key no option has, or one option given twice.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    try:
        doc = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        kind = "TOML" if path.suffix.lower() == ".toml" else "YAML"
        raise ConfigError(f"{path}: not valid {kind} ({first})") from None
    doc = doc or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a config is a mapping of option names to values")
    aliases = aliases or {}
    config: dict = {}
    for key, value in doc.items():
        name = str(key).replace("-", "_")
        name = aliases.get(name, name)
        if name in config:
            raise ConfigError(f"{path}: option {name} given twice (as {key} and another spelling)")
        config[name] = value
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown option(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(allowed))})")
    return config


def merge(cli: dict, file: dict, defaults: dict) -> dict:
    """For callers without click: CLI values that were given (not None) win over the file,
    which wins over defaults."""
    out = dict(defaults)
    out.update({k: v for k, v in file.items() if v is not None})
    out.update({k: v for k, v in cli.items() if v is not None})
    return out


def with_options(config, options: dict):
    """`config` (a dataclass) with `options` (its field names) replaced; unknown names refused."""
    import dataclasses

    if not options:
        return config
    known = {f.name for f in dataclasses.fields(config) if f.init}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for {type(config).__name__} "
                          f"(known: {', '.join(sorted(known))})")
    return dataclasses.replace(config, **options)
