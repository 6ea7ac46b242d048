"""Which unlabelled rows to label next: the standard strategies on cached features.

    picked, scores = choose("coreset", pool_x, labelled_x, labelled_y, None, budget=50, seed=0)

Each strategy returns `budget` positions into `pool_x` (distinct, best first) and a score per
pick (what made it chosen, in the strategy's own unit):

- random: a seeded shuffle; the score is the uniform draw.
- margin: smallest gap between the two most probable classes (the head's doubt); score = gap.
- entropy: largest entropy of the class probabilities, in nats.
- coreset: k-centre greedy (Sener & Savarese 2018): each pick is the row farthest from every
  labelled or picked row; score = that distance. Covers clusters that random draws miss.
- typiclust: TypiClust (Hacohen et al. 2022): k-means into |labelled| + budget clusters, the
  most typical row (densest k-NN neighbourhood) of each largest cluster with no label yet.
- probcover: ProbCover (Yehuda et al. 2022): balls of radius delta around each row; each pick
  covers the most rows no labelled row covers yet. Low budgets: a few labels per class.

The last three are scikit-activeml's (`featx[explore]`); they see unit-length features, so
distances are cosine geometry, as in the audit. margin and entropy take probabilities from a head.
"""

from __future__ import annotations

import warnings

import numpy as np

from featx.errors import ConfigError

STRATEGIES = ("random", "margin", "entropy", "coreset", "typiclust", "probcover")
NEEDS_PROBABILITIES = ("margin", "entropy")
# What to say to a store with no labels yet (every other strategy reads the features alone).
NO_LABELS_NEEDED = "--strategy typiclust (a few typical images of each cluster), probcover, coreset or random"
# ProbCover compares every pair of rows (an N x N distance matrix, float64): 8,000 rows hold
# 512 MB. Above it the unlabelled pool is subsampled (seeded) before ProbCover sees it.
PROBCOVER_MAX_ROWS = 8_000
EXTRA_HINT = "pip install 'featx[explore]'"


def check_strategy(strategy: str, option: str = "--strategy") -> str:
    if strategy not in STRATEGIES:
        raise ConfigError(f"{option} {strategy!r}: use one of {', '.join(STRATEGIES)}")
    return strategy


def choose(strategy: str, pool_x: np.ndarray, labelled_x: np.ndarray, labelled_y: np.ndarray,
           probabilities: np.ndarray | None, budget: int, seed: int = 0,
           num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`budget` distinct positions into `pool_x` [n, D] to label next, and their scores.

    `labelled_x` [m, D] and `labelled_y` [m] are what is labelled already; `probabilities`
    [n, C] are a head's on the pool (needed by margin and entropy only); `num_classes` (the
    store's) sets ProbCover's ball radius, the largest whose balls stay pure at k-means with
    that many clusters (default: the labelled classes, at least 2).
    """
    check_strategy(strategy)
    budget = min(int(budget), len(pool_x))
    if budget <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    if strategy == "random":
        draw = np.random.default_rng(seed).random(len(pool_x))
        order = np.argsort(draw, kind="stable")[:budget]
        return order, draw[order]
    if strategy in NEEDS_PROBABILITIES:
        if probabilities is None or len(probabilities) != len(pool_x):
            raise ConfigError(f"--strategy {strategy} needs a head's probabilities on the unlabelled "
                              f"samples: give --head, or label at least 2 classes first; or use {NO_LABELS_NEEDED}")
        doubt = uncertainty(strategy, probabilities)  # larger = more doubtful
        order = np.argsort(-doubt, kind="stable")[:budget]
        return order, (-doubt[order] if strategy == "margin" else doubt[order])
    classes = num_classes or max(len(np.unique(labelled_y)), 2)
    return _skactiveml(strategy, _unit(pool_x), _unit(labelled_x), labelled_y, budget, seed, classes)


def uncertainty(strategy: str, probabilities: np.ndarray) -> np.ndarray:
    """Doubt per row, larger = more doubtful: minus the top-two margin, or the entropy (nats)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    if strategy == "margin":
        top = np.sort(p, axis=1)
        second = top[:, -2] if p.shape[1] > 1 else np.zeros(len(p))
        return -(top[:, -1] - second)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)


def _skactiveml(strategy: str, pool: np.ndarray, labelled: np.ndarray, labels: np.ndarray,
                budget: int, seed: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    query = _query_strategy(strategy, seed, num_classes)
    candidates = np.arange(len(pool))
    if strategy == "probcover" and len(pool) + len(labelled) > PROBCOVER_MAX_ROWS:
        keep_labelled = min(len(labelled), PROBCOVER_MAX_ROWS // 2)
        rng = np.random.default_rng(seed)
        labelled_at = np.sort(rng.permutation(len(labelled))[:keep_labelled])
        labelled, labels = labelled[labelled_at], labels[labelled_at]
        room = max(PROBCOVER_MAX_ROWS - keep_labelled, budget)
        candidates = np.sort(rng.permutation(len(pool))[:room])
    from threadpoolctl import threadpool_limits

    x = np.concatenate([labelled, pool[candidates]]).astype(np.float64)
    y = np.concatenate([np.asarray(labels, np.float64), np.full(len(candidates), np.nan)])
    # one BLAS thread: k-means and distances on these sizes run faster than with oversubscribed threads
    with warnings.catch_warnings(), threadpool_limits(limits=1):  # its notes on cluster sizes are not the user's
        warnings.simplefilter("ignore")
        picked, utilities = query.query(x, y, batch_size=budget, return_utilities=True)
    picked = np.asarray(picked, np.int64)
    scores = utilities[np.arange(len(picked)), picked]
    return candidates[picked - len(labelled)], np.nan_to_num(scores.astype(np.float64))


def _query_strategy(strategy: str, seed: int, n_classes: int):
    try:
        from skactiveml.pool import CoreSet, ProbCover, TypiClust
    except ImportError:
        raise ConfigError(f"--strategy {strategy} needs scikit-activeml: {EXTRA_HINT}") from None
    if strategy == "coreset":
        return CoreSet(random_state=seed)
    if strategy == "typiclust":
        return TypiClust(random_state=seed, cluster_algo_dict={"n_init": 1})
    return ProbCover(random_state=seed, n_classes=n_classes, cluster_algo_dict={"n_init": 1})


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
