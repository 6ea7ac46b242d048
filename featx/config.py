"""Run configs: YAML or TOML files in configs/ whose keys are the CLI's option names.

    # configs/elpv_lite0.yaml
    data: elpv
    backbone: [efficientnet_lite0]
    views: 4
    aug: mild

Command-line options override the file; the file overrides the built-in defaults.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from featx.errors import ConfigError


def load_config(path: str | Path, allowed: set[str]) -> dict:
    """Read `path` into {option: value}, refusing keys no option has (typos must not pass)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    try:
        doc = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.').upper() or 'YAML'} ({first})") from None
    doc = doc or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a config is a mapping of option names to values")
    config = {str(k).replace("-", "_"): v for k, v in doc.items()}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown option(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(allowed))})")
    return config


def merge(cli: dict, file: dict, defaults: dict) -> dict:
    """CLI values that were given (not None) win over the file, which wins over defaults."""
    out = dict(defaults)
    out.update({k: v for k, v in file.items() if v is not None})
    out.update({k: v for k, v in cli.items() if v is not None})
    return out
