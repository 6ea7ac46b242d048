"""featx.backbones: registry names -> frozen feature networks, with safe, checked weights."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from featx.backbones import (
    BackboneSpec,
    Preprocess,
    create_backbone,
    get_spec,
    list_backbones,
    load_weights,
    register_backbone,
)
from featx.backbones import efficientnet_lite, torchvision_zoo
from featx.backbones.spec import spec_table
from featx.backbones.torchvision_zoo import full_model, hub_cache_file
from featx.backbones.weights import load_state_dict
from featx.errors import BackboneError
from featx.data.images import image_to_tensor
from featx.data.transforms import clean_view, normalize


def test_registry_lists_torchvision_and_packaged_models():
    names = list_backbones()
    for name in ("resnet18", "resnet50", "vgg16", "densenet121", "vit_b_16", "efficientnet_lite0",
                 "efficientnet_lite1", "efficientnet_lite2"):
        assert name in names
    assert list_backbones("efficientnet_lite", family="packaged") == [
        "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def test_timm_models_are_listed_when_asked_for():
    pytest.importorskip("timm")
    assert "timm/resnet50" in list_backbones("timm/resnet5*")
    assert "timm/resnet50" in list_backbones("resnet5", family="timm")
    assert not any(n.startswith("timm/") for n in list_backbones())  # a thousand names, on request
    assert get_spec("timm/resnet18").feature_dim == 512


def test_listing_and_specs_import_no_torch():
    """`featx backbones` answers from the static table: no model is built, torch is not imported."""
    code = ("import sys; from featx.backbones import get_spec, list_backbones; "
            "specs = [get_spec(n) for n in list_backbones()]; "
            "assert len(specs) > 80 and specs[0].num_params > 0; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_spec_table_lists_every_installed_torchvision_model():
    from torchvision.models import list_models
    import torchvision

    table = spec_table()
    assert set(table["torchvision"]) == set(list_models(module=torchvision.models)), (
        "specs.json is out of date: run tools/backbone_specs.py")
    assert set(table["packaged"]) == set(efficientnet_lite.VARIANTS)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", ["resnet50", "vit_b_16", "squeezenet1_1", "inception_v3", "regnet_y_400mf",
                                  "swin_t"])
def test_spec_table_rows_match_the_built_models(name):
    """Rebuild a few rows from the real model (on the meta device): the table says what it builds."""
    assert torchvision_zoo.describe_model(name) == spec_table()["torchvision"][name]


def test_packaged_spec_rows_match_the_built_models():
    assert efficientnet_lite.describe_model("efficientnet_lite1") == spec_table()["packaged"]["efficientnet_lite1"]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name,dim,size", [("resnet50", 2048, 224), ("vgg16", 4096, 224),
                                           ("densenet121", 1024, 224), ("vit_b_16", 768, 224),
                                           ("inception_v3", 2048, 299), ("squeezenet1_1", 512, 224),
                                           ("efficientnet_lite0", 1280, 224)])
def test_specs_know_feature_dim_and_preprocessing(name, dim, size):
    spec = get_spec(name)
    assert spec.feature_dim == dim and spec.preprocess.input_size == size
    assert spec.num_params > 1e6


def test_unknown_name_suggests_close_ones():
    with pytest.raises(BackboneError, match="did you mean resnet50"):
        create_backbone("resnt50")


def test_missing_default_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(BackboneError) as info:
        create_backbone("resnet50", weights="default")
    message = str(info.value)
    assert "no pretrained weights for 'resnet50'" in message and "download https://" in message
    assert "--weights PATH" in message


def _photo(name: str, size: int = 224) -> torch.Tensor:
    from sklearn.datasets import load_sample_image

    return image_to_tensor(__import__("PIL.Image").Image.fromarray(load_sample_image(name)))


def test_packaged_lite0_weights_are_real_imagenet_weights():
    """The lite0 features plus its shipped ImageNet classifier name a real photo correctly."""
    import torchvision

    backbone = create_backbone("efficientnet_lite0", weights="default")
    state = load_state_dict(backbone.spec.default_weights)
    categories = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    x = normalize(clean_view(_photo("flower.jpg"), backbone.preprocess)[None], backbone.preprocess)
    with torch.inference_mode():
        logits = backbone.model(x) @ state["_fc.weight"].T + state["_fc.bias"]
    top5 = [categories[i] for i in logits[0].topk(5).indices]
    assert "daisy" in top5, top5
    assert backbone.weights["sha256"] and backbone.weights["source"].endswith(".pth")


def test_random_init_is_seeded_and_the_default():
    a = create_backbone("mobilenet_v3_small", seed=1)  # weights=None, as torchvision
    b = create_backbone("mobilenet_v3_small", weights="none", seed=1)
    c = create_backbone("mobilenet_v3_small", weights=None, seed=2)
    assert a.weights == {"source": "random-init(seed=1)"}
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(a.model(x), b.model(x))
        assert not torch.equal(a.model(x), c.model(x))
        assert a.model(x).shape == (2, 1024)  # input of the last Linear


def _full_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in full_model(name).state_dict().items()}


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_weights_file_loads_into_the_feature_network(tmp_path, fmt):
    state = _full_state("mobilenet_v3_small", seed=7)
    path = tmp_path / f"w.{fmt}"
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    backbone = create_backbone("mobilenet_v3_small", weights=path)
    reference = full_model("mobilenet_v3_small")
    reference.load_state_dict(state)
    reference.classifier[-1] = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(backbone.model(x), reference.eval()(x))
    assert backbone.weights["source"] == str(path)


def test_default_torchvision_weights_come_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    cached = hub_cache_file(spec_table()["torchvision"]["mobilenet_v3_small"]["weights_url"])
    assert cached.is_relative_to(tmp_path)
    cached.parent.mkdir(parents=True)
    torch.save(_full_state("mobilenet_v3_small", seed=3), cached)
    backbone = create_backbone("mobilenet_v3_small", weights="default")
    assert backbone.weights["source"] == str(cached)


HUB_DIR_CHECK = """
import os, sys
from featx.backbones.torchvision_zoo import hub_dir
settings = [{"TORCH_HOME": "/x/torch_home"}, {"XDG_CACHE_HOME": "/x/xdg"}, {}]
ours = []
for env in settings:
    os.environ.pop("TORCH_HOME", None), os.environ.pop("XDG_CACHE_HOME", None)
    os.environ.update(env)
    ours.append(str(hub_dir()))
