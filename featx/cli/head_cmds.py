"""featx train-head | lr-find | predict: heads on cached features, and new images through them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from featx.cli import options as o
from featx.cli.core import err, given, next_step, old_spelling, out, plural, say
from featx.cli.outputs import out_file, out_folder
from featx.errors import ConfigError, FeatxError


HeadThreads = Annotated[Optional[int], typer.Option(
    "--threads", metavar="N", min=1, show_default="1; every core for batch x features over 4M",
    help="torch threads for training (a head's small matrix products run fastest on one, above all "
         "on a busy machine).")]


def train_head(
    ctx: typer.Context,
    store: o.Store,
    kind: o.Kind = "linear",
    hidden: o.Hidden = "512",
    dropout: o.Dropout = 0.4,
    optimizer: o.HeadOptimizer = None,
    lookahead: o.Lookahead = False,
    lr: o.HeadLrs = None,
    weight_decay: o.HeadWeightDecays = None,
    momentum: o.Momentum = 0.9,
    schedule: o.HeadSchedule = "cosine",
    step_size: o.StepSize = 7,
    gamma: o.Gamma = 0.1,
    epochs: o.Epochs = 30,
    batch_size: o.BatchSize = 256,
    label_smoothing: o.LabelSmoothing = 0.0,
    balance: o.HeadBalance = "none",
    normalize: o.Normalize = "standard",
    use_views: o.UseViews = True,
    patience: o.Patience = None,
    features: o.Features = "all",
    select: o.Select = "auto",
    folds: o.Folds = 5,
    metric: o.SelectMetric = "top1",
    calibrate: o.Calibrate = "temperature",
    seed: o.Seed = 0,
    memory_mb: o.MemoryMb = None,
    threads: HeadThreads = None,
    out_dir: o.HeadsOut = Path("heads"),
    config: o.Config = None,
    head: o.OldHeadKind = None,
    views: o.OldViews = None,
) -> None:
    """Train a head on cached features: fit on train, select by cross-validation or on val, report on test."""
    from featx.probes.sweep import HeadConfig
    from featx.probes.train import train_head as run_train_head

    kind = old_spelling(ctx, "--head", "--kind", head, kind)
    use_views = old_spelling(ctx, "--views", "--use-views", views, use_views)
    # Left unset (None), the optimizer and the sweep are the kind's own: HeadConfig picks them.
    settings = HeadConfig(
        head=kind, hidden=o.parse_sizes(hidden), dropout=dropout, lookahead=lookahead, optimizer=optimizer,
        lrs=tuple(lr) if lr else None, weight_decays=tuple(weight_decay) if weight_decay else None,
        momentum=momentum, schedule=schedule, step_size=step_size, gamma=gamma, epochs=epochs,
        batch_size=batch_size, label_smoothing=label_smoothing, balance=balance, normalize=normalize,
        use_views=use_views, patience=patience, features=features, select=select, folds=folds, metric=metric,
        seed=seed)
    for name in ignored_options(ctx, kind):
        err.print(f"warning: --{name.replace('_', '-')} does not apply to a {kind} head; ignored",
                  markup=False, highlight=False)
    from featx.heads.io import head_paths

    stem = head_out(out_dir, store, kind)  # checked before training: no work lost at save time
    from featx.runtime.device import head_threads, torch_threads

    replacing = head_paths(stem)[0].exists()
    with torch_threads(head_threads(batch_size, store_dim(store), threads)):
        result = run_train_head(store, kind, settings, stem, memory_mb, calibrate=calibrate)
    print_training(result)
    if replacing:
        out.print(f"note: replaced the head that was at {result.path}", markup=False, highlight=False)
    next_step("featx predict IMAGES --head", result.path)


def store_dim(store: Path) -> int:
    """The feature columns of `store` (a bad store is the same one-line error train_head gives)."""
    from featx.store import FeatureStore

    with FeatureStore(store) as opened:
        return opened.feature_dim


# Options that only some kinds of head use: given for another kind, they are said to be ignored.
TORCH_ONLY = ("optimizer", "lookahead", "lr", "weight_decay", "momentum", "schedule", "step_size", "gamma",
              "epochs", "batch_size", "label_smoothing", "balance", "use_views", "patience", "select", "folds",
              "metric")
MLP_ONLY = ("hidden", "dropout")


def ignored_options(ctx: typer.Context, kind: str) -> list[str]:
    """The options given (command line or --config) that the head `kind` does not use."""
    unused = {"mlp": (), "linear": MLP_ONLY}.get(kind, MLP_ONLY + TORCH_ONLY)
    return [name for name in unused if given(ctx, name)]


def head_out(out_dir: Path, store: Path, kind: str) -> Path:
    """--out DIR: the head is DIR/STORE.KIND(.safetensors, .json); --out FILE.safetensors names it.
    Either must be writable (checked here, before the training). Returns the head's path stem."""
    from featx.probes.train import default_head_stem

    if out_dir.suffix == ".safetensors":
        out_file(out_dir, example="head.safetensors")
        out_file(out_dir.with_suffix(".json"))
        return out_dir.with_suffix("")
    out_folder(out_dir)
    return default_head_stem(store, kind, out_dir)


