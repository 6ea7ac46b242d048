"""Public names loaded on first use, listed once: as the package's own `if TYPE_CHECKING:` imports.

    if TYPE_CHECKING:
        from featx.store.reader import FeatureStore
    __getattr__, __dir__, __all__ = lazy_names(__name__, __file__)

Type checkers and editors read those imports; at run time nothing is imported until a name is
asked for (`import featx` stays quick and light). The same idea as scientific-python's
lazy_loader, which reads a .pyi stub; here the stub is the block itself, so there is no second
list to keep in step.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path
from typing import Callable


def type_checking_imports(source: str) -> dict[str, str]:
    """{public name: module} of the `from M import a, b as c` lines under a top-level
    `if TYPE_CHECKING:` in `source`."""
    names: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom) and stmt.module:
                    for alias in stmt.names:
                        names[alias.asname or alias.name] = stmt.module
    return names


def lazy_names(package: str, file: str, extra: tuple[str, ...] = ()
               ) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """(__getattr__, __dir__, __all__) for `package`, whose source is `file`. A name that is not
    public may still be a submodule (`featx.extraction.store_run`), as an eager package gives."""
    exports = type_checking_imports(Path(file).read_text(encoding="utf-8"))
    public = sorted([*exports, *extra])

    def getattr_(name: str) -> object:
        module = exports.get(name)
        if module is None:
            try:
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{name}":
                    raise  # the submodule exists but needs something missing: say what
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module), name)
        vars(sys.modules[package])[name] = value  # later lookups skip this function
        return value

    def dir_() -> list[str]:
        return public

    return getattr_, dir_, public
