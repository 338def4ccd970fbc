"""The checkpoint format: round trip, atomic writes, and mismatch messages that name the difference."""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from pvd_core.checkpoint import (CheckpointError, build_model_from_checkpoint, git_revision, load_checkpoint,
                                 save_checkpoint)
from pvd_core.config import config_from_dict
from pvd_core.data.batch import collate_scans
from pvd_core.labels import SEMANTIC_KITTI
from pvd_core.models.cylinder3d import build_model
from pvd_core.voxelizer import CylindricalVoxelizer


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def tiny_config(init_size: int = 4, size=(32, 32, 8)):
    return config_from_dict({"grid": {"size": list(size)}, "model": {"init_size": init_size}})


def small_batch(cfg):
    rng = np.random.default_rng(0)
    n = 600
    r, a, z = rng.uniform(1, 45, n), rng.uniform(-np.pi, np.pi, n), rng.uniform(-3, 1, n)
    pts = np.stack([r * np.cos(a), r * np.sin(a), z, rng.uniform(0, 1, n)], 1).astype(np.float32)
    return collate_scans([CylindricalVoxelizer(cfg.grid)(pts)], cfg.grid.size)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config()
    model = build_model(cfg)
    # Non-default BN statistics so that the round trip covers buffers, not only weights.
    model.train()
    with torch.no_grad():
        model(small_batch(cfg))
    model.eval()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, cfg, SEMANTIC_KITTI, {"step": 7, "metrics": {"miou": 0.25}})
    return path, model, cfg


def test_round_trip_restores_config_labels_weights_and_outputs(saved):
    path, model, cfg = saved
    ckpt = load_checkpoint(path)
    assert ckpt.config == cfg
    assert ckpt.label_map == SEMANTIC_KITTI
    assert ckpt.train_state is None
    for key in ("dataset", "step", "metrics", "git_revision", "created"):
        assert key in ckpt.meta, key
    assert ckpt.meta["step"] == 7 and ckpt.meta["metrics"] == {"miou": 0.25}
    assert ckpt.meta["dataset"] == "semantickitti"
    restored = build_model_from_checkpoint(ckpt, cfg)
    assert not restored.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key]), key
    batch = small_batch(cfg)
    with torch.inference_mode():
        assert torch.equal(model(batch).point_logits, restored(batch).point_logits)


def test_train_state_round_trip(tmp_path):
    cfg = tiny_config()
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(small_batch(cfg)).point_logits.sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
             "numpy_rng": np.random.default_rng(3).bit_generator.state, "epoch": 2}
    save_checkpoint(tmp_path / "resume.pt", model, cfg, SEMANTIC_KITTI, {"step": 1}, train_state=state)
    loaded = load_checkpoint(tmp_path / "resume.pt").train_state
    assert loaded["epoch"] == 2
    assert torch.equal(loaded["torch_rng"], state["torch_rng"])
    assert loaded["numpy_rng"] == state["numpy_rng"]
    new_opt = torch.optim.Adam(build_model(cfg).parameters(), lr=1e-3)
    new_opt.load_state_dict(loaded["optimizer"])  # shapes and step counts fit


def test_failed_write_leaves_previous_checkpoint_and_no_temp_file(saved):
    path, model, cfg = saved
    before = path.read_bytes()
    with pytest.raises(Exception):
        # A lambda cannot be pickled: torch.save fails after it has started writing.
        save_checkpoint(path, model, cfg, SEMANTIC_KITTI, {"step": 8, "bad": lambda: None})
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]
    assert load_checkpoint(path).meta["step"] == 7


def test_config_mismatch_lists_every_difference(saved):
    path, _, _ = saved
    ckpt = load_checkpoint(path)
    other = tiny_config(init_size=8, size=(48, 32, 8))
    with pytest.raises(CheckpointError) as err:
        build_model_from_checkpoint(ckpt, other)
    msg = str(err.value)
    assert str(path) in msg
    assert "checkpoint has init_size 4, config asks for 8" in msg
    assert "checkpoint has grid.size [32, 32, 8], config asks for [48, 32, 8]" in msg


def test_weights_that_do_not_fit_are_named_by_parameter(saved):
    path, _, _ = saved
    ckpt = load_checkpoint(path)
    ckpt.config.model.init_size = 8  # a config that lies about the weights it came with
    with pytest.raises(CheckpointError) as err:
        build_model_from_checkpoint(ckpt)
    msg = str(err.value)
    assert "trained with init_size 4" in msg
    assert ("cylinder_3d_spconv_seg.downCntx.conv1.weight: checkpoint shape (4, 1, 3, 3, 16), "
            "model shape (8, 1, 3, 3, 16)") in msg


