"""featx finetune: backbone + head on images, warm-started from a trained head; or, with
--from-block, only the top blocks on the maps a store cached (`extract --cut`)."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import typer

from featx.cli import options as o
from featx.cli.core import data_options_given, next_step, open_data, out, require_data, say
from featx.cli.outputs import out_folder
from featx.errors import ConfigError


def finetune(
    ctx: typer.Context,
    head: o.HeadFile,
    data: o.DataOrConfig = None,
    out_dir: o.FinetuneOut = Path("runs/finetune"),
    epochs: o.FinetuneEpochs = None,
    head_epochs: o.HeadEpochs = 0,
    batch_size: o.BatchSize = 32,
    accumulate: o.Accumulate = 1,
    lr: o.FinetuneLr = None,
    lr_find: o.LrFind = False,
    lr_ratio: o.LrRatio = None,
    groups: o.Groups = 3,
    optimizer: o.FinetuneOptimizer = "adamw",
    weight_decay: o.WeightDecay = 0.01,
    schedule: o.FinetuneSchedule = "warmup-cosine",
    label_smoothing: o.LabelSmoothing = 0.1,
    balance: o.FinetuneBalance = "none",
    train_bn: o.TrainBn = False,
    aug: o.Aug = "flips",
    patience: o.Patience = None,
    seed: o.Seed = 0,
    device: o.Device = "auto",
    amp: o.Amp = "bf16",
    workers: o.Workers = None,
    decode: o.Decode = "auto",
    from_block: o.FromBlock = None,
    map_aug: o.MapAug = "flip",
    label_col: o.LabelCol = None, binarize: o.Binarize = None, val_frac: o.ValFrac = 0.15,
    test_frac: o.TestFrac = 0.25, split_seed: o.SplitSeed = 0, class_map: o.ClassMap = None,
    subset: o.Subset = None,
    config: o.Config = None,
) -> None:
    """Fine-tune backbone + head on DATA, warm-started from a trained head (resumable).

    With --from-block only the top is trained, on the maps of DATA = a store made by `extract --cut`."""
    from featx.runtime.distributed import context, finish
    from featx.finetuning import FinetuneConfig, finetune as run_finetune, suggest_lr

    data = require_data(data)
    out_folder(out_dir)
    data_options = data_options_given(ctx)
    if from_block and data_options:
        raise ConfigError(f"{', '.join(data_options)}: with --from-block the store fixes the data and its "
                          "splits; give these to `featx extract --cut`")
    settings = FinetuneConfig(
        epochs=epochs, head_epochs=head_epochs, batch_size=batch_size, accumulate=accumulate,
        lr=None if lr in (None, "auto") else float(lr), lr_ratio=lr_ratio, groups=groups, optimizer=optimizer,
        weight_decay=weight_decay, schedule=schedule, label_smoothing=label_smoothing, balance=balance,
        train_bn=train_bn, aug=aug, patience=patience, seed=seed, device=device, amp=amp, workers=workers,
        decode=decode, from_block=from_block, map_aug=map_aug)
    # Files are named after the head: --out DIR holds HEAD.head.safetensors, HEAD.backbone...
    from featx.heads.io import head_paths

    stem = out_dir / head_paths(head)[0].stem  # NAME of NAME.safetensors, however --head was given

    @functools.cache  # opened once when --lr auto both finds the rate and fine-tunes
    def source():
        return data if from_block else open_data(data, ctx.params)

    try:
        if lr_find or lr == "auto":
            found = suggest_lr(source(), head, stem, settings, rerun=lr_find)
            if context().rank == 0:
                _print_suggestion(found)
            if lr_find:
                return
            settings = replace(settings, lr=found.lr)
        r = run_finetune(source(), head, stem, settings)
    finally:
        finish()
    if context().rank != 0:  # under torchrun, rank 0 speaks for all
        return
    if r.resumed_from:
        out.print(f"resumed after epoch {r.resumed_from}")
    m = r.test or r.val
    start = r.curve[0] if r.curve and r.curve[0]["epoch"] == 0 else None
    if r.kept_warm_start and start:
        out.print(f"no epoch beat the warm start (val top-1 {start['val_top1']:.1%}, val loss "
                  f"{start['val_loss']:.4g}); kept it")
    best = "kept the warm start" if r.kept_warm_start else f"best epoch {r.best_epoch}"
    out.print(f"fine-tuned {r.epochs_run} epoch(s) in {r.seconds:.1f} s, {best}: "
              + (f"{'test' if r.test else 'val'} top-1 {m.top1:.3f}, balanced {m.balanced_accuracy:.3f}"
                 if m else "no test split"))
    say("head (featx predict --head) and backbone weights (featx extract --weights):")
    out.print(f"  {r.head}\n  {r.weights}", markup=False, highlight=False)
    next_step("featx predict IMAGES --head", r.head)


def _print_suggestion(found) -> None:
    result, curve = found.result, found.curve
    where = f"{curve}.json (found before)" if found.reused else f"{curve}.csv, {curve}.png"
    edge = (f"where the loss diverged after {len(result.lrs)} steps" if result.diverged else
            "the highest rate tried: [yellow]the loss never diverged[/], the rate may be too low")
    out.print(f"suggested learning rate {result.suggestion:.3g}: a tenth of {result.lrs[-1]:.3g}, "
              f"{edge}; curve: {where}", highlight=False)
