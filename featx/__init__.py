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

from typing import TYPE_CHECKING

from featx.runtime.lazy import lazy_names
from featx.version import __version__

# The public API, listed once: type checkers read these imports, and lazy_names turns them into
# names imported on first use.
if TYPE_CHECKING:
    # data and backbones
    from featx.data import Dataset, DatasetOptions, open_dataset
    from featx.backbones import BackboneSpec, create_backbone, get_spec, list_backbones, register_backbone
    # extraction and the store
    from featx.extraction import ExtractConfig, ExtractResult, extract
    from featx.store import FeatureStore
    # heads: trained on features, saved, applied
    from featx.probes.sweep import HeadConfig
    from featx.probes.train import train_head
    from featx.probes.estimators import LinearProbe, MLPProbe
    from featx.heads.io import Head, load_head
    from featx.heads.predict import Predictions, predict
    # the data loop: the map of the features, what to label next, labels vs accuracy
    from featx.explore import CurveConfig, MapConfig, SelectConfig, label_curve, map_store, select
    # fine-tuning, comparison, reports
    from featx.finetuning import FinetuneConfig, finetune
    from featx.compare.run import compare
    from featx.deploy import export_model
    from featx.report import write_report
    # errors
    from featx.errors import BackboneError, ConfigError, DataError, FeatxError, StoreError

__getattr__, __dir__, __all__ = lazy_names(__name__, __file__, extra=("__version__",))
