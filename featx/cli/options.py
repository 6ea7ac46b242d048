"""Every option of the `featx` command, declared once; commands use these in their signatures.

One name, one meaning, in every command (the rules, for the docs: /work/notes/cli_rules.md):

- `--out DIR` is a folder wherever a command writes several files (extract, compare, train-head,
  lr-find, finetune), and `--out FILE` where it writes one (predict, report, merge).
  train-head also takes `--out FILE.safetensors` to name the head itself.
- `--head FILE` always reads a trained head (predict, finetune); `--kind` is the kind of head to
  train (train-head, lr-find, compare). `--head KIND` there is the old spelling, still accepted.
- `--weight-decay` everywhere (`--wd` is the short alias); `--views K` counts augmented views per
  image (extract, compare); train-head's choice of stored views is `--use-views/--clean-only`.

Defaults live in the signatures and are shown by `--help`; a default that depends on another
option (the MLP's optimizer, a fine-tune's epochs) is described by `show_default`.
Choices and ranges are the configs' own tables (featx.extraction.settings, featx.probes.settings,
featx.training.settings: torch-free, so `featx --help` imports no torch): an option's metavar,
its check (`checked`, a callback) and its min/max come from the field's rule, so a bad value,
from the command line or from --config, is a usage error naming the option, in the words the
config itself would use.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from featx.cli.config_file import apply_config

from featx.backbones.families import FAMILIES
from featx.config import OneOf
from featx.extraction.settings import EXTRACT
from featx.heads.kinds import FEATURE_KINDS as HEAD_KINDS  # the registry of head kinds
from featx.heads.kinds import names as head_kind_names
from featx.probes.settings import CALIBRATIONS, HEAD
from featx.report.settings import FORMATS as REPORT_FORMATS
from featx.runtime.settings import MERGE_MODES
from featx.training.settings import FINETUNE


def checked(rule) -> Callable:
    """A callback that accepts what `rule` (a OneOf or a Between of a settings table) accepts,
    one value or a list of them; a refusal is worded by the rule, as the config words it."""
    def check(value):
        for item in value if isinstance(value, (list, tuple)) else [value]:
            problem = None if item is None else rule.problem(item)
            if problem:
                raise typer.BadParameter(problem)
        return value
    return check


def one_of(*choices: str) -> Callable:
    """A callback that accepts only `choices`, for the options no config holds (audit --checks)."""
    return checked(OneOf(choices))


def _choice(*names: str, rule: OneOf, help: str, **kw) -> typer.models.OptionInfo:
    """An option taking one of `rule`'s choices: they are its metavar and its check."""
    return _option(*names, metavar=rule.metavar, help=help, callback=checked(rule), **kw)


def parse_sizes(text: str) -> tuple[int, ...]:
    """'1024,256' -> (1024, 256): the MLP's hidden layer sizes."""
    try:
        sizes = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise typer.BadParameter(f"must be positive integers separated by commas, got {text!r}")
    return sizes


def _check_sizes(value: Optional[str]) -> Optional[str]:
    if value is not None:
        parse_sizes(value)
    return value


def _check_rate_or_auto(value: Optional[str]) -> Optional[str]:
    if value is None or value == "auto":
        return value
    try:
        rate = float(value)
    except ValueError:
        rate = 0.0
    if not (rate > 0 and math.isfinite(rate)):
        raise typer.BadParameter(f"must be a positive number or auto, got {value!r}")
    return value


def above(bound: float) -> Callable:
    """A callback that accepts finite numbers above `bound` (one value or a list of them):
    a learning rate of 0 or inf trains nothing, or NaN weights."""
    def check(value):
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is None:
                continue
            if not math.isfinite(item):
                raise typer.BadParameter(f"must be a finite number, got {item:g}")
            if not item > bound:
                raise typer.BadParameter(f"must be above {bound:g}, got {item:g}")
        return value
    return check


def at_least(bound: float) -> Callable:
    """A callback that accepts finite numbers >= `bound` (one value or a list of them)."""
    def check(value):
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None and not (math.isfinite(item) and item >= bound):
                raise typer.BadParameter(f"must be a finite number >= {bound:g}, got {item:g}")
        return value
    return check


def _option(*names: str, metavar: str | None = None, help: str, **kw) -> typer.models.OptionInfo:
    """An option with its help; value options name their value (metavar), flags take none."""
    return typer.Option(*names, metavar=metavar, help=help, **kw)


# --- inputs ---------------------------------------------------------------------------------

