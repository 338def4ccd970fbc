"""Shared test fixtures: the real samples in ../shared/data (skipped with a reason when absent)."""
from __future__ import annotations

from pathlib import Path

import pytest

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
