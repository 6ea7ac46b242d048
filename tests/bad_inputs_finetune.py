"""Bad inputs of `featx finetune` (featx/finetuning/): heads that cannot warm-start it, stores
without maps, option and config values, a checkpoint of another run, rates that diverge."""

from __future__ import annotations

from pathlib import Path

from tests.bad_input_harness import Case, World, a_file, config

FT = ["finetune", "{data}", "--out", "{out}", "--workers", "0", "--batch-size", "4"]
WITH_HEAD = FT + ["--head", "{head}"]


def knn_head(tmp: Path, world: World) -> None:
    from featx.probes.train import train_head

    train_head(world.store, "knn", out=tmp / "knn", show_progress=False)


def head_of_other_classes(tmp: Path, world: World) -> None:
    """The world's head saved again under other classes: a head trained on another dataset."""
    from featx.heads.io import load_head, save_head

    head = load_head(world.head)
    save_head(tmp / "h", head.tensors, {**head.meta.to_dict(), "classes": ["cats", "dogs"],
                                        "class_names": ["cats", "dogs"]})




def finished_run_of_another_head(tmp: Path, world: World) -> None:
    """A finished 1-epoch run in {tmp}/ft from the world's head, and another head of the same file
    name in another folder ({tmp}/other/lin.safetensors): re-running with it must not resume."""
    from featx.data import DatasetOptions, open_dataset
    from featx.finetuning import FinetuneConfig, finetune
    from featx.probes.sweep import HeadConfig
    from featx.probes.train import train_head

    ds = open_dataset(world.data, DatasetOptions())
    finetune(ds, world.head, tmp / "ft" / "lin", FinetuneConfig(epochs=1, batch_size=4, workers=0),
             show_progress=False)
    train_head(world.store, "linear", HeadConfig(epochs=2, seed=5), out=tmp / "other" / "lin",
               show_progress=False)


CASES = [
    Case("finetune-head-missing", FT + ["--head", "{tmp}/none.safetensors"], r"none\.safetensors: no such file"),
    Case("finetune-head-knn", FT + ["--head", "{tmp}/knn.safetensors"], r"k-NN head has no weights",
         setup=knn_head),
    Case("finetune-head-other-classes", FT + ["--head", "{tmp}/h.safetensors"],
         r"h\.safetensors: the head's classes .* do not match", setup=head_of_other_classes),
    Case("finetune-from-block-store-without-maps",
         ["finetune", "{store}", "--head", "{head}", "--from-block", "block1", "--out", "{out}"],
         r"no maps cached at 'block1'"),
    Case("finetune-from-block-with-data-options",
         ["finetune", "{store}", "--head", "{head}", "--from-block", "block1", "--val-frac", "0.3", "--out", "{out}"],
         r"--val-frac.*--from-block", code=2),
    Case("finetune-lr-word", WITH_HEAD + ["--lr", "fast"], r"--lr", code=2),
    Case("finetune-lr-negative", WITH_HEAD + ["--lr", "-1"], r"--lr", code=2),
    Case("finetune-epochs-zero", WITH_HEAD + ["--epochs", "0"], r"--epochs", code=2),
    Case("finetune-head-epochs-negative", WITH_HEAD + ["--head-epochs", "-1"], r"--head-epochs", code=2),
    Case("finetune-head-epochs-all", WITH_HEAD + ["--epochs", "2", "--head-epochs", "2"],
         r"head_epochs must be in \[0, epochs\)", code=2),
    Case("finetune-accumulate-zero", WITH_HEAD + ["--accumulate", "0"], r"--accumulate", code=2),
    Case("finetune-groups-zero", WITH_HEAD + ["--groups", "0"], r"--groups", code=2),
    Case("finetune-lr-ratio-zero", WITH_HEAD + ["--lr-ratio", "0"], r"--lr-ratio", code=2),
    Case("finetune-label-smoothing-two", WITH_HEAD + ["--label-smoothing", "2"], r"--label-smoothing", code=2),
    Case("finetune-aug-unknown", WITH_HEAD + ["--aug", "nope"], r"aug: unknown augmentation recipe 'nope'",
         code=2),
    Case("finetune-config-batch-size-float", WITH_HEAD + ["--config", "{tmp}/c.yaml"], r"c\.yaml: batch_size",
         code=2, setup=config("batch_size: 2.7\n")),
    Case("finetune-out-under-a-file", ["finetune", "{data}", "--head", "{head}", "--out", "{tmp}/file"],
         r"file:? (is a file, not a folder|exists and is not a folder)", setup=a_file),
    Case("finetune-lr-diverges", WITH_HEAD + ["--lr", "1e30", "--epochs", "2"],
         r"epoch 1: the (weights|losses) became not finite .*nothing was saved; use a lower --lr", code=1),
    Case("finetune-resume-another-head",
         ["finetune", "{data}", "--head", "{tmp}/other/lin.safetensors", "--out", "{tmp}/ft", "--epochs", "1",
          "--batch-size", "4", "--workers", "0"],
         r"lin\.checkpoint\.json: a checkpoint of a run from another warm-start head.*another --out, or delete",
         setup=finished_run_of_another_head),
    Case("finetune-data-is-a-store-without-from-block",
         ["finetune", "{store}", "--head", "{head}", "--out", "{out}", "--epochs", "1"],
         r"a feature store or weights file, not a dataset.*--from-block"),
    Case("finetune-head-dot", ["finetune", "{data}", "--head", ".", "--out", "{out}"], r"'\.': not a head"),
]
