"""Decoding planned batches in DataLoader workers: files -> uint8 views, failures recorded.

Each item of the DataLoader is one whole planned batch (batch_size=None), so a worker decodes
and transforms every view of its samples, and a file that fails is one entry in `failed` rather
than the end of a long run (docs/reliability.md, 8). Views derive from (seed, sample path, view), never
from worker state, so any number of workers gives the same numbers (docs/reliability.md, 14).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from featx.data import Dataset
from featx.runtime.device import JPEG_SUFFIXES
from featx.errors import FeatxError, ImageError
from featx.extraction.plan import Batch
from featx.data.images import image_to_tensor, load_image, read_file_bytes
from featx.data.transforms import AugRecipe, make_views


class BatchDecoder(torch.utils.data.Dataset):
    """Item i = planned batch i, decoded and transformed: uint8 images + (sample, view) owners.

    A file that fails to decode is recorded in `failed` and the batch goes on without it. With
    `gpu_decode`, JPEG files are only read here (bytes in `jpeg`) and decoded on the device.
    """

    def __init__(self, dataset: Dataset, batches: list[Batch], is_train: np.ndarray, pre,
                 recipe: AugRecipe | None, seed: int, views: int, gpu_decode: bool):
        self.root = dataset.root
        self.paths = [s.path for s in dataset.samples]
        self.stats = [(s.size, s.mtime_ns) for s in dataset.samples]  # as scanned
        self.batches, self.is_train, self.pre, self.recipe = batches, is_train, pre, recipe
        self.seed, self.views, self.gpu_decode = seed, views, gpu_decode

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict:
        b = self.batches[i]
        images, owner, failed, jpeg = [], [], {}, []
        for row in range(b.start, b.stop):
            path = self.root / self.paths[row]
            if self.gpu_decode and path.suffix.lower() in JPEG_SUFFIXES:
                try:
                    data = read_file_bytes(path)
                    self._check_unchanged(row, path)
                    jpeg.append((row - b.start, data))
                except OSError as exc:
                    failed[row] = f"cannot read file ({exc.strerror or exc})"
                except ImageError as exc:
                    failed[row] = exc.reason
                continue
            views = [0] + (list(range(1, self.views + 1)) if self.is_train[row] else [])
            made = self._views(row, views, failed)
            if made is not None:
                images += made
                owner += [(row - b.start, v) for v in views]
        size = self.pre.input_size
        return {
            "start": b.start,
            "images": torch.stack(images) if images else torch.empty(0, 3, size, size, dtype=torch.uint8),
            "owner": np.array(owner, dtype=np.int64).reshape(-1, 2),
            "failed": failed,
            "jpeg": jpeg,
        }

    def _views(self, row: int, views: list[int], failed: dict[int, str]) -> list[torch.Tensor] | None:
        """The uint8 views of sample `row`, or None with the reason in `failed`."""
        rel = self.paths[row]
        try:
            img = image_to_tensor(load_image(self.root / rel))
            self._check_unchanged(row, self.root / rel)
            return make_views(img, self.pre, self.recipe, self.seed, rel, views)
        except ImageError as exc:
            failed[row] = exc.reason
        except Exception as exc:  # noqa: BLE001 - one odd image must not end a long run
            failed[row] = f"{type(exc).__name__}: {str(exc)[:160]}"
        return None


    def _check_unchanged(self, row: int, path) -> None:
        """After reading: the file is still what the scan saw (size, mtime), or the row fails.
        A file rewritten while being read could give a torn image, and the store would record
        the scan's identity for other bytes; the next run extracts the new version."""
        size, mtime = self.stats[row]
        if not size:
            return  # a sample made without a scan (tests, in-memory datasets)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise ImageError(str(path), f"cannot read file ({exc.strerror or exc})") from None
        if (st.st_size, st.st_mtime_ns) != (size, mtime):
            raise ImageError(str(path), "file changed while being read (or since the dataset was "
                                        "scanned); re-run featx extract to extract the new version")


RESUME = "finished batches are saved: re-run the same command to resume"
FEWER_WORKERS = ("likely out of memory (the kernel kills the largest process); re-run with --workers 0 "
                 "(workers=0) or fewer workers, or a smaller --batch-size")


def guarded(batches, resumable: bool = True):
    """Turn DataLoader worker deaths and hangs into one clear line; with `resumable` (a store's
    extraction, not an in-memory embed) the line says the finished batches are saved.

    A worker that dies is seen in two ways: its exit status (torch's RuntimeError "DataLoader
    worker ... exited unexpectedly"), or, when it dies while the main process receives its batch,
    the queue or shared-memory handle breaking under it (ConnectionResetError, BrokenPipeError,
    EOFError). Either is the OOM killer's usual work; a hang is the loader's timeout."""
    resume = f"; {RESUME}" if resumable else ""
    try:
        yield from batches
    except (ConnectionError, EOFError) as exc:  # ConnectionError: ConnectionReset, BrokenPipe
        raise FeatxError(f"a data loading worker died ({_first_line(exc)}): {FEWER_WORKERS}"
                         f"{resume}") from None
    except RuntimeError as exc:
        text = str(exc)
        if "DataLoader" in text or "worker" in text:
            died = "exited unexpectedly" in text or "killed by signal" in text
            raise FeatxError(f"a data loading worker failed ({_first_line(exc)})"
                             f"{'; ' + FEWER_WORKERS if died else ''}{resume}") from None
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
