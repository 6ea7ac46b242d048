"""Run a frozen backbone once over a dataset (clean view + K augmented views) into a store.

    ds = open_dataset("elpv")
    result = extract(ds, "efficientnet_lite0", Path("stores"), ExtractConfig(views=4))

The work is cut into a fixed plan of batches (consecutive samples, up to `batch_size` images),
the same plan on every run: a resumed run recomputes exactly the unfinished batches with the
same batch composition, so the finished store equals an uninterrupted run's bit for bit.

Pipeline: DataLoader workers decode and transform whole batches (PIL on the CPU; on CUDA, JPEG
files may instead be decoded by nvjpeg on the GPU), the main thread runs the engine (ONNX Runtime
on a CPU; torch with AMP + channels_last on CUDA, see featx.engines), and a writer thread commits
finished batches to HDF5 while the next one computes. Under torchrun, each rank extracts a shard
and rank 0 merges them (see featx.distributed and featx.merge).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from featx import distributed, merge
from featx.backbones import Backbone, create_backbone
from featx.data import Dataset
from featx.engines import ENGINES, TorchEngine, create_engine, engine_version, verify
from featx.errors import ConfigError, FeatxError, ImageError, StoreError
from featx.images import decode_jpegs, image_to_tensor, load_image, read_file_bytes
from featx.progress import console, progress_bar
from featx.store import StoreLock, StoreSpec, StoreWriter, open_h5, prepare_store, read_done
from featx.transforms import (AugRecipe, augmented_views, clean_views, load_recipe, make_views,
                              transform_provenance)

JPEG_SUFFIXES = (".jpg", ".jpeg")
STORE_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class ExtractConfig:
    views: int = 0  # augmented views per training image (K)
    aug: str = "mild"  # recipe name or YAML path, used when views > 0
    batch_size: int = 64  # images per forward pass (clean + views)
    workers: int | None = None  # decoding processes; None = 1 on CPU, up to 16 on CUDA
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float16"  # store dtype: features lose nothing a linear head can use
    seed: int = 0  # augmented views (and random-init weights) derive from it
    weights: str = "default"  # default | none | path to safetensors / state dict
    input_size: int | None = None  # override the backbone's crop size
    decode: str = "auto"  # auto | cpu | gpu (nvjpeg for JPEG files; auto = gpu on CUDA)
    amp: str = "bf16"  # bf16 | fp16 | off, CUDA only
    channels_last: bool = True
    engine: str = "auto"  # auto (onnxruntime on CPU, torch on CUDA) | torch | onnxruntime
    threads: int | None = None  # ONNX Runtime intra-op threads; None = torch's thread count
    cut: str | None = None  # also store the activation maps entering this block (finetune --from-block)
    overwrite: bool = False

    def __post_init__(self) -> None:
        checks = [
            (self.views >= 0, "views", "must be >= 0"),
            (self.batch_size >= 1, "batch_size", "must be >= 1"),
            (self.workers is None or self.workers >= 0, "workers", "must be >= 0"),
            (self.dtype in STORE_DTYPES, "dtype", f"must be one of {STORE_DTYPES}"),
            (self.decode in ("auto", "cpu", "gpu"), "decode", "must be auto, cpu or gpu"),
            (self.amp in ("bf16", "fp16", "off"), "amp", "must be bf16, fp16 or off"),
            (self.input_size is None or self.input_size >= 16, "input_size", "must be >= 16"),
            (self.engine in ENGINES, "engine", f"must be one of {', '.join(ENGINES)}"),
            (self.threads is None or self.threads >= 1, "threads", "must be >= 1"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ConfigError(f"{name} {rule}, got {getattr(self, name)!r}")


@dataclass
class ExtractResult:
    store: str
    backbone: str
    status: str  # created | resumed | complete (nothing to do)
    samples: int
    images: int  # images forwarded in this run
    failed: int
    seconds: float
    images_per_second: float
    device: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Batch:
    start: int  # sample rows [start, stop)
    stop: int
    train_start: int  # augmented rows [train_start, train_stop)
    train_stop: int

    def images(self, views: int) -> int:
        """Images this batch forwards when none fails: every clean view plus K per train row."""
        return self.stop - self.start + views * (self.train_stop - self.train_start)


def plan_batches(is_train: np.ndarray, views: int, batch_size: int) -> list[Batch]:
    """Consecutive samples, up to `batch_size` images each (a training sample has 1 + K)."""
    batches, start, images = [], 0, 0
    train_rank = np.concatenate([[0], np.cumsum(is_train)])
    for i, train in enumerate(is_train):
        cost = 1 + (views if train else 0)
        if images and images + cost > batch_size:
            batches.append(Batch(start, i, int(train_rank[start]), int(train_rank[i])))
            start, images = i, 0
        images += cost
    if len(is_train) > start:
        n = len(is_train)
        batches.append(Batch(start, n, int(train_rank[start]), int(train_rank[n])))
    return batches


def store_path_for(out_dir: Path, dataset: Dataset, backbone: Backbone, config: ExtractConfig,
                   recipe: AugRecipe | None) -> Path:
    """One store per dataset x backbone (x weights, when not the default ones) x input config."""
    views = f"{recipe.name}x{config.views}" if recipe and config.views else "clean"
    weights = ""
    if str(config.weights) == "none":
        weights = f"-init{config.seed}"
    elif str(config.weights) != "default":  # a fine-tuned or local file: never the default's store
        weights = f"-w{backbone.weights['sha256'][:8]}"
    cut = f"_cut-{config.cut}" if config.cut else ""
    name = (f"{dataset.name}_{backbone.name.replace('/', '-')}{weights}_"
            f"{backbone.preprocess.input_size}px_{views}{cut}")
    return Path(out_dir) / f"{name}.h5"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device} requested but CUDA is not available here")
    return dev


def use_device_decode(device: torch.device, decode: str) -> bool:
    """Decode JPEG files with torchvision.io on the model's device (nvjpeg on CUDA)?"""
    if decode == "gpu" and device.type != "cuda":
        raise ConfigError("--decode gpu needs a CUDA device")
    return device.type == "cuda" and decode in ("auto", "gpu")