def test_unreadable_files_raise_checkpoint_error_naming_the_file(tmp_path):
    missing = tmp_path / "none.pt"
    with pytest.raises(CheckpointError, match=re.escape(str(missing))):
        load_checkpoint(missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file" * 10)
    with pytest.raises(CheckpointError, match="not a pvd_ros checkpoint"):
        load_checkpoint(garbage)
    bare = tmp_path / "bare.pt"
    torch.save(build_model(tiny_config()).state_dict(), bare)
    with pytest.raises(CheckpointError, match=re.escape(str(bare)) + ".*not a pvd_ros checkpoint"):
        load_checkpoint(bare)


def test_wrong_format_version_is_refused(saved, tmp_path):
    path, _, _ = saved
    data = torch.load(path, weights_only=True)
    data["format_version"] = 99
    future = tmp_path / "future.pt"
    torch.save(data, future)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(future)


def test_git_revision_is_a_commit_or_unknown():
    rev = git_revision()
    assert rev == "unknown" or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", rev), rev


def test_checkpoint_is_readable_by_other_users_like_any_file(saved):
    """mkstemp's 0600 must not leak into the result: a ROS node may run as another user."""
    path = saved[0]
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask


def test_export_writes_an_inference_checkpoint_with_its_terms(tmp_path: Path) -> None:
    import torch

    from pvd_core.checkpoint import load_checkpoint, save_checkpoint
    from pvd_core.cli import main as pvd_main
    from pvd_core.config import config_from_dict
    from pvd_core.labels import SEMANTIC_KITTI
    from pvd_core.models.cylinder3d import build_model
    from pvd_core.shipped_models import SEMANTICKITTI_LICENCE, model_card

    cfg = config_from_dict({"grid": {"size": [32, 32, 8]}, "model": {"init_size": 2}})
    torch.manual_seed(0)
    model = build_model(cfg)
    run_ckpt = tmp_path / "last.pt"
    save_checkpoint(run_ckpt, model, cfg, SEMANTIC_KITTI, {"step": 7}, train_state={"optimizer": {"big": [0] * 10}})
    out = tmp_path / "shipped.pt"
    assert pvd_main(["export", "--checkpoint", str(run_ckpt), "--out", str(out), "--trained-on", "50 real scans",
                     "--licence", "semantickitti", "--note", "40 % mIoU"]) == 0
    shipped = load_checkpoint(out)
    assert shipped.train_state is None and shipped.meta["step"] == 7
    assert shipped.meta["licence"] == SEMANTICKITTI_LICENCE and "non-commercial" in model_card(shipped.meta)
    assert all(torch.equal(shipped.model_state[k], v) for k, v in model.state_dict().items())
    assert "no data licence" in model_card({"trained_on": "synthetic streets"})


def test_half_export_stores_float16_and_loads_back_as_the_rounded_float32_model(saved, tmp_path: Path) -> None:
    from pvd_core.cli import main as pvd_main

    path, model, cfg = saved
    out = tmp_path / "half.pt"
    assert pvd_main(["export", "--checkpoint", str(path), "--out", str(out), "--trained-on", "random points",
                     "--licence", "none", "--half"]) == 0
    half = load_checkpoint(out)
    assert half.meta["stored_dtype"] == "float16" and half.meta["step"] == 7
    own = model.state_dict()
    for key, value in half.model_state.items():  # floats halved, integer buffers (BN batch counts) kept
        assert value.dtype == (torch.float16 if own[key].is_floating_point() else own[key].dtype), key
    assert out.stat().st_size < 0.6 * path.stat().st_size
    restored = build_model_from_checkpoint(half, cfg)
    for key, value in restored.state_dict().items():  # float32 again, holding exactly the rounded weights
        expected = own[key].to(torch.float16).to(own[key].dtype) if own[key].is_floating_point() else own[key]
        assert value.dtype == own[key].dtype and torch.equal(value, expected), key
    batch = small_batch(cfg)
    with torch.inference_mode():
        a, b = model(batch).point_logits, restored(batch).point_logits
    assert not torch.equal(a, b) and torch.allclose(a, b, rtol=0.05, atol=0.05)


def test_half_export_keeps_tensors_that_would_overflow_float16(saved, tmp_path: Path) -> None:
    """A trained teacher's BN running variances reach 1e7: as float16 they would be inf, and
    BN would divide its channel by infinity. Such tensors stay float32, and meta says which."""
    _, model, cfg = saved
    big = next(k for k in model.state_dict() if k.endswith("running_var"))
    with torch.no_grad():
        model.get_submodule(big.rsplit(".", 1)[0]).running_var.mul_(0).add_(1e7)
    out = tmp_path / "half.pt"
    save_checkpoint(out, model, cfg, SEMANTIC_KITTI, {"step": 7}, float_dtype=torch.float16)
    half = load_checkpoint(out)
    assert half.meta["kept_dtype"] == {big: "float32"}
    assert half.model_state[big].dtype == torch.float32 and torch.equal(half.model_state[big], model.state_dict()[big])
    others = [k for k, v in half.model_state.items() if v.is_floating_point() and k != big]
    assert others and all(half.model_state[k].dtype == torch.float16 for k in others)
    restored = build_model_from_checkpoint(half, cfg)
    batch = small_batch(cfg)
    with torch.inference_mode():
        a, b = model(batch).point_logits, restored(batch).point_logits
    assert torch.isfinite(b).all() and torch.allclose(a, b, rtol=0.05, atol=0.05)
