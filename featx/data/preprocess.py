"""How a backbone wants its images: the short-side resize, the centre crop, the normalisation.

Data, not a model: the transforms, the store's provenance and an exported model all read it, so it
lives below the backbones that declare it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

# The usual ImageNet evaluation crop: resize the short side to size / 0.875, crop `size`.
IMAGENET_CROP = 0.875


@dataclass(frozen=True)
class Preprocess:
    """How images become input tensors: resize the short side, center crop, normalise."""

    input_size: int
    resize_size: int
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"

    @classmethod
    def imagenet(cls, input_size: int) -> "Preprocess":
        """ImageNet mean/std, resize to input_size / 0.875, center crop input_size."""
        return cls(input_size=input_size, resize_size=int(round(input_size / IMAGENET_CROP)))

    def with_input_size(self, size: int) -> "Preprocess":
        """Same crop ratio at another input size (e.g. 300 px for full-resolution ELPV cells)."""
        ratio = self.resize_size / self.input_size
        return replace(self, input_size=size, resize_size=int(round(size * ratio)))

    def to_dict(self) -> dict:
        return asdict(self)
