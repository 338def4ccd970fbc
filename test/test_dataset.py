"""ScanDataset / make_loader reproducibility, and the class statistics of a split."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pvd_core.config import Config, config_from_dict
from pvd_core.data import nuscenes as nu
from pvd_core.data import semantickitti as sk
from pvd_core.data.batch import Batch
from pvd_core.data.dataset import ScanDataset, ScanSampler, make_loader, set_epoch, subset_indices
from pvd_core.data.stats import class_point_counts, load_class_counts, save_class_counts
from pvd_core.labels import NUSCENES, SEMANTIC_KITTI
from pvd_core.voxelizer import CylindricalVoxelizer

SCANS = 5
SCAN_POINTS = 3000


@pytest.fixture
def kitti_root(tmp_path: Path, real_scan_path: Path, real_label_path: Path) -> Path:
    """Sequence 00: five small scans cut from the real one; sequence 08: the real scan."""
    points = sk.read_points(real_scan_path)
    raw = np.fromfile(real_label_path, dtype=np.uint32)
    root = tmp_path / "kitti"
    for sub in ("velodyne", "labels"):
        (root / "sequences" / "00" / sub).mkdir(parents=True)
        (root / "sequences" / "08" / sub).mkdir(parents=True)
    for i in range(SCANS):
        sl = slice(i * 20_000, i * 20_000 + SCAN_POINTS)
        points[sl].tofile(root / "sequences" / "00" / "velodyne" / f"{i:06d}.bin")
        raw[sl].tofile(root / "sequences" / "00" / "labels" / f"{i:06d}.label")
    (root / "sequences" / "08" / "velodyne" / "000000.bin").symlink_to(real_scan_path)
    (root / "sequences" / "08" / "labels" / "000000.label").symlink_to(real_label_path)
    return root


def make_cfg(root: Path, **train) -> Config:
    return config_from_dict({
        "dataset": {"kind": "semantickitti", "data_root": str(root), "train_sequences": ["00"],
                    "val_sequences": ["08"]},
        "grid": {"size": [32, 32, 8]},
        "train": {"batch_size": 2, "seed": 3, **train},
    })


def same_scan(a, b) -> bool:
    return (np.array_equal(a.point_features, b.point_features)
            and np.array_equal(a.voxel_coords, b.voxel_coords)
            and np.array_equal(a.point_labels, b.point_labels))


def test_val_split_is_the_real_scan(kitti_root: Path, real_scan_path: Path, real_label_path: Path) -> None:
    ds = ScanDataset(make_cfg(kitti_root), "val", augment=False)
    assert len(ds) == 1
    scan = ds[0]
    points = sk.read_points(real_scan_path)
    labels = sk.read_labels(real_label_path, num_points=len(points))
    assert scan.num_points == 123_389
    expected = CylindricalVoxelizer(ds.cfg.grid)(points, labels)
    assert same_scan(scan, expected)
    np.testing.assert_array_equal(scan.voxel_labels, expected.voxel_labels)
    with pytest.raises(IndexError):
        ds[1]


def test_augmentation_is_a_function_of_seed_epoch_index(kitti_root: Path) -> None:
    cfg = make_cfg(kitti_root)
    ds = ScanDataset(cfg, "train", augment=True)
    assert len(ds) == SCANS
    first = ds[2]
    assert same_scan(first, ds[2])  # same (seed, epoch, index) -> identical
    assert not same_scan(first, ds[3])
    # A fresh dataset, as after a restart, reproduces the epoch bit for bit.
    restarted = ScanDataset(cfg, "train", augment=True)
    ds.set_epoch(4)
    restarted.set_epoch(4)
    assert same_scan(ds[1], restarted[1])
    assert not same_scan(ds[2], first)  # another epoch, another draw
    ds.set_epoch(0)
    assert same_scan(ds[2], first)
    # Another seed changes the draw; augment=False gives the plain voxelized scan.
    assert not same_scan(ScanDataset(make_cfg(kitti_root, seed=4), "train", augment=True)[2], first)
    plain = ScanDataset(cfg, "train", augment=False)
    points, labels = plain.load(2)
    assert same_scan(plain[2], CylindricalVoxelizer(cfg.grid)(points, labels))
    assert not same_scan(plain[2], first)
    # Labels are never augmented.
    np.testing.assert_array_equal(first.point_labels, plain[2].point_labels)


def batches(loader) -> list[Batch]:
    return list(loader)


def batch_equal(a: Batch, b: Batch) -> bool:
    return all(torch.equal(getattr(a, k), getattr(b, k))
               for k in ("point_features", "point_batch", "point_to_voxel", "voxel_coords",
                         "point_labels", "voxel_labels"))


def test_loader_batches_and_resume(kitti_root: Path) -> None:
    cfg = make_cfg(kitti_root)
    loader = make_loader(ScanDataset(cfg, "train", augment=True), cfg, shuffle=True)
    set_epoch(loader, 1)
    epoch1 = batches(loader)
    assert [b.batch_size for b in epoch1] == [2, 2, 1]
    b0 = epoch1[0]
    assert isinstance(b0, Batch) and b0.spatial_shape == [32, 32, 8]
    assert b0.num_points == 2 * SCAN_POINTS and b0.voxel_coords.shape[1] == 4
    assert b0.point_labels is not None and b0.voxel_labels.shape[0] == b0.num_voxels
    # The same epoch again, and after a "restart" with a new loader: identical batches.
    again = batches(loader)
    restarted = make_loader(ScanDataset(cfg, "train", augment=True), cfg, shuffle=True)
    set_epoch(restarted, 1)
    for x, y, z in zip(epoch1, again, batches(restarted)):
        assert batch_equal(x, y) and batch_equal(x, z)
    # Resuming mid-epoch yields exactly the remaining batches.
    set_epoch(restarted, 1, start_batch=1)
    tail = batches(restarted)
    assert len(tail) == 2 and all(batch_equal(x, y) for x, y in zip(tail, epoch1[1:]))
    # Another epoch shuffles differently (order and augmentation).
    set_epoch(loader, 2)
    assert not batch_equal(batches(loader)[0], epoch1[0])


def test_scan_sampler_orders() -> None:
    s = ScanSampler(10, seed=1, shuffle=True)
    orders = []
    for epoch in range(3):
        s.set_epoch(epoch)
        orders.append(list(s))
        assert sorted(orders[-1]) == list(range(10))
    assert orders[0] != orders[1] != orders[2]
    s.set_epoch(1)
    assert list(s) == orders[1]
    s.set_epoch(1, start=4)
    assert list(s) == orders[1][4:] and len(s) == 6
    assert list(ScanSampler(4, seed=1, shuffle=False)) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="train.seed"):
        ScanSampler(4, seed=-1, shuffle=True)


def test_loader_with_a_worker_matches_in_process(kitti_root: Path) -> None:
    cfg = make_cfg(kitti_root)
    main = make_loader(ScanDataset(cfg, "train", augment=True), cfg, shuffle=True)
    cfg_w = make_cfg(kitti_root, num_workers=1)
    worker = make_loader(ScanDataset(cfg_w, "train", augment=True), cfg_w, shuffle=True)
    set_epoch(main, 3)
    set_epoch(worker, 3)
    for x, y in zip(batches(main), batches(worker), strict=True):
        assert batch_equal(x, y)


def test_dataset_pickles_for_spawned_workers(kitti_root: Path) -> None:
    # DataLoader workers under spawn/forkserver receive the dataset pickled.
    ds = ScanDataset(make_cfg(kitti_root), "train", augment=True)
    ds.set_epoch(2)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.epoch == 2 and same_scan(clone[1], ds[1])


def test_max_scans_subset(kitti_root: Path) -> None:
    cfg = make_cfg(kitti_root)
    ds = ScanDataset(cfg, "train", augment=False, max_scans=3)
    names = [p.name for p, _ in ds.files]
    assert names == ["000000.bin", "000002.bin", "000004.bin"]  # spread over the split
    assert len(ScanDataset(cfg, "train", augment=False, max_scans=50)) == SCANS
    np.testing.assert_array_equal(subset_indices(10, 0), np.arange(10))
    np.testing.assert_array_equal(subset_indices(10, 1), [0])
    with pytest.raises(ValueError, match="max_scans"):
        subset_indices(10, -1)


def test_bad_split_and_missing_data(kitti_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'test'"):
        ScanDataset(make_cfg(kitti_root), "test", augment=False)
    with pytest.raises(sk.DataError, match="sequence folder not found"):
        ScanDataset(make_cfg(tmp_path / "nowhere"), "train", augment=False)


def test_label_count_mismatch_names_both_files(kitti_root: Path) -> None:
    label = kitti_root / "sequences" / "00" / "labels" / "000001.label"
    label.write_bytes(label.read_bytes()[:400])
    ds = ScanDataset(make_cfg(kitti_root), "train", augment=False)
    with pytest.raises(sk.DataError) as err:
        ds[1]
    msg = str(err.value)
    assert str(label) in msg and "000001.bin" in msg and "100 labels" in msg and str(SCAN_POINTS) in msg


def test_nuscenes_dataset_from_list(tmp_path: Path, nuscenes_root: Path) -> None:
    (points_path,) = sorted((nuscenes_root / "samples" / "LIDAR_TOP").glob("*.pcd.bin"))
    (labels_path,) = sorted((nuscenes_root / "lidarseg" / "v1.0-trainval").glob("*_lidarseg.bin"))
    listing = tmp_path / "val.txt"
    listing.write_text(f"{points_path.relative_to(nuscenes_root)} {labels_path.relative_to(nuscenes_root)}\n")
    cfg = config_from_dict({
        "dataset": {"kind": "nuscenes", "data_root": str(nuscenes_root),
                    "train_sequences": [str(listing)], "val_sequences": [str(listing)]},
        "grid": {"size": [32, 32, 8], "z": [-5.0, 3.0]},
        "augment": {"rotation_deg": 180.0},
    })
    ds = ScanDataset(cfg, "val", augment=False)
    assert ds.label_map is NUSCENES and len(ds) == 1
    scan = ds[0]
    assert scan.num_points == 40
    np.testing.assert_array_equal(np.sort(scan.point_labels),
                                  np.sort(nu.read_labels(labels_path).astype(np.int64)))
    assert scan.point_features[:, 8].max() <= 1.0  # intensity scaled to [0, 1]
    train = ScanDataset(cfg, "train", augment=True)
    assert not np.array_equal(train[0].point_features, scan.point_features)


def test_class_point_counts(kitti_root: Path, real_label_path: Path, nuscenes_root: Path,
                            tmp_path: Path) -> None:
    cfg = make_cfg(kitti_root)
    files = ScanDataset(cfg, "train", augment=False).files
    counts = class_point_counts(files, SEMANTIC_KITTI, progress=False)
    assert counts.dtype == np.int64 and counts.shape == (20,)
    assert counts.sum() == SCANS * SCAN_POINTS
    expected = sum(np.bincount(sk.read_labels(lab), minlength=20) for _, lab in files)
    np.testing.assert_array_equal(counts, expected)
    real = class_point_counts([real_label_path], SEMANTIC_KITTI, progress=False)
    assert real.sum() == 123_389 and real[9] == 20_975  # raw 40 (road) -> class 9
    (labels_path,) = sorted((nuscenes_root / "lidarseg" / "v1.0-trainval").glob("*_lidarseg.bin"))
    nus = class_point_counts([labels_path], NUSCENES, progress=False)
    assert nus.shape == (17,) and nus.sum() == 40 and nus[11] == 15  # raw 24 -> driveable_surface
    path = tmp_path / "stats" / "class_counts.json"
    save_class_counts(path, counts, SEMANTIC_KITTI)
    np.testing.assert_array_equal(load_class_counts(path, SEMANTIC_KITTI), counts)
    with pytest.raises(sk.DataError, match="class names"):
        load_class_counts(path, NUSCENES)
    with pytest.raises(sk.DataError, match="no label file"):
        class_point_counts([(Path("a.bin"), None)], SEMANTIC_KITTI, progress=False)


def test_single_scan_batch_equals_the_first_scan_of_a_general_batch(kitti_root: Path) -> None:
    """collate_scans' copy-free one-scan path must build the batch the concatenating path does."""
    from pvd_core.data.batch import collate_scans

    cfg = make_cfg(kitti_root)
    dataset = ScanDataset(cfg, "train", augment=False)
    first, second = dataset[0], dataset[1]
    alone = collate_scans([first], cfg.grid.size)
    pair = collate_scans([first, second], cfg.grid.size)
    n, v = first.num_points, first.num_voxels
    assert alone.batch_size == 1 and alone.spatial_shape == pair.spatial_shape
    torch.testing.assert_close(alone.point_features, pair.point_features[:n], rtol=0, atol=0)
    torch.testing.assert_close(alone.point_batch, pair.point_batch[:n])
    torch.testing.assert_close(alone.point_to_voxel, pair.point_to_voxel[:n])
    torch.testing.assert_close(alone.voxel_coords, pair.voxel_coords[:v])
    torch.testing.assert_close(alone.point_labels, pair.point_labels[:n])
    torch.testing.assert_close(alone.voxel_labels, pair.voxel_labels[:v])
    assert alone.point_to_voxel.dtype == torch.int64 and alone.voxel_coords.dtype == torch.int32


def test_training_point_budget_subsamples_reproducibly(kitti_root: Path) -> None:
    cfg = make_cfg(kitti_root, max_points=1000)
    ds = ScanDataset(cfg, "train", augment=False, max_points=cfg.train.max_points)
    full = ScanDataset(cfg, "train", augment=False)
    scan, whole = ds[1], full[1]
    assert scan.num_points == 1000 and whole.num_points == SCAN_POINTS
    # A subset of the scan's own points and labels (in scan order), the same draw on a re-read...
    whole_rows = {tuple(r) for r in np.round(whole.point_features, 5).tolist()}
    assert all(tuple(r) in whole_rows for r in np.round(scan.point_features, 5).tolist())
    assert same_scan(scan, ds[1])
    # ...and another draw in the next epoch.
    ds.set_epoch(1)
    assert not np.array_equal(ds[1].point_features, scan.point_features)
    # Validation is never subsampled: it scores every point.
    assert ScanDataset(cfg, "val", augment=False).__getitem__(0).num_points == 123_389
    with pytest.raises(Exception, match="max_points"):
        make_cfg(kitti_root, max_points=-1)
