"""Which engine runs the forward, and what it returns with `--cut`.

ONNX Runtime is several times faster than torch on a CPU (featx.engines), but an exporter can
get a network subtly wrong: every non-torch engine is checked against torch on a probe batch
before any store is touched, and falls back to torch with a one-line warning. An unfinished
store resumes with the engine that started it, since engines agree only to rounding.
"""

from __future__ import annotations

from pathlib import Path

import torch

from featx.backbones import Backbone
from featx.engines import ENGINES, TorchEngine, create_engine, verify
from featx.errors import ConfigError, FeatxError
from featx.extraction.config import ExtractConfig
from featx.progress import console
from featx.store import read_attrs


def engine_for(backbone: Backbone, config: ExtractConfig, device: torch.device, name: str,
               module: torch.nn.Module | None = None):
    """The engine to run, checked against torch on a probe batch before any store is touched."""
    engine = create_engine(backbone, name, device, config.channels_last, config.amp, config.threads,
                           warn=warn, module=module, cut=config.cut)
    if isinstance(engine, TorchEngine):
        return engine
    size = backbone.preprocess.input_size
    probe = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    reference = TorchEngine(backbone, device, config.channels_last, config.amp, module)
    problem = verify(engine, reference, probe)
    if problem is None:
        return engine
    warn(f"ONNX Runtime output differs from torch for {backbone.name} ({problem}); using torch")
    return reference


def resumed_engine(path: Path, config: ExtractConfig) -> str:
    """`auto` resumes an unfinished store with the engine that started it (same numbers)."""
    if config.engine != "auto" or config.overwrite or not path.is_file():
        return config.engine
    try:
        attrs = read_attrs(path)
    except FeatxError:
        return config.engine  # a corrupt store is reported by prepare_store
    if not attrs.get("complete", 0) and attrs.get("engine") in ENGINES:
        return str(attrs["engine"])
    return config.engine


def cut_module(backbone: Backbone, cut: str | None) -> tuple[torch.nn.Module | None, tuple | None]:
    """(module returning features and maps, map shape (C, H, W)) for `--cut`, or (None, None)."""
    if not cut:
        return None, None
    from featx.backbones.cuts import WithMaps, trunk_for  # only --cut needs the trunk registry

    trunk = trunk_for(backbone.model)
    if trunk is None:
        raise ConfigError(f"--cut {cut}: {backbone.name} has no known cut points (`featx backbones "
                          "--cuts NAME` lists them for efficientnet_lite, ResNets and features-based "
                          "models)")
    trunk.check(cut, backbone.name)
    module = WithMaps(trunk, cut).eval()
    size = backbone.preprocess.input_size
    with torch.no_grad():
        shape = tuple(module.bottom(torch.zeros(1, 3, size, size)).shape[1:])
    return module, shape


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {message}", highlight=False)
