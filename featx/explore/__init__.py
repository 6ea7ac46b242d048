"""The data loop: see the data, label what matters, know how many labels you need.

    featx.map_store("stores/cells.h5", "map.html")                  # every sample as a point
    picks = featx.select("stores/cells.h5", budget=50)               # what to label next
    curve = featx.label_curve("stores/cells.h5", CurveConfig())      # accuracy vs labels

Modules: coords (PCA + UMAP, cached), page (the HTML), map, strategies (random, margin,
entropy, core-set, TypiClust, ProbCover), fast_head (refitted each round), select, curve.
"""

from featx.explore.curve import CurveConfig, CurveResult, label_curve
from featx.explore.map import MapConfig, MapResult, map_store
from featx.explore.select import DEFAULT_STRATEGY, SelectConfig, Selection, select
from featx.explore.strategies import STRATEGIES

__all__ = ["CurveConfig", "CurveResult", "DEFAULT_STRATEGY", "MapConfig", "MapResult", "STRATEGIES",
           "SelectConfig", "Selection", "label_curve", "map_store", "select"]
