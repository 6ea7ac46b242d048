"""featx.data.transforms: the clean view and deterministic augmented views."""

from __future__ import annotations

import re

import pytest
import torch

from featx.backbones import Preprocess
from featx.errors import ConfigError
from featx.data.transforms import list_recipes, load_recipe, make_views, normalize, view_seed

PRE = Preprocess(input_size=32, resize_size=36)


def _img(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, 48, 60), dtype=torch.uint8, generator=g)


def test_named_recipes_cover_the_tutorials(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # package data: found from anywhere, not from the checkout
    assert {"tutorial", "flowers", "mild", "flips", "hvflips", "dihedral"} <= set(list_recipes())
    ops = [op["op"] for op in load_recipe("flowers").ops]
    assert ops[:2] == ["resize", "pad_reflect"] and "rotate" in ops and "hflip" in ops
    assert [op["op"] for op in load_recipe("tutorial").ops] == ["random_resized_crop", "hflip"]


@pytest.mark.parametrize("recipe", ["tutorial", "flowers", "mild", "flips", "hvflips", "dihedral"])
def test_views_are_deterministic_per_seed_sample_and_view(recipe):
    r = load_recipe(recipe)
    img = _img()
    a = make_views(img, PRE, r, seed=0, sample_path="a.png", views=[0, 1, 2, 3])
    b = make_views(img, PRE, r, seed=0, sample_path="a.png", views=[3, 0, 2])
    assert all(v.shape == (3, 32, 32) and v.dtype == torch.uint8 for v in a)
    assert torch.equal(a[3], b[0]) and torch.equal(a[0], b[1]) and torch.equal(a[2], b[2])
    # Other views, samples or seeds draw other augmentations.
    other_path = make_views(img, PRE, r, seed=0, sample_path="b.png", views=[1, 2, 3])
    other_seed = make_views(img, PRE, r, seed=1, sample_path="a.png", views=[1, 2, 3])
    assert any(not torch.equal(x, y) for x, y in zip(a[1:], other_path))
    assert any(not torch.equal(x, y) for x, y in zip(a[1:], other_seed))


def test_only_the_opt_in_recipe_turns_images_by_90_degrees():
    """Issue 21: `flips` and `mild` turned images by 90 degrees, which suits neither photos nor
    solar cells (busbars run one way; ELPV TTA with rotations: -13 to -17 points). Now `flips`
    views are the clean view or its left-right mirror, `hvflips` adds top-bottom mirrors, and only
    `dihedral` turns; the default recipes of extract and finetune do not turn."""
    from featx.extraction import ExtractConfig
    from featx.finetuning import FinetuneConfig

    square = Preprocess(input_size=32, resize_size=32)
    img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    (clean,) = make_views(img, square, None, 0, "x.png", [0])
    mirrors = {"same": clean, "lr": clean.flip(-1), "tb": clean.flip(-2), "both": clean.flip(-1).flip(-2)}

    def seen(name: str) -> set[str]:
        views = make_views(img, square, load_recipe(name), 0, "x.png", list(range(1, 41)))
        return {next((k for k, m in mirrors.items() if torch.equal(v, m)), "turned") for v in views}

    assert seen("flips") == {"same", "lr"}
    assert seen("hvflips") == {"same", "lr", "tb", "both"}
    assert "turned" in seen("dihedral")
    turning = {n for n in list_recipes() if any(op["op"] == "rot90" for op in load_recipe(n).ops)}
    assert turning == {"dihedral"}
    for default in (ExtractConfig().aug, FinetuneConfig().aug):
        assert not {"rot90", "vflip"} & {op["op"] for op in load_recipe(default).ops}


def test_views_ignore_global_rng_state():
    r = load_recipe("tutorial")
    torch.manual_seed(1)
    a = make_views(_img(), PRE, r, 0, "x.png", [1])
    torch.manual_seed(2)
    b = make_views(_img(), PRE, r, 0, "x.png", [1])
    assert torch.equal(a[0], b[0])


def test_view_seed_is_stable():
    assert view_seed(0, "a.png", 0) == view_seed(0, "a.png", 0)
    assert len({view_seed(0, "a.png", 0), view_seed(0, "a.png", 1), view_seed(1, "a.png", 0)}) == 3
    assert 0 <= view_seed(5, "z", 9) < 2**63


def test_clean_view_is_resize_then_center_crop():
    img = torch.zeros(3, 40, 80, dtype=torch.uint8)
    img[:, :, 40:] = 255  # right half white
    (view,) = make_views(img, PRE, None, 0, "x", [0])
    assert view.shape == (3, 32, 32)
    assert view[:, :, :12].max() == 0 and view[:, :, 20:].min() == 255


@pytest.mark.parametrize("h, w, size", [(36, 36, 32), (37, 50, 32), (33, 45, 32), (40, 31, 32), (20, 20, 32)])
def test_center_crop_is_torchvisions_pixel_for_pixel(h, w, size):
    import torchvision.transforms.v2.functional as tvf

    from featx.data.transforms import center_crop

    img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(h * w))
    assert torch.equal(center_crop(img, size), tvf.center_crop(img, [size, size]))  # odd offsets, padding


