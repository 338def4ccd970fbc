"""Shared test fixtures: the real samples in ../shared/data (skipped with a reason when absent)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from hang_watchdog import hang_watchdog  # noqa: F401  (autouse: a stuck test is dumped and ends the run)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
REAL_SCAN = SHARED_DATA / "semantickitti" / "sequences" / "08" / "velodyne" / "000000.bin"
REAL_LABEL = SHARED_DATA / "semantickitti" / "sequences" / "08" / "labels" / "000000.label"
NUSC_ROOT = SHARED_DATA / "nuscenes"


@pytest.fixture
def real_scan_path() -> Path:
    if not REAL_SCAN.is_file():
        pytest.skip(f"real SemanticKITTI sample not found at {REAL_SCAN} (../shared/data is absent)")
    return REAL_SCAN


@pytest.fixture
def real_label_path(real_scan_path: Path) -> Path:
    if not REAL_LABEL.is_file():
        pytest.skip(f"real SemanticKITTI labels not found at {REAL_LABEL}")
    return REAL_LABEL


@pytest.fixture
def shared_kitti_root(real_scan_path: Path) -> Path:
    return SHARED_DATA / "semantickitti"


@pytest.fixture
def nuscenes_root() -> Path:
    if not NUSC_ROOT.is_dir():
        pytest.skip(f"real nuScenes fixture not found at {NUSC_ROOT} (../shared/data is absent)")
    return NUSC_ROOT


@pytest.fixture
def private_ros_domain(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """ROS_DOMAIN_ID set to a domain reserved for this test (pvd_ros.dds_settings.private_domain_id)."""
    from pvd_ros.dds_settings import private_domain_id

    with private_domain_id() as domain:
        monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
        yield domain


@pytest.fixture
def single_torch_thread():
    """One intra-op thread for tests of tiny models: they gain nothing from a second one, the
    suite shares two cores, and oversubscribed OpenMP threads spin (test_spconv_compat covers
    the two-thread case)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def save_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random-weight model on a 32 x 32 x 8 grid, init_size 4: a forward takes milliseconds."""
    import torch

    from pvd_core.checkpoint import save_checkpoint
    from pvd_core.config import config_from_dict
    from pvd_core.labels import SEMANTIC_KITTI
    from pvd_core.models.cylinder3d import build_model

    torch.manual_seed(seed)
    cfg = config_from_dict({"grid": {"size": [32, 32, 8]}, "model": {"init_size": 4}})
    save_checkpoint(path, build_model(cfg), cfg, SEMANTIC_KITTI, {"dataset": "test", "step": 0, "metrics": {}})
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny_model") / "tiny.pt")
