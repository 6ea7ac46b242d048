"""Committing batches to the store in a background thread, so HDF5 writes overlap the forward.

The queue is short (4 batches): a slow disk holds the forward back instead of filling memory. A
write error is kept and raised in the main thread at the next `put` or at `close`.
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import torch

from featx.extraction.plan import Batch
from featx.store import StoreWriter

QUEUE_BATCHES = 4


def _to_pinned(t: torch.Tensor) -> torch.Tensor:
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    return host


class WriterThread:
    """Commits batches to the store in the background, so HDF5 writes overlap the forward pass."""

    def __init__(self, writer: StoreWriter, dtype: str, views: int, train_rank: np.ndarray):
        self.writer, self.dtype, self.views = writer, np.dtype(dtype), views
        self.train_rank = train_rank  # sample row -> row in features/aug
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        self.error: BaseException | None = None
        self.on_written = lambda n: None
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def put(self, batch: Batch, feats: torch.Tensor, owner: np.ndarray, failed: dict,
            maps: torch.Tensor | None = None) -> None:
        """Queue one forward pass's rows for writing (raises an earlier write's error)."""
        if self.error:
            raise self.error
        event = None
        if feats.is_cuda:  # copy to pinned memory without blocking the next forward pass
            feats, maps = (_to_pinned(t) if t is not None else None for t in (feats, maps))
            event = torch.cuda.Event()
            event.record()
        self.queue.put((batch, feats, owner, failed, event, maps))

    def close(self) -> None:
        """Write what is queued, stop the thread, raise a write error if there was one."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        if self.error:
            error, self.error = self.error, None
            raise error

    def _loop(self) -> None:
        while (job := self.queue.get()) is not None:
            if self.error:
                continue  # drain after a failure; close() re-raises it
            try:
                self._write(*job)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                self.error = exc

    def _write(self, batch: Batch, feats: torch.Tensor, owner: np.ndarray, failed: dict, event,
               maps: torch.Tensor | None) -> None:
        if event is not None:
            event.synchronize()
        clean, aug = self._scatter(batch, owner, feats, self.writer.feature_shape, self.dtype)
        cut = None
        if self.writer.map_shape is not None:
            cut = self._scatter(batch, owner, maps, self.writer.map_shape, np.float16)
            cut = (cut[0], cut[1] if self.views else None)
        self.writer.write_batch(batch.start, batch.stop, clean, batch.train_start,
                                aug if self.views else None, failed, cut)
        self.on_written(batch.images(self.views))

    def _scatter(self, batch: Batch, owner: np.ndarray, values: torch.Tensor | None, shape, dtype):
        """Rows of one forward pass -> (clean rows of the batch, [K, train rows] of its views);
        rows of failed images stay zero (and are listed in failed/reason)."""
        clean = np.zeros((batch.stop - batch.start, *shape), dtype=dtype)
        aug = np.zeros((self.views, batch.train_stop - batch.train_start, *shape), dtype=dtype)
        if values is None or not len(owner):
            return clean, aug
        values = values.numpy()
        is_view = owner[:, 1] > 0
        clean[owner[~is_view, 0]] = values[~is_view]
        if self.views and is_view.any():
            rows = owner[is_view, 0] + batch.start
            aug[owner[is_view, 1] - 1, self.train_rank[rows] - batch.train_start] = values[is_view]
        return clean, aug
