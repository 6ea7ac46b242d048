"""A store's sample files, opened only when they are still the store's own.

    files = store.sample_files(rows)        # featx.store.FeatureStore
    path, why = files.locate("a/x.png")     # (Path, "") or (None, "outside the dataset root", ...)

Why: a store names its samples by paths relative to its dataset root, and a path read from a
file is data, not a promise. A tampered `../SECRET.png` must not be opened (search and audit
thumbnails embed what they read), and a store read from another working folder, or a dataset
whose files were replaced, must not lend another file's pixels to a sample: a file is the
sample's only when its bytes have the sha256 the store recorded.
"""

from __future__ import annotations

import os
from pathlib import Path

from featx.runtime.hashing import file_sha256


def inside_root(root: str | os.PathLike, rel: str) -> Path | None:
    """root / rel when the sample path `rel` stays inside `root` (lexically: a link inside the
    dataset may still lead out, as a walk follows it), else None: a tampered `../SECRET.png`
    names nothing. An absolute path (a manifest's file outside its folder) is returned as it is:
    only its recorded sha256 can vouch for it (SampleFiles)."""
    if not rel or "\0" in rel:
        return None
    if os.path.isabs(rel):
        return Path(rel)
    norm = os.path.normpath(rel)
    if norm == ".." or norm.startswith(".." + os.sep) or norm == ".":
        return None
    return Path(root) / norm


class SampleFiles:
    """The files of a store's samples, opened only when they are the store's own: inside the
    dataset root, and with the bytes the store recorded (sha256), so that a store read from
    another folder, or a dataset whose files were replaced, never shows another file's pixels."""

    def __init__(self, root: str | os.PathLike, sha256: dict[str, str]):
        self.root = Path(root)
        self.sha256 = sha256  # sample path -> recorded hex ("" or missing: not recorded)
        self._found: dict[str, tuple[Path | None, str]] = {}

    def locate(self, rel: str) -> tuple[Path | None, str]:
        """(the file of sample `rel`, "") or (None, why it is not the sample's)."""
        if rel not in self._found:
            self._found[rel] = self._locate(rel)
        return self._found[rel]

    def _locate(self, rel: str) -> tuple[Path | None, str]:
        path = inside_root(self.root, rel)
        known = self.sha256.get(rel, "")
        if path is None or (os.path.isabs(rel) and not known):
            return None, "outside the dataset root"
        try:
            actual = file_sha256(path)
        except OSError as exc:
            return None, "missing" if isinstance(exc, FileNotFoundError) else f"cannot read ({exc.strerror or exc})"
        if known and actual != known:
            return None, "its bytes are not the store's (sha256 differs: another or a changed file)"
        return path, ""