def extract(dataset: Dataset, backbone_name: str, out_dir: Path, config: ExtractConfig = ExtractConfig(),
            store_path: Path | None = None, show_progress: bool = True) -> ExtractResult:
    """Extract (or resume, or confirm complete) the store of `backbone_name` over `dataset`.

    Under torchrun (WORLD_SIZE > 1) each rank extracts its shard, and rank 0 merges them.
    """
    ctx = distributed.context()
    device = resolve_device(config.device)
    if ctx.active and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", ctx.local_rank)  # one GPU per rank
        torch.cuda.set_device(device)
    backbone = create_backbone(backbone_name, config.weights, config.seed, config.input_size)
    recipe = load_recipe(config.aug) if config.views else None
    path = Path(store_path) if store_path else store_path_for(out_dir, dataset, backbone, config, recipe)
    if ctx.active:
        return _extract_sharded(dataset, backbone, recipe, path, config, device, ctx, show_progress)
    return _extract_store(dataset, backbone, recipe, path, config, device, show_progress)


def _extract_store(dataset: Dataset, backbone: Backbone, recipe: AugRecipe | None, path: Path,
                   config: ExtractConfig, device: torch.device, show_progress: bool,
                   extra_provenance: dict | None = None) -> ExtractResult:
    gpu_decode = use_device_decode(device, config.decode)
    module, cut_shape = _cut_module(backbone, config.cut)
    engine = _engine_for(backbone, config, device, _resumed_engine(path, config), module)
    spec = StoreSpec(
        provenance={
            "backbone": backbone.name, "weights": backbone.weights,
            "weights_sha256": backbone.weights.get("sha256", backbone.weights["source"]),
            "input_size": backbone.preprocess.input_size,
            "transform": transform_provenance(backbone.preprocess, recipe, config.views),
            "seed": config.seed, "device": device.type, "batch_size": config.batch_size,
            "engine": engine.name, "engine_version": engine_version(engine.name),
            "decode": "gpu" if gpu_decode else "cpu",
            "amp": config.amp if device.type == "cuda" else "off",
            **(extra_provenance or {}),
        },
        feature_dim=backbone.spec.feature_dim, num_aug_views=config.views, dtype=config.dtype,
        cut=config.cut, cut_shape=cut_shape)
    with StoreLock(path):
        status = prepare_store(path, dataset, spec, config.overwrite)
        if status == "complete":
            return ExtractResult(str(path), backbone.name, status, len(dataset.samples), 0,
                                 _count_failed(path), 0.0, 0.0, str(device))
        # A resumed run keeps the batch plan of the run it resumes (same numbers, bit for bit).
        batch_size = _stored_attr(path, "batch_size", config.batch_size)
        runner = _Runner(dataset, backbone, recipe, config, device, gpu_decode, batch_size, engine)
        seconds, images = runner.run(path, show_progress)
        n_failed = _count_failed(path)
    return ExtractResult(str(path), backbone.name, status, len(dataset.samples), images, n_failed,
                         seconds, images / seconds if seconds else 0.0, str(device))


