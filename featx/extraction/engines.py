"""Inference engines for frozen forwards: torch (CUDA or CPU) and ONNX Runtime (CPU).

On a CPU, ONNX Runtime runs the same network several times faster than PyTorch eager (lite0 on 2
AVX2 cores: ~280 vs ~80 images/s with channels_last), so `auto` picks it there and torch on CUDA.

    engine = create_engine(backbone, "auto", torch.device("cpu"))
    features = engine(uint8_batch)                  # (B, 3, S, S) uint8 -> (B, D) float32, CPU

The ONNX file of a (backbone, weights sha256, input size, export options) is exported once into
a cache (FEATX_CACHE or ~/.cache/featx), written atomically with a sidecar holding its sha256;
a file that does not match its sidecar is rebuilt, never trusted. Before use, the first batch is
run through both engines: outputs must agree within `TOLERANCE`, else featx says so in one line
and falls back to torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from featx.runtime.atomic import atomic_write, atomic_write_text
from featx.backbones import Backbone
from featx.backbones.weights import sha256_file
from featx.errors import ConfigError
from featx.data.transforms import normalize
from featx.extraction.settings import ENGINES

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
OPSET = 17
# Max |onnx - torch| allowed, relative to the largest |torch| feature (float32 reorderings give ~1e-5).
TOLERANCE = 1e-3


def resolve_engine(name: str, device: torch.device) -> str:
    if name not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {name!r}")
    if name == "onnxruntime" and device.type != "cpu":
        raise ConfigError("--engine onnxruntime runs on the CPU; use --engine torch on CUDA")
    if name == "auto":
        return "onnxruntime" if device.type == "cpu" and _onnxruntime_available() else "torch"
    return name


def _onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        return True
    except ImportError:
        return False


def engine_version(name: str) -> str:
    if name == "onnxruntime":
        import onnxruntime

        return onnxruntime.__version__
    return torch.__version__


class TorchEngine:
    """The backbone in torch: inference_mode, channels_last, autocast on CUDA."""

    name = "torch"

    def __init__(self, backbone: Backbone, device: torch.device, channels_last: bool = True,
                 amp: str = "bf16", module: torch.nn.Module | None = None):
        self.backbone, self.device, self.channels_last = backbone, device, channels_last
        self.amp = amp if device.type == "cuda" else "off"
        self.model = (module if module is not None else backbone.model).to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if device.type == "cuda":
            # Same batch -> same numbers: resumed and uninterrupted runs must agree exactly.
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = normalize(images.to(self.device, non_blocking=True), self.backbone.preprocess)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=AMP_DTYPES.get(self.amp), enabled=self.amp != "off"):
            out = self.model(x)
        return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()


class OnnxEngine:
    """The backbone exported to ONNX, run by ONNX Runtime's CPU execution provider."""

    name = "onnxruntime"

    def __init__(self, backbone: Backbone, threads: int | None = None,
                 module: torch.nn.Module | None = None, cut: str | None = None,
                 variant: str | None = None):
        import onnxruntime as ort

        self.backbone = backbone
        path = cached_onnx(backbone, module, cut, variant)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Idle ORT threads spin by default, stealing the cores that decode the next batch.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = path

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        # uint8 in: normalisation runs inside the graph, on ORT's threads, without temporaries.
        x = images.contiguous().numpy()
        outputs = [torch.from_numpy(o) for o in self.session.run(None, {"images": x})]
        return tuple(outputs) if len(outputs) > 1 else outputs[0]


