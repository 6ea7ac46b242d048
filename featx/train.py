"""Train a head on a feature store: fit on train, select on val, report on test, save.

    result = train_head("stores/elpv_efficientnet_lite0_224px_mildx4.h5", "linear")
    result.test.top1, result.head          # metrics, and the saved head's path

Heads never touch images: everything here reads the store only.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from featx.baselines import BASELINES, fit_baseline, linear_scores, scores
from featx.errors import ConfigError
from featx.feature_data import FeatureData, Normalizer
from featx.head_io import save_head
from featx.heads import HeadConfig, train_heads
from featx.metrics import Metrics, evaluate
from featx.progress import progress_bar
from featx.store import FeatureStore

HEAD_KINDS = ("linear", "mlp") + BASELINES


@dataclass
class TrainResult:
    head: Path  # the saved .safetensors (its .json sidecar is next to it)
    kind: str
    params: dict  # the selected hyper-parameters
    val: Metrics | None
    test: Metrics | None
    seconds: float
    search: list[dict] = field(default_factory=list)  # every candidate, with its val scores
    curve: list[dict] = field(default_factory=list)
    streamed: bool = False
    notes: list[str] = field(default_factory=list)


def default_head_stem(store_path: Path, kind: str, out_dir: Path | None = None) -> Path:
    return Path(out_dir or "heads") / f"{Path(store_path).stem}.{kind}"


def train_head(store_path: str | Path, kind: str = "linear", config: HeadConfig = HeadConfig(),
               out: str | Path | None = None, memory_mb: float | None = None,
               show_progress: bool = True) -> TrainResult:
    """Train (and save) one head of `kind` on the store; `out` is the head's path stem."""
    if kind not in HEAD_KINDS:
        raise ConfigError(f"unknown head '{kind}' (use {', '.join(HEAD_KINDS)})")
    start = time.perf_counter()
    with FeatureStore(store_path) as store:
        data = FeatureData(store, use_views=config.views and kind in ("linear", "mlp"),
                           memory_mb=memory_mb)
        normalizer = data.fit_normalizer(config.normalize)
        if kind in ("linear", "mlp"):
            fitted = _fit_torch(data, normalizer, replace(config, head=kind), show_progress)
        else:
            fitted = _fit_sklearn(data, normalizer, kind, config.seed)
        tensors, params, search, curve, score = fitted
        val = _metrics(data, store, "val", normalizer, score, kind != "svm")
        test = _metrics(data, store, "test", normalizer, score, kind != "svm")
        seconds = time.perf_counter() - start
        meta = _sidecar(store, kind, config, params, search, curve, val, test, seconds, data)
    if normalizer.mode == "standard":
        tensors = {**tensors, "norm.mean": normalizer.mean, "norm.std": normalizer.std}
    stem = Path(out) if out else default_head_stem(Path(store_path), kind)
    path = save_head(stem, tensors, meta)
    return TrainResult(path, kind, params, val, test, seconds, search, curve, data.streamed,
                       [data.note] if data.note else [])


def _fit_torch(data: FeatureData, normalizer: Normalizer, config: HeadConfig, show_progress: bool):
    with progress_bar(config.epochs, f"train {len(config.grid)} {config.head} head(s)",
                      unit="epoch", enabled=show_progress) as advance:
        sweep = train_heads(data, normalizer, config, advance)
    tensors = {k: v.numpy() for k, v in sweep.heads.select(sweep.best).items()}
    lr, wd = sweep.grid[sweep.best]
    search = [{"lr": a, "weight_decay": b, "val_top1": float(t), "val_loss": float(l)}
              for (a, b), t, l in zip(sweep.grid, sweep.val_top1, sweep.val_loss)]
    params = {"lr": lr, "weight_decay": wd, "epochs_run": sweep.epochs_run}
    return tensors, params, search, sweep.curve, lambda x: linear_scores(tensors, x)


def _fit_sklearn(data: FeatureData, normalizer: Normalizer, kind: str, seed: int):
    x, y, _ = data.split_arrays("train")
    x_val, y_val, _ = data.split_arrays("val")
    fit = fit_baseline(kind, normalizer(x), y, normalizer(x_val), y_val, data.num_classes, seed)
    tensors = {k: np.asarray(v) for k, v in fit.tensors.items()}
    return tensors, fit.params, fit.search, [], lambda z: scores(kind, tensors, z, fit.params)


def _metrics(data: FeatureData, store: FeatureStore, split: str, normalizer: Normalizer,
             score, probabilistic: bool) -> Metrics | None:
    """Metrics of one split, scored block by block (memory stays flat on big stores)."""
    parts = [(score(normalizer(x)), y, rows) for x, y, rows in data.split_blocks(split)]
    if not parts:
        return None
    s, y, rows = (np.concatenate(p) for p in zip(*parts))
    return evaluate(y, s, list(store.class_names), [store.paths[r] for r in rows], probabilistic)


def _sidecar(store: FeatureStore, kind: str, config: HeadConfig, params: dict, search: list,
             curve: list, val: Metrics | None, test: Metrics | None, seconds: float,
             data: FeatureData) -> dict:
    attrs = store.attrs
    return {
        "kind": kind, "classes": list(store.classes), "class_names": list(store.class_names),
        "backbone": attrs["backbone"], "backbone_seed": attrs["seed"], "weights": attrs["weights"],
        "weights_sha256": attrs["weights_sha256"], "feature_dim": data.dim,
        "preprocess": attrs["transform"]["clean"], "store": str(Path(store.path).resolve()),
        "store_dataset_fingerprint": attrs["dataset_fingerprint"], "normalize": config.normalize,
        "config": asdict(config) if kind in ("linear", "mlp") else {"normalize": config.normalize,
                                                                     "seed": config.seed},
        "params": params, "search": search, "curve": curve,
        "metrics": {"val": val.to_dict() if val else None, "test": test.to_dict() if test else None},
        "train_samples": data.n_train, "views_used": data.views, "streamed": data.streamed,
        "notes": [data.note] if data.note else [],
        "train_counts": np.bincount(data.train_labels, minlength=data.num_classes).tolist(),
        "dataset_root": attrs["dataset_root"], "dataset_name": attrs.get("dataset_name"),
        "extraction": {"images_per_second": attrs.get("images_per_second"),
                       "seconds": attrs.get("extract_seconds"), "device": attrs.get("device"),
                       "engine": attrs.get("engine"), "backbone_params": _param_count(attrs["backbone"])},
        "seconds": seconds,
    }


def _param_count(name: str) -> int | None:
    from featx.backbones import get_spec
    from featx.errors import FeatxError

    try:
        return get_spec(name).num_params
    except FeatxError:  # a timm model without timm installed here, say
        return None
