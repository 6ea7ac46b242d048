"""One extraction, resolved once: what store_run, sharded and the runner all read.

`build_job` builds the backbone, loads the view recipe, names the store and resolves `--pool`
(and the module that taps it) a single time; the functions below it take the job instead of
its seven values by hand, and a part of the run (an update's delta, a rank's shard) is the same
job with a few values replaced (`job.but(dataset=..., path=...)`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from featx.backbones import Backbone
from featx.data import Dataset
from featx.data.transforms import AugRecipe
from featx.extraction.config import ExtractConfig
from featx.extraction.engine_choice import Taps, tapped_module
from featx.extraction.plan import resolve_target, store_clean
from featx.runtime.device import use_device_decode


@dataclass(frozen=True)
class ExtractJob:
    dataset: Dataset
    backbone: Backbone
    recipe: AugRecipe | None  # the view recipe; None without views
    path: Path | None  # the store written; None for an in-memory embed
    config: ExtractConfig
    device: torch.device
    show_progress: bool
    # --cut, --pool (resolved: a block or None) and --tta: the module run and what it adds.
    taps: Taps
    gpu_decode: bool  # JPEG files decoded on the device (nvjpeg)

    @property
    def feature_dim(self) -> int:
        """Columns per image: the final features, and the pooled maps of --pool."""
        return self.backbone.spec.feature_dim + self.taps.pool_dim

    def but(self, **changes) -> "ExtractJob":
        """This job with some values replaced (a sub-dataset, another path, other settings)."""
        return replace(self, **changes)


def build_job(dataset: Dataset, backbone_name: str, out_dir: Path, config: ExtractConfig,
              device: torch.device, store_path: Path | None = None,
              show_progress: bool = True) -> ExtractJob:
    """The job of extracting `dataset` with `backbone_name` into a store in `out_dir` (or at
    `store_path`), everything it needs resolved here, once."""
    backbone, recipe, path = resolve_target(dataset, backbone_name, out_dir, config, store_path)
    backbone.preprocess = backbone.preprocess.following(store_clean(path, config))
    return ExtractJob(dataset, backbone, recipe, path, config, device, show_progress,
                      tapped_module(backbone, config.cut, config.pool, config.tta),
                      use_device_decode(device, config.decode))

