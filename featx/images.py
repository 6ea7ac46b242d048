"""Robust image decoding: every file either becomes an RGB image or an ImageError with a reason.

Folders that users did not curate hold zero-byte files, text files named .jpg, truncated
downloads, CMYK scans, 16-bit PNGs and decompression bombs. Each of them must be reported by
name and skipped, never crash a long run (see docs/reliability.md, items 8-11).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from featx.errors import ImageError

if TYPE_CHECKING:  # torch is imported where tensors are made: scanning a dataset needs none
    import torch

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
# Limit decoders to the formats we claim to support: fewer parsers, less attack surface.
# (Multi-picture JPEGs open through the JPEG plugin; "MPO" is not a separate opener.)
PIL_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
# Transparent pixels are composited on white, the usual page background for product/web images.
BACKGROUND = (255, 255, 255)
# Pillow's default bomb limit (~89 Mpx) warns first and raises at twice that; we raise at the limit.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode `path` fully into an upright 8-bit RGB image.

    Raises:
        ImageError: with a short reason for any file that cannot be used.
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=PIL_FORMATS) as img:
                _check_pixels(img)
                img.seek(0)  # animated GIF/TIFF: the first frame
                img.load()  # decode now: truncation shows here, not later in a worker
                return to_rgb(ImageOps.exif_transpose(img))
    except ImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageError(path, f"decompression bomb refused ({exc})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(path, "not an image file Pillow can identify") from None
    # Malformed files raise more than OSError (ValueError, struct.error, SyntaxError, ...).
    except Exception as exc:  # noqa: BLE001
        raise ImageError(path, _describe(exc)) from None


def _check_pixels(img: Image.Image) -> None:
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise ImageError(
            img.filename, f"decompression bomb refused ({width}x{height} px > {MAX_PIXELS} px limit)"
        )
    if width == 0 or height == 0:
        raise ImageError(img.filename, f"image has no pixels ({width}x{height})")


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "truncated" in text.lower():
        return f"truncated image ({text})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, scaling (not clipping) high bit depths."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit data (PNG/TIFF) is scaled to 8 bits; "I" is how Pillow opens 16-bit PNGs.
        arr = np.asarray(img, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.size and np.nanmax(arr) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 tensor (3, H, W)."""
    import torch

    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def probe_image(path: str | os.PathLike) -> tuple[int, int, str]:
    """(width, height, mode) from the header only, for quick dataset summaries."""
    with Image.open(path, formats=PIL_FORMATS) as img:
        return img.size[0], img.size[1], img.mode


def read_file_bytes(path: str | os.PathLike) -> torch.Tensor:
    """A file's bytes as a uint8 tensor (what `decode_jpegs` takes)."""
    from torchvision.io import read_file

    return read_file(str(path))


def decode_jpegs(datas: list[torch.Tensor], paths: list[Path],
                 device: torch.device) -> list[torch.Tensor | str]:
    """RGB uint8 images decoded on `device` (nvjpeg on CUDA), EXIF orientation applied; per file
    the image, or the reason it failed. Files nvjpeg refuses (CMYK and other JPEG variants) are
    decoded by Pillow from `paths`."""
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True))
    except RuntimeError:  # one bad file fails the whole call: decode one by one
        return [_decode_one_jpeg(data, path, device) for data, path in zip(datas, paths)]


def _decode_one_jpeg(data: torch.Tensor, path: Path, device: torch.device) -> torch.Tensor | str:
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)
    except RuntimeError:
        try:
            return image_to_tensor(load_image(path)).to(device)
        except ImageError as exc:
            return exc.reason
