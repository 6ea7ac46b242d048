"""What an extraction is asked to do (ExtractConfig) and what it reports (ExtractResult)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from featx.config import check_settings, check_types
from featx.errors import ConfigError
from featx.extraction.settings import EXTRACT


@dataclass(frozen=True)
class ExtractConfig:
    views: int = 0  # augmented views per training image (K)
    aug: str = "mild"  # recipe name or YAML path, used when views > 0
    batch_size: int = 64  # images per forward pass (clean + views)
    workers: int | None = None  # decoding processes; None = 1 on CPU, up to 16 on CUDA
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float16"  # store dtype: features lose nothing a linear head can use
    seed: int = 0  # augmented views (and random-init weights) derive from it
    # "default" (the backbone's pretrained weights) | None or "none" (seeded random init, as
    # torchvision's weights=None) | a path to safetensors / a state dict
    weights: str | None = "default"
    input_size: int | None = None  # override the backbone's crop size
    decode: str = "auto"  # auto | cpu | gpu (nvjpeg for JPEG files; auto = gpu on CUDA)
    amp: str = "bf16"  # bf16 | fp16 | off, CUDA only
    channels_last: bool = True
    engine: str = "auto"  # auto (onnxruntime on CPU, torch on CUDA) | torch | onnxruntime
    threads: int | None = None  # ONNX Runtime intra-op threads; None = torch's thread count
    cut: str | None = None  # also store the activation maps entering this block (finetune --from-block)
    # Append the average+max pooled maps entering this block to the features (multi-layer
    # features): "auto" = the backbone's default block where its cut points are known; "none".
    pool: str | None = "auto"
    # Store each feature averaged over the image and its symmetries (test-time augmentation):
    # none | flip | hv-flip | dihedral (90-degree turns: orientation-free data only).
    tta: str = "none"
    overwrite: bool = False
    # A store of the same settings over a changed dataset is updated: only new or changed images
    # are extracted (featx.store.update); False refuses it, explaining the change in files.
    update: bool = True

    def __post_init__(self) -> None:
        if self.weights is None:  # one spelling from here on (store names, provenance)
            object.__setattr__(self, "weights", "none")
        # Types first: views=2.5 or True would otherwise name a store "...mildx2.5" and fail in a worker
        check_types(self, ints=("views", "batch_size", "workers", "seed", "input_size", "threads"))
        for name in ("aug", "device", "weights", "tta", "pool", "cut"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise ConfigError(f"{name} must be a text, got {value!r}")
        check_settings(self, EXTRACT)  # tta's names among them: featx.backbones.symmetry's recipes


@dataclass
class ExtractResult:
    store: str
    backbone: str
    status: str  # created | resumed | updated | complete (nothing to do)
    samples: int
    images: int  # images forwarded in this run
    failed: int
    seconds: float
    images_per_second: float
    device: str
    warnings: list[str] = field(default_factory=list)  # e.g. a class left with no training image
    update: str = ""  # what an update did: "+240 new, 12 changed, 3 removed, 2,369 kept"
    version: int = 0  # the store's version after this run (1: as first extracted)
    same_data: bool = False  # an update that found only file times changed: the version is kept

    def to_dict(self) -> dict:
        return asdict(self)
