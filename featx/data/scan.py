"""Decode every image of a dataset once: sizes, modes, and the files that cannot be used."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from featx.data.dataset import Dataset
from featx.errors import ImageError
from featx.images import load_image


@dataclass
class ScanReport:
    """What decoding every image found: sizes, modes, and the files that cannot be used."""

    sizes: Counter = field(default_factory=Counter)  # (width, height) -> count
    modes: Counter = field(default_factory=Counter)  # Pillow mode before conversion -> count
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def scan_images(dataset: Dataset, advance: Callable[[int], object] = lambda n: None) -> ScanReport:
    """Decode every sample fully (truncation shows only then) and summarise what was found."""
    from PIL import Image

    report = ScanReport(unreadable=list(dataset.skipped))
    for sample in dataset.samples:
        path = dataset.abspath(sample)
        try:
            load_image(path)
            with Image.open(path) as img:
                report.sizes[img.size] += 1
                report.modes[img.mode] += 1
        except ImageError as exc:
            report.unreadable.append((sample.path, exc.reason))
        advance(1)
    return report
