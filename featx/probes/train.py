"""Train a head on a feature store: fit on train, select on val, report on test, save.

    head = train_head("stores/elpv_efficientnet_lite0_224px_mildx4.h5", "linear")
    head.metrics["test"].top1, head.path, head.predict_proba(features)

Heads never touch images: everything here reads the store only.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from featx.config import as_config
from featx.runtime.atomic import check_writable
from featx.errors import ConfigError, FeatxError
from featx.probes.feature_data import FeatureData
from featx.heads.io import Head, save_head
from featx.heads.kinds import FEATURE_KINDS, head_kind
from featx.heads.meta import HeadMeta
from featx.probes.sweep import HeadConfig, budget_epochs, train_heads
from featx.evaluation.metrics import Metrics, evaluate
from featx.runtime.progress import progress_bar
from featx.heads.scoring import Normalizer, linear_scores, scores
from featx.probes.selection import use_cv
from featx.store import FeatureStore
from featx.probes.calibrated import calibrated_scores, calibration_record, check_calibration, fit_head_temperature
from featx.probes.cv import candidate, fit_cross_validated, why_chosen
from featx.probes.selection import choose_on_val
from featx.evaluation.calibration import temperature_of


def default_head_stem(store_path: str | Path, kind: str, out_dir: str | Path | None = None) -> Path:
    """OUT_DIR/STORE.KIND (heads/ by default): one head of each kind per store."""
    return Path(out_dir or "heads") / f"{Path(store_path).stem}.{kind}"


def head_stem(store_path: str | Path, kind: str, out: str | Path | None) -> Path:
    """Where a head is saved: `out` as a path stem (NAME or NAME.safetensors), or inside `out`
    when it is a folder."""
    if out is None:
        return default_head_stem(store_path, kind)
    if Path(out).suffix == ".safetensors":
        return Path(out).with_suffix("")
    if Path(out).is_dir() or str(out).endswith(("/", "\\")):
        return default_head_stem(store_path, kind, out)
    return Path(out)


def train_head(store_path: str | Path, kind: str | None = None, config: HeadConfig | dict | None = None,
               out: str | Path | None = None, memory_mb: float | None = None,
               show_progress: bool = True, calibrate: str = "temperature") -> Head:
    """Train one head on a complete store, save it, and return it.

    Args:
        kind: linear | mlp | logreg | svm | knn; None takes `config.head` (linear by default).
        config: the training settings; options it leaves unset take the defaults of `kind`.
        out: a path stem (NAME -> NAME.safetensors + NAME.json) or a folder; heads/ by default.
        memory_mb: stream features from the store when they would need more memory than this.
        calibrate: "temperature": the logits of a linear, MLP or logreg head are divided by one
            scalar fitted on its out-of-fold (cross-validated) or val predictions, never on test,
            so that its probabilities match how often it is right; it is saved with the head and
            every score it gives uses it. "none": the probabilities as trained.
    """
    check_calibration(calibrate)
    if kind is not None:
        head_kind(kind, among=FEATURE_KINDS)
    config = as_config(HeadConfig, config)  # a dict of its fields, from a notebook
    config = config.for_kind(kind) if kind else config
    kind = config.head
    stem = head_stem(store_path, kind, out)
    check_writable(stem.parent)  # now, not after the training
    start = time.perf_counter()
    with FeatureStore(store_path) as store:
        # The scikit-learn heads read the rows they fit block by block: nothing to hold in memory.
        data = FeatureData(store, use_views=config.views and config.torch_head, memory_mb=memory_mb,
                           features=config.features, hold=config.torch_head)
        selection = {"method": "val", "metric": config.metric if config.torch_head else "top1"}
        found = None  # the temperature the selection fitted (on out-of-fold or val predictions)
        val_scores = None  # the val rows' scores, where fitting made them already (k-NN)
        if use_cv(config, data.n_train + len(data.rows("val")), data.streamed):
            data.note = None  # the folds use every train image: none is held out as val
            fitted, normalizer, val, selection, found = fit_cross_validated(data, config, show_progress, calibrate)
        else:
            check_val_split(data, config)
            normalizer = data.fit_normalizer(config.normalize)
            if config.torch_head:
                fitted, selection, found = _fit_torch(data, normalizer, config, show_progress, calibrate)
            else:
                fitted, val_scores = _fit_sklearn(data, normalizer, kind, config.seed, show_progress)
        data.release()  # fitted: scoring reads the store (at a million rows, most of the memory)
        probabilistic = head_kind(kind).probabilistic
        tensors, params, search, curve, score = fitted
        temperature = fit_head_temperature(calibrate, kind, tensors, data, normalizer, found)
        if temperature is not None:  # every metric from here on is of the calibrated head
            uncalibrated, score = score, calibrated_scores(tensors, temperature.value)
        if selection["method"] == "val":
            val = _metrics(data, store, "val", normalizer, score, probabilistic, val_scores)
        test = _metrics(data, store, "test", normalizer, score, probabilistic)
        before = None if temperature is None or test is None else _metrics(
            data, store, "test", normalizer, uncalibrated, probabilistic)
        seconds = time.perf_counter() - start
        meta = _sidecar(store, kind, config, params, search, curve, val, test, seconds, data, selection)
        meta = replace(meta, temperature=temperature.value if temperature else 1.0,
                       extra={**meta.extra, "calibration": calibration_record(calibrate, kind, temperature,
                                                                              before, test)})
    if normalizer.mode == "standard":
        tensors = {**tensors, "norm.mean": normalizer.mean, "norm.std": normalizer.std}
    path = save_head(stem, tensors, meta)
    del tensors, fitted, score  # one copy of a big head in memory (a million-row k-NN: 1.5 GB), not two
    return Head.load(path)


def check_val_split(data: FeatureData, config: HeadConfig) -> None:
    """Refuse to select on an empty val split: a sweep, a baseline's search and early stopping
    all compare heads on val, and on no samples every head ties."""
    if len(data.rows("val")):
        return
    if config.torch_head and len(config.grid) == 1 and config.patience is None:
        return  # one head, no early stopping: nothing to select
    what = ("early stopping" if config.torch_head and len(config.grid) == 1 else
            f"the {len(config.grid)} heads of the sweep" if config.torch_head else f"the {config.head} search")
    fixes = "extract with a val split (--val-frac)" + (
        ", or train one --lr and --weight-decay without --patience" if config.torch_head else "")
    raise ConfigError(f"{data.store.path}: the val split is empty and {data.n_train} training samples are "
                      f"too few to hold one out; {what} would select on nothing ({fixes})")


def _fit_torch(data: FeatureData, normalizer: Normalizer, config: HeadConfig, show_progress: bool,
               calibrate: str = "temperature"):
    """((tensors, params, search, curve, score), selection, Temperature or None): the sweep trained
    on train, its settings chosen on val by choose_on_val's rule (tied with the best val score,
    then the lowest val cross-entropy at each one's own temperature)."""
    with progress_bar(budget_epochs(config.epochs, data.n_train), f"train {len(config.grid)} {config.head} head(s)",
                      unit="epoch", enabled=show_progress) as advance:
        sweep = train_heads(data, normalizer, config, advance)
    n_val = len(data.rows("val"))
    selection = {"method": "val", "metric": config.metric}
    temperature, chosen = None, sweep.best
    if n_val and len(config.grid) > 1:
        blocks = lambda: ((normalizer(x), y, None) for x, y, _ in data.split_blocks("val"))  # noqa: E731
        cv = choose_on_val(sweep, blocks, config.metric)
        chosen = cv.best
        search = [candidate(config, i, cv) for i in range(len(config.grid))]
        lead_lr, lead_wd = config.grid[cv.leader]
        selection.update(rows=n_val, score=float(cv.scores[cv.best]), tied=int(cv.tied.sum()),
                         leader={"lr": lead_lr, "weight_decay": lead_wd, config.metric: float(cv.scores[cv.leader])},
                         why=why_chosen(cv, config, n_val))
        if calibrate == "temperature":  # the chosen head's, fitted on the val logits that chose it
            temperature = temperature_of(cv.oof_logits, cv.labels, f"the val split's predictions ({n_val} images)")
    else:
        search = [{"lr": a, "weight_decay": b, "val_top1": float(t), "val_loss": float(l)} if ok else
                  {"lr": a, "weight_decay": b, "val_top1": None, "val_loss": None, "diverged": True}
                  for (a, b), t, l, ok in zip(sweep.grid, sweep.val_top1, sweep.val_loss, sweep.usable)]
    tensors = {k: v.numpy() for k, v in sweep.heads.select(chosen).items()}
    lr, wd = sweep.grid[chosen]
    params = {"lr": lr, "weight_decay": wd, "epochs_run": sweep.epochs_run}
    curve = sweep.curve
    if not n_val:  # one head trained without val (check_val_split): nothing measured
        curve = [{**c, "val_loss": None, "val_top1": None} for c in curve]
        search = [{**c, "val_loss": None, "val_top1": None} for c in search]
    return (tensors, params, search, curve, lambda x: linear_scores(tensors, x)), selection, temperature


