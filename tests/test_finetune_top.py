"""featx.finetuning.top: the blocks above a cut + the head, trained on a store's cached maps."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import featx.finetuning.loop
import featx.finetuning.top
from featx.backbones import create_backbone
from featx.data import DatasetOptions, open_dataset
from featx.errors import ConfigError, FeatxError
from featx.extraction import ExtractConfig, extract
from featx.finetuning import (FinetuneConfig, MapData, find_lr_top, finetune_top, square_symmetry,
                              suggest_lr)
from featx.heads.io import Head
from featx.probes.sweep import HeadConfig
from featx.heads.predict import predict
from featx.store import FeatureStore
from featx.probes.train import train_head
from tests.conftest import make_class_tree
from tests.test_finetune import assert_exports_like_predict

NET, CUT = "tiny_features", "features.4"  # the top: its last conv (12 -> 16 channels) and the head
TOP = dict(from_block=CUT, epochs=3, batch_size=8, lr=0.02, patience=None)


@pytest.fixture(scope="module")
def cut_store(tmp_path_factory):
    """A tiny tree, a tiny_features (random init, 32 px) store with 1 view and the maps entering
    its last conv, and a linear head trained on its features. The machinery does not depend on
    the network (tests/test_cuts.py checks each family's cut points); with resnet18's layer4 the
    range-test and resume tests took 36 s, 4 s with this (loaded 2-core box)."""
    tmp = tmp_path_factory.mktemp("top")
    root = make_class_tree(tmp / "data", classes=("a", "b", "c"), per_class=10, seed=2)
    ds = open_dataset(root, DatasetOptions(val_frac=0.2, test_frac=0.2))
    store = extract(ds, NET, tmp / "stores", ExtractConfig(
        weights="none", input_size=32, workers=0, views=1, cut=CUT), show_progress=False).store
    # Selected on val, not refitted on train+val by k-fold CV: the refitted head on these 18
    # random-init images is confident enough that the range test's rate (a tenth of where the
    # loss diverged) overshoots in the first epochs (measured: train loss 2.8 -> 3.6). 10 epochs,
    # not 3: on tiny_features a 3-epoch head leaves the top's first steps far from a minimum and
    # the suggested rate overshoots as well (measured: 13.3 -> 106 -> 36; with 10: 1.32 -> 0.96).
    head = train_head(store, "linear", HeadConfig(epochs=10, select="val"), out=tmp / "h", show_progress=False)
    return root, ds, store, head.path


def keep_the_last_epoch(monkeypatch, job_class) -> None:
    """Val losses that fall every epoch (accuracy as measured): the last epoch is the one kept.
    The tiny test data are separable, so a probe is perfect on val and no epoch could beat it."""
    validate, losses = job_class.validate, iter(range(100, 0, -1))
    monkeypatch.setattr(job_class, "validate", lambda self: (float(next(losses)), validate(self)[1]))


def test_only_the_top_is_tuned_and_the_saved_network_predicts_from_images(cut_store, tmp_path, monkeypatch):
    root, ds, store, head = cut_store
    keep_the_last_epoch(monkeypatch, featx.finetuning.top.TopNetwork)
    result = finetune_top(store, head, tmp_path / "top", FinetuneConfig(**TOP), show_progress=False)
    assert result.epochs_run == 3 and result.best_epoch == 3 and result.test is not None
    tuned = load_file(str(result.weights))
    original = create_backbone(NET, "none", input_size=32).model.state_dict()
    assert torch.equal(tuned["features.2.weight"], original["features.2.weight"])  # frozen bottom
    assert not torch.equal(tuned["features.4.weight"], original["features.4.weight"])  # tuned top
    # The saved bottom + tuned top, run on the images, gives the accuracy measured on the maps.
    retuned = extract(ds, NET, tmp_path / "tuned", ExtractConfig(
        weights=str(result.weights), input_size=32, workers=0, dtype="float32"), show_progress=False).store
    assert len(predict(result.head, [retuned]).paths) == 30
    with FeatureStore(retuned) as st:
        x, y = st.features("test")
    on_images = (Head.load(result.head).scores(x).argmax(1) == y).mean()
    assert on_images == pytest.approx(result.test.top1)
    files = sorted(root.rglob("*.png"))
    assert_exports_like_predict(result.head, files, predict(result.head, files, workers=0).scores, tmp_path)


def test_lr_finder_on_the_maps_suggests_a_rate_that_trains(cut_store, tmp_path):
    _, _, store, head = cut_store
    config = FinetuneConfig(**{**TOP, "lr": None})
    found = find_lr_top(store, head, config, start=1e-6, end=10.0, steps=60, show_progress=False)
    assert found.diverged and found.suggestion == pytest.approx(found.lrs[-1] / 10)
    assert found == find_lr_top(store, head, config, start=1e-6, end=10.0, steps=60, show_progress=False)
    result = finetune_top(store, head, tmp_path / "top", FinetuneConfig(**{**TOP, "lr": found.suggestion}),
                          show_progress=False)
    assert result.curve[0]["epoch"] == 0 and result.curve[0]["train_loss"] is None  # the warm start
    assert all(np.isfinite(c["train_loss"]) for c in result.curve[1:])
    assert result.curve[-1]["train_loss"] < result.curve[1]["train_loss"]


def test_suggest_lr_finds_once_per_settings(cut_store, tmp_path):
    """The library behind `finetune --lr auto`: the rate is found once, then read back."""
    _, ds, store, head = cut_store
    config = FinetuneConfig(**{**TOP, "lr": None})
    first = suggest_lr(store, head, tmp_path / "top", config)
    assert not first.reused and first.lr == first.result.suggestion
    assert (tmp_path / "top.lr-find.csv").is_file() and (tmp_path / "top.lr-find.png").is_file()
    again = suggest_lr(store, head, tmp_path / "top", replace(config, epochs=5))  # not in the key
    assert again.reused and again.result == first.result  # other settings: test_lr_range
    with pytest.raises(FeatxError, match="a store made by `featx extract --cut`"):
        suggest_lr(ds, head, tmp_path / "top", config)


def test_a_killed_run_resumes_to_the_same_weights(cut_store, tmp_path, monkeypatch):
    _, _, store, head = cut_store
    whole = finetune_top(store, head, tmp_path / "whole", FinetuneConfig(**TOP), show_progress=False)
    real_checkpoint = featx.finetuning.loop.save_checkpoint

    def checkpoint_then_die(*args, **kwargs):
        real_checkpoint(*args, **kwargs)
        if args[3]["epoch"] == 2:
            raise KeyboardInterrupt  # killed right after epoch 2 was saved

    monkeypatch.setattr(featx.finetuning.loop, "save_checkpoint", checkpoint_then_die)
    with pytest.raises(KeyboardInterrupt):
        finetune_top(store, head, tmp_path / "killed", FinetuneConfig(**TOP), show_progress=False)
    monkeypatch.setattr(featx.finetuning.loop, "save_checkpoint", real_checkpoint)
    resumed = finetune_top(store, head, tmp_path / "killed", FinetuneConfig(**TOP), show_progress=False)
    assert resumed.resumed_from == 2 and resumed.epochs_run == 3
    a, b = load_file(str(whole.weights)), load_file(str(resumed.weights))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_top_finetune_no_epoch_of_which_beats_the_warm_start_returns_the_warm_start(cut_store, tmp_path,
                                                                                    monkeypatch):
    """Issue 21.4 with --from-block: the warm start (original top, trained head) is epoch 0."""
    _, _, store, head = cut_store
    train_epoch = featx.finetuning.top.TopNetwork.train_epoch

    def worse(self, epoch, opt, schedule):
        loss = train_epoch(self, epoch, opt, schedule)
        with torch.no_grad():
            self.net.head.layers[-1].bias[0] += 20.0  # every image "class 0": a far higher val loss
        return loss

    monkeypatch.setattr(featx.finetuning.top.TopNetwork, "train_epoch", worse)
    result = finetune_top(store, head, tmp_path / "top", FinetuneConfig(**{**TOP, "epochs": 2}),
                          show_progress=False)
    assert result.kept_warm_start and result.epochs_run == 2
    assert all(c["val_loss"] > result.curve[0]["val_loss"] for c in result.curve[1:])
    assert result.val.top1 == pytest.approx(result.curve[0]["val_top1"])
    tuned = load_file(str(result.weights))
    original = create_backbone(NET, "none", input_size=32).model.state_dict()
    assert all(torch.equal(tuned[k], v) for k, v in original.items())  # the top is untouched too
    with FeatureStore(store) as st:
        x, _ = st.features("val")
    np.testing.assert_allclose(Head.load(result.head).scores(x), Head.load(head).scores(x), rtol=1e-4, atol=1e-5)


def test_map_symmetries_are_orientation_correct_by_default(cut_store):
    """Issue 21: the default `flip` only mirrors left-right; `hv-flip` adds top-bottom; only the
    opt-in `rot90-flip` turns maps by 90 degrees."""
    _, _, store, _ = cut_store
    assert FinetuneConfig(from_block=CUT).map_aug == "flip"
    with FeatureStore(store) as st:
        kinds = {aug: MapData(st, CUT, aug) for aug in ("flip", "hv-flip", "rot90-flip", "none")}
    plain = kinds["none"]
    stored = torch.cat([plain.clean_train, plain.views[0]])  # (2 N, C, H, W)

    def seen(aug: str) -> set[str]:
        """Which transforms of stored maps the batches of `aug` hold, over a few epochs."""
        found = set()
        transforms = {"same": lambda m: m, "lr": lambda m: m.flip(-1), "tb": lambda m: m.flip(-2),
                      "both": lambda m: m.flip(-1).flip(-2), "turned": lambda m: torch.rot90(m, 1, (-2, -1))}
        for epoch in range(4):
            for x, _ in kinds[aug].train_batches(epoch=epoch, batch_size=8, seed=0):
                for m in x:
                    hits = {name for name, t in transforms.items() if (t(stored) == m).flatten(1).all(1).any()}
                    found |= hits if len(hits) == 1 else set()  # a symmetric map tells nothing
        return found

    assert seen("flip") == {"same", "lr"}
    assert seen("hv-flip") == {"same", "lr", "tb", "both"}
    assert "turned" in seen("rot90-flip")


def test_map_batches_are_seeded_and_use_views_and_symmetries(cut_store):
    _, _, store, _ = cut_store
    with FeatureStore(store) as st:
        maps = MapData(st, CUT, "rot90-flip")
        plain = MapData(st, CUT, "none")
    with FeatureStore(store) as st:
        n_train = int((st.splits == "train").sum())
    assert maps.n_train == n_train and maps.views.shape == (1, n_train, 12, 8, 8)
    first = [x for x, _ in maps.train_batches(epoch=0, batch_size=8, seed=0)]
    again = [x for x, _ in maps.train_batches(epoch=0, batch_size=8, seed=0)]
    other = [x for x, _ in maps.train_batches(epoch=1, batch_size=8, seed=0)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    # Without symmetries each training map is exactly a stored map (clean or its view).
    stored = torch.cat([plain.clean_train, plain.views[0]])
    for x, _ in plain.train_batches(epoch=0, batch_size=8, seed=0):
        assert all((stored == m).flatten(1).all(1).any() for m in x)


def test_square_symmetry_gives_the_eight_symmetries():
    m = torch.arange(9.0).reshape(1, 3, 3)
    images = {tuple(square_symmetry(m, r, f).flatten().tolist()) for r in range(4) for f in (False, True)}
    assert len(images) == 8
    wide = torch.arange(6.0).reshape(1, 2, 3)
    assert torch.equal(square_symmetry(wide, 1, False), wide)  # no rotation of non-square maps
    assert torch.equal(square_symmetry(wide, 0, True, True), wide.flip(-1).flip(-2))


def test_clear_errors(cut_store, tmp_path):
    root, ds, store, head = cut_store
    plain = extract(ds, NET, tmp_path / "plain", ExtractConfig(weights="none", input_size=32,
                    workers=0), show_progress=False).store
    with pytest.raises(FeatxError, match=r"no maps cached at 'features\.4'.*featx extract --cut features\.4"):
        finetune_top(plain, head, tmp_path / "x", FinetuneConfig(from_block=CUT), show_progress=False)
    two = open_dataset(make_class_tree(tmp_path / "two", classes=("a", "b"), per_class=6, seed=3),
                       DatasetOptions(val_frac=0.2, test_frac=0.2))
    two_store = extract(two, "tiny_cnn", tmp_path / "two_stores", ExtractConfig(
        weights="none", input_size=32, workers=0), show_progress=False).store
    other = train_head(two_store, "linear", HeadConfig(epochs=1), out=tmp_path / "other", show_progress=False)
    with pytest.raises(FeatxError, match="not trained on this store's backbone"):
        finetune_top(store, other.path, tmp_path / "y", FinetuneConfig(from_block=CUT),
                     show_progress=False)
    with pytest.raises(ConfigError, match="map_aug"):
        FinetuneConfig(from_block="layer4", map_aug="mirror")


def test_maps_that_do_not_fit_in_memory_are_refused_up_front(cut_store, monkeypatch):
    _, _, store, _ = cut_store
    page = 4096
    monkeypatch.setattr(featx.finetuning.top, "available_memory_bytes", lambda: 10 * page)  # 40 KB free
    refused = r"need \d+ MB in memory and 0 MB are free; cut higher"
    with FeatureStore(store) as st, pytest.raises(FeatxError, match=refused):
        MapData(st, CUT)


def test_a_checkpoint_of_another_store_is_refused(cut_store, tmp_path):
    """Issue 17, 1 with --from-block: the checkpoint names the store it trained on (by its
    identity: the same maps resume wherever the file is, other maps are refused)."""
    _, ds, store, head = cut_store
    config = FinetuneConfig(**{**TOP, "epochs": 1})
    finetune_top(store, head, tmp_path / "top", config, show_progress=False)
    other = extract(ds, NET, tmp_path / "other", ExtractConfig(
        weights="none", input_size=32, workers=0, views=2, cut=CUT), show_progress=False).store
    with pytest.raises(FeatxError, match=r"top\.checkpoint\.json: a checkpoint of a run on other data"):
        finetune_top(other, head, tmp_path / "top", config, show_progress=False)
    moved = tmp_path / "moved.h5"
    moved.write_bytes(Path(store).read_bytes())
    assert finetune_top(moved, head, tmp_path / "top", config, show_progress=False).resumed_from == 1
