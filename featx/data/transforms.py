"""Image -> input tensor: the clean view and K deterministic augmented views.

All ops work on uint8 (3, H, W) tensors on any device, so the CPU path (PIL decode in
DataLoader workers) and the CUDA path (nvjpeg decode on the GPU) share one implementation.
Randomness comes only from a CPU generator seeded by (seed, sample path, view), never from
global or worker RNG state: view k of a sample is the same whatever the worker count, batch
order or resume point (docs/reliability.md item 14).

Recipes are YAML lists of ops: the built-in ones are package data in featx/recipes/ (`mild`,
`flips`, `hvflips`, `dihedral`, `tutorial`, `flowers`), or any YAML file given by path; sizes may
be the words "input" and "resize", the backbone's crop and resize sizes.

Orientation: only `dihedral` (and a YAML file that asks for `rot90` or `rotate`) turns images.
A view turned by 90 degrees is a different-looking image for photos and for solar cells (busbars
run one way), so rotations are opt-in, for orientation-free data (some microscopy, aerial tiles).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from featx.errors import ConfigError
from featx.data.images import MAX_ASPECT
from featx.data.preprocess import Preprocess, pillow_resize_short_side


# Built-in recipes ship inside the package, so a wheel install has them too.
RECIPES = resources.files("featx") / "recipes"


class _Functional:
    """torchvision's functional transforms, imported on first use: importing torchvision takes ~3 s
    on 2 cores (it pulls in torch._dynamo), which a run that transforms no image never needs (a
    no-op re-run, a listing, an ONNX-served prediction)."""

    def __getattr__(self, name: str):
        import torchvision.transforms.v2.functional as functional

        return getattr(functional, name)


F = _Functional()

@dataclass(frozen=True)
class AugRecipe:
    name: str
    ops: tuple[dict, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "ops": [dict(op) for op in self.ops]}


def list_recipes() -> list[str]:
    """Names of the built-in recipes (featx/recipes/*.yaml)."""
    return sorted(p.name[:-len(".yaml")] for p in RECIPES.iterdir() if p.name.endswith(".yaml"))


def load_recipe(name_or_path: str | Path) -> AugRecipe:
    """A built-in recipe by name, or a YAML file: `ops: [{op: hflip, p: 0.5}, ...]`.

    Raises:
        ConfigError: an unknown name, an unreadable file, an unknown op or parameter, or a
            parameter of the wrong type or out of range (one line: file, op, parameter).
    """
    where, text = _recipe_text(name_or_path)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: cannot read recipe ({' '.join(str(exc).split())})") from None
    return AugRecipe(*_checked_recipe(doc, where))


def _checked_recipe(doc, where: str) -> tuple[str, tuple[dict, ...]]:
    """(name, ops) of a parsed recipe, every op and parameter checked (types and ranges), so a
    typo fails here, in one line, rather than as every training image failing to transform."""
    shape = f"a recipe is `ops:` followed by a list of {{op: NAME, ...}} with NAME one of {', '.join(OPS)}"
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: {shape}")
    unknown = sorted(set(map(str, doc)) - {"name", "ops"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (a recipe has name: and ops:)")
    name, ops = doc.get("name", Path(where).stem), doc.get("ops")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: name: expected a word, got {name!r}")
    if not isinstance(ops, list):
        raise ConfigError(f"{where}: ops: expected a list; {shape}")
    if not ops:
        raise ConfigError(f"{where}: ops: the recipe has no ops")
    for i, op in enumerate(ops, start=1):
        problem = _op_problem(op, shape)
        if problem:
            raise ConfigError(f"{where}: op {i}{problem}")
    return name, tuple(ops)


def _op_problem(op, shape: str) -> str | None:
    """What is wrong with one op, as the rest of 'op N...', or None."""
    if not isinstance(op, dict) or "op" not in op:
        return f": {shape}, got {op!r}"
    if op["op"] not in OPS:
        return f": unknown op {op['op']!r} (ops: {', '.join(OPS)})"
    params = PARAMS[op["op"]]
    for key, value in op.items():
        if key == "op":
            continue
        if key not in params:
            return f" ({op['op']}): unknown parameter {key!r} (known: {', '.join(params) or 'none'})"
        problem = params[key](value)
        if problem:
            return f" ({op['op']}): {key}: {problem}, got {value!r}"
    return None


def _recipe_text(name_or_path: str | Path) -> tuple[str, str]:
    """(where it came from, its YAML text): a file by path first, else a built-in by name."""
    path = Path(name_or_path)
    if path.is_file():
        source, where = path, str(path)
    elif str(name_or_path) in list_recipes():
        source, where = RECIPES / f"{name_or_path}.yaml", f"featx/recipes/{name_or_path}.yaml"
    else:
        raise ConfigError(f"unknown augmentation recipe '{name_or_path}' "
                          f"(built in: {', '.join(list_recipes())}; or a path to a YAML file)")
    try:
        return where, source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read recipe ({exc})") from None


def view_seed(seed: int, sample_path: str, view: int) -> int:
    """A 63-bit seed from (seed, sample, view): stable across processes, shards and resumes."""
    digest = hashlib.sha256(f"{seed}\0{sample_path}\0{view}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def clean_view(img: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """Resize the short side, center crop: the backbone's evaluation transform."""
    img = resize_short_side(img, pre.resize_size, pre)
    return center_crop(img, pre.input_size)


def center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """The central size x size of (..., H, W). Inside the image it is a slice at torchvision's
    offsets (Python's round((H - size) / 2)), the same pixels without importing torchvision (3 s
    of a 20-image `featx predict` on 2 cores); a crop larger than the image pads as torchvision does."""
    h, w = img.shape[-2:]
    if size > h or size > w:
        return F.center_crop(img, [size, size])
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img[..., top:top + size, left:left + size]


def resize_short_side(img: torch.Tensor, size: int, pre: Preprocess) -> torch.Tensor:
    """Resize (..., H, W) so that its short side is `size`, making at most MAX_ASPECT * size**2
    pixels: an image longer than MAX_ASPECT:1 is first center-cropped to that ratio (a 4,000,000x1
    strip resized whole would take 64 GB). load_image refuses such images, so this bound only
    changes tensors decoded elsewhere. The kernel is the preprocessing's `resize_with`: Pillow's,
    or torchvision's antialiased one for a store made before issue 29."""
    h, w = img.shape[-2:]
    if w > MAX_ASPECT * h:
        img = F.crop(img, 0, (w - MAX_ASPECT * h) // 2, h, MAX_ASPECT * h)
    elif h > MAX_ASPECT * w:
        img = F.crop(img, (h - MAX_ASPECT * w) // 2, 0, MAX_ASPECT * w, w)
    if pre.resize_with == "pillow":
        return _pillow_resize(img, size, pre)
    return F.resize(img, [size], interpolation=_interp(pre), antialias=True)


def _pillow_resize(img: torch.Tensor, size: int, pre: Preprocess) -> torch.Tensor:
    """uint8 (..., 3, H, W) resized image by image by Pillow, on the CPU: the very pixels of a
    Pillow-only client (featx.data.preprocess). A tensor on the GPU goes there and back."""
    flat = img.reshape(-1, *img.shape[-3:]).cpu().numpy()
    h, w = flat.shape[-2:]
    out = []
    for chw in flat:
        hwc = np.ascontiguousarray(chw.transpose(1, 2, 0))  # Pillow's layout, without a second copy
        resized = pillow_resize_short_side(Image.frombuffer("RGB", (w, h), hwc, "raw", "RGB", 0, 1),
                                           size, pre.interpolation)
        out.append(np.asarray(resized).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out)).reshape(*img.shape[:-2], *out[0].shape[-2:]).to(img.device)


def clean_views(images: list[torch.Tensor], pre: Preprocess) -> list[torch.Tensor]:
    """clean_view of many images, one resize call per group of equal sizes (GPU batches:
    hundreds of per-image calls would make Python, not the GPU, the limit)."""
    out: list[torch.Tensor | None] = [None] * len(images)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(tuple(img.shape), []).append(i)
    for members in groups.values():
        views = clean_view(torch.stack([images[i] for i in members]), pre)
        for i, view in zip(members, views):
            out[i] = view
    return out


def augmented_view(img: torch.Tensor, pre: Preprocess, recipe: AugRecipe,
                   gen: torch.Generator) -> torch.Tensor:
    for op in recipe.ops:
        img = OPS[op["op"]](img, op, pre, gen)
    if tuple(img.shape[-2:]) != (pre.input_size, pre.input_size):
        img = center_crop(resize_short_side(img, pre.input_size, pre), pre.input_size)
    return img


def make_views(img: torch.Tensor, pre: Preprocess, recipe: AugRecipe | None, seed: int,
               sample_path: str, views: list[int]) -> list[torch.Tensor]:
    """Views of one decoded image: view 0 is clean, view k >= 1 is augmented view k-1."""
    return [clean_view(img, pre) if v == 0 else augmented_views(img, pre, recipe, seed, sample_path, [v])[0]
            for v in views]


def augmented_views(img: torch.Tensor, pre: Preprocess, recipe: AugRecipe | None, seed: int,
                    sample_path: str, views: list[int]) -> list[torch.Tensor]:
    """Augmented views v >= 1 of one image (view v draws from view_seed(seed, path, v - 1))."""
    out = []
    for v in views:
        gen = torch.Generator().manual_seed(view_seed(seed, sample_path, v - 1))
        out.append(augmented_view(img, pre, recipe, gen))
    return out


def normalize(batch: torch.Tensor, pre: Preprocess, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> normalised float, on the batch's device."""
    mean = torch.tensor(pre.mean, device=batch.device, dtype=dtype).view(1, 3, 1, 1) * 255
    std = torch.tensor(pre.std, device=batch.device, dtype=dtype).view(1, 3, 1, 1) * 255
    return (batch.to(dtype) - mean) / std


def transform_provenance(pre: Preprocess, recipe: AugRecipe | None, views: int) -> dict:
    return {"clean": pre.to_dict(), "aug": recipe.to_dict() if recipe and views else None,
            "views": views}


# --- ops: (img, op params, preprocess, generator) -> img ----------------------------------------

def _interp(pre: Preprocess) -> "InterpolationMode":  # noqa: F821 (torchvision's, imported here)
    from torchvision.transforms import InterpolationMode

    return InterpolationMode(pre.interpolation)


def _size(value, pre: Preprocess) -> int:
    return {"input": pre.input_size, "resize": pre.resize_size}.get(value, value) if isinstance(value, str) else int(value)


def _uniform(gen: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * torch.rand((), generator=gen).item()


def _randint(gen: torch.Generator, high: int) -> int:
    """Uniform integer in [0, high)."""
    return int(torch.randint(high, (), generator=gen).item()) if high > 0 else 0


def _resize(img, op, pre, gen):
    return resize_short_side(img, _size(op.get("size", "resize"), pre), pre)


def _center_crop(img, op, pre, gen):
    s = _size(op.get("size", "input"), pre)
    return F.center_crop(img, [s, s])


def _random_crop(img, op, pre, gen):
    s = _size(op.get("size", "input"), pre)
    h, w = img.shape[-2:]
    if h < s or w < s:
        img = resize_short_side(img, s, pre)
        h, w = img.shape[-2:]
    top, left = _randint(gen, h - s + 1), _randint(gen, w - s + 1)
    return F.crop(img, top, left, s, s)


def _random_resized_crop(img, op, pre, gen):
    """torchvision's RandomResizedCrop sampling, drawn from our generator."""
    s = _size(op.get("size", "input"), pre)
    lo_scale, hi_scale = op.get("scale", (0.08, 1.0))
    lo_ratio, hi_ratio = op.get("ratio", (3 / 4, 4 / 3))
    h, w = img.shape[-2:]
    area = h * w
    for _ in range(10):
        target = area * _uniform(gen, lo_scale, hi_scale)
        ratio = math.exp(_uniform(gen, math.log(lo_ratio), math.log(hi_ratio)))
        cw, ch = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = _randint(gen, h - ch + 1), _randint(gen, w - cw + 1)
            return F.resized_crop(img, top, left, ch, cw, [s, s], interpolation=_interp(pre), antialias=True)
    side = min(h, w)  # fallback, as torchvision: a central crop
    return F.resized_crop(img, (h - side) // 2, (w - side) // 2, side, side, [s, s],
                          interpolation=_interp(pre), antialias=True)


def _hflip(img, op, pre, gen):
    return F.horizontal_flip(img) if _uniform(gen) < op.get("p", 0.5) else img


def _vflip(img, op, pre, gen):
    return F.vertical_flip(img) if _uniform(gen) < op.get("p", 0.5) else img


def _rot90(img, op, pre, gen):
    return torch.rot90(img, _randint(gen, 4), dims=(-2, -1))


def _rotate(img, op, pre, gen):
    degrees = float(op.get("degrees", 30))
    from torchvision.transforms import InterpolationMode

    return F.rotate(img, _uniform(gen, -degrees, degrees), interpolation=InterpolationMode.BILINEAR)


def _pad_reflect(img, op, pre, gen):
    pad = int(op.get("pad", 16))
    pad = min(pad, img.shape[-1] - 1, img.shape[-2] - 1)  # reflect padding needs pad < size
    return F.pad(img, [pad], padding_mode="reflect")


OPS = {
    "resize": _resize, "center_crop": _center_crop, "random_crop": _random_crop,
    "random_resized_crop": _random_resized_crop, "hflip": _hflip, "vflip": _vflip,
    "rot90": _rot90, "rotate": _rotate, "pad_reflect": _pad_reflect,
}


# --- the parameters each op takes: name -> check(value) -> problem or None -----------------------

MAX_SIZE = 4096  # px: larger than any backbone's input; a bigger crop is a typo


def _check_size(value) -> str | None:
    if value in ("input", "resize"):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
        return f"expected 'input', 'resize' or a whole number of pixels in [1, {MAX_SIZE}]"
    return None


def _number_in(low: float, high: float, what: str):
    def check(value) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            return f"expected {what} in [{low:g}, {high:g}]"
        return None
    return check


def _range_in(low: float, high: float, what: str, above_zero: bool = True):
    """[lo, hi] with low <= lo <= hi <= high (and lo > 0 when `above_zero`)."""
    def check(value) -> str | None:
        ok = (isinstance(value, (list, tuple)) and len(value) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
        if ok:
            lo, hi = value
            ok = low <= lo <= hi <= high and (lo > 0 or not above_zero)
        return None if ok else f"expected [low, high] {what}, 0 < low <= high <= {high:g}"
    return check


def _check_pad(value) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SIZE:
        return f"expected a whole number of pixels in [0, {MAX_SIZE}]"
    return None


PROBABILITY = _number_in(0.0, 1.0, "a probability")
PARAMS = {
    "resize": {"size": _check_size}, "center_crop": {"size": _check_size},
    "random_crop": {"size": _check_size},
    "random_resized_crop": {"size": _check_size, "scale": _range_in(0.0, 1.0, "fractions of the area"),
                            "ratio": _range_in(0.0, 100.0, "aspect ratios")},
    "hflip": {"p": PROBABILITY}, "vflip": {"p": PROBABILITY}, "rot90": {},
    "rotate": {"degrees": _number_in(0.0, 360.0, "degrees")}, "pad_reflect": {"pad": _check_pad},
}