def _fit_sklearn(data: FeatureData, normalizer: Normalizer, kind: str, seed: int, show_progress: bool):
    # Imported here: scikit-learn holds ~160 MB resident, needed only by these heads.
    from featx.probes.baselines import fit_baseline, fit_knn, subsample_rows

    if head_kind(kind).needs_reference_set:  # streamed: at a million rows the train split as float32 would be 3 GB
        blocks = lambda split: ((normalizer(x), y) for x, y, _ in data.split_blocks(split))  # noqa: E731
        rows = data.n_train + len(data.rows("val"))  # added to the reference set, then searched
        with progress_bar(rows, "k-NN: reference set, then val search", unit="row",
                          enabled=show_progress) as advance:
            fit = fit_knn(blocks("train"), data.n_train, data.dim, blocks("val"), data.num_classes, advance)
        score = lambda z: scores(kind, fit.tensors, z, fit.params)  # noqa: E731
        return (fit.tensors, fit.params, fit.search, [], score), fit.val_scores
    # Only the rows the fit uses (a 50,000-row subsample of a million), normalised block by block
    # into one array: the train split of a million rows as float32 would be 3 GB, twice over.
    keep = subsample_rows(kind, data.train_labels, seed)
    train = data.rows("train") if keep is None else data.rows("train")[keep]
    x, y = data.normalized(train, normalizer)
    x_val, y_val = data.normalized(data.rows("val"), normalizer)
    fit = fit_baseline(kind, x, y, x_val, y_val, data.num_classes, seed, subsampled=keep is not None)
    tensors = {k: np.asarray(v) for k, v in fit.tensors.items()}
    return (tensors, fit.params, fit.search, [], lambda z: scores(kind, tensors, z, fit.params)), None


