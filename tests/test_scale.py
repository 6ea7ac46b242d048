"""Issue 18, datasets at scale: scanning lists without decoding everything; hashing in chunks."""

from __future__ import annotations

import subprocess
import sys

from featx.data import content_hash, hash_files, open_dataset, scan_images
from featx.data import identity
from tests.conftest import make_class_tree


def test_scan_decodes_an_even_sample_when_asked(tmp_path):
    root = make_class_tree(tmp_path / "d", classes=("a", "b"), per_class=10, seed=1)
    (root / "a" / "a_00.png").write_bytes(b"\x89PNG broken")  # row 0: in every sample
    (root / "b" / "b_09.png").write_bytes(b"\x89PNG broken")  # the last row: in no small sample
    ds = open_dataset(root)
    whole = scan_images(ds)
    assert whole.decoded == 20 and {p for p, _ in whole.unreadable} == {"a/a_00.png", "b/b_09.png"}
    part = scan_images(ds, sample=5)
    assert part.decoded == 5 and sum(part.sizes.values()) == 4
    assert [p for p, _ in part.unreadable] == ["a/a_00.png"]
    assert scan_images(ds, sample=50).decoded == 20  # a sample larger than the dataset: all of it
    done = subprocess.run([sys.executable, "-m", "featx.cli", "scan", str(root), "--decode-sample", "5"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "decoded 5 of 20 images" in done.stdout and "1 unreadable file(s)" in done.stdout


def test_hashing_in_chunks_gives_each_files_own_hash(tmp_path, monkeypatch):
    monkeypatch.setattr(identity, "HASH_CHUNK", 7)
    monkeypatch.setattr(identity, "_MEMO", {})
    files = []
    for i in range(40):
        files.append(tmp_path / f"f{i:02d}.bin")
        files[-1].write_bytes(bytes([i]) * (i + 1))
    files.append(tmp_path / "missing.bin")
    shas = hash_files(files)
    assert shas[:-1] == [content_hash(f) for f in files[:-1]] and shas[-1] == ""
    assert len(set(shas[:-1])) == 40
