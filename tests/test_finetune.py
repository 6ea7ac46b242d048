"""featx.finetuning (whole network): warm start from a head, resumable epochs, outputs usable by
extract/predict."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from featx.backbones import create_backbone
from featx.data import DatasetOptions, open_dataset
from featx.errors import ConfigError, FeatxError
from featx.extraction import ExtractConfig, extract
from featx.finetuning import (FinetuneConfig, HeadModule, Network, find_lr, finetune, layer_groups,
                              network_range_test)
from featx.finetuning.checkpoint import checkpoint_paths, load_checkpoint, save_checkpoint
from featx.finetuning.data import cpu_share
from featx.finetuning.loop import make_optimizer
from featx.finetuning.model import head_columns
from featx.heads.io import WARM_START
from featx.finetuning.whole import WholeNetwork
from featx.heads.io import Head, save_head
from featx.probes.sweep import HeadConfig
from featx.heads.predict import predict
from featx.training.schedules import schedule_factor
from featx.store import FeatureStore
from featx.probes.train import train_head
from featx.data.transforms import load_recipe
from tests.conftest import make_class_tree
from tests.tiny_backbone import subprocess_env

OPTIONS = DatasetOptions(val_frac=0.2, test_frac=0.2)
# The machinery does not depend on the architecture: the tiny registered backbone trains in
# milliseconds where resnet18 took most of this file's minute (subprocesses find it through
# subprocess_env).
BACKBONE = "tiny_cnn"
FAST = dict(epochs=3, batch_size=8, workers=0, patience=None)


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """A tiny image tree, its tiny_cnn (random init, 32 px) store, and a linear head on it."""
    tmp = tmp_path_factory.mktemp("ft")
    root = make_class_tree(tmp / "data", classes=("a", "b", "c"), per_class=10, seed=1)
    ds = open_dataset(root, OPTIONS)
    store = extract(ds, BACKBONE, tmp / "stores", ExtractConfig(weights="none", input_size=32,
                    workers=0, dtype="float32"), show_progress=False).store
    head = train_head(store, "linear", HeadConfig(epochs=5), out=tmp / "heads" / "lin",
                      show_progress=False)
    return tmp, root, ds, store, head.path


def test_the_warm_start_network_is_the_trained_head(probe, tmp_path):
    """Exactly the head on its training features. A head saved before train-head scaled constant
    features (std 1e-6 on a feature constant in training, a weight on it) starts with a zero weight
    and a typical std there: any change of that feature would otherwise explode."""
    _, _, _, store, head_path = probe
    with FeatureStore(store) as st:
        x, _ = st.features("train")
    cross_validated = Head.load(head_path)
    # A head selected on val (no train-only refit beside it): the warm start is the head itself.
    meta = {k: v for k, v in cross_validated.meta.items() if k != "format"}
    head = Head.load(save_head(tmp_path / "plain", {k: v for k, v in cross_validated.tensors.items()
                                                    if not k.startswith(WARM_START)}, meta))
    dead = int(np.argmin(x.std(0)))  # a unit held constant over training, as a dead ReLU is
    x = x.copy()
    x[:, dead] = head.tensors["norm.mean"][dead]
    tensors = dict(head.tensors)
    tensors["norm.std"] = tensors["norm.std"].copy()
    tensors["norm.std"][dead] = 1e-6
    tensors["layers.0.weight"] = tensors["layers.0.weight"].copy()
    tensors["layers.0.weight"][dead] = 12.0
    legacy = Head.load(save_head(tmp_path / "legacy", tensors, {k: v for k, v in head.meta.items()
                                                                   if k != "format"}))
    for saved in (head, legacy):
        module = HeadModule(saved).eval()
        with torch.no_grad():
            probs = torch.softmax(module(torch.from_numpy(x)), 1).numpy()
        np.testing.assert_allclose(probs, saved.scores(x), rtol=1e-4, atol=1e-5)
    stds = legacy.tensors["norm.std"]  # the legacy head's 1e-6 is raised to a typical std
    assert float(module.std[dead]) == pytest.approx(float(np.median(stds[stds > 0])))
    assert (module.layers[0].weight[:, dead] == 0).all()


def warm_start_scores(head: Head, x: np.ndarray) -> np.ndarray:
    """What a fine-tune starts from: a k-fold head's train-only refit (else the head itself)."""
    from featx.heads.scoring import Normalizer, linear_scores

    prefix = head.warm_start_prefix
    warm = {k[len(prefix):]: v for k, v in head.tensors.items() if k.startswith(prefix)}
    return linear_scores(warm, Normalizer("standard", warm["norm.mean"], warm["norm.std"])(x),
                         temperature=head.meta.temperature)


