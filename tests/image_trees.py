"""Small image trees that tests (and benchmarks) write themselves. No side effects on import:
tests/conftest.py, which re-exports these, also fixes torch's thread count for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
