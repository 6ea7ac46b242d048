"""featx.runtime.distributed: torchrun-sharded extraction (2 CPU processes, gloo) equals one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from featx.runtime.distributed import shard_bounds
from featx.store import FeatureStore
from featx.probes.sweep import HeadConfig
from featx.probes.train import train_head
from tests.conftest import make_class_tree
from tests.kill_point import kill_env
from tests.tiny_backbone import subprocess_env

ARRAYS = ("features/clean", "features/aug", "features/aug_rows", "done/clean", "done/aug",
          "failed/reason", "samples/path", "samples/label", "samples/split")


def test_shards_are_contiguous_whole_batches_balanced_by_images():
    starts, images = [0, 3, 5, 9, 10], [6, 6, 6, 6, 2]  # five batches over 12 samples
    assert shard_bounds(starts, images, 12, 2) == [(0, 5), (5, 12)]
    assert shard_bounds(starts, images, 12, 1) == [(0, 12)]
    assert shard_bounds(starts, images, 12, 4) == [(0, 3), (3, 5), (5, 9), (9, 12)]
    assert shard_bounds([0], [4], 2, 3) == [(0, 0), (0, 2), (2, 2)]  # more ranks than batches


def _extract(data: Path, out: Path, nproc: int, env: dict, size: int = 32) -> list[str]:
    args = ["-m", "featx", "extract", str(data), "-b", "tiny_cnn", "--weights", "none",
            "--input-size", str(size), "--views", "2", "--batch-size", "4", "--out", str(out),
            "--val-frac", "0.25", "--test-frac", "0.25", "--workers", "0"]
    if nproc == 1:
        return [sys.executable, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "--master-port", str(29500 + os.getpid() % 1000), *args]


def _run(command, env):
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in done.stderr.splitlines() if "error:" in line or "Error:" in line]
    assert done.returncode == 0, "\n".join(errors[:10]) or done.stderr[-3000:]
    return done


def _same_store(a: Path, b: Path) -> None:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for key in ARRAYS:
            np.testing.assert_array_equal(fa[key][()], fb[key][()], err_msg=key)
        assert fa.attrs["dataset_fingerprint"] == fb.attrs["dataset_fingerprint"]


def _single(data: Path, out: Path, size: int = 32) -> Path:
    """The one-process store, made in this process (torch on one thread, as in the subprocesses,
    so bit for bit the same): what torchrun's shards must merge into. A subprocess less per test."""
    from typer.testing import CliRunner

    from featx.cli import app

    result = CliRunner().invoke(app, _extract(data, out, 1, {}, size)[3:])  # after `python -m featx`
    assert result.exit_code == 0, result.output
    (store,) = out.glob("*.h5")
    return store


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """Three classes of 8 images and their one-process store, shared by the multi-process tests."""
    tmp = tmp_path_factory.mktemp("reference")
    data = make_class_tree(tmp / "data", classes=("a", "b", "c"), per_class=8, seed=4)
    return data, _single(data, tmp / "single")


@pytest.fixture
def env():
    # torchrun gives each rank one thread; the single process gets the same, so the numbers match.
    return subprocess_env({**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path, env, reference):
    data, single = reference
    multi = _run(_extract(data, tmp_path / "multi", 2, env), env)
    (merged,) = (tmp_path / "multi").glob("*.h5")
    _same_store(merged, single)
    assert multi.stdout.count("created") == 1  # rank 0 speaks for both
    assert not list((tmp_path / "multi").glob("*shard*"))
    config = HeadConfig(lrs=(0.01, 0.1), weight_decays=(0.0,), epochs=10)  # a small sweep: the same bytes or not
    heads = [train_head(p, "linear", config, out=tmp_path / f"h{i}", show_progress=False)
             for i, p in enumerate((merged, single))]
    assert heads[0].path.read_bytes() == heads[1].path.read_bytes()  # the saved weights
    from typer.testing import CliRunner

    from featx.cli import app

    info = CliRunner().invoke(app, ["info", str(merged)]).output
    assert "merged     copy of 2 shards" in info


@pytest.mark.slow
def test_killed_torchrun_resumes_each_shard(tmp_path, env):
    data = make_class_tree(tmp_path / "data", classes=("a", "b"), per_class=12, seed=6)
    out = tmp_path / "multi"
    command = _extract(data, out, 2, env, size=32)
    # Each rank SIGKILLs itself as its second batch reaches the store (tests/kill_point.py), as
    # when the machine dies: both shards are left part-written whatever the scheduler does.
    killed = subprocess.run(command, env=kill_env(2, "before", env), capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    shards = list(out.glob("*.shard*-of-002.h5"))
    assert shards and all(".shard" in p.name for p in out.glob("*.h5"))  # no merged store yet
    for shard in shards:  # a rank killed before its shard was made has none: resume makes it
        with FeatureStore(shard) as st:
            s = st.summary()
            assert not st.complete and st.attrs["shard_world_size"] == 2
            assert s.done_clean < s.clean_shape[0] or s.done_aug < s.aug_total
    _run(command, env)
    _same_store(next(out.glob("*.h5")), _single(data, tmp_path / "single", size=32))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("form", ["c10d", "node-rank", "env"])
def test_two_nodes_equal_one(tmp_path, env, reference, form):
    """Two torchrun launchers on one machine as two 'nodes' (--nnodes 2, one process each): the
    c10d rendezvous on localhost (Slurm's form in the README), and the static --node-rank form;
    and two plain processes given RANK/WORLD_SIZE/MASTER_ADDR themselves, as srun or submitit's
    TorchDistributedEnvironment set them (no torchrun at all)."""
    data, single = reference
    args = _extract(data, tmp_path / "multi", 1, env)[1:]  # -m featx extract ...
    port = _free_port()
    if form == "c10d":
        launch = [["--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{port}",
                   "--rdzv-id", f"featx-test-{os.getpid()}"]] * 2
    else:
        launch = [["--node-rank", str(r), "--master-addr", "127.0.0.1", "--master-port", str(port)]
                  for r in range(2)]
    if form == "env":
        nodes = [subprocess.Popen([sys.executable, *args], env={
            **env, "RANK": str(r), "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for r in range(2)]
    else:
        nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
                                   "--nproc-per-node", "1", *extra, *args], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for extra in launch]
    outs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, err) in zip(nodes, outs):
        assert node.returncode == 0, err[-3000:]
    (merged,) = (tmp_path / "multi").glob("*.h5")
    _same_store(merged, single)
    assert sum(out.count("created") for out, _ in outs) == 1  # rank 0 speaks for both nodes
