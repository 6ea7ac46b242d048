"""The backbone a head was trained on, rebuilt from its sidecar to featurise new images.

The sidecar names the backbone, its weights (source and sha256), the seed of a random-init
backbone and the preprocessing; the rebuilt backbone must match all of them, or the head would
score features from a different network and give quietly wrong answers.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from featx.errors import FeatxError


@dataclass
class Embedded:
    """Features of the images that decoded, in input order, and those that did not."""

    paths: list[str]
    features: np.ndarray  # [len(paths), D]
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


class HeadEmbedder:
    """Callable: image files/folders -> Embedded (features in input order, failures listed)."""

    def __init__(self, meta: Mapping):
        self.meta = meta  # a head's HeadMeta, or a store's attributes in the same keys (the audit)
        self._backbone = None
        self._taps = None  # the pooled/TTA module, resolved on the first call and kept

    def backbone(self):
        if self._backbone is None:
            from featx.backbones import create_backbone
            from featx.backbones.weights import weights_arg

            pre = self.meta["preprocess"]
            backbone = create_backbone(self.meta["backbone"], weights_arg(self.meta["weights"]),
                                       self.meta.get("backbone_seed", 0), pre["input_size"])
            sha = backbone.weights.get("sha256", backbone.weights["source"])
            check_same_features(self.meta, backbone.name, sha, "this machine's weights")
            # The resize the store was made with (torchvision's for stores before issue 29).
            backbone.preprocess = backbone.preprocess.following(pre)
            self._backbone = backbone
        return self._backbone

    def __call__(self, images, device: str = "auto", batch_size: int = 64, workers: int | None = None,
                 engine: str = "auto", threads: int | None = None) -> Embedded:
        """`images`: files and folders, or in memory: PIL images, arrays [H, W, C] or [n, H, W, C].
        `threads`: ONNX Runtime threads, as extract's (None: torch's thread count)."""
        pictures = in_memory_images(images)
        if pictures is None:
            return self._files(images, device, batch_size, workers, engine, threads)
        # Through lossless PNG files, so they take the very decode and preprocessing of a file
        with tempfile.TemporaryDirectory(prefix="featx-images-") as tmp:
            files = [os.path.join(tmp, f"{i:08d}.png") for i in range(len(pictures))]
            for picture, file in zip(pictures, files):
                picture.save(file, "PNG")
            out = self._files(files, device, batch_size, workers, engine, threads)
        name = {f: f"image {i}" for i, f in enumerate(files)}
        return Embedded([name[p] for p in out.paths], out.features, [(name.get(p, p), r) for p, r in out.failed])

    def _files(self, images: Sequence[str | os.PathLike] | str | os.PathLike, device: str, batch_size: int,
               workers: int | None, engine: str, threads: int | None = None) -> Embedded:
        from featx.data import list_images
        from featx.extraction import embed

        from featx.extraction.engine_choice import tapped_module

        items = [images] if isinstance(images, (str, os.PathLike)) else list(images)
        dataset, skipped = list_images(items)
        pool, tta = self.meta.get("pool") or None, self.meta.get("tta") or "none"
        if self._taps is None:  # one shape-probe forward per embedder, not one per call
            self._taps = tapped_module(self.backbone(), None, pool, tta)
        features, failed_rows = embed(dataset, self.backbone(), device, batch_size, workers, engine,
                                     pool=pool, tta=tta, threads=threads, taps=self._taps)
        by_path = {str(dataset.abspath(s)): i for i, s in enumerate(dataset.samples)}
        ok = [p for p in _in_input_order(items, by_path) if by_path[p] not in failed_rows]
        failed = skipped + [(str(dataset.abspath(dataset.samples[i])), r) for i, r in sorted(failed_rows.items())]
        return Embedded(ok, features[[by_path[p] for p in ok]], failed)


def in_memory_images(inputs) -> list | None:
    """PIL images for images given in memory (a PIL image, a uint8 array [H, W, C] or a stack
    [n, H, W, C], or a list of them), None for files and folders. Raises FeatxError for what is
    neither."""
    if isinstance(inputs, (str, os.PathLike)):
        return None
    if type(inputs).__module__.startswith("PIL."):
        return [inputs]
    if inputs is None or not hasattr(inputs, "__len__") or isinstance(inputs, (bytes, dict)):
        raise FeatxError("inputs must be features [n, D], image files or folders, PIL images or "
                         f"arrays of images [n, H, W, C], got {type(inputs).__name__ if inputs is not None else None}")
    if isinstance(inputs, np.ndarray):
        if inputs.ndim not in (3, 4) or inputs.shape[-1] not in (1, 3, 4):
            _not_images(inputs.shape)
        return [_picture(im) for im in (inputs if inputs.ndim == 4 else [inputs])]
    items = list(inputs)
    if not items:
        raise FeatxError("inputs: nothing to predict (an empty list)")
    if all(isinstance(item, (str, os.PathLike)) for item in items):
        return None
    if not all(_is_picture(item) for item in items):
        kinds = sorted({type(item).__name__ for item in items})
        raise FeatxError(f"inputs: a list of files, PIL images or image arrays, not a mix of {', '.join(kinds)}")
    return [_picture(item) for item in items]


def image_items(inputs) -> list:
    """`inputs` as a list of files and folders, or of PIL images (see in_memory_images)."""
    pictures = in_memory_images(inputs)
    if pictures is not None:
        return pictures
    return [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)


def _is_picture(item) -> bool:
    return isinstance(item, np.ndarray) and item.ndim in (2, 3) or type(item).__module__.startswith("PIL.")


def _picture(item):
    """One PIL image from a PIL image or an array [H, W], [H, W, 1|3|4] (uint8, or floats in [0, 1])."""
    from PIL import Image

    if not isinstance(item, np.ndarray):
        return item
    if item.ndim == 3 and item.shape[2] not in (1, 3, 4) or item.ndim not in (2, 3):
        _not_images(item.shape)
    if item.dtype != np.uint8:
        if not (np.issubdtype(item.dtype, np.floating) and np.isfinite(item).all() and 0 <= item.min()
                and item.max() <= 1):
            raise FeatxError(f"images of dtype {item.dtype}: give uint8 (0 to 255) or floats in [0, 1]")
        item = np.round(item * 255).astype(np.uint8)
    return Image.fromarray(item[..., 0] if item.ndim == 3 and item.shape[2] == 1 else item)


def _not_images(shape) -> None:
    raise FeatxError(f"images of shape {tuple(shape)}: an image array is [H, W, C] or [n, H, W, C] "
                     "with 1, 3 or 4 channels")


def _in_input_order(items: list, known: dict[str, int]) -> list[str]:
    """Files in the order given (folders expanded in sorted order), each once."""
    seen: set[str] = set()
    out: list[str] = []
    for item in map(Path, items):
        if item.is_dir():
            root = str(item.resolve())
            found = sorted(p for p in known if p.startswith(root + os.sep))
        else:
            found = [str(item.resolve())] if str(item.resolve()) in known else []
        for p in found:
            if p not in seen:
                seen.add(p)
                out.append(p)
    return out


def check_same_features(meta: Mapping, backbone: str, weights_sha: str, where) -> None:
    """Refuse features from another backbone or other weights than the head was trained on."""
    if backbone != meta["backbone"] or weights_sha != meta["weights_sha256"]:
        raise FeatxError(f"{where}: features come from {backbone} (weights {weights_sha[:12]}), but the "
                         f"head was trained on {meta['backbone']} (weights {meta['weights_sha256'][:12]}); "
                         "use the matching backbone weights")
