"""Issue 18: listing a class-folder tree costs one open per image and no stat per file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from featx.data import identity, open_dataset
from featx.data.dataset import relative_path, relative_paths
from tests.conftest import make_class_tree


def _count_calls(monkeypatch, module, name: str) -> list:
    calls = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    return calls


@pytest.mark.parametrize("per_class", [3, 12])
def test_a_class_tree_is_listed_with_one_open_per_image_and_no_stat_per_file(tmp_path, monkeypatch,
                                                                            per_class):
    monkeypatch.setattr(identity, "_MEMO", {})
    root = make_class_tree(tmp_path / "d", classes=("a", "b"), per_class=per_class)
    (root / "b" / "deeper").mkdir()
    (root / "b" / "deeper" / "x.png").write_bytes((root / "a" / "a_00.png").read_bytes())
    (root / "b" / "notes.txt").write_text("not an image")
    os.symlink(root / "a" / "a_01.png", root / "b" / "link.png")
    stats = _count_calls(monkeypatch, os, "stat")
    opens = _count_calls(monkeypatch, os, "open")
    ds = open_dataset(root)
    # Stats for the root and its folders, one for the link's target; none for a regular file.
    assert [p for p in map(os.fspath, stats) if p.endswith(".png")] == [str(root / "b" / "link.png")]
    assert sorted(map(os.fspath, opens)) == sorted(str(root / s.path) for s in ds.samples)
    expected = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert [s.path for s in ds.samples] == expected
    for s in ds.samples:  # what a stat and a read of each file gives
        st = (root / s.path).stat()
        assert (s.size, s.mtime_ns) == (st.st_size, st.st_mtime_ns)
        assert s.sha256 == hashlib.sha256((root / s.path).read_bytes()).hexdigest()


@pytest.mark.parametrize("root, path", [
    ("/data/set", "/data/set/a/b.png"), ("/data/set", "/data/settle/b.png"), ("/data/set", "/other/b.png"),
    ("data/set", "data/set/a.png"), ("data", "/data/a.png"), (".", "a/b.png"), ("/", "/a/b.png"),
    ("/data/set", "/data/set"), ("", "a.png"),
])
def test_relative_paths_are_what_pathlib_gives(root, path):
    try:
        want = Path(path).relative_to(Path(root)).as_posix()
    except ValueError:
        want = Path(path).as_posix()
    assert relative_path(Path(root), Path(path)) == relative_path(root, path) == want
    assert relative_paths(Path(root), [path]) == [want]
