"""Scans without labels for `pvd distill --unlabelled`: where they are found and how they are drawn.

PVD's four terms compare the student with the teacher and need no labels, so a robot's
unlabelled recordings (``pvd_bag export`` turns a bag into this layout) can carry the
distillation while a few labelled scans carry the supervised loss.

Draws are a pure function of (train.seed, draw index): draw ``i`` is scan
``permutation(seed, i // n)[i % n]`` of the ``n`` unlabelled scans, augmented with a generator
seeded by (seed, pass, scan). Step ``s`` of rank ``r`` in a ``w``-process run takes draws
``(s * w + r) * u ... + u - 1`` (``u`` unlabelled scans per batch), so a resumed run, or one with a
different number of data-loader workers, sees exactly the scans an uninterrupted run would
have seen, and ranks never draw the same scan at the same step.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterator, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pvd_core.augment import Augmenter
from pvd_core.config import Config
from pvd_core.data.dataset import read_scan, scan_list, subsample_points
from pvd_core.data.semantickitti import DataError
from pvd_core.labels import label_map_for
from pvd_core.voxelizer import CylindricalVoxelizer, VoxelizedScan

PathLike = Union[str, Path]

# Random streams of the unlabelled draws; distinct from the labelled dataset's (1, 2, 4).
_ORDER_STREAM = 11
_AUGMENT_STREAM = 12
_SUBSAMPLE_STREAM = 14


def _scans_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.bin") if p.is_file())


def source_scan_files(source: PathLike) -> list[Path]:
    """The scan files of one ``--unlabelled`` source, sorted.

    A source is a dataset root (``sequences/*/velodyne/*.bin``, every sequence), a sequence
    folder (``velodyne/*.bin``), a folder of ``*.bin`` scans, or one scan file.
    """
    path = Path(source)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"--unlabelled {source}: no such file or folder")
    if (path / "sequences").is_dir():
        files = [f for seq in sorted((path / "sequences").iterdir()) if (seq / "velodyne").is_dir()
                 for f in _scans_in(seq / "velodyne")]
    elif (path / "velodyne").is_dir():
        files = _scans_in(path / "velodyne")
    else:
        files = _scans_in(path)
    if not files:
        raise DataError(f"--unlabelled {source}: no scans found (looked for sequences/*/velodyne/*.bin, "
                        f"velodyne/*.bin and *.bin; `pvd_bag export` writes this layout from a bag)")
    return files


def unlabelled_scan_files(sources: Sequence[PathLike]) -> list[Path]:
    """Every scan of every source, in source order, each file once."""
    seen: set[Path] = set()
    files: list[Path] = []
    for source in sources:
        for f in source_scan_files(source):
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                files.append(f)
    return files


def unlabelled_per_batch(cfg: Config) -> int:
    """Unlabelled scans in each batch: round(batch_size * distill.unlabelled_ratio), at least 1."""
    return max(1, int(round(cfg.train.batch_size * cfg.distill.unlabelled_ratio)))


class UnlabelledScans(Dataset):
    """Draw index -> augmented, voxelized unlabelled scan (no labels); see the module docstring."""

    def __init__(self, cfg: Config, files: Sequence[Path], augment: bool = True) -> None:
        if not files:
            raise ValueError("UnlabelledScans needs at least one scan file")
        self.files = list(files)
        self.kind = cfg.dataset.kind
        self.seed = int(cfg.train.seed)
        self.max_points = int(cfg.train.max_points)
        self.voxelizer = CylindricalVoxelizer(cfg.grid)
        self.augmenter = Augmenter(cfg.augment) if augment and cfg.augment.enabled else None
        self.label_map = label_map_for(self.kind)

    def __len__(self) -> int:
        return len(self.files)

    @functools.lru_cache(maxsize=4)
    def _order(self, sweep: int) -> np.ndarray:
        return np.random.default_rng([self.seed, sweep, 0, _ORDER_STREAM]).permutation(len(self.files))

    def scan_of_draw(self, draw: int) -> tuple[int, int]:
        """(sweep, file index) of draw ``draw``: each sweep visits every scan once, in a seeded order."""
        if draw < 0:
            raise IndexError(f"unlabelled draw index must be >= 0, got {draw}")
        sweep, pos = divmod(int(draw), len(self.files))
        return sweep, int(self._order(sweep)[pos])

    def __getitem__(self, draw: int) -> VoxelizedScan:
        sweep, index = self.scan_of_draw(draw)
        points, _ = read_scan(self.kind, self.files[index], None, self.label_map)
        if self.max_points:
            points, _ = subsample_points(points, None, self.max_points,
                                         np.random.default_rng([self.seed, sweep, index, _SUBSAMPLE_STREAM]))
        if self.augmenter is not None:
            points = self.augmenter(points, np.random.default_rng([self.seed, sweep, index, _AUGMENT_STREAM]))
        return self.voxelizer(points, None)


class DrawSampler(Sampler[int]):
    """The endless draw indices of one rank from ``start_step`` on (module docstring)."""

    def __init__(self, start_step: int, per_step: int, rank: int = 0, world_size: int = 1) -> None:
        if per_step < 1 or world_size < 1 or not 0 <= rank < world_size or start_step < 0:
            raise ValueError(f"DrawSampler: bad start_step={start_step}, per_step={per_step}, rank={rank}, "
                             f"world_size={world_size}")
        self.start_step, self.per_step, self.rank, self.world_size = start_step, per_step, rank, world_size

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        while True:
            first = (step * self.world_size + self.rank) * self.per_step
            yield from range(first, first + self.per_step)
            step += 1


def unlabelled_batches(dataset: UnlabelledScans, cfg: Config, start_step: int, rank: int = 0,
                       world_size: int = 1) -> Iterator[list[VoxelizedScan]]:
    """The unlabelled scans of every step from ``start_step`` on, one list per step (never ends)."""
    per_step = unlabelled_per_batch(cfg)
    generator = torch.Generator()  # the loader's base-seed draw must not touch the global torch RNG
    generator.manual_seed(int(np.random.SeedSequence([cfg.train.seed, start_step, _ORDER_STREAM])
                              .generate_state(1)[0]))
    loader = DataLoader(dataset, batch_size=per_step, sampler=DrawSampler(start_step, per_step, rank, world_size),
                        num_workers=cfg.train.num_workers, collate_fn=scan_list, generator=generator)
    return iter(loader)
