"""featx.data.images: every file becomes upright 8-bit RGB, or an ImageError naming it and why."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from featx.errors import ImageError
from featx.data.images import image_to_tensor, load_image
from tests.conftest import write_image


def test_exif_orientation_is_applied(tmp_path):
    # A 40x20 landscape image stored with EXIF orientation 6 (rotate 90 CW) displays as 20x40.
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 20))  # blue band on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.size == (20, 40)
    top = np.asarray(out)[:5].reshape(-1, 3).mean(0)  # left edge turned clockwise -> top
    assert top[2] > 200 and top[0] < 60


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "1"])
def test_modes_become_rgb(tmp_path, mode):
    ext = ".tif" if mode == "CMYK" else ".png"
    out = load_image(write_image(tmp_path / f"x{ext}", 1, mode=mode))
    assert out.mode == "RGB" and out.size == (40, 32)


def test_16bit_is_scaled_not_clipped(tmp_path):
    arr = np.full((8, 8), 65535, dtype=np.uint16)
    arr[:, :4] = 32896  # 128 * 257
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    out = np.asarray(load_image(path))
    assert out[0, 0].tolist() == [128, 128, 128] and out[0, 7].tolist() == [255, 255, 255]


def test_transparent_pixels_composite_on_white(tmp_path):
    path = tmp_path / "alpha.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(path)
    assert np.asarray(load_image(path))[0, 0].tolist() == [255, 255, 255]


def _truncated(tmp_path):
    full = write_image(tmp_path / "full.jpg", 2, size=(64, 64))
    data = full.read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    return path


def _file(name: str, data: bytes):
    def make(folder):
        (folder / name).write_bytes(data)
        return folder / name
    return make


BROKEN = {
    "zero-byte": (_file("empty.png", b""), "empty file"),
    "text named .jpg": (_file("notes.jpg", b"hello"), "not an image"),
    "corrupt png": (_file("bad.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 50), ""),
    "truncated jpeg": (_truncated, "truncated"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_files_raise_image_error_with_name_and_reason(tmp_path, kind):
    make, reason = BROKEN[kind]
    path = make(tmp_path)
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(path) in str(info.value) and reason in info.value.reason
    assert "\n" not in str(info.value)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    import featx.data.images

    monkeypatch.setattr(featx.data.images, "MAX_PIXELS", 1000)
    path = write_image(tmp_path / "big.png", 3, size=(50, 50))
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(path)


def test_image_to_tensor_layout(tmp_path):
    t = image_to_tensor(load_image(write_image(tmp_path / "a.png", 4, size=(10, 6))))
    assert t.shape == (3, 6, 10) and t.dtype.is_floating_point is False


def _sliver(path, width: int, height: int = 1):
    Image.new("L", (width, height), 128).save(path)  # a few KB: PNG compresses a flat row
    return path


def test_extreme_aspect_ratio_is_refused_before_decoding(tmp_path, monkeypatch):
    """Issue 17.3: a 4,000,000x1 PNG (3,957 bytes) passed the pixel-count guard; resized to the
    input size it asked for 64 GB. It is refused from its header, before any pixel is decoded."""
    path = _sliver(tmp_path / "wide.png", 4_000_000)
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded a refused image"))
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(path) in str(info.value) and "aspect ratio" in info.value.reason
    assert "4000000x1" in info.value.reason


def test_ordinary_panoramas_still_load(tmp_path):
    assert load_image(_sliver(tmp_path / "pano.png", 2000, 100)).size == (2000, 100)


def test_oversized_jpeg_is_reduced_while_decoding(tmp_path, monkeypatch):
    """A JPEG over the pixel limit is decoded at 1/2, 1/4 or 1/8 scale (DCT scaling) to fit it,
    rather than refused: the reduced image is never larger than the limit."""
    import featx.data.images

    path = write_image(tmp_path / "big.jpg", 3, size=(160, 120))
    monkeypatch.setattr(featx.data.images, "MAX_PIXELS", 160 * 120 // 3)
    img = load_image(path)
    assert img.size == (80, 60) and img.mode == "RGB"
    monkeypatch.setattr(featx.data.images, "MAX_PIXELS", 160 * 120 // 100)  # even 1/8 is too big
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(path)


def test_device_jpeg_decoding_applies_the_same_size_rules(tmp_path, monkeypatch):
    """The nvjpeg path (run here on the CPU) refuses what load_image refuses, from the header."""
    import torch

    import featx.data.images
    from featx.data.images import decode_jpegs, read_file_bytes

    good = write_image(tmp_path / "good.jpg", 1, size=(40, 32))
    strip = tmp_path / "strip.jpg"
    Image.new("RGB", (2020, 20), (9, 9, 9)).save(strip)
    big = write_image(tmp_path / "big.jpg", 3, size=(160, 120))
    monkeypatch.setattr(featx.data.images, "MAX_PIXELS", 160 * 120 // 3)
    paths = [good, strip, big]
    out = decode_jpegs([read_file_bytes(p) for p in paths], paths, torch.device("cpu"))
    assert out[0].shape == (3, 32, 40)
    assert isinstance(out[1], str) and "aspect ratio" in out[1]
    assert out[2].shape == (3, 60, 80)  # reduced while decoding, as load_image does


@pytest.mark.slow
def test_a_strip_among_good_images_fails_alone_and_costs_no_memory():
    """Issue 17 done-when: a 4,000,000x1 PNG in a folder of 10 good images: extraction finishes,
    the file is recorded as failed with its reason, peak memory within 1.2x of the run without it
    (benchmarks/bomb_memory.py: two fresh processes, ru_maxrss)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bomb_memory.py"
    done = subprocess.run([sys.executable, str(script), "--json"], capture_output=True, text=True, timeout=600)
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    assert "aspect ratio" in runs["with"]["failed"]["ants/strip.png"]
    assert len(runs["with"]["failed"]) == 1 and not runs["without"]["failed"]
    assert runs["ratio"] <= 1.2 and done.returncode == 0
