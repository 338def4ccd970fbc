"""The one inference path: points in, per-point class and confidence out.

The ROS node, the bag tools, ``pvd predict`` and the benchmarks all call
:meth:`Segmenter.segment`, so what is measured is what is deployed. It sits on the
node's per-scan hot path: weights are loaded once, the model runs under
``torch.inference_mode``, and pre/postprocessing are vectorised over the whole cloud.

Output contract: one label and confidence per input row, in input order. Rows that never
reach the network get label 0 and confidence 0: those that fail the point rule
(:mod:`pvd_core.point_rule`: NaN/Inf coordinates or intensity, the origin (0, 0, 0),
outside [min_range, max_range]) and points outside the volume when
``grid.out_of_volume`` is 'drop'. Any other point gets a
class in 1..C-1 (class 0 "unlabeled" is never predicted); its confidence is the softmax
probability, over all C classes, of that class (the max softmax probability whenever
class 0 is not the most likely).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from pvd_core.augment import FLIP_X, FLIP_XY, FLIP_Y, AugmentParams, transform_points
from pvd_core.config import Config
from pvd_core.data.batch import collate_scans
from pvd_core.device import resolve_device
from pvd_core.errors import UsageError
from pvd_core.labels import LabelMap
from pvd_core.point_rule import PointRule
from pvd_core.voxelizer import CylindricalVoxelizer

# Deterministic test-time augmentation votes, the training augmentations of
# docs/method.md section 5 at fixed values. Vote 0 is the identity.
TTA_VOTES: tuple[AugmentParams, ...] = (
    AugmentParams(),
    AugmentParams(flip=FLIP_Y),
    AugmentParams(flip=FLIP_X),
    AugmentParams(flip=FLIP_XY),
    AugmentParams(angle_deg=22.5),
    AugmentParams(angle_deg=-22.5),
    AugmentParams(scale=0.95),
    AugmentParams(scale=1.05),
)
MAX_TTA = len(TTA_VOTES)


@dataclass
class SegmentationResult:
    labels: np.ndarray  # (N,) uint16 class index, 0 for points that were not segmented
    confidence: np.ndarray  # (N,) float32 in [0, 1], 0 for points that were not segmented
    timings: dict[str, float] = field(default_factory=dict)  # 'preprocess', 'inference', 'postprocess' ms


def augment_points(points: np.ndarray, vote: int) -> np.ndarray:
    """Points under TTA vote ``vote`` (a copy; vote 0 returns the input itself)."""
    return points if vote == 0 else transform_points(points, TTA_VOTES[vote])


_LOG2E = 1.4426950408889634


def top_class(class_major: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, n) logits -> (label in 1..C-1, its softmax probability over all C), per column.

    The same result as ``softmax(z, 0)[1:].max(0)`` (exact, ties to the lower class) in about
    half the time on the CPU, where torch's index-returning reductions over a leading axis
    are 30x slower than ``amax``. With ``best`` the max of classes 1..C-1, the shifted logits
    ``y = z - best`` are exactly +0.0 where ``z == best`` and negative elsewhere, so as int32
    bit patterns OR-ed with a per-class code, every +0.0 entry becomes its code (>= 0) and
    every other entry stays negative: one integer ``amax`` yields the code of the lowest class
    whose logit equals ``best``. The probability reuses ``y``: ``1 / sum_c 2**(y_c * log2 e)``
    (exp2 is about 2x cheaper than exp here). NaN logits (a broken model) give NaN
    confidences and some valid label, never an out-of-range one.
    """
    num_classes = class_major.shape[0]
    if num_classes < 2:
        raise ValueError(f"top_class needs at least 2 classes (class 0 is unlabeled), got {num_classes}")
    z = class_major.float()
    best = z[1:].amax(dim=0)
    shifted = torch.sub(z, best)
    low = (1 << max(1, (num_classes - 2).bit_length())) - 1  # codes low, low-1, ... for classes 1, 2, ...
    codes = torch.arange(low, low - (num_classes - 1), -1, dtype=torch.int32, device=z.device)[:, None]
    key = torch.bitwise_or(shifted[1:].view(torch.int32), codes)
    label = (low + 1 - (key.amax(dim=0) & low)).clamp_(1, num_classes - 1)
    confidence = shifted.mul_(_LOG2E).exp2_().sum(dim=0).reciprocal_()
    return label.long(), confidence