SHARDING = "contiguous runs of the single-process batch plan, balanced by image count"


def _extract_sharded(dataset: Dataset, backbone: Backbone, recipe: AugRecipe | None, final: Path,
                     config: ExtractConfig, device: torch.device, ctx, show_progress: bool) -> ExtractResult:
    """This rank's shard into its own store; rank 0 merges all shards into `final`."""
    distributed.init(ctx, device)
    if final.is_file() and not config.overwrite:
        with open_h5(final) as f:
            if not f.attrs.get("complete", 0):
                raise StoreError(f"{final} exists and is an unfinished single-process store; finish "
                                 "it without torchrun, or pass --overwrite")
        # A finished merged store: rank 0 runs the normal checks (same settings and data) under
        # the store's lock; the other ranks wait for its verdict.
        result = (_extract_store(dataset, backbone, recipe, final, config, device, show_progress)
                  if ctx.rank == 0 else None)
        distributed.barrier()
        return result or ExtractResult(str(final), backbone.name, "complete", len(dataset.samples),
                                       0, _count_failed(final), 0.0, 0.0, str(device))
    result = _extract_shard(dataset, backbone, recipe, final, config, device, ctx.rank,
                            ctx.world_size, show_progress and ctx.rank == 0)
    distributed.barrier()  # every shard written
    if ctx.rank == 0:
        shards = [merge.shard_path(final, r, ctx.world_size) for r in range(ctx.world_size)]
        merge.merge_shards(shards, final)
        for path in shards:  # the merged copy is self-contained; `featx merge` keeps shards
            path.unlink()
            Path(str(path) + ".lock").unlink(missing_ok=True)
    distributed.barrier()  # merged: every rank may now read the final store
    if ctx.rank != 0:
        return replace(result, store=str(final))
    with open_h5(final) as f:  # rank 0 reports the whole run, not its own part
        seconds = float(f.attrs.get("extract_seconds", result.seconds))
        rate = float(f.attrs.get("images_per_second", result.images_per_second))
    return replace(result, store=str(final), samples=len(dataset.samples), seconds=seconds,
                   images=int(round(rate * seconds)), images_per_second=rate,
                   failed=_count_failed(final))


def extract_shard(dataset: Dataset, backbone_name: str, out_dir: Path, rank: int, world_size: int,
                  config: ExtractConfig = ExtractConfig(), store_path: Path | None = None,
                  show_progress: bool = True) -> ExtractResult:
    """Shard `rank` of `world_size` into its own store (`featx merge` joins them), no torchrun."""
    device = resolve_device(config.device)
    backbone = create_backbone(backbone_name, config.weights, config.seed, config.input_size)
    recipe = load_recipe(config.aug) if config.views else None
    final = Path(store_path) if store_path else store_path_for(out_dir, dataset, backbone, config, recipe)
    return _extract_shard(dataset, backbone, recipe, final, config, device, rank, world_size,
                          show_progress)


