"""The torch Dataset of voxelized scans and its DataLoader, reproducible across restarts.

Every random draw derives from (train.seed, epoch, scan index) through
``np.random.default_rng``, never from global or worker RNG state, so an interrupted
training run that resumes at epoch e (and skips the batches it already did, see
:func:`set_epoch`) sees bit-identical batches whatever the number of workers.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler

from pvd_core.augment import Augmenter
from pvd_core.config import Config
from pvd_core.data import nuscenes, semantickitti
from pvd_core.data.batch import collate_scans
from pvd_core.errors import UsageError
from pvd_core.labels import LabelMap, label_map_for
from pvd_core.voxelizer import CylindricalVoxelizer, VoxelizedScan

ScanFiles = list[tuple[Path, Optional[Path]]]

# Separate random streams drawn from the same (seed, epoch): per-scan augmentation and order.
_AUGMENT_STREAM = 1
_SHUFFLE_STREAM = 2
_SUBSAMPLE_STREAM = 4


def split_entries(cfg: Config, split: str) -> list[str]:
    if split == "train":
        return list(cfg.dataset.train_sequences)
    if split == "val":
        return list(cfg.dataset.val_sequences)
    raise ValueError(f"split must be 'train' or 'val', got {split!r}")


def split_files(cfg: Config, split: str) -> ScanFiles:
    """(points, labels) pairs of a split: SemanticKITTI sequences or nuScenes pair sources."""
    entries = split_entries(cfg, split)
    if cfg.dataset.kind == "semantickitti":
        return semantickitti.scan_files(cfg.dataset.data_root, entries)
    if cfg.dataset.kind == "nuscenes":
        return list(nuscenes.scan_pairs(cfg.dataset.data_root, entries))
    raise ValueError(f"dataset.kind must be 'semantickitti' or 'nuscenes', got {cfg.dataset.kind!r}")


def read_scan(kind: str, points_path: Path, labels_path: Optional[Path], label_map: LabelMap
              ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """(N, 4) float32 points and (N,) uint8 training labels (None without a label file)."""
    reader = semantickitti if kind == "semantickitti" else nuscenes
    points = reader.read_points(points_path)
    labels = None
    if labels_path is not None:
        try:
            labels = reader.read_labels(labels_path, num_points=len(points), label_map=label_map)
        except semantickitti.DataError as exc:
            raise semantickitti.DataError(f"{exc} (points file {points_path})") from exc
    return points, labels


def _check_seed(seed: int) -> int:
    if seed < 0:
        raise ValueError(f"train.seed must be >= 0 (it seeds np.random.default_rng), got {seed}")
    return seed


def subset_indices(total: int, max_scans: int) -> np.ndarray:
    """``max_scans`` indices spread evenly over ``total`` (all of them when max_scans is 0)."""
    if max_scans < 0:
        raise UsageError(f"max_scans must be >= 0, got {max_scans}")
    if max_scans == 0 or max_scans >= total:
        return np.arange(total)
    # Evenly spaced rather than the first scans: consecutive frames of one sequence are
    # near-duplicates and would make a validation subset unrepresentative.
    return np.unique(np.linspace(0, total - 1, max_scans).round().astype(np.int64))


def subsample_points(points: np.ndarray, labels: Optional[np.ndarray], max_points: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """A uniform random subset of ``max_points`` points (and their labels), in scan order.

    Uniform rather than cropped: every region and range keeps its share of points, so the
    voxels a subsampled scan occupies are nearly those of the full scan, only sparser inside.
    """
    if len(points) <= max_points:
        return points, labels
    keep = np.sort(rng.choice(len(points), size=max_points, replace=False))
    return points[keep], (None if labels is None else labels[keep])


class ScanDataset(Dataset):
    """Scans of one split as VoxelizedScan (labelled), optionally augmented.

    ``max_scans`` > 0 keeps that many scans spread evenly over the split (validation subsets).
    ``max_points`` > 0 keeps a random subset of at most that many points of each scan (training
    only: a subsampled validation scan would not be scored on every point).
    """

    def __init__(self, cfg: Config, split: str, augment: bool, max_scans: int = 0, max_points: int = 0):
        if max_points < 0:
            raise ValueError(f"max_points must be >= 0, got {max_points}")
        self.max_points = int(max_points)
        self.cfg = cfg
        self.split = split
        self.kind = cfg.dataset.kind
        self.label_map = label_map_for(self.kind)
        all_files = split_files(cfg, split)
        self.files: ScanFiles = [all_files[i] for i in subset_indices(len(all_files), max_scans)]
        self.voxelizer = CylindricalVoxelizer(cfg.grid)
        self.augmenter: Optional[Augmenter] = (
            Augmenter(cfg.augment) if augment and cfg.augment.enabled else None)
        self.seed = _check_seed(cfg.train.seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (call before iterating a loader)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.files)

    def rng_for(self, index: int, stream: int = _AUGMENT_STREAM) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index), stream])

    def load(self, index: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Raw (not augmented) points and training labels of scan ``index``."""
        points_path, labels_path = self.files[index]
        return read_scan(self.kind, points_path, labels_path, self.label_map)

    def __getitem__(self, index: int) -> VoxelizedScan:
        if not 0 <= index < len(self.files):
            raise IndexError(f"scan index {index} out of range for {len(self.files)} scans")
        points, labels = self.load(index)
        if self.max_points and len(points) > self.max_points:
            points, labels = subsample_points(points, labels, self.max_points, self.rng_for(index, _SUBSAMPLE_STREAM))
        if self.augmenter is not None:
            points = self.augmenter(points, self.rng_for(index))
        return self.voxelizer(points, labels)


