"""Before a store is written: room on its disk, and a folder we may write to (docs/store.md).

    check_room(path, planned_bytes(dataset, spec))   # refuses a store bigger than the free space
    check_writable(path.parent)                      # refuses a file, or a read-only folder

A store allocates all of its bytes when it is created (featx.store.schema), so a typo such as
`--views 1000000000` would otherwise start writing terabytes; and a read-only `--out` would
otherwise be found only after the model was loaded. Both are one line, before anything is made.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from featx.runtime import atomic
from featx.runtime.atomic import nearest_existing
from featx.errors import StoreError

# Room kept free beyond the store itself: a full disk breaks more than featx.
MARGIN_BYTES = 256 * 2**20


def human(n: float) -> str:
    """Bytes for a message: 1.2 GB, 32.8 TB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def check_room(path: Path, planned: int, freed: int = 0, what: str = "store") -> None:
    """Refuse when `planned` bytes at `path` (less `freed`, a file it replaces) do not fit."""
    if planned <= 0:
        return
    where = nearest_existing(Path(path).parent)
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return  # no answer (an odd file system): the write itself will report a full disk
    if planned + MARGIN_BYTES > free + freed:
        raise StoreError(f"{path}: the {what} would take {human(planned)} but {where} has "
                         f"{human(free + freed)} free; lower --views (or leave out --cut), "
                         "or choose another --out")


def check_writable(folder: Path, option: str = "--out") -> None:
    """`folder` is (or can be made as) a folder featx may create files in; one line if not."""
    atomic.check_writable(folder, option, StoreError)
