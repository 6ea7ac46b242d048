"""Backbones side by side: extract, train the same heads, one report."""
