"""Files of a fine-tune: the per-epoch checkpoint, the best epoch's weights, and the outputs.

Everything a run writes is named from its `out` stem:

    OUT.checkpoint.safetensors + OUT.checkpoint.json   model + optimiser after the last epoch
    OUT.best.safetensors                               the network at the best val epoch
    OUT.backbone.safetensors                           `featx extract --weights` takes it
    OUT.head.safetensors + OUT.head.json               a featx head on that backbone

Tensors are safetensors, the rest JSON (no pickle). Each file is written atomically, and the
checkpoint's JSON, written last, holds the hash of its tensors: a kill at any moment leaves
either the previous checkpoint or the new one (docs/reliability.md, 6).
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from featx.runtime.atomic import atomic_write, atomic_write_text, remove_stale_temp_files
from featx.backbones.weights import sha256_file
from featx.errors import FeatxError
from featx.finetuning.config import FinetuneConfig
from featx.finetuning.model import Network
from featx.heads.io import Head, save_head
from featx.evaluation.calibration import Temperature, temperature_of
from featx.evaluation.metrics import Metrics
from featx.probes.calibrated import calibration_record
from featx.runtime.progress import console

# Recipes whose ops changed under the same name (issue 21: they no longer turn images by 90
# degrees). A checkpoint that names one without recording its ops cannot be resumed as the same run.
RECIPES_CHANGED = ("flips", "mild")
# Format 3 records what the run trains from (`identity`: the warm-start head's sha256 and the
# data's fingerprint) beside its settings. Formats 1 and 2 recorded only the settings, so a
# checkpoint of another head or other data resumed silently: they are refused, not guessed at.
CHECKPOINT_FORMAT = "featx-finetune-checkpoint/3"
OLD_FORMATS = ("featx-finetune-checkpoint/1", "featx-finetune-checkpoint/2")


def checkpoint_paths(out: Path) -> tuple[Path, Path]:
    """(tensors, JSON) of the checkpoint of the run `out`."""
    return (out.with_name(out.name + ".checkpoint.safetensors"),
            out.with_name(out.name + ".checkpoint.json"))


def best_path(out: Path) -> Path:
    return out.with_name(out.name + ".best.safetensors")


def remove_stale_files(out: Path) -> None:
    """Temporary files a killed writer of this run left behind."""
    for path in (*checkpoint_paths(out), best_path(out)):
        remove_stale_temp_files(path)


def fresh_state() -> dict:
    return {"epoch": 0, "best_loss": float("inf"), "best_epoch": 0, "since_best": 0, "curve": []}


def run_identity(head: Head, data_where: str | Path, data_fingerprint: str) -> dict:
    """What a run trains from, beyond its settings: the warm-start head (by the sha256 of its
    weights, whatever its file is called) and the data: the dataset's fingerprint, or for a top
    fine-tune the fingerprint of the store whose maps it reads. Paths are kept for the messages
    only: a moved head or dataset still resumes."""
    return {"head_sha256": sha256_file(head.path), "warm_start": str(head.path),
            "data": {"where": str(data_where), "fingerprint": data_fingerprint}}


def save_checkpoint(out: Path, net: Network, opt: torch.optim.Optimizer, state: dict,
                    config: FinetuneConfig, identity: dict) -> None:
    """Model + optimiser tensors (safetensors), then the JSON that makes the checkpoint valid."""
    tensors_path, json_path = checkpoint_paths(out)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    opt_state = opt.state_dict()
    for index, values in opt_state["state"].items():
        for name, value in values.items():
            tensors[f"opt.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    atomic_write(tensors_path, lambda tmp: save_file(tensors, str(tmp)))
    meta = {"format": CHECKPOINT_FORMAT, "config": asdict(config), "identity": identity, "state": state,
            "checkpoint_sha256": sha256_file(tensors_path)}
    atomic_write_text(json_path, json.dumps(meta))


def load_checkpoint(out: Path, net: Network, opt: torch.optim.Optimizer, config: FinetuneConfig,
                    identity: dict) -> dict:
    """The state after the last finished epoch, with `net` and `opt` restored to it; a fresh
    state when there is no valid checkpoint. A checkpoint of another run (other settings, another
    warm-start head, other data, or a format that did not record them) is refused."""
    tensors_path, json_path = checkpoint_paths(out)
    if not json_path.is_file():
        return fresh_state()
    try:
        meta = json.loads(json_path.read_text())
        valid = (isinstance(meta, dict) and meta.get("format") in (CHECKPOINT_FORMAT, *OLD_FORMATS)
                 and tensors_path.is_file() and meta.get("checkpoint_sha256") == sha256_file(tensors_path))
    except (OSError, ValueError):
        valid = False
    if not valid:
        console.print(f"[yellow]warning:[/] {json_path}: unreadable checkpoint; starting over")
        return fresh_state()
    check_same_run(json_path, meta, config, identity)
    tensors = load_file(str(tensors_path))
    net.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state = opt.state_dict()
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, index, name = key.split(".", 2)
            opt_state["state"].setdefault(int(index), {})[name] = value
    opt.load_state_dict(opt_state)
    return meta["state"]


def check_same_run(json_path: Path, meta: dict, config: FinetuneConfig, identity: dict) -> None:
    """Refuse, naming what differs, a checkpoint that another run left at this --out."""
    fresh = f"to start over, give another --out, or delete {json_path.name} and its .safetensors"
    if meta["format"] in OLD_FORMATS:
        raise FeatxError(f"{json_path}: a checkpoint of an older featx ({meta['format']}) that does not record "
                         f"its warm-start head and data, so it cannot be resumed safely; {fresh}")
    saved = meta.get("identity") or {}
    if saved.get("head_sha256") != identity["head_sha256"]:
        raise FeatxError(f"{json_path}: a checkpoint of a run from another warm-start head ({saved.get('warm_start')}, "
                         f"sha256 {str(saved.get('head_sha256'))[:12]}; this run: {identity['warm_start']}, "
                         f"sha256 {identity['head_sha256'][:12]}); {fresh}")
    if "aug" in identity and saved.get("aug", "unrecorded") != identity["aug"]:
        aug = config.aug
        if "aug" in saved:
            raise FeatxError(f"{json_path}: a checkpoint made with other ops under the recipe name '{aug}' "
                             f"(the recipe file changed since); {fresh}")
        if aug in RECIPES_CHANGED:
            raise FeatxError(f"{json_path}: a checkpoint of the recipe '{aug}' from before it stopped turning "
                             f"images by 90 degrees (its ops were not recorded); {fresh}")
    if (saved.get("data") or {}).get("fingerprint") != identity["data"]["fingerprint"]:
        raise FeatxError(f"{json_path}: a checkpoint of a run on other data ({_describe(saved.get('data'))}; "
                         f"this run: {_describe(identity['data'])}); {fresh}")
    wanted = json.loads(json.dumps(asdict(config)))
    changed = sorted(k for k in meta["config"] if meta["config"][k] != wanted.get(k))
    if changed:
        raise FeatxError(f"{json_path}: a checkpoint with other settings ({', '.join(changed)}) "
                         "is here; use the same options to resume, or another --out")


def _describe(data: dict | None) -> str:
    """A data identity in a few words: where it is, and the start of its fingerprint."""
    if not isinstance(data, dict):
        return "unrecorded data"
    return f"{data.get('where')}, fingerprint {str(data.get('fingerprint'))[:12]}"


def save_best(out: Path, net: Network) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write(best_path(out), lambda tmp: save_file(state, str(tmp)))


def load_best(out: Path, net: Network) -> None:
    net.load_state_dict(load_file(str(best_path(out))))


def save_backbone(path: Path, backbone: torch.nn.Module) -> Path:
    """The fine-tuned backbone as a weights file `featx extract --weights` accepts."""
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp)))


# What a fine-tune that fits no temperature records (the top mode, --from-block, keeps its logits).
NOT_FITTED = {"method": "none", "temperature": 1.0, "why": "not fitted by this fine-tune mode (--from-block)"}


def val_temperature(logits: np.ndarray, labels: np.ndarray) -> Temperature | None:
    """The tuned network's temperature, fitted on its val split's logits (never test); None
    without val images. The warm start's does not carry over: the logits are new."""
    if not len(labels):
        return None
    return temperature_of(logits, np.asarray(labels, np.int64),
                          f"the val split's predictions after fine-tuning ({len(labels)} images)")


