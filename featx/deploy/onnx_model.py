"""A trained head as one self-contained ONNX file: everything between decoded pixels and class
probabilities, with what a client needs to feed it in the file's metadata.

    export_model("heads/elpv_efficientnet_lite0.linear", "model.onnx")

The graph: `images` uint8 [batch, S, S, 3] RGB (resized and centre-cropped, featx.deploy.images)
-> the backbone's normalisation -> the backbone (the pooled block columns appended and the TTA
symmetries averaged, as the store holds them) -> the head's feature standardiser -> its layers
-> softmax. Outputs: `probabilities` [batch, classes] float32, then `features` [batch, D] (the
store's columns, before standardisation). Before the file takes its name it is run against the
torch module + `Head.scores` on a probe batch; a disagreement is refused, never written.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from featx.data.preprocess import PILLOW_NAMES, recorded_resize
from featx.errors import ConfigError, FeatxError
from featx.heads.io import Head
from featx.heads.kinds import head_kind
from featx.runtime.atomic import atomic_write
from featx.version import __version__

OPSET = 17  # featx.extraction.engines.OPSET: the opset the backbone export is known to verify at
INPUT, OUTPUTS = "images", ("probabilities", "features")
TOLERANCE = 1e-4  # max |ONNX - featx| probability on the probe batch (float32 reorderings: ~1e-6)


@dataclass
class ExportedModel:
    """What `export_model` wrote and how closely it reproduces featx on the probe batch."""

    path: Path
    classes: list[str]
    crop: int
    max_difference: float  # max |ONNX - featx| probability on the probe batch


def export_model(head: Head | str | os.PathLike, out: str | os.PathLike) -> ExportedModel:
    """Write `head` (its backbone, pooling, standardiser, layers and softmax) as one ONNX file."""
    head = head if isinstance(head, Head) else Head.load(head)
    check_exportable(head)
    out = Path(out)
    if out.suffix != ".onnx":
        raise ConfigError(f"--out {out}: name the model file NAME.onnx")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: the folder {out.parent} does not exist")
    module = classifier_module(head)
    crop = int(head.meta["preprocess"]["input_size"])
    probe = np.random.default_rng(0).integers(0, 256, (2, crop, crop, 3), dtype=np.uint8)
    found: dict[str, float] = {}

    def write(tmp: Path) -> None:
        _export(module, tmp, crop)
        _add_metadata(tmp, metadata(head))
        found["diff"] = _check(tmp, head, module, probe)

    atomic_write(out, write)
    return ExportedModel(out, list(head.class_names), crop, found["diff"])


def check_exportable(head: Head) -> None:
    """Refuse, in one line saying why, a head whose scores are not a network's softmax."""
    kind = head_kind(head.kind)
    if not kind.exportable:
        raise FeatxError(f"{head.path or 'head'}: a {head.kind} head cannot be exported to ONNX: "
                         f"{kind.not_exportable_because}")
    if head.meta.get("normalize", "none") not in ("none", "standard", "l2"):
        raise FeatxError(f"{head.path}: unknown feature normalisation {head.meta.get('normalize')!r}")


def metadata(head: Head) -> dict[str, str]:
    """The file's metadata_props: classes in output order, the client's preprocessing, provenance."""
    pre = head.meta["preprocess"]
    interpolation = PILLOW_NAMES.get(str(pre.get("interpolation", "bilinear")))
    if interpolation is None:
        raise FeatxError(f"{head.path}: interpolation {pre.get('interpolation')!r} has no Pillow equal")
    # resize_with "pillow": a Pillow client computes featx's very pixels; "torchvision" (a head
    # on a store made before issue 29): the same up to one grey level on a few pixels.
    preprocess = {"resize": int(pre["resize_size"]), "crop": int(pre["input_size"]),
                  "interpolation": interpolation, "mode": "RGB", "resize_with": recorded_resize(pre)}
    return {"featx.classes": json.dumps(list(head.class_names)),
            "featx.preprocess": json.dumps(preprocess),
            "featx.version": __version__, "featx.backbone": head.backbone,
            "featx.weights_sha256": str(head.meta.get("weights_sha256", "")),
            "featx.head_sha256": str(head.meta.get("weights_file_sha256", "")),
            "featx.store_version": str(head.meta.get("store_version", ""))}