def test_a_cross_validated_head_warm_starts_from_its_train_only_refit(probe):
    """train-head's k-fold path refits the chosen setting on train+val (the head) and on train
    only (kept beside it): the fine-tune starts from the latter, so its val split, epoch 0
    included, scores a network that never saw those images."""
    _, _, _, store, head_path = probe
    head = Head.load(head_path)
    assert head.meta["selection"]["method"] == "cv" and head.warm_start_prefix == WARM_START
    with FeatureStore(store) as st:
        x, _ = st.features("val")
    module = HeadModule(head).eval()
    with torch.no_grad():
        probs = torch.softmax(module(torch.from_numpy(x)), 1).numpy()
    np.testing.assert_allclose(probs, warm_start_scores(head, x), rtol=1e-4, atol=1e-5)
    assert not np.allclose(head.tensors[f"{WARM_START}layers.0.weight"], head.tensors["layers.0.weight"])


def test_finetune_outputs_work_with_extract_predict_and_report(probe, tmp_path, monkeypatch):
    from tests.test_finetune_top import keep_the_last_epoch

    tmp, root, ds, _, head_path = probe
    keep_the_last_epoch(monkeypatch, WholeNetwork)  # a tuned backbone, not the warm start's
    result = finetune(ds, head_path, tmp_path / "run", FinetuneConfig(**FAST), show_progress=False)
    assert result.epochs_run == 3 and result.best_epoch == 3 and result.test is not None
    meta = json.loads(result.head.with_suffix(".json").read_text())
    assert meta["kind"] == "finetune" and [c["epoch"] for c in meta["curve"]] == [0, 1, 2, 3]
    assert meta["aug"] == load_recipe("flips").to_dict()  # the ops trained with, not only a name
    assert meta["warm_start"].endswith("lin.safetensors")
    # The backbone file is a normal --weights file, and its features are the network's.
    again = extract(ds, BACKBONE, tmp_path / "stores", ExtractConfig(weights=str(result.weights),
                    input_size=32, workers=0, dtype="float32", engine="torch"), show_progress=False)
    assert "-w" in Path(again.store).name  # never mixed up with the default weights' store
    best = load_file(str(tmp_path / "run.best.safetensors"))
    # The network's backbone (wrapped when the head also reads pooled block maps: extract --pool).
    tuned = {k.split(".", 2)[2] if k.startswith("backbone.model.") else k[len("backbone."):]: v
             for k, v in best.items() if k.startswith("backbone.")}
    backbone = create_backbone(BACKBONE, str(result.weights), input_size=32)
    for key, value in backbone.model.state_dict().items():
        torch.testing.assert_close(value, tuned[key])
    found = predict(result.head, [root / "a"])
    assert len(found.paths) == 10
    assert_exports_like_predict(result.head, sorted((root / "a").iterdir()), found.scores, tmp_path)
    from featx.report import load_results

    assert any(m["kind"] == "finetune" for m in load_results(tmp_path))


def assert_exports_like_predict(head_path: Path, files: list[Path], scores: np.ndarray, tmp: Path) -> None:
    """The tuned network exports as one ONNX file that gives `featx predict`'s probabilities on
    Pillow's pixels (featx.deploy.images, the client's path)."""
    from featx.deploy import export_model
    from featx.deploy.images import input_batch
    from featx.deploy.model_file import ModelFile

    model = ModelFile.open(export_model(head_path, tmp / "tuned.onnx").path)
    got = model(input_batch([f.read_bytes() for f in files], model.spec))
    np.testing.assert_allclose(got, scores, atol=1e-5)


