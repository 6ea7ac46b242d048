"""How a backbone wants its images: the short-side resize, the centre crop, the normalisation.

Data, not a model: the transforms, the store's provenance and an exported model all read it, so it
lives below the backbones that declare it.

The resize is Pillow's (`resize_with="pillow"`, since issue 29): featx and a client that has only
Pillow and numpy (docs/deploy.md) then compute the same pixels, bit for bit. Stores and heads made
before recorded no `resize_with`; they were resized by torchvision's antialiased kernel on uint8
tensors ("torchvision"), which differs from Pillow by one grey level on ~0.06% of the values.
That record (`to_dict`) is their identity, so it is kept exactly as it was, and whatever
continues an old store (an update, a resume, `featx predict` with a head trained on it) follows
the store's resize, never mixing the two (`following`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

from PIL import Image

from featx.errors import ConfigError

# The usual ImageNet evaluation crop: resize the short side to size / 0.875, crop `size`.
IMAGENET_CROP = 0.875
RESIZERS = ("pillow", "torchvision")
# What a recorded transform without `resize_with` used: every store and head before issue 29.
LEGACY_RESIZE = "torchvision"
# torchvision's interpolation names (Preprocess.interpolation) -> Pillow's (Image.Resampling).
PILLOW_NAMES = {"bilinear": "BILINEAR", "bicubic": "BICUBIC", "nearest": "NEAREST", "box": "BOX",
                "hamming": "HAMMING", "lanczos": "LANCZOS"}


@dataclass(frozen=True)
class Preprocess:
    """How images become input tensors: resize the short side, center crop, normalise."""

    input_size: int
    resize_size: int
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    resize_with: str = "pillow"  # or "torchvision": the kernel of stores made before issue 29

    def __post_init__(self) -> None:
        if self.resize_with not in RESIZERS:
            raise ConfigError(f"resize_with {self.resize_with!r}: expected one of {', '.join(RESIZERS)}")

    @classmethod
    def imagenet(cls, input_size: int) -> "Preprocess":
        """ImageNet mean/std, resize to input_size / 0.875, center crop input_size."""
        return cls(input_size=input_size, resize_size=int(round(input_size / IMAGENET_CROP)))

    def with_input_size(self, size: int) -> "Preprocess":
        """Same crop ratio at another input size (e.g. 300 px for full-resolution ELPV cells)."""
        ratio = self.resize_size / self.input_size
        return replace(self, input_size=size, resize_size=int(round(size * ratio)))

    @classmethod
    def from_dict(cls, recorded: Mapping) -> "Preprocess":
        """A recorded preprocessing (`to_dict`'s keys) read back; no `resize_with`: torchvision's."""
        known = {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()
                 if k in cls.__dataclass_fields__}
        return cls(**{**known, "resize_with": recorded_resize(recorded)})

    def following(self, recorded: Mapping | None) -> "Preprocess":
        """This preprocessing with the resize of a recorded one (a store's `transform.clean`, a
        head's `preprocess`): what continues an old store or predicts with an old head."""
        return replace(self, resize_with=recorded_resize(recorded)) if recorded else self

    def to_dict(self) -> dict:
        """The record (a store's `transform.clean`, a head's `preprocess`). The legacy resize
        is left out, so that the records, and so the identities, of old stores are unchanged."""
        out = asdict(self)
        if self.resize_with == LEGACY_RESIZE:
            del out["resize_with"]
        return out


def recorded_resize(recorded: Mapping | None) -> str:
    """The resize a recorded preprocessing used ("torchvision" when it names none)."""
    return str((recorded or {}).get("resize_with", LEGACY_RESIZE))


def pillow_name(interpolation: str) -> str:
    """Pillow's name (Image.Resampling) of a torchvision interpolation name."""
    try:
        return PILLOW_NAMES[interpolation]
    except KeyError:
        raise ConfigError(f"interpolation {interpolation!r} has no Pillow equal ({', '.join(PILLOW_NAMES)})") from None


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the short side `size` and the long side floored, as torchvision sizes
    it (featx's rule since before issue 29; clients copy it)."""
    long = int(size * max(width, height) / min(width, height))
    return (size, long) if width <= height else (long, size)


def pillow_resize_short_side(img: Image.Image, size: int, interpolation: str) -> Image.Image:
    """The short side of `img` resized to `size` by Pillow (an exact, antialiased convolution)."""
    return img.resize(resized_size(*img.size, size), Image.Resampling[pillow_name(interpolation)])
