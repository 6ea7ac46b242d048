"""How much memory this process may use: the machine's RAM, or less where a cgroup limits it.

    total_memory_bytes()        # min(physical RAM, every cgroup limit above this process)
    available_memory_bytes()    # what the kernel could give now: RAM and each cgroup's room

Why: in a container (Docker, Kubernetes, a Slurm job with cgroup limits) the machine's RAM is
not what the process may use. A store sized against 64 GB of RAM in a 4 GB container is an
OOM kill halfway through training, not a clear decision.

Both cgroup v2 (memory.max, memory.current) and v1 (memory.limit_in_bytes, memory.usage_in_bytes)
are read, at this process's own cgroup and at every cgroup above it up to the mount's root (a
limit is often set on a parent: a systemd slice, a Slurm job above its step). "max", or v1's
huge number, means no limit. A cgroup's usage counts reclaimable page cache, so its inactive
file pages are not counted as used (as `docker stats` does), and free RAM is the kernel's
MemAvailable (free plus reclaimable cache), not MemFree. None where the platform says nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
PROC_MEMINFO = Path("/proc/meminfo")
# (folder under the mount, controller name in /proc/self/cgroup, limit, usage, its stat's
# reclaimable-cache key); v2's line has no controller name.
V2 = ("", "", "memory.max", "memory.current", "inactive_file")
V1 = ("memory", "memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
NO_LIMIT = 2**60  # v1 says "no limit" with ~2**63


def total_memory_bytes() -> int | None:
    """The machine's physical memory, or the lowest cgroup limit above this process."""
    physical = _sysconf_bytes("SC_PHYS_PAGES")
    return _smallest([physical, *(limit for limit, _ in _cgroup_limits())])


def available_memory_bytes() -> int | None:
    """Memory the kernel could give now: MemAvailable, and no more than any cgroup's room."""
    free = _meminfo_bytes("MemAvailable")
    free = _sysconf_bytes("SC_AVPHYS_PAGES") if free is None else free
    return _smallest([free, *(limit - used if used is not None else limit
                              for limit, used in _cgroup_limits())])


def _smallest(values: list[int | None]) -> int | None:
    known = [max(0, v) for v in values if v is not None]
    return min(known) if known else None


def _sysconf_bytes(name: str) -> int | None:
    try:
        return os.sysconf(name) * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on this platform
        return None


def _meminfo_bytes(key: str) -> int | None:
    for line in _read_lines(PROC_MEMINFO):
        name, _, value = line.partition(":")
        if name == key and value.split() and value.split()[0].isdigit():
            return int(value.split()[0]) * 1024  # /proc/meminfo counts kB
    return None


def _cgroup_limits() -> list[tuple[int, int | None]]:
    """(limit, used or None) of every cgroup memory limit that applies and is set; used leaves
    out the cgroup's reclaimable page cache."""
    found = []
    for folder, limit_name, usage_name, cache_key in _cgroup_files():
        limit = _read_int(folder / limit_name)
        if limit is None or limit >= NO_LIMIT:
            continue
        usage = _read_int(folder / usage_name)
        cache = _stat_value(folder / ("memory.stat"), cache_key) or 0
        found.append((limit, None if usage is None else max(0, usage - cache)))
    return found


def _cgroup_files() -> list[tuple[Path, str, str, str]]:
    """(folder, limit file, usage file, stat key) of this process's cgroup and each one above
    it to the mount's root, for both cgroup versions (/proc/self/cgroup: v2 "0::/path", v1
    "N:memory:/path")."""
    own = {V2[1]: "", V1[1]: ""}
    for line in _read_lines(PROC_CGROUP):
        parts = line.split(":", 2)
        if len(parts) == 3 and ".." not in parts[2].split("/"):  # outside our namespace: skip
            for controller in ({""} if parts[1] == "" else set(parts[1].split(","))) & set(own):
                own[controller] = parts[2].strip("/")
    files = []
    for sub, controller, limit_name, usage_name, cache_key in (V2, V1):
        base = CGROUP_ROOT / sub if sub else CGROUP_ROOT
        path = Path(own[controller]) if own[controller] else None
        folders = [base] + ([base / path] + [base / p for p in path.parents if str(p) != "."] if path else [])
        files += [(folder, limit_name, usage_name, cache_key) for folder in dict.fromkeys(folders)]
    return files


def _stat_value(path: Path, key: str) -> int | None:
    for line in _read_lines(path):
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


def _read_int(path: Path) -> int | None:
    """The integer in a cgroup file; None when it is absent, unreadable or says "max"."""
    lines = _read_lines(path)
    text = lines[0].strip() if lines else ""
    return int(text) if text.isdigit() else None


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except (OSError, ValueError):  # absent, unreadable, or not text (cgroup names are bytes)
        return []


def require_memory(needed: int, what: str, advice: str) -> None:
    """Refuse up front what cannot fit (the disk check's counterpart): FeatxError when `needed`
    bytes exceed what the kernel could give now; nothing where the platform does not say."""
    from featx.errors import FeatxError

    free = available_memory_bytes()
    if free is not None and needed > free:
        raise FeatxError(f"{what} needs at least {_size(needed)} of memory, {_size(free)} is available; {advice}")


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"
