"""What an extraction is asked to do (ExtractConfig) and what it reports (ExtractResult)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from featx.backbones.symmetry import TTA_RECIPES
from featx.runtime.device import DECODES
from featx.extraction.engines import ENGINES
from featx.errors import ConfigError

STORE_DTYPES = ("float16", "float32")
AMP_MODES = ("bf16", "fp16", "off")
# Beyond these a value is a typo, not a plan: each view is one more forward pass per training
# image (1000 views of ImageNet is weeks of GPU time), and a 4096 px crop is 50 MB per image.
MAX_VIEWS = 1000
MAX_INPUT_SIZE = 4096


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
        checks = [
            (0 <= self.views <= MAX_VIEWS, "views", f"must be between 0 and {MAX_VIEWS}"),
            (self.batch_size >= 1, "batch_size", "must be >= 1"),
            (self.workers is None or self.workers >= 0, "workers", "must be >= 0"),
            (self.dtype in STORE_DTYPES, "dtype", f"must be one of {STORE_DTYPES}"),
            (self.decode in DECODES, "decode", "must be auto, cpu or gpu"),
            (self.amp in AMP_MODES, "amp", "must be bf16, fp16 or off"),
            (self.input_size is None or 16 <= self.input_size <= MAX_INPUT_SIZE, "input_size",
             f"must be between 16 and {MAX_INPUT_SIZE} px"),
            (self.engine in ENGINES, "engine", f"must be one of {', '.join(ENGINES)}"),
            (self.threads is None or self.threads >= 1, "threads", "must be >= 1"),
            (self.tta in TTA_RECIPES, "tta", f"must be one of {', '.join(TTA_RECIPES)}"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ConfigError(f"{name} {rule}, got {getattr(self, name)!r}")


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

    def to_dict(self) -> dict:
        return asdict(self)
