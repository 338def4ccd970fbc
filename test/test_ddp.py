"""Multi-process training: torchrun, 2 CPU processes (gloo), a few steps, identical weights.

Each rank prints a SHA-256 of its final parameters and buffers; DDP averages the
gradients and the loop copies rank 0's BatchNorm statistics at the end, so the digests
must be equal, and equal to the digest of the checkpoint rank 0 wrote.
"""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from test_train import REPO, read_jsonl, subprocess_env, tiny_config, write_tiny_kitti

pytestmark = [pytest.mark.ddp, pytest.mark.subprocess]  # slow tier (markers in setup.cfg)


def run_two_ranks(*args: str) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """`pvd ARGS` under torchrun with 2 CPU ranks; asserts success and equal final-state digests."""
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "pvd_core.cli", *args, "--no-progress"],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout}\n{proc.stderr}"
    digests = dict(re.findall(r"rank (\d)/2: final state sha256 ([0-9a-f]{64})", proc.stdout + proc.stderr))
    assert set(digests) == {"0", "1"}, f"expected a digest from each rank:\n{proc.stdout}\n{proc.stderr}"
    assert digests["0"] == digests["1"]
    return proc, digests


@pytest.mark.timeout(300)
def test_two_ranks_end_with_identical_weights(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    from pvd_core.checkpoint import load_checkpoint
    from pvd_core.models.cylinder3d import build_model
    from pvd_core.training.distributed import state_digest

    data = tmp_path / "data"
    write_tiny_kitti(data, ("00",), scans=4, seed=4)
    write_tiny_kitti(data, ("08",), scans=1, seed=5)
    cfg = tiny_config(tmp_path / "cfg.yaml", data, init_size=4, max_steps=3, batch_size=1, log_every=1,
                      checkpoint_every=3, val_every=3)
    out = tmp_path / "run"
    _, digests = run_two_ranks("train", "--config", str(cfg), "--out", str(out))

    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt.meta["world_size"] == 2 and ckpt.meta["step"] == 3
    assert len(ckpt.train_state["rng"]) == 2  # one RNG state per rank, for resume
    model = build_model(ckpt.config)
    model.load_state_dict(ckpt.model_state)
    assert state_digest(model) == digests["0"]
    # Only rank 0 logs: one line per step, not two; losses are averaged over ranks.
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == [1, 2, 3]
    # 4 scans over 2 ranks at batch 1: each step consumes 2 scans.
    assert (out / "eval" / "val_best.json").is_file()


@pytest.mark.timeout(300)
def test_two_ranks_distill_with_unlabelled_scans(tmp_path):
    """`pvd distill --unlabelled` under torchrun: ranks stay in sync and draw different unlabelled scans."""
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    import shutil

    from pvd_core.checkpoint import save_checkpoint
    from pvd_core.config import load_config
    from pvd_core.data.unlabelled import DrawSampler
    from pvd_core.labels import label_map_for
    from pvd_core.models.cylinder3d import build_model

    data = tmp_path / "data"
    write_tiny_kitti(data, ("00",), scans=4, seed=4)
    write_tiny_kitti(data, ("08",), scans=1, seed=5)
    raw = tmp_path / "raw"
    write_tiny_kitti(raw, ("00",), scans=4, seed=6)
    shutil.rmtree(raw / "sequences" / "00" / "labels")
    teacher_cfg = load_config(tiny_config(tmp_path / "t.yaml", data, init_size=4))
    torch.manual_seed(5)
    teacher = tmp_path / "teacher.pt"
    save_checkpoint(teacher, build_model(teacher_cfg), teacher_cfg, label_map_for("semantickitti"), {"step": 0})
    cfg = tiny_config(tmp_path / "s.yaml", data, init_size=2, distill={}, max_steps=2, batch_size=1, log_every=1,
                      checkpoint_every=2, val_every=100)
    out = tmp_path / "run"
    proc, _ = run_two_ranks("distill", "--config", str(cfg), "--teacher", str(teacher), "--unlabelled", str(raw),
                            "--out", str(out))
    assert proc.stdout.count("unlabelled: 4 scans") == 1  # rank 0 alone reports
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in rows] == [1, 2] and all(r["unlabelled_points"] > 0 for r in rows)
    # The draws of the two ranks at a step never coincide (the rule the loop used).
    r0, r1 = iter(DrawSampler(0, 1, 0, 2)), iter(DrawSampler(0, 1, 1, 2))
    assert [next(r0) for _ in range(2)] == [0, 2] and [next(r1) for _ in range(2)] == [1, 3]
