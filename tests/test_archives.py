"""Issue 32, archive inputs: what a folder of shards is, and when its unpacked copy is stale.

A folder of WebDataset shards (or Parquet files) is the shards, whatever stray files lie beside
them (a cover image, a README: named in a note), and a rewritten shard is unpacked again even
when its size and mtime were kept (`cp -p`, `touch -r`)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from featx.data import open_dataset
from featx.errors import DataError
from featx.runtime.atomic import make_output_folder
from tests.conftest import write_image


def _shard(path: Path, png: bytes, labels: str, prefix: str) -> Path:
    """A WebDataset shard: one PNG and one one-letter `cls` per character of `labels`."""
    with tarfile.open(path, "w") as tar:  # TarInfo mtime 0: the bytes depend on the members only
        for k, label in enumerate(labels):
            for ext, data in (("png", png), ("cls", label.encode())):
                info = tarfile.TarInfo(f"{prefix}{k}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def png(tmp_path) -> bytes:
    return write_image(tmp_path / "src" / "x.png", 3).read_bytes()


@pytest.fixture
def shards(tmp_path, png, monkeypatch) -> Path:
    """{tmp}/insects: two shards of 4 labelled samples each (a, b, a, b)."""
    monkeypatch.setenv("FEATX_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "insects"
    folder.mkdir()
    for s in range(2):
        _shard(folder / f"s-{s:03d}.tar", png, "abab", f"k{s}")
    return folder


@pytest.mark.parametrize("strays", [("cover.png",), ("README.txt",), ("cover.png", "README.txt", "info.json")])
def test_stray_files_beside_the_shards_are_named_and_the_shards_read(shards, png, strays):
    for name in strays:
        (shards / name).write_bytes(png if name.endswith(".png") else b"about this dataset\n")
    ds = open_dataset(shards)
    assert ds.layout == "manifest" and ds.classes == ["a", "b"] and len(ds.samples) == 8
    (note,) = [n for n in ds.notes if "beside the .tar shards" in n]
    assert note.startswith(f"{len(strays)} file(s) beside the .tar shards ignored: ")
    assert all(name in note for name in strays)


def test_upper_case_shards_with_a_cover_are_shards(shards, png):
    for shard in shards.glob("*.tar"):
        shard.rename(shard.with_name(shard.name.upper()))  # S-000.TAR
    (shards / "cover.png").write_bytes(png)
    ds = open_dataset(shards)
    assert len(ds.samples) == 8 and ds.classes == ["a", "b"]


def test_a_store_folder_inside_the_shard_folder_is_not_data(shards):
    """`cd shards; featx extract .` writes stores/ there: the next run still reads the shards."""
    make_output_folder(shards / "stores")
    (shards / "stores" / "x.h5").write_bytes(b"a store")
    assert len(open_dataset(shards).samples) == 8


def test_many_images_beside_shards_are_refused_as_ambiguous(shards, png):
    for i in range(11):  # more than a cover and previews: an image folder with an archive in it?
        (shards / f"img{i}.png").write_bytes(png)
    with pytest.raises(DataError, match=r"insects: 2 \.tar shard\(s\) and more than 10 image files side by "
                                        r"side: .*move the shards or the images into a folder of their own"):
        open_dataset(shards)


def test_shards_and_parquet_files_side_by_side_are_refused(shards):
    (shards / "t.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match=r"insects: both \.tar shards and \.parquet files"):
        open_dataset(shards)


def _rewrite_keeping_size_and_mtime(path: Path, write) -> None:
    """`cp -p` of a regenerated file: new bytes, the old size and mtime."""
    st = path.stat()
    write(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def _labels(ds) -> list[str]:
    return [ds.classes[s.label] for s in ds.samples]


def test_a_shard_rewritten_with_its_size_and_mtime_kept_is_unpacked_again(shards, png):
    assert _labels(open_dataset(shards)) == list("abab") * 2
    _rewrite_keeping_size_and_mtime(shards / "s-000.tar", lambda p: _shard(p, png, "bbab", "k0"))
    assert _labels(open_dataset(shards)) == list("bbab") + list("abab")


def test_a_parquet_file_rewritten_with_its_size_and_mtime_kept_is_unpacked_again(tmp_path, png, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    monkeypatch.setenv("FEATX_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "pets.parquet"

    def write(labels: list[str]):
        return lambda p: pq.write_table(pa.table({"image": [png] * 4, "label": labels}), p)

    write(["cat", "dog", "cat", "dog"])(path)
    assert _labels(open_dataset(path)) == ["cat", "dog", "cat", "dog"]
    _rewrite_keeping_size_and_mtime(path, write(["dog", "dog", "cat", "dog"]))
    assert _labels(open_dataset(path)) == ["dog", "dog", "cat", "dog"]
