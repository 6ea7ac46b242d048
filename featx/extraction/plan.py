"""The fixed plan of batches, and where a store goes.

The work is cut into consecutive samples, up to `batch_size` images a batch, the same plan on
every run: a resumed run recomputes exactly the unfinished batches with the same batch
composition, so the finished store equals an uninterrupted run's bit for bit (a row's numbers
may depend on the batch it was computed in, so batches must not be regrouped on resume).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featx.backbones import Backbone, create_backbone
from featx.data import Dataset
from featx.extraction.config import ExtractConfig
from featx.data.transforms import AugRecipe, load_recipe


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
    views = f"{recipe.name}x{config.views}" if recipe and config.views else "clean"
    weights = ""
    if str(config.weights) == "none":
        weights = f"-init{config.seed}"
    elif str(config.weights) != "default":  # a fine-tuned or local file: never the default's store
        weights = f"-w{backbone.weights.get('sha256', backbone.weights['source'])[:8]}"
    cut = f"_cut-{config.cut}" if config.cut else ""
    pool = f"_pool-{config.pool or 'none'}" if config.pool != "auto" else ""  # the default: no tag
    tta = f"_tta-{config.tta}" if config.tta != "none" else ""
    name = (f"{dataset.name}_{backbone.name.replace('/', '-')}{weights}_"
            f"{backbone.preprocess.input_size}px_{views}{cut}{pool}{tta}")
    return Path(out_dir) / f"{name}.h5"


def resolve_target(dataset: Dataset, backbone_name: str, out_dir: Path, config: ExtractConfig,
                   store_path: Path | None) -> tuple[Backbone, AugRecipe | None, Path]:
    """The backbone, the view recipe (None without views) and the store path of a run."""
    backbone = create_backbone(backbone_name, config.weights, config.seed, config.input_size)
    recipe = load_recipe(config.aug) if config.views else None
    path = Path(store_path) if store_path else store_path_for(out_dir, dataset, backbone, config, recipe)
    return backbone, recipe, path
