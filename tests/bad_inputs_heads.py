"""Bad inputs of `featx train-head` and `featx lr-find` (featx/probes/sweep.py, featx/probes/train.py,
featx/training/lr_range.py): option and config values, stores that cannot select, unwritable outputs,
rates that diverge."""

from __future__ import annotations

from pathlib import Path

from tests.bad_input_harness import Case, World, a_file, config

TRAIN = ["train-head", "{store}", "--out", "{out}"]
FIND = ["lr-find", "{store}", "--out", "{out}"]




def store_without_val(tmp: Path, world: World) -> None:
    """No val split, and too few training samples (9) to hold one out."""
    from tests.conftest import make_feature_store

    make_feature_store(tmp / "s.h5", n_per_class=5, splits=("train", "test"))


CASES = [
    Case("heads-hidden-zero", TRAIN + ["--kind", "mlp", "--hidden", "0"], r"--hidden", code=2),
    Case("heads-hidden-not-a-number", TRAIN + ["--kind", "mlp", "--hidden", "abc"], r"--hidden.*'abc'", code=2),
    Case("heads-step-size-zero", TRAIN + ["--schedule", "step", "--step-size", "0"], r"--step-size", code=2),
    Case("heads-patience-negative", TRAIN + ["--patience", "-1"], r"--patience", code=2),
    Case("heads-epochs-zero", TRAIN + ["--epochs", "0"], r"--epochs", code=2),
    Case("heads-dropout-one", TRAIN + ["--kind", "mlp", "--dropout", "1"], r"dropout must be in \[0, 1\)", code=2),
    Case("heads-label-smoothing-two", TRAIN + ["--label-smoothing", "2"], r"--label-smoothing", code=2),
    Case("heads-lr-inf", TRAIN + ["--lr", "inf"], r"(--lr|lrs)\b.*finite", code=2),
    Case("heads-lr-negative", TRAIN + ["--lr", "-1"], r"(--lr|lrs)\b.*(positive|above 0)", code=2),
    Case("heads-weight-decay-negative", TRAIN + ["--wd", "-1"], r"(--weight-decay|weight_decays)\b.*>= 0", code=2),
    Case("heads-kind-unknown", TRAIN + ["--kind", "tree"], r"--kind.*'tree'", code=2),
    Case("heads-lr-diverges", TRAIN + ["--lr", "1e30", "--wd", "1e-3", "--epochs", "2"],
         r"training diverged: .*not finite .*1e\+30.*lower --lr", code=1),
    Case("heads-config-batch-size-float", TRAIN + ["--config", "{tmp}/c.yaml"], r"c\.yaml: batch_size",
         code=2, setup=config("batch_size: 2.7\n")),
    Case("heads-config-lr-word", TRAIN + ["--config", "{tmp}/c.yaml"], r"c\.yaml: lr", code=2,
         setup=config("lr: fast\n")),
    Case("heads-config-hidden-float", TRAIN + ["--kind", "mlp", "--config", "{tmp}/c.yaml"], r"c\.yaml: hidden",
         code=2, setup=config("hidden: 2.5\n")),
    Case("heads-out-under-a-file", ["train-head", "{store}", "--epochs", "1", "--out", "{tmp}/file/sub"],
         r"file(/sub)?:? (cannot write|is a file, not a folder)", setup=a_file),
    # Selecting on val (the default above 20,000 rows); k-fold selection needs no val split.
    Case("heads-empty-val-sweep", ["train-head", "{tmp}/s.h5", "--select", "val", "--out", "{out}"],
         r"s\.h5: the val split is empty.*select on nothing", code=2, setup=store_without_val),
    Case("heads-empty-val-baseline", ["train-head", "{tmp}/s.h5", "--kind", "knn", "--out", "{out}"],
         r"s\.h5: the val split is empty", code=2, setup=store_without_val),
    Case("heads-lr-find-steps-zero", FIND + ["--steps", "0"], r"--steps", code=2),
    Case("heads-lr-find-start-zero", FIND + ["--start", "0"], r"--start", code=2),
    Case("heads-lr-find-start-above-end", FIND + ["--start", "1", "--end", "0.1"], r"--(start|end)\b", code=2),
    Case("heads-lr-find-end-inf", FIND + ["--end", "inf"], r"--end", code=2),
    Case("heads-lr-find-kind-knn", FIND + ["--kind", "knn"], r"--kind", code=2),
    Case("heads-lr-find-out-is-a-file", ["lr-find", "{store}", "--steps", "5", "--out", "{tmp}/file"],
         r"file:? (is a file, not a folder|exists and is not a folder)", setup=a_file),
    Case("heads-train-head-on-a-head", ["train-head", "{head}", "--out", "{out}"],
         r"safetensors: this is a trained head .*not a feature store"),
]