def _extract_shard(dataset: Dataset, backbone: Backbone, recipe: AugRecipe | None, final: Path,
                   config: ExtractConfig, device: torch.device, rank: int, world_size: int,
                   show_progress: bool) -> ExtractResult:
    is_train = np.array([s.split == "train" for s in dataset.samples])
    batch_size = _shard_batch_size(final, world_size, config.batch_size)
    plan = plan_batches(is_train, config.views, batch_size)
    bounds = distributed.shard_bounds([b.start for b in plan], [b.images(config.views) for b in plan],
                                      len(dataset.samples), world_size)
    start, stop = bounds[rank]
    shard = replace(dataset, samples=dataset.samples[start:stop])
    provenance = {"shard_rank": rank, "shard_world_size": world_size, "shard_start": start,
                  "shard_stop": stop, "full_num_samples": len(dataset.samples),
                  "full_dataset_fingerprint": dataset.fingerprint, "sharding": SHARDING}
    return _extract_store(shard, backbone, recipe, merge.shard_path(final, rank, world_size),
                          replace(config, batch_size=batch_size), device, show_progress, provenance)


def _shard_batch_size(final: Path, world_size: int, default: int) -> int:
    """The batch size of shards already started (the shard bounds depend on it)."""
    for rank in range(world_size):
        path = merge.shard_path(final, rank, world_size)
        if path.is_file():
            try:
                return int(_stored_attr(path, "batch_size", default))
            except FeatxError:
                continue
    return default


def _resumed_engine(path: Path, config: ExtractConfig) -> str:
    """`auto` resumes an unfinished store with the engine that started it (same numbers)."""
    if config.engine != "auto" or config.overwrite or not path.is_file():
        return config.engine
    try:
        with open_h5(path) as f:
            if not f.attrs.get("complete", 0) and f.attrs.get("engine") in ENGINES:
                return str(f.attrs["engine"])
    except FeatxError:
        pass  # a corrupt store is reported by prepare_store
    return config.engine


def _cut_module(backbone: Backbone, cut: str | None):
    """(module returning features and maps, map shape) for `--cut`, or (None, None)."""
    if not cut:
        return None, None
    from featx.backbones.cuts import WithMaps, trunk_for

    trunk = trunk_for(backbone.model)
    if trunk is None:
        raise ConfigError(f"{backbone.name} has no known cut points (`featx backbones --cuts NAME` "
                          "lists them for efficientnet_lite, ResNets and features-based models)")
    trunk.check(cut, backbone.name)
    module = WithMaps(trunk, cut).eval()
    size = backbone.preprocess.input_size
    with torch.no_grad():
        shape = tuple(module.bottom(torch.zeros(1, 3, size, size)).shape[1:])
    return module, shape


def _engine_for(backbone: Backbone, config: ExtractConfig, device: torch.device, name: str,
                module: torch.nn.Module | None = None):
    """The engine to run, checked against torch on a probe batch before any store is touched."""
    engine = create_engine(backbone, name, device, config.channels_last, config.amp, config.threads,
                           warn=_warn, module=module, cut=config.cut)
    if isinstance(engine, TorchEngine):
        return engine
    size = backbone.preprocess.input_size
    probe = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    reference = TorchEngine(backbone, device, config.channels_last, config.amp, module)
    problem = verify(engine, reference, probe)
    if problem is None:
        return engine
    _warn(f"ONNX Runtime output differs from torch for {backbone.name} ({problem}); using torch")
    return reference


def _warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {message}", highlight=False)


def embed(dataset: Dataset, backbone: Backbone, device: str = "auto", batch_size: int = 64,
          workers: int | None = None, engine: str = "auto") -> tuple[np.ndarray, dict[int, str]]:
    """Clean-view features [N, D] of every sample, in memory (prediction on new images).

    Failed images keep a zero row and are listed in the returned {row: reason}.
    """
    dev = resolve_device(device)
    config = ExtractConfig(batch_size=batch_size, workers=workers, device=device, decode="cpu",
                           engine=engine)
    runner = _Runner(dataset, backbone, None, config, dev, False, batch_size,
                     _engine_for(backbone, config, dev, engine))
    plan = plan_batches(runner.is_train, 0, batch_size)
    out = np.zeros((len(dataset.samples), backbone.spec.feature_dim), np.float32)
    failed: dict[int, str] = {}
    with progress_bar(len(dataset.samples), f"embed {backbone.name}") as advance:
        for batch, item in zip(plan, _guarded(iter(runner._loader(plan)))):
            feats, owner = runner._forward(item)
            out[batch.start + owner[:, 0]] = feats.cpu().numpy()
            failed.update(item["failed"])
            advance(batch.stop - batch.start)
    return out, failed