def classifier_module(head: Head) -> nn.Module:
    """The torch module of the whole classifier (uint8 NHWC in), as it is exported."""
    from featx.extraction.engine_choice import tapped_module
    from featx.heads.backbone import HeadEmbedder

    backbone = HeadEmbedder(head.meta).backbone()  # the same weights by sha256, or refused
    final_only = head.meta.get("features") == "final" or not head.meta.get("pool")
    taps = tapped_module(backbone, None, None if final_only else head.meta.get("pool"),
                         head.meta.get("tta") or "none")
    net = taps.module if taps.module is not None else backbone.model
    pre = backbone.preprocess
    norm = head.normalizer()
    layers = [(head.tensors[f"layers.{i}.weight"], head.tensors[f"layers.{i}.bias"])
              for i in range(sum(1 for k in head.tensors if k.startswith("layers.") and k.endswith(".weight")))]
    if not layers:
        raise FeatxError(f"{head.path}: the head has no layers to export")
    w, b = layers[-1]  # the head's temperature folded into its last layer: softmax(z / T)
    layers[-1] = (np.asarray(w, np.float32) / head.meta.temperature, np.asarray(b, np.float32) / head.meta.temperature)
    return Classifier(net, pre.mean, pre.std, head.feature_dim, norm.mode, norm.mean, norm.std,
                       layers).eval().to(torch.device("cpu"))


class Classifier(nn.Module):
    """uint8 [B, S, S, 3] -> (probabilities [B, C], features [B, D])."""

    def __init__(self, net, mean, std, feature_dim, norm_mode, norm_mean, norm_std, layers):
        super().__init__()
        self.net, self.feature_dim, self.norm_mode = net, feature_dim, norm_mode
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        if norm_mode == "standard":
            self.register_buffer("feat_mean", torch.from_numpy(np.asarray(norm_mean, np.float32)))
            self.register_buffer("feat_std", torch.from_numpy(np.asarray(norm_std, np.float32)))
        self.weights = nn.ParameterList(nn.Parameter(torch.from_numpy(np.asarray(w, np.float32)),
                                                     requires_grad=False) for w, _ in layers)
        self.biases = nn.ParameterList(nn.Parameter(torch.from_numpy(np.asarray(b, np.float32)),
                                                    requires_grad=False) for _, b in layers)

    def forward(self, images):
        x = (images.permute(0, 3, 1, 2).float() - self.mean) / self.std
        features = self.net(x)[:, :self.feature_dim]  # a final-only head: the first D columns
        h = features
        if self.norm_mode == "standard":
            h = (h - self.feat_mean) / self.feat_std
        elif self.norm_mode == "l2":
            h = h / h.norm(dim=1, keepdim=True).clamp_min(1e-12)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = torch.relu(h)
        return torch.softmax(h, dim=1), features


def _export(module: nn.Module, path: Path, crop: int) -> None:
    import onnx

    example = torch.zeros(2, crop, crop, 3, dtype=torch.uint8)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), input_names=[INPUT], output_names=list(OUTPUTS),
                          opset_version=OPSET, dynamo=False,
                          dynamic_axes={name: {0: "batch"} for name in (INPUT, *OUTPUTS)})
    onnx.checker.check_model(str(path))


def _add_metadata(path: Path, props: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def _check(path: Path, head: Head, module, probe: np.ndarray) -> float:
    """Max |ONNX - featx| probability on `probe`: featx's side is the torch backbone's features
    scored by `Head.scores` (numpy), the path `featx predict` takes."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got, got_features = session.run(list(OUTPUTS), {INPUT: probe})
    with torch.no_grad():
        _, features = module(torch.from_numpy(probe))
    want = head.scores(features.numpy())
    diff = float(np.abs(got - want).max())
    if not np.isfinite(diff) or diff > TOLERANCE:
        raise FeatxError(f"{path.name}: the exported model's probabilities differ from featx's by "
                         f"{diff:.3g} (> {TOLERANCE:g}) on a probe batch; not written")
    return diff
