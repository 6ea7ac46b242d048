"""The one place featx's version is written (pyproject reads it; stores and heads record it)."""

__version__ = "0.2.0"
