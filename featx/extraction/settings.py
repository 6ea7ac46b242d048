"""ExtractConfig's choices and ranges, declared once (featx.config explains the tables): the
config checks itself against them and `featx extract` builds its options from them. Torch-free,
so `featx --help` stays quick."""

from __future__ import annotations

from featx.config import Between, OneOf
from featx.runtime.settings import AMP_MODES, DECODES

STORE_DTYPES = ("float16", "float32")
ENGINES = ("auto", "torch", "onnxruntime")  # inference engines (featx.extraction.engines)
TTA_NAMES = ("none", "flip", "hv-flip", "dihedral")  # the recipes of featx.backbones.symmetry (torch)
# Beyond these a value is a typo, not a plan: each view is one more forward pass per training
# image (1000 views of ImageNet is weeks of GPU time), and a 4096 px crop is 50 MB per image.
MAX_VIEWS = 1000
MAX_INPUT_SIZE = 4096

EXTRACT = {
    "views": Between(0, MAX_VIEWS),
    "batch_size": Between(1),
    "workers": Between(0, optional=True),
    "dtype": OneOf(STORE_DTYPES),
    "decode": OneOf(DECODES),
    "amp": OneOf(AMP_MODES),
    "input_size": Between(16, MAX_INPUT_SIZE, optional=True),
    "engine": OneOf(ENGINES),
    "threads": Between(1, optional=True),
    "tta": OneOf(TTA_NAMES),
}