def test_discriminative_rates_and_schedule():
    net = create_backbone(BACKBONE, "none", input_size=32).model
    groups = layer_groups(net, 3)
    assert sum(len(g) for g in groups) == len(list(net.parameters()))
    first = {id(p) for p in groups[0]}
    assert id(next(net.parameters())) in first  # the bottom layer is in the lowest-rate group
    assert FinetuneConfig().schedule == "warmup-cosine"
    assert schedule_factor("warmup-cosine", 0, 100) == pytest.approx(0.04)
    assert schedule_factor("warmup-cosine", 10, 100) == pytest.approx(1.0)
    assert schedule_factor("cosine", 100, 100) == pytest.approx(0.0, abs=1e-12)
    assert schedule_factor("onecycle", 0, 100) == pytest.approx(1 / 25)  # one name, one shape: the heads'


IDENTITY = {"head_sha256": "ab" * 32, "warm_start": "heads/lin.safetensors",
            "data": {"where": "data", "fingerprint": "cd" * 32}}


def test_a_checkpoint_of_an_older_format_is_refused_in_one_line(tmp_path):
    """Formats 1 and 2 recorded the settings but not the warm-start head nor the data: such a
    checkpoint cannot be told apart from another run's, so it is not resumed (issue 17, 1)."""
    net = Network(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    config = FinetuneConfig(epochs=2)
    opt = make_optimizer(net, config)
    state = {"epoch": 1, "best_loss": 0.5, "best_epoch": 1, "since_best": 0, "curve": []}
    save_checkpoint(tmp_path / "run", net, opt, state, config, IDENTITY)
    assert load_checkpoint(tmp_path / "run", net, opt, config, IDENTITY)["epoch"] == 1
    record = checkpoint_paths(tmp_path / "run")[1]
    meta = json.loads(record.read_text())
    for old in ("featx-finetune-checkpoint/1", "featx-finetune-checkpoint/2"):
        meta.update(format=old)
        meta.pop("identity", None)
        record.write_text(json.dumps(meta))
        with pytest.raises(FeatxError, match=r"run\.checkpoint\.json: .*older featx.*or delete run"):
            load_checkpoint(tmp_path / "run", net, opt, config, IDENTITY)


def test_a_checkpoint_names_what_differs(tmp_path):
    net = Network(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    config = FinetuneConfig(epochs=2)
    opt = make_optimizer(net, config)
    state = {"epoch": 1, "best_loss": 0.5, "best_epoch": 1, "since_best": 0, "curve": []}
    save_checkpoint(tmp_path / "run", net, opt, state, config, IDENTITY)
    other_head = {**IDENTITY, "head_sha256": "ef" * 32}
    with pytest.raises(FeatxError, match=r"another warm-start head .*another --out, or delete"):
        load_checkpoint(tmp_path / "run", net, opt, config, other_head)
    other_data = {**IDENTITY, "data": {"where": "data", "fingerprint": "01" * 32}}
    with pytest.raises(FeatxError, match=r"other data .*another --out, or delete"):
        load_checkpoint(tmp_path / "run", net, opt, config, other_data)
    with pytest.raises(FeatxError, match=r"other settings \(schedule\)"):
        load_checkpoint(tmp_path / "run", net, opt, FinetuneConfig(epochs=2, schedule="onecycle"), IDENTITY)


def test_a_finished_run_is_not_resumed_with_another_head_or_data(probe, tmp_path):
    """Issue 17, 1: `finetune D --head H2 --out ft/` after `--head H1` (same file name, another
    folder), or after other data, printed "resumed after epoch N" and kept the old weights."""
    tmp, root, ds, store, head_path = probe
    config = FinetuneConfig(**{**FAST, "epochs": 1})
    out = tmp_path / "ft" / "lin"
    finetune(ds, head_path, out, config, show_progress=False)
    other = train_head(store, "linear", HeadConfig(epochs=2, seed=3), out=tmp_path / "other" / "lin",
                       show_progress=False)
    with pytest.raises(FeatxError, match=r"another warm-start head"):
        finetune(ds, other.path, out, config, show_progress=False)
    more = open_dataset(make_class_tree(tmp_path / "data2", classes=("a", "b", "c"), per_class=10, seed=7),
                        OPTIONS)
    with pytest.raises(FeatxError, match=r"other data"):
        finetune(more, head_path, out, config, show_progress=False)
    assert finetune(ds, head_path, out, config, show_progress=False).resumed_from == 1


def no_epoch_beats_the_warm_start(monkeypatch) -> None:
    """Every epoch ends worse on val than the warm start: its head calls every image class 0."""
    train_epoch = WholeNetwork.train_epoch

    def worse(self, epoch, opt, schedule):
        loss = train_epoch(self, epoch, opt, schedule)
        with torch.no_grad():
            self.net.head.layers[-1].bias[0] += 20.0  # a far higher val loss
        return loss

    monkeypatch.setattr(WholeNetwork, "train_epoch", worse)


def test_a_finetune_no_epoch_of_which_beats_the_warm_start_returns_the_warm_start(probe, tmp_path,
                                                                                monkeypatch):
    """Issue 21.4: the warm start is epoch 0, validated before any training; when every epoch is
    worse on val, the run ends with the warm start's weights and metrics (it used to keep the
    last epoch: 80.8% -> 76.8% test on a small clothing set)."""
    _, _, ds, store, head_path = probe
    no_epoch_beats_the_warm_start(monkeypatch)
    result = finetune(ds, head_path, tmp_path / "run", FinetuneConfig(**{**FAST, "epochs": 2}),
                      show_progress=False)
    start = result.curve[0]
    assert result.kept_warm_start and result.best_epoch == 0 and result.epochs_run == 2
    assert start["epoch"] == 0 and start["train_loss"] is None
    assert all(c["val_loss"] > start["val_loss"] for c in result.curve[1:])
    assert result.val.top1 == pytest.approx(start["val_top1"])
    # The weights are the warm start's: the original backbone, and a head scoring as the probe.
    original = create_backbone(BACKBONE, "none", 0, 32).model.state_dict()
    tuned = load_file(str(result.weights))
    assert all(torch.equal(tuned[k], v) for k, v in original.items())
    with FeatureStore(store) as st:
        x, y = st.features("val")
    np.testing.assert_allclose(Head.load(result.head).scores(x), warm_start_scores(Head.load(head_path), x),
                               rtol=1e-4, atol=1e-5)
    meta = json.loads(result.head.with_suffix(".json").read_text())
    assert meta["params"]["best_epoch"] == 0 and meta["metrics"]["val"]["top1"] == result.val.top1


def test_a_checkpoint_of_a_recipe_that_changed_is_not_resumed(tmp_path):
    """`flips` and `mild` stopped turning images by 90 degrees (issue 21): a checkpoint that
    recorded only the name cannot be resumed as the same run; one that recorded the ops must match."""
    net = Network(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    config = FinetuneConfig(epochs=2)
    opt = make_optimizer(net, config)
    state = {"epoch": 1, "best_loss": 0.5, "best_epoch": 1, "since_best": 0, "curve": []}
    flips = {**IDENTITY, "aug": load_recipe("flips").to_dict()}
    save_checkpoint(tmp_path / "run", net, opt, state, config, IDENTITY)  # no ops recorded
    with pytest.raises(FeatxError, match=r"recipe 'flips' from before it stopped turning"):
        load_checkpoint(tmp_path / "run", net, opt, config, flips)
    save_checkpoint(tmp_path / "run", net, opt, state, config, {**IDENTITY, "aug": load_recipe("dihedral").to_dict()})
    with pytest.raises(FeatxError, match=r"other ops under the recipe name 'flips'"):
        load_checkpoint(tmp_path / "run", net, opt, config, flips)
    save_checkpoint(tmp_path / "run", net, opt, state, config, flips)
    assert load_checkpoint(tmp_path / "run", net, opt, config, flips)["epoch"] == 1


def test_cpu_training_leaves_the_loader_workers_their_cores(monkeypatch):
    """Issue 21: torch's threads plus the decoding workers oversubscribed 2 cores; torch now takes
    the cores the workers leave (at least one) while training, and gets its count back after."""
    import featx.finetuning.data

    monkeypatch.setattr(featx.finetuning.data, "usable_cores", lambda: 4)
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        with cpu_share(torch.device("cpu"), workers=1):
            assert torch.get_num_threads() == 3
        with cpu_share(torch.device("cpu"), workers=6):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 4
        torch.set_num_threads(2)  # OMP_NUM_THREADS=2: never more than the user allowed
        with cpu_share(torch.device("cpu"), workers=0):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


class Diverging:
    """A job whose weights become NaN in epoch `nan_at` (a rate far too high)."""

    def __init__(self, nan_at: int):
        self.net = Network(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
        self.nan_at = nan_at
        self.identity = IDENTITY

    def train_epoch(self, epoch, opt, schedule) -> float:
        with torch.no_grad():
            self.net.head.weight.add_(float("nan") if epoch == self.nan_at else 0.1)
        return float("nan") if epoch == self.nan_at else 1.0

    def validate(self) -> tuple[float, float]:
        return float(self.net.head.weight.detach().sum().abs() + 1), 0.5


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    """Issue 17, 8: `--lr inf` trained NaN weights and saved them. Now the run stops in one line;
    the checkpoint of the last good epoch stays (and resumes), nothing NaN is written."""
    import time

    from featx.finetuning.checkpoint import best_path
    from featx.finetuning.loop import Schedule, fit

    config = FinetuneConfig(epochs=3)
    job = Diverging(nan_at=1)
    opt = make_optimizer(job.net, config)
    with pytest.raises(FeatxError, match=r"epoch 2: .*not finite.*lower --lr"):
        fit(job, opt, Schedule(config, 1), config, tmp_path / "run", "t", time.perf_counter(), False)
    meta = json.loads(checkpoint_paths(tmp_path / "run")[1].read_text())
    assert meta["state"]["epoch"] == 1
    for path in (checkpoint_paths(tmp_path / "run")[0], best_path(tmp_path / "run")):
        assert all(torch.isfinite(v).all() for v in load_file(str(path)).values())


def test_an_unwritable_out_fails_before_the_first_epoch(probe, tmp_path, monkeypatch):
    import featx.finetuning.whole

    _, _, ds, _, head_path = probe

    def no_build(*args, **kwargs):
        raise AssertionError("built the network before checking the output")

    monkeypatch.setattr(featx.finetuning.whole.WholeNetwork, "build", no_build)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FeatxError, match=r"file/sub: .*file is a file, not a folder"):
        finetune(ds, head_path, tmp_path / "file" / "sub" / "run", FinetuneConfig(**FAST), show_progress=False)


@pytest.mark.parametrize("fields,name", [
    ({"batch_size": 2.7}, "batch_size"), ({"batch_size": 0}, "batch_size"), ({"epochs": 0}, "epochs"),
    ({"epochs": True}, "epochs"), ({"accumulate": 0}, "accumulate"), ({"groups": 0}, "groups"),
    ({"lr_ratio": 0.0}, "lr_ratio"), ({"lr": -1.0}, "lr"), ({"lr": float("inf")}, "lr"), ({"lr": "fast"}, "lr"),
    ({"head_epochs": -1}, "head_epochs"), ({"head_epochs": 8}, "head_epochs"), ({"patience": -1}, "patience"),
    ({"patience": 0}, "patience"), ({"label_smoothing": 2.0}, "label_smoothing"),
    ({"weight_decay": -1.0}, "weight_decay"), ({"weight_decay": float("nan")}, "weight_decay"),
    ({"workers": -1}, "workers"), ({"seed": 1.5}, "seed"), ({"train_bn": "yes"}, "train_bn"),
    ({"amp": "fp8"}, "amp"), ({"aug": "unknown-recipe"}, "aug"), ({"from_block": ""}, "from_block"),
])
def test_finetune_config_values_are_checked_by_type_and_range(fields, name):
    with pytest.raises(ConfigError, match=rf"^{name}\b.* must be|^{name} must be|^{name}: "):
        FinetuneConfig(**fields)


def test_lr_finder_through_the_network_is_seeded_and_leaves_it_untouched(probe):
    _, _, ds, _, head_path = probe
    config = FinetuneConfig(**FAST)
    first = find_lr(ds, head_path, config, start=1e-5, end=10.0, steps=40, show_progress=False)
    again = find_lr(ds, head_path, config, start=1e-5, end=10.0, steps=40, show_progress=False)
    assert first == again  # same seed, same batches, same curve
    assert first.diverged and first.rule == "divergence" and len(first.lrs) < 40
    assert first.suggestion == pytest.approx(first.lrs[-1] / 10)
    head = Head.load(head_path)
    net = Network(head_columns(create_backbone(BACKBONE, "none", input_size=32).model, head), HeadModule(head))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    batches = iter(lambda: torch.nn.functional.cross_entropy(net(torch.randn(4, 3, 32, 32)),
                                                             torch.tensor([0, 1, 2, 0])), None)
    network_range_test(net, config, batches, 1e-4, 1.0, 10, "t", show_progress=False)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_mismatched_head_and_knn_head_are_refused(probe, tmp_path):
    tmp, root, ds, store, head_path = probe
    other = open_dataset(root, DatasetOptions(val_frac=0.2, test_frac=0.2, class_map=None))
    other.classes = ["x", "y", "z"]
    with pytest.raises(FeatxError, match="do not match the data"):
        finetune(other, head_path, tmp_path / "r", FinetuneConfig(**FAST), show_progress=False)
    knn = train_head(store, "knn", out=tmp_path / "knn", show_progress=False)
    with pytest.raises(FeatxError, match="k-NN head has no weights"):
        finetune(ds, knn.path, tmp_path / "r", FinetuneConfig(**FAST), show_progress=False)


def _command(root: Path, head: Path, out: Path, epochs: int = 3) -> list[str]:
    """`featx finetune` into the folder `out` (its files are named after the head: `_file`)."""
    return [sys.executable, "-m", "featx", "finetune", str(root), "--head", str(head), "--out",
            str(out), "--epochs", str(epochs), "--batch-size", "4", "--workers", "0",
            "--val-frac", "0.2", "--test-frac", "0.2", "--aug", "flowers", "--lr", "auto"]


def _in_process(command: list[str], env: dict | None = None):
    """The same `featx ...` command run in this process (torch on one thread, as the subprocesses
    are, so bit for bit the same): a reference costs no interpreter start."""
    from typer.testing import CliRunner

    from featx.cli import app

    return CliRunner().invoke(app, command[3:], env=env)  # after `python -m featx`


def _file(out: Path, name: str) -> Path:
    return out / f"lin.{name}"  # the probe's head is heads/lin


@pytest.mark.slow
def test_killed_finetune_resumes_to_the_same_weights(probe, tmp_path):
    """With --lr auto: the rate found before the kill is reused, and found again the same."""
    _, root, _, _, head_path = probe
    env = subprocess_env({**os.environ, "OMP_NUM_THREADS": "1"})
    proc = subprocess.Popen(_command(root, head_path, tmp_path / "killed"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = _file(tmp_path / "killed", "checkpoint.json")
    deadline, killed = time.time() + 180, False
    while time.time() < deadline and proc.poll() is None:
        if checkpoint.is_file():
            try:
                epoch = json.loads(checkpoint.read_text())["state"]["epoch"]
            except ValueError:
                epoch = 0
            if epoch >= 1:  # one epoch saved, two to go
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert killed and proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    resumed = subprocess.run(_command(root, head_path, tmp_path / "killed"), env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed after epoch" in resumed.stdout and "(found before)" in resumed.stdout
    clean = _in_process(_command(root, head_path, tmp_path / "clean"))
    assert clean.exit_code == 0, clean.output[-2000:]
    a = load_file(str(_file(tmp_path / "killed", "backbone.safetensors")))
    b = load_file(str(_file(tmp_path / "clean", "backbone.safetensors")))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert json.loads(_file(tmp_path / "killed", "head.json").read_text())["config"]["lr"] == \
        json.loads(_file(tmp_path / "clean", "head.json").read_text())["config"]["lr"]
    changed = _in_process(_command(root, head_path, tmp_path / "killed", epochs=4))
    assert changed.exit_code == 1 and "checkpoint with other settings (epochs)" in changed.stderr


@pytest.mark.slow
def test_ddp_with_two_processes_matches_one(probe, tmp_path):
    _, root, _, _, head_path = probe
    env = subprocess_env({**os.environ, "OMP_NUM_THREADS": "1"})
    args = ["-m", "featx", "finetune", str(root), "--head", str(head_path), "--epochs", "2",
            "--batch-size", "8", "--workers", "0", "--val-frac", "0.2", "--test-frac", "0.2"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", str(29600 + os.getpid() % 1000), *args,
                          "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True,
                         timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("fine-tuned") == 1  # rank 0 speaks for both
    one = _in_process([sys.executable, *args, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output[-3000:]
    for part in ("backbone", "head"):
        a = load_file(str(_file(tmp_path / "two", f"{part}.safetensors")))
        b = load_file(str(_file(tmp_path / "one", f"{part}.safetensors")))
        for key in b:  # same global batches; only the gradient sums' order differs
            torch.testing.assert_close(a[key].float(), b[key].float(), rtol=1e-3, atol=1e-4)
    # Checked before the process group is joined: rank 0 of two, as torchrun would start it.
    odd = _in_process([sys.executable, *args[:-6], "--batch-size", "7", "--workers", "0",
                       "--out", str(tmp_path / "odd")],
                      env={"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"})
    assert odd.exit_code != 0 and "must be a multiple of the 2 processes" in odd.stderr


def test_device_decode_path_gives_the_workers_views(tmp_path, monkeypatch):
    """The nvjpeg path's logic, run with torchvision's CPU JPEG decoder: JPEG files reach the main
    process undecoded and get the same (seeded) views there; a broken file drops out with its
    label; other formats still come decoded from the workers."""
    import featx.finetuning.data
    from featx.finetuning.data import ImageSamples, collate, views_on_device
    from featx.data.transforms import load_recipe

    root = make_class_tree(tmp_path / "d", classes=("a", "b"), per_class=6, seed=5, ext=".jpg")
    make_class_tree(tmp_path / "d", classes=("a", "b"), per_class=1, seed=8, ext=".png")
    broken = root / "b" / "b_02.jpg"
    broken.write_bytes(broken.read_bytes()[:200])
    ds = open_dataset(root, DatasetOptions(val_frac=0.0, test_frac=0.0))
    pre = create_backbone(BACKBONE, "none", input_size=32).preprocess
    for recipe in (None, load_recipe("flips")):
        workers = ImageSamples(ds, "train", pre, recipe, seed=3)
        device = ImageSamples(ds, "train", pre, recipe, seed=3, device_decode=True)
        workers.epoch = device.epoch = 2
        order = list(range(len(workers)))
        x_cpu, y_cpu, no_jpegs = collate([workers[i] for i in order])
        x_dev, y_dev = views_on_device(collate([device[i] for i in order]), device, torch.device("cpu"))
        assert not no_jpegs and len(x_cpu) == len(x_dev) == 13  # 14 files, 1 broken
        assert torch.equal(y_cpu, y_dev)  # the same order (the gallery's paths depend on it)
        assert (x_cpu.float() - x_dev.float()).abs().mean() < 1.0  # libjpeg vs Pillow rounding
    monkeypatch.setattr(featx.finetuning.data, "use_device_decode", lambda device, decode: True)
    head = train_head(extract(ds, BACKBONE, tmp_path / "s", ExtractConfig(
        weights="none", input_size=32, workers=0), show_progress=False).store, "linear",
        HeadConfig(epochs=2, lrs=(0.1,), weight_decays=(0.0,)), out=tmp_path / "h", show_progress=False).path
    result = finetune(ds, head, tmp_path / "ft", FinetuneConfig(**{**FAST, "epochs": 1}), show_progress=False)
    assert result.epochs_run == 1 and np.isfinite(result.curve[1]["train_loss"])


def test_from_block_given_as_an_option_takes_the_top_mode_defaults():
    """finetune(..., from_block=...) must train as the CLI's --from-block does (12 epochs, ratio 1)."""
    from featx.config import with_options
    from featx.finetuning.config import MODE_DEFAULTS

    top = with_options(FinetuneConfig(), {"from_block": "block14"})
    assert (top.epochs, top.lr, top.lr_ratio) == tuple(MODE_DEFAULTS["top"][k] for k in ("epochs", "lr", "lr_ratio"))
    assert with_options(FinetuneConfig(epochs=3), {"from_block": "block14"}).epochs == 3
