"""An exported model's input from image bytes, in Pillow and numpy only (no torch): what the
service runs and what docs/deploy.md's client does in a dozen lines.

featx resizes its clean views with Pillow (featx.data.preprocess, `resize_with="pillow"`), so this
resize, with torchvision's size rules (the long side floored, the crop offset Python's
round((size - crop) / 2)), gives featx's very pixels. A model exported from a head on a store made
before issue 29 says `resize_with: "torchvision"`: featx resized that store with torchvision's
antialiased kernel, which Pillow matches up to one grey level on a few pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from featx.data.images import decode_image
from featx.data.preprocess import resized_size
from featx.errors import ImageError


@dataclass(frozen=True)
class InputSpec:
    """How images become the model's input (the file's `featx.preprocess`)."""

    resize: int  # short side, px
    crop: int  # centre crop, px (the model's S)
    interpolation: str = "BILINEAR"  # Pillow's name (Image.Resampling)
    mode: str = "RGB"
    resize_with: str = "pillow"  # the kernel featx used ("torchvision": Pillow equals it up to rounding)

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        # Files exported before issue 29 name no kernel: featx resized with torchvision's then.
        return cls(int(d["resize"]), int(d["crop"]), str(d.get("interpolation", "BILINEAR")),
                   str(d.get("mode", "RGB")), str(d.get("resize_with", "torchvision")))


def decode(data: bytes, name: str = "image") -> Image.Image:
    """Bytes -> an upright 8-bit RGB image, or grayscale ("L", which `to_input` resizes before it
    converts: the same pixels, 3.8 -> 2.7 ms an ELPV cell), under featx's rules for files
    (formats, bombs, extreme aspect ratios, truncation): an ImageError naming `name` and the
    reason otherwise."""
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    return decode_image(io.BytesIO(data), name, keep_gray=True)


def to_input(img: Image.Image, spec: InputSpec) -> np.ndarray:
    """RGB or L image -> uint8 [S, S, 3] RGB: short side resized to `spec.resize`, centre crop
    `spec.crop`."""
    img = img.resize(resized_size(*img.size, spec.resize), Image.Resampling[spec.interpolation])
    left, top = round((img.width - spec.crop) / 2), round((img.height - spec.crop) / 2)
    img = img.crop((left, top, left + spec.crop, top + spec.crop))
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)


def input_batch(images: list[bytes], spec: InputSpec, names: list[str] | None = None) -> np.ndarray:
    """uint8 [n, S, S, 3] from encoded images; the first undecodable one raises ImageError."""
    names = names or [f"image {i + 1}" for i in range(len(images))]
    return np.stack([to_input(decode(data, name), spec) for data, name in zip(images, names)])
