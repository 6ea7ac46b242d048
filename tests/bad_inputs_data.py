"""Bad inputs of the data options, manifests, folders, images and recipes (featx/data/,
featx/data/images.py, featx/data/transforms.py), given to `featx scan` and `featx extract`."""

from __future__ import annotations

import os
from pathlib import Path

from tests.bad_input_harness import Case, World, write_file
from tests.conftest import make_class_tree, write_image

SCAN = ["scan"]
EXTRACT = ["extract", "{data}", "--backbone", "tiny_cnn", "--weights", "none", "--workers", "0",
           "--out", "{out}"]



def manifest(text: str, images: tuple[str, ...] = ()):
    """{tmp}/m.csv with `text`, beside the real images it names."""
    def setup(tmp: Path, world: World) -> None:
        for i, name in enumerate(images):
            write_image(tmp / name, i)
        (tmp / "m.csv").write_text(text)
    return setup


def broken_tree(tmp: Path, world: World) -> None:
    """Two classes of files named .png that are not images."""
    make_class_tree(tmp / "d", per_class=3)
    for png in (tmp / "d").rglob("*.png"):
        png.write_bytes(b"not a png at all")


def only_a_strip(tmp: Path, world: World) -> None:
    from PIL import Image

    (tmp / "d" / "wide").mkdir(parents=True)
    Image.new("L", (4_000_000, 1), 128).save(tmp / "d" / "wide" / "strip.png")


def symlink_only(tmp: Path, world: World) -> None:
    """A class folder that holds nothing but a link back to the dataset root."""
    (tmp / "d" / "cls").mkdir(parents=True)
    os.symlink("..", tmp / "d" / "cls" / "up")


LABELED = ("img/a.png", "img/b.png")
AUG = EXTRACT + ["--views", "1", "--aug", "{tmp}/aug.yaml"]

