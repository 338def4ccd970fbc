"""The config schema: every shipped YAML loads, and every kind of mistake names its field."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pvd_core.config import Config, ConfigError, config_from_dict, load_config

REPO = Path(__file__).resolve().parents[1]
ALL_YAML = sorted((REPO / "config").glob("*.yaml"))


def is_ros_params(path: Path) -> bool:
    """ROS 2 node parameter files (``<node>: ros__parameters: ...``) share config/ but are not Configs."""
    data = yaml.safe_load(path.read_text())
    return isinstance(data, dict) and bool(data) and all(
        isinstance(v, dict) and "ros__parameters" in v for v in data.values())


CONFIGS = [p for p in ALL_YAML if not is_ros_params(p)]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    # A round trip through the plain dict (what checkpoints store) gives the same config.
    assert config_from_dict(cfg.to_dict()) == cfg


def test_shipped_configs_exist() -> None:
    if not CONFIGS:
        pytest.skip(f"no pvd config/*.yaml in {REPO / 'config'} yet (other parts add them)")
    # The paper's teacher and student differ only in width (docs/method.md section 2), on the full 480 x 360 x 32 grid.
    for name, width in (("cylinder3d_teacher.yaml", 32), ("cylinder3d_student.yaml", 16)):
        path = REPO / "config" / name
        if path in CONFIGS:
            cfg = load_config(path)
            assert cfg.model.init_size == width
            assert cfg.grid.size == [480, 360, 32]


def test_defaults_are_valid_and_match_method() -> None:
    cfg = config_from_dict({})
    # docs/method.md section 1: 480 x 360 x 32 over rho [0, 50], z [-4, 2]; the default must validate.
    assert cfg.grid.size == [480, 360, 32]
    assert cfg.grid.rho == [0.0, 50.0] and cfg.grid.z == [-4.0, 2.0]
    assert cfg.grid.out_of_volume == "clip"
    assert cfg.dataset.val_sequences == ["08"]


@pytest.mark.parametrize("text, field", [
    ("model:\n  init_sise: 16\n", "model.init_sise"),
    ("grid:\n  size: [32, 32, 8]\n  colour: 3\n", "grid.colour"),
    ("trian:\n  lr: 0.1\n", "trian"),
])
def test_unknown_key_names_dotted_field(tmp_path: Path, text: str, field: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert field in str(err.value)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("data, field", [
    ({"model": {"init_size": "sixteen"}}, "model.init_size"),
    ({"model": {"init_size": 16.5}}, "model.init_size"),
    ({"train": {"lr": "fast"}}, "train.lr"),
    ({"augment": {"flip": "yes"}}, "augment.flip"),
    ({"grid": {"size": 32}}, "grid.size"),
    ({"grid": {"rho": [0, "far"]}}, "grid.rho[1]"),
    ({"model": 3}, "model"),
])
def test_wrong_type_names_dotted_field(data: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert field in str(err.value)


@pytest.mark.parametrize("size", [[32, 32], [32, 32, 8, 8], [32, 1, 8], [0, 32, 8]])
def test_bad_grid_size(size: list) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"grid": {"size": size}})
    assert "grid.size" in str(err.value)


def test_odd_grid_sizes_are_allowed() -> None:
    # Upstream's 360 phi cells are not a power-of-two multiple; strided sparse convs cope.
    assert config_from_dict({"grid": {"size": [480, 360, 32]}}).grid.size == [480, 360, 32]
    assert config_from_dict({"grid": {"size": [30, 45, 7]}}).grid.size == [30, 45, 7]


@pytest.mark.parametrize("data, field", [
    ({"grid": {"rho": [50, 0]}}, "grid.rho"),
    ({"grid": {"rho": [-1, 50]}}, "grid.rho"),
    ({"train": {"batch_size": 0}}, "train.batch_size"),
    ({"train": {"lr": 0}}, "train.lr"),
    ({"augment": {"scale": [1.1, 0.9]}}, "augment.scale"),
    ({"distill": {"temperature": 0}}, "distill.temperature"),
    ({"distill": {"supervoxel": [1, 2]}}, "distill.supervoxel"),
    ({"distill": {"kl_min_confidence": 1.0}}, "distill.kl_min_confidence"),
])
def test_out_of_range_names_field(data: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert field in str(err.value)


@pytest.mark.parametrize("data, field, value", [
    ({"dataset": {"kind": "kitti"}}, "dataset.kind", "kitti"),
    ({"grid": {"out_of_volume": "wrap"}}, "grid.out_of_volume", "wrap"),
    ({"train": {"lr_schedule": "step"}}, "train.lr_schedule", "step"),
    ({"train": {"device": "tpu"}}, "train.device", "tpu"),
    ({"distill": {"sampler": "greedy"}}, "distill.sampler", "greedy"),
    ({"distill": {"kl_weighting": "entropy"}}, "distill.kl_weighting", "entropy"),
    ({"distill": {"affinity_source": "logits"}}, "distill.affinity_source", "logits"),
])
def test_bad_enum_names_field_and_value(data: dict, field: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert field in str(err.value)
    assert value in str(err.value)


def test_unquoted_sequence_numbers_come_back_two_digit(tmp_path: Path) -> None:
    text = "dataset:\n  train_sequences: [00, 01, 07, 09, 10, 8]\n  val_sequences: [08]\n"
    # YAML 1.1 reads 00/01/07 as octal integers, 10 and 8 as integers and 08/09 as strings.
    assert yaml.safe_load(text)["dataset"]["train_sequences"] == [0, 1, 7, "09", 10, 8]
    cfg = load_config(write(tmp_path, text))
    assert cfg.dataset.train_sequences == ["00", "01", "07", "09", "10", "08"]
    assert cfg.dataset.val_sequences == ["08"]


def test_data_root_override(tmp_path: Path) -> None:
    path = write(tmp_path, "dataset:\n  data_root: /somewhere/else\n  val_sequences: ['08']\n")
    assert load_config(path).dataset.data_root == "/somewhere/else"
    cfg = load_config(path, data_root=tmp_path / "kitti")
    assert cfg.dataset.data_root == str(tmp_path / "kitti")
    assert cfg.dataset.val_sequences == ["08"]  # the rest of the section survives
    # Also when the file has no dataset section at all.
    bare = tmp_path / "bare.yaml"
    bare.write_text("model:\n  init_size: 8\n")
    assert load_config(bare, data_root="/data").dataset.data_root == "/data"


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    broken = write(tmp_path, "model: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(broken)
    assert str(broken) in str(err.value)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(listed, data_root="/data")
    assert str(listed) in str(err.value)


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == config_from_dict({})