def print_training(r) -> None:
    """The chosen settings, metrics, per-class table and worst errors of a trained featx.Head."""
    for note in r.notes:
        out.print(f"note: {note}", markup=False)
    why = r.meta.get("selection", {}).get("why")
    if why:
        out.print(f"selected by {why}", markup=False, soft_wrap=False)  # prose: wrapped at words
    if "calibration" in r.meta:
        from featx.probes.calibrated import describe

        out.print(describe(r.meta["calibration"]), markup=False, highlight=False, soft_wrap=False)
    elif r.search and len(r.search) > 1:
        chosen = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.params.items())
        score = f" (val top-1 {r.val.top1:.3f})" if r.val else ""
        out.print(f"searched {len(r.search)} candidates; best on val: {chosen}{score}", markup=False)
    cv = r.meta.get("selection", {}).get("method") == "cv"  # val = out-of-fold over train+val
    splits = [(name, m) for name, m in (("train+val (out-of-fold)" if cv else "val", r.val), ("test", r.test)) if m]
    out.print(metrics_table(splits))
    final = r.test or r.val
    if final:
        per = Table("class", "precision", "recall", "F1", "support",
                    title=f"per class ({'test' if r.test else 'val'})")
        for c in final.per_class:
            per.add_row(c.name, f"{c.precision:.3f}", f"{c.recall:.3f}", f"{c.f1:.3f}", str(c.support))
        out.print(per)
        out.print(confusion_table(final))
        if final.worst:
            out.print("worst errors (highest cross-entropy):")
            for w in final.worst[:5]:
                out.print(f"  {w['path']}: true {w['true']} (prob {w['p_true']:.2f}), predicted "
                          f"{w['predicted']} (prob {w['p_predicted']:.2f})", markup=False, highlight=False)
    _print_rough_probabilities(r.meta.get("calibration"))
    streamed = " (streamed from HDF5)" if r.meta.get("streamed") else ""
    out.print(f"{r.kind} head trained in {r.meta.get('seconds', 0.0):.1f} s{streamed}: "
              f"{r.path} (+ .json)", markup=False, highlight=False)


def _print_rough_probabilities(record: dict | None) -> None:
    """Near the end, where it is read: the tables above push the calibration line out of sight."""
    from featx.probes.calibrated import rough_probabilities

    rough = rough_probabilities(record) if isinstance(record, dict) else None
    if rough:
        out.print(f"note: {rough}", markup=False, highlight=False, soft_wrap=False)


def metrics_table(splits: list[tuple[str, object]]) -> Table:
    """One row per metric, one column per split: a value with its interval never wraps, and
    two splits fit 80 columns ('train+val (out-of-fold)' whole)."""
    table = Table("metric", *(name for name, _ in splits))
    for column in table.columns[1:]:
        column.no_wrap = True
    rows = [("images", lambda m: str(m.n)), ("top-1", lambda m: _with_ci(m, "top1")),
            ("top-5", lambda m: _with_ci(m, "top5") if m.top5 is not None else "-"),
            ("bal. acc", lambda m: _with_ci(m, "balanced_accuracy")),
            ("macro-F1", lambda m: _with_ci(m, "macro_f1")), ("NLL", lambda m: _fmt(m.nll)),
            ("ECE", lambda m: _fmt(m.ece))]
    for label, cell in rows:
        table.add_row(label, *(cell(m) for _, m in splits))
    return table