CASES = [
    Case("data-empty", SCAN + [""], r"DATA is empty", code=2),
    Case("data-empty-extract", ["extract", "", "--out", "{out}"], r"DATA is empty", code=2),
    Case("data-missing-folder", SCAN + ["{tmp}/nowhere"], r"nowhere: no such file or folder"),
    Case("data-folder-without-images", SCAN + ["{tmp}"], r"in: no images found", setup=write_file("notes.txt", "x")),
    Case("data-symlink-loop-only", SCAN + ["{tmp}/d"], r"d: no images found", setup=symlink_only),
    Case("data-manifest-empty", SCAN + ["{tmp}/m.csv"], r"m\.csv: manifest has no rows", setup=write_file("m.csv", "")),
    Case("data-manifest-not-text", SCAN + ["{tmp}/m.csv"], r"m\.csv: cannot read manifest",
         setup=write_file("m.csv", bytes(range(128, 256)))),
    Case("data-manifest-no-path-column", SCAN + ["{tmp}/m.csv"], r"m\.csv: no column of image file names",
         setup=manifest("label,score\ncat,1\ndog,2\n")),
    Case("data-manifest-missing-files", SCAN + ["{tmp}/m.csv"], r"m\.csv: no images found.*file not found.*gone/a\.png",
         setup=manifest("path,label\ngone/a.png,cat\ngone/b.png,dog\n")),
    Case("data-manifest-long-name", SCAN + ["{tmp}/m.csv"], r"m\.csv: no images found.*file name too long",
         setup=manifest(f"path,label\n{'x' * 300}.png,cat\n")),
    Case("data-manifest-short-row", SCAN + ["{tmp}/m.csv"], r"m\.csv:3: expected at least 2 columns",
         setup=manifest("path,label\nimg/a.png,cat\nimg/b.png\n", LABELED)),
    Case("data-manifest-bad-split", SCAN + ["{tmp}/m.csv"], r"m\.csv:2: unknown split 'later'",
         setup=manifest("path,label,split\nimg/a.png,cat,later\nimg/b.png,dog,train\n", LABELED)),
    Case("data-label-col-unknown", SCAN + ["{tmp}/m.csv", "--label-col", "species"], r"m\.csv: no label column named 'species' \(columns: path, label\)",
         setup=manifest("path,label\nimg/a.png,cat\nimg/b.png,dog\n", LABELED)),
    Case("data-label-col-out-of-range", SCAN + ["{tmp}/m.csv", "--label-col", "7"], r"m\.csv: no label column 7 .*2 columns",
         setup=manifest("path,label\nimg/a.png,cat\nimg/b.png,dog\n", LABELED)),
    Case("data-binarize-non-numeric", SCAN + ["{tmp}/m.csv", "--binarize", "0.5"], r"--binarize needs numeric labels.*'cat'",
         setup=manifest("path,label\nimg/a.png,cat\nimg/b.png,dog\n", LABELED)),
    Case("data-val-frac-over-one", SCAN + ["{data}", "--val-frac", "1.5"], r"--val-frac", code=2),
    Case("data-test-frac-negative", SCAN + ["{data}", "--test-frac", "-0.1"], r"--test-frac", code=2),
    Case("data-fracs-leave-no-train", SCAN + ["{data}", "--val-frac", "0.5", "--test-frac", "0.5"],
         r"--val-frac \+ --test-frac", code=2),
    Case("data-class-map-not-json", SCAN + ["{data}", "--class-map", "{tmp}/m.json"], r"m\.json: cannot read class map",
         setup=write_file("m.json", "{ants: [")),
    Case("data-class-map-a-list", SCAN + ["{data}", "--class-map", "{tmp}/m.json"], r"m\.json: class map must be a JSON object",
         setup=write_file("m.json", "[1, 2]")),
    Case("data-class-map-missing", SCAN + ["{data}", "--class-map", "{tmp}/none.json"], r"none\.json: cannot read class map"),
    Case("data-subset-zero", SCAN + ["{data}", "--subset", "0"], r"--subset", code=2),
    Case("data-subset-negative", SCAN + ["{data}", "--subset", "-1"], r"--subset", code=2),
    Case("data-recipe-size-abc", AUG, r"aug\.yaml: op 1 \(resize\): size: .*'abc'", code=2,
         setup=write_file("aug.yaml", "ops:\n  - {op: resize, size: abc}\n")),
    Case("data-recipe-unknown-op", AUG, r"aug\.yaml: op 2: unknown op 'sharpen'", code=2,
         setup=write_file("aug.yaml", "ops:\n  - {op: hflip}\n  - {op: sharpen}\n")),
    Case("data-recipe-unknown-parameter", AUG, r"aug\.yaml: op 1 \(hflip\): unknown parameter 'prob'", code=2,
         setup=write_file("aug.yaml", "ops:\n  - {op: hflip, prob: 0.5}\n")),
    Case("data-recipe-not-yaml", AUG, r"aug\.yaml: cannot read recipe", code=2, setup=write_file("aug.yaml", "ops: [{op: hflip")),
    Case("data-recipe-no-ops", AUG, r"aug\.yaml: .*ops:", code=2, setup=write_file("aug.yaml", "name: nothing\n")),
    Case("data-aug-unknown-name", EXTRACT + ["--views", "1", "--aug", "sharpen"],
         r"unknown augmentation recipe 'sharpen'", code=2),
    Case("data-only-broken-images", SCAN + ["{tmp}/d"], r"d: none of the 6 images could be decoded.*not an image",
         setup=broken_tree),
    Case("data-only-a-strip", SCAN + ["{tmp}/d"], r"d: none of the 1 images could be decoded.*aspect ratio",
         setup=only_a_strip),
    Case("data-extract-only-broken-images", ["extract", "{tmp}/d"] + EXTRACT[2:],
         r"d: none of the 6 images could be decoded.*not an image", setup=broken_tree),
]
