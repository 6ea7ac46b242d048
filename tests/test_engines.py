"""featx.extraction.engines: ONNX Runtime agrees with torch, exports are cached safely, failures fall back."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import featx.extraction.engines
from featx.backbones import create_backbone
from featx.data import DatasetOptions, open_dataset
from featx.extraction.engines import OnnxEngine, TorchEngine, cached_onnx, create_engine, resolve_engine
from featx.errors import ConfigError, StoreError
from featx.extraction import ExtractConfig, engine_for, extract
from featx.store import FeatureStore

CPU = torch.device("cpu")


def _backbone(name="resnet18", seed=0):
    return create_backbone(name, "none", seed, input_size=32)


def _images(n=4, size=32):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(1))


def test_auto_picks_onnxruntime_on_cpu_and_refuses_it_on_cuda():
    assert resolve_engine("auto", CPU) == "onnxruntime"
    assert resolve_engine("auto", torch.device("cuda")) == "torch"
    with pytest.raises(ConfigError, match="runs on the CPU"):
        resolve_engine("onnxruntime", torch.device("cuda"))
    with pytest.raises(ConfigError, match="engine must be one of"):
        resolve_engine("tensorrt", CPU)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0", "mobilenet_v3_small"])
def test_onnxruntime_features_match_torch(name):
    backbone = create_backbone(name, "default" if name == "efficientnet_lite0" else "none", 0,
                               input_size=64)
    images = _images(3, 64)
    ort_feats = OnnxEngine(backbone, threads=1)(images)
    torch_feats = TorchEngine(backbone, CPU)(images)
    scale = float(torch_feats.abs().max())
    assert ort_feats.shape == torch_feats.shape
    assert float((ort_feats - torch_feats).abs().max()) <= 1e-3 * scale


@pytest.mark.slow
def test_export_is_cached_and_a_corrupt_file_is_rebuilt():
    backbone = _backbone(seed=11)
    path = cached_onnx(backbone)
    stamp = path.stat().st_mtime_ns
    assert cached_onnx(backbone) == path and path.stat().st_mtime_ns == stamp  # reused
    path.write_bytes(path.read_bytes()[:1000])  # truncated by a crash or a full disk
    rebuilt = cached_onnx(backbone)
    assert rebuilt == path and path.stat().st_size > 1000
    torch.testing.assert_close(OnnxEngine(backbone)(_images()), TorchEngine(backbone, CPU)(_images()),
                               rtol=1e-3, atol=1e-4)
    assert not list(path.parent.glob("*.tmp-*"))
    other = _backbone(seed=12)  # other weights, other file
    assert cached_onnx(other) != path


def test_export_failure_falls_back_to_torch_with_one_line(monkeypatch):
    messages = []

    def broken(backbone, path, module=None, cut=None):
        raise RuntimeError("Unsupported: aten::weird_op\nlong details")

    monkeypatch.setattr(featx.extraction.engines, "_export", broken)
    engine = create_engine(_backbone(seed=13), "onnxruntime", CPU, warn=messages.append)
    assert isinstance(engine, TorchEngine)
    assert messages == ["ONNX Runtime unavailable for resnet18 (RuntimeError: Unsupported: "
                        "aten::weird_op); using torch"]


@pytest.mark.slow
def test_verification_failure_falls_back_to_torch(monkeypatch, capsys):
    monkeypatch.setattr(featx.extraction.engines, "TOLERANCE", -1.0)  # nothing can pass
    engine = engine_for(_backbone(), ExtractConfig(), CPU, "onnxruntime")
    assert isinstance(engine, TorchEngine)
    assert "differs from torch" in capsys.readouterr().err


def _forget_second_half(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        n = f["done/clean"].shape[0]
        f["done/clean"][n // 2:] = 0
        f["done/aug"][:, :] = 0
        f.attrs.modify("complete", np.uint8(0))


@pytest.mark.slow
def test_store_records_the_engine_and_auto_resumes_with_it(tmp_path, class_tree):
    ds = open_dataset(class_tree, DatasetOptions(val_frac=0.0, test_frac=0.5))
    cfg = dict(weights="none", input_size=32, batch_size=5, views=1, workers=0)
    full = extract(ds, "resnet18", tmp_path / "a", ExtractConfig(engine="torch", **cfg), show_progress=False)
    part = extract(ds, "resnet18", tmp_path / "b", ExtractConfig(engine="torch", **cfg), show_progress=False)
    _forget_second_half(Path(part.store))
    with pytest.raises(StoreError, match="engine is torch in the store, onnxruntime requested"):
        extract(ds, "resnet18", tmp_path / "b", ExtractConfig(engine="onnxruntime", **cfg),
                show_progress=False)
    resumed = extract(ds, "resnet18", tmp_path / "b", ExtractConfig(engine="auto", **cfg),
                      show_progress=False)
    assert resumed.status == "resumed"
    with FeatureStore(resumed.store) as st, FeatureStore(full.store) as ref:
        assert st.attrs["engine"] == "torch" and st.attrs["engine_version"] == torch.__version__
        np.testing.assert_array_equal(st.read_clean(dtype=np.float16), ref.read_clean(dtype=np.float16))
        np.testing.assert_array_equal(st.read_aug(dtype=np.float16), ref.read_aug(dtype=np.float16))
    ort = extract(ds, "resnet18", tmp_path / "c", ExtractConfig(**cfg), show_progress=False)
    with FeatureStore(ort.store) as st, FeatureStore(full.store) as ref:
        assert st.attrs["engine"] == "onnxruntime"
        a, b = st.read_clean(), ref.read_clean()
        assert np.abs(a - b).max() <= 2e-3 * np.abs(b).max()  # float16 store: rounding included
