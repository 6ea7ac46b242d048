"""Fine-tuning: the whole network on images, or only its top on a store's cached maps, warm-started
from a head trained on cached features. Resumable, seeded, and saved as a backbone weights file
plus a featx head.

    result = finetune("elpv", "heads/lin", "runs/ft/lin", epochs=8)
    result = finetune("stores/elpv_..._cut-block14.h5", "heads/lin", "runs/top/lin", from_block="block14")
    found = suggest_lr(dataset, "heads/lin", "runs/ft", config)       # the LR range test, kept

The modules, in the order a run uses them:

    config      FinetuneConfig (settings, per-mode defaults), FinetuneResult
    model       HeadModule (a saved head as torch layers), Network, layer_groups
    data        images -> seeded views, batches shared out across torchrun processes
    loop        optimiser, schedule, the epoch loop with resume (fit), the LR range test
    checkpoint  the per-epoch checkpoint, the best weights, the saved backbone and head
    whole       finetune_network(), find_lr(): the whole network on images
    top         finetune_top(), find_lr_top(): the top above a cut on cached maps
    lr_cache    suggest_lr(): the range test's rate, found once per settings
"""

import os

from featx.config import with_options
from featx.data import as_dataset
from featx.finetuning.config import MODE_DEFAULTS, FinetuneConfig, FinetuneResult
from featx.finetuning.loop import network_range_test
from featx.finetuning.lr_cache import SuggestedLR, range_test_settings, suggest_lr
from featx.finetuning.model import HeadModule, Network, layer_groups
from featx.finetuning.top import MapData, find_lr_top, finetune_top, square_symmetry
from featx.finetuning.whole import find_lr, finetune_network


def finetune(data, head, out: str | os.PathLike = "runs/finetune/model",
             config: FinetuneConfig | None = None, show_progress: bool = True,
             **options) -> FinetuneResult:
    """Fine-tune from a trained head: the whole network on images, or with `from_block` only the
    blocks above that cut, on the maps of `data` = a store made by `extract(..., cut=...)`.

    Args:
        data: a Dataset or what `open_dataset` takes; with `from_block`, the store's path.
        head: a trained head (Head, or its path).
        out: the path stem of everything written (OUT.head.safetensors, OUT.backbone..., checkpoints).
        config, options: FinetuneConfig, or its fields as keywords (epochs=3, lr=1e-4, ...).
    """
    config = with_options(config or FinetuneConfig(), options)
    head_path = getattr(head, "path", None) or head
    if config.from_block:
        return finetune_top(data, head_path, out, config, show_progress)
    return finetune_network(as_dataset(data), head_path, out, config, show_progress)

__all__ = [
    "MODE_DEFAULTS", "FinetuneConfig", "FinetuneResult", "HeadModule", "MapData", "Network",
    "SuggestedLR", "find_lr", "find_lr_top", "finetune", "finetune_network", "finetune_top", "layer_groups",
    "network_range_test", "range_test_settings", "square_symmetry", "suggest_lr",
]
