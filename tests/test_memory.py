"""featx.runtime.memory: the memory a process may use is the RAM, or the cgroup limits above it."""

from __future__ import annotations

import pytest

from featx.runtime import memory
from featx.probes.feature_data import MEMORY_SHARE, default_memory_mb

GIB = 2**30


@pytest.fixture
def cgroups(tmp_path, monkeypatch):
    """A fake cgroup file system, /proc/self/cgroup and /proc/meminfo, on a machine with 64 GiB
    (40 GiB free, 50 GiB available counting reclaimable cache)."""
    root, proc, meminfo = tmp_path / "cgroup", tmp_path / "proc_cgroup", tmp_path / "meminfo"
    root.mkdir()
    proc.write_text("0::/\n")
    meminfo.write_text(f"MemTotal: {64 * GIB // 1024} kB\nMemAvailable: {50 * GIB // 1024} kB\n")
    monkeypatch.setattr(memory, "CGROUP_ROOT", root)
    monkeypatch.setattr(memory, "PROC_CGROUP", proc)
    monkeypatch.setattr(memory, "PROC_MEMINFO", meminfo)
    pages = {"SC_PHYS_PAGES": 64 * GIB // 4096, "SC_AVPHYS_PAGES": 40 * GIB // 4096, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(memory.os, "sysconf", lambda name: pages[name])
    return root, proc, meminfo


def test_without_a_cgroup_limit_the_ram_counts(cgroups):
    root, _, _ = cgroups
    (root / "memory.max").write_text("max\n")
    (root / "memory").mkdir()
    (root / "memory" / "memory.limit_in_bytes").write_text(f"{2**63 - 4096}\n")  # v1's "no limit"
    assert memory.total_memory_bytes() == 64 * GIB
    assert memory.available_memory_bytes() == 50 * GIB  # MemAvailable, not MemFree


def test_a_cgroup_v2_limit_caps_total_and_available_memory(cgroups):
    root, _, _ = cgroups
    (root / "memory.max").write_text(f"{4 * GIB}\n")
    (root / "memory.current").write_text(f"{3 * GIB}\n")
    assert memory.total_memory_bytes() == 4 * GIB
    assert memory.available_memory_bytes() == 1 * GIB
    assert default_memory_mb() == pytest.approx(MEMORY_SHARE * 4 * 1024)  # train-head's default budget
    (root / "memory.stat").write_text(f"anon {2 * GIB}\ninactive_file {GIB // 2}\n")
    assert memory.available_memory_bytes() == 1 * GIB + GIB // 2  # page cache the kernel can reclaim


def test_a_limit_on_a_parent_cgroup_counts(cgroups):
    root, proc, _ = cgroups
    proc.write_text("0::/job.slice/step/task_0\n")
    (root / "job.slice" / "step" / "task_0").mkdir(parents=True)
    (root / "job.slice" / "step" / "task_0" / "memory.max").write_text("max\n")
    (root / "job.slice" / "memory.max").write_text(f"{2 * GIB}\n")
    assert memory.total_memory_bytes() == 2 * GIB
    assert memory.available_memory_bytes() == 2 * GIB  # no usage file: the whole limit


def test_the_processs_own_v1_cgroup_counts_too(cgroups):
    root, proc, _ = cgroups
    proc.write_text("4:memory:/job/42\n1:cpu:/other\n")
    own = root / "memory" / "job" / "42"
    own.mkdir(parents=True)
    (own / "memory.limit_in_bytes").write_text(f"{8 * GIB}\n")
    (own / "memory.usage_in_bytes").write_text(f"{9 * GIB}\n")  # over the limit: no room left
    assert memory.total_memory_bytes() == 8 * GIB
    assert memory.available_memory_bytes() == 0


def test_nothing_known_says_nothing(cgroups, monkeypatch):
    def no_sysconf(name):
        raise ValueError(name)

    _, proc, meminfo = cgroups
    monkeypatch.setattr(memory.os, "sysconf", no_sysconf)
    meminfo.write_bytes(b"\xff\xfe not text")
    proc.write_text("0::/../outside\n")  # a cgroup above our namespace: not followed
    assert memory.total_memory_bytes() is None and memory.available_memory_bytes() is None
    assert default_memory_mb() == 8192.0
