"""One extraction run: plan, load, forward, write.

DataLoader workers decode and transform whole batches (PIL on the CPU; on CUDA, JPEG files may
instead be decoded by nvjpeg on the GPU), the main thread runs the engine, and a writer thread
commits finished batches to HDF5 while the next one computes.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from featx.runtime.device import one_thread
from featx.extraction.decode import BatchDecoder, guarded
from featx.extraction.job import ExtractJob
from featx.extraction.plan import Batch, plan_batches
from featx.extraction.writer_thread import WriterThread
from featx.data.images import decode_jpegs
from featx.runtime.progress import progress_bar
from featx.store import StoreWriter, read_done
from featx.data.transforms import augmented_views, clean_views

# CUDA wants many decoders to keep up; on a CPU, one worker decodes while the engine computes.
MAX_CUDA_WORKERS = 16
# Batches each worker decodes ahead; a worker silent this long (s) is treated as hung.
PREFETCH, WORKER_TIMEOUT = 4, 600


class Runner:
    """Forwards the batches of a plan through `engine`, into a store (`run`) or memory (embed)."""

    def __init__(self, job: ExtractJob, engine, batch_size: int):
        self.job, self.engine, self.batch_size = job, engine, batch_size
        self.dataset, self.backbone, self.recipe, self.config = job.dataset, job.backbone, job.recipe, job.config
        self.device, self.gpu_decode = job.device, job.gpu_decode
        # Columns per image (the final features, and pooled maps with --pool): an all-failed batch
        # still gives an empty array of that width.
        self.feature_dim = job.feature_dim
        self.is_train = np.array([s.split == "train" for s in self.dataset.samples])
        self.train_rank = np.cumsum(self.is_train) - 1  # augmented row of each training sample

    def run(self) -> tuple[float, int]:
        """Compute the batches the job's store has not done; (seconds, images forwarded)."""
        path, k = self.job.path, self.config.views
        plan = plan_batches(self.is_train, k, self.batch_size)
        done_clean, done_aug = read_done(path)
        todo = [b for b in plan if not (done_clean[b.start:b.stop].all()
                                        and done_aug[:, b.train_start:b.train_stop].all())]
        total = sum(b.images(k) for b in todo)
        batches = iter(self.loader(todo))  # workers fork here, before the store is opened for writing
        writer = StoreWriter(path)
        sink = WriterThread(writer, self.config.dtype, k, self.train_rank)
        start, images = time.perf_counter(), 0
        try:
            with progress_bar(total, f"extract {self.backbone.name}", enabled=self.job.show_progress) as advance:
                sink.on_written = advance
                for batch, item in zip(todo, guarded(batches)):
                    feats, owner = self.forward(item)
                    maps = None
                    if isinstance(feats, tuple):  # --cut: features and the maps entering the cut
                        feats, maps = feats
                    images += len(owner)
                    sink.put(batch, feats, owner, item["failed"], maps)
                sink.close()
            seconds = time.perf_counter() - start
            writer.finish(seconds, images / seconds if seconds else 0.0)
        finally:
            sink.close()
            writer.close()
        return seconds, images

    def loader(self, todo: list[Batch]) -> torch.utils.data.DataLoader:
        """A DataLoader whose item i is batch todo[i], decoded (see BatchDecoder)."""
        workers = self.config.workers
        if workers is None and len(todo) <= 1:
            workers = 0  # one batch has nothing to overlap its decoding with: no process to start
        elif workers is None:
            cpus = os.cpu_count() or 1
            workers = min(MAX_CUDA_WORKERS, cpus) if self.device.type == "cuda" else (1 if cpus > 1 else 0)
        decoder = BatchDecoder(self.dataset, todo, self.is_train, self.backbone.preprocess,
                               self.recipe, self.config.seed, self.config.views, self.gpu_decode)
        return torch.utils.data.DataLoader(
            decoder, batch_size=None, shuffle=False, num_workers=workers,
            pin_memory=self.device.type == "cuda", worker_init_fn=one_thread,
            prefetch_factor=PREFETCH if workers else None, timeout=WORKER_TIMEOUT if workers else 0)

    @torch.inference_mode()
    def forward(self, item: dict) -> tuple[torch.Tensor | tuple, np.ndarray]:
        """(features [B, D] or (features, maps) with --cut, owners [B, 2] = (offset, view))."""
        # The DataLoader turns numpy arrays into tensors; owners are indices, keep them numpy.
        images, owner = item["images"], np.asarray(item["owner"], dtype=np.int64).reshape(-1, 2)
        if self.gpu_decode and item["jpeg"]:
            images, owner = self._merge_gpu_decoded(images, owner, item)
        if len(owner) == 0:
            empty = torch.empty(0, self.feature_dim)
            return ((empty, None) if self.config.cut else empty), owner
        return self.engine(images), owner

    def _merge_gpu_decoded(self, images: torch.Tensor, owner: np.ndarray, item: dict):
        """Decode the batch's JPEG files on the device (nvjpeg) and make their views there;
        rows come back in (offset, view) order, as the CPU path gives them."""
        parts = [(o, v, images[j].to(self.device, non_blocking=True)) for j, (o, v) in enumerate(owner)]
        decoded = []
        for offset, img in self._decode_jpegs(item):
            if isinstance(img, str):
                item["failed"][item["start"] + offset] = img
            else:
                decoded.append((offset, img))
        cleans = clean_views([img for _, img in decoded], self.backbone.preprocess)
        for (offset, img), clean in zip(decoded, cleans):
            parts.append((offset, 0, clean))
            parts += self._device_views(item["start"] + offset, offset, img)
        parts.sort(key=lambda p: (p[0], p[1]))
        owner = np.array([(o, v) for o, v, _ in parts], dtype=np.int64).reshape(-1, 2)
        return (torch.stack([p[2] for p in parts]) if parts else images), owner

    def _device_views(self, row: int, offset: int, img: torch.Tensor) -> list[tuple]:
        """(offset, view, image) of the augmented views of training sample `row`, on the device."""
        if not (self.config.views and self.is_train[row]):
            return []
        views = list(range(1, self.config.views + 1))
        augmented = augmented_views(img, self.backbone.preprocess, self.recipe, self.config.seed,
                                    self.dataset.samples[row].path, views)
        return [(offset, v, view) for v, view in zip(views, augmented)]

    def _decode_jpegs(self, item: dict) -> list[tuple[int, torch.Tensor | str]]:
        """(offset, RGB uint8 image on the device, or the reason it failed) per JPEG file."""
        offsets = [o for o, _ in item["jpeg"]]
        paths = [self.dataset.abspath(self.dataset.samples[item["start"] + o]) for o in offsets]
        decoded = decode_jpegs([d for _, d in item["jpeg"]], paths, self.device)
        return list(zip(offsets, decoded))
