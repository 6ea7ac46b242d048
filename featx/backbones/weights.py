"""Loading weight files safely: safetensors, or torch state dicts with weights_only=True.

A .pt/.pth whose pickle would run code is refused, never retried with weights_only=False
(docs/reliability.md item 7).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import torch
from torch import nn

from featx.errors import BackboneError
from featx.runtime.hashing import file_sha256

_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def weights_arg(weights_meta: dict) -> str:
    """The `create_backbone` weights argument that rebuilds the weights a head or store names: the
    weights file when it is here, else this machine's default weights (callers check the sha256);
    random-init backbones are rebuilt from their seed."""
    source = weights_meta.get("source", "")
    return "none" if source.startswith("random-init") else source if Path(source).is_file() else "default"


def sha256_file(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = file_sha256(path)
    return _SHA_CACHE[key]


def sha256_state_dict(state: dict[str, torch.Tensor]) -> str:
    """Content hash of tensors (names, dtypes, shapes, bytes), independent of file format."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors or torch state-dict file into {name: tensor} without running code."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise BackboneError(f"{path}: not a valid safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0]
        raise BackboneError(
            f"{path}: refused: this pickle needs code execution to load ({first[:160]}). "
            "featx loads weights with weights_only=True only; save a state_dict or safetensors"
        ) from None
    except Exception as exc:  # noqa: BLE001 - zip/EOF/format errors all mean "not a weights file"
        raise BackboneError(f"{path}: not a readable torch weights file ({type(exc).__name__}: "
                            f"{str(exc).strip()[:160]})") from None
    return _unwrap(obj, path)


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    # Training checkpoints often nest the weights: {"state_dict": ...}, {"model": ...}.
    for key in ("state_dict", "model_state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackboneError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    # Weights saved from DistributedDataParallel carry a "module." prefix.
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def fit_state_dict(model: nn.Module, state: dict[str, torch.Tensor], name: str, source: str,
                   optional_prefix: str | None = None) -> None:
    """Load `state` into `model`, allowing only the classifier (`optional_prefix`) to be absent.

    A featx fine-tuned network is saved without its ImageNet classifier, so those keys may be
    missing; anything else missing, unexpected, or of the wrong shape is a clear error.
    """
    own = model.state_dict()
    wrong_shape = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state
               and not (optional_prefix and k.startswith(optional_prefix + "."))]
    unexpected = [k for k in state if k not in own]
    if wrong_shape or missing or unexpected:
        parts = []
        if wrong_shape:
            k = wrong_shape[0]
            parts.append(f"{len(wrong_shape)} with the wrong shape (e.g. {k}: "
                         f"{tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise BackboneError(f"{source}: weights do not fit {name}: " + "; ".join(parts))
    model.load_state_dict(state, strict=False)


def load_weights(model: nn.Module, path: str | os.PathLike, optional_prefix: str | None = None) -> nn.Module:
    """Load a safetensors / torch state-dict file into `model`, checked key by key (for the
    factories of `register_backbone`). Only keys under `optional_prefix` may be absent."""
    fit_state_dict(model, load_state_dict(path), type(model).__name__, os.fspath(path), optional_prefix)
    return model
