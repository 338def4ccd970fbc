"""Resume: a run killed with SIGKILL continues from last.pt and ends bit-identical.

The reference is an uninterrupted run of the same config; the interrupted run is a real
`pvd train` process killed with SIGKILL as soon as a mid-epoch checkpoint exists, then
resumed with --resume. Every tensor of the final weights (and of the optimiser state)
must be equal (torch.equal), which needs the same data order, augmentation, skipped
batches, learning rates and RNG states.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from test_train import REPO, read_jsonl, run_pvd, subprocess_env, tiny_config, write_tiny_kitti

MAX_STEPS = 8


def assert_same_state(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), f"{what}: different keys"
    for key in a:
        assert torch.equal(a[key], b[key]), f"{what}: tensor {key} differs"


def optimizer_tensors(train_state: dict) -> dict:
    out = {}
    for pid, st in train_state["optimizer"]["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                out[f"{pid}.{name}"] = value
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume_data")
    write_tiny_kitti(root, ("00",), scans=5, seed=1)  # 3 batches of 2 per epoch: checkpoints fall mid-epoch
    write_tiny_kitti(root, ("08",), scans=1, seed=2)
    return root


@pytest.mark.subprocess
def test_sigkill_then_resume_matches_an_uninterrupted_run(data, tmp_path):
    from pvd_core.checkpoint import load_checkpoint

    cfg = tiny_config(tmp_path / "cfg.yaml", data, init_size=4, max_steps=MAX_STEPS, checkpoint_every=2,
                      log_every=2, val_every=100)
    run_pvd("train", "--config", str(cfg), "--out", str(tmp_path / "straight"), "--no-progress")

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "pvd_core.cli", "train", "--config", str(cfg), "--out", str(killed),
                             "--no-progress"], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not (killed / "last.pt").exists():
            assert proc.poll() is None, f"training exited early: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    interrupted = load_checkpoint(killed / "last.pt")
    k = interrupted.train_state["step"]
    assert 2 <= k < MAX_STEPS, f"the kill came too late (checkpoint at step {k}); nothing left to resume"
    assert interrupted.train_state["batch_in_epoch"] % 3 != 0 or k == 6, "expected a mid-epoch checkpoint"

    resumed = run_pvd("train", "--config", str(cfg), "--out", str(killed), "--resume", "--no-progress",
                      isolated=True)
    assert f"resuming {killed} at step {k}" in resumed.stdout

    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(killed / "last.pt")
    assert a.meta["step"] == b.meta["step"] == MAX_STEPS
    assert_same_state(a.model_state, b.model_state, "model weights")
    assert_same_state(optimizer_tensors(a.train_state), optimizer_tensors(b.train_state), "optimizer state")
    # The log reads like one run: each step once, the same losses.
    la = [r for r in read_jsonl(tmp_path / "straight" / "metrics.jsonl") if r["kind"] == "train"]
    lb = [r for r in read_jsonl(killed / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in lb] == [2, 4, 6, 8]
    assert [r["seg"] for r in la] == [r["seg"] for r in lb]


def test_distill_resume_restores_the_sampling_generator(data, tmp_path):
    """Stop a distillation at step 2 and resume to 4: equal to 4 steps straight.

    A constant learning rate lets --max-steps stop the first leg without changing the
    schedule; the PVD supervoxel draws depend on the restored generator and class counts.
    """
    from pvd_core.checkpoint import load_checkpoint

    from pvd_core.checkpoint import save_checkpoint
    from pvd_core.config import load_config
    from pvd_core.labels import label_map_for
    from pvd_core.models.cylinder3d import build_model

    teacher_cfg = load_config(tiny_config(tmp_path / "t.yaml", data, init_size=4))
    torch.manual_seed(5)
    teacher = tmp_path / "teacher.pt"  # an untrained teacher is enough to exercise every PVD term
    save_checkpoint(teacher, build_model(teacher_cfg), teacher_cfg, label_map_for("semantickitti"), {"step": 0})
    cfg = tiny_config(tmp_path / "s.yaml", data, init_size=2, distill={"sampler": "difficulty"}, max_steps=4,
                      lr_schedule="constant", checkpoint_every=2, val_every=100)
    run_pvd("distill", "--config", str(cfg), "--teacher", str(teacher), "--out", str(tmp_path / "straight"),
            "--no-progress")
    run_pvd("distill", "--config", str(cfg), "--teacher", str(teacher), "--out", str(tmp_path / "legs"),
            "--max-steps", "2", "--no-progress")
    run_pvd("distill", "--config", str(cfg), "--teacher", str(teacher), "--out", str(tmp_path / "legs"),
            "--resume", "--no-progress")
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "legs" / "last.pt")
    assert b.meta["step"] == 4 and b.meta["class_counts"] == a.meta["class_counts"]
    assert_same_state(a.model_state, b.model_state, "student weights")
    assert torch.equal(a.train_state["rng"][0]["generator"], b.train_state["rng"][0]["generator"])
    la = [r for r in read_jsonl(tmp_path / "straight" / "metrics.jsonl") if r["kind"] == "train"]
    lb = [r for r in read_jsonl(tmp_path / "legs" / "metrics.jsonl") if r["kind"] == "train"]
    assert [(r["step"], r["aff_p"], r["aff_v"]) for r in la] == [(r["step"], r["aff_p"], r["aff_v"]) for r in lb]


def test_resume_without_a_checkpoint_is_an_error(data, tmp_path):
    cfg = tiny_config(tmp_path / "cfg.yaml", data)
    proc = run_pvd("train", "--config", str(cfg), "--out", str(tmp_path / "none"), "--resume", check=False)
    assert proc.returncode == 1
    assert "last.pt not found" in proc.stderr


def test_fresh_start_replaces_the_log_of_a_run_killed_before_its_first_checkpoint(data, tmp_path):
    """No last.pt, so no --resume: the old lines must go, or the loss curve shows every step twice."""
    cfg = tiny_config(tmp_path / "cfg.yaml", data, init_size=4, max_steps=4, checkpoint_every=4, log_every=2,
                      val_every=100)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stale = [{"kind": "train", "step": s, "loss": 999.0} for s in (2, 4)]
    (run_dir / "metrics.jsonl").write_text("".join(f"{json.dumps(r)}\n" for r in stale))
    proc = run_pvd("train", "--config", str(cfg), "--out", str(run_dir), "--no-progress")
    assert "dropped 2 metrics line(s)" in proc.stdout
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in rows] == [2, 4] and all(r["loss"] != 999.0 for r in rows)
