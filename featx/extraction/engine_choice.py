"""Which engine runs the forward, and what it returns with `--cut` and `--pool`.

ONNX Runtime is several times faster than torch on a CPU (featx.extraction.engines), but an exporter can
get a network subtly wrong: every non-torch engine is checked against torch on a probe batch
before any store is touched, and falls back to torch with a one-line warning. An unfinished
store resumes with the engine that started it, since engines agree only to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from featx.backbones import Backbone
from featx.extraction import engines
from featx.extraction.engines import ENGINES, TorchEngine, create_engine, onnx_key, resolve_engine, verify
from featx.errors import ConfigError, FeatxError
from featx.extraction.config import ExtractConfig
from featx.runtime.progress import console
from featx.store import read_attrs


# ONNX engines already checked against torch in this process, by what fixes their numbers (the
# exported file's cache key), threads and the tolerance they passed at: a warm `predict_proba` of one image would otherwise
# rebuild the session and re-run the check (0.5 s) on every call. None: the check failed, use torch.
_CHECKED: dict[tuple, object] = {}


def engine_for(backbone: Backbone, config: ExtractConfig, device: torch.device, name: str,
               module: torch.nn.Module | None = None, taps: Taps | None = None):
    """The engine to run, checked against torch on a probe batch (once per process and exported
    file) before any store is touched."""
    # taps: the extraction's module and --pool block, resolved once (ExtractJob); without them
    # `module` runs and --pool is resolved from `config` here.
    if taps is None and module is None:
        # The module must be the one the variant names: an exported file is cached under the
        # variant, and a bare backbone saved under a pooled variant's key would poison it.
        taps = tapped_module(backbone, config.cut, config.pool, config.tta)
    if taps is not None:
        module = taps.module
    variant = engine_variant(backbone, config, taps)
    key = None
    if resolve_engine(name, device) == "onnxruntime":
        key = (onnx_key(backbone, config.cut, variant), config.threads,
               engines.TOLERANCE)
        if key in _CHECKED:
            checked = _CHECKED[key]
            return checked if checked is not None else TorchEngine(backbone, device, config.channels_last,
                                                                   config.amp, module)
    engine = create_engine(backbone, name, device, config.channels_last, config.amp, config.threads,
                           warn=warn, module=module, cut=config.cut, variant=variant)
    if isinstance(engine, TorchEngine):  # ONNX Runtime could not be used (warned); nothing to check
        return engine
    size = backbone.preprocess.input_size
    probe = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    reference = TorchEngine(backbone, device, config.channels_last, config.amp, module)
    problem = verify(engine, reference, probe)
    if key is not None:
        _CHECKED[key] = engine if problem is None else None
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


@dataclass
class Taps:
    """What the forward returns beyond the final features: the maps entering `--cut`, and the
    pooled maps entering the `--pool` block appended to the features (`pool_dim` columns)."""

    module: torch.nn.Module | None  # replaces backbone.model; None: the plain backbone
    cut_shape: tuple | None  # (C, H, W) of the cut maps
    pool: str | None  # the resolved pool block
    pool_dim: int  # columns the pooled maps add (2C: average and maximum)


SHAPE_PROBE_PX = 64  # the input a shape-only forward runs at (without --cut)


def tapped_module(backbone: Backbone, cut: str | None, pool: str | None = None,
                  tta: str = "none") -> Taps:
    """The module an extraction runs for `cut`, `pool` ("auto": the backbone's default block)
    and `tta` (features averaged over the image's symmetries)."""
    pool = pool_block(backbone, pool, cut)
    if not cut and not pool and tta == "none":
        return Taps(None, None, None, 0)
    module = backbone.model
    if cut or pool:
        from featx.backbones.cuts import WithMaps, WithPooled  # only taps need the trunk registry

        trunk = _trunk(backbone, f"--cut {cut}" if cut else f"--pool {pool}")
        if cut:
            trunk.check(cut, backbone.name)
            module = WithMaps(trunk, cut)
        if pool:
            module = WithPooled(module, trunk.block(pool))
    if tta != "none":
        from featx.backbones.symmetry import Symmetrized

        module = Symmetrized(module, tta)
    module = module.eval()
    # One forward tells the shapes. Pooled columns and TTA keep their width at any input size, so
    # without --cut a small image answers (a no-op re-run pays ~1/12 of a full-size forward);
    # --cut's maps are as big as the input, so they are measured at the real size.
    size = backbone.preprocess.input_size if cut else min(backbone.preprocess.input_size, SHAPE_PROBE_PX)
    with torch.no_grad():
        out = module(torch.zeros(1, 3, size, size))
    feats, maps = out if cut else (out, None)
    return Taps(module, tuple(maps.shape[1:]) if cut else None, pool,
                int(feats.shape[1]) - backbone.spec.feature_dim)


def engine_variant(backbone: Backbone, config: ExtractConfig, taps: Taps | None = None) -> str | None:
    """What the exported module computes beyond the backbone (the ONNX cache key), or None."""
    pool = taps.pool if taps is not None else pool_block(backbone, config.pool, config.cut)
    parts = ([f"pool-{pool}"] if pool else []) + ([f"tta-{config.tta}"] if config.tta != "none" else [])
    return "-".join(parts) or None


def pool_block(backbone: Backbone, pool: str | None, cut: str | None = None) -> str | None:
    """`--pool` resolved: a block name, or None for final features only. "auto" is the
    backbone's default block where its cut points are known (else None), or the `--cut` block
    when that is higher: `finetune --from-block` recomputes the pooled columns only from blocks
    above its cut."""
    if pool in (None, "", "none"):
        return None
    from featx.backbones.cuts import trunk_for

    if pool == "auto":
        trunk = trunk_for(backbone.model)
        if trunk is None:
            return None
        if cut in trunk.cuts and trunk.cuts.index(cut) > trunk.cuts.index(trunk.default_pool):
            return cut
        return trunk.default_pool
    _trunk(backbone, f"--pool {pool}").check(pool, backbone.name)
    return pool


def _trunk(backbone: Backbone, option: str):
    from featx.backbones.cuts import trunk_for

    trunk = trunk_for(backbone.model)
    if trunk is None:
        raise ConfigError(f"{option}: {backbone.name} has no known cut points (`featx backbones "
                          "--cuts NAME` lists them for efficientnet_lite, ResNets and features-based "
                          "models)")
    return trunk


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {message}", highlight=False)