assert "torch" not in sys.modules
import torch.hub
for env, mine in zip(settings, ours):
    os.environ.pop("TORCH_HOME", None), os.environ.pop("XDG_CACHE_HOME", None)
    os.environ.update(env)
    assert mine == torch.hub.get_dir(), (env, mine, torch.hub.get_dir())
"""


def test_hub_dir_without_torch_is_torchs_own():
    done = subprocess.run([sys.executable, "-c", HUB_DIR_CHECK], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_pickle_that_runs_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(path, "wb") as f:
        pickle.dump({"weight": Payload()}, f)
    with pytest.raises(BackboneError, match="refus|code"):
        create_backbone("mobilenet_v3_small", weights=path)
    assert not marker.exists()


def test_weights_that_do_not_fit_are_explained(tmp_path):
    state = _full_state("mobilenet_v3_small", seed=0)
    state["features.0.0.weight"] = torch.zeros(3, 3, 3, 3)
    del state["features.1.block.0.0.weight"]
    state["extra.bias"] = torch.zeros(1)
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    with pytest.raises(BackboneError) as info:
        create_backbone("mobilenet_v3_small", weights=path)
    message = str(info.value)
    assert "do not fit mobilenet_v3_small" in message
    assert "features.0.0.weight" in message and "features.1.block.0.0.weight" in message


def test_garbage_weights_file_is_one_line(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"not really")
    with pytest.raises(BackboneError, match="w.safetensors") as info:
        create_backbone("mobilenet_v3_small", weights=path)
    assert "\n" not in str(info.value)


def test_input_size_override_keeps_crop_ratio():
    backbone = create_backbone("efficientnet_lite0", weights="none", input_size=300)
    assert backbone.preprocess.input_size == 300
    assert backbone.preprocess.resize_size == round(300 * 256 / 224)
    assert np.isclose(backbone.preprocess.mean[0], 0.485)


def test_tiny_cnn_registered_by_the_decorator_builds_seeded_and_loads_weights(tmp_path):
    spec = get_spec("tiny_cnn")  # registered in conftest.py with @register_backbone
    assert spec.family == "custom" and spec.feature_dim == 16 and spec.preprocess.input_size == 32
    assert spec.num_params == sum(p.numel() for p in create_backbone("tiny_cnn").model.parameters())
    a, b = create_backbone("tiny_cnn", seed=3), create_backbone("tiny_cnn", "none", seed=3)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert a.model(x).shape == (2, 16) and torch.equal(a.model(x), b.model(x))
    path = tmp_path / "tiny.safetensors"
    save_file(create_backbone("tiny_cnn", seed=9).model.state_dict(), str(path))
    loaded = create_backbone("tiny_cnn", weights=path)
    with torch.inference_mode():
        assert torch.equal(loaded.model(x), create_backbone("tiny_cnn", seed=9).model(x))
    assert loaded.weights["source"] == str(path) and len(loaded.weights["sha256"]) == 64
    with pytest.raises(BackboneError, match="no pretrained weights for 'tiny_cnn'"):
        create_backbone("tiny_cnn", weights="default")


def test_register_backbone_takes_a_spec_and_an_entry_form():
    @register_backbone(BackboneSpec(name="flat_net", feature_dim=12, num_params=0,
                                    preprocess=Preprocess.imagenet(16)))
    def flat_net(weights):
        net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
        return net if weights is None else load_weights(net, weights)

    assert "flat_net" in list_backbones("flat") and get_spec("flat_net").preprocess.resize_size == 18
    assert create_backbone("flat-net").model(torch.zeros(1, 3, 16, 16)).shape == (1, 12)
    with pytest.raises(TypeError, match="feature_dim"):
        register_backbone("no_dim")


def test_backbone_modules_env_registers_custom_backbones_in_subprocesses(monkeypatch):
    from tests.tiny_backbone import subprocess_env

    cli = [sys.executable, "-m", "featx.cli", "backbones", "tiny"]
    done = subprocess.run(cli, capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert done.returncode == 0 and "tiny_cnn" in done.stdout and "custom" in done.stdout, done.stderr
    monkeypatch.setenv("FEATX_BACKBONE_MODULES", "no_such_module")
    with pytest.raises(BackboneError, match="FEATX_BACKBONE_MODULES: cannot import 'no_such_module'"):
        list_backbones()