def _stored_attr(path: Path, key: str, default):
    with open_h5(path) as f:
        value = f.attrs.get(key, default)
    return value.item() if isinstance(value, np.generic) else value


def _count_failed(path: Path) -> int:
    with open_h5(path) as f:
        return int((f["failed/reason"][:] != b"").sum())


class _Runner:
    """One extraction run: plan, load, forward, write."""

    def __init__(self, dataset: Dataset, backbone: Backbone, recipe: AugRecipe | None,
                 config: ExtractConfig, device: torch.device, gpu_decode: bool, batch_size: int,
                 engine):
        self.dataset, self.backbone, self.recipe, self.config = dataset, backbone, recipe, config
        self.engine = engine
        self.device, self.gpu_decode, self.batch_size = device, gpu_decode, batch_size
        self.is_train = np.array([s.split == "train" for s in dataset.samples])
        self.train_rank = np.cumsum(self.is_train) - 1  # augmented row of each training sample

    def run(self, path: Path, show_progress: bool) -> tuple[float, int]:
        k = self.config.views
        plan = plan_batches(self.is_train, k, self.batch_size)
        done_clean, done_aug = read_done(path)
        todo = [b for b in plan if not (done_clean[b.start:b.stop].all()
                                        and done_aug[:, b.train_start:b.train_stop].all())]
        total = sum(b.images(k) for b in todo)
        loader = self._loader(todo)
        batches = iter(loader)  # workers fork here, before the store is opened for writing
        writer = StoreWriter(path)
        sink = _WriterThread(writer, self.config.dtype, k, self.train_rank)
        start, images = time.perf_counter(), 0
        try:
            with progress_bar(total, f"extract {self.backbone.name}", enabled=show_progress) as advance:
                sink.on_written = advance
                for batch, item in zip(todo, _guarded(batches)):
                    feats, owner = self._forward(item)
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

    def _loader(self, todo: list[Batch]) -> torch.utils.data.DataLoader:
        workers = self.config.workers
        if workers is None:
            cpus = os.cpu_count() or 1
            workers = min(16, cpus) if self.device.type == "cuda" else (1 if cpus > 1 else 0)
        decoder = BatchDecoder(self.dataset, todo, self.is_train, self.backbone.preprocess,
                               self.recipe, self.config.seed, self.config.views, self.gpu_decode)
        return torch.utils.data.DataLoader(
            decoder, batch_size=None, shuffle=False, num_workers=workers,
            pin_memory=self.device.type == "cuda", worker_init_fn=_one_thread,
            prefetch_factor=4 if workers else None, timeout=600 if workers else 0)

    @torch.inference_mode()
    def _forward(self, item: dict) -> tuple[torch.Tensor, np.ndarray]:
        # The DataLoader turns numpy arrays into tensors; owners are indices, keep them numpy.
        images, owner = item["images"], np.asarray(item["owner"], dtype=np.int64).reshape(-1, 2)
        if self.gpu_decode and item["jpeg"]:
            images, owner = self._merge_gpu_decoded(images, owner, item)
        if len(owner) == 0:
            empty = torch.empty(0, self.backbone.spec.feature_dim)
            return ((empty, None) if self.config.cut else empty), owner
        return self.engine(images), owner

    def _merge_gpu_decoded(self, images: torch.Tensor, owner: np.ndarray, item: dict):
        """Decode the batch's JPEG files on the device (nvjpeg) and make their views there."""
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
            row = item["start"] + offset
            if self.config.views and self.is_train[row]:
                views = list(range(1, self.config.views + 1))
                augmented = augmented_views(img, self.backbone.preprocess, self.recipe,
                                            self.config.seed, self.dataset.samples[row].path, views)
                parts += [(offset, v, view) for v, view in zip(views, augmented)]
        parts.sort(key=lambda p: (p[0], p[1]))
        owner = np.array([(o, v) for o, v, _ in parts], dtype=np.int64).reshape(-1, 2)
        return (torch.stack([p[2] for p in parts]) if parts else images), owner

    def _decode_jpegs(self, item: dict) -> list[tuple[int, torch.Tensor | str]]:
        """(offset, RGB uint8 image on the device, or the reason it failed) per JPEG file."""
        offsets = [o for o, _ in item["jpeg"]]
        paths = [self.dataset.abspath(self.dataset.samples[item["start"] + o]) for o in offsets]
        decoded = decode_jpegs([d for _, d in item["jpeg"]], paths, self.device)
        return list(zip(offsets, decoded))


