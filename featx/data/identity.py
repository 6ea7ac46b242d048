"""A sample's identity is its bytes: content hashes, and splits that follow the content for life.

    shas = hash_files([root / s.path for s in samples])     # sha256 hex, "" if unreadable
    splits = identity_split(shas, labels, options)          # train / val / test per sample

Why content, not path or mtime: a copied or moved dataset (new root, new mtimes, same bytes) is
the same data, and a file moved between class folders is the same image relabelled. A feature
store keeps each row's hash, so an update re-extracts only new or changed bytes (featx.store).

Splits of a single-folder dataset (class folders, or a manifest without a split column) are a
seeded function of each sample's hash alone: u = sha256(seed, content) mapped to [0, 1), test
below test_frac, val below test_frac + val_frac, train above. Adding, removing or relabelling
other samples never moves a sample to another split, so an image tested on in one version of a
dataset is never trained on in the next. Splits are stratified in expectation (u ignores the
label), not in exact counts; one safeguard keeps small classes usable: a class that would get no
training sample sends its sample with the largest u to train (docs/store.md).

Hashing reads each file once per process (a memo keyed by path, size and mtime, of up to
MEMO_MAX files: a larger dataset listed twice in one process is hashed twice; an entry holds
only while the file's ctime is the same, as a same-size rewrite with its mtime restored, `touch -r`
or `cp -p`, changes the ctime, which no one can set back); files are
hashed by a few threads (hashlib and file reads release the GIL). A listed folder's files are
opened once each (stat_and_hash): the open file's fstat gives the size and mtime, and one read
its bytes (a FIFO or a device named like an image is refused, never read). ELPV (2,624 PNGs,
90 MB): 0.10 s on the 2-core CPU dev machine; hashing alone of 1,000,000 8x8 PNGs: 9 s (6 s
CPU, page cache warm).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from featx.data.dataset import Sample, gc_paused, relative_paths
from featx.data.records import DatasetOptions
from featx.runtime.hashing import OPEN_FLAGS, read_sha256

# Two threads: with the files' bytes not cached, 50,000 files hash in 1.6 s (one thread: 3.9 s,
# four: 1.5 s); cached, one is as fast, and four often fight over the GIL between system calls
# (10x the context switches: 1M files took up to 10 s more system time).
HASH_THREADS = 2
HASH_CHUNK = 256  # files per thread-pool task
MEMO_MAX = 200_000  # files whose hashes a process remembers (beyond: hashed again when listed again)
# (absolute path, size, mtime_ns) -> (sha256 hex, ctime_ns): one read per file per process.
_MEMO: dict[tuple[str, int, int], tuple[str, int]] = {}


def hash_files(paths: list[Path], stats: list[tuple[int, int]] | None = None) -> list[str]:
    """Content hashes of `paths` ("" for a file that cannot be read), in order.

    stats: the (size, mtime_ns) seen when the files were listed; a file hashed earlier in this
    process with the same stat is not read again (without them, the stat taken when hashing).
    """
    out = [""] * len(paths)
    if stats is not None and _MEMO:
        out = [_remembered(os.fspath(p), *st) for p, st in zip(paths, stats)]
    # In the listing's order (already sorted): no list of keys or set of them for a million files.
    todo = [i for i, sha in enumerate(out) if not sha]
    shas, sizes, mtimes, ctimes = _hash_many(len(todo), lambda k: os.fspath(paths[todo[k]]))
    for i, sha in zip(todo, shas):
        out[i] = sha
    if len(_MEMO) + len(todo) <= MEMO_MAX:  # a million files' memo would hold ~200 MB for good
        _MEMO.update(((os.fspath(paths[i]), size, mtime), (sha, ctime))
                     for i, size, mtime, ctime, sha in zip(todo, sizes, mtimes, ctimes, shas) if sha)
    return out


def _remembered(path: str, size: int, mtime_ns: int, ctime_ns: int | None = None) -> str:
    """The memo's hash of the file, "" unless its (size, mtime, ctime) are the ones hashed
    (`ctime_ns` None: stat the file for it)."""
    found = _MEMO.get((path, size, mtime_ns))
    if found is None:
        return ""
    if ctime_ns is None:
        try:
            ctime_ns = os.stat(path).st_ctime_ns
        except OSError:
            return ""
    return found[0] if found[1] == ctime_ns else ""


def stat_and_hash(root: Path, rels: list[str]) -> tuple[list[str], list[int], list[int]]:
    """(content hashes, sizes, mtimes_ns) of the files at `rels` (relative to `root`, or
    absolute), in order: each file is opened once, for its stat and its bytes. A file that cannot
    be read has hash ""; one that cannot even be stat'ed, size and mtime 0 (it is still listed:
    extraction records why it cannot be decoded)."""
    base = os.fspath(root)
    prefix = "" if base in ("", ".") else base if base.endswith(os.sep) else base + os.sep
    isabs, windows = os.path.isabs, os.name == "nt"

    def path_of(i: int) -> str:  # os.fspath(root / rel), without a Path
        rel = rels[i]
        return rel if rel[:1] == "/" or (windows and isabs(rel)) else prefix + rel

    shas, sizes, mtimes, ctimes = _hash_many(len(rels), path_of)
    if len(_MEMO) + len(rels) <= MEMO_MAX:
        _MEMO.update(((path_of(i), sizes[i], mtimes[i]), (sha, ctimes[i])) for i, sha in enumerate(shas) if sha)
    return shas, sizes, mtimes


def _hash_many(n: int, path_of: Callable[[int], str]) -> tuple[list[str], list[int], list[int], list[int]]:
    """(shas, sizes, mtimes, ctimes) of the files path_of(0) .. path_of(n - 1), hashed by a few threads
    (file reads and hashlib release the GIL)."""
    shas, sizes, mtimes, ctimes = [""] * n, [0] * n, [0] * n, [0] * n
    # Chunks of files per task: one future per file costs ~1.5 KB and ~25 us (1M files: 1.5 GB);
    # each task makes its own paths, so a million path strings never exist at once.
    spans = [(lo, min(lo + HASH_CHUNK, n)) for lo in range(0, n, HASH_CHUNK)]

    def work(span: tuple[int, int]) -> tuple[list[str], list[int], list[int], list[int]]:
        rows = [_open_and_hash(path_of(i)) for i in range(*span)]
        return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]

    def merge(results) -> None:
        for (lo, hi), (sha, size, mtime, ctime) in zip(spans, results):
            shas[lo:hi], sizes[lo:hi], mtimes[lo:hi], ctimes[lo:hi] = sha, size, mtime, ctime

    if len(spans) <= 1:
        merge(map(work, spans))
    else:
        with ThreadPoolExecutor(min(HASH_THREADS, len(spans))) as pool:
            merge(pool.map(work, spans))
    return shas, sizes, mtimes, ctimes


def _open_and_hash(path: str) -> tuple[str, int, int, int]:
    """(sha256 or "" if unreadable, size, mtime_ns, ctime_ns) of one file, from one open: its
    fstat, then its bytes unless this process hashed the same (path, size, mtime, ctime) before."""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError:  # no permission, vanished: extraction records the reason when it decodes it
        return "", *_stat(path)
    try:
        st = os.fstat(fd)
        sha = _remembered(path, st.st_size, st.st_mtime_ns, st.st_ctime_ns) if _MEMO else ""
        return sha or read_sha256(fd, st), st.st_size, st.st_mtime_ns, st.st_ctime_ns
    except OSError:
        return "", *_stat(path)
    finally:
        os.close(fd)


def _stat(path: str) -> tuple[int, int, int]:
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns, st.st_ctime_ns
    except OSError:
        return 0, 0, 0


def split_draw(sha: str, seed: int, fallback: str = "") -> float:
    """The sample's u in [0, 1): a seeded function of its content hash (of `fallback`, its path,
    when the file could not be read)."""
    digest = hashlib.sha256(f"featx-split\0{seed}\0{sha or 'path:' + fallback}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _split_draws(shas: list[str], seed: int, paths: list[str]) -> list[float]:
    """split_draw of every sample: the same numbers, from one hash of the common prefix."""
    base = hashlib.sha256(f"featx-split\0{seed}\0".encode())
    out = []
    for sha, path in zip(shas, paths):
        h = base.copy()
        h.update((sha or "path:" + path).encode())
        out.append(int.from_bytes(h.digest()[:8], "big") / 2**64)
    return out


def identity_split(shas: list[str], labels: list[int], options: DatasetOptions,
                   paths: list[str] | None = None) -> list[str]:
    """Each labelled sample's split from its content alone; unlabeled (-1) stay unlabeled."""
    draws = _split_draws(shas, options.split_seed, paths or [""] * len(shas))
    test, val = options.test_frac, options.test_frac + options.val_frac
    splits = ["unlabeled" if y < 0 else "test" if u < test else "val" if u < val else "train"
              for u, y in zip(draws, labels)]
    # A class with no training sample trains on its most train-like one (the largest u).
    best: dict[int, int] = {}
    for i, y in enumerate(labels):
        if y >= 0 and (y not in best or draws[i] > draws[best[y]]):
            best[y] = i
    has_train = {y for y, s in zip(labels, splits) if s == "train"}
    for y, i in best.items():
        if y not in has_train:
            splits[i] = "train"
    return splits