def test_a_clean_pillow_view_needs_no_torchvision():
    """Importing torchvision costs 3 s on 2 cores: featx predict of a few images must not pay it."""
    import subprocess
    import sys

    code = ("import sys, torch\nfrom featx.backbones import Preprocess\n"
            "from featx.data.transforms import make_views\n"
            "img = torch.randint(0, 256, (3, 41, 57), dtype=torch.uint8)\n"
            "(v,) = make_views(img, Preprocess(input_size=32, resize_size=36), None, 0, 'x', [0])\n"
            "assert v.shape == (3, 32, 32)\nprint('torchvision' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_normalize_uses_mean_and_std():
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = normalize(x, PRE)
    expected = (1 - torch.tensor(PRE.mean)) / torch.tensor(PRE.std)
    assert torch.allclose(out[0, :, 0, 0], expected)


def test_recipe_files_are_validated(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("ops:\n  - {op: vflip, p: 1.0}\n")
    r = load_recipe(str(good))
    img = _img()
    (view,) = make_views(img, Preprocess(48, 48), r, 0, "x", [1])
    assert torch.equal(view, img.flip(-2)[:, :, 6:54])
    bad = tmp_path / "bad.yaml"
    bad.write_text("ops:\n  - {op: sharpen}\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_recipe(str(bad))
    with pytest.raises(ConfigError, match="unknown augmentation recipe 'nope'.*mild"):
        load_recipe("nope")


def test_batched_clean_views_equal_one_by_one():
    from featx.data.transforms import clean_view, clean_views

    images = [_img(0), _img(1), torch.randint(0, 256, (3, 50, 41), dtype=torch.uint8), _img(2)]
    batched = clean_views(images, PRE)
    for img, view in zip(images, batched):
        assert torch.equal(view, clean_view(img, PRE))


def test_resizing_a_sliver_allocates_a_bounded_buffer(monkeypatch):
    """Issue 17.3: clean_view of a 4,000,000x1 image resized its short side to 36 px first
    (144 Mpx, 16 GB in float); the resize now never makes more than a bounded image."""
    import torchvision.transforms.v2.functional as F

    from featx.data.images import MAX_ASPECT
    from featx.data.transforms import clean_view

    resize = F.resize

    def bounded(img, size, **kw):
        h, w = img.shape[-2:]
        out_h, out_w = (size[0], int(size[0] * w / h)) if h <= w else (int(size[0] * h / w), size[0])
        assert out_h * out_w <= MAX_ASPECT * size[0] ** 2, f"resize to {out_h}x{out_w}"
        return resize(img, size, **kw)

    monkeypatch.setattr(F, "resize", bounded)
    img = torch.zeros(3, 1, 4_000_000, dtype=torch.uint8)
    img[:, :, 2_000_000 - 3:2_000_000 + 3] = 255
    view = clean_view(img, PRE)
    assert view.shape == (3, 32, 32) and view.max() > 0
    tall = clean_view(torch.zeros(3, 500_000, 2, dtype=torch.uint8), PRE)
    assert tall.shape == (3, 32, 32)
    for name in ("flowers", "mild", "tutorial"):
        (aug,) = make_views(img[:, :, :400_000], PRE, load_recipe(name), 0, "x", [1])
        assert aug.shape == (3, 32, 32)


@pytest.mark.parametrize("op,problem", [
    ("{op: resize, size: abc}", r"op 2 \(resize\): size: .*'abc'"),
    ("{op: random_crop, size: 0}", r"op 2 \(random_crop\): size: .*0"),
    ("{op: center_crop, size: 100000}", r"op 2 \(center_crop\): size: .*100000"),
    ("{op: resize, size: true}", r"op 2 \(resize\): size"),
    ("{op: hflip, p: 1.5}", r"op 2 \(hflip\): p: .*1.5"),
    ("{op: vflip, p: high}", r"op 2 \(vflip\): p"),
    ("{op: rotate, degrees: .nan}", r"op 2 \(rotate\): degrees"),
    ("{op: pad_reflect, pad: -3}", r"op 2 \(pad_reflect\): pad"),
    ("{op: random_resized_crop, scale: [0.9, 0.1]}", r"op 2 \(random_resized_crop\): scale"),
    ("{op: random_resized_crop, ratio: 2}", r"op 2 \(random_resized_crop\): ratio"),
    ("{op: random_resized_crop, scale: [0, 1]}", r"op 2 \(random_resized_crop\): scale"),
    ("{op: hflip, prob: 0.5}", r"op 2 \(hflip\): unknown parameter 'prob' \(known: p\)"),
    ("{op: sharpen}", r"op 2: unknown op 'sharpen'"),
    ("{size: 3}", r"op 2: .*op: NAME"),
    ("resize", r"op 2: .*op: NAME"),
])
def test_a_bad_recipe_parameter_is_one_line_naming_file_op_and_parameter(tmp_path, op, problem):
    """Issue 17.8: `size: "abc"` was accepted; every training image then failed at the first
    view and the store was marked complete."""
    path = tmp_path / "aug.yaml"
    path.write_text(f"ops:\n  - {{op: hflip}}\n  - {op}\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert re.search(problem, message), message


@pytest.mark.parametrize("text,problem", [
    ("ops: {op: hflip}", "a list"), ("ops: []", "no ops"), ("[1, 2]", "ops:"), ("{: [", "cannot read"),
    ("name: 3\nops: [{op: hflip}]", "name"), ("ops: [{op: hflip}]\nopz: 1", "unknown key 'opz'"),
])
def test_recipe_structure_is_validated(tmp_path, text, problem):
    path = tmp_path / "aug.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_recipe(str(path))


def test_built_in_recipes_pass_validation():
    for name in list_recipes():
        assert load_recipe(name).ops


def test_the_extraction_path_imports_torchvision_only_when_an_image_is_transformed():
    """Importing torchvision takes ~3 s on 2 cores (it pulls in torch._dynamo): half of a no-op
    `featx extract` re-run (15 s -> 7.6 s on the 2-core box), which transforms no image."""
    import subprocess
    import sys

    code = ("import sys, featx.extraction.run, featx.backbones.cuts, featx.data.transforms; "
            "assert 'torchvision' not in sys.modules, 'torchvision was imported'")  # the views' own tests use it
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]
