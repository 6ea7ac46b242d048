"""featx.backbones.cuts: bottom + top == the backbone, and the top shares its layers."""

from __future__ import annotations

import pytest
import torch

from featx.backbones import create_backbone
from featx.backbones.cuts import cut_table, trunk_for
from featx.errors import BackboneError


@pytest.mark.parametrize("name,cut", [("efficientnet_lite0", "block11"), ("resnet18", "layer3"),
                                      ("densenet121", "features.denseblock3"),
                                      ("mobilenet_v3_small", "features.9")])
def test_bottom_then_top_is_the_backbone(name, cut):
    backbone = create_backbone(name, "none", input_size=64)
    model = backbone.model.eval()
    trunk = trunk_for(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        got = trunk.top(cut).eval()(trunk.bottom(cut)(x))
    torch.testing.assert_close(got, expected)


def test_training_the_top_trains_the_backbone_and_leaves_the_bottom():
    model = create_backbone("resnet18", "none", input_size=64).model
    trunk = trunk_for(model)
    top = trunk.top("layer4")
    top_ids = {id(p) for p in top.parameters()}
    assert id(model.layer4[0].conv1.weight) in top_ids
    assert id(model.conv1.weight) not in top_ids and id(model.layer3[0].conv1.weight) not in top_ids
    with torch.no_grad():
        for p in top.parameters():
            p.add_(1.0)
    assert float(model.layer4[0].conv1.weight.abs().min()) > 0  # moved with the top
    assert isinstance(model.conv1, torch.nn.Conv2d)  # the backbone itself is untouched in form


def test_cut_table_shapes_and_flops():
    model = create_backbone("efficientnet_lite0", "none").model
    rows = {r["cut"]: r for r in cut_table(model, 224)}
    assert rows["block11"]["shape"] == (112, 14, 14) and rows["block14"]["shape"] == (192, 7, 7)
    shares = [r["bottom_flops"] for r in rows.values()]
    assert shares == sorted(shares) and 0 < shares[0] < shares[-1] < 1


def test_unknown_cut_names_the_valid_ones():
    trunk = trunk_for(create_backbone("resnet18", "none").model)
    with pytest.raises(BackboneError, match="not a cut point of resnet18.*layer2, layer3, layer4"):
        trunk.check("layer9", "resnet18")
