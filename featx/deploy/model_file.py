"""An exported model opened for inference: its ONNX Runtime session and its featx metadata.

    model = ModelFile.open("model.onnx")
    probs = model(batch)                    # uint8 [n, S, S, 3] -> float32 [n, classes]
    model.classes, model.spec, model.provenance
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featx.deploy.images import InputSpec
from featx.errors import ConfigError

REQUIRED = ("featx.classes", "featx.preprocess")


@dataclass
class ModelFile:
    """A featx ONNX classifier: call it on uint8 [n, S, S, 3] batches for [n, classes] probabilities."""

    path: Path
    classes: list[str]
    spec: InputSpec
    provenance: dict[str, str]  # featx.version, featx.backbone, featx.weights_sha256, ...
    session: Any = field(repr=False)

    @classmethod
    def open(cls, path: str | os.PathLike, threads: int | None = None) -> "ModelFile":
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such model file (write one with `featx export-model HEAD`)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.log_severity_level = 3
        # Idle ORT threads spin by default, taking the cores that decode the next request.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types for bad files
            raise ConfigError(f"{path}: not a model ONNX Runtime can open ({_first_line(exc)})") from None
        props = session.get_modelmeta().custom_metadata_map
        missing = [k for k in REQUIRED if k not in props]
        if missing:
            raise ConfigError(f"{path}: not a featx model (no {missing[0]} in its metadata; "
                              "write it with `featx export-model`)")
        try:
            classes = json.loads(props["featx.classes"])
            spec = InputSpec.from_dict(json.loads(props["featx.preprocess"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: unreadable featx metadata ({exc})") from None
        provenance = {k: v for k, v in props.items() if k.startswith("featx.") and k not in REQUIRED}
        return cls(path, classes, spec, provenance, session)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(["probabilities"], {"images": images})[0]

    def metadata(self) -> dict:
        """What GET /metadata answers: classes, preprocessing and provenance."""
        return {"model": self.path.name, "classes": self.classes,
                "preprocess": {"resize": self.spec.resize, "crop": self.spec.crop,
                               "interpolation": self.spec.interpolation, "mode": self.spec.mode,
                               "resize_with": self.spec.resize_with},
                "provenance": {k.removeprefix("featx."): v for k, v in sorted(self.provenance.items())}}


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
