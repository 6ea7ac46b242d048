"""Run configs: YAML or TOML files whose keys are a command's option names.

    # configs/elpv_lite0.yaml, for `featx extract --config configs/elpv_lite0.yaml`
    data: elpv
    backbone: [efficientnet_lite0]
    views: 4
    aug: mild

Precedence: the command line wins over the file, which wins over the option's default.
Keys may be written with dashes or underscores (`batch-size`, `batch_size`); a key no option
has is refused, so a typo never passes silently.

Settings tables (scikit-learn's `_parameter_constraints` idea): each config declares its choices
and ranges once, in a torch-free module beside it, as {field: OneOf(...) | Between(...)}. The
dataclass checks itself against its table (`check_settings`) and the `featx` options read the
same table (metavar, callback, min/max), so a bad value gets the same words from both:

    EXTRACT = {"dtype": OneOf(("float16", "float32")), "batch_size": Between(1)}
    check_settings(config, EXTRACT)   # ConfigError: dtype must be one of float16, float32, got 'f8'
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
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
    options = new_names(type(config), options)
    known = {f.name for f in dataclasses.fields(config) if f.init}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for {type(config).__name__} "
                          f"(known: {', '.join(sorted(known))})")
    # Fields the config filled from defaults that depend on another field (HeadConfig's kind,
    # FinetuneConfig's mode) are reset, so they follow the new value of that field.
    reset = {name: None for name in getattr(config, "defaulted", ()) if name not in options}
    return dataclasses.replace(config, **reset, **options)


def as_config(cls, value, name: str = "config"):
    """`value` as a `cls` config: None -> the defaults, a `cls` as is, a dict -> `cls(**dict)`
    (a notebook's `config={"views": 2}`). Raises ConfigError naming argument `name`, for
    another type or a key that is no field of `cls`."""
    import dataclasses

    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a{'n' if cls.__name__[0] in 'AEIOU' else ''} {cls.__name__} "
                          f"or a dict of its fields, got {type(value).__name__}")
    options = new_names(cls, {str(k).replace("-", "_"): v for k, v in value.items()})
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"{name}: unknown option(s) {', '.join(unknown)} for {cls.__name__} "
                          f"(known: {', '.join(sorted(known))})")
    return cls(**options)


def as_tuple(value) -> tuple:
    """One value or a sequence of them, as a tuple (a string is one value, not its letters)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return (value,)
    return tuple(value)


def check_types(config, ints: tuple[str, ...] = (), numbers: tuple[str, ...] = ()) -> None:
    """Config values of the right type, from the API and config files alike: `ints` hold
    integers (not a bool, not 2.7), `numbers` finite numbers; a tuple is checked item by item,
    None passes (an option left unset). Raises ConfigError naming the field."""
    for names, ok, rules in ((ints, _is_int, ("an integer", "integers")),
                             (numbers, _is_finite, ("a finite number", "finite numbers"))):
        for name in names:
            value = getattr(config, name)
            if value is not None and not all(ok(v) for v in as_tuple(value)):
                raise ConfigError(f"{name} must be {rules[isinstance(value, tuple)]}, got {value!r}")


def _is_int(value) -> bool:
    # numpy's integers register as numbers.Integral, its bool_ does not: no numpy import needed
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_finite(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def old_names(**renamed: str):
    """Class decorator of a config dataclass: fields renamed since (`old="new"`) keep their old
    keyword, in the constructor and in `with_options`, and read back as `config.old`."""
    def wrap(cls):
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            init(self, *args, **new_names(cls, kwargs))

        cls.__init__ = __init__
        cls.OLD_NAMES = dict(renamed)
        for old, new in renamed.items():
            setattr(cls, old, property(lambda self, new=new: getattr(self, new),
                                       doc=f"The old name of `{new}`."))
        return cls
    return wrap


def new_names(cls, options: dict) -> dict:
    """`options` (keywords of config class `cls`) with old field names turned into new ones."""
    renamed = getattr(cls, "OLD_NAMES", {})
    out = {}
    for key, value in options.items():
        new = renamed.get(key, key)
        if new != key and new in options:
            raise ConfigError(f"{key} is the old name of {new}; give only {new}")
        out[new] = value
    return out


@dataclass(frozen=True)
class OneOf:
    """A text setting that takes one of `choices`."""

    choices: tuple[str, ...]

    @property
    def metavar(self) -> str:
        return "|".join(self.choices)

    def problem(self, value) -> str | None:
        """What is wrong with `value` ("must be one of ..., got 'x'"), or None."""
        if isinstance(value, str) and value in self.choices:
            return None
        return f"must be one of {', '.join(self.choices)}, got {value!r}"


@dataclass(frozen=True)
class Between:
    """A number from `low` to `high` (None: unbounded; an open end excludes the bound itself), or
    a tuple of such numbers; None passes where the setting is `optional` (unset)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False

    @property
    def bounds(self) -> dict:
        """The closed range for a typer option (min=, max=); an open end is left to the config
        (typer has no open bounds)."""
        return {key: value for key, value in (("min", self.low), ("max", self.high)) if value is not None}

    @property
    def rule(self) -> str:
        if self.low is None:
            return f"<= {self.high:g}"
        if self.high is None:
            return f"above {self.low:g}" if self.low_open else f">= {self.low:g}"
        if self.high_open:
            return f"in [{self.low:g}, {self.high:g})"
        return f"between {self.low:g} and {self.high:g}"

    def problem(self, value) -> str | None:
        """What is wrong with `value` ("must be >= 1, got 0"), or None. Types are checked apart
        (check_types): a value that is no number is left to that check."""
        if value is None and self.optional:
            return None
        items = value if isinstance(value, tuple) else (value,)
        if value is not None and all(self._fits(item) for item in items):
            return None
        return f"must be {self.rule}, got {value!r}"

    def _fits(self, item) -> bool:
        if not isinstance(item, numbers.Real) or isinstance(item, bool):
            return True  # not a number: check_types names it
        if math.isnan(item):
            return False
        if self.low is not None and (item <= self.low if self.low_open else item < self.low):
            return False
        if self.high is not None and (item >= self.high if self.high_open else item > self.high):
            return False
        return True


def check_settings(config, table: dict) -> None:
    """Raise ConfigError naming the first field of `config` that breaks its rule in `table`."""
    for name, rule in table.items():
        problem = rule.problem(getattr(config, name))
        if problem:
            raise ConfigError(f"{name} {problem}")
