"""Bad inputs of the command line layer (featx/cli/, featx/config.py, featx/report.py):
config files with wrong value types, --out of the wrong kind, typed option values, report
inputs, backbones and info. Usage and config errors exit 2; the others exit 1."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tests.bad_input_harness import Case, World, config, make_dir, write_file





def temp_folder_in_the_way(tmp: Path, world: World) -> None:
    """A folder where the CSV's temporary file goes (a killed run in a container whose PID
    came round again)."""
    (tmp / f"p.csv.tmp-{os.getpid()}").mkdir()


def results(tmp: Path, world: World) -> None:
    """A results folder {tmp}/res holding the world's head."""
    (tmp / "res").mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(world.head.with_suffix(suffix), tmp / "res" / f"h{suffix}")


def results_and(make):
    def setup(tmp: Path, world: World) -> None:
        results(tmp, world)
        make(tmp, world)
    return setup


def corrupt_results(tmp: Path, world: World) -> None:
    """A results folder whose only head sidecar is damaged (no backbone)."""
    (tmp / "res").mkdir()
    meta = json.loads(world.head.with_suffix(".json").read_text())
    meta.pop("backbone")
    (tmp / "res" / "h.json").write_text(json.dumps(meta))
    shutil.copy(world.head, tmp / "res" / "h.safetensors")


EXTRACT = ["extract", "{data}", "-b", "tiny_cnn", "--weights", "none", "--workers", "0"]
TRAIN = ["train-head", "{store}", "--epochs", "1"]
PREDICT = ["predict", "{store}", "--head", "{head}"]
CONFIG_ERROR = 2

