"""The `featx` command line: readable help with every default, one-line errors and exit codes,
config files under the command line, old spellings kept, one meaning per option name."""

from __future__ import annotations

import json
import re
import subprocess
import sys

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
    """The text `--help` must show for this parameter's default (typer's format), or None."""
    if isinstance(param.show_default, str):
        return f"({param.show_default})"
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
NO_DEFAULT = {("backbones", "cuts"), ("extract", "data"), ("finetune", "data"), ("compare", "data")}


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
    from featx.engines import ENGINES
    from featx.extraction import ExtractConfig
    from featx.extraction.config import AMP_MODES, STORE_DTYPES
    from featx.finetuning import FinetuneConfig
    from featx.finetuning.config import MAP_AUGS, SCHEDULES
    from featx.heads import HEAD_KINDS, OPTIMIZERS, HeadConfig
    from featx.heads import SCHEDULES as HEAD_SCHEDULES
    from featx.cli import options as o

    assert (o.HEAD_KINDS, o.HEAD_OPTIMIZERS, o.HEAD_SCHEDULES) == (HEAD_KINDS, OPTIMIZERS, HEAD_SCHEDULES)
    assert (o.FINETUNE_SCHEDULES, o.MAP_AUGS) == (SCHEDULES, MAP_AUGS)
    assert (o.STORE_DTYPES, o.AMP_MODES, o.ENGINES) == (STORE_DTYPES, AMP_MODES, ENGINES)
    library = {"extract": ExtractConfig(), "train-head": HeadConfig(), "finetune": FinetuneConfig(),
               "scan": DatasetOptions()}
    renamed = {"use_views": "views", "lr": "lrs", "weight_decay": "weight_decays", "kind": "head"}
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
    probe = "import sys, featx.cli; print(sorted(m for m in ('torch', 'h5py', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


# --- errors and exit codes --------------------------------------------------------------------

def test_usage_errors_exit_2_in_one_line(tmp_path, blob_store):
    assert "Invalid value for '--views'" in _usage_error("extract", "elpv", "--views", "many")
    assert "'foo' is not one of linear, mlp" in _usage_error("train-head", blob_store, "--kind", "foo")
    assert "No such option: --viewz" in _usage_error("extract", "elpv", "--viewz", "2")
    assert "Missing option '--out'" in _usage_error("merge", "a.h5")
    assert "Missing argument 'STORE'" in _usage_error("train-head")
    assert "missing DATA" in _usage_error("extract")
    line = _usage_error("finetune", "elpv", "--head", "h.safetensors", "--lr", "fast")
    assert "--lr" in line and "must be a positive number or auto, got 'fast'" in line


def test_config_errors_exit_2_naming_file_and_option(tmp_path, blob_store):
    config = tmp_path / "run.toml"
    config.write_text('data = "elpv"\nbackbones = ["resnet18"]\n')
    assert "run.toml: unknown option(s) backbones" in _usage_error("extract", "--config", config)
    config = tmp_path / "head.yaml"
    config.write_text("epochs: many\n")
    line = _usage_error("train-head", blob_store, "--config", config)
    assert "head.yaml: epochs:" in line and "integer" in line
    config.write_text("kind: forest\n")
    assert "head.yaml: kind: 'forest' is not one of" in _usage_error("train-head", blob_store, "--config", config)
    config.write_text("- a list\n")
    assert "a mapping of option names" in _usage_error("train-head", blob_store, "--config", config)


