"""Images for a whole-network fine-tune: seeded views per epoch, batches shared out across processes.

    loader = image_loader(dataset, "train", backbone.preprocess, recipe, config, device, ctx)
    for batch, global_size in epoch_batches(loader, epoch):
        x, y = views_on_device(batch, loader.dataset, device)      # (B, 3, H, W) uint8, (B,)

Training views are augmented with a generator seeded by (seed, path, epoch), so a resumed run
sees the views an uninterrupted one would. On CUDA, JPEG files travel undecoded from the workers
and are decoded by nvjpeg in the main process (`JpegBytes`, `views_on_device`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from featx.data import Dataset
from featx.runtime.device import JPEG_SUFFIXES, keep_freed_memory, one_thread, usable_cores, use_device_decode
from featx.runtime.distributed import DistContext
from featx.errors import FeatxError
from featx.finetuning.config import FinetuneConfig
from featx.data.images import decode_jpegs, image_to_tensor, load_image, read_file_bytes
from featx.data.transforms import augmented_views, clean_view, clean_views


class ImageSamples(torch.utils.data.Dataset):
    """(uint8 view, label) of one split; training views augmented, seeded by (seed, path, epoch).

    With `device_decode` (CUDA), JPEG files come back undecoded (`JpegBytes`): the main process
    decodes them on the GPU (nvjpeg) and makes the same views there (`views_on_device`).
    """

    def __init__(self, dataset: Dataset, split: str, pre, recipe, seed: int, device_decode: bool = False):
        self.samples = [s for s in dataset.samples if s.split == split and s.label >= 0]
        self.root, self.pre, self.recipe, self.seed = dataset.root, pre, recipe, seed
        self.device_decode = device_decode
        self.epoch = 0  # set before each training epoch: the views depend on it

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        sample = self.samples[i]
        path = self.root / sample.path
        try:
            if self.device_decode and path.suffix.lower() in JPEG_SUFFIXES:
                return JpegBytes(read_file_bytes(path), i), sample.label
            return self.view(image_to_tensor(load_image(path)), i), sample.label
        except (FeatxError, OSError):
            return None  # skipped by the collate function, reported once by the scan

    def view(self, img: torch.Tensor, i: int) -> torch.Tensor:
        """Sample i's view this epoch (clean for val/test), on the image's device."""
        if self.recipe is None:
            return clean_view(img, self.pre)
        (view,) = augmented_views(img, self.pre, self.recipe, self.seed,
                                  f"finetune:{self.samples[i].path}", [self.epoch + 1])
        return view


@dataclass
class JpegBytes:
    data: torch.Tensor  # the file's bytes
    index: int  # sample index in its ImageSamples


def collate(items):
    """(decoded views, labels, undecoded JPEGs with their positions), in the batch's order."""
    items = [it for it in items if it is not None]
    if not items:
        return None
    decoded = [x for x, _ in items if not isinstance(x, JpegBytes)]
    jpegs = [(pos, x) for pos, (x, _) in enumerate(items) if isinstance(x, JpegBytes)]
    x = torch.stack(decoded) if decoded else torch.zeros(0, dtype=torch.uint8)  # (B_decoded, 3, H, W)
    return x, torch.tensor([y for _, y in items]), jpegs


def views_on_device(batch, data: ImageSamples, device: torch.device):
    """A collated batch as (uint8 views, labels) on `device`, in the batch's order: JPEGs decoded
    and viewed there, those that fail to decode left out. None when no image is left."""
    if batch is None:
        return None
    x, y, jpegs = batch
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if not jpegs:
        return x, y
    decoded = decode_jpegs([j.data for _, j in jpegs],
                           [data.root / data.samples[j.index].path for _, j in jpegs], device)
    ok = [(pos, j, img) for (pos, j), img in zip(jpegs, decoded) if not isinstance(img, str)]
    if data.recipe is None:  # one resize call per image size, not per image
        views = clean_views([img for _, _, img in ok], data.pre)
    else:
        views = [data.view(img, j.index) for _, j, img in ok]
    by_position = dict(zip([pos for pos, _, _ in ok], views))
    rest = iter(x)
    jpeg_positions = {pos for pos, _ in jpegs}
    order = [pos for pos in range(len(y)) if pos not in jpeg_positions or pos in by_position]
    if not order:
        return None
    images = [by_position[pos] if pos in jpeg_positions else next(rest) for pos in order]
    return torch.stack(images), y[torch.tensor(order, device=device)]


class RankBatches(torch.utils.data.Sampler):
    """This rank's share of each global batch of a permutation seeded by (seed, epoch).

    Every rank walks the same global batches (the same order after a resume, and the same
    batches whatever the number of processes); rank r takes items r, r + W, ... of each. A final
    global batch with fewer items than processes is dropped (every rank must take a step).
    """

    def __init__(self, data: ImageSamples, seed: int, global_batch: int, rank: int, world: int):
        self.data, self.seed, self.global_batch, self.rank, self.world = data, seed, global_batch, rank, world

    def global_batches(self) -> list[np.ndarray]:
        order = np.random.default_rng([self.seed, self.data.epoch]).permutation(len(self.data))
        batches = [order[i:i + self.global_batch] for i in range(0, len(order), self.global_batch)]
        return [b for b in batches if len(b) >= self.world]

    def __len__(self) -> int:
        return len(self.global_batches())

    def __iter__(self):
        return iter([b[self.rank::self.world].tolist() for b in self.global_batches()])


def image_loader(dataset: Dataset, split: str, pre, recipe, config: FinetuneConfig, device: torch.device,
                 ctx: DistContext) -> torch.utils.data.DataLoader:
    """A split's loader: training batches are this rank's share of seeded global batches (each
    epoch set by `epoch_batches`), val/test batches in order."""
    data = ImageSamples(dataset, split, pre, recipe, config.seed, use_device_decode(device, config.decode))
    workers = loader_workers(config)
    common = dict(num_workers=workers, collate_fn=collate, pin_memory=device.type == "cuda",
                  timeout=600 if workers else 0, worker_init_fn=one_thread)
    if split == "train":
        sampler = RankBatches(data, config.seed, config.batch_size, ctx.rank, ctx.world_size)
        return torch.utils.data.DataLoader(data, batch_sampler=sampler, **common)
    return torch.utils.data.DataLoader(data, batch_size=config.batch_size, shuffle=False, **common)


def loader_workers(config: FinetuneConfig) -> int:
    """Decoding worker processes per loader: `config.workers`, else 1 where there are 2+ cores."""
    return config.workers if config.workers is not None else (1 if usable_cores() > 1 else 0)


@contextlib.contextmanager
def cpu_share(device: torch.device, workers: int):
    """Train on a CPU without oversubscribing it: torch's threads take the cores the loader's
    `workers` leave (at least 1; never more than torch had), and freed activations are kept
    for the next step (featx.runtime.device.keep_freed_memory). Torch's thread count is restored after."""
    before = torch.get_num_threads()
    if device.type == "cpu":
        keep_freed_memory()
        torch.set_num_threads(max(1, min(before, usable_cores() - workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def epoch_batches(loader: torch.utils.data.DataLoader, epoch: int):
    """(this rank's batch, size of its global batch) of one training epoch, in order."""
    loader.dataset.epoch = epoch  # before global_batches(): the order and views depend on it
    return zip(loader, [len(b) for b in loader.batch_sampler.global_batches()])
