"""The one checkpoint format: config, label map, weights, metadata, optional training state.

A checkpoint is self-describing: the Segmenter, evaluation and distillation rebuild the
model from the stored config alone, and a config given alongside is checked against it
so that a width or grid mismatch is reported as "checkpoint has init_size 32, config asks
for 16" instead of a PyTorch shape traceback. Writes are atomic (temp file in the same
directory, fsync, os.replace): a crash mid-save never leaves a truncated checkpoint where
the previous good one was.
"""
from __future__ import annotations

import datetime as _dt
import os
import pickle
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from pvd_core.config import Config, ConfigError, config_from_dict
from pvd_core.errors import PvdError
from pvd_core.labels import LabelMap

FORMAT_NAME = "pvd_ros.checkpoint"
FORMAT_VERSION = 1
META_KEYS = ("dataset", "step", "metrics", "git_revision", "created")

PathLike = Union[str, Path]


class CheckpointError(PvdError, ValueError):
    """A checkpoint is missing, malformed, or does not match the config or model it is used with."""


@dataclass
class Checkpoint:
    config: Config
    label_map: LabelMap
    model_state: dict
    meta: dict
    train_state: Optional[dict] = None  # optimizer / scheduler / RNG states; None for inference
    path: Optional[Path] = None  # where it was loaded from (for messages)


def git_revision() -> str:
    """Commit of the source tree this package runs from ('+dirty' if modified, 'unknown' outside git)."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}+dirty" if dirty else (rev or "unknown")


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model under DistributedDataParallel / DataParallel wrappers."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _cast_floats(state: dict[str, torch.Tensor], dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``state`` with its floating-point tensors in ``dtype``, except those that would overflow it;
    returns the new state and {name: kept dtype} of the exceptions."""
    limit = torch.finfo(dtype).max
    out: dict[str, torch.Tensor] = {}
    kept: dict[str, str] = {}
    for name, value in state.items():
        if not value.is_floating_point():
            out[name] = value
        elif value.numel() and bool((value[torch.isfinite(value)].abs() > limit).any()):
            out[name] = value
            kept[name] = str(value.dtype).removeprefix("torch.")
        else:
            out[name] = value.to(dtype)
    return out, kept