def confusion_table(m) -> Table:
    """The confusion matrix: a row per true class, a column per predicted one."""
    names = [c.name for c in m.per_class]
    table = Table("true \\ predicted", *names, title="confusion")
    for name, row in zip(names, m.confusion):
        table.add_row(name, *(str(v) for v in row))
    return table


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _with_ci(m, metric: str) -> str:
    """'0.774 [0.742, 0.806]': the value and its 95% bootstrap interval (when measured)."""
    bounds = m.interval(metric)
    return f"{getattr(m, metric):.3f}" + (f" [{bounds[0]:.3f}, {bounds[1]:.3f}]" if bounds else "")


def lr_find(
    ctx: typer.Context,
    store: o.Store,
    kind: o.ProbeKind = "linear",
    hidden: o.Hidden = "512",
    optimizer: o.HeadOptimizer = None,
    start: o.Start = 1e-6,
    end: o.End = 10.0,
    steps: o.Steps = 100,
    batch_size: o.BatchSize = 256,
    out_dir: o.CurveOut = Path("heads"),
    config: o.Config = None,
    head: o.OldHeadKind = None,
) -> None:
    """The learning-rate range test of a head on cached features: its loss curve and a suggested rate.

    The curve is written as CSV + PNG. For a fine-tune through the network: featx finetune ... --lr-find."""
    from featx.probes.sweep import HeadConfig
    from featx.probes.train import find_head_lr

    kind = old_spelling(ctx, "--head", "--kind", head, kind)
    if kind not in o.SWEPT_KINDS.choices:  # the old spelling --head KIND took any kind
        raise ConfigError(f"--kind {kind}: the range test trains a {' or '.join(o.SWEPT_KINDS.choices)} head")
    if not end > start:
        raise ConfigError(f"--end {end:g}: must be above --start {start:g}")
    out_folder(out_dir)  # kind and writability checked before the test, not after it
    # The test sets the rate at each step (lrs is a placeholder); weight decay is the kind's first.
    cfg = HeadConfig(head=kind, hidden=o.parse_sizes(hidden), batch_size=batch_size, lrs=(1.0,),
                     optimizer=optimizer)
    result = find_head_lr(store, cfg, start, end, steps)
    csv_path, png = result.save(out_dir / f"{store.stem}.lr-find")
    say(f"suggested learning rate {result.suggestion:.3g} (a tenth of the lowest-loss rate); the curve:")
    out.print(f"  {csv_path}\n  {png}", markup=False, highlight=False)
    next_step(f"featx train-head --kind {kind} --lr {result.suggestion:.3g}", store)


def predict(
    inputs: o.Inputs,
    head: o.HeadFile,
    out_csv: o.CsvOut = Path("predictions.csv"),
    top_k: o.TopK = 3,
    class_map: o.ClassMap = None,
    device: o.Device = "auto",
    batch_size: o.BatchSize = 64,
    workers: o.Workers = None,
    engine: o.Engine = "auto",
    threads: o.Threads = None,
    config: o.Config = None,
) -> None:
    """Classify new images (or a store's features) with a trained head, into a CSV."""
    from featx.heads.predict import predict as run_predict

    out_file(out_csv, example="predictions.csv")
    found = run_predict(head, inputs, class_map, device, batch_size, workers, engine, threads)
    for path, reason in found.failed:
        err.print(f"skipped {path}: {reason}", markup=False, highlight=False)
    if not found.paths:
        raise FeatxError(f"nothing to predict: none of the {len(found.failed)} input image(s) could be "
                         f"used; {out_csv} was not written")
    csv_path = found.to_csv(out_csv, top_k)
    skipped = f" ({plural(len(found.failed), 'file')} skipped)" if found.failed else ""
    out.print(f"{plural(len(found.paths), 'prediction')}{skipped} written to {csv_path}", markup=False,
              highlight=False)
    next_step("featx export-model", head)  # the head and its backbone as one ONNX file to ship
