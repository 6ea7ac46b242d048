"""Dynamic batching: concurrent requests share one forward.

A batch is cut when it holds `max_batch` images, when its first request has waited
`max_wait_ms`, or when no other request is on its way (none arrived and still being read or
decoded: `with batcher.arriving():`), whichever comes first. The last rule is why a lone client
pays no wait: at concurrency 1 every batch is cut at once (p50 26-28 -> 20.5 ms for
efficientnet_lite0 on the 2-core dev machine), while under load the requests being decoded hold
the batch open for company. While a batch runs (in one worker thread, so ONNX Runtime keeps its
own threads to itself) the next one fills. A request is never split: one larger than `max_batch`
runs as a batch of its own.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np


@dataclass(frozen=True)
class BatchConfig:
    max_batch: int = 32  # images per forward
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for company


@dataclass
class _Pending:
    images: np.ndarray  # [k, S, S, 3]
    future: asyncio.Future


class DynamicBatcher:
    """`await batcher.submit(images)` -> the model's rows for those images, batched with others."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], config: BatchConfig = BatchConfig()):
        self.run, self.config = run, config
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None
        self._carry: _Pending | None = None  # a request that would have overfilled the last batch
        self.batches = 0  # forwards run (GET /metadata shows it; tests read it)
        self._arriving = 0  # requests being read or decoded: they will submit soon

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request on its way (read and decode it inside): the batch being gathered
        waits for it, up to max_wait_ms, instead of being cut with nobody else coming."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1

    async def submit(self, images: np.ndarray) -> np.ndarray:
        if self._task is None:
            raise RuntimeError("the batcher is not running")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(images, future))
        return await future

    async def _loop(self) -> None:
        while True:
            batch = await self._gather()
            try:
                out = await asyncio.to_thread(self.run, np.concatenate([p.images for p in batch]))
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
            else:
                self.batches += 1
                start = 0
                for p in batch:
                    if not p.future.done():  # a client that went away has cancelled its future
                        p.future.set_result(out[start:start + len(p.images)])
                    start += len(p.images)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _gather(self) -> list[_Pending]:
        """The next batch: the first request, then whatever joins before it is full, T is up, or
        nobody else is on the way."""
        first, self._carry = self._carry or await self._queue.get(), None
        batch, count = [first], len(first.images)
        deadline = time.monotonic() + self.config.max_wait_ms / 1000
        while count < self.config.max_batch:
            try:
                nxt = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - time.monotonic()
                if left <= 0 or not self._arriving:
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), left)
                except asyncio.TimeoutError:
                    break
            if count + len(nxt.images) > self.config.max_batch:
                self._carry = nxt  # first in the next batch
                break
            batch.append(nxt)
            count += len(nxt.images)
        return batch
