"""featx: run each frozen backbone once into an HDF5 feature store, then train heads in seconds.

    import featx

    run = featx.extract("elpv", "efficientnet_lite0", views=2)     # -> ExtractResult (.store)
    head = featx.train_head(run.store, "linear")                     # -> Head (saved, with metrics)
    head.predict_proba(["cell1.png", "cell2.png"])                   # backbone rebuilt from the head
    featx.predict(head, ["new_cells/"]).to_csv("predictions.csv")

Names are imported on first use, so `import featx` is quick and loading a head to score
features never imports the image or HDF5 stack. docs/api.md is the guided tour.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from featx.version import __version__

# public name -> module that defines it
_EXPORTS = {
    # data
    "open_dataset": "featx.data", "Dataset": "featx.data", "DatasetOptions": "featx.data",
    # backbones
    "list_backbones": "featx.backbones", "get_spec": "featx.backbones",
    "create_backbone": "featx.backbones", "register_backbone": "featx.backbones",
    "BackboneSpec": "featx.backbones",
    # extraction and the store
    "extract": "featx.extraction", "ExtractConfig": "featx.extraction", "ExtractResult": "featx.extraction",
    "FeatureStore": "featx.store",
    # heads
    "train_head": "featx.probes.train", "HeadConfig": "featx.probes.sweep", "Head": "featx.heads.io",
    "load_head": "featx.heads.io", "LinearProbe": "featx.probes.estimators", "MLPProbe": "featx.probes.estimators",
    "predict": "featx.heads.predict", "Predictions": "featx.heads.predict",
    "export_model": "featx.deploy",
    # fine-tuning, comparison, reports
    "finetune": "featx.finetuning", "FinetuneConfig": "featx.finetuning",
    "compare": "featx.compare.run", "write_report": "featx.report",
    # errors
    "FeatxError": "featx.errors", "ConfigError": "featx.errors", "DataError": "featx.errors",
    "StoreError": "featx.errors", "BackboneError": "featx.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'featx' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for editors and type checkers; at run time names load lazily
    from featx.extraction import extract
    from featx.finetuning import finetune
    from featx.backbones import BackboneSpec, create_backbone, get_spec, list_backbones, register_backbone
    from featx.compare.run import compare
    from featx.deploy import export_model
    from featx.data import Dataset, DatasetOptions, open_dataset
    from featx.errors import BackboneError, ConfigError, DataError, FeatxError, StoreError
    from featx.probes.estimators import LinearProbe, MLPProbe
    from featx.extraction import ExtractConfig, ExtractResult
    from featx.finetuning import FinetuneConfig
    from featx.heads.io import Head, load_head
    from featx.probes.sweep import HeadConfig
    from featx.heads.predict import Predictions, predict
    from featx.report import write_report
    from featx.store import FeatureStore
    from featx.probes.train import train_head
