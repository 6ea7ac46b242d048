"""Property-based tests (Hypothesis) of featx's data inputs: malformed images, manifests and recipes.

The promise (docs/reliability.md 8-12, issue 17): every file either decodes to an RGB image that
the transforms can use, or raises ImageError naming the file and why; every manifest becomes a
Dataset or raises a FeatxError naming it; every recipe that loads runs. Never another exception,
never a hang: each example runs under an alarm, and examples are few and small (a second or two
in all per test, and no database is written into the checkout).
"""

from __future__ import annotations

import io
import os
import signal
import string
import struct
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from PIL import Image

from featx.backbones import Preprocess
from featx.data import DatasetOptions, open_dataset
from featx.errors import ConfigError, DataError, FeatxError, ImageError
from featx.data.images import MAX_ASPECT, MAX_PIXELS, decode_jpegs, image_to_tensor, load_image
from featx.data.transforms import OPS, clean_view, load_recipe, make_views

PRE = Preprocess(input_size=32, resize_size=36)
# FEATX_FUZZ_SCALE=50 makes every test try 50 times as many examples (a bug hunt, not CI).
SCALE = float(os.environ.get("FEATX_FUZZ_SCALE", "1"))


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


FUZZ = settings(max_examples=examples(60), deadline=10_000, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HANG_SECONDS = 30  # one example; the slowest legitimate one takes well under a second


@contextmanager
def no_hang(seconds: int = HANG_SECONDS):
    """Fail (rather than hang the suite) if the body takes longer than `seconds`."""
    def alarm(signum, frame):
        raise TimeoutError(f"no answer in {seconds} s: a hang")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# --- images ----------------------------------------------------------------------------------------

# Modes Pillow can write, and the formats that take each (odd ones included: 16-bit, float, CMYK).
MODES = {"RGB": ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "PPM", "GIF"), "L": ("PNG", "JPEG", "BMP", "TIFF", "PPM"),
         "1": ("PNG", "BMP", "TIFF"), "P": ("PNG", "GIF", "BMP", "TIFF"), "RGBA": ("PNG", "TIFF", "WEBP"),
         "LA": ("PNG", "TIFF"), "CMYK": ("JPEG", "TIFF"), "I;16": ("PNG", "TIFF"), "I": ("TIFF", "PNG"),
         "F": ("TIFF",), "YCbCr": ("JPEG", "TIFF")}
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp", "PPM": ".ppm",
          "GIF": ".gif"}


@st.composite
def encoded_images(draw) -> tuple[str, bytes]:
    """(suffix, bytes) of a small valid image of any mode Pillow writes."""
    mode = draw(st.sampled_from(sorted(MODES)))
    fmt = draw(st.sampled_from(MODES[mode]))
    w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    seed = draw(st.integers(0, 2**16))
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode if mode not in ("I;16", "I", "F") else "L")
    if mode in ("I;16", "I", "F"):
        img = img.convert(mode) if mode != "I;16" else Image.fromarray(arr[..., 0].astype(np.uint16) * 257)
    buf = io.BytesIO()
    try:
        img.save(buf, format=fmt)
    except (OSError, ValueError, KeyError):
        reject()  # a combination this Pillow cannot write
    return SUFFIX[fmt], buf.getvalue()


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


@st.composite
def png_headers(draw) -> tuple[str, bytes]:
    """A PNG whose header declares any size (up to 2^31-1 a side) over a little data."""
    w = draw(st.one_of(st.integers(1, 64), st.integers(1, 2**31 - 1), st.sampled_from([4_000_000, 150_000])))
    h = draw(st.one_of(st.integers(1, 64), st.integers(1, 2**31 - 1), st.just(1)))
    depth, color = draw(st.sampled_from([(8, 0), (8, 2), (8, 6), (16, 0), (1, 0), (8, 3), (8, 4)]))
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0)
    raw = draw(st.one_of(st.binary(max_size=64), st.integers(0, 4096).map(lambda n: b"\0" * n)))
    idat = zlib.compress(raw) if draw(st.booleans()) else raw
    plte = png_chunk(b"PLTE", b"\0\0\0" * 4) if color == 3 else b""
    return ".png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + plte + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