def _metrics(data: FeatureData, store: FeatureStore, split: str, normalizer: Normalizer,
             score, probabilistic: bool, scored: np.ndarray | None = None) -> Metrics | None:
    """Metrics of one split, scored block by block (memory stays flat on big stores); `scored`:
    the split's scores, in row order, where fitting made them already."""
    rows = data.rows(split)
    if not len(rows):
        return None
    if scored is not None:
        s, y = scored, store.labels[rows]
    else:
        parts = [(score(normalizer(x)), y) for x, y, _ in data.split_blocks(split)]
        s, y = (np.concatenate(p) for p in zip(*parts))
    return evaluate(y, s, list(store.class_names), store.paths_of(rows), probabilistic,
                    keep_samples=split == "test")  # per-image test predictions: paired comparisons


def _sidecar(store: FeatureStore, kind: str, config: HeadConfig, params: dict, search: list,
             curve: list, val: Metrics | None, test: Metrics | None, seconds: float,
             data: FeatureData, selection: dict) -> HeadMeta:
    attrs = store.attrs
    train_samples = data.n_train
    train_counts = np.bincount(data.train_labels, minlength=data.num_classes).tolist()
    if selection["method"] == "cv":  # the head was refitted on train+val
        selection = dict(selection)
        train_samples, train_counts = selection["rows"], selection.pop("counts")
    return HeadMeta(
        kind=kind, classes=list(store.classes), class_names=list(store.class_names),
        backbone=attrs["backbone"], backbone_seed=int(attrs["seed"]), weights=attrs["weights"],
        weights_sha256=attrs["weights_sha256"], feature_dim=int(data.dim),
        preprocess=attrs["transform"]["clean"], store=str(Path(store.path).resolve()),
        store_dataset_fingerprint=attrs["dataset_fingerprint"], normalize=config.normalize,
        store_version=int(attrs.get("store_version", 1)),  # `predict` and `report` say when it is older
        config=asdict(config) if config.torch_head else {"normalize": config.normalize,
                                                         "features": config.features, "seed": config.seed},
        # The head takes the final features, then the pooled maps of this block (extract --pool):
        # `predict` computes the same columns from new images.
        features=config.features, pool=store.pool if config.features == "all" else None,
        tta=attrs.get("tta") or None,  # features averaged over these symmetries (extract --tta)
        params=params, search=search, curve=curve,
        metrics={"val": val.to_dict() if val else None, "test": test.to_dict() if test else None},
        train_samples=train_samples, views_used=data.views, streamed=data.streamed,
        notes=[data.note] if data.note else [], train_counts=train_counts,
        dataset_root=attrs["dataset_root"], dataset_name=attrs.get("dataset_name"),
        extraction={"images_per_second": attrs.get("images_per_second"),
                    "seconds": attrs.get("extract_seconds"), "device": attrs.get("device"),
                    "engine": attrs.get("engine"), "backbone_params": _param_count(attrs["backbone"])},
        seconds=seconds, selection=selection,
    )


def _param_count(name: str) -> int | None:
    from featx.backbones import get_spec

    try:
        return get_spec(name).num_params
    except FeatxError:  # a timm model without timm installed here, say
        return None


def check_range_test(start: float, end: float, steps: int) -> None:
    """The range test's rates grow from `start` to `end` in `steps` steps: 0 < start < end, both
    finite, steps an integer >= 2."""
    rates = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (start, end))
    if not (rates and isinstance(steps, int) and not isinstance(steps, bool) and steps >= 2
            and 0 < start < end < float("inf")):
        raise ConfigError(f"the range test needs 0 < --start < --end (finite) and --steps >= 2, got "
                          f"start={start!r}, end={end!r}, steps={steps!r}")


def find_head_lr(store_path: str | Path, config: HeadConfig | None = None, start: float = 1e-6,
                 end: float = 10.0, steps: int = 100):
    """LR range test of one head of `config` (linear or mlp) on a complete store: the loss at
    each rate and a suggested rate (a tenth of the lowest-loss rate). Returns LRFindResult."""
    from featx.probes.sweep import lr_find

    config = config or HeadConfig()
    if not config.torch_head:
        raise ConfigError(f"head {config.head}: the range test trains a linear or mlp head")
    check_range_test(start, end, steps)
    with FeatureStore(store_path) as store:
        data = FeatureData(store, features=config.features)
        return lr_find(data, data.fit_normalizer(config.normalize), config, start, end, steps)
