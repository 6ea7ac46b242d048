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


def read_config(path: str | Path) -> dict:
    """The mapping in a config file, as written (keys not yet resolved to options).

    Raises:
        ConfigError: a missing, unreadable, binary or empty file, invalid YAML/TOML, or a
            document that is not a mapping (a YAML list, a number).
    """
    path = Path(path)
    kind = "TOML" if path.suffix.lower() == ".toml" else "YAML"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a config is UTF-8 {kind})") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a text file (it holds NUL bytes; a config is {kind})")
    try:
        doc = tomllib.loads(text) if kind == "TOML" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: not valid {kind} ({first})") from None
    if doc is None or doc == {}:
        # A file with nothing in it is almost always the wrong file, or one not saved yet.
        raise ConfigError(f"{path}: empty config (no options in it)")
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a config is a mapping of option names to values, "
                          f"not {type(doc).__name__}")
    return doc


def resolve_keys(path: str | Path, doc: dict, aliases: dict[str, str] | None = None) -> dict:
    """{option name: (key as written, value)}: `batch-size` and `batch_size` are one option."""
    aliases = aliases or {}
    config: dict = {}
    for key, value in doc.items():
        name = str(key).replace("-", "_")
        name = aliases.get(name, name)
        if name in config:
            raise ConfigError(f"{path}: option {name} given twice (as {config[name][0]} and {key})")
        config[name] = (str(key), value)
    return config


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
    # Fields the config filled from defaults that depend on another field (HeadConfig's kind,
    # FinetuneConfig's mode) are reset, so they follow the new value of that field.
    reset = {name: None for name in getattr(config, "defaulted", ()) if name not in options}
    return dataclasses.replace(config, **reset, **options)
