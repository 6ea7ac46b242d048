"""The `featx` command line: thin, one-line errors, config files."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from featx.cli import app
from tests.conftest import make_class_tree, write_image

runner = CliRunner()


def _run(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=True)
    return result


def _ok(*args: str) -> str:
    result = _run(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_scan_split_folders_shows_counts_per_split(split_tree):
    output = _ok("scan", str(split_tree))
    assert "layout: split-folders" in output and "12 images" in output
    assert "40x32 (12)" in output and "all images decode" in output


def test_scan_class_folders_with_fractions(class_tree):
    output = _ok("scan", str(class_tree), "--val-frac", "0.2", "--test-frac", "0.1")
    assert "layout: class-folders" in output


def test_scan_manifest_and_unlabeled_folder(tmp_path):
    for i in range(3):
        write_image(tmp_path / "imgs" / f"{i}.png", i)
    (tmp_path / "m.csv").write_text("path,label\nimgs/0.png,a\nimgs/1.png,b\nimgs/2.png,a\n")
    assert "layout: manifest" in _ok("scan", str(tmp_path / "m.csv"))
    assert "layout: unlabeled-folder" in _ok("scan", str(tmp_path / "imgs"))


def test_scan_lists_every_unreadable_file(tmp_path):
    root = make_class_tree(tmp_path / "d", per_class=2)
    (root / "ants" / "zero.jpg").write_bytes(b"")
    (root / "bees" / "text.png").write_text("hello")
    output = _ok("scan", str(root))
    assert "2 unreadable file(s)" in output
    assert "ants/zero.jpg: empty file (0 bytes)" in output
    assert "bees/text.png: not an image file Pillow can identify" in output


def test_backbones_lists_families_and_filters():
    output = _ok("backbones", "efficientnet_lite")
    assert "efficientnet_lite0" in output and "1280" in output and "yes" in output
    assert "resnet50" in _ok("backbones", "resnet5*", "--family", "torchvision")


def test_errors_are_one_line_with_exit_1(tmp_path):
    import subprocess
    import sys

    bad = subprocess.run([sys.executable, "-m", "featx.cli", "extract", str(tmp_path / "nope")],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("error:") and "no such file or folder" in bad.stderr
    assert "Traceback" not in bad.stderr
    typo = subprocess.run([sys.executable, "-m", "featx.cli", "extract", "elpv", "-b", "resnt50"],
                          capture_output=True, text=True)
    assert typo.returncode == 1 and "did you mean resnet50" in typo.stderr


def test_extract_from_config_file_then_info(tmp_path):
    root = make_class_tree(tmp_path / "d", per_class=4)
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {root}\nbackbone: [resnet18]\nweights: none\ninput_size: 32\n"
                      f"views: 1\naug: flips\nout: {tmp_path / 'stores'}\nworkers: 0\n")
    output = _ok("extract", "--config", str(config), "--seed", "3")
    assert "created" in output and "0 failed" in output
    (store,) = (tmp_path / "stores").glob("*.h5")
    assert store.name == "d_resnet18-init3_32px_flipsx1.h5"
    info = _ok("info", str(store))
    assert "complete" in info and "resnet18" in info and "(8, 512)" in info
    attrs = json.loads(_ok("info", str(store), "--json"))
    assert attrs["seed"] == 3 and attrs["num_aug_views"] == 1
    assert "already complete" in _ok("extract", "--config", str(config), "--seed", "3")


def test_config_file_typos_are_refused(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('data = "elpv"\nbackbones = ["resnet18"]\n')
    result = _run("extract", "--config", str(config))
    assert result.exit_code != 0
    assert "unknown option(s) backbones" in str(result.exception)


def test_train_head_lr_find_and_predict_commands(tmp_path):
    from tests.conftest import make_feature_store

    store = make_feature_store(tmp_path / "blobs.h5")
    output = _ok("train-head", str(store), "--epochs", "5", "--batch-size", "16",
                 "--out", str(tmp_path / "h"))
    assert "searched 32 candidates" in output and "per class (test)" in output
    assert (tmp_path / "h.safetensors").is_file() and (tmp_path / "h.json").is_file()
    output = _ok("train-head", str(store), "--head", "mlp", "--hidden", "8,8", "--lr", "0.01",
                 "--epochs", "3", "--out", str(tmp_path / "m"))
    assert "mlp head trained" in output
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["config"]["hidden"] == [8, 8] and meta["config"]["optimizer"] == "adamw"
    output = _ok("lr-find", str(store), "--steps", "30", "--out", str(tmp_path / "lrf"))
    assert "suggested learning rate" in output and (tmp_path / "lrf.png").stat().st_size > 0
    output = _ok("predict", str(store), "--head", str(tmp_path / "h"), "--out", str(tmp_path / "p.csv"))
    assert "120 predictions written" in output


def test_train_head_config_file_picks_the_head(tmp_path):
    from tests.conftest import make_feature_store

    store = make_feature_store(tmp_path / "blobs.h5")
    config = tmp_path / "head.yaml"
    config.write_text("head: mlp\nhidden: [8]\nepochs: 2\nbatch_size: 16\n")
    output = _ok("train-head", str(store), "--config", str(config), "--out", str(tmp_path / "m"))
    assert "mlp head trained" in output
    assert json.loads((tmp_path / "m.json").read_text())["config"]["hidden"] == [8]


def test_extract_cut_then_finetune_from_block(tmp_path):
    root = make_class_tree(tmp_path / "data", classes=("a", "b"), per_class=8, seed=4)
    _ok("extract", str(root), "-b", "resnet18", "--weights", "none", "--input-size", "64",
        "--views", "1", "--cut", "layer4", "--workers", "0", "--out", str(tmp_path / "stores"))
    store = next((tmp_path / "stores").glob("*_cut-layer4.h5"))
    assert "cut maps   entering layer4: clean (16, 256, 4, 4)" in _ok("info", str(store))
    _ok("train-head", str(store), "--epochs", "3", "--out", str(tmp_path / "h"))
    output = _ok("finetune", str(store), "--head", str(tmp_path / "h.safetensors"), "--from-block",
                 "layer4", "--epochs", "2", "--map-aug", "flip", "--out", str(tmp_path / "top"))
    assert "fine-tuned 2 epoch(s)" in output and (tmp_path / "top.backbone.safetensors").is_file()
    meta = json.loads((tmp_path / "top.head.json").read_text())
    assert meta["kind"] == "finetune" and meta["config"]["map_aug"] == "flip"
    found = _ok("finetune", str(store), "--head", str(tmp_path / "h.safetensors"), "--from-block",
                "layer4", "--lr-find", "--out", str(tmp_path / "auto"))
    assert "suggested learning rate" in found and not (tmp_path / "auto.head.json").exists()
    record = json.loads((tmp_path / "auto.lr-find.json").read_text())
    assert (tmp_path / "auto.lr-find.png").is_file() and (tmp_path / "auto.lr-find.csv").is_file()
    output = _ok("finetune", str(store), "--head", str(tmp_path / "h.safetensors"), "--from-block",
                 "layer4", "--lr", "auto", "--epochs", "2", "--out", str(tmp_path / "auto"))
    assert "(found before)" in output and "fine-tuned 2 epoch(s)" in output
    meta = json.loads((tmp_path / "auto.head.json").read_text())
    assert meta["config"]["lr"] == record["result"]["suggestion"]
    result = _run("finetune", str(store), "--head", str(tmp_path / "h.safetensors"), "--from-block",
                  "layer4", "--lr", "fast", "--out", str(tmp_path / "x"))
    assert "--lr must be a number or auto, got 'fast'" in str(result.exception)
    result = _run("finetune", str(store), "--head", str(tmp_path / "h.safetensors"), "--from-block",
                  "layer3", "--out", str(tmp_path / "x"))
    assert "no maps cached at 'layer3'" in str(result.exception)  # main() prints it as one line
    result = _run("finetune", str(store), "--head", str(tmp_path / "h.safetensors"), "--from-block",
                  "layer4", "--binarize", "0.5", "--out", str(tmp_path / "y"))
    assert "--binarize: with --from-block the store fixes the data" in str(result.exception)