def save_checkpoint(path: PathLike, model: nn.Module, config: Config, label_map: LabelMap,
                    meta: Optional[dict] = None, train_state: Optional[dict] = None,
                    float_dtype: Optional[torch.dtype] = None) -> None:
    """Write a checkpoint atomically; ``meta`` keys override the defaults of META_KEYS.

    ``float_dtype`` (e.g. torch.float16) stores the floating-point tensors in that type: half the
    file for an inference or teacher checkpoint; loading casts them back to the model's dtype
    (``load_state_dict`` copies), so the weights are the rounded ones, nothing else changes.
    A tensor with a value beyond that type's range keeps its own dtype (meta ``kept_dtype`` names
    it): a trained teacher's batch-norm running variances reach 1e7, and as float16 (max 65504)
    they would become inf and silence their channels."""
    path = Path(path)
    full_meta: dict[str, Any] = {
        "dataset": config.dataset.kind,
        "step": 0,
        "metrics": {},
        "git_revision": git_revision(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    full_meta.update(meta or {})
    state = {k: v.detach().to("cpu") for k, v in _unwrap(model).state_dict().items()}
    if float_dtype is not None:
        state, kept = _cast_floats(state, float_dtype)
        full_meta["stored_dtype"] = str(float_dtype).removeprefix("torch.")
        full_meta["kept_dtype"] = kept
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "label_map": label_map.to_dict(),
        "model_state": state,
        "meta": full_meta,
        "train_state": train_state,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates the file 0600; a checkpoint is data other users (a ROS node) read.
        os.chmod(tmp_name, 0o666 & ~_current_umask())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


def _torch_load(path: Path, map_location: Any) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # Training state may hold objects outside torch's safe list (numpy RNG state):
        # our own checkpoints are trusted files, so load them in full.
        return torch.load(path, map_location=map_location, weights_only=False)


def load_checkpoint(path: PathLike, map_location: Any = "cpu") -> Checkpoint:
    """Read and validate a checkpoint; every failure is a CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        data = _torch_load(path, map_location)
    except Exception as exc:  # torch raises many types for a file that is not a torch archive
        raise CheckpointError(f"{path}: not a pvd_ros checkpoint (torch.load failed: {exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path}: not a pvd_ros checkpoint (no format marker {FORMAT_NAME!r}; a bare state_dict or "
            "an upstream Cylinder3D file must be converted first)")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}, this pvd_ros reads version {FORMAT_VERSION}")
    missing = [k for k in ("config", "label_map", "model_state", "meta") if k not in data]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    try:
        config = config_from_dict(data["config"], where=f"{path}: config")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc
    try:
        label_map = LabelMap.from_dict(data["label_map"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: malformed label_map ({exc})") from exc
    return Checkpoint(config=config, label_map=label_map, model_state=data["model_state"],
                      meta=dict(data["meta"]), train_state=data.get("train_state"), path=path)


def config_differences(ckpt_config: Config, config: Config) -> list[str]:
    """What the weights depend on that differs: model fields, grid geometry, dataset kind.

    ``grid.out_of_volume`` is left out: it only decides which points reach the network.
    """
    diffs: list[str] = []
    pairs = [(f"model.{k}" if k != "init_size" else k, getattr(ckpt_config.model, k), getattr(config.model, k))
             for k in ("init_size", "num_input_features", "point_generator_dims", "point_head_dims")]
    pairs += [(f"grid.{k}", getattr(ckpt_config.grid, k), getattr(config.grid, k))
              for k in ("size", "rho", "phi", "z")]
    pairs.append(("dataset.kind", ckpt_config.dataset.kind, config.dataset.kind))
    for name, have, want in pairs:
        if have != want:
            diffs.append(f"checkpoint has {name} {have}, config asks for {want}")
    return diffs


def _state_differences(model: nn.Module, state: dict) -> list[str]:
    own = model.state_dict()
    diffs = []
    for key, tensor in own.items():
        if key not in state:
            diffs.append(f"{key}: missing from the checkpoint")
        elif tuple(state[key].shape) != tuple(tensor.shape):
            diffs.append(f"{key}: checkpoint shape {tuple(state[key].shape)}, model shape {tuple(tensor.shape)}")
    diffs += [f"{key}: in the checkpoint but not in the model" for key in state if key not in own]
    return diffs


def build_model_from_checkpoint(ckpt: Checkpoint, config: Optional[Config] = None,
                                device: Union[str, torch.device] = "cpu") -> nn.Module:
    """Cylinder3D with the checkpoint's weights, in eval mode on ``device``.

    With ``config`` given, it must agree with the checkpoint on everything the weights
    depend on; all differences are reported at once.
    """
    from pvd_core.models.cylinder3d import Cylinder3D  # spconv import only when a model is built

    where = str(ckpt.path) if ckpt.path else "checkpoint"
    if config is not None:
        diffs = config_differences(ckpt.config, config)
        if diffs:
            raise CheckpointError(f"{where} does not match the config: " + "; ".join(diffs))
    use = config if config is not None else ckpt.config
    model = Cylinder3D(use.model, use.grid, ckpt.label_map.num_classes)
    diffs = _state_differences(model, ckpt.model_state)
    if diffs:
        shown = diffs[:12] + ([f"... and {len(diffs) - 12} more"] if len(diffs) > 12 else [])
        probe = ckpt.model_state.get("cylinder_3d_spconv_seg.downCntx.conv1.weight")
        hint = (f" (the weights were trained with init_size {int(probe.shape[0])})"
                if probe is not None and int(probe.shape[0]) != use.model.init_size else "")
        raise CheckpointError(
            f"{where}: weights do not fit a Cylinder3D with init_size {use.model.init_size} and "
            f"{ckpt.label_map.num_classes} classes{hint}: " + "; ".join(shown))
    model.load_state_dict(ckpt.model_state, strict=True)
    return model.to(device).eval()


def load_weights_into(model: nn.Module, path: PathLike, label_map: LabelMap) -> Checkpoint:
    """Copy a checkpoint's weights (nothing else: no optimiser, step or config) into ``model``.

    For fine-tuning (``pvd train --init-from``): the checkpoint may come from other data or
    another grid as long as every tensor has the model's shape and the classes are the same;
    otherwise every mismatching tensor is named at once.
    """
    ckpt = load_checkpoint(path)
    if ckpt.label_map.class_names != label_map.class_names:
        raise CheckpointError(f"{path}: its classes {ckpt.label_map.class_names} are not this run's "
                              f"{label_map.class_names}")
    diffs = _state_differences(_unwrap(model), ckpt.model_state)
    if diffs:
        shown = diffs[:12] + ([f"... and {len(diffs) - 12} more"] if len(diffs) > 12 else [])
        raise CheckpointError(f"{path}: weights do not fit this run's model (init_size "
                              f"{ckpt.config.model.init_size} there); " + "; ".join(shown))
    _unwrap(model).load_state_dict(ckpt.model_state, strict=True)
    return ckpt


def export_checkpoint(source: PathLike, out: PathLike, meta_updates: Optional[dict] = None,
                      float_dtype: Optional[torch.dtype] = None) -> Checkpoint:
    """Write ``source`` again as an inference checkpoint: weights, config, label map and metadata
    (with ``meta_updates`` merged in), without the optimiser state that makes a run's last.pt 3x larger;
    ``float_dtype`` as in save_checkpoint."""
    from pvd_core.models.cylinder3d import Cylinder3D

    ckpt = load_checkpoint(source)
    model = Cylinder3D(ckpt.config.model, ckpt.config.grid, ckpt.label_map.num_classes)
    model.load_state_dict(ckpt.model_state, strict=True)
    meta = dict(ckpt.meta, exported_from=str(source), **(meta_updates or {}))
    save_checkpoint(out, model, ckpt.config, ckpt.label_map, meta, float_dtype=float_dtype)
    return load_checkpoint(out)