DATA_HELP = "Folder, CSV/TSV manifest, or packaged dataset name (elpv)."
Data = Annotated[str, typer.Argument(metavar="DATA", help=DATA_HELP, show_default=False)]
# Commands with --config take DATA from the file too (`data: elpv`), so there it may be left out.
DataOrConfig = Annotated[Optional[str], typer.Argument(
    metavar="DATA", help=DATA_HELP + " Or `data:` in --config.", show_default=False)]
Store = Annotated[Path, typer.Argument(metavar="STORE", help="A complete feature store (.h5).",
                                       show_default=False)]
Stores = Annotated[list[Path], typer.Argument(metavar="STORE...", help="One or more feature stores (.h5).",
                                              show_default=False)]
Inputs = Annotated[list[str], typer.Argument(
    metavar="INPUT...", help="Images, folders of images, or one feature store (.h5).", show_default=False)]
Shards = Annotated[list[Path], typer.Argument(
    metavar="SHARD...", help="The shard stores (*.shardRRR-of-WWW.h5) of one torchrun extraction.",
    show_default=False)]
Results = Annotated[Path, typer.Argument(
    metavar="RESULTS", help="Folder with trained heads (their .json files, searched recursively).",
    show_default=False)]
Pattern = Annotated[str, typer.Argument(metavar="PATTERN", help="Glob on backbone names, e.g. 'resnet*'.")]

# --- data (scan, extract, finetune, compare) ----------------------------------------------

LabelCol = Annotated[Optional[str], _option(
    "--label-col", metavar="COLUMN", help="Manifest label column (name or 0-based index).",
    show_default="label, class or target; else the 2nd column")]
Binarize = Annotated[Optional[float], _option(
    "--binarize", metavar="T", help="Numeric labels become two classes, '<=T' and '>T'.",
    show_default="off")]
ValFrac = Annotated[float, _option(
    "--val-frac", metavar="FRACTION", help="Validation fraction, when the data has no splits.",
    min=0.0, max=1.0)]
TestFrac = Annotated[float, _option(
    "--test-frac", metavar="FRACTION", help="Test fraction, when the data has no splits.",
    min=0.0, max=1.0)]
SplitSeed = Annotated[int, _option("--split-seed", metavar="N", help="Seed of the stratified split.")]
ClassMap = Annotated[Optional[str], _option(
    "--class-map", metavar="FILE", help="JSON file {class: display name}.",
    show_default="the class names")]
Subset = Annotated[Optional[int], _option(
    "--subset", metavar="N", help="A stratified subset of about N samples (quick runs).",
    min=1, show_default="all samples")]
DecodeSample = Annotated[int, _option(
    "--decode-sample", metavar="N", help="Decode only N images spread evenly over the dataset "
    "(sizes, modes and unreadable files among them; a larger dataset is listed, not decoded: "
    "extract records any file that fails); 0 = decode every image.", min=0)]
Splits = Annotated[int, _option(
    "--splits", metavar="N", help="Also re-split the samples N times (seeded, stratified, features "
    "extracted once) and report each metric's mean +- sd; 1 = the store's split only.", min=1)]

# --- extraction (extract, compare, predict) -----------------------------------------------

Backbones = Annotated[list[str], _option(
    "--backbone", "-b", metavar="NAME", help="Backbone; repeat for several (`featx backbones` lists them).")]
Views = Annotated[int, _option(
    "--views", metavar="K", help="Augmented views per training image, stored beside the clean one.",
    **EXTRACT["views"].bounds)]
Aug = Annotated[str, _option(
    "--aug", metavar="RECIPE", help="Augmentation recipe: a built-in name (mild, flips, hvflips, dihedral, tutorial, flowers), "
    "a YAML file, or none. Only dihedral turns images by 90 degrees: for orientation-free data only.")]
BatchSize = Annotated[int, _option("--batch-size", metavar="N", help="Samples per batch.",
                                   **EXTRACT["batch_size"].bounds)]
Workers = Annotated[Optional[int], _option(
    "--workers", metavar="N", help="Image decoding processes (0 = in the main process).",
    **EXTRACT["workers"].bounds,
    show_default="1 on CPU, up to 16 on CUDA")]
Device = Annotated[str, _option("--device", metavar="auto|cpu|cuda|cuda:N",
                                help="Where the network runs (auto: CUDA when there is one).")]
Dtype = Annotated[str, _choice("--dtype", rule=EXTRACT["dtype"], help="Store dtype of the features.")]
Seed = Annotated[int, _option("--seed", metavar="N",
                              help="Random seed (augmented views, random-init weights, head init).")]
Weights = Annotated[str, _option(
    "--weights", metavar="default|none|FILE",
    help="Backbone weights: the published ones, none (random init, for trials), or a .safetensors/.pt file.")]
