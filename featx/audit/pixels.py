"""What the pixels say: a content hash of each file's bytes (exact duplicates) and a 64-bit DCT
perceptual hash of its pixels (near-duplicates that features alone cannot tell apart).

Why a pixel hash: on ELPV (efficientnet_lite0, clean features) a JPEG-q85 re-encoded, resized
copy of a test cell has cosine 0.89-0.99 to its source, while different cells reach 0.98 to
their nearest neighbour; the 64-bit hash of the copy is 0-4 bits from its source's (92 of 120
identical) while a different cell is typically 8-16 bits away (measured, docs/audit.md).

The hash is the classic pHash: grey, 32x32 (Lanczos), 2-D DCT, the 8x8 lowest frequencies
compared with their median.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featx.runtime.hashing import file_sha256
from featx.store.files import inside_root

HASH_BYTES = 8  # 64 bits


@dataclass
class PixelHashes:
    """Per sample row: sha256 of the file (None if unreadable) and pHash bits [n, 8] uint8."""

    sha256: list[str | None]
    codes: np.ndarray  # [n, HASH_BYTES] uint8 (zeros where `ok` is False)
    ok: np.ndarray  # [n] bool: the pixel hash was computed
    missing: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def phash(img) -> np.ndarray:
    """64-bit DCT perceptual hash of a PIL image, as 8 bytes."""
    from PIL import Image
    from scipy.fft import dctn

    grey = np.asarray(img.convert("L").resize((32, 32), Image.LANCZOS), dtype=np.float64)
    low = dctn(grey, norm="ortho")[:8, :8]
    return np.packbits((low > np.median(low)).ravel())


def hash_pixels(root: Path, paths: list[str], known_sha256: list[str] | None = None,
               pixels: bool = True, advance=None, threads: int = 2) -> PixelHashes:
    """Hash the files of `paths` (relative to `root`). A file that is missing or does not decode
    keeps no hash and is listed in `missing`; so is one outside `root`, or whose bytes are not
    the `known_sha256` the store recorded (another dataset's same-named file: its pixels are not
    the sample's), which keeps its recorded hash for the exact-duplicate check."""
    from featx.data.images import load_image

    def one(i: int):
        path = inside_root(root, paths[i])
        sha = known_sha256[i] if known_sha256 else None
        if path is None or (Path(paths[i]).is_absolute() and not sha):
            return sha, None, "outside the dataset root"
        if sha and not pixels:  # the store's hash is all the exact-duplicate check needs
            return sha, None, None
        try:
            actual = file_sha256(path)
            if sha and actual != sha:
                return sha, None, "its bytes are not the store's (sha256 differs: another or a changed file)"
            code = phash(load_image(path)) if pixels else None
            return actual, code, None
        except Exception as exc:  # any decode failure (featx.data.images raises several kinds)
            reason = "missing" if not path.exists() else (str(exc).splitlines() or [type(exc).__name__])[0]
            return sha, None, reason

    n = len(paths)
    out = PixelHashes([None] * n, np.zeros((n, HASH_BYTES), np.uint8), np.zeros(n, bool))
    with ThreadPoolExecutor(threads) as pool:  # PIL decodes and resizes without the GIL
        for i, (sha, code, reason) in enumerate(pool.map(one, range(n))):
            out.sha256[i] = sha
            if code is not None:
                out.codes[i], out.ok[i] = code, True
            if reason:
                out.missing.append((paths[i], reason))
            if advance:
                advance(1)
    return out


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between codes a [n, 8] and b [n, 8], row by row."""
    return np.unpackbits(np.bitwise_xor(a, b), axis=1).sum(1)
