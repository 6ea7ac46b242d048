"""Shared fixtures: small image trees that the tests write themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, seed: int, size: tuple[int, int] = (40, 32), mode: str = "RGB",
                fmt: str | None = None) -> Path:
    """A small random image; distinct seeds give distinct pixels."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


def make_class_tree(root: Path, classes=("ants", "bees"), per_class: int = 6, seed: int = 0,
                    ext: str = ".png") -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(root / name / f"{name}_{i:02d}{ext}", seed + 100 * c + i)
    return root


@pytest.fixture
def class_tree(tmp_path: Path) -> Path:
    """One ImageFolder: 2 classes x 6 images."""
    return make_class_tree(tmp_path / "cells")


@pytest.fixture
def split_tree(tmp_path: Path) -> Path:
    """train/ and val/ with class folders, like the hymenoptera tutorial."""
    root = tmp_path / "hymenoptera"
    make_class_tree(root / "train", per_class=4, seed=0)
    make_class_tree(root / "val", per_class=2, seed=50)
    return root
