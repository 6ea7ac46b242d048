"""A fine-tuned head's temperature: fitted on the val split's logits after fine-tuning (never
test), stored as train-head stores its own (HeadMeta.temperature + the sidecar's calibration)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featx.data import DatasetOptions, open_dataset
from featx.evaluation.calibration import fit_temperature
from featx.extraction import ExtractConfig, extract
from featx.finetuning import FinetuneConfig, finetune
from featx.finetuning.whole import WholeNetwork
from featx.heads.io import Head
from featx.probes.sweep import HeadConfig
from featx.probes.train import train_head
from tests.conftest import make_class_tree
from tests.test_finetune_top import keep_the_last_epoch

FAST = dict(epochs=1, batch_size=8, workers=0, patience=None)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A tiny_cnn (random init, 32 px) linear head on a 3-class tree, fine-tuned for 1 epoch."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the one_thread fixture's setting, for a module-scoped fixture
    tmp = tmp_path_factory.mktemp("ftcal")
    root = make_class_tree(tmp / "data", classes=("a", "b", "c"), per_class=10, seed=1)
    ds = open_dataset(root, DatasetOptions(val_frac=0.2, test_frac=0.2))
    store = extract(ds, "tiny_cnn", tmp / "stores", ExtractConfig(weights="none", input_size=32, workers=0,
                    dtype="float32"), show_progress=False).store
    head = train_head(store, "linear", HeadConfig(epochs=5, lrs=(0.1,), weight_decays=(0.0,)), out=tmp / "heads" / "lin", show_progress=False)
    config = FinetuneConfig(**FAST)
    with pytest.MonkeyPatch.context() as patch:
        keep_the_last_epoch(patch, WholeNetwork)  # a tuned network, not the warm start
        result = finetune(ds, head.path, tmp / "run", config, show_progress=False)
    assert not result.kept_warm_start
    yield ds, config, result
    torch.set_num_threads(threads)


def test_a_finetuned_head_keeps_the_temperature_fitted_on_its_val_logits(tuned, one_thread):
    ds, config, result = tuned
    head = Head.load(result.head)
    record = json.loads(result.head.with_suffix(".json").read_text())["calibration"]
    # The saved network's val logits, the temperature folded back out of its last layer.
    job = WholeNetwork.build(ds, result.head, config)
    scaled, y = job.predict_logits("val")
    t = head.meta.temperature
    assert t != 1.0 and record["method"] == "temperature" and record["temperature"] == t
    assert t == pytest.approx(fit_temperature(scaled * t, y), rel=1e-4)
    assert record["fitted_on"] == f"the val split's predictions after fine-tuning ({len(y)} images)"
    _, y_test = job.predict_logits("test")
    assert len(y_test) and record["test"]["before"]["nll"] != record["test"]["after"]["nll"]
    # The metrics the sidecar and the result report are at that temperature.
    assert record["test"]["after"]["nll"] == pytest.approx(result.test.nll)
    assert record["fit_nll_after"] <= record["fit_nll_before"]


def test_a_finetune_that_keeps_the_warm_start_keeps_its_calibration(tuned, one_thread, tmp_path, monkeypatch):
    """No epoch beat the warm start: the head given back is the warm start, scoring as it did
    (its temperature is in the last layer), not re-fitted on val."""
    from tests.test_finetune import no_epoch_beats_the_warm_start

    ds, config, _ = tuned
    head_path = ds.root.parent / "heads" / "lin.safetensors"
    no_epoch_beats_the_warm_start(monkeypatch)
    result = finetune(ds, head_path, tmp_path / "run", config, show_progress=False)
    record = json.loads(result.head.with_suffix(".json").read_text())["calibration"]
    assert result.kept_warm_start and Head.load(result.head).meta.temperature == 1.0
    assert record["method"] == "warm start"
    assert f"({Head.load(head_path).meta.temperature:.3g})" in record["why"]
