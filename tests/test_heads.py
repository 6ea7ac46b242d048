"""featx.probes.sweep: batched heads, per-head optimisers, schedules, the sweep, lr-find."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featx.probes.feature_data import FeatureData
from featx.probes.sweep import (BatchedHeads, BatchedOptimizer, HeadConfig, lr_find, schedule_factor,
                         train_heads)
from featx.store import FeatureStore


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_batched_optimizer_matches_torch_optim(kind):
    heads = BatchedHeads(1, 5, 3, seed=0)
    ref = torch.nn.Linear(5, 3)
    with torch.no_grad():
        ref.weight.copy_(heads.weights[0][0].T)
        ref.bias.copy_(heads.biases[0][0])
    lr, wd = 0.05, 0.01
    groups = [{"params": [ref.weight], "weight_decay": wd}, {"params": [ref.bias], "weight_decay": 0.0}]
    torch_opt = {"sgd": lambda: torch.optim.SGD(groups, lr=lr, momentum=0.9),
                 "adam": lambda: torch.optim.Adam(groups, lr=lr),
                 "adamw": lambda: torch.optim.AdamW(groups, lr=lr)}[kind]()
    ours = BatchedOptimizer(heads, kind, torch.tensor([lr]), torch.tensor([wd]), momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        x, y = torch.randn(8, 5, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        ours.zero_grad()
        torch.nn.functional.cross_entropy(heads(x)[0], y).backward()
        ours.step()
        torch_opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(x), y).backward()
        torch_opt.step()
    torch.testing.assert_close(heads.weights[0][0].T, ref.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(heads.biases[0][0], ref.bias, rtol=1e-5, atol=1e-6)


def test_schedules():
    assert schedule_factor("step", 0, 100, epoch=6, step_size=7, gamma=0.1) == 1.0
    assert schedule_factor("step", 0, 100, epoch=7, step_size=7, gamma=0.1) == pytest.approx(0.1)
    assert schedule_factor("step", 0, 100, epoch=14, step_size=7, gamma=0.1) == pytest.approx(0.01)
    assert schedule_factor("cosine", 0, 100, 0, 7, 0.1) == 1.0
    assert schedule_factor("cosine", 100, 100, 0, 7, 0.1) == pytest.approx(0.0)
    assert schedule_factor("onecycle", 0, 100, 0, 7, 0.1) == pytest.approx(1 / 25)
    assert schedule_factor("onecycle", 30, 100, 0, 7, 0.1) == pytest.approx(1.0)
    assert schedule_factor("onecycle", 100, 100, 0, 7, 0.1) == pytest.approx(1e-4)


def _data(store_path, **kwargs):
    store = FeatureStore(store_path)
    data = FeatureData(store, **kwargs)
    return store, data


def test_sweep_trains_what_separate_runs_would(blob_store):
    store, data = _data(blob_store)
    norm = data.fit_normalizer("standard")
    base = dict(epochs=3, batch_size=16, schedule="cosine", optimizer="sgd")
    sweep = train_heads(data, norm, HeadConfig(lrs=(0.01, 0.3), weight_decays=(0.0, 0.01), **base))
    for h, (lr, wd) in enumerate(sweep.grid):
        single = train_heads(data, norm, HeadConfig(lrs=(lr,), weight_decays=(wd,), **base))
        torch.testing.assert_close(sweep.heads.weights[0][h], single.heads.weights[0][0],
                                   rtol=1e-4, atol=1e-5)
    store.close()


def test_sweep_learns_separable_data_and_is_deterministic(blob_store):
    store, data = _data(blob_store)
    norm = data.fit_normalizer("standard")
    config = HeadConfig(epochs=10, batch_size=16)
    a = train_heads(data, norm, config)
    b = train_heads(data, norm, config)
    assert len(a.grid) == 32 and a.val_top1[a.best] > 0.9
    assert a.best == b.best
    assert torch.equal(a.heads.weights[0], b.heads.weights[0])
    store.close()


def test_mlp_with_dropout_lookahead_and_early_stopping(blob_store):
    store, data = _data(blob_store)
    config = HeadConfig(head="mlp", hidden=(32,), dropout=0.4, optimizer="adamw", lookahead=True,
                        lrs=(3e-2,), weight_decays=(1e-4,), epochs=40, batch_size=16, patience=3,
                        label_smoothing=0.1, balance="sampler")
    sweep = train_heads(data, data.fit_normalizer("standard"), config)
    assert sweep.epochs_run < 40  # stopped early
    assert sweep.val_top1[0] > 0.9
    # The restored state is the best one seen, not the last one.
    assert sweep.val_loss[0] <= min(c["val_loss"] for c in sweep.curve) + 1e-6
    assert len(sweep.heads.weights) == 2 and sweep.heads.weights[0].shape == (1, 16, 32)
    store.close()


def test_lr_find_curve_and_suggestion(blob_store):
    store, data = _data(blob_store)
    result = lr_find(data, data.fit_normalizer("standard"), HeadConfig(batch_size=16), steps=60)
    assert 1e-6 <= result.suggestion <= 10 and len(result.lrs) == len(result.losses) <= 60
    assert result.losses[0] == pytest.approx(np.log(3), abs=0.3)  # 3 classes, small init
    assert min(result.losses) < result.losses[0] * 0.5
    store.close()
