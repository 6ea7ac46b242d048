"""Datasets that ship in installable packages, usable offline by name (`open_dataset("elpv")`).

    elpv           pip install elpv-dataset         2,624 EL images of solar cells, 300x300 grayscale
    fashion-mnist  apt-get install dataset-fashion-mnist (Debian, Expat licence)
                                                    70,000 Zalando product photos, 28x28 grayscale,
                                                    10 classes, the published 60,000/10,000 split

ELPV ships image files and a labels.csv, which the manifest reader reads where they are installed.
Fashion-MNIST ships four gzipped IDX arrays, and every loader in featx reads image files: on its
first use it is written once as PNG files and a manifest.csv (path,label,split) under
$FEATX_CACHE/datasets/fashion-mnist (default ~/.cache/featx/datasets/fashion-mnist). The folder is
built under a temporary name and renamed into place, so a killed build never leaves a half-written
dataset behind (its leftover is swept by the next build); source.json records the arrays' sizes, and
the PNGs are rebuilt when they change.

`packaged_datasets()` is a mapping whose values are computed when one is looked up: listing the
names, or opening a folder that is not a packaged name, never converts anything.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from featx.data.records import DatasetOptions
from featx.errors import DataError
from featx.runtime.atomic import process_alive

# ELPV's labels are defect probabilities from raters; 1/3 and 2/3 mean the raters were unsure.
ELPV_NAMES = {"0.0": "functional (p=0)", "0.3333333333333333": "doubtful (p=1/3)",
              "0.6666666666666666": "doubtful (p=2/3)", "1.0": "defective (p=1)",
              "<=0.5": "functional", ">0.5": "defective"}

# The class indices of the IDX label files, named as in the Fashion-MNIST README.
FASHION_MNIST_NAMES = {"0": "T-shirt/top", "1": "Trouser", "2": "Pullover", "3": "Dress", "4": "Coat",
                       "5": "Sandal", "6": "Shirt", "7": "Sneaker", "8": "Bag", "9": "Ankle boot"}
# The Debian package's files, per split: (images, labels).
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                       "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}

Entry = tuple[Path, DatasetOptions, dict[str, str]]


class PackagedDatasets(Mapping):
    """{name: (labels file, default options, display names)}; a value is made when looked up."""

    def __init__(self, makers: dict[str, Callable[[], Entry]]):
        self._makers = makers

    def __getitem__(self, name: str) -> Entry:
        return self._makers[name]()

    def __contains__(self, name: object) -> bool:  # Mapping's default would make the value
        return name in self._makers

    def __iter__(self) -> Iterator[str]:
        return iter(self._makers)

    def __len__(self) -> int:
        return len(self._makers)


def packaged_datasets() -> PackagedDatasets:
    """The installed packaged datasets, by name (see the module's docstring)."""
    makers: dict[str, Callable[[], Entry]] = {}
    try:
        import elpv_dataset

        labels = Path(elpv_dataset.__file__).parent / "data" / "labels.csv"
        makers["elpv"] = lambda: (labels, DatasetOptions(label_col=1), ELPV_NAMES)
    except ImportError:
        pass
    source = fashion_mnist_source()
    if source is not None:
        makers["fashion-mnist"] = lambda: (materialize_fashion_mnist(source, dataset_cache("fashion-mnist")),
                                           DatasetOptions(), FASHION_MNIST_NAMES)
    return PackagedDatasets(makers)


def fashion_mnist_dirs() -> list[Path]:
    """Where the Fashion-MNIST arrays are looked for, in order: the Debian package's folder, the
    same under /usr/local, and $XDG_DATA_HOME/datasets (default ~/.local/share/datasets) for an
    install without root (`dpkg -x dataset-fashion-mnist_*.deb DIR`, then move its
    usr/share/datasets/fashion-mnist there)."""
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return [Path("/usr/share/datasets/fashion-mnist"), Path("/usr/local/share/datasets/fashion-mnist"),
            data_home / "datasets" / "fashion-mnist"]


def fashion_mnist_source() -> Path | None:
    """The first folder of `fashion_mnist_dirs()` that holds all four arrays, or None."""
    names = [n for pair in FASHION_MNIST_FILES.values() for n in pair]
    for folder in fashion_mnist_dirs():
        if all((folder / n).is_file() for n in names):
            return folder
    return None


def dataset_cache(name: str) -> Path:
    """$FEATX_CACHE/datasets/NAME (default ~/.cache/featx/datasets/NAME), like the engines' cache."""
    return Path(os.environ.get("FEATX_CACHE") or Path.home() / ".cache" / "featx") / "datasets" / name


def read_idx(path: Path, ndim: int):
    """A gzipped IDX file of unsigned bytes (the MNIST format) -> numpy array of `ndim` dims.

    Raises:
        DataError: unreadable, not gzip, a wrong magic number, or fewer bytes than the header says.
    """
    import numpy as np

    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read IDX array ({exc})") from None
    header = 4 + 4 * ndim
    if len(data) < header or data[:4] != bytes([0, 0, 0x08, ndim]):
        raise DataError(f"{path}: not an IDX file of {ndim}-d unsigned bytes (magic {data[:4].hex() or 'none'})")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    size = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != size:
        raise DataError(f"{path}: {len(data) - header} data bytes, the header {shape} says {size}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _source_stamp(source: Path) -> dict[str, int]:
    return {n: (source / n).stat().st_size for pair in FASHION_MNIST_FILES.values() for n in pair}


def materialize_fashion_mnist(source: Path, cache: Path) -> Path:
    """The manifest.csv of Fashion-MNIST as PNG files in `cache`, written on the first call (about
    70,000 files, 280 MB on a 4 KiB-block file system) and reused after while source.json matches.

    Raises:
        DataError: a damaged array, images and labels that disagree, or a cache that cannot be written.
    """
    manifest = cache / "manifest.csv"
    stamp = _source_stamp(source)
    if manifest.is_file() and _read_stamp(cache) == stamp:
        return manifest
    _sweep_dead_builds(cache)
    tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        _write_pngs(source, tmp, stamp)
        _move_into_place(tmp, cache)
    except OSError as exc:
        raise DataError(f"{cache}: cannot write the Fashion-MNIST PNG cache ({exc.strerror or exc}); "
                        "set FEATX_CACHE to a writable folder") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _write_pngs(source: Path, folder: Path, stamp: dict[str, int]) -> None:
    """PNGs in folder/SPLIT/, then source.json, then manifest.csv last (each fsynced with the folder)."""
    from PIL import Image

    from featx.runtime.progress import progress_bar

    arrays = {}
    for split, (images_file, labels_file) in FASHION_MNIST_FILES.items():
        images, labels = read_idx(source / images_file, 3), read_idx(source / labels_file, 1)
        if len(images) != len(labels):
            raise DataError(f"{source}: {images_file} holds {len(images)} images, {labels_file} "
                            f"{len(labels)} labels")
        if labels.size and int(labels.max()) >= len(FASHION_MNIST_NAMES):
            raise DataError(f"{source / labels_file}: label {int(labels.max())} (Fashion-MNIST has 0-9)")
        arrays[split] = images, labels
    rows = ["path,label,split"]
    total = sum(len(labels) for _, labels in arrays.values())
    with progress_bar(total, "fashion-mnist: writing PNGs (once)") as advance:
        for split, (images, labels) in arrays.items():
            (folder / split).mkdir(parents=True, exist_ok=True)
            for i, (image, label) in enumerate(zip(images, labels)):
                name = f"{split}/{i:05d}.png"
                Image.fromarray(image).save(folder / name, format="PNG")  # uint8 2-d: mode L
                rows.append(f"{name},{int(label)},{split}")
                advance(1)
    (folder / "source.json").write_text(json.dumps(stamp, sort_keys=True) + "\n", encoding="utf-8")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    os.sync()  # tens of thousands of small files: one sync instead of one fsync each


def _move_into_place(tmp: Path, cache: Path) -> None:
    """Rename the finished build to `cache`; a stale cache is moved aside first. Where another
    process finished first (the rename finds a full folder), its build is kept."""
    if cache.exists():
        if (cache / "manifest.csv").is_file() and _read_stamp(cache) == _read_stamp(tmp):
            return  # a concurrent build won
        old = cache.with_name(f"{cache.name}.old-{os.getpid()}")
        os.rename(cache, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.rename(tmp, cache)
    except OSError:
        if not (cache / "manifest.csv").is_file():
            raise
    fd = os.open(cache.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_stamp(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "source.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _sweep_dead_builds(cache: Path) -> None:
    """Remove the NAME.tmp-PID / NAME.old-PID folders of builds whose process is gone."""
    if not cache.parent.is_dir():
        return
    for leftover in cache.parent.glob(f"{cache.name}.*-*"):
        kind, _, pid = leftover.name[len(cache.name) + 1:].partition("-")
        if kind in ("tmp", "old") and pid.isdigit() and not process_alive(int(pid)) and leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
