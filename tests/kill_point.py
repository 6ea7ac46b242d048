"""A SIGKILL at a chosen point of a featx subprocess, for the kill-and-resume tests.

A subprocess run with `kill_env(batch, stage)` (FEATX_BACKBONE_MODULES names this module, so
featx imports it when it first looks up a backbone) kills itself with SIGKILL, as the OOM killer
or a pulled plug would: no cleanup, no atexit, no last flush. Polling the store from the test and
killing it from outside lands wherever the scheduler pleases (or after the run ended, on a busy
machine); a chosen point is the same on every run and costs no waiting.

Stages of the `batch`-th StoreWriter.write_batch call of the process (1 = the first):
  before  on entry: earlier batches committed, this one computed but not written (a kill during
          the forward pass or decoding looks the same to the store)
  rows    after its rows are written and flushed, before they are marked done (the window the
          two-flush commit in featx/store/writer.py exists for)
"""

from __future__ import annotations

import os
import signal

from tests.tiny_backbone import subprocess_env

KILL_ENV = "FEATX_TEST_KILL_AT"
STAGES = ("before", "rows")


def kill_env(batch: int, stage: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """subprocess_env(env) (tiny_cnn visible) plus the kill at `stage` of write_batch #`batch`."""
    if stage not in STAGES or batch < 1:
        raise ValueError(f"kill point {batch}:{stage}: batch >= 1 and stage in {STAGES}")
    out = subprocess_env(env)
    out["FEATX_BACKBONE_MODULES"] += ",tests.kill_point"
    out[KILL_ENV] = f"{batch}:{stage}"
    return out


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install(batch: int, stage: str) -> None:
    import h5py

    from featx.store import StoreWriter

    original = StoreWriter.write_batch
    calls = 0

    def write_batch(self, *args, **kwargs):
        nonlocal calls
        calls += 1
        if calls != batch:
            return original(self, *args, **kwargs)
        if stage == "before":
            _die()
        real_flush = h5py.File.flush

        def flush_then_die(f):  # write_batch's first flush commits the rows, the second the marks
            real_flush(f)
            _die()

        h5py.File.flush = flush_then_die
        try:
            return original(self, *args, **kwargs)
        finally:
            h5py.File.flush = real_flush

    StoreWriter.write_batch = write_batch


if os.environ.get(KILL_ENV):
    _batch, _stage = os.environ[KILL_ENV].split(":")
    _install(int(_batch), _stage)