class _NormalizedInput(torch.nn.Module):
    """uint8 (B, 3, S, S) -> normalise -> backbone: the graph that is exported."""

    def __init__(self, backbone: Backbone, module: torch.nn.Module | None = None):
        super().__init__()
        pre = backbone.preprocess
        self.model = module if module is not None else backbone.model
        self.register_buffer("mean", torch.tensor(pre.mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(pre.std).view(1, 3, 1, 1) * 255)

    def forward(self, images: torch.Tensor):
        return self.model((images.float() - self.mean) / self.std)


def create_engine(backbone: Backbone, name: str, device: torch.device, channels_last: bool = True,
                  amp: str = "bf16", threads: int | None = None, warn=print,
                  module: torch.nn.Module | None = None, cut: str | None = None,
                  variant: str | None = None):
    """The engine `name` (resolved), or torch with a one-line warning if ONNX cannot be used.

    `module` replaces backbone.model (with `cut`: a WithMaps returning features and maps; with
    `variant`: what else the module computes, e.g. "pool-block11-tta-flip", the cache key).
    """
    name = resolve_engine(name, device)
    if name == "torch":
        return TorchEngine(backbone, device, channels_last, amp, module)
    try:
        return OnnxEngine(backbone, threads, module, cut, variant)
    except Exception as exc:  # noqa: BLE001 - exporters fail in many ways; torch still works
        warn(f"ONNX Runtime unavailable for {backbone.name} ({_first_line(exc)}); using torch")
        return TorchEngine(backbone, device, channels_last, amp, module)


def verify(engine, reference: TorchEngine, images: torch.Tensor) -> str | None:
    """None if `engine` matches torch on `images` within TOLERANCE (every output), else why not."""
    got, want = engine(images), reference(images)
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        g, w = g.float(), w.float().cpu()
        scale = max(float(w.abs().max()), 1e-30)
        diff = float((g - w).abs().max()) if g.shape == w.shape else float("inf")
        if not np.isfinite(diff) or diff > TOLERANCE * scale:
            return f"max difference {diff:.3g} > {TOLERANCE:g} x {scale:.3g}"
    return None


# --- the export cache ----------------------------------------------------------------------------

def cache_dir() -> Path:
    return Path(os.environ.get("FEATX_CACHE") or Path.home() / ".cache" / "featx")


def onnx_key(backbone: Backbone, cut: str | None = None, variant: str | None = None) -> str:
    identity = {"backbone": backbone.name, "weights": backbone.weights.get("sha256",
                                                                          backbone.weights["source"]),
                "input_size": backbone.preprocess.input_size, "opset": OPSET, "cut": cut,
                "preprocess": backbone.preprocess.to_dict(), "input": "uint8",
                "torch": torch.__version__.split("+")[0], "format": 2}
    if variant:  # only when set: models exported before --pool/--tta keep their cache entries
        identity["variant"] = variant
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def cached_onnx(backbone: Backbone, module: torch.nn.Module | None = None, cut: str | None = None,
                variant: str | None = None) -> Path:
    """The verified-on-disk ONNX file for `backbone` (and cut, variant), exported now if missing or corrupt."""
    key = onnx_key(backbone, cut, variant)
    folder = cache_dir() / "onnx"
    tag = (f"-{cut}" if cut else "") + (f"-{variant}" if variant else "")
    path = folder / f"{backbone.name.replace('/', '-')}{tag}-{key[:16]}.onnx"
    sidecar = path.with_suffix(".json")
    if path.is_file() and sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
            if meta.get("key") == key and meta.get("sha256") == sha256_file(path):
                return path
        except (OSError, ValueError):
            pass
    digest = {}
    from featx.runtime.progress import console

    # Tens of seconds on 2 cores, once per machine and variant: say so rather than sit silent.
    console.print(f"{backbone.name}: exporting the ONNX graph (once; cached in {folder})",
                  markup=False, highlight=False, style="dim", soft_wrap=True)

    def export(tmp: Path) -> None:
        _export(backbone, tmp, module, cut)
        digest["sha256"] = sha256_file(tmp)

    # The model first, then its sidecar: a kill between the two leaves a file with no matching
    # sidecar, which the next run rebuilds rather than trusts.
    atomic_write(path, export)
    atomic_write_text(sidecar, json.dumps({"key": key, "sha256": digest["sha256"],
                                           "backbone": backbone.name}))
    return path


def _export(backbone: Backbone, path: Path, module: torch.nn.Module | None = None,
            cut: str | None = None) -> None:
    import onnx

    size = backbone.preprocess.input_size
    model = _NormalizedInput(backbone, module).cpu().eval()
    example = torch.zeros(2, 3, size, size, dtype=torch.uint8)
    outputs = ["features", "maps"] if cut else ["features"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), input_names=["images"],
                          output_names=outputs, opset_version=OPSET, dynamo=False,
                          dynamic_axes={name: {0: "batch"} for name in ["images", *outputs]})
    onnx.checker.check_model(str(path))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__