def half_precision(model: nn.Module) -> nn.Module:
    """``model`` in float16 except its batch norms, which keep float32 parameters and statistics
    (torch's batch norm takes float16 input with float32 statistics and returns float16).

    A trained teacher's running variances reach 1e7, past float16's 65504: as inf they would
    turn their channels into constants, silently (a float16 export of such a teacher lost
    0.72 mIoU so before save_checkpoint kept them float32)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    kept = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    model.half()
    for module, state in zip(norms, kept):
        module.float()
        module.load_state_dict(state)
    return model


class Segmenter:
    """A loaded model plus its grid and label map; ``segment`` is the per-scan call.

    Run every torch call of a process on one thread (load, warm-up and ``segment``), as
    segment_node does: torch gives each calling thread its own OpenMP team, and with two
    teams alive libgomp throttles its spin-waits once their threads outnumber the cores,
    which made the per-scan pre/postprocessing about 1.7x slower on a 2-core machine.

    ``fp16=True`` needs a CUDA device: spconv does compute float16 on the CPU (the tests use
    that), but many times slower than float32, so on a CPU device it raises ValueError naming
    ``fp16`` rather than running slowly or silently in fp32.

    ``point_rule`` decides which rows reach the network (default: finite, not the origin,
    at least ``DEFAULT_MIN_RANGE`` away); it lives here so that every caller applies the
    same one.
    """

    def __init__(self, model: nn.Module, config: Config, label_map: LabelMap,
                 device: Union[str, torch.device] = "auto", fp16: bool = False, tta: int = 1,
                 point_rule: PointRule = PointRule()):
        self.device = resolve_device(device)
        if fp16 and self.device.type != "cuda":
            raise UsageError(f"fp16=True needs a CUDA device, but the device is {self.device} "
                             "(set fp16 to false on CPU machines)")
        if not isinstance(tta, int) or not 1 <= tta <= MAX_TTA:
            raise UsageError(f"tta must be an integer from 1 to {MAX_TTA} (number of votes), got {tta!r}")
        num_classes = getattr(model, "num_classes", label_map.num_classes)
        if num_classes != label_map.num_classes:
            raise ValueError(f"model has {num_classes} classes but label map {label_map.name!r} has "
                             f"{label_map.num_classes}")
        self.config = config
        self.label_map = label_map
        self.fp16 = bool(fp16)
        self.tta = tta
        self.point_rule = point_rule
        model = model.to(self.device).eval()
        if self.fp16:
            model = half_precision(model)
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        self.voxelizer = CylindricalVoxelizer(config.grid)
        self.meta: dict = {}

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path], device: Union[str, torch.device] = "auto",
                        fp16: bool = False, tta: int = 1, point_rule: PointRule = PointRule()) -> "Segmenter":
        from pvd_core.checkpoint import build_model_from_checkpoint, load_checkpoint

        from pvd_core.models.fusion import fold_point_mlps

        ckpt = load_checkpoint(path, map_location="cpu")
        # A loaded model never trains again: fold the per-point MLPs' BatchNorms (same outputs).
        model = fold_point_mlps(build_model_from_checkpoint(ckpt, device="cpu"))
        seg = cls(model, ckpt.config, ckpt.label_map, device=device, fp16=fp16, tta=tta, point_rule=point_rule)
        seg.meta = dict(ckpt.meta, checkpoint=str(path))
        return seg

    @property
    def num_classes(self) -> int:
        return self.label_map.num_classes

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @staticmethod
    def _check_points(points: np.ndarray) -> np.ndarray:
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] < 4:
            raise ValueError(f"points must be an (N, >=4) array of x, y, z, intensity, got shape {points.shape}")
        if points.dtype != np.float32:
            points = points.astype(np.float32)
        return points

    def segment(self, points: np.ndarray) -> SegmentationResult:
        """Label every row of an (N, >=4) float32 x, y, z, intensity cloud."""
        return self.segment_batch([points])[0]

    def segment_batch(self, clouds: Sequence[np.ndarray]) -> list[SegmentationResult]:
        """Several clouds (and their TTA votes) in one forward pass; timings are the batch's.

        Rows that fail :attr:`point_rule` are left out before voxelization and get label 0.
        """
        t0 = time.perf_counter()
        clouds = [self._check_points(c) for c in clouds]
        selected = [self.point_rule.select(c) for c in clouds]
        if all(index is None for index in selected):
            return self._segment_valid(clouds, t0)
        results = self._segment_valid([c if index is None else c[index] for c, index in zip(clouds, selected)], t0)
        for cloud, index, result in zip(clouds, selected, results):
            if index is not None:
                labels = np.zeros(len(cloud), dtype=np.uint16)
                confidence = np.zeros(len(cloud), dtype=np.float32)
                labels[index] = result.labels
                confidence[index] = result.confidence
                result.labels, result.confidence = labels, confidence
        return results

    def _segment_valid(self, clouds: list[np.ndarray], t0: float) -> list[SegmentationResult]:
        """``segment_batch`` on clouds that passed the point rule (``t0``: when the call began)."""
        results: list[Optional[SegmentationResult]] = [None] * len(clouds)
        scans, owners = [], []  # one voxelized scan per (cloud, vote) that has points
        for i, pts in enumerate(clouds):
            for vote in range(self.tta):
                scan = self.voxelizer(augment_points(pts, vote))
                if vote == 0 and scan.num_points == 0:
                    break  # nothing to segment in this cloud
                if scan.num_points:
                    scans.append(scan)
                    owners.append((i, vote))
        batch = collate_scans(scans, self.config.grid.size).to(self.device) if scans else None
        self._sync()
        t1 = time.perf_counter()
        if batch is not None:
            with torch.inference_mode():
                logits = self.model(batch).point_logits.float()
            self._sync()
        t2 = time.perf_counter()
        # Class-major (C, n) logits per cloud: the model's inference head yields them without
        # a copy (point_logits is the transpose view), and every reduction below runs along rows.
        per_cloud_logits: dict[int, torch.Tensor] = {}
        start = 0
        with torch.inference_mode():
            for scan, (i, vote) in zip(scans, owners):
                rows = logits[start:start + scan.num_points].t()
                start += scan.num_points
                if self.tta == 1:
                    per_cloud_logits[i] = rows
                    continue
                if vote == 0:
                    per_cloud_logits[i] = torch.zeros((self.num_classes, len(clouds[i])), device=logits.device)
                idx = torch.from_numpy(np.flatnonzero(scan.kept)).to(logits.device)
                per_cloud_logits[i].index_add_(1, idx, rows)
            kept0 = {i: s.kept for s, (i, v) in zip(scans, owners) if v == 0}
            for i, pts in enumerate(clouds):
                labels = np.zeros(len(pts), dtype=np.uint16)
                confidence = np.zeros(len(pts), dtype=np.float32)
                if i in per_cloud_logits:
                    kept = kept0[i]
                    z = per_cloud_logits[i]
                    if self.tta > 1:
                        # Votes summed; the identity vote defines which points are inside.
                        z = z[:, torch.from_numpy(kept).to(z.device)]
                    label, conf = top_class(z)
                    label_np = label.to(torch.int16).cpu().numpy().view(np.uint16)
                    conf_np = conf.cpu().numpy()
                    if kept.all():
                        labels, confidence = label_np, conf_np
                    else:
                        labels[kept] = label_np
                        confidence[kept] = conf_np
                results[i] = SegmentationResult(labels=labels, confidence=confidence)
        t3 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}
        for r in results:
            r.timings = dict(timings)
        return results  # type: ignore[return-value]

    def warmup(self, num_points: int = 20000, seed: int = 0) -> None:
        """One forward on a synthetic cloud inside the volume (allocators, kernels, caches)."""
        grid = self.config.grid
        rng = np.random.default_rng(seed)
        rho = rng.uniform(max(grid.rho[0], 1.0), grid.rho[1], num_points)
        phi = rng.uniform(grid.phi[0], grid.phi[1], num_points)
        z = rng.uniform(grid.z[0], grid.z[1], num_points)
        pts = np.stack([rho * np.cos(phi), rho * np.sin(phi), z, rng.uniform(0, 1, num_points)], 1)
        self.segment(pts.astype(np.float32))
