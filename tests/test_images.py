"""featx.images: every file becomes upright 8-bit RGB, or an ImageError naming it and why."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from featx.errors import ImageError
from featx.images import image_to_tensor, load_image
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
    import featx.images

    monkeypatch.setattr(featx.images, "MAX_PIXELS", 1000)
    path = write_image(tmp_path / "big.png", 3, size=(50, 50))
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(path)


def test_image_to_tensor_layout(tmp_path):
    t = image_to_tensor(load_image(write_image(tmp_path / "a.png", 4, size=(10, 6))))
    assert t.shape == (3, 6, 10) and t.dtype.is_floating_point is False
