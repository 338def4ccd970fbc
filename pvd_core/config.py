"""The one configuration schema of pvd_ros.

Every number of docs/method.md is a field here, so that a YAML file in ``config/`` fully
describes a model, its data and how it is trained. Loading is strict: an unknown key,
a wrong type or an out-of-range value is a :class:`ConfigError` that names the file
and the dotted field, because a silently ignored typo in a training config costs a
GPU-day.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from pvd_core.errors import PvdError
from pvd_core.device import check_device


class ConfigError(PvdError, ValueError):
    """A configuration value is missing, unknown or invalid; the message names it."""


@dataclass
class DatasetConfig:
    """Where scans come from and how raw labels map to training classes."""

    kind: str = "semantickitti"  # semantickitti | nuscenes (selects the label map)
    data_root: str = "data/synthetic"
    train_sequences: list[str] = field(
        default_factory=lambda: ["00", "01", "02", "03", "04", "05", "06", "07", "09", "10"])
    val_sequences: list[str] = field(default_factory=lambda: ["08"])
    # Scans without labels for `pvd distill` (``--unlabelled``): dataset roots holding
    # sequences/*/velodyne, sequence folders holding velodyne/, folders of scans or single scan
    # files, read with the dataset kind's point reader; any labels next to them are ignored.
    # They contribute the PVD terms only (pvd_core/data/unlabelled.py).
    unlabelled: list[str] = field(default_factory=list)

    def validate(self, where: str) -> None:
        if self.kind not in ("semantickitti", "nuscenes"):
            raise ConfigError(f"{where}.kind must be 'semantickitti' or 'nuscenes', got {self.kind!r}")
        if any(not str(s).strip() for s in self.unlabelled):
            raise ConfigError(f"{where}.unlabelled holds an empty path: {self.unlabelled}")


@dataclass
class GridConfig:
    """The cylindrical partition of docs/method.md section 1."""

    size: list[int] = field(default_factory=lambda: [480, 360, 32])  # (rho, phi, z) cells
    rho: list[float] = field(default_factory=lambda: [0.0, 50.0])
    phi: list[float] = field(default_factory=lambda: [-math.pi, math.pi])
    z: list[float] = field(default_factory=lambda: [-4.0, 2.0])
    # 'clip': points outside the volume go to the border voxels (upstream behaviour);
    # 'drop': they are left out of the network input (and labelled 0 at inference).
    out_of_volume: str = "clip"

    def validate(self, where: str) -> None:
        if len(self.size) != 3 or any(s < 2 for s in self.size):
            raise ConfigError(f"{where}.size must be three integers >= 2, got {self.size}")
        # No divisibility rule: the encoder's stride-2 sparse convs (padding 1) round odd sizes
        # up (360 phi cells -> 180 -> 90 -> 45 -> 23) and the inverse convs reuse the encoder
        # rulebooks, so upstream's 480 x 360 x 32 grid works as published.
        for name in ("rho", "phi", "z"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not lo_hi[0] < lo_hi[1]:
                raise ConfigError(f"{where}.{name} must be [min, max] with min < max, got {lo_hi}")
        if self.rho[0] < 0:
            raise ConfigError(f"{where}.rho min must be >= 0, got {self.rho[0]}")
        if self.out_of_volume not in ("clip", "drop"):
            raise ConfigError(f"{where}.out_of_volume must be 'clip' or 'drop', got {self.out_of_volume!r}")

    @property
    def min_bound(self) -> list[float]:
        return [self.rho[0], self.phi[0], self.z[0]]

    @property
    def max_bound(self) -> list[float]:
        return [self.rho[1], self.phi[1], self.z[1]]


@dataclass
class ModelConfig:
    """Cylinder3D with a point head (docs/method.md section 2); width is ``init_size``."""

    init_size: int = 16
    num_input_features: int = 16  # width after the point feature generator's max-pool
    # Hidden widths of the per-point generator MLP (upstream: 64, 128, 256, then a 256 output).
    # They do not follow init_size; a student halves them explicitly (cylinder3d_student.yaml)
    # so that its per-point cost shrinks like its sparse convs.
    point_generator_dims: list[int] = field(default_factory=lambda: [64, 128, 256, 256])
    point_head_dims: list[int] = field(default_factory=lambda: [256, 128, 64])

    def validate(self, where: str) -> None:
        if self.init_size < 1:
            raise ConfigError(f"{where}.init_size must be a positive integer, got {self.init_size}")
        if self.num_input_features < 1:
            raise ConfigError(f"{where}.num_input_features must be positive, got {self.num_input_features}")
        if not self.point_generator_dims or any(d < 1 for d in self.point_generator_dims):
            raise ConfigError(
                f"{where}.point_generator_dims must be positive integers, got {self.point_generator_dims}")
        if not self.point_head_dims or any(d < 1 for d in self.point_head_dims):
            raise ConfigError(f"{where}.point_head_dims must be positive integers, got {self.point_head_dims}")


@dataclass
class AugmentConfig:
    """Training augmentation of docs/method.md section 5."""

    enabled: bool = True
    flip: bool = True
    rotation_deg: float = 45.0  # uniform in [-r, r]; 180 for nuScenes
    scale: list[float] = field(default_factory=lambda: [0.95, 1.05])
    translate_std: float = 0.1

    def validate(self, where: str) -> None:
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigError(f"{where}.scale must be [lo, hi] with 0 < lo <= hi, got {self.scale}")
        if self.translate_std < 0 or self.rotation_deg < 0:
            raise ConfigError(f"{where}: rotation_deg and translate_std must be >= 0")


@dataclass
class TrainConfig:
    """Optimisation schedule; ``max_steps`` bounds a run, epochs are derived."""

    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_steps: int = 1000
    lr_schedule: str = "cosine"  # cosine | constant
    warmup_steps: int = 0
    seed: int = 0
    num_workers: int = 0
    log_every: int = 10
    val_every: int = 200
    checkpoint_every: int = 100
    max_val_scans: int = 0  # 0 = the whole validation split
    lovasz_weight: float = 1.0
    point_loss_weight: float = 1.0
    device: str = "auto"  # auto | cpu | cuda | cuda:N (pvd_core.device.check_device)
    sync_batchnorm: bool = False
    # Training-time point budget: 0 keeps every point; N > 0 trains on a random subset of at most
    # N points per scan (drawn per scan and epoch from the seed). The per-point MLPs cost the
    # same per point whatever the grid, so on the CPU this sets the step time of a 120 k-point
    # HDL-64 scan. Validation and evaluation always score every point.
    max_points: int = 0
    # Exponential moving average of the weights (pvd_core/training/ema.py): 0 = off; d in (0, 1)
    # keeps an average updated after every step and writes it as RUN_DIR/ema.pt next to last.pt
    # (resumable: the average is part of last.pt's train_state). Scores a run without the noise
    # of where its last step landed.
    ema_decay: float = 0.0

    def validate(self, where: str) -> None:
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"{where}.ema_decay must be 0 (off) or lie in (0, 1), got {self.ema_decay}")
        for name in ("batch_size", "max_steps", "log_every", "val_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_points < 0:
            raise ConfigError(f"{where}.max_points must be 0 (every point) or a positive point count, "
                              f"got {self.max_points}")
        if self.lr <= 0:
            raise ConfigError(f"{where}.lr must be > 0, got {self.lr}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError(f"{where}.lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        try:
            check_device(self.device)  # syntax only: a config written for a GPU machine loads anywhere
        except ValueError as exc:
            raise ConfigError(f"{where}.device {exc}") from None


KL_WEIGHTINGS = ("uniform", "confidence", "supervoxel")
AFFINITY_SOURCES = ("features", "probabilities")


@dataclass
class DistillConfig:
    """PVD (docs/method.md section 4). Absent or ``enabled: false`` means plain supervised training."""

    enabled: bool = False
    alpha_p: float = 1.0  # pointwise output KL
    alpha_v: float = 1.0  # voxelwise output KL
    beta_p: float = 1.0  # inter-point affinity
    beta_v: float = 1.0  # inter-voxel affinity
    temperature: float = 1.0
    # Output-KL row weights: uniform (the paper) | confidence (teacher top-1 >= kl_min_confidence)
    # | supervoxel (the affinity sampler's weight of the row's supervoxel); docs/method.md 4.1.
    kl_weighting: str = "uniform"
    kl_min_confidence: float = 0.8
    # What the affinity terms compare: features (the paper: point-head penultimate activations and
    # last decoder features) | probabilities (softmax(logits / T)); docs/method.md 4.5.
    affinity_source: str = "features"
    supervoxel: list[int] = field(default_factory=lambda: [120, 60, 8])  # voxels per supervoxel
    num_supervoxels: int = 6  # K
    points_per_supervoxel: int = 64  # N_p
    voxels_per_supervoxel: int = 64  # N_v
    sampler: str = "difficulty"  # difficulty | random | class | distance
    gamma: float = 1.0
    min_points: int = 5
    # With dataset.unlabelled: unlabelled scans per labelled scan in every batch. A batch holds
    # train.batch_size labelled scans plus round(batch_size * ratio) (at least 1) unlabelled ones,
    # so the labelled signal per step is the same as without unlabelled data.
    unlabelled_ratio: float = 1.0

    def validate(self, where: str) -> None:
        if not 0 < self.unlabelled_ratio <= 16:
            raise ConfigError(f"{where}.unlabelled_ratio must lie in (0, 16] (unlabelled scans per labelled scan "
                              f"in a batch), got {self.unlabelled_ratio}")
        if self.temperature <= 0:
            raise ConfigError(f"{where}.temperature must be > 0, got {self.temperature}")
        for name in ("alpha_p", "alpha_v", "beta_p", "beta_v", "gamma"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name} must be >= 0, got {getattr(self, name)}")
        if len(self.supervoxel) != 3 or any(s < 1 for s in self.supervoxel):
            raise ConfigError(f"{where}.supervoxel must be three positive integers, got {self.supervoxel}")
        for name in ("num_supervoxels", "points_per_supervoxel", "voxels_per_supervoxel", "min_points"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name} must be >= 1, got {getattr(self, name)}")
        if self.kl_weighting not in KL_WEIGHTINGS:
            raise ConfigError(f"{where}.kl_weighting must be one of {', '.join(KL_WEIGHTINGS)}, "
                              f"got {self.kl_weighting!r}")
        if self.affinity_source not in AFFINITY_SOURCES:
            raise ConfigError(f"{where}.affinity_source must be one of {', '.join(AFFINITY_SOURCES)}, "
                              f"got {self.affinity_source!r}")
        if not 0.0 <= self.kl_min_confidence < 1.0:
            raise ConfigError(f"{where}.kl_min_confidence must lie in [0, 1) (the teacher's top-1 probability), "
                              f"got {self.kl_min_confidence}")
        if self.sampler not in ("difficulty", "random", "class", "distance"):
            raise ConfigError(
                f"{where}.sampler must be difficulty, random, class or distance, got {self.sampler!r}")


@dataclass
class Config:
    """A whole run: data, grid, model, augmentation, training and distillation."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def validate(self, where: str = "config") -> "Config":
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate(f"{where}: {f.name}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_value(value: Any, hint: Any, where: str) -> Any:
    """Coerce ``value`` to the annotated type or raise a ConfigError naming ``where``."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _check_value(value, args[0], where)
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_check_value(v, item_hint, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # sequence names like 08 written without quotes
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {hint}")


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where.removesuffix(': ')} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names, key=str)
    if unknown:
        root, _, path = where.partition(": ")
        dotted = ", ".join(f"{path}.{k}" if path else str(k) for k in unknown)
        raise ConfigError(f"{root}: unknown key(s) {dotted}; known keys{' of ' + path if path else ''} "
                          f"are {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, _join(where, name))
        else:
            kwargs[name] = _check_value(value, hint, _join(where, name))
    return cls(**kwargs)


def _join(where: str, name: Any) -> str:
    """Dotted field path; the root ``where`` (a file name or 'config') is set off by ': '."""
    return f"{where}{name}" if where.endswith(": ") else f"{where}.{name}"


def config_from_dict(data: dict[str, Any], where: str = "config") -> Config:
    """Build and validate a Config from a plain mapping (a YAML document or a checkpoint)."""
    cfg = _build(Config, data, f"{where}: ")
    if cfg.dataset.kind == "semantickitti":
        # YAML turns 08 into the integer 8: restore the two-digit sequence names.
        cfg.dataset.train_sequences = [s.zfill(2) for s in cfg.dataset.train_sequences]
        cfg.dataset.val_sequences = [s.zfill(2) for s in cfg.dataset.val_sequences]
    return cfg.validate(where)


def load_config(path: Union[str, Path], data_root: Optional[str] = None) -> Config:
    """Read a YAML config; ``data_root`` overrides ``dataset.data_root`` (the --data-root flag)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the document must be a mapping of sections, got {type(data).__name__}")
    if data_root is not None:
        data.setdefault("dataset", {})
        data["dataset"] = dict(data["dataset"] or {}, data_root=str(data_root))
    return config_from_dict(data, where=str(path))