def with_content_hashes(dataset):
    """`dataset` (a featx.data.Dataset) with every sample's content hash filled in."""
    from dataclasses import replace

    todo = [i for i, s in enumerate(dataset.samples) if not s.sha256]
    if not todo:
        return dataset
    samples = list(dataset.samples)
    shas = hash_files([dataset.abspath(samples[i]) for i in todo],
                      [(samples[i].size, samples[i].mtime_ns) for i in todo])
    for i, sha in zip(todo, shas):
        samples[i] = replace(samples[i], sha256=sha)
    return replace(dataset, samples=samples)


def split_by_identity(root: Path, files: list[Path], labels: list[int],
                      options: DatasetOptions) -> list[Sample]:
    """Samples of `files` (in order) whose splits follow their content (featx.data.identity)."""
    return samples_by_identity(root, relative_paths(root, list(map(os.fspath, files))), labels, options)


def samples_by_identity(root: Path, rels: list[str], labels: list[int],
                        options: DatasetOptions) -> list[Sample]:
    """Samples of the files at `rels` (paths as `relative_path` gives them, in order) whose splits
    follow their content; each file is opened once, for its size, mtime and hash together."""
    with gc_paused():
        shas, sizes, mtimes = stat_and_hash(root, rels)
        splits = identity_split(shas, labels, options, rels)
        return [Sample(*row) for row in zip(rels, labels, splits, sizes, mtimes, shas)]