InputSize = Annotated[Optional[int], _option(
    "--input-size", metavar="PX", help="Crop size (the resize keeps the backbone's ratio).",
    **EXTRACT["input_size"].bounds,
    show_default="the backbone's")]
Decode = Annotated[str, _choice("--decode", rule=EXTRACT["decode"],
                                help="JPEG decoding: gpu = nvjpeg on CUDA; auto = gpu on CUDA.")]
Amp = Annotated[str, _choice("--amp", rule=EXTRACT["amp"], help="CUDA autocast precision.")]
Engine = Annotated[str, _choice("--engine", rule=EXTRACT["engine"],
                                help="Inference engine (auto: ONNX Runtime on CPU, torch on CUDA).")]
Threads = Annotated[Optional[int], _option("--threads", metavar="N", help="ONNX Runtime threads.",
                                           **EXTRACT["threads"].bounds,
                                           show_default="torch's thread count")]
Cut = Annotated[Optional[str], _option(
    "--cut", metavar="BLOCK", help="Also store the maps entering this block, for finetune --from-block "
    "(`featx backbones --cuts NAME` lists them).", show_default="off")]
Pool = Annotated[str, _option(
    "--pool", metavar="auto|none|BLOCK", help="Append the average+max pooled maps entering BLOCK to the "
    "features (multi-layer features; heads choose with --features). auto: the backbone's default "
    "block where its cut points are known (block11 for efficientnet_lite0).")]
Tta = Annotated[str, _choice(
    "--tta", rule=EXTRACT["tta"],
    help="Test-time augmentation: store each feature averaged over the image and its symmetries (flip: "
    "mirror; hv-flip: also upside down; dihedral: also 90-degree turns, for orientation-free data only); "
    "predict computes the same. Costs 1 + 1/3/7 forwards per image.")]
Overwrite = Annotated[bool, _option("--overwrite", help="Replace a store made with other settings.")]
Update = Annotated[bool, _option("--update/--no-update", help=(
    "When the dataset changed since its store was made (same settings), extract only new or "
    "changed images and keep the rest; --no-update refuses, naming what changed."))]

# --- heads (train-head, lr-find, compare) -------------------------------------------------

Kind = Annotated[str, _option("--kind", metavar="|".join(HEAD_KINDS), help="Kind of head to train.",
                              callback=one_of(*HEAD_KINDS))]
Kinds = Annotated[list[str], _option("--kind", metavar="|".join(HEAD_KINDS),
                                     help="Kind of head to train per backbone; repeat for several.",
                                     callback=one_of(*HEAD_KINDS))]
SWEPT_KINDS = OneOf(head_kind_names(backend="torch"))  # the kinds the torch sweep trains: lr-find's
ProbeKind = Annotated[str, _choice("--kind", rule=SWEPT_KINDS, help="Kind of head.")]
# The old spelling of --kind (`--head linear`), kept working but out of the help: --head now
# always names a trained head file.
OldHeadKind = Annotated[Optional[str], typer.Option("--head", hidden=True, callback=one_of(*HEAD_KINDS))]
OldHeadKinds = Annotated[Optional[list[str]], typer.Option("--head", hidden=True,
                                                           callback=one_of(*HEAD_KINDS))]
Hidden = Annotated[str, _option("--hidden", metavar="SIZES", help="MLP hidden sizes, e.g. 512 or 1024,256.",
                                callback=_check_sizes)]
Dropout = Annotated[float, _option("--dropout", metavar="P", help="MLP dropout.", **HEAD["dropout"].bounds)]
HeadOptimizer = Annotated[Optional[str], _choice("--optimizer", rule=HEAD["optimizer"], help="Optimizer.",
                                                 show_default="sgd; adamw with --kind mlp")]
Lookahead = Annotated[bool, _option("--lookahead", help="Wrap the optimizer in Lookahead (k=5, alpha=0.5).")]
HeadLrs = Annotated[Optional[list[float]], _option(
    "--lr", metavar="RATE", help="Learning rate; repeat for a sweep (every rate x weight decay, "
    "trained at once; the best is chosen as --select says).", show_default="8 rates 1e-3 ... 3 with --kind linear; 1e-3 with --kind mlp",
    callback=above(HEAD["lrs"].low))]
HeadWeightDecays = Annotated[Optional[list[float]], _option(
    "--weight-decay", "--wd", metavar="WD", help="Weight decay; repeat for a sweep.",
    show_default="0, 1e-5, 1e-4, 1e-3 with --kind linear; 1e-4 with --kind mlp", callback=at_least(HEAD["weight_decays"].low))]
