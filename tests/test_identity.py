"""Issue 18: a listed file is opened once, for its stat and its bytes; the memo still saves reads."""

from __future__ import annotations

import hashlib
import os

import pytest

from featx.runtime import hashing
from featx.runtime.hashing import file_sha256
from featx.data import hash_files, identity, open_dataset, scan_images
from featx.data.dataset import DatasetOptions
from featx.data.identity import identity_split, split_draw, stat_and_hash
from tests.conftest import make_class_tree


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch):
    monkeypatch.setattr(identity, "_MEMO", {})


def test_one_open_gives_each_files_hash_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setattr(identity, "HASH_CHUNK", 3)  # several thread-pool tasks
    monkeypatch.setattr(hashing, "CHUNK", 4)  # files longer than a read block
    root = tmp_path / "d"
    root.mkdir()
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(b"outside the root")
    rels = []
    for n in (0, 1, 3, 4, 5, 13):
        (root / f"f{n:02d}.png").write_bytes(bytes(range(n)))
        rels.append(f"f{n:02d}.png")
    rels += [str(outside), "missing.png"]
    shas, sizes, mtimes = stat_and_hash(root, rels)
    for rel, sha, size, mtime in list(zip(rels, shas, sizes, mtimes))[:-1]:
        path = root / rel
        assert sha == hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256(path)
        assert (size, mtime) == (path.stat().st_size, path.stat().st_mtime_ns)
    assert (shas[-1], sizes[-1], mtimes[-1]) == ("", 0, 0)  # vanished: still listed, hash ""
    assert hash_files([root / r for r in rels]) == shas


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_named_like_an_image_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")  # opening it for reading would wait for a writer forever
    shas, sizes, mtimes = stat_and_hash(tmp_path, ["pipe.png"])
    assert shas == [""] and mtimes[0] == (tmp_path / "pipe.png").stat().st_mtime_ns
    with pytest.raises(OSError):
        file_sha256(tmp_path / "pipe.png")
    root = make_class_tree(tmp_path / "d", classes=("a", "b"), per_class=2)
    os.mkfifo(root / "a" / "pipe.png")
    report = scan_images(open_dataset(root))  # listing and decoding: neither waits
    assert report.unreadable == [("a/pipe.png", "empty file (0 bytes)")]


def test_a_file_that_grew_after_its_stat_is_hashed_whole(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    path.write_bytes(b"0123456789")
    real = os.fstat

    def stale(fd):  # the stat taken before 6 more bytes were written
        st = list(real(fd))
        st[6] = 4
        return os.stat_result(st)

    monkeypatch.setattr(os, "fstat", stale)
    assert stat_and_hash(tmp_path, ["a.png"])[0] == [hashlib.sha256(b"0123456789").hexdigest()]


def test_a_file_hashed_before_is_not_read_again_until_it_changes(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    path.write_bytes(b"first")
    first = stat_and_hash(tmp_path, ["a.png"])
    reads = []
    real = identity.read_sha256
    monkeypatch.setattr(identity, "read_sha256", lambda fd, st: reads.append(1) or real(fd, st))
    assert stat_and_hash(tmp_path, ["a.png"]) == first and not reads
    assert hash_files([path]) == first[0] and not reads
    assert hash_files([path], [(first[1][0], first[2][0])]) == first[0] and not reads
    path.write_bytes(b"second")
    os.utime(path, ns=(first[2][0] + 10**9, first[2][0] + 10**9))
    shas, _, mtimes = stat_and_hash(tmp_path, ["a.png"])
    assert shas == [hashlib.sha256(b"second").hexdigest()] and reads == [1]
    assert mtimes == [first[2][0] + 10**9]


def test_split_draws_are_split_draw_of_each_sample():
    shas = [hashlib.sha256(bytes([i])).hexdigest() for i in range(200)] + ["", ""]
    paths = [f"c/{i}.png" for i in range(202)]
    options = DatasetOptions(val_frac=0.2, test_frac=0.3, split_seed=7)
    splits = identity_split(shas, [i % 3 for i in range(202)], options, paths)
    for sha, path, split in zip(shas, paths, splits):
        u = split_draw(sha, 7, path)
        assert split == ("test" if u < 0.3 else "val" if u < 0.5 else "train")
