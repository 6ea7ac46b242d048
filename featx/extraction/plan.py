"""The fixed plan of batches, and where a store goes.

The work is cut into consecutive samples, up to `batch_size` images a batch, the same plan on
every run: a resumed run recomputes exactly the unfinished batches with the same batch
composition, so the finished store equals an uninterrupted run's bit for bit (a row's numbers
may depend on the batch it was computed in, so batches must not be regrouped on resume).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from featx.data import Dataset
from featx.errors import FeatxError
from featx.extraction.config import ExtractConfig
from featx.store import read_attrs

if TYPE_CHECKING:  # torch: the fast path of a no-op re-run (featx.extraction.noop) names stores too
    from featx.backbones import Backbone
    from featx.data.transforms import AugRecipe


@dataclass(frozen=True)
class Batch:
    start: int  # sample rows [start, stop)
    stop: int
    train_start: int  # augmented rows [train_start, train_stop)
    train_stop: int

    def images(self, views: int) -> int:
        """Images this batch forwards when none fails: every clean view plus K per train row."""
        return self.stop - self.start + views * (self.train_stop - self.train_start)


def plan_batches(is_train: np.ndarray, views: int, batch_size: int) -> list[Batch]:
    """Consecutive samples, up to `batch_size` images each (a training sample has 1 + K)."""
    batches, start, images = [], 0, 0
    train_rank = np.concatenate([[0], np.cumsum(is_train)])
    for i, train in enumerate(is_train):
        cost = 1 + (views if train else 0)
        if images and images + cost > batch_size:
            batches.append(Batch(start, i, int(train_rank[start]), int(train_rank[i])))
            start, images = i, 0
        images += cost
    if len(is_train) > start:
        n = len(is_train)
        batches.append(Batch(start, n, int(train_rank[start]), int(train_rank[n])))
    return batches


def store_path_for(out_dir: Path, dataset: Dataset, backbone: Backbone, config: ExtractConfig,
                   recipe: AugRecipe | None) -> Path:
    """One store per dataset x backbone (x weights, when not the default ones) x input config."""
    return store_path_named(out_dir, dataset, backbone.name, backbone.weights,
                            backbone.preprocess.input_size, config, recipe.name if recipe else None)


def store_path_named(out_dir: Path, dataset: Dataset, backbone_name: str, weights: dict, input_size: int,
                     config: ExtractConfig, recipe_name: str | None) -> Path:
    """store_path_for from the backbone's name, weights provenance and crop size (no model built)."""
    views = f"{recipe_name}x{config.views}" if recipe_name and config.views else "clean"
    tag = ""
    if str(config.weights) == "none":
        tag = f"-init{config.seed}"
    elif str(config.weights) != "default":  # a fine-tuned or local file: never the default's store
        tag = f"-w{weights.get('sha256', weights['source'])[:8]}"
    cut = f"_cut-{config.cut}" if config.cut else ""
    pool = f"_pool-{config.pool or 'none'}" if config.pool != "auto" else ""  # the default: no tag
    tta = f"_tta-{config.tta}" if config.tta != "none" else ""
    name = f"{dataset.name}_{backbone_name.replace('/', '-')}{tag}_{input_size}px_{views}{cut}{pool}{tta}"
    return Path(out_dir) / f"{name}.h5"


def resolve_target(dataset: Dataset, backbone_name: str, out_dir: Path, config: ExtractConfig,
                   store_path: Path | None) -> tuple[Backbone, AugRecipe | None, Path]:
    """The backbone, the view recipe (None without views) and the store path of a run."""
    from featx.backbones import create_backbone
    from featx.data.transforms import load_recipe

    backbone = create_backbone(backbone_name, config.weights, config.seed, config.input_size)
    recipe = load_recipe(config.aug) if config.views else None
    path = Path(store_path) if store_path else store_path_for(out_dir, dataset, backbone, config, recipe)
    return backbone, recipe, path


def store_clean(path: Path | None, config: ExtractConfig) -> dict | None:
    """The clean transform of the existing store at `path`: a resume or an update continues it
    with its own resize (Pillow, or torchvision's for a store made before issue 29), never a mix.
    None for a new store, an --overwrite, or a store that cannot be read (store_state says why)."""
    if path is None or config.overwrite or not path.is_file():
        return None
    try:
        return read_attrs(path)["transform"]["clean"]
    except (FeatxError, KeyError, TypeError):
        return None


def delta_path(path: Path) -> Path:
    """Where an update of the store at `path` extracts its new rows (a store of its own)."""
    return path.with_name(f"{path.stem}.delta.h5")


def remove_delta(path: Path) -> None:
    """Remove the delta store of `path` and its lock file, if any (never an error)."""
    for leftover in (delta_path(path), Path(f"{delta_path(path)}.lock")):
        try:
            leftover.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only folder: the store itself is complete and usable