Momentum = Annotated[float, _option("--momentum", metavar="M", help="SGD momentum.", **HEAD["momentum"].bounds)]
HeadSchedule = Annotated[str, _choice("--schedule", rule=HEAD["schedule"], help="Learning-rate schedule.")]
StepSize = Annotated[int, _option("--step-size", metavar="EPOCHS", help="Period of --schedule step.",
                                   **HEAD["step_size"].bounds)]
Gamma = Annotated[float, _option("--gamma", metavar="FACTOR", help="Rate factor of --schedule step.",
                                 callback=above(HEAD["gamma"].low))]
Epochs = Annotated[int, _option("--epochs", metavar="N", help="Epochs.", **HEAD["epochs"].bounds)]
LabelSmoothing = Annotated[float, _option("--label-smoothing", metavar="EPS", help="Label smoothing.",
                                          **HEAD["label_smoothing"].bounds)]
HeadBalance = Annotated[str, _choice("--balance", rule=HEAD["balance"],
                                     help="Class balance: a class-weighted loss, or balanced sampling.")]
Normalize = Annotated[str, _choice("--normalize", rule=HEAD["normalize"], help="Feature normalization.")]
Features = Annotated[str, _choice(
    "--features", rule=HEAD["features"],
    help="Columns the head takes: all (final features + the pooled block of extract --pool) or final only.")]
Select = Annotated[str, _choice(
    "--select", rule=HEAD["select"],
    help="How the sweep's settings are chosen: cv = k-fold cross-validation on train+val, then a refit on "
         "all of them; val = on the val split; auto = cv up to 20,000 train+val images (linear, mlp).")]
Folds = Annotated[int, _option("--folds", metavar="K", help="Folds of --select cv.", **HEAD["folds"].bounds)]
SelectMetric = Annotated[str, _choice(
    "--metric", rule=HEAD["metric"],
    help="What selects the head (balanced_accuracy or macro_f1 when rare classes matter).")]
Calibrate = Annotated[str, _choice(
    "--calibrate", rule=OneOf(CALIBRATIONS),
    help="temperature: a linear, MLP or logreg head's logits are divided by one number fitted on its "
         "out-of-fold or val predictions (never test), so that a probability of 0.9 is right about 9 times "
         "in 10; kept in the head, used by predict and export. none: the probabilities as trained.")]
UseViews = Annotated[bool, _option("--use-views/--clean-only",
                                   help="Train on the store's augmented views too, or on clean features only.")]
OldViews = Annotated[Optional[bool], typer.Option("--views", hidden=True)]  # old spelling of --use-views
Patience = Annotated[Optional[int], _option("--patience", metavar="EPOCHS",
                                            help="Stop after this many epochs without a better val loss.",
                                            show_default="off", **HEAD["patience"].bounds)]
MemoryMb = Annotated[Optional[float], _option(
    "--memory-mb", metavar="MB", help="Stream features from the store when they need more memory than this.",
    min=0.0, show_default="40% of RAM, or of a container's cgroup limit")]
Start = Annotated[float, _option("--start", metavar="RATE", help="First learning rate of the range test.",
                                 callback=above(0))]
End = Annotated[float, _option("--end", metavar="RATE", help="Last learning rate of the range test (above --start).",
                               callback=above(0))]
Steps = Annotated[int, _option("--steps", metavar="N", help="Steps of the range test.", min=2)]

# --- trained heads (predict, finetune) ----------------------------------------------------

HeadFile = Annotated[Path, _option("--head", metavar="FILE",
                                   help="A trained head (NAME.safetensors, with NAME.json beside it).",
                                   show_default=False)]
TopK = Annotated[int, _option("--top-k", metavar="K", help="Classes listed per image.", min=1)]

# --- fine-tuning ----------------------------------------------------------------------------

FinetuneEpochs = Annotated[Optional[int], _option("--epochs", metavar="N", help="Epochs.", **FINETUNE["epochs"].bounds,
                                                  show_default="8; 12 with --from-block")]
HeadEpochs = Annotated[int, _option("--head-epochs", metavar="N",
                                    help="Head-only warm-up epochs before the whole network trains.",
                                    **FINETUNE["head_epochs"].bounds)]
Accumulate = Annotated[int, _option("--accumulate", metavar="N", help="Gradient accumulation steps.",
                                    **FINETUNE["accumulate"].bounds)]
FinetuneLr = Annotated[Optional[str], _option(
    "--lr", metavar="RATE|auto", help="Learning rate of the head (top group); auto = the range test's "
    "suggestion for these settings, found once per --out.", show_default="3e-4",
    callback=_check_rate_or_auto)]