def finetune_calibration(temperature: Temperature | None, before: Metrics | None, after: Metrics | None,
                         warm_start: float | None = None) -> dict:
    """The sidecar's `calibration` record of a fine-tuned head, as train-head writes it.
    `warm_start`: the warm start's temperature, where no epoch beat it and it is kept as given."""
    if warm_start is not None:
        return {"method": "warm start", "temperature": 1.0,
                "why": f"no epoch beat the warm start: its temperature ({warm_start:.3g}) is in its last layer"}
    if temperature is None:
        return {"method": "none", "temperature": 1.0, "why": "no val split to fit it on"}
    return calibration_record("temperature", "finetune", temperature, before, after)


def save_finetuned_head(out: Path, net: Network, head: Head, weights_file: Path,
                        config: FinetuneConfig, state: dict, val: Metrics | None, test: Metrics | None,
                        seconds: float, dataset_root: Path, train_labels: np.ndarray,
                        aug: dict | None = None, temperature: Temperature | None = None,
                        calibration: dict | None = None) -> Path:
    """OUT.head: the tuned head, its sidecar naming the tuned backbone `weights_file` (by hash),
    the warm-start head, the settings (`aug`: the training recipe's ops), the curve and the metrics
    (at `temperature`, fitted on val: val_temperature; `calibration` says how, and test before/after)."""
    sha = sha256_file(weights_file)
    # The warm-start head's sidecar (classes, backbone, preprocessing, ...) with what the tuning changed.
    meta = replace(
        head.meta, kind="finetune", weights={"source": str(weights_file.resolve()), "sha256": sha},
        weights_sha256=sha, warm_start=str(head.path), config=asdict(config),
        params={"lr": config.lr, "lr_ratio": config.lr_ratio, "best_epoch": state["best_epoch"],
                "epochs_run": state["epoch"]},
        search=[], curve=state["curve"], seconds=seconds, aug=aug,
        metrics={"val": val.to_dict() if val else None, "test": test.to_dict() if test else None},
        train_counts=np.bincount(train_labels, minlength=len(head.classes)).tolist(),
        dataset_root=str(dataset_root), store=None,
        # The network was trained and measured on single views: predict must not average views.
        tta=None, selection={"method": "finetune", "metric": "val loss"},
        normalize="l2" if net.head.l2 else "standard",
        temperature=temperature.value if temperature else 1.0,
        extra={**head.meta.extra, "calibration": calibration or (
            finetune_calibration(temperature, None, test) if temperature else NOT_FITTED)},
    )
    return save_head(out.with_name(out.name + ".head"), net.head.tensors(), meta)
