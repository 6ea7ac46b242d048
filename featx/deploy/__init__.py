"""Shipping a trained head: one self-contained ONNX file, and an HTTP service for it.

    featx.export_model("heads/elpv_efficientnet_lite0.linear", "model.onnx")   # or Head.to_onnx
    featx serve model.onnx --port 8000

onnx_model (the graph and its metadata), images (the client-side preprocessing: Pillow and numpy
only), model_file (an exported file opened with ONNX Runtime), batching (requests sharing a
forward) and serve (the FastAPI app). docs/deploy.md has the client and the HTTP API.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from featx.deploy.onnx_model import ExportedModel
    from featx.heads.io import Head


def export_model(head: "Head | str | os.PathLike", out: "str | os.PathLike") -> "ExportedModel":
    """Write `head` with its backbone, pooling, standardiser and softmax as one ONNX file `out`:
    input `images` uint8 [batch, S, S, 3] RGB, outputs `probabilities` and `features`."""
    from featx.deploy.onnx_model import export_model as export

    return export(head, out)