def _guarded(batches):
    """Turn DataLoader worker deaths and hangs into one clear line; progress stays saved."""
    try:
        yield from batches
    except RuntimeError as exc:
        if "DataLoader" in str(exc) or "worker" in str(exc):
            raise FeatxError(f"a data loading worker failed ({str(exc).strip().splitlines()[0]}); "
                             "finished batches are saved: re-run the same command to resume") from None
        raise


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # decoding workers must not fight the model for cores


class BatchDecoder(torch.utils.data.Dataset):
    """Item i = planned batch i, decoded and transformed: uint8 images + (sample, view) owners.

    A file that fails to decode is recorded in `failed` and the batch goes on without it.
    """

    def __init__(self, dataset: Dataset, batches: list[Batch], is_train: np.ndarray, pre,
                 recipe: AugRecipe | None, seed: int, views: int, gpu_decode: bool):
        self.root = dataset.root
        self.paths = [s.path for s in dataset.samples]
        self.batches, self.is_train, self.pre, self.recipe = batches, is_train, pre, recipe
        self.seed, self.views, self.gpu_decode = seed, views, gpu_decode

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict:
        b = self.batches[i]
        images, owner, failed, jpeg = [], [], {}, []
        for row in range(b.start, b.stop):
            rel = self.paths[row]
            path = self.root / rel
            if self.gpu_decode and path.suffix.lower() in JPEG_SUFFIXES:
                try:
                    jpeg.append((row - b.start, read_file_bytes(path)))
                    continue
                except OSError as exc:
                    failed[row] = f"cannot read file ({exc.strerror or exc})"
                    continue
            views = [0] + (list(range(1, self.views + 1)) if self.is_train[row] else [])
            try:
                img = image_to_tensor(load_image(path))
                made = make_views(img, self.pre, self.recipe, self.seed, rel, views)
            except ImageError as exc:
                failed[row] = exc.reason
                continue
            except Exception as exc:  # noqa: BLE001 - one odd image must not end a long run
                failed[row] = f"{type(exc).__name__}: {str(exc)[:160]}"
                continue
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


def _to_pinned(t: torch.Tensor) -> torch.Tensor:
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    return host


class _WriterThread:
    """Commits batches to the store in the background, so HDF5 writes overlap the forward pass."""

    def __init__(self, writer: StoreWriter, dtype: str, views: int, train_rank: np.ndarray):
        self.writer, self.dtype, self.views = writer, np.dtype(dtype), views
        self.train_rank = train_rank  # sample row -> row in features/aug
        self.queue: queue.Queue = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.on_written = lambda n: None
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def put(self, batch: Batch, feats: torch.Tensor, owner: np.ndarray, failed: dict,
            maps: torch.Tensor | None = None) -> None:
        if self.error:
            raise self.error
        event = None
        if feats.is_cuda:  # copy to pinned memory without blocking the next forward pass
            feats, maps = (_to_pinned(t) if t is not None else None for t in (feats, maps))
            event = torch.cuda.Event()
            event.record()
        self.queue.put((batch, feats, owner, failed, event, maps))

    def close(self) -> None:
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
        clean, aug = self._scatter(batch, owner, feats, self.writer.clean.shape[1:], self.dtype)
        cut = None
        if self.writer.maps is not None:
            cut = self._scatter(batch, owner, maps, self.writer.maps["clean"].shape[1:], np.float16)
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