LrFind = Annotated[bool, _option("--lr-find", help="Only run the learning-rate range test with these "
                                 "settings: the curve (.lr-find.csv/.png in --out) and a suggested --lr.")]
LrRatio = Annotated[Optional[float], _option("--lr-ratio", metavar="R",
                                             help="Top group rate / bottom group rate.",
                                             **FINETUNE["lr_ratio"].bounds,
                                             show_default="10; 1 with --from-block")]
Groups = Annotated[int, _option("--groups", metavar="N", help="Backbone layer groups (discriminative rates).",
                                **FINETUNE["groups"].bounds)]
FinetuneOptimizer = Annotated[str, _choice("--optimizer", rule=FINETUNE["optimizer"], help="Optimizer.")]
WeightDecay = Annotated[float, _option("--weight-decay", "--wd", metavar="WD", help="Weight decay.",
                                       **FINETUNE["weight_decay"].bounds)]
FinetuneSchedule = Annotated[str, _choice("--schedule", rule=FINETUNE["schedule"],
                                          help="Learning-rate schedule (warmup-cosine: 10% linear warm-up, "
                                          "then cosine).")]
FinetuneBalance = Annotated[str, _choice("--balance", rule=FINETUNE["balance"],
                                         help="Class balance: a class-weighted loss.")]
TrainBn = Annotated[bool, _option("--train-bn", help="Update batch-norm statistics while fine-tuning.")]
FromBlock = Annotated[Optional[str], _option(
    "--from-block", metavar="BLOCK", help="Train only the blocks above this cut, on the maps cached in "
    "DATA = a store made by `extract --cut`.", show_default="off: the whole network")]
MapAug = Annotated[str, _choice("--map-aug", rule=FINETUNE["map_aug"],
                                help="With --from-block: symmetries applied to the cached maps: flip mirrors "
                                "left-right, hv-flip also top-bottom, rot90-flip also turns by 90 degrees "
                                "(for orientation-free images only).")]

# --- outputs --------------------------------------------------------------------------------

StoresOut = Annotated[Path, _option("--out", metavar="DIR", help="Folder for the stores.")]
HeadsOut = Annotated[Path, _option(
    "--out", metavar="DIR", help="Folder for the head (STORE.KIND.safetensors + .json); "
    "or FILE.safetensors to name the head yourself.")]
CurveOut = Annotated[Path, _option("--out", metavar="DIR", help="Folder for the curve (STORE.lr-find.csv, .png).")]
FinetuneOut = Annotated[Path, _option(
    "--out", metavar="DIR", help="Folder for the run, named after the head: HEAD.head.safetensors, "
    "HEAD.backbone.safetensors, checkpoints (re-run to resume), .lr-find curves.")]
CompareOut = Annotated[Path, _option("--out", metavar="DIR",
                                     help="Folder for the stores/, heads/ and the report.")]
CsvOut = Annotated[Path, _option("--out", metavar="FILE", help="CSV file to write.")]
ReportOut = Annotated[Optional[Path], _option("--out", metavar="FILE", help="Report file to write.",
                                              show_default="RESULTS/report.FORMAT")]
MergeOut = Annotated[Path, _option("--out", metavar="FILE", help="The merged store to write.",
                                   show_default=False)]
Format = Annotated[str, _choice("--format", rule=OneOf(tuple(REPORT_FORMATS)), help="; ".join(
    f"{name}: {what}" for name, what in REPORT_FORMATS.items()) + ".")]  # html: one self-contained file; ...
Map = Annotated[bool, _option("--map/--no-map", help="Also draw the 2-D map of the store's features "
                              "(umap-learn; coordinates cached per store version).")]
MergeMode = Annotated[str, _choice("--mode", rule=OneOf(MERGE_MODES),
                                   help="copy: self-contained; virtual: an HDF5 virtual dataset over the shards.")]

# --- listing --------------------------------------------------------------------------------

Family = Annotated[Optional[str], _choice("--family", rule=OneOf(FAMILIES), help="Only this family.",
                                          show_default="all but timm's")]
Cuts = Annotated[Optional[str], _option("--cuts", metavar="NAME",
                                        help="List this backbone's cut points (for extract --cut).",
                                        show_default=False)]
Json = Annotated[bool, _option("--json", help="Print the store's attributes as JSON.")]

Config = Annotated[Optional[Path], _option(
    "--config", metavar="FILE", help="YAML or TOML file of these options (keys = option names, e.g. "
    "batch_size: 32); the command line wins over it.", is_eager=True, callback=apply_config,
    show_default=False)]
