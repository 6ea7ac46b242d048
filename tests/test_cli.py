"""The `featx` command line: readable help with every default, one-line errors and exit codes,
config files under the command line, old spellings kept, one meaning per option name."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from featx.cli import app
from tests.conftest import make_class_tree, write_image

runner = CliRunner()
COMMANDS = sorted(get_command(app).commands)
WIDE = {"COLUMNS": "400", "TERMINAL_WIDTH": "400"}  # help rows on one line each


def _run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _ok(*args: str) -> str:
    result = _run(*args)
    assert result.exit_code == 0, result.output
    return result.output


def _usage_error(*args: str, code: int = 2) -> str:
    """The command fails with `code`, one line on stderr, nothing on stdout, no traceback."""
    result = _run(*args)
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == "" and "Traceback" not in result.output
    return lines[0]


def _help(command: str) -> str:
    text = runner.invoke(app, [command, "--help"], env=WIDE).output
    return " ".join(text.replace("│", " ").split())  # without the box and the wrapping


# --- help ---------------------------------------------------------------------------------------

def _shown_default(param) -> str | None:
    """The text `--help` must show for this parameter's default, or None: a default described in
    words reads like a value (`[default: 1 on CPU, up to 16 on CUDA]`, not typer's `(...)`)."""
    if isinstance(param.show_default, str):
        return param.show_default
    default = param.default
    if default is None or param.show_default is False:
        return None
    if getattr(param, "is_flag", False):
        if not getattr(param, "secondary_opts", None):
            return None  # an off flag: nothing to show
        return (param.opts if default else param.secondary_opts)[0].lstrip("-")
    if isinstance(default, (list, tuple)):
        return ", ".join(str(d) for d in default)
    return str(default)


# Options whose absence means "not asked for", with nothing to default to.
NO_DEFAULT = {("backbones", "cuts"), ("extract", "data"), ("finetune", "data"), ("compare", "data"),
              ("scan", "data")}


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_every_default_and_readable_metavars(command):
    text = _help(command)
    assert not re.search(r"<[a-z_|\[\]]+>", text), f"a type label like <str> in `featx {command} --help`"
    click_command = get_command(app).commands[command]
    for param in click_command.params:
        if getattr(param, "hidden", False) or param.name in ("help", "config"):
            continue
        name = param.opts[0] if param.param_type_name == "option" else param.metavar
        shown = _shown_default(param)
        if shown is not None:
            assert f"[default: {shown}]" in text, f"featx {command}: {name} default {shown} not shown"
        elif not param.required and not getattr(param, "is_flag", False):
            assert (command, param.name) in NO_DEFAULT, f"featx {command}: {name} has no visible default"
        assert param.help, f"featx {command}: {name} has no help"
        if param.param_type_name == "option" and not param.is_flag:
            assert param.metavar, f"featx {command}: {name} does not name its value"
    for param in click_command.params:  # required arguments look required, optional ones not
        if param.param_type_name == "argument":
            usage = text.split(" Usage: ")[-1] if " Usage: " in text else text
            expected = param.metavar if param.required else f"[{param.metavar}]"
            assert expected in usage.split("[OPTIONS]")[1].split(" ")[:4], (command, expected)


def test_cli_defaults_are_the_librarys():
    from featx.data import DatasetOptions
    from featx.extraction import ExtractConfig
    from featx.finetuning import FinetuneConfig
    from featx.probes.sweep import HeadConfig

    library = {"extract": ExtractConfig(), "train-head": HeadConfig(), "finetune": FinetuneConfig(),
               "scan": DatasetOptions()}
    renamed = {"lr": "lrs", "weight_decay": "weight_decays", "kind": "head"}
    for command, config in library.items():
        for param in get_command(app).commands[command].params:
            field = renamed.get(param.name, param.name) if command == "train-head" else param.name
            if param.default is None or not hasattr(config, field):
                continue
            value = getattr(config, field)
            default = tuple(param.default) if isinstance(param.default, list) else param.default
            if field == "hidden":
                default = tuple(int(h) for h in default.split(","))
            assert default == value, f"featx {command} --{param.name}: {default!r} vs library {value!r}"


def test_help_is_quick_no_torch():
    """`featx --help` and a command's help build every option (choices and ranges included)
    from the configs' settings tables without importing torch, h5py or numpy."""
    for args in (["--help"], ["train-head", "--help"]):
        out = subprocess.run([sys.executable, "-X", "importtime", "-m", "featx", *args],
                             capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
        assert out.returncode == 0 and "Usage:" in out.stdout, out.stderr[-2000:]
        # -X importtime: "import time: self [us] | cumulative | module", one line per module
        imported = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                    for line in out.stderr.splitlines() if line.startswith("import time:")}
        assert "featx" in imported and not imported & {"torch", "h5py", "numpy"}, args


# A bad choice, on the command line and in the config: (command line, config class, field).
CHOICES = [
    (["extract", "elpv", "--dtype"], "ExtractConfig", "dtype"),
    (["extract", "elpv", "--tta"], "ExtractConfig", "tta"),
    (["extract", "elpv", "--amp"], "ExtractConfig", "amp"),
    (["extract", "elpv", "--engine"], "ExtractConfig", "engine"),
    (["extract", "elpv", "--decode"], "ExtractConfig", "decode"),
    (["train-head", "s.h5", "--optimizer"], "HeadConfig", "optimizer"),
    (["train-head", "s.h5", "--schedule"], "HeadConfig", "schedule"),
    (["train-head", "s.h5", "--balance"], "HeadConfig", "balance"),
    (["train-head", "s.h5", "--normalize"], "HeadConfig", "normalize"),
    (["train-head", "s.h5", "--features"], "HeadConfig", "features"),
    (["train-head", "s.h5", "--select"], "HeadConfig", "select"),
    (["train-head", "s.h5", "--metric"], "HeadConfig", "metric"),
    (["finetune", "elpv", "--head", "h.safetensors", "--optimizer"], "FinetuneConfig", "optimizer"),
    (["finetune", "elpv", "--head", "h.safetensors", "--schedule"], "FinetuneConfig", "schedule"),
    (["finetune", "elpv", "--head", "h.safetensors", "--balance"], "FinetuneConfig", "balance"),
    (["finetune", "elpv", "--head", "h.safetensors", "--map-aug"], "FinetuneConfig", "map_aug"),
    (["finetune", "elpv", "--head", "h.safetensors", "--amp"], "FinetuneConfig", "amp"),
]


@pytest.mark.parametrize("args, config, field", CHOICES, ids=[f"{a[0]} {a[-1]}" for a, _, _ in CHOICES])
def test_a_bad_choice_gets_the_same_words_from_the_cli_and_the_config(args, config, field):
    import featx
    from featx.errors import ConfigError

    line = _usage_error(*args, "bogus")
    with pytest.raises(ConfigError) as raised:
        getattr(featx, config)(**{field: "bogus"})
    problem = str(raised.value)
    assert problem.startswith(f"{field} must be one of ") and problem.endswith(", got 'bogus'"), problem
    assert f"Invalid value for '{args[-1]}': {problem[len(field) + 1:]} (see featx {args[0]} --help)" in line


def test_a_merge_mode_is_refused_alike_by_the_cli_and_the_library(tmp_path):
    from featx.errors import StoreError
    from featx.store import merge_shards

    line = _usage_error("merge", "a.h5", "--out", tmp_path / "m.h5", "--mode", "link")
    assert "'--mode': must be one of copy, virtual, got 'link'" in line
    with pytest.raises(StoreError, match="copy or virtual, got 'link'"):
        merge_shards([tmp_path / "a.h5"], tmp_path / "m.h5", mode="link")


# --- errors and exit codes --------------------------------------------------------------------

def test_usage_errors_exit_2_in_one_line(tmp_path, blob_store):
    assert "Invalid value for '--views'" in _usage_error("extract", "elpv", "--views", "many")
    assert "must be one of linear, mlp" in _usage_error("train-head", blob_store, "--kind", "foo")
    assert "No such option: --viewz" in _usage_error("extract", "elpv", "--viewz", "2")
    assert "Missing option '--out'" in _usage_error("merge", "a.h5")
    assert "Missing argument 'STORE'" in _usage_error("train-head")
    assert "missing DATA" in _usage_error("extract")
    line = _usage_error("finetune", "elpv", "--head", "h.safetensors", "--lr", "fast")
    assert "--lr" in line and "must be a positive number or auto, got 'fast'" in line


def test_config_errors_exit_2_naming_file_and_option(tmp_path, blob_store):
    config = tmp_path / "run.toml"
    config.write_text('data = "elpv"\nbackbones = ["resnet18"]\n')
    line = _usage_error("extract", "--config", config)
    assert "run.toml: backbones is not an option of featx extract (did you mean backbone?)" in line
    config = tmp_path / "head.yaml"
    config.write_text("epochs: many\n")
    line = _usage_error("train-head", blob_store, "--config", config)
    assert "head.yaml: epochs:" in line and "integer" in line
    config.write_text("kind: forest\n")
    assert "head.yaml: kind: must be one of linear, mlp" in _usage_error("train-head", blob_store, "--config",
                                                                          config)
    config.write_text("- a list\n")
    assert "a mapping of option names" in _usage_error("train-head", blob_store, "--config", config)


def _module_main(module: str, args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """`python -m MODULE ARGS` run in this process (runpy runs MODULE's __main__, as -m does, with
    the real sys.argv, stdout and stderr; no CliRunner): its exit status, stdout and stderr."""
    import runpy

    monkeypatch.setattr(sys, "argv", ["featx", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        runpy.run_module(module, run_name="__main__")
    out, err = capsys.readouterr()
    return done.value.code, out, err


def test_featx_errors_exit_1_in_one_line_from_the_console_script(tmp_path, capsys, monkeypatch):
    # One real process, what a shell sees (a usage error: it exits before torch is imported, in 1 s
    # where an error from a command costs 9 s of imports); the others run the entry points here
    usage = subprocess.run([sys.executable, "-m", "featx.cli", "train-head", "x.h5", "--kind", "tree"],
                           capture_output=True, text=True)
    assert usage.returncode == 2 and usage.stdout == "" and usage.stderr.startswith("error:")
    assert len(usage.stderr.strip().splitlines()) == 1 and "Traceback" not in usage.stderr
    code, out, err = _module_main("featx.cli", ["extract", str(tmp_path / "nope")], capsys, monkeypatch)
    assert code == 1 and out == ""
    assert err.startswith("error:") and "no such file or folder" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, out, err = _module_main("featx", ["extract", "elpv", "-b", "resnt50"], capsys, monkeypatch)
    assert code == 1 and out == "" and "did you mean resnet50" in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:")


def test_ctrl_c_says_how_to_resume(monkeypatch, tmp_path):
    import featx.data

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(featx.data, "open_dataset", interrupted)
    result = _run("extract", tmp_path)
    assert result.exit_code == 130
    assert "re-run the same command to resume" in result.stderr


# --- commands -----------------------------------------------------------------------------------

def test_scan_split_folders_shows_counts_per_split(split_tree):
    output = _ok("scan", split_tree)
    assert "layout: split-folders" in output and "12 images" in output
    assert "40x32 (12)" in output and "all images decode" in output


def test_scan_class_folders_with_fractions(class_tree):
    assert "layout: class-folders" in _ok("scan", class_tree, "--val-frac", "0.2", "--test-frac", "0.1")


def test_scan_manifest_and_unlabeled_folder(tmp_path):
    for i in range(3):
        write_image(tmp_path / "imgs" / f"{i}.png", i)
    (tmp_path / "m.csv").write_text("path,label\nimgs/0.png,a\nimgs/1.png,b\nimgs/2.png,a\n")
    assert "layout: manifest" in _ok("scan", tmp_path / "m.csv")
    assert "layout: unlabeled-folder" in _ok("scan", tmp_path / "imgs")


def test_scan_lists_every_unreadable_file(tmp_path):
    root = make_class_tree(tmp_path / "d", per_class=2)
    (root / "ants" / "zero.jpg").write_bytes(b"")
    (root / "bees" / "text.png").write_text("hello")
    output = _ok("scan", root)
    assert "2 unreadable file(s)" in output
    assert "ants/zero.jpg: empty file (0 bytes)" in output
    assert "bees/text.png: not an image file Pillow can identify" in output


def test_backbones_lists_families_and_filters():
    output = _ok("backbones", "efficientnet_lite")
    assert "efficientnet_lite0" in output and "1280" in output and "yes" in output
    assert "resnet50" in _ok("backbones", "resnet5*", "--family", "torchvision")


def test_extract_from_config_file_then_info(tmp_path):
    root = make_class_tree(tmp_path / "d", per_class=4)
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {root}\nbackbone: resnet18\nweights: none\ninput-size: 32\n"
                      f"views: 1\naug: flips\nout: {tmp_path / 'stores'}\nworkers: 0\nseed: 7\n")
    output = _ok("extract", "--config", config, "--seed", "3")  # the command line wins
    assert "created" in output and "0 failed" in output
    (store,) = (tmp_path / "stores").glob("*.h5")
    assert store.name == "d_resnet18-init3_32px_flipsx1.h5"
    info = _ok("info", store)
    # 512 final features + 512 pooled (average and max of the 256 maps entering layer4, --pool auto)
    assert "complete" in info and "resnet18" in info and "(8, 1024)" in info
    assert "512 final + 512 pooled at layer4" in info
    attrs = json.loads(_ok("info", store, "--json"))
    assert attrs["seed"] == 3 and attrs["num_aug_views"] == 1
    assert "already complete" in _ok("extract", "--config", config, "--seed", "3")


def test_train_head_out_is_a_folder_or_a_safetensors_file(tmp_path, blob_store):
    output = _ok("train-head", blob_store, "--epochs", "5", "--batch-size", "16", "--out", tmp_path / "new")
    assert "selected by 5-fold cross-validation on train+val" in output and "per class (test)" in output
    assert (tmp_path / "new" / "blobs.linear.safetensors").is_file()
    assert (tmp_path / "new" / "blobs.linear.json").is_file()
    (tmp_path / "existing").mkdir()
    _ok("train-head", blob_store, "--epochs", "2", "--kind", "logreg", "--out", f"{tmp_path / 'existing'}/")
    assert (tmp_path / "existing" / "blobs.logreg.safetensors").is_file()
    assert not (tmp_path / "existing.safetensors").exists()
    _ok("train-head", blob_store, "--epochs", "2", "--out", tmp_path / "named.safetensors")
    assert (tmp_path / "named.safetensors").is_file() and (tmp_path / "named.json").is_file()
    (tmp_path / "file").write_text("x")
    assert "exists and is not a folder" in _usage_error("train-head", blob_store, "--out", tmp_path / "file")


def test_train_head_lr_find_and_predict_commands(tmp_path, blob_store):
    heads = tmp_path / "heads"
    output = _ok("train-head", blob_store, "--kind", "mlp", "--hidden", "8,8", "--lr", "0.01",
                 "--epochs", "3", "--out", heads)
    assert "mlp head trained" in output
    meta = json.loads((heads / "blobs.mlp.json").read_text())
    assert meta["config"]["hidden"] == [8, 8] and meta["config"]["optimizer"] == "adamw"  # mlp's default
    output = _ok("lr-find", blob_store, "--steps", "30", "--out", tmp_path / "curves")
    assert "suggested learning rate" in output and (tmp_path / "curves" / "blobs.lr-find.png").stat().st_size
    rate = re.search(r"suggested learning rate (\S+) ", output).group(1)  # then train with it
    assert output.splitlines()[-1] == f"next: featx train-head --kind linear --lr {rate} {blob_store}"
    output = _ok("predict", blob_store, "--head", heads / "blobs.mlp.safetensors", "--out", tmp_path / "p.csv")
    assert "120 predictions written" in output and (tmp_path / "p.csv").is_file()


def test_config_precedence_command_line_then_file_then_defaults(tmp_path, blob_store):
    config = tmp_path / "head.yaml"
    config.write_text("kind: mlp\nhidden: [8]\nepochs: 2\nbatch-size: 16\nweight_decay: 0.001\n")
    _ok("train-head", blob_store, "--config", config, "--epochs", "3", "--out", tmp_path)
    meta = json.loads((tmp_path / "blobs.mlp.json").read_text())["config"]
    assert meta["epochs"] == 3  # command line over the file
    assert meta["hidden"] == [8] and meta["batch_size"] == 16 and meta["weight_decays"] == [0.001]  # file
    assert meta["dropout"] == 0.4 and meta["optimizer"] == "adamw"  # defaults (mlp's own optimizer)


def test_old_spellings_still_work(tmp_path, blob_store):
    config = tmp_path / "old.yaml"
    config.write_text("head: mlp\nhidden: [8]\nepochs: 2\nlrs: [0.01]\n")  # train-head's old config keys
    result = _run("train-head", blob_store, "--config", config, "--out", tmp_path / "a")
    assert result.exit_code == 0 and "old spelling of --kind" in result.stderr
    assert json.loads((tmp_path / "a" / "blobs.mlp.json").read_text())["config"]["lrs"] == [0.01]
    result = _run("train-head", blob_store, "--head", "linear", "--wd", "0.001", "--clean-only",
                  "--epochs", "2", "--out", tmp_path / "b")
    assert result.exit_code == 0 and "old spelling of --kind" in result.stderr
    meta = json.loads((tmp_path / "b" / "blobs.linear.json").read_text())
    assert meta["config"]["weight_decays"] == [0.001] and meta["config"]["use_views"] is False
    assert "give only --kind" in _usage_error("train-head", blob_store, "--head", "mlp", "--kind", "linear")


def test_extract_of_unlabelled_images_suggests_what_to_label_first(tmp_path):
    for i in range(6):
        write_image(tmp_path / "imgs" / f"{i}.png", i)
    output = _ok("extract", tmp_path / "imgs", "-b", "tiny_features", "--weights", "none", "--input-size", "32",
                 "--workers", "0", "--out", tmp_path / "stores")
    (store,) = (tmp_path / "stores").glob("*.h5")
    assert output.splitlines()[-1] == f"next: featx select --strategy typiclust --budget 50 {store}"
    # and the default strategy, which needs labels, names the ones that do not
    said = _usage_error("select", store, "--budget", "2")
    assert said.startswith("error: --strategy margin (the default): needs --head"), said
    assert said.endswith("with no labels yet, start with --strategy typiclust (a few typical images of each "
                         "cluster), probcover, coreset or random"), said


def test_extract_cut_then_finetune_from_block(tmp_path):
    # tiny_features (tests/tiny_backbone.py): the options' plumbing, not a network's; the resnet18
    # trunk's cuts and top fine-tuning are tested in test_cuts.py and test_finetune_top.py
    root = make_class_tree(tmp_path / "data", classes=("a", "b"), per_class=8, seed=4)
    _ok("extract", root, "-b", "tiny_features", "--weights", "none", "--input-size", "32",
        "--views", "1", "--cut", "features.4", "--workers", "0", "--out", tmp_path / "stores")
    store = next((tmp_path / "stores").glob("*_cut-features.4.h5"))
    assert "cut maps   entering features.4: clean (16, 12, 8, 8)" in _ok("info", store)
    _ok("train-head", store, "--epochs", "3", "--out", tmp_path / "h.safetensors")
    head = tmp_path / "h.safetensors"
    output = _ok("finetune", store, "--head", head, "--from-block", "features.4", "--epochs", "2",
                 "--map-aug", "flip", "--out", tmp_path / "top")
    assert "fine-tuned 2 epoch(s)" in output and (tmp_path / "top" / "h.backbone.safetensors").is_file()
    assert output.splitlines()[-1] == f"next: featx predict IMAGES --head {tmp_path / 'top' / 'h.head.safetensors'}"
    meta = json.loads((tmp_path / "top" / "h.head.json").read_text())
    assert meta["kind"] == "finetune" and meta["config"]["map_aug"] == "flip"
    found = _ok("finetune", store, "--head", head, "--from-block", "features.4", "--lr-find", "--out", tmp_path / "auto")
    assert "suggested learning rate" in found and not (tmp_path / "auto" / "h.head.json").exists()
    record = json.loads((tmp_path / "auto" / "h.lr-find.json").read_text())
    assert (tmp_path / "auto" / "h.lr-find.png").is_file()
    output = _ok("finetune", store, "--head", head, "--from-block", "features.4", "--lr", "auto", "--epochs", "2",
                 "--out", tmp_path / "auto")
    assert "(found before)" in output and "fine-tuned 2 epoch(s)" in output
    meta = json.loads((tmp_path / "auto" / "h.head.json").read_text())
    assert meta["config"]["lr"] == record["result"]["suggestion"]
    result = _run("finetune", store, "--head", head, "--from-block", "features.2", "--out", tmp_path / "x")
    assert result.exit_code != 0 and "no maps cached at 'features.2'" in result.stderr
    line = _usage_error("finetune", store, "--head", head, "--from-block", "features.4", "--binarize", "0.5",
                        "--out", tmp_path / "y")
    assert "--binarize: with --from-block the store fixes the data" in line


def test_compare_reports_a_failed_backbone_and_goes_on(tmp_path):
    root = make_class_tree(tmp_path / "data", classes=("a", "b"), per_class=8, seed=2)
    result = _run("compare", root, "-b", "no_such_net", "-b", "resnet18", "--weights", "none",
                  "--input-size", "32", "--workers", "0", "--engine", "torch", "--out", tmp_path / "cmp",
                  "--head", "linear")  # --head KIND: the old spelling of --kind
    assert result.exit_code == 0, result.output
    assert "no_such_net: failed: unknown backbone" in result.stderr
    (head,) = (tmp_path / "cmp" / "heads").rglob("*.safetensors")  # the one head: the best, to predict with
    assert result.stdout.splitlines()[-1] == f"next: featx predict IMAGES --head {head}"
    report = (tmp_path / "cmp" / "report.html").read_text()
    assert "<h2>Failed backbones</h2>" in report and "no_such_net" in report and "resnet18" in report


def test_compare_exits_1_when_every_backbone_failed_and_still_writes_the_report(tmp_path):
    from featx.backbones import get_spec

    if get_spec("resnet18").weights_offline:
        pytest.skip("resnet18's weights are on this machine")
    root = make_class_tree(tmp_path / "data", classes=("a", "b"), per_class=4)
    result = _run("compare", root, "-b", "resnet18", "--out", tmp_path / "cmp", "--format", "md")
    assert result.exit_code == 1
    assert "every backbone failed (resnet18)" in result.stderr
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "## Failed backbones" in report and "- **resnet18**: no pretrained weights" in report


# --- issue 17: nothing silent -------------------------------------------------------------------

NO_DATA = "no-such-data"  # config errors must come first: a data error here would exit 1, not 2
CONFIG_VALUE_ERRORS = [  # (command and its argument, file, content, expected in the one error line)
    (["extract", NO_DATA], "c.yaml", 'views: "many"\n', "c.yaml: views: "),
    (["extract", NO_DATA], "c.yaml", "batch_size: 2.7\n", "c.yaml: batch_size: "),
    (["extract", NO_DATA], "c.yaml", "backbone: {a: 1}\n", "c.yaml: backbone: expected NAME (text), got a mapping"),
    (["extract", NO_DATA], "c.yaml", "backbone: [[a]]\n", "c.yaml: backbone: expected NAME (text), got a list"),
    (["train-head", "x.h5"], "c.yaml", "lr: [fast]\n", "c.yaml: lr: "),
    (["train-head", "x.h5"], "c.yaml", "hidden: true\n", "c.yaml: hidden: expected SIZES (text), got true/false"),
    (["train-head", "x.h5"], "c.yaml", "epochs: [1, 2]\n", "c.yaml: epochs: expected one value, got a list"),
    (["extract", NO_DATA], "c.toml", "[batch_size]\na = 1\n",
     "c.toml: batch_size: expected N (an integer), got a mapping"),
    (["extract", NO_DATA], "c.yaml", "- views\n- 2\n", "c.yaml: a config is a mapping of option names"),
    (["extract", NO_DATA], "c.yaml", b"\xff\xfe\x00\x01binary", "c.yaml: not a text file"),
    (["extract", NO_DATA], "c.yaml", "", "c.yaml: empty config"),
    (["extract", NO_DATA], "c.toml", "# all commented out\n", "c.toml: empty config"),
    (["extract", NO_DATA], "c.yaml", "top_k: 3\n", "c.yaml: top_k is not an option of featx extract "
                                                     "(it is one of featx predict, featx search, featx serve)"),
    (["extract", NO_DATA], "c.yaml", "viewz: 2\n", "c.yaml: viewz is not an option of featx extract (did you mean views?)"),
    (["extract"], "c.yaml", "data: [a, b]\n", "c.yaml: data: expected one value, got a list"),
    (["extract", NO_DATA], "c.yaml", "views:\n", "c.yaml: views: no value (null)"),
    (["extract", NO_DATA], "c.yaml", "seed: true\n", "c.yaml: seed: expected N (an integer), got true/false"),
    (["extract", NO_DATA], "c.yaml", "overwrite: 3\n", "c.yaml: overwrite: expected true or false, got 3"),
    (["extract", NO_DATA], "c.yaml", "aug: 2024-01-01\n", "c.yaml: aug: expected RECIPE (text), got a date"),
    (["extract", NO_DATA], "c.yaml", "out: 5\n", None),  # a number is a fine folder name: no error here
]


@pytest.mark.parametrize("args, name, content, expected", CONFIG_VALUE_ERRORS,
                         ids=[f"{c[0][0]}-{c[2][:14]!r}" for c in CONFIG_VALUE_ERRORS])
def test_config_values_of_the_wrong_type_are_one_line_naming_file_and_key(tmp_path, monkeypatch, args,
                                                                         name, content, expected):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    if expected is None:
        result = _run(*args, "--config", path)
        assert result.exit_code == 1 and f"{NO_DATA}: no such file" in result.stderr, result.output
        return
    line = _usage_error(*args, "--config", path)
    assert expected in line, line


def test_a_null_config_value_leaves_an_optional_option_unset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("workers:\nsubset: null\n")  # both default to None: off
    result = _run("extract", NO_DATA, "--config", tmp_path / "c.yaml")
    assert result.exit_code == 1 and "no such file" in result.stderr


def test_every_command_with_more_than_a_few_options_takes_a_config():
    for name, command in get_command(app).commands.items():
        options = [p for p in command.params if p.param_type_name == "option" and not p.hidden]
        if len(options) > 4:
            assert "config" in {p.name for p in options}, f"featx {name} has {len(options)} options, no --config"


def test_scan_takes_its_options_and_data_from_a_config(tmp_path, class_tree):
    (tmp_path / "scan.yaml").write_text(f"data: {class_tree}\nval-frac: 0.5\n")
    assert "layout: class-folders" in _ok("scan", "--config", tmp_path / "scan.yaml")


def test_usage_errors_name_the_featx_command_in_their_hint(blob_store):
    assert "(see featx train-head --help)" in _usage_error("train-head", blob_store, "--hidden", "abc")


TYPED_ERRORS = [  # (args, expected in the error line); blob_store is {store}
    (["train-head", "{store}", "--kind", "mlp", "--hidden", "abc"], "--hidden"),
    (["train-head", "{store}", "--kind", "mlp", "--hidden", "0"], "must be positive integers"),
    (["train-head", "{store}", "--lr", "fast"], "--lr"),
    (["train-head", "{store}", "--lr", "inf"], "Invalid value for '--lr': must be a finite number, got inf"),
    (["train-head", "{store}", "--lr", "-1"], "Invalid value for '--lr': must be above 0, got -1"),
    (["train-head", "{store}", "--dropout", "1"], "dropout must be in [0, 1), got 1.0"),
    (["train-head", "{store}", "--weight-decay", "nan"], "must be a finite number >= 0, got nan"),
    (["train-head", "{store}", "--momentum", "inf"], "'--momentum': must be a finite number"),
    (["train-head", "{store}", "--gamma", "-1"], "'--gamma': must be above 0, got -1"),
    (["scan", "{store}", "--binarize", "nan"], "'--binarize': must be a finite number"),
    (["finetune", "{store}", "--head", "h.safetensors", "--lr", "inf"], "'--lr': must be a positive number or auto"),
    (["lr-find", "{store}", "--start", "0"], "'--start': must be above 0, got 0"),
    (["lr-find", "{store}", "--start", "1", "--end", "0.1"], "--end 0.1: must be above --start 1"),
    (["predict", "{store}", "--head", "h.safetensors", "--top-k", "abc"], "--top-k"),
    (["report", "{store}", "--format", "pdf"], "'--format': must be one of html, md, got 'pdf'"),
    (["extract", "{store}", "--aug", "mi\x00ld"], "'--aug': contains a NUL character"),
]


@pytest.mark.parametrize("args, expected", TYPED_ERRORS, ids=[" ".join(a[:1] + a[2:4]) for a, _ in TYPED_ERRORS])
def test_typed_option_errors_are_usage_errors_naming_the_option(blob_store, args, expected):
    line = _usage_error(*[a.replace("{store}", str(blob_store)) for a in args])
    assert expected in line, line


def test_backbones_and_info_errors_are_one_line(tmp_path):
    assert "no backbone matches 'nonexistent*'" in _usage_error("backbones", "nonexistent*", code=1)
    assert "unknown backbone 'unknown_net'" in _usage_error("backbones", "--cuts", "unknown_net", code=1)
    assert "missing.h5: no such store" in _usage_error("info", tmp_path / "missing.h5", code=1)


# --- --out: the right kind of path, writable, checked before the work starts

def _a_file(tmp_path):
    (tmp_path / "f").write_text("a file")
    return tmp_path / "f"


FOLDER_OUTS = {  # commands whose --out is a folder: (args before --out)
    "extract": ["extract", "{data}", "-b", "tiny_cnn", "--weights", "none", "--workers", "0"],
    "train-head": ["train-head", "{store}", "--epochs", "1"],
    "lr-find": ["lr-find", "{store}", "--steps", "3"],
    "finetune": ["finetune", "{data}", "--head", "{tmp}/h.safetensors"],
    "compare": ["compare", "{data}", "-b", "tiny_cnn", "--weights", "none"],
}
FILE_OUTS = {  # commands whose --out is a file
    "predict": ["predict", "{store}", "--head", "{tmp}/h.safetensors"],
    "report": ["report", "{tmp}"],
    "merge": ["merge", "{store}"],
}


def _fill(args, tmp_path, blob_store):
    data = tmp_path / "data"
    if not data.exists():
        make_class_tree(data, per_class=4)
    return [a.format(data=data, store=blob_store, tmp=tmp_path) for a in args]


@pytest.mark.parametrize("command", sorted(FOLDER_OUTS))
def test_out_folder_that_is_a_file_is_a_usage_error(tmp_path, blob_store, command):
    args = _fill(FOLDER_OUTS[command], tmp_path, blob_store)
    line = _usage_error(*args, "--out", _a_file(tmp_path))
    assert f"--out {tmp_path / 'f'}: exists and is not a folder" in line
    line = _usage_error(*args, "--out", tmp_path / "f" / "sub")
    assert f"--out {tmp_path / 'f' / 'sub'}: {tmp_path / 'f'} is a file, not a folder" in line


@pytest.mark.parametrize("command", sorted(FILE_OUTS))
def test_out_file_that_is_a_folder_is_a_usage_error(tmp_path, blob_store, command):
    args = _fill(FILE_OUTS[command], tmp_path, blob_store)
    (tmp_path / "d").mkdir()
    line = _usage_error(*args, "--out", tmp_path / "d")
    assert f"--out {tmp_path / 'd'}: is a folder; give a file name" in line
    line = _usage_error(*args, "--out", _a_file(tmp_path) / "x.out")
    assert f"{tmp_path / 'f'} is a file, not a folder" in line


@pytest.fixture
def unwritable(tmp_path):
    """A folder this process cannot create files in (root writes anywhere but /proc)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
    elif Path("/proc/self").is_dir():
        yield Path("/proc")
    else:
        pytest.skip("running as root without /proc: no folder is read-only")


WORK = {  # the library call each command's work starts with: must not run when --out is unwritable
    "predict": "featx.heads.predict.predict", "report": "featx.report.write_report",
    "merge": "featx.store.merge_shards", "compare": "featx.compare.run.compare",
    "train-head": "featx.probes.train.train_head", "lr-find": "featx.probes.train.find_head_lr",
    # extract checks --out itself once it knows there is something to write, before any forward
    "extract": "featx.extraction.store_run.Runner", "finetune": "featx.finetuning.finetune",
}


@pytest.mark.parametrize("command", sorted(WORK))
def test_unwritable_out_is_refused_before_the_work_starts(tmp_path, blob_store, unwritable, monkeypatch,
                                                          command):
    import importlib

    module, name = WORK[command].rsplit(".", 1)

    def work(*args, **kwargs):
        raise AssertionError(f"{command} started its work with an unwritable --out")

    monkeypatch.setattr(importlib.import_module(module), name, work)
    if command in FILE_OUTS:
        args, out_path = FILE_OUTS[command], unwritable / "sub" / "result.out"
    else:
        args, out_path = FOLDER_OUTS[command], unwritable / "sub"
    if command == "report":
        shutil.copy(_any_head(tmp_path, blob_store).with_suffix(".json"), tmp_path / "h.json")
    line = _usage_error(*_fill(args, tmp_path, blob_store), "--out", out_path, code=1)
    assert f"--out {out_path}: cannot write in {unwritable}" in line


def _any_head(tmp_path, blob_store) -> Path:
    from featx.probes.sweep import HeadConfig
    from featx.probes.train import train_head

    return train_head(blob_store, "linear", HeadConfig(epochs=1), out=tmp_path / "heads" / "h",
                      show_progress=False).path


def test_a_temp_file_left_by_a_killed_run_is_removed_with_a_note(tmp_path, blob_store):
    head = _any_head(tmp_path, blob_store)
    dead = tmp_path / "p.csv.tmp-99999999"  # no such process
    alive = tmp_path / f"p.csv.tmp-{os.getpid()}x"  # not our name pattern: left alone
    dead.write_text("half a CSV")
    alive.write_text("keep")
    result = _run("predict", blob_store, "--head", head, "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert f"note: removed {dead}, left by an interrupted run" in result.stderr
    assert not dead.exists() and alive.exists() and (tmp_path / "p.csv").is_file()


def test_a_folder_where_the_temp_file_goes_is_one_line(tmp_path, blob_store):
    head = _any_head(tmp_path, blob_store)
    (tmp_path / f"p.csv.tmp-{os.getpid()}").mkdir()
    line = _usage_error("predict", blob_store, "--head", head, "--out", tmp_path / "p.csv", code=1)
    assert f"p.csv.tmp-{os.getpid()}: a folder is in the way of the temporary file" in line


def test_report_skips_a_corrupt_head_with_a_note(tmp_path, blob_store):
    head = _any_head(tmp_path, blob_store)
    bad = json.loads(head.with_suffix(".json").read_text())
    bad.pop("kind")
    (tmp_path / "heads" / "bad.json").write_text(json.dumps(bad))
    (tmp_path / "heads" / "x.lr-find.csv").write_text("lr,loss\nfast,1\n")
    result = _run("report", tmp_path / "heads", "--out", tmp_path / "r.html", "--no-map")  # maps: test_report
    assert result.exit_code == 0, result.output
    assert f"note: skipped {tmp_path / 'heads' / 'bad.json'}: no 'kind'" in result.stderr
    assert f"note: skipped {tmp_path / 'heads' / 'x.lr-find.csv'}: row 1: lr 'fast' is not a number" in result.stderr
    assert (tmp_path / "r.html").is_file()


def test_train_head_ctrl_c_says_nothing_was_saved(monkeypatch, blob_store, tmp_path):
    import featx.probes.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(featx.probes.train, "train_head", interrupted)
    result = _run("train-head", blob_store, "--out", tmp_path)
    assert result.exit_code == 130
    assert "interrupted; no head was saved" in result.stderr


# --- Ctrl-C in a real process: the message, and exit status 130

INTERRUPT_AT_FIRST_STEP = '''
"""Imported before the CLI: the first progress step (the run's work has started) sends this
process SIGINT, as Ctrl-C in its terminal does: no polling from the test, the same point on every
run (tests/kill_point.py does the same with SIGKILL)."""
import os, signal
from contextlib import contextmanager
import featx.runtime.progress

real = featx.runtime.progress.progress_bar


@contextmanager
def interrupting_bar(*args, **kwargs):
    with real(*args, **kwargs) as advance:
        def interrupt(n=1):
            advance(n)
            os.kill(os.getpid(), signal.SIGINT)
        yield interrupt


featx.runtime.progress.progress_bar = interrupting_bar
'''

SIGINT_RUNS = {  # command -> (its arguments, the message)
    "extract": (["extract", "{data}", "-b", "tiny_cnn", "--weights", "none", "--workers", "0",
                 "--batch-size", "2", "--out", "{tmp}/stores"], "finished batches are saved, re-run the same "
                "command to resume"),
    "train-head": (["train-head", "{store}", "--out", "{tmp}/heads"], "no head was saved"),
    "finetune": (["finetune", "{data}", "--head", "{head}", "--workers", "0", "--val-frac", "0.25",
                  "--test-frac", "0.25", "--out", "{tmp}/ft"], "finished epochs are saved, re-run the same "
                 "command to resume"),
}


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """A class tree, its tiny_cnn store and a linear head on it."""
    from featx.data import DatasetOptions, open_dataset
    from featx.extraction import ExtractConfig, extract
    from featx.probes.sweep import HeadConfig
    from featx.probes.train import train_head

    root = tmp_path_factory.mktemp("tiny")
    data = make_class_tree(root / "data", per_class=8)
    ds = open_dataset(data, DatasetOptions(val_frac=0.25, test_frac=0.25))
    store = extract(ds, "tiny_cnn", root / "stores", ExtractConfig(weights="none", workers=0),
                    show_progress=False).store
    head = train_head(store, "linear", HeadConfig(epochs=2), out=root / "heads" / "lin", show_progress=False)
    return {"data": data, "store": store, "head": head.path}


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(SIGINT_RUNS))
def test_sigint_prints_the_resume_message_and_exits_130(tiny_world, tmp_path, command):
    import signal

    from tests.tiny_backbone import subprocess_env

    (tmp_path / "interrupt_at_first_step.py").write_text(INTERRUPT_AT_FIRST_STEP)
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    args, message = SIGINT_RUNS[command]
    args = [a.format(tmp=tmp_path, **tiny_world) for a in args]
    code = "import sys, interrupt_at_first_step; from featx.cli import main; sys.argv[0] = 'featx'; main()"
    # A suite started in the background (`make test &`) inherits SIGINT ignored, and Python then
    # never raises KeyboardInterrupt: give the child the default, as a terminal would.
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=300, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.returncode == 130, f"featx {command}: {done.returncode}\n{done.stderr[-3000:]}"
    assert f"interrupted; {message}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout, done.stderr


def test_options_a_head_kind_does_not_use_are_said_to_be_ignored(blob_store, tmp_path):
    result = _run("train-head", blob_store, "--kind", "knn", "--hidden", "64", "--lr", "0.1",
                  "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "warning: --hidden does not apply to a knn head; ignored" in result.stderr
    assert "warning: --lr does not apply to a knn head; ignored" in result.stderr
    linear = _run("train-head", blob_store, "--kind", "linear", "--dropout", "0.2", "--epochs", "2",
                  "--out", tmp_path)
    assert "--dropout does not apply to a linear head" in linear.stderr
    assert "--epochs" not in linear.stderr


def test_training_over_an_existing_head_says_it_replaced_it(blob_store, tmp_path):
    first = _run("train-head", blob_store, "--kind", "logreg", "--out", tmp_path)
    assert first.exit_code == 0 and "replaced" not in first.output
    again = _run("train-head", blob_store, "--kind", "logreg", "--out", tmp_path)
    assert again.exit_code == 0 and "note: replaced the head that was at" in again.stdout


def test_head_config_use_views_keeps_its_old_name_views():
    """HeadConfig's bool is `use_views` (ExtractConfig.views counts views); `views=` still works."""
    from featx.config import with_options
    from featx.errors import ConfigError
    from featx.probes.sweep import HeadConfig

    old = HeadConfig(views=False)
    assert old == HeadConfig(use_views=False) and old.views is False
    assert with_options(HeadConfig(), {"views": False}) == old
    with pytest.raises(ConfigError, match="views is the old name of use_views; give only use_views"):
        HeadConfig(views=False, use_views=True)