@st.composite
def jpeg_sizes(draw) -> tuple[str, bytes]:
    """A small valid JPEG whose frame header (SOF0) is rewritten to declare another size."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 8), (10, 200, 30)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    h, w = draw(st.integers(0, 65535)), draw(st.integers(0, 65535))
    data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
    return ".jpg", bytes(data)


@st.composite
def damaged(draw, images) -> tuple[str, bytes]:
    """An image truncated, with bytes flipped, or both."""
    suffix, data = draw(images)
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, max(0, len(data) - 1)))]
    flips = draw(st.lists(st.tuples(st.integers(0, 2**20), st.integers(1, 255)), max_size=4))
    if data and flips:
        buf = bytearray(data)
        for at, x in flips:
            buf[at % len(buf)] ^= x
        data = bytes(buf)
    return suffix, data


random_files = st.tuples(st.sampled_from(sorted(set(SUFFIX.values()) | {".jpeg", ".tiff", ".pgm"})),
                         st.binary(max_size=256))
any_image = st.one_of(encoded_images(), damaged(encoded_images()), png_headers(), damaged(png_headers()),
                      jpeg_sizes(), damaged(jpeg_sizes()), random_files)


def check_loaded(path: Path) -> None:
    """The property: an RGB image the transforms take, or ImageError naming `path`."""
    try:
        img = load_image(path)
    except ImageError as exc:
        assert exc.path == str(path) and str(exc).startswith(f"{path}: ") and exc.reason.strip()
        assert "\n" not in str(exc), str(exc)
        return
    w, h = img.size
    assert img.mode == "RGB" and w >= 1 and h >= 1
    assert max(w, h) <= MAX_ASPECT * min(w, h) and w * h <= MAX_PIXELS
    assert clean_view(image_to_tensor(img), PRE).shape == (3, 32, 32)


@FUZZ
@given(any_image)
def test_every_file_decodes_to_rgb_or_raises_image_error_naming_it(case):
    suffix, data = case
    with tempfile.TemporaryDirectory() as tmp, no_hang():
        path = Path(tmp) / f"x{suffix}"
        path.write_bytes(data)
        check_loaded(path)


@settings(FUZZ, max_examples=examples(25))
@given(st.one_of(jpeg_sizes(), damaged(jpeg_sizes()), damaged(encoded_images())))
def test_device_decoding_gives_an_image_or_a_reason(case):
    """decode_jpegs (the nvjpeg path; here on the CPU) never raises for one bad file."""
    suffix, data = case
    with tempfile.TemporaryDirectory() as tmp, no_hang():
        path = Path(tmp) / f"x{suffix}"
        path.write_bytes(data)
        (out,) = decode_jpegs([torch.frombuffer(bytearray(data or b"\0"), dtype=torch.uint8)], [path],
                              torch.device("cpu"))
        assert (isinstance(out, str) and out.strip()) or (out.dtype == torch.uint8 and out.shape[0] == 3)


# --- manifests ---------------------------------------------------------------------------------

HEADER_WORDS = ["path", "file", "image", "label", "class", "target", "split", "subset", "id", "", "Path", "x y"]
CELLS = st.one_of(st.sampled_from(["img/a.png", "img/b.png", "img/c.jpg", "missing.png", "../img/a.png",
                                   "img", "x" * 300 + ".png", "img/a.png\0", "/nonexistent/a.png", "",
                                   "train", "val", "test", "nope", "0.7", "1", "-3", "nan", "cat", "dog"]),
                  st.text(string.printable, max_size=12))
SEPARATORS = st.sampled_from([",", "\t", " ", "  ", ";", "|"])


@st.composite
def manifests(draw) -> str:
    sep = draw(SEPARATORS)
    width = draw(st.integers(1, 4))
    rows = []
    if draw(st.booleans()):
        rows.append([draw(st.sampled_from(HEADER_WORDS)) for _ in range(width)])
    for _ in range(draw(st.integers(0, 6))):
        rows.append([draw(CELLS) for _ in range(draw(st.integers(max(1, width - 1), width + 1)))])
    lines = [sep.join(r) for r in rows]
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["# comment", "", "   ", '"', "\ufeff"])))
    return "\n".join(lines)


dataset_options = st.builds(
    DatasetOptions,
    label_col=st.one_of(st.none(), st.integers(-2, 5), st.sampled_from(["label", "class", "2", "nope", ""])),
    split_col=st.one_of(st.none(), st.integers(-1, 4), st.sampled_from(["split", "subset", "nope"])),
    binarize=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    val_frac=st.floats(0.0, 0.45), test_frac=st.floats(0.0, 0.45), split_seed=st.integers(0, 3))


@pytest.fixture(scope="module")
def images_folder(tmp_path_factory) -> Path:
    """The real images the manifests may name (one of them broken)."""
    from tests.conftest import write_image

    root = tmp_path_factory.mktemp("fuzz-manifests")
    write_image(root / "img" / "a.png", 1)
    write_image(root / "img" / "c.jpg", 3)
    (root / "img" / "b.png").write_bytes(b"not a png")
    return root


@settings(FUZZ, suppress_health_check=[*FUZZ.suppress_health_check, HealthCheck.function_scoped_fixture])
@given(text=manifests(), options=dataset_options, raw=st.one_of(st.none(), st.binary(max_size=64)))
def test_every_manifest_becomes_a_dataset_or_one_error_naming_it(images_folder, text, options, raw):
    path = images_folder / "m.csv"
    path.write_bytes(raw if raw is not None else text.encode("utf-8", "surrogatepass"))
    with no_hang():
        try:
            ds = open_dataset(path, options)
        except DataError as exc:
            assert str(path) in str(exc), str(exc)
            return
    assert ds.samples and [s.path for s in ds.samples] == sorted(s.path for s in ds.samples)
    for s in ds.samples:
        assert -1 <= s.label < len(ds.classes) and s.split in ("train", "val", "test", "unlabeled")
        assert (s.label == -1) == (s.split == "unlabeled") and ds.abspath(s).is_file()


@settings(FUZZ, max_examples=examples(40))
@given(val=st.floats(allow_nan=True), test=st.floats(allow_nan=True))
def test_split_fractions_are_accepted_or_a_config_error(val, test):
    try:
        DatasetOptions(val_frac=val, test_frac=test)
    except ConfigError as exc:
        assert "val_frac" in str(exc) or "test_frac" in str(exc)
        return
    assert 0 <= val and 0 <= test and val + test < 1


# --- recipes ---------------------------------------------------------------------------------------

PARAM_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 5000), st.floats(allow_nan=True),
                         st.sampled_from(["input", "resize", "abc", ""]),
                         st.lists(st.floats(-1, 3, allow_nan=False), max_size=3))
OP_DICTS = st.fixed_dictionaries(
    {"op": st.one_of(st.sampled_from(sorted(OPS)), st.text(max_size=6))},
    optional={k: PARAM_VALUES for k in ("size", "p", "degrees", "pad", "scale", "ratio", "prob")})


@settings(FUZZ, max_examples=examples(80))
@given(ops=st.one_of(st.lists(OP_DICTS, max_size=4), PARAM_VALUES),
       img=st.tuples(st.integers(1, 60), st.integers(1, 60)))
def test_every_recipe_that_loads_runs(ops, img):
    import yaml

    with tempfile.TemporaryDirectory() as tmp, no_hang():
        path = Path(tmp) / "aug.yaml"
        path.write_text(yaml.safe_dump({"ops": ops}))
        try:
            recipe = load_recipe(str(path))
        except ConfigError as exc:
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
            return
        image = torch.randint(0, 256, (3, img[1], img[0]), dtype=torch.uint8)
        views = make_views(image, PRE, recipe, 0, "x.png", [0, 1, 2])
        assert all(v.shape == (3, 32, 32) and v.dtype == torch.uint8 for v in views)


def test_the_fuzz_strategies_reach_what_they_claim():
    """Sanity: the crafted inputs are what the strategies say (so the properties test something)."""
    big = png_headers().example  # noqa: F841 - strategies build
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "wide.png"
        ihdr = struct.pack(">IIBBBBB", 4_000_000, 1, 8, 0, 0, 0, 0)
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 10))
                         + png_chunk(b"IEND", b""))
        with pytest.raises(ImageError, match="aspect ratio"):
            load_image(path)
    assert issubclass(ImageError, FeatxError) and os.sep


# --- folders with symlinks -------------------------------------------------------------------------

FOLDERS = ["ants", "bees", "ants/sub", "bees/sub", "bees/sub/deep"]
LINK_TARGETS = ["", "ants", "bees", "ants/sub", "bees/sub", "bees/sub/deep", "../outside", "..", "/"]


@settings(FUZZ, max_examples=examples(40))
@given(links=st.lists(st.tuples(st.sampled_from(["", *FOLDERS]), st.sampled_from(LINK_TARGETS)), max_size=5),
       absolute=st.booleans())
def test_links_never_relabel_or_duplicate_an_image(links, absolute):
    """Issue 17.2 as a property: whatever folder links a class tree holds (loops, links into other
    classes, to the root, outside it), each real image is read once, and an image inside the
    dataset keeps the label of the class folder it really lies in."""
    from tests.conftest import write_image

    with tempfile.TemporaryDirectory() as tmp, no_hang():
        base = Path(tmp)
        root = base / "data"
        for i, folder in enumerate(FOLDERS):
            write_image(root / folder / f"{i}.png", i, size=(8, 8))
        write_image(base / "outside" / "o.png", 9, size=(8, 8))
        for n, (folder, target) in enumerate(links):
            where = root / folder / f"link{n}"
            dest = root / target if absolute else Path(os.path.relpath(root / target, root / folder))
            os.symlink(target if target.startswith("/") else dest, where)
        ds = open_dataset(root)
        real = [os.path.realpath(ds.abspath(s)) for s in ds.samples]
        assert len(real) == len(set(real)), "an image was read twice"
        root_real = os.path.realpath(root)
        for s, path in zip(ds.samples, real):
            if path.startswith(root_real + os.sep):
                assert Path(path).relative_to(root_real).parts[0] == ds.classes[s.label], s.path
        assert {"0.png", "1.png", "2.png", "3.png", "4.png"} <= {Path(p).name for p in real}