class ScanSampler(Sampler[int]):
    """Scan order of one epoch: a permutation drawn from (seed, epoch), or 0..n-1.

    ``start`` skips the first indices of the epoch so that a resumed run continues with
    exactly the scans it had not seen yet.
    """

    def __init__(self, num_scans: int, seed: int, shuffle: bool):
        self.num_scans = int(num_scans)
        self.seed = _check_seed(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = int(epoch)
        self.start = int(start)

    def order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_scans)
        return np.random.default_rng([self.seed, self.epoch, 0, _SHUFFLE_STREAM]).permutation(self.num_scans)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.start:].tolist())

    def __len__(self) -> int:
        return max(0, self.num_scans - self.start)


def scan_list(scans: list[VoxelizedScan]) -> list[VoxelizedScan]:
    """The identity collate: a batch as the list of its scans (picklable for loader workers)."""
    return scans


def make_loader(dataset: ScanDataset, cfg: Config, shuffle: bool,
                sampler: Optional[Sampler] = None, collate: bool = True) -> DataLoader:
    """Batches of ``cfg.train.batch_size`` scans as :class:`pvd_core.data.batch.Batch`
    (``collate=False``: as lists of VoxelizedScan, for a caller that adds scans before collating).

    Without ``sampler`` a :class:`ScanSampler` seeded by ``cfg.train.seed`` orders the
    scans; pass a DistributedSampler for multi-GPU runs. Workers are not persistent, so
    each epoch's workers see the epoch set by :func:`set_epoch`.
    """
    if sampler is None:
        sampler = ScanSampler(len(dataset), cfg.train.seed, shuffle)
    return DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        sampler=sampler,
        num_workers=cfg.train.num_workers,
        collate_fn=functools.partial(collate_scans, spatial_shape=tuple(cfg.grid.size)) if collate else scan_list,
        persistent_workers=False,
        drop_last=False,
    )


def set_epoch(loader: DataLoader, epoch: int, start_batch: int = 0) -> None:
    """Point a loader's dataset and sampler at ``epoch``; skip ``start_batch`` batches when resuming.

    Skipping works with :class:`ScanSampler` only (a DistributedSampler cannot skip: the
    caller must then drop batches itself).
    """
    dataset = loader.dataset
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    sampler = loader.sampler
    if isinstance(sampler, ScanSampler):
        sampler.set_epoch(epoch, start=start_batch * (loader.batch_size or 1))
    elif hasattr(sampler, "set_epoch"):
        if start_batch:
            raise ValueError(f"start_batch={start_batch}: {type(sampler).__name__} cannot skip batches")
        sampler.set_epoch(epoch)

