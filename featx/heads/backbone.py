"""The backbone a head was trained on, rebuilt from its sidecar to featurise new images.

The sidecar names the backbone, its weights (source and sha256), the seed of a random-init
backbone and the preprocessing; the rebuilt backbone must match all of them, or the head would
score features from a different network and give quietly wrong answers.
"""

from __future__ import annotations

import os
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

    def backbone(self):
        if self._backbone is None:
            from featx.backbones import create_backbone
            from featx.backbones.weights import weights_arg

            pre = self.meta["preprocess"]
            backbone = create_backbone(self.meta["backbone"], weights_arg(self.meta["weights"]),
                                       self.meta.get("backbone_seed", 0), pre["input_size"])
            sha = backbone.weights.get("sha256", backbone.weights["source"])
            check_same_features(self.meta, backbone.name, sha, "this machine's weights")
            self._backbone = backbone
        return self._backbone

    def __call__(self, images: Sequence[str | os.PathLike] | str | os.PathLike, device: str = "auto",
                 batch_size: int = 64, workers: int | None = None,
                 engine: str = "auto") -> Embedded:
        from featx.data import list_images
        from featx.extraction import embed

        items = [images] if isinstance(images, (str, os.PathLike)) else list(images)
        dataset, skipped = list_images(items)
        features, failed_rows = embed(dataset, self.backbone(), device, batch_size, workers, engine,
                                     pool=self.meta.get("pool") or None, tta=self.meta.get("tta") or "none")
        by_path = {str(dataset.abspath(s)): i for i, s in enumerate(dataset.samples)}
        ok = [p for p in _in_input_order(items, by_path) if by_path[p] not in failed_rows]
        failed = skipped + [(str(dataset.abspath(dataset.samples[i])), r) for i, r in sorted(failed_rows.items())]
        return Embedded(ok, features[[by_path[p] for p in ok]], failed)


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
