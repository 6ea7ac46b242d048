"""Robust image decoding: every file either becomes an RGB image or an ImageError with a reason.

Folders that users did not curate hold zero-byte files, text files named .jpg, truncated
downloads, CMYK scans, 16-bit PNGs, decompression bombs and 4 KB strips (4,000,000x1) that a
resize would blow up to gigabytes. Each of them must be reported by name and skipped, never crash
a long run or exhaust memory (see docs/reliability.md, items 8-11 and 19).
"""

from __future__ import annotations

import io
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
# Pillow's default bomb limit (~89 Mpx) warns first and raises at twice that; we raise at the limit
# (JPEGs between the limit and twice it are decoded at half size by the codec's DCT scaling;
# Image.open refuses anything larger before we can ask for a smaller scale).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS
# The pixel limit bounds the source, not what a network's resize makes of it: a 4,000,000x1 PNG
# (4 KB) has its short side resized to ~256 px, 1 Gpx, 64 GB in float (issue 17). Longer than
# 100:1 is a strip, a sprite sheet or an attack, not a photo (wide panoramas are ~10:1).
MAX_ASPECT = 100


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether the name ends in an image extension (as Path.suffix reads it: "a.png" yes, ".png"
    no), from the string alone: a folder walk asks this of a million names."""
    name = os.path.basename(os.fspath(path).rstrip("/" + os.sep))
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in IMAGE_EXTENSIONS


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
    return decode_image(path, path)


def decode_image(source: str | os.PathLike | io.BytesIO, name: str, keep_gray: bool = False) -> Image.Image:
    """Decode a file (a path, or bytes in a BytesIO: an upload) into an upright 8-bit RGB image,
    under the rules above; an ImageError naming `name` and the reason otherwise. `keep_gray`: an
    8-bit grayscale ("L") image stays "L", for a caller that resizes before it converts (Pillow
    resizes each band alike, so the RGB pixels are the same, for a third of the resize)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open(source) as img:
                _check_size(img, name)
                img.seek(0)  # animated GIF/TIFF: the first frame
                img.load()  # decode now: truncation shows here, not later in a worker
                upright = ImageOps.exif_transpose(img)
                return upright if keep_gray and upright.mode == "L" else to_rgb(upright)
    except ImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageError(name, f"decompression bomb refused ({exc})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(name, "not an image file Pillow can identify") from None
    # Malformed files raise more than OSError (ValueError, struct.error, SyntaxError, ...).
    except Exception as exc:  # noqa: BLE001
        raise ImageError(name, _describe(exc)) from None


def _open(source) -> Image.Image:
    """Image.open on the supported formats; sizes are judged by `_check_size`, which may still
    reduce a large JPEG, rather than by Pillow's warning (sizes over twice its limit still raise)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(source, formats=PIL_FORMATS)


def _check_size(img: Image.Image, path: str) -> None:
    """Refuse, from the header alone, an image with no pixels, an extreme aspect ratio or too many
    pixels; a JPEG over the pixel limit is first set to decode at the smallest DCT scale (1/2,
    1/4, 1/8) that fits it."""
    if img.format == "JPEG" and img.size[0] * img.size[1] > MAX_PIXELS:
        _reduce_jpeg(img)
    problem = size_problem(*img.size)
    if problem:
        raise ImageError(path, problem)


def size_problem(width: int, height: int) -> str | None:
    """Why an image of this size must not be decoded, or None: no pixels, an aspect ratio over
    MAX_ASPECT:1 (its resize would be huge), or over MAX_PIXELS pixels (a decompression bomb)."""
    if width <= 0 or height <= 0:
        return f"image has no pixels ({width}x{height})"
    if max(width, height) > MAX_ASPECT * min(width, height):
        return f"extreme aspect ratio refused ({width}x{height} px, longer than {MAX_ASPECT}:1)"
    if width * height > MAX_PIXELS:
        return f"decompression bomb refused ({width}x{height} px > {MAX_PIXELS} px limit)"
    return None


def _reduce_jpeg(img: Image.Image) -> None:
    width, height = img.size
    for scale in (2, 4, 8):
        if -(-width // scale) * -(-height // scale) <= MAX_PIXELS:
            img.draft(img.mode, (max(1, width // scale), max(1, height // scale)))
            return


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


def read_file_bytes(path: str | os.PathLike) -> torch.Tensor:
    """A file's bytes as a uint8 tensor (what `decode_jpegs` takes)."""
    from torchvision.io import read_file

    return read_file(str(path))


def decode_jpegs(datas: list[torch.Tensor], paths: list[Path],
                 device: torch.device) -> list[torch.Tensor | str]:
    """RGB uint8 images decoded on `device` (nvjpeg on CUDA), EXIF orientation applied; per file
    the image, or the reason it failed. Files nvjpeg refuses (CMYK and other JPEG variants), and
    files whose header fails the size rules of `load_image`, are decoded (or refused) by Pillow
    from `paths`, so the GPU path keeps or drops the same files as the CPU path."""
    from torchvision.io import ImageReadMode, decode_jpeg

    out: list[torch.Tensor | str | None] = [
        None if _header_ok(data) else _decode_with_pillow(path, device) for data, path in zip(datas, paths)]
    todo = [i for i, img in enumerate(out) if img is None]
    if todo:
        try:
            decoded = decode_jpeg([datas[i] for i in todo], mode=ImageReadMode.RGB, device=device,
                                  apply_exif_orientation=True)
        except RuntimeError:  # one bad file fails the whole call: decode one by one
            decoded = [_decode_one_jpeg(datas[i], paths[i], device) for i in todo]
        for i, img in zip(todo, decoded):
            out[i] = img
    return out


def _header_ok(data: torch.Tensor) -> bool:
    """Does a JPEG's header (parsed by Pillow from the bytes; nothing decoded) pass `size_problem`?
    Bytes Pillow cannot parse count as fine here: nvjpeg, then Pillow, will say what is wrong."""
    try:
        with _open(io.BytesIO(data.numpy().tobytes())) as img:
            return size_problem(*img.size) is None
    except Image.DecompressionBombError:  # over twice the pixel limit: Pillow will refuse it
        return False
    except Exception:  # noqa: BLE001 - judged again when decoded
        return True


def _decode_with_pillow(path: Path, device: torch.device) -> torch.Tensor | str:
    try:
        return image_to_tensor(load_image(path)).to(device)
    except ImageError as exc:
        return exc.reason


def _decode_one_jpeg(data: torch.Tensor, path: Path, device: torch.device) -> torch.Tensor | str:
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)
    except RuntimeError:
        return _decode_with_pillow(path, device)
