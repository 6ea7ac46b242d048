"""How much memory this process may use: the machine's RAM, or less where a cgroup limits it.

    total_memory_bytes()        # min(physical RAM, the cgroup's limit)
    available_memory_bytes()    # free RAM, and no more than the cgroup has left

Why: in a container (Docker, Kubernetes, a Slurm job with cgroup limits) the machine's RAM is
not what the process may use. A store sized against 64 GB of RAM in a 4 GB container is an
OOM kill halfway through training, not a clear decision. Both cgroup v2 (memory.max,
memory.current) and v1 (memory.limit_in_bytes, memory.usage_in_bytes) are read, at the
cgroup file system's root and at this process's own cgroup path; "max" or v1's huge number
means no limit. None where the platform says nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
V2 = ("", "memory.max", "memory.current")  # (folder under the root, limit file, usage file)
V1 = ("memory", "memory.limit_in_bytes", "memory.usage_in_bytes")


def total_memory_bytes() -> int | None:
    """The machine's physical memory, or the cgroup's limit when that is lower."""
    physical = _sysconf_bytes("SC_PHYS_PAGES")
    limits = [limit for limit, _ in _cgroup_limits()]
    return _smallest([physical, *limits])


def available_memory_bytes() -> int | None:
    """Free physical memory, or what the cgroup's limit leaves above its usage when that is less."""
    free = _sysconf_bytes("SC_AVPHYS_PAGES")
    left = [max(0, limit - usage) for limit, usage in _cgroup_limits() if usage is not None]
    return _smallest([free, *left])


def _smallest(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def _sysconf_bytes(name: str) -> int | None:
    try:
        return os.sysconf(name) * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on this platform
        return None


def _cgroup_limits() -> list[tuple[int, int | None]]:
    """(limit, usage or None) of every cgroup memory limit that applies and is set."""
    found = []
    for folder, limit_name, usage_name in _cgroup_files():
        limit = _read_int(folder / limit_name)
        if limit is not None and limit < 2**60:  # v1 says "no limit" with ~2**63
            found.append((limit, _read_int(folder / usage_name)))
    return found


def _cgroup_files() -> list[tuple[Path, str, str]]:
    """(folder, limit file, usage file) at the root of each cgroup version and at this process's
    own cgroup path (/proc/self/cgroup: v2 "0::/path", v1 "N:memory:/path")."""
    own = {"": "", "memory": ""}
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[2].strip("/"):
            if parts[1] == "":
                own[""] = parts[2].strip("/")
            elif "memory" in parts[1].split(","):
                own["memory"] = parts[2].strip("/")
    files = []
    for sub, limit_name, usage_name in (V2, V1):
        base = CGROUP_ROOT / sub if sub else CGROUP_ROOT
        for folder in {base, base / own[sub]}:
            files.append((folder, limit_name, usage_name))
    return sorted(files)


def _read_int(path: Path) -> int | None:
    """The integer in a cgroup file; None when it is absent, unreadable or says "max"."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
