"""Bad archive inputs (featx/data/archives.py, webdataset_source.py, hf_source.py): WebDataset
shards, `datasets` folders and Parquet files that cannot be used, given to `featx scan`."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from tests.bad_input_harness import Case, World, write_file

SCAN = ["scan"]


def nested_file(name: str, data: str | bytes):
    """{tmp}/NAME (its folders made) holding `data`."""
    def setup(tmp: Path, world: World) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    return setup


def tar_with(names: tuple[str, ...]):
    """{tmp}/s/shard-0.tar holding a tiny PNG under each of `names`."""
    def setup(tmp: Path, world: World) -> None:
        (tmp / "s").mkdir()
        png = next(world.data.rglob("*.png")).read_bytes()
        with tarfile.open(tmp / "s" / "shard-0.tar", "w") as tar:
            for name in names:
                info = tarfile.TarInfo(name)
                info.size = len(png)
                tar.addfile(info, io.BytesIO(png))
    return setup


def tar_members(members: tuple[tuple[str, bytes | None], ...], keep: str = "all"):
    """{tmp}/s/shard-0.tar of `members` (None: a tiny PNG); keep "all", or cut it where a copy
    stops: "boundary" (right after the next-to-last member) or "header" (100 bytes into the
    last member's header)."""
    def setup(tmp: Path, world: World) -> None:
        (tmp / "s").mkdir()
        png = next(world.data.rglob("*.png")).read_bytes()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, data in members:
                data = png if data is None else data
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        blob = buffer.getvalue()
        if keep != "all":
            last = tarfile.open(fileobj=io.BytesIO(blob)).getmembers()[-1].offset
            blob = blob[:last] if keep == "boundary" else blob[:last + 100]
        (tmp / "s" / "shard-0.tar").write_bytes(blob)
    return setup


THREE = (("k0.png", None), ("k0.cls", b"a"), ("k1.png", None), ("k1.cls", b"b"), ("k2.png", None),
         ("k2.cls", b"a"))


def saved_without_images(tmp: Path, world: World) -> None:
    import datasets

    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).save_to_disk(str(tmp / "hf"))


def parquet_without_label_col(tmp: Path, world: World) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    png = next(world.data.rglob("*.png")).read_bytes()
    pq.write_table(pa.table({"image": [png, png], "label": [0, 1]}), tmp / "p.parquet")


def parquet_pointing_at(path: str):
    """{tmp}/p.parquet whose image cells have no bytes and name `path` ({tmp} filled in)."""
    def setup(tmp: Path, world: World) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        outside = tmp.parent / "SECRET.png"  # a real image beside, not inside, the archive's folder
        outside.write_bytes(next(world.data.rglob("*.png")).read_bytes())
        (tmp / "arc").mkdir()
        cell = {"bytes": None, "path": path.format(secret=outside)}
        pq.write_table(pa.table({"image": [cell, cell], "label": [0, 1]}), tmp / "arc" / "p.parquet")
    return setup


CASES = [
    Case("wds-garbage-shard", SCAN + ["{tmp}/s"], r"a\.tar: not a readable WebDataset tar shard",
         setup=nested_file("s/a.tar", b"garbage, not a tar file" * 50)),
    Case("wds-key-escapes", SCAN + ["{tmp}/s"], r"sample key '\.\./up' cannot name a file",
         setup=tar_with(("../up.png",))),
    Case("wds-key-twice", SCAN + ["{tmp}/s"], r"sample key 'a/x' appears twice",
         setup=tar_with(("a/x.png", "b/y.png", "a/x.png"))),
    Case("parquet-garbage", SCAN + ["{tmp}/x.parquet"], r"x\.parquet: not a readable Parquet file",
         setup=write_file("x.parquet", b"PAR1 but not really")),
    Case("parquet-label-col-missing", SCAN + ["{tmp}/p.parquet", "--label-col", "kind"],
         r"p\.parquet: no label column 'kind' \(--label-col\)", setup=parquet_without_label_col),
    Case("hf-no-image-column", SCAN + ["{tmp}/hf"], r"hf: no image column", setup=saved_without_images),
    Case("hf-damaged-folder", SCAN + ["{tmp}/hf"], r"hf: cannot load the saved dataset",
         setup=nested_file("hf/state.json", "{not json")),
    # An archive row must never pull a local file in (issue 32): absolute, or climbing out.
    Case("parquet-cell-absolute-path", SCAN + ["{tmp}/arc/p.parquet"],
         r"p\.parquet: row 0: image path '/.*SECRET\.png' lies outside the archive's folder",
         setup=parquet_pointing_at("{secret}")),
    Case("parquet-cell-climbs-out", SCAN + ["{tmp}/arc/p.parquet"],
         r"p\.parquet: row 0: image path '\.\./\.\./SECRET\.png' lies outside the archive's folder",
         setup=parquet_pointing_at("../../SECRET.png")),
    Case("parquet-cell-missing-file", SCAN + ["{tmp}/arc/p.parquet"],
         r"p\.parquet: row 0: image path 'gone\.png' has no bytes and no such file",
         setup=parquet_pointing_at("gone.png")),
    # A shard that ends early, and a key whose label member comes later, are never silent (issue 32).
    Case("wds-cut-at-member-boundary", SCAN + ["{tmp}/s"], r"shard-0\.tar: the shard ends early",
         setup=tar_members(THREE, keep="boundary")),
    Case("wds-cut-inside-a-header", SCAN + ["{tmp}/s"], r"shard-0\.tar: the shard ends early",
         setup=tar_members(THREE, keep="header")),
    Case("wds-label-member-later", SCAN + ["{tmp}/s"],
         r"sample key 'k0' appears twice \(member 'k0\.cls' comes after other samples",
         setup=tar_members((("k0.png", None), ("k1.png", None), ("k1.cls", b"b"), ("k0.cls", b"a")))),
    Case("wds-key-too-long", SCAN + ["{tmp}/s"], r"sample key 'kkkk.*'\.\.\. is too long for a file name",
         setup=tar_members((("k" * 300 + ".png", None),))),
    # Shards beside many images or beside Parquet files: which one is the dataset? (issue 32)
    Case("wds-beside-many-images", SCAN + ["{tmp}/s"],
         r"s: 1 \.tar shard\(s\) and more than 10 image files side by side: .* into a folder of their own",
         setup=lambda tmp, world: (tar_members(THREE)(tmp, world),
                                   [(tmp / "s" / f"i{i}.png").write_bytes(b"") for i in range(11)])),
    Case("wds-beside-parquet", SCAN + ["{tmp}/s"], r"s: both \.tar shards and \.parquet files",
         setup=lambda tmp, world: (tar_members(THREE)(tmp, world), (tmp / "s" / "p.parquet").write_bytes(b""))),
    Case("wds-upper-case-shard-cut", SCAN + ["{tmp}/s"], r"S-000\.TAR: the shard ends early",
         setup=lambda tmp, world: (tar_members(THREE, keep="boundary")(tmp, world),
                                   (tmp / "s" / "shard-0.tar").rename(tmp / "s" / "S-000.TAR"))),
]