def test_featx_errors_exit_1_in_one_line_from_the_console_script(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "featx.cli", "extract", str(tmp_path / "nope")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.strip().startswith("error:") and "no such file or folder" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    typo = subprocess.run([sys.executable, "-m", "featx", "extract", "elpv", "-b", "resnt50"],
                          capture_output=True, text=True)
    assert typo.returncode == 1 and "did you mean resnet50" in typo.stderr
    usage = subprocess.run([sys.executable, "-m", "featx.cli", "train-head", "x.h5", "--kind", "tree"],
                           capture_output=True, text=True)
    assert usage.returncode == 2 and len(usage.stderr.strip().splitlines()) == 1


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
    assert "complete" in info and "resnet18" in info and "(8, 512)" in info
    attrs = json.loads(_ok("info", store, "--json"))
    assert attrs["seed"] == 3 and attrs["num_aug_views"] == 1
    assert "already complete" in _ok("extract", "--config", config, "--seed", "3")


def test_train_head_out_is_a_folder_or_a_safetensors_file(tmp_path, blob_store):
    output = _ok("train-head", blob_store, "--epochs", "5", "--batch-size", "16", "--out", tmp_path / "new")
    assert "searched 32 candidates" in output and "per class (test)" in output
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
    assert meta["config"]["weight_decays"] == [0.001] and meta["config"]["views"] is False
    assert "give only --kind" in _usage_error("train-head", blob_store, "--head", "mlp", "--kind", "linear")


def test_extract_cut_then_finetune_from_block(tmp_path):
    root = make_class_tree(tmp_path / "data", classes=("a", "b"), per_class=8, seed=4)
    _ok("extract", root, "-b", "resnet18", "--weights", "none", "--input-size", "64",
        "--views", "1", "--cut", "layer4", "--workers", "0", "--out", tmp_path / "stores")
    store = next((tmp_path / "stores").glob("*_cut-layer4.h5"))
    assert "cut maps   entering layer4: clean (16, 256, 4, 4)" in _ok("info", store)
    _ok("train-head", store, "--epochs", "3", "--out", tmp_path / "h.safetensors")
    head = tmp_path / "h.safetensors"
    output = _ok("finetune", store, "--head", head, "--from-block", "layer4", "--epochs", "2",
                 "--map-aug", "flip", "--out", tmp_path / "top")
    assert "fine-tuned 2 epoch(s)" in output and (tmp_path / "top" / "h.backbone.safetensors").is_file()
    meta = json.loads((tmp_path / "top" / "h.head.json").read_text())
    assert meta["kind"] == "finetune" and meta["config"]["map_aug"] == "flip"
    found = _ok("finetune", store, "--head", head, "--from-block", "layer4", "--lr-find", "--out", tmp_path / "auto")
    assert "suggested learning rate" in found and not (tmp_path / "auto" / "h.head.json").exists()
    record = json.loads((tmp_path / "auto" / "h.lr-find.json").read_text())
    assert (tmp_path / "auto" / "h.lr-find.png").is_file()
    output = _ok("finetune", store, "--head", head, "--from-block", "layer4", "--lr", "auto", "--epochs", "2",
                 "--out", tmp_path / "auto")
    assert "(found before)" in output and "fine-tuned 2 epoch(s)" in output
    meta = json.loads((tmp_path / "auto" / "h.head.json").read_text())
    assert meta["config"]["lr"] == record["result"]["suggestion"]
    result = _run("finetune", store, "--head", head, "--from-block", "layer3", "--out", tmp_path / "x")
    assert result.exit_code != 0 and "no maps cached at 'layer3'" in result.stderr
    line = _usage_error("finetune", store, "--head", head, "--from-block", "layer4", "--binarize", "0.5",
                        "--out", tmp_path / "y")
    assert "--binarize: with --from-block the store fixes the data" in line


def test_compare_reports_a_failed_backbone_and_goes_on(tmp_path):
    root = make_class_tree(tmp_path / "data", classes=("a", "b"), per_class=8, seed=2)
    result = _run("compare", root, "-b", "no_such_net", "-b", "resnet18", "--weights", "none",
                  "--input-size", "32", "--workers", "0", "--engine", "torch", "--out", tmp_path / "cmp",
                  "--head", "linear")  # --head KIND: the old spelling of --kind
    assert result.exit_code == 0, result.output
    assert "no_such_net: failed: unknown backbone" in result.stderr
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