CASES = [
    # --- config files: one line naming the file, the key and the problem (exit 2)
    Case("cli-config-views-text", EXTRACT + ["--out", "{out}", "--config", "{tmp}/c.yaml"],
         r"c\.yaml: views: .*integer", code=CONFIG_ERROR, setup=config('views: "many"\n')),
    Case("cli-config-batch-size-fraction", EXTRACT + ["--out", "{out}", "--config", "{tmp}/c.yaml"],
         r"c\.yaml: batch_size: .*fractional", code=CONFIG_ERROR, setup=config("batch_size: 2.7\n")),
    Case("cli-config-backbone-mapping", EXTRACT + ["--out", "{out}", "--config", "{tmp}/c.yaml"],
         r"c\.yaml: backbone: expected .*, got a mapping", code=CONFIG_ERROR,
         setup=config("backbone: {a: 1}\n")),
    Case("cli-config-lr-list-of-text", TRAIN + ["--out", "{out}", "--config", "{tmp}/c.yaml"],
         r"c\.yaml: lr: .*number", code=CONFIG_ERROR, setup=config("lr: [fast]\n")),
    Case("cli-config-hidden-bool", TRAIN + ["--out", "{out}", "--config", "{tmp}/c.yaml"],
         r"c\.yaml: hidden: expected .*, got true/false", code=CONFIG_ERROR, setup=config("hidden: true\n")),
    Case("cli-config-toml-table", EXTRACT + ["--out", "{out}", "--config", "{tmp}/c.toml"],
         r"c\.toml: batch_size: expected .*, got a mapping", code=CONFIG_ERROR,
         setup=config("[batch_size]\na = 1\n", "c.toml")),
    Case("cli-config-yaml-list", EXTRACT + ["--out", "{out}", "--config", "{tmp}/c.yaml"],
         r"c\.yaml: .*mapping of option names", code=CONFIG_ERROR, setup=config("- views\n- 2\n")),
    Case("cli-config-binary", EXTRACT + ["--out", "{out}", "--config", "{tmp}/c.yaml"],
         r"c\.yaml: not a text file", code=CONFIG_ERROR, setup=config(bytes(range(256)))),
    Case("cli-config-empty", EXTRACT + ["--out", "{out}", "--config", "{tmp}/c.yaml"],
         r"c\.yaml: empty config", code=CONFIG_ERROR, setup=config("# nothing yet\n")),
    Case("cli-config-another-commands-options", EXTRACT + ["--out", "{out}", "--config", "{tmp}/c.yaml"],
         r"c\.yaml: top_k is not an option of featx extract \(it is one of featx predict, featx search, featx serve\)", code=CONFIG_ERROR,
         setup=config("top_k: 3\n")),
    Case("cli-config-data-list", ["extract", "--out", "{out}", "--config", "{tmp}/c.yaml"],
         r"c\.yaml: data: expected one value, got a list", code=CONFIG_ERROR, setup=config("data: [a, b]\n")),
    Case("cli-config-views-null", EXTRACT + ["--out", "{out}", "--config", "{tmp}/c.yaml"],
         r"c\.yaml: views: no value \(null\)", code=CONFIG_ERROR, setup=config("views:\n")),
    Case("cli-config-missing", EXTRACT + ["--out", "{out}", "--config", "{tmp}/none.yaml"],
         r"none\.yaml: cannot read config", code=CONFIG_ERROR),
    # --- --out of the wrong kind (exit 2), or where nothing can be written (exit 1)
    Case("cli-extract-out-is-a-file", EXTRACT + ["--out", "{tmp}/f"], r"--out .*f: exists and is not a folder",
         code=2, setup=write_file("f", "not a folder")),
    Case("cli-lr-find-out-is-a-file", ["lr-find", "{store}", "--out", "{tmp}/f"],
         r"--out .*f: exists and is not a folder", code=2, setup=write_file("f", "not a folder")),
    Case("cli-finetune-out-is-a-file", ["finetune", "{data}", "--head", "{head}", "--out", "{tmp}/f"],
         r"--out .*f: exists and is not a folder", code=2, setup=write_file("f", "not a folder")),
    Case("cli-compare-out-is-a-file", ["compare", "{data}", "-b", "tiny_cnn", "--out", "{tmp}/f"],
         r"--out .*f: exists and is not a folder", code=2, setup=write_file("f", "not a folder")),
    Case("cli-train-head-out-under-a-file", TRAIN + ["--out", "{tmp}/f/heads"],
         r"--out .*f/heads: .*f is a file, not a folder", code=2, setup=write_file("f", "not a folder")),
    Case("cli-predict-out-is-a-folder", PREDICT + ["--out", "{tmp}/d"], r"--out .*d: is a folder; give a file name",
         code=2, setup=make_dir("d")),
    Case("cli-report-out-is-a-folder", ["report", "{tmp}/res", "--out", "{tmp}/d"],
         r"--out .*d: is a folder; give a file name", code=2, setup=results_and(make_dir("d"))),
    Case("cli-merge-out-is-a-folder", ["merge", "{store}", "--out", "{tmp}/d"],
         r"--out .*d: is a folder; give a file name", code=2, setup=make_dir("d")),
    Case("cli-predict-out-unwritable", PREDICT + ["--out", "/proc/featx-out/p.csv"],
         r"--out /proc/featx-out/p\.csv: cannot write in /proc"),
    Case("cli-predict-temp-file-blocked", PREDICT + ["--out", "{tmp}/p.csv"],
         r"p\.csv\.tmp-\d+: a folder is in the way of the temporary file", setup=temp_folder_in_the_way),
    # --- typed option values (exit 2, naming the option)
    Case("cli-hidden-text", TRAIN + ["--kind", "mlp", "--hidden", "abc", "--out", "{out}"], r"--hidden", code=2),
    Case("cli-hidden-zero", TRAIN + ["--kind", "mlp", "--hidden", "0", "--out", "{out}"], r"--hidden.*positive", code=2),
    Case("cli-lr-text", TRAIN + ["--lr", "fast", "--out", "{out}"], r"--lr", code=2),
    Case("cli-lr-inf", TRAIN + ["--lr", "inf", "--out", "{out}"], r"--lr'?: must be a (finite|positive) number", code=2),
    Case("cli-finetune-lr-inf", ["finetune", "{data}", "--head", "{head}", "--lr", "inf", "--out", "{out}"],
         r"--lr'?: must be a (finite|positive) number", code=2),
    Case("cli-momentum-inf", TRAIN + ["--momentum", "inf", "--out", "{out}"], r"--momentum.*finite", code=2),
    Case("cli-lr-find-start-zero", ["lr-find", "{store}", "--start", "0", "--out", "{out}"], r"--start", code=2),
    Case("cli-lr-find-end-below-start", ["lr-find", "{store}", "--start", "1", "--end", "0.1", "--out", "{out}"],
         r"--end 0\.1.*above --start 1", code=2),
    Case("cli-compare-splits-zero", ["compare", "{data}", "-b", "tiny_cnn", "--splits", "0", "--out", "{out}"],
         r"--splits", code=2),
    Case("cli-compare-splits-text", ["compare", "{data}", "-b", "tiny_cnn", "--splits", "five", "--out", "{out}"],
         r"--splits", code=2),
    Case("cli-top-k-text", PREDICT + ["--top-k", "abc", "--out", "{out}/p.csv"], r"--top-k", code=2),
    Case("cli-report-format-unknown", ["report", "{tmp}/res", "--format", "pdf", "--out", "{out}/r.pdf"],
         r"--format.*must be one of html, md, got 'pdf'", code=2, setup=results),
    Case("cli-merge-mode-unknown", ["merge", "{store}", "--out", "{out}/m.h5", "--mode", "link"],
         r"--mode.*must be one of copy, virtual, got 'link'", code=2),
    Case("cli-nul-in-a-value", EXTRACT + ["--aug", "mi\x00ld", "--out", "{out}"], r"--aug'?: .*NUL", code=2),
    # --- report inputs, backbones, info (exit 1)
    Case("cli-report-no-results", ["report", "{tmp}", "--out", "{out}/r.html"], r"no head results"),
    Case("cli-report-only-corrupt-heads", ["report", "{tmp}/res", "--out", "{out}/r.html"],
         r"res: no usable head results; skipped 1: .*h\.json: no 'backbone'", setup=corrupt_results),
    Case("cli-compare-only-unknown-backbones", ["compare", "{data}", "-b", "no_such_net", "--out", "{out}"],
         r"every backbone failed \(no_such_net\); the report names the reasons: .*report\.html"),
    Case("cli-backbones-no-match", ["backbones", "nonexistent*"], r"no backbone matches 'nonexistent\*'"),
    Case("cli-backbones-cuts-unknown", ["backbones", "--cuts", "unknown_net"], r"unknown backbone 'unknown_net'"),
    Case("cli-info-missing", ["info", "{tmp}/missing.h5"], r"missing\.h5: no such store"),
    # 2 x 100,000 float32 images of 4096 px are 40 PB: refused before any store, on any machine
    Case("cli-extract-batch-beyond-memory", EXTRACT + ["--input-size", "4096", "--batch-size", "100000",
                                                       "--out", "{out}"],
         r"--batch-size 100000 at --input-size 4096 needs at least [\d.]+ GB of memory, .* is available; "
         r"lower --batch-size \(at most \d+\)"),
]
