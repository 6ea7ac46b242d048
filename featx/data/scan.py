"""Decode every image of a dataset once: sizes, modes, and the files that cannot be used."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from featx.data.dataset import Dataset
from featx.errors import DataError, ImageError
from featx.data.images import load_image


@dataclass
class ScanReport:
    """What decoding every image found: sizes, modes, and the files that cannot be used."""

    sizes: Counter = field(default_factory=Counter)  # (width, height) -> count
    modes: Counter = field(default_factory=Counter)  # Pillow mode before conversion -> count
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    warnings: list[str] = field(default_factory=list)  # e.g. a class left with no training image
    decoded: int = 0  # images decoded: all of them, or the evenly spread sample asked for


def scan_images(dataset: Dataset, advance: Callable[[int], object] = lambda n: None,
                sample: int = 0) -> ScanReport:
    """Decode every sample fully (truncation shows only then) and summarise what was found.

    sample: when > 0 and smaller than the dataset, decode only this many images, spread evenly
    over it (sample i*n//sample): sizes and modes are the sample's, and an unreadable file outside
    it shows only when extract decodes it (it is then recorded and left out, never fatal). A
    million files are listed in seconds; decoding each would take minutes.
    """
    from PIL import Image

    report = ScanReport(unreadable=list(dataset.skipped))
    n = len(dataset.samples)
    rows = range(n) if not sample or sample >= n else (i * n // sample for i in range(sample))
    for row in rows:
        sample_ = dataset.samples[row]
        report.decoded += 1
        path = dataset.abspath(sample_)
        try:
            load_image(path)
            with Image.open(path) as img:
                report.sizes[img.size] += 1
                report.modes[img.mode] += 1
        except ImageError as exc:
            report.unreadable.append((sample_.path, exc.reason))
        advance(1)
    report.warnings = class_warnings(dataset, [path for path, _ in report.unreadable])
    return report


def require_decodable(dataset: Dataset, failed: Mapping[str, str]) -> None:
    """Raise DataError when every sample of `dataset` is in `failed` ({sample path: reason}):
    there is nothing to learn from, and a store or a scan that 'succeeds' would hide it."""
    if dataset.samples and all(s.path in failed for s in dataset.samples):
        first = dataset.samples[0].path
        raise DataError(f"{dataset.root}: none of the {len(dataset.samples)} images could be decoded "
                        f"(the first: {first}: {failed[first]})")


def classes_without_training(dataset: Dataset, failed: Iterable[str]) -> list[str]:
    """Classes with no usable training sample once the `failed` sample paths are taken out: a
    head cannot learn them, yet they stay classes (an output nobody trained)."""
    return [dataset.classes[y] for y in _training_counts(dataset, failed)[0]]


def class_warnings(dataset: Dataset, failed: Iterable[str]) -> list[str]:
    """One line per class that `classes_without_training` finds, saying why (what scan and
    extract print)."""
    empty, total, bad = _training_counts(dataset, failed)
    return [f"class '{dataset.classes[y]}' has no usable training image "
            + (f"({bad[y]} of {total[y]} failed to decode)" if total[y] else "(none in the train split)")
            for y in empty]


def _training_counts(dataset: Dataset, failed: Iterable[str]) -> tuple[list[int], Counter, Counter]:
    """(labels with no usable training sample, training samples per label, failed ones per label)."""
    failed = set(failed)
    total: Counter = Counter()
    bad: Counter = Counter()
    for s in dataset.samples:
        if s.split == "train" and s.label >= 0:
            total[s.label] += 1
            bad[s.label] += s.path in failed
    return [y for y in range(len(dataset.classes)) if bad[y] == total[y]], total, bad
