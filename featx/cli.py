"""The `featx` command: a thin layer over the Python API (featx.data, featx.backbones, ...).

Every FeatxError becomes one line on stderr and exit status 1; a traceback means a featx bug.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from featx.errors import ConfigError, FeatxError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Run each frozen backbone once into an HDF5 feature store; train heads in seconds.")
out = Console(soft_wrap=True)  # long paths stay on one line (greppable, copyable)
err = Console(stderr=True, soft_wrap=True)

DataArg = typer.Argument(None, help="Folder, CSV/TSV manifest, or packaged dataset name (elpv).")
LabelCol = typer.Option(None, "--label-col", help="Manifest label column (name or 0-based index).")
Binarize = typer.Option(None, "--binarize", help="Numeric labels -> two classes '<=T' and '>T'.")
ValFrac = typer.Option(None, "--val-frac", help="Validation fraction when the data has no splits.")
TestFrac = typer.Option(None, "--test-frac", help="Test fraction when the data has no splits.")
SplitSeed = typer.Option(None, "--split-seed", help="Seed of the stratified split.")
ClassMap = typer.Option(None, "--class-map", help="JSON {class: display name}.")
Subset = typer.Option(None, "--subset", help="Use a stratified subset of N samples (quick runs).")


def _dataset(data, label_col, binarize, val_frac, test_frac, split_seed, class_map, subset_n):
    from featx.data import DatasetOptions, open_dataset, subset

    given = {"label_col": label_col, "binarize": binarize, "val_frac": val_frac,
             "test_frac": test_frac, "split_seed": split_seed, "class_map": class_map}
    options = DatasetOptions(**{k: v for k, v in given.items() if v is not None})
    explicit = any(v is not None for v in given.values())
    dataset = open_dataset(data, options if explicit else None)
    return subset(dataset, subset_n, options.split_seed) if subset_n else dataset


@app.command()
def scan(data: str = DataArg, label_col: Optional[str] = LabelCol, binarize: Optional[float] = Binarize,
         val_frac: Optional[float] = ValFrac, test_frac: Optional[float] = TestFrac,
         split_seed: Optional[int] = SplitSeed, class_map: Optional[str] = ClassMap,
         subset: Optional[int] = Subset) -> None:
    """Classes, counts per split, image sizes and modes, and every unreadable file."""
    from featx.data import scan_images
    from featx.progress import progress_bar

    _require(data, "DATA")
    ds = _dataset(data, label_col, binarize, val_frac, test_frac, split_seed, class_map, subset)
    with progress_bar(len(ds.samples), f"scan {ds.name}") as advance:
        report = scan_images(ds, advance)
    out.print(f"[bold]{ds.name}[/]  {ds.root}  layout: {ds.layout}, {len(ds.samples)} images, "
              f"{len(ds.classes)} classes")
    counts = ds.counts()
    splits = [s for s in ("train", "val", "test", "unlabeled") if s in counts]
    table = Table("class", "name", *splits, "total")
    for c, name in list(zip(ds.classes, ds.display_names)) + ([("(unlabeled)", "")] if "unlabeled" in counts else []):
        row = [counts[s].get(c, 0) for s in splits]
        table.add_row(c, name if name != c else "", *map(str, row), str(sum(row)))
    table.add_row("[bold]all", "", *[str(sum(counts[s].values())) for s in splits],
                  str(len(ds.samples)))
    out.print(table)
    out.print("sizes: " + _top(report.sizes, lambda wh: f"{wh[0]}x{wh[1]}"))
    out.print("modes: " + _top(report.modes, str))
    for note in ds.notes:
        out.print(f"note: {note}")
    if ds.ignored_files:
        out.print(f"note: {ds.ignored_files} file(s) without an image extension ignored")
    if report.unreadable:
        out.print(f"[bold red]{len(report.unreadable)} unreadable file(s)[/] (excluded from every run):")
        for path, reason in report.unreadable:
            out.print(f"  {path}: {reason}", markup=False, highlight=False)
    else:
        out.print("all images decode")


def _top(counter, fmt, n: int = 6) -> str:
    items = counter.most_common()
    text = ", ".join(f"{fmt(k)} ({v})" for k, v in items[:n])
    return text + (f", ... {len(items) - n} more" if len(items) > n else "") if items else "-"


@app.command()
def backbones(pattern: str = typer.Argument("*", help="Glob on names, e.g. 'resnet*'."),
              family: Optional[str] = typer.Option(None, help="torchvision | packaged | timm"),
              cuts: Optional[str] = typer.Option(None, "--cuts", help="List a backbone's cut points.")) -> None:
    """Names, feature dims, parameter counts, and whether weights are available offline."""
    from featx.backbones import get_spec, list_backbones

    if cuts:
        _print_cuts(cuts)
        return
    names = list_backbones(pattern, family)
    hidden = 0
    if pattern == "*" and family is None:
        # timm has over a thousand models: list them on request (--family timm, 'timm/convnext*').
        hidden = sum(n.startswith("timm/") for n in names)
        names = [n for n in names if not n.startswith("timm/")]
    if not names:
        raise FeatxError(f"no backbone matches '{pattern}'" + (f" in family {family}" if family else ""))
    table = Table("name", "family", "dim", "params", "input", "weights offline")
    for name in names:
        spec = get_spec(name)
        table.add_row(name, spec.family, str(spec.feature_dim), f"{spec.num_params / 1e6:.1f}M",
                      str(spec.preprocess.input_size),
                      "[green]yes[/]" if spec.weights_offline else "no")
    out.print(table)
    offline = sum(get_spec(n).weights_offline for n in names)
    out.print(f"{len(names)} backbones, {offline} with weights on this machine "
              "(others: --weights PATH, or the torch hub / Hugging Face cache)")
    if hidden:
        out.print(f"and {hidden} timm models: `featx backbones --family timm` or a pattern "
                  "like 'timm/convnext*'")


def _print_cuts(name: str) -> None:
    from featx.backbones import create_backbone
    from featx.backbones.cuts import cut_table

    backbone = create_backbone(name, weights="none")  # shapes and FLOPs need no weights
    rows = cut_table(backbone.model, backbone.preprocess.input_size)
    if not rows:
        raise FeatxError(f"{name}: no known cut points for this architecture")
    table = Table("cut", "map (C, H, W)", "MB / image (fp16)", "forward FLOPs below",
                  title=f"{name} at {backbone.preprocess.input_size} px: extract --cut CUT, "
                        "finetune --from-block CUT")
    for row in rows:
        c, h, w = row["shape"]
        table.add_row(row["cut"], f"{c} x {h} x {w}", f"{c * h * w * 2 / 1e6:.3f}",
                      f"{row['bottom_flops']:.0%}")
    out.print(table)


EXTRACT_DEFAULTS = {"out": "stores", "backbone": ["efficientnet_lite0"]}


@app.command()
def extract(
    data: Optional[str] = DataArg,
    backbone: Optional[list[str]] = typer.Option(None, "--backbone", "-b", help="Repeat for several."),
    out_dir: Optional[str] = typer.Option(None, "--out", help="Folder for the stores [stores]."),
    views: Optional[int] = typer.Option(None, help="Augmented views per training image (K) [0]."),
    aug: Optional[str] = typer.Option(None, help="Recipe in configs/aug or a YAML path [mild]."),
    batch_size: Optional[int] = typer.Option(None, help="Images per forward pass [64]."),
    workers: Optional[int] = typer.Option(None, help="Decoding processes [1 on CPU, 16 on CUDA]."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N [auto]."),
    dtype: Optional[str] = typer.Option(None, help="Store dtype: float16 | float32 [float16]."),
    seed: Optional[int] = typer.Option(None, help="Seed of the augmented views [0]."),
    weights: Optional[str] = typer.Option(None, help="default | none | PATH (.safetensors/.pt)."),
    input_size: Optional[int] = typer.Option(None, help="Crop size override (keeps resize ratio)."),
    decode: Optional[str] = typer.Option(None, help="auto | cpu | gpu (nvjpeg for JPEG files)."),
    amp: Optional[str] = typer.Option(None, help="CUDA autocast: bf16 | fp16 | off [bf16]."),
    engine: Optional[str] = typer.Option(None, help="auto | torch | onnxruntime [auto: ORT on CPU]."),
    threads: Optional[int] = typer.Option(None, help="ONNX Runtime threads [torch's thread count]."),
    cut: Optional[str] = typer.Option(None, help="Also store the maps entering this block "
                                      "(`featx backbones --cuts NAME`; for finetune --from-block)."),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", help="Replace a store made differently."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML/TOML file with these options."),
    label_col: Optional[str] = LabelCol, binarize: Optional[float] = Binarize,
    val_frac: Optional[float] = ValFrac, test_frac: Optional[float] = TestFrac,
    split_seed: Optional[int] = SplitSeed, class_map: Optional[str] = ClassMap,
    subset: Optional[int] = Subset,
) -> None:
    """Run each backbone once over DATA (clean + K augmented views) into a feature store."""
    from featx.config import load_config, merge
    from featx.extract import ExtractConfig
    from featx.extract import extract as run_extract

    given = {k: v for k, v in locals().items() if k not in ("config", "load_config", "merge",
                                                              "ExtractConfig", "run_extract")}
    given["out"] = given.pop("out_dir")
    allowed = set(given) | {"out"}
    opts = merge(given, load_config(config, allowed) if config else {}, EXTRACT_DEFAULTS)
    _require(opts.get("data"), "DATA (or `data:` in --config)")
    names = opts["backbone"] if isinstance(opts["backbone"], list) else [opts["backbone"]]
    ds = _dataset(str(opts["data"]), opts.get("label_col"), opts.get("binarize"),
                  opts.get("val_frac"), opts.get("test_frac"), opts.get("split_seed"),
                  opts.get("class_map"), opts.get("subset"))
    known = {f.name for f in fields(ExtractConfig)}
    cfg = ExtractConfig(**{k: v for k, v in opts.items() if k in known and v is not None})
    from featx.distributed import context, finish

    quiet = context().rank != 0  # under torchrun, rank 0 speaks for all
    try:
        for name in names:
            r = run_extract(ds, name, Path(opts["out"]), cfg)
            if not quiet:
                _print_extraction(r)
    finally:
        finish()


def _print_extraction(r) -> None:
    if r.status == "complete":
        out.print(f"{r.backbone}: {r.store} is already complete ({r.samples} samples, "
                  f"{r.failed} failed); nothing to do")
    else:
        out.print(f"{r.backbone}: {r.status} {r.store}: {r.images} images in {r.seconds:.1f} s "
                  f"({r.images_per_second:.1f} img/s on {r.device}), {r.samples} samples, "
                  f"{r.failed} failed" + (" (see `featx info`)" if r.failed else ""))


@app.command("train-head")
def train_head_cmd(
    store: Path = typer.Argument(..., help="A complete feature store (.h5)."),
    head: Optional[str] = typer.Option(None, help="linear | mlp | logreg | svm | knn [linear]"),
    hidden: Optional[str] = typer.Option(None, help="MLP hidden sizes, e.g. 512 or 1024,256."),
    dropout: Optional[float] = typer.Option(None, help="MLP dropout [0.4]."),
    optimizer: Optional[str] = typer.Option(None, help="sgd | adam | adamw."),
    lookahead: Optional[bool] = typer.Option(None, "--lookahead", help="Wrap in Lookahead(k=5, 0.5)."),
    lr: Optional[list[float]] = typer.Option(None, "--lr", help="Learning rate(s); several = sweep."),
    wd: Optional[list[float]] = typer.Option(None, "--wd", help="Weight decay(s); several = sweep."),
    schedule: Optional[str] = typer.Option(None, help="none | step | cosine | onecycle."),
    step_size: Optional[int] = typer.Option(None, help="StepLR period in epochs [7]."),
    gamma: Optional[float] = typer.Option(None, help="StepLR factor [0.1]."),
    epochs: Optional[int] = typer.Option(None, help="Epochs [30]."),
    batch_size: Optional[int] = typer.Option(None, help="Minibatch size [256]."),
    label_smoothing: Optional[float] = typer.Option(None, help="Label smoothing [0]."),
    balance: Optional[str] = typer.Option(None, help="none | weights | sampler."),
    normalize: Optional[str] = typer.Option(None, help="none | standard | l2 [standard]."),
    views: Optional[bool] = typer.Option(None, "--views/--clean-only", help="Use stored views."),
    patience: Optional[int] = typer.Option(None, help="Early stopping patience (val loss)."),
    seed: Optional[int] = typer.Option(None, help="Seed [0]."),
    memory_mb: Optional[float] = typer.Option(None, help="Stream from HDF5 above this many MB."),
    out: Optional[Path] = typer.Option(None, help="Head path stem [heads/STORE.HEAD]."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML/TOML with these options."),
) -> None:
    """Train a head on cached features: fit on train, select on val, report on test."""
    from featx.config import load_config, merge
    from featx.heads import HeadConfig, head_defaults
    from featx.train import train_head

    given = {k: v for k, v in locals().items() if k not in (
        "store", "config", "load_config", "merge", "HeadConfig", "head_defaults", "train_head")}
    given["lrs"], given["weight_decays"] = given.pop("lr") or None, given.pop("wd") or None
    known = {f.name for f in fields(HeadConfig)}
    file = load_config(config, known | {"memory_mb", "out"}) if config else {}
    kind = head or file.get("head") or "linear"
    opts = merge(given, file, {"head": kind, **head_defaults(kind)})
    if isinstance(opts.get("hidden"), str):
        opts["hidden"] = tuple(int(h) for h in opts["hidden"].replace(" ", "").split(",") if h)
    kind = opts["head"]
    opts["head"] = kind if kind in ("linear", "mlp") else "linear"  # baselines ignore it
    cfg = HeadConfig(**{k: tuple(v) if isinstance(v, list) else v
                        for k, v in opts.items() if k in known and v is not None})
    r = train_head(store, kind, cfg, opts.get("out"), opts.get("memory_mb"))
    _print_training(r, store)


def _print_training(r, store: Path) -> None:
    for note in r.notes:
        out.print(f"note: {note}")
    if r.search and len(r.search) > 1:
        ranked = sorted(r.search, key=lambda s: -s["val_top1"])
        out.print(f"searched {len(r.search)} candidates; best on val: "
                  + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in r.params.items())
                  + f" (val top-1 {ranked[0]['val_top1']:.3f})")
    table = Table("split", "n", "top-1", "top-5", "bal. acc", "macro-F1", "NLL", "ECE")
    for name, m in (("val", r.val), ("test", r.test)):
        if m:
            table.add_row(name, str(m.n), f"{m.top1:.3f}", _fmt(m.top5), f"{m.balanced_accuracy:.3f}",
                          f"{m.macro_f1:.3f}", _fmt(m.nll), _fmt(m.ece))
    out.print(table)
    final = r.test or r.val
    if final:
        per = Table("class", "precision", "recall", "F1", "support", title=f"per class ({'test' if r.test else 'val'})")
        for c in final.per_class:
            per.add_row(c.name, f"{c.precision:.3f}", f"{c.recall:.3f}", f"{c.f1:.3f}", str(c.support))
        out.print(per)
        out.print("confusion (rows = true, columns = predicted): " + str(final.confusion))
        if final.worst:
            out.print("worst errors (highest cross-entropy):")
            for w in final.worst[:5]:
                out.print(f"  {w['path']}: true {w['true']} (p={w['p_true']:.2f}), predicted "
                          f"{w['predicted']} (p={w['p_predicted']:.2f})", markup=False, highlight=False)
    out.print(f"{r.kind} head trained in {r.seconds:.1f} s{' (streamed from HDF5)' if r.streamed else ''}: "
              f"{r.head} (+ .json with metrics)")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


@app.command("lr-find")
def lr_find_cmd(
    store: Path = typer.Argument(..., help="A complete feature store (.h5)."),
    head: str = typer.Option("linear", help="linear | mlp"),
    optimizer: str = typer.Option("sgd", help="sgd | adam | adamw."),
    start: float = typer.Option(1e-6), end: float = typer.Option(10.0),
    steps: int = typer.Option(100), batch_size: int = typer.Option(256),
    out_stem: Optional[Path] = typer.Option(None, "--out", help="Curve stem [heads/STORE.lr-find] (.csv, .png)."),
) -> None:
    """Learning-rate range test of a head on cached features: the loss curve (CSV + PNG) and a
    suggested learning rate. For a fine-tune through the network: featx finetune ... --lr-find."""
    from featx.feature_data import FeatureData
    from featx.heads import HeadConfig, lr_find
    from featx.store import FeatureStore

    cfg = HeadConfig(head=head, optimizer=optimizer, batch_size=batch_size, lrs=(1.0,), weight_decays=(0.0,))
    with FeatureStore(store) as st:
        data = FeatureData(st)
        result = lr_find(data, data.fit_normalizer(cfg.normalize), cfg, start, end, steps)
    csv_path, png = result.save(out_stem or Path("heads") / f"{store.stem}.lr-find")
    out.print(f"suggested learning rate {result.suggestion:.3g} (a tenth of the lowest-loss "
              f"rate); curve: {csv_path}, {png}")


@app.command()
def predict(
    inputs: list[str] = typer.Argument(..., help="Images, folders, or one feature store (.h5)."),
    head: Path = typer.Option(..., "--head", help="Head path (NAME or NAME.safetensors)."),
    out_csv: Path = typer.Option(Path("predictions.csv"), "--out", help="CSV to write."),
    top_k: int = typer.Option(3, help="Classes per image."),
    class_map: Optional[str] = ClassMap,
    device: str = typer.Option("auto"), batch_size: int = typer.Option(64),
    workers: Optional[int] = typer.Option(None),
    engine: str = typer.Option("auto", help="auto | torch | onnxruntime [auto: ORT on CPU]."),
) -> None:
    """Classify new images (or a store's features) with a trained head, into a CSV."""
    from featx.predict import predict as run_predict

    r = run_predict(head, inputs, out_csv, top_k, class_map, device, batch_size, workers, engine)
    for path, reason in r.failed:
        err.print(f"skipped {path}: {reason}", markup=False, highlight=False)
    out.print(f"{r.predicted} predictions written to {r.csv}"
              + (f"; {len(r.failed)} file(s) skipped" if r.failed else ""))


@app.command()
def finetune(
    data: str = DataArg,
    head: Path = typer.Option(..., "--head", help="A head from train-head to start from."),
    out_stem: Optional[Path] = typer.Option(None, "--out", help="Path stem [runs/finetune/HEAD]."),
    epochs: Optional[int] = typer.Option(None, help="Epochs [8; 12 with --from-block]."),
    head_epochs: Optional[int] = typer.Option(None, help="Head-only warm-up epochs first [0]."),
    batch_size: Optional[int] = typer.Option(None, help="Images per step [32]."),
    accumulate: Optional[int] = typer.Option(None, help="Gradient accumulation steps [1]."),
    lr: Optional[str] = typer.Option(None, help="Head (top) learning rate [3e-4], or auto: the LR "
                                     "range test's suggestion for these settings (found once per --out)."),
    lr_find: bool = typer.Option(False, "--lr-find", help="Only run the LR range test with these "
                                 "settings: curve (OUT.lr-find.csv/.png) and a suggested --lr."),
    lr_ratio: Optional[float] = typer.Option(None, help="Top / bottom group rate ratio [10; 1 with --from-block]."),
    groups: Optional[int] = typer.Option(None, help="Backbone layer groups [3]."),
    optimizer: Optional[str] = typer.Option(None, help="adamw | sgd."),
    weight_decay: Optional[float] = typer.Option(None, help="[0.01]."),
    schedule: Optional[str] = typer.Option(None, help="onecycle | cosine."),
    label_smoothing: Optional[float] = typer.Option(None, help="[0.1]."),
    balance: Optional[str] = typer.Option(None, help="none | weights."),
    train_bn: Optional[bool] = typer.Option(None, "--train-bn", help="Update batch-norm statistics."),
    aug: Optional[str] = typer.Option(None, help="Recipe applied on the fly [flips]; none = off."),
    patience: Optional[int] = typer.Option(None, help="Stop after N epochs without a better val loss [off]."),
    seed: Optional[int] = typer.Option(None), device: Optional[str] = typer.Option(None),
    workers: Optional[int] = typer.Option(None),
    from_block: Optional[str] = typer.Option(None, "--from-block", help="Train only the blocks above "
                                             "this cut, on the maps of DATA = a store made with --cut."),
    decode: Optional[str] = typer.Option(None, help="auto | cpu | gpu (nvjpeg for JPEG files on CUDA)."),
    map_aug: Optional[str] = typer.Option(None, "--map-aug", help="With --from-block: rot90-flip "
                                          "(orientation-free images) | flip | none [rot90-flip]."),
    label_col: Optional[str] = LabelCol, binarize: Optional[float] = Binarize,
    val_frac: Optional[float] = ValFrac, test_frac: Optional[float] = TestFrac,
    split_seed: Optional[int] = SplitSeed, class_map: Optional[str] = ClassMap,
    subset: Optional[int] = Subset,
) -> None:
    """Fine-tune backbone + head on DATA, warm-started from a trained head (resumable); with
    --from-block only the top, on the maps of DATA = a store made by `extract --cut`."""
    from featx.distributed import context, finish
    from featx.finetune import FinetuneConfig

    _require(data, "DATA")
    options = {k: v for k, v in locals().items() if k in {f.name for f in fields(FinetuneConfig)}
               and v is not None and k != "lr"}
    stem = out_stem or Path("runs/finetune") / Path(str(head).removesuffix(".safetensors")).name
    data_options = {"--label-col": label_col, "--binarize": binarize, "--val-frac": val_frac,
                    "--test-frac": test_frac, "--split-seed": split_seed, "--subset": subset}
    given = [name for name, value in data_options.items() if value is not None]
    if from_block and given:
        raise ConfigError(f"{', '.join(given)}: with --from-block the store fixes the data and its "
                          "splits; give these to `featx extract --cut`")
    rate = _parse_lr(lr)
    config = FinetuneConfig(**options, lr=None if rate == "auto" else rate)

    @functools.cache  # opened once when --lr auto both finds the rate and fine-tunes
    def dataset():
        return _dataset(data, label_col, binarize, val_frac, test_frac, split_seed, class_map, subset)

    try:
        if lr_find or rate == "auto":
            data_key = {"data": str(data), **data_options, "--class-map": class_map}
            found = _find_finetune_lr(data, head, stem, config, dataset, data_key, rerun=lr_find)
            if lr_find:
                return
            config = replace(config, lr=found)
        r = _run_finetune(data, head, stem, config, dataset)
    finally:
        finish()
    if context().rank != 0:  # under torchrun, rank 0 speaks for all
        return
    if r.resumed_from:
        out.print(f"resumed after epoch {r.resumed_from}")
    m = r.test or r.val
    out.print(f"fine-tuned {r.epochs_run} epoch(s) in {r.seconds:.1f} s, best epoch {r.best_epoch}: "
              + (f"test top-1 {m.top1:.3f}, balanced {m.balanced_accuracy:.3f}" if m else "no test split"))
    out.print(f"head: {r.head} (featx predict --head); backbone weights: {r.weights} "
              "(featx extract --weights)")


def _parse_lr(lr: Optional[str]):
    if lr is None or lr == "auto":
        return lr
    try:
        return float(lr)
    except ValueError:
        raise ConfigError(f"--lr must be a number or auto, got {lr!r}") from None


def _run_finetune(data: str, head: Path, stem: Path, config, dataset):
    from featx.finetune import finetune
    from featx.finetune_top import finetune_top

    if config.from_block:
        return finetune_top(data, head, stem, config)
    return finetune(dataset(), head, stem, config)


def _find_finetune_lr(data: str, head: Path, stem: Path, config, dataset, data_key: dict,
                      rerun: bool) -> float:
    """The range test for this fine-tune (`--lr-find` runs it; `--lr auto` reuses its record)."""
    from featx.backbones.weights import sha256_file
    from featx.distributed import context
    from featx.finetune import find_lr, range_test_settings
    from featx.finetune_top import find_lr_top
    from featx.head_io import head_paths
    from featx.lr_range import cached_range_test

    head_file = head_paths(head)[0]
    if not head_file.is_file():
        raise FeatxError(f"{head_file}: no such head")
    settings = range_test_settings(config)
    settings.update(data=data_key, head_sha256=sha256_file(head_file))
    curve = stem.with_name(stem.name + ".lr-find")
    if config.from_block:
        result, reused = cached_range_test(curve, settings, lambda: find_lr_top(data, head, config), rerun)
    else:
        result, reused = cached_range_test(curve, settings, lambda: find_lr(dataset(), head, config), rerun)
    if context().rank == 0:
        where = f"{curve}.csv, {curve}.png" if not reused else f"{curve}.json (found before)"
        edge = (f"where the loss diverged after {len(result.lrs)} steps" if result.diverged else
                "the highest rate tried: [yellow]the loss never diverged[/], the rate may be too low")
        out.print(f"suggested learning rate {result.suggestion:.3g}: a tenth of {result.lrs[-1]:.3g}, "
                  f"{edge}; curve: {where}")
    return result.suggestion


@app.command()
def report(
    results: Path = typer.Argument(..., help="Folder with head results (searched recursively)."),
    out_path: Optional[Path] = typer.Option(None, "--out", help="Report file [RESULTS/report.html]."),
    fmt: str = typer.Option("html", "--format", help="html (one self-contained file) | md."),
) -> None:
    """Compare every trained head in RESULTS: table, plots, worst errors."""
    from featx.report import write_report

    path = write_report(results, out_path or results / f"report.{fmt}", fmt)
    out.print(f"report written to {path}")


@app.command("compare")
def compare_cmd(
    data: str = DataArg,
    backbone: list[str] = typer.Option(..., "--backbone", "-b", help="Repeat for each backbone."),
    out_dir: Path = typer.Option(Path("runs/compare"), "--out", help="Stores, heads and the report."),
    head: list[str] = typer.Option(["linear"], "--head", help="Heads per backbone (repeatable)."),
    views: int = typer.Option(0, help="Augmented views per training image."),
    aug: str = typer.Option("mild"), batch_size: int = typer.Option(64),
    device: str = typer.Option("auto"), engine: str = typer.Option("auto"),
    weights: str = typer.Option("default", help="default | none (random init, for trials)."),
    fmt: str = typer.Option("html", "--format", help="html | md."),
    label_col: Optional[str] = LabelCol, binarize: Optional[float] = Binarize,
    val_frac: Optional[float] = ValFrac, test_frac: Optional[float] = TestFrac,
    split_seed: Optional[int] = SplitSeed, class_map: Optional[str] = ClassMap,
    subset: Optional[int] = Subset,
) -> None:
    """Extract + train-head for each backbone on DATA, then write the comparison report."""
    from featx.compare import compare
    from featx.extract import ExtractConfig

    _require(data, "DATA")
    ds = _dataset(data, label_col, binarize, val_frac, test_frac, split_seed, class_map, subset)
    cfg = ExtractConfig(views=views, aug=aug, batch_size=batch_size, device=device, engine=engine,
                        weights=weights)
    result = compare(ds, backbone, out_dir, cfg, tuple(head), fmt)
    for r in result.heads:
        m = r.test or r.val
        out.print(f"{Path(r.head).name}: top-1 {m.top1:.3f}, balanced {m.balanced_accuracy:.3f}")
    out.print(f"report written to {result.report}")


@app.command("merge")
def merge_cmd(
    shards: list[Path] = typer.Argument(..., help="Shard stores (*.shardRRR-of-WWW.h5) of one run."),
    out_path: Path = typer.Option(..., "--out", help="The merged store to write."),
    mode: str = typer.Option("copy", help="copy (self-contained) | virtual (HDF5 VDS over shards)."),
) -> None:
    """Merge the shard stores of a torchrun extraction into one store (rank 0 does it itself)."""
    from featx.merge import merge_shards

    path = merge_shards(shards, out_path, mode)
    out.print(f"merged {len(shards)} shards into {path} ({mode})")


@app.command()
def info(stores: list[Path] = typer.Argument(..., help="One or more .h5 feature stores."),
         as_json: bool = typer.Option(False, "--json", help="Print the attributes as JSON.")) -> None:
    """Provenance, shapes, completeness and failed samples of a feature store."""
    from featx.store import FeatureStore

    for path in stores:
        with FeatureStore(path) as st:
            attrs = st.attrs
            if as_json:
                out.print_json(json.dumps(attrs, default=str))
                continue
            _print_store(st, attrs)


def _print_store(st, attrs: dict) -> None:
    done_clean = int(st.f["done/clean"][:].sum())
    done_aug = st.f["done/aug"][:]
    state = "[green]complete[/]" if st.complete else "[yellow]incomplete (re-run extract to resume)[/]"
    out.print(f"[bold]{st.path}[/]  {state}")
    out.print(f"  backbone   {attrs['backbone']}  weights {attrs['weights'].get('source')}")
    out.print(f"  input      {attrs['input_size']} px, {attrs['num_aug_views']} augmented views"
              + (f" ({attrs['transform']['aug']['name']})" if attrs["transform"].get("aug") else ""))
    out.print(f"  dataset    {attrs['dataset_name']} ({attrs['dataset_layout']}) {attrs['dataset_root']}")
    counts = {s: int((st.splits == s).sum()) for s in ("train", "val", "test", "unlabeled")}
    out.print("  samples    " + ", ".join(f"{k} {v}" for k, v in counts.items() if v)
              + f"; classes {len(st.classes)}: {', '.join(st.class_names[:8])}"
              + (" ..." if len(st.classes) > 8 else ""))
    out.print(f"  clean      {tuple(st.f['features/clean'].shape)} {attrs['dtype']}, "
              f"{done_clean}/{len(st.paths)} rows done")
    if "aug" in st.f["features"]:
        out.print(f"  aug        {tuple(st.f['features/aug'].shape)} {attrs['dtype']}, "
                  f"{int(done_aug.sum())}/{done_aug.size} rows done")
    if attrs.get("cut"):
        maps = st.f[f"cut/{attrs['cut']}"]
        shapes = " + ".join(f"{name} {tuple(maps[name].shape)}" for name in ("clean", "aug") if name in maps)
        out.print(f"  cut maps   entering {attrs['cut']}: {shapes} float16 "
                  f"(featx finetune --from-block {attrs['cut']})")
    out.print(f"  made       {attrs['created']} with featx {attrs['featx_version']}, "
              f"{attrs['engine']}, {attrs['device']}, seed {attrs['seed']}")
    if attrs.get("extract_seconds"):
        out.print(f"  speed      {attrs['images_per_second']:.1f} img/s "
                  f"(last run, {attrs['extract_seconds']:.1f} s)")
    if "shard_rank" in attrs:
        out.print(f"  shard      rank {attrs['shard_rank']} of {attrs['shard_world_size']}, rows "
                  f"{attrs['shard_start']}-{attrs['shard_stop']} of {attrs['full_num_samples']} "
                  f"({attrs['sharding']})")
    if "merged_from" in attrs:
        out.print(f"  merged     {attrs['merge_mode']} of {attrs['world_size']} shards: "
                  + ", ".join(json.loads(attrs["merged_from"])))
    out.print(f"  failed     {len(st.failed)}")
    for row, reason in sorted(st.failed.items()):
        out.print(f"    {st.paths[row]}: {reason}", markup=False, highlight=False)


def _require(value, what: str) -> None:
    if value is None:
        raise FeatxError(f"missing {what}")


def main() -> None:
    try:
        app()
    except FeatxError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted; finished batches are saved, re-run the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
