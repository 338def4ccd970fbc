"""`pvd train` / `pvd distill` end to end on a tiny dataset the tests write themselves.

The data are real SemanticKITTI-layout files (velodyne .bin + .label with raw ids) whose
labels follow the geometry, so every stage (reader, voxelizer, model, losses, PVD,
checkpoint, Segmenter validation) runs for real; only the sizes are tiny so the file
stays well under a minute on 2 shared cores. ``write_tiny_kitti`` and ``tiny_config``
are imported by test_resume.py, test_ddp.py and test_eval.py.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
import yaml

from pvd_core.cli import main as pvd_main

REPO = Path(__file__).resolve().parents[1]
SEG_TERMS = ("voxel_ce", "voxel_lovasz", "point_ce", "point_lovasz", "seg", "loss")
PVD_TERMS = ("out_p", "out_v", "aff_p", "aff_v", "pvd")


def write_tiny_kitti(root: Path, sequences=("00",), scans: int = 4, points: int = 1200, seed: int = 0) -> Path:
    """Tiny SemanticKITTI-layout sequences whose raw labels follow the geometry.

    Road (raw 40) on the ground, building (50) walls at 12-16 m, car (10) boxes and
    vegetation (70) blobs, with class-dependent intensity: learnable in few steps.
    """
    root = Path(root)
    for s_i, seq in enumerate(sequences):
        rng = np.random.default_rng([seed, s_i])
        vel = root / "sequences" / str(seq) / "velodyne"
        lab = root / "sequences" / str(seq) / "labels"
        vel.mkdir(parents=True, exist_ok=True)
        lab.mkdir(parents=True, exist_ok=True)
        for k in range(scans):
            n = [points // 2, points // 4, points // 8]
            n.append(points - sum(n))
            r, a = rng.uniform(2, 20, n[0]), rng.uniform(-np.pi, np.pi, n[0])
            road = np.stack([r * np.cos(a), r * np.sin(a), rng.normal(-1.7, 0.03, n[0])], 1)
            r, a = rng.uniform(12, 16, n[1]), rng.uniform(-np.pi, 0, n[1])
            wall = np.stack([r * np.cos(a), r * np.sin(a), rng.uniform(-1.7, 1.8, n[1])], 1)
            per = n[2] // 3 + 1
            car = np.concatenate([
                np.stack([cx + rng.uniform(-2, 2, per), cy + rng.uniform(-0.9, 0.9, per),
                          rng.uniform(-1.6, -0.2, per)], 1)
                for cx, cy in rng.uniform(-8, 8, (3, 2))])[: n[2]]
            centre_r, centre_a = rng.uniform(4, 10, 4), rng.uniform(0, np.pi, 4)
            pick = rng.integers(0, 4, n[3])
            veg = np.stack([centre_r[pick] * np.cos(centre_a[pick]), centre_r[pick] * np.sin(centre_a[pick]),
                            rng.uniform(-1.5, 1.5, n[3])], 1) + rng.normal(0, 0.8, (n[3], 3))
            xyz = np.concatenate([road, wall, car, veg])
            intensity = np.concatenate([rng.uniform(0.0, 0.2, n[0]), rng.uniform(0.3, 0.5, n[1]),
                                        rng.uniform(0.6, 0.9, n[2]), rng.uniform(0.1, 0.4, n[3])])
            raw = np.concatenate([np.full(n[0], 40), np.full(n[1], 50), np.full(n[2], 10), np.full(n[3], 70)])
            np.concatenate([xyz, intensity[:, None]], 1).astype(np.float32).tofile(vel / f"{k:06d}.bin")
            raw.astype(np.uint32).tofile(lab / f"{k:06d}.label")
    return root


def tiny_config(path: Path, data_root: Path, init_size: int = 4, distill: Optional[dict] = None,
                **train) -> Path:
    """A YAML config over the tiny data: grid 32 x 32 x 8, a few steps, CPU."""
    train_cfg = {"batch_size": 2, "lr": 0.003, "max_steps": 4, "log_every": 2, "val_every": 4,
                 "checkpoint_every": 2, "device": "cpu", "seed": 3}
    train_cfg.update(train)
    data = {
        "dataset": {"kind": "semantickitti", "data_root": str(data_root), "train_sequences": ["00"],
                    "val_sequences": ["08"]},
        "grid": {"size": [32, 32, 8], "rho": [0.0, 20.0], "z": [-3.0, 2.0]},
        "model": {"init_size": init_size, "num_input_features": 8, "point_head_dims": [32, 16]},
        "train": train_cfg,
    }
    if distill is not None:
        data["distill"] = dict({"enabled": True, "supervoxel": [16, 16, 4], "num_supervoxels": 2,
                                "points_per_supervoxel": 16, "voxels_per_supervoxel": 16}, **distill)
    path.write_text(yaml.safe_dump(data))
    return path


def subprocess_env() -> dict[str, str]:
    """One torch thread per process: 2 shared cores oversubscribe badly with more."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_pvd(*args: str, check: bool = True, timeout: float = 240,
            isolated: bool = False) -> subprocess.CompletedProcess:
    """Run `pvd ARGS` with one torch thread: in this process (no interpreter start-up, the
    common case) or, with ``isolated``, as a child process like a user would."""
    if isolated:
        proc = subprocess.run([sys.executable, "-m", "pvd_core.cli", *args], cwd=REPO, env=subprocess_env(),
                              capture_output=True, text=True, timeout=timeout)
    else:
        out, err = io.StringIO(), io.StringIO()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = pvd_main(list(args))
        finally:
            torch.set_num_threads(threads)
        proc = subprocess.CompletedProcess(["pvd", *args], code, out.getvalue(), err.getvalue())
    if check and proc.returncode != 0:
        raise AssertionError(f"pvd {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def one_thread():
    """In-process training steps with one torch thread (restored after the test)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_kitti")
    write_tiny_kitti(root, ("00",), scans=4, seed=0)
    write_tiny_kitti(root, ("08",), scans=2, seed=9)
    return root


@pytest.fixture(scope="module")
def teacher_run(tiny_data, tmp_path_factory) -> Path:
    """A trained tiny teacher (init_size 4): `pvd train`, 4 steps, validation at the end."""
    work = tmp_path_factory.mktemp("teacher")
    cfg = tiny_config(work / "teacher.yaml", tiny_data, init_size=4)
    run_pvd("train", "--config", str(cfg), "--out", str(work / "run"), "--no-progress")
    return work / "run"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_train_writes_the_run_directory(teacher_run):
    from pvd_core.checkpoint import load_checkpoint

    for name in ("config.yaml", "metrics.jsonl", "curves.png", "last.pt", "best.pt",
                 "eval/val_best.json", "eval/val_best_confusion.png"):
        assert (teacher_run / name).is_file(), f"{name} missing from the run directory"
    records = read_jsonl(teacher_run / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [2, 4]
    for r in train:
        for term in SEG_TERMS:
            assert math.isfinite(r[term]), f"{term} at step {r['step']}: {r[term]}"
        assert r["scans_per_s"] > 0 and r["lr"] >= 0
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in val] == [4] and 0.0 <= val[0]["miou"] <= 100.0
    last = load_checkpoint(teacher_run / "last.pt")
    assert last.meta["step"] == 4 and last.meta["trained_with"] == "train"
    assert last.train_state["step"] == 4 and "rng" in last.train_state and "optimizer" in last.train_state
    best = load_checkpoint(teacher_run / "best.pt")
    assert best.train_state is None and best.meta["metrics"]["best_miou"] == pytest.approx(val[0]["miou"])
    # The resolved config records the run exactly, data root included.
    resolved = yaml.safe_load((teacher_run / "config.yaml").read_text())
    assert resolved["train"]["max_steps"] == 4 and resolved["model"]["init_size"] == 4


def test_training_changes_the_weights_from_initialisation(teacher_run):
    from pvd_core.checkpoint import load_checkpoint
    from pvd_core.models.cylinder3d import build_model
    from pvd_core.training.resume import seed_everything

    ckpt = load_checkpoint(teacher_run / "last.pt")
    seed_everything(ckpt.config.train.seed)
    init = build_model(ckpt.config).state_dict()
    changed = [k for k, v in ckpt.model_state.items() if v.is_floating_point() and not torch.equal(v, init[k])]
    assert len(changed) > len(init) // 2


def test_existing_run_needs_resume(teacher_run, capsys):
    cfg = teacher_run / "config.yaml"
    code = pvd_main(["train", "--config", str(cfg), "--out", str(teacher_run), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "last.pt exists" in err and "--resume" in err


def test_resume_rejects_a_changed_config(teacher_run, tmp_path, capsys):
    data = yaml.safe_load((teacher_run / "config.yaml").read_text())
    data["train"]["lr"] = 0.5
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(data))
    code = pvd_main(["train", "--config", str(changed), "--out", str(teacher_run), "--resume", "--no-progress"])
    assert code == 1
    assert "train.lr: 0.5 vs 0.003" in capsys.readouterr().err


def test_distill_end_to_end(teacher_run, tiny_data, tmp_path):
    from pvd_core.checkpoint import load_checkpoint

    cfg = tiny_config(tmp_path / "student.yaml", tiny_data, init_size=2, distill={"sampler": "difficulty"})
    run_pvd("distill", "--config", str(cfg), "--teacher", str(teacher_run / "best.pt"),
            "--out", str(tmp_path / "run"), "--no-progress")
    records = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in records] == [2, 4]
    for r in records:
        for term in SEG_TERMS + PVD_TERMS:
            assert math.isfinite(r[term]), f"{term} at step {r['step']}: {r[term]}"
        for term in PVD_TERMS:
            assert r[term] > 0, f"PVD term {term} is zero at step {r['step']}"
        assert r["loss"] == pytest.approx(r["seg"] + r["pvd"], rel=1e-4)
    counts = json.loads((tmp_path / "run" / "class_counts.json").read_text())
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt.meta["class_counts"] == counts["counts"]
    # 4 scans x 1200 points, all labelled (road/building/car/vegetation)
    assert sum(counts["counts"]) == 4 * 1200 and counts["counts"][0] == 0
    assert ckpt.meta["trained_with"] == "distill" and ckpt.meta["teacher"]["init_size"] == 4
    assert ckpt.config.model.init_size == 2
    assert ckpt.train_state["rng"][0]["generator"] is not None
    # (That the teacher stays frozen is test_distill_steps_leave_the_teacher_in_memory_unchanged:
    # distill never writes the teacher's file, so comparing the file could not fail.)


def test_teacher_forward_is_frozen_and_sees_the_student_batch(teacher_run, tiny_data, tmp_path, one_thread):
    """The loop's contract with the teacher: eval mode, no grad, the very same Batch object."""
    from pvd_core.training.trainer import TrainOptions, Trainer
    from pvd_core.config import load_config

    cfg = load_config(tiny_config(tmp_path / "s.yaml", tiny_data, init_size=2, distill={}, max_steps=1))
    trainer = Trainer(TrainOptions(config=cfg, out_dir=tmp_path / "run", teacher=teacher_run / "best.pt",
                                   progress=False))
    trainer._build()
    seen = {}

    def teacher_hook(module, args, output):
        seen["teacher_batch"] = args[0]
        seen["teacher_training"] = module.training
        seen["grad_enabled"] = torch.is_grad_enabled()
        seen["teacher_requires_grad"] = any(p.requires_grad for p in module.parameters())

    def student_hook(module, args, output):
        seen["student_batch"] = args[0]

    trainer.teacher.register_forward_hook(teacher_hook)
    trainer.raw_model.register_forward_hook(student_hook)
    batch = next(iter(trainer.loader))
    trainer._step(batch)
    assert seen["teacher_batch"] is seen["student_batch"]
    assert seen["teacher_training"] is False and seen["grad_enabled"] is False
    assert seen["teacher_requires_grad"] is False


def test_distill_rejects_a_teacher_on_another_grid(teacher_run, tiny_data, tmp_path, capsys):
    cfg_path = tiny_config(tmp_path / "student.yaml", tiny_data, init_size=2, distill={})
    data = yaml.safe_load(cfg_path.read_text())
    data["grid"]["size"] = [48, 32, 8]
    data["grid"]["z"] = [-4.0, 2.0]
    cfg_path.write_text(yaml.safe_dump(data))
    code = pvd_main(["distill", "--config", str(cfg_path), "--teacher", str(teacher_run / "best.pt"),
                     "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "grid.size: [48, 32, 8] vs [32, 32, 8]" in err and "grid.z: [-4.0, 2.0] vs [-3.0, 2.0]" in err


def test_train_and_distill_refuse_the_wrong_mode(tiny_data, tmp_path, capsys):
    distill_cfg = tiny_config(tmp_path / "d.yaml", tiny_data, distill={})
    assert pvd_main(["train", "--config", str(distill_cfg), "--out", str(tmp_path / "a")]) == 1
    assert "pvd distill --teacher" in capsys.readouterr().err
    plain_cfg = tiny_config(tmp_path / "p.yaml", tiny_data)
    assert pvd_main(["distill", "--config", str(plain_cfg), "--teacher", "x.pt", "--out", str(tmp_path / "b")]) == 1
    assert "distill.enabled is false" in capsys.readouterr().err


def test_lr_schedule_is_a_function_of_the_step():
    from pvd_core.config import TrainConfig
    from pvd_core.training.schedule import lr_factor

    cfg = TrainConfig(max_steps=10, warmup_steps=2, lr_schedule="cosine")
    factors = [lr_factor(s, cfg) for s in range(10)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert all(a >= b for a, b in zip(factors[1:], factors[2:]))
    assert lr_factor(5, TrainConfig(lr_schedule="constant")) == 1.0


def test_metrics_log_survives_a_torn_line_and_truncates_on_resume(tmp_path):
    from pvd_core.training.run_log import MetricsLog, plot_curves, read_metrics

    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (2, 4, 6):
        log.write({"kind": "train", "step": step, "seg": 1.0 / step, "loss": float("nan")})
    log.write({"kind": "val", "step": 4, "miou": 12.5})
    with log.path.open("a") as f:
        f.write('{"kind": "train", "step": 8, "se')  # a write cut by SIGKILL
    records = read_metrics(log.path)
    assert [r["step"] for r in records] == [2, 4, 6, 4] and records[0]["loss"] is None
    assert log.truncate_after(4) == 1
    assert [r["step"] for r in log.read()] == [2, 4, 4]
    png = plot_curves(log.read(), tmp_path / "curves.png")
    assert png.stat().st_size > 1000


def test_init_from_copies_weights_only_and_names_a_shape_mismatch(teacher_run, tiny_data, tmp_path, capsys):
    from pvd_core.checkpoint import load_checkpoint

    cfg = tiny_config(tmp_path / "ft.yaml", tiny_data, init_size=4, max_steps=1, lr=1e-12, warmup_steps=0,
                      lr_schedule="constant")
    run_pvd("train", "--config", str(cfg), "--out", str(tmp_path / "ft"), "--init-from",
            str(teacher_run / "last.pt"), "--no-progress")
    source, tuned = load_checkpoint(teacher_run / "last.pt"), load_checkpoint(tmp_path / "ft" / "last.pt")
    # Started from the source's weights (a 1e-12 step leaves conv weights equal to float precision)
    key = "cylinder_3d_spconv_seg.downCntx.conv1.weight"
    assert torch.allclose(tuned.model_state[key], source.model_state[key], atol=1e-6)
    # but with a fresh schedule: step 1, not the source's 4 + 1.
    assert tuned.meta["step"] == 1 and tuned.meta["init_from"]["path"] == str(teacher_run / "last.pt")
    wide = tiny_config(tmp_path / "wide.yaml", tiny_data, init_size=8)
    code = pvd_main(["train", "--config", str(wide), "--out", str(tmp_path / "wide"), "--init-from",
                     str(teacher_run / "last.pt"), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "last.pt" in err and "do not fit" in err and "downCntx" in err


def test_distill_steps_leave_the_teacher_in_memory_unchanged(teacher_run, tiny_data, tmp_path, one_thread):
    """Every teacher tensor (weights and BatchNorm running statistics) is bit-identical after
    distillation steps that did change the student: fails if the teacher ran in train mode
    (BN statistics move), got gradients into an optimizer, or shared a tensor with the student."""
    from pvd_core.training.trainer import TrainOptions, Trainer
    from pvd_core.config import load_config

    cfg = load_config(tiny_config(tmp_path / "s.yaml", tiny_data, init_size=2, distill={}, max_steps=2))
    trainer = Trainer(TrainOptions(config=cfg, out_dir=tmp_path / "run", teacher=teacher_run / "best.pt",
                                   progress=False))
    trainer._build()
    teacher_before = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    assert any("running_mean" in k for k in teacher_before)
    batches = iter(trainer.loader)
    for _ in range(2):
        terms = trainer._step(next(batches))
        assert terms["pvd"] > 0
    moved = [k for k, v in trainer.raw_model.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, student_before[k])]
    assert len(moved) > len(student_before) // 2  # the steps did train the student
    changed = [k for k, v in trainer.teacher.state_dict().items() if not torch.equal(v, teacher_before[k])]
    assert changed == []


def test_weight_ema_hand_computed():
    from pvd_core.training.ema import WeightEMA

    model = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
    with torch.no_grad():
        model[0].weight.fill_(0.0)
    ema = WeightEMA(model, decay=0.9)
    for w, mean in ((1.0, 4.0), (2.0, 8.0)):
        with torch.no_grad():
            model[0].weight.fill_(w)
            model[1].running_mean.fill_(mean)
        model[1].num_batches_tracked += 1
        ema.update(model)
    # Warm-up decays min(0.9, (1 + n) / (10 + n)): 1/10, then 2/11.
    # weight: 0.1 * 0 + 0.9 * 1 = 0.9, then (2/11) 0.9 + (9/11) 2 = 1.8; running_mean: 3.6, then 7.2.
    assert ema.state["0.weight"].item() == pytest.approx(0.9 * 2 / 11 + 2 * 9 / 11)
    assert ema.state["1.running_mean"].item() == pytest.approx((2 / 11) * 3.6 + (9 / 11) * 8.0)
    assert ema.state["1.num_batches_tracked"].item() == 2  # integer buffers are copied
    restored = WeightEMA(model, decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 2 and restored.current_decay() == pytest.approx(3 / 12)
    assert torch.equal(restored.state["0.weight"], ema.state["0.weight"])
    with pytest.raises(ValueError, match="decay"):
        WeightEMA(model, decay=1.0)


def test_ema_checkpoint_is_written_and_resumes_exactly(tiny_data, tmp_path):
    """train.ema_decay writes RUN_DIR/ema.pt; a run stopped at step 2 and resumed to 4 ends with
    the same average as an uninterrupted run (the average lives in last.pt's train_state)."""
    from pvd_core.checkpoint import load_checkpoint

    cfg = tiny_config(tmp_path / "ema.yaml", tiny_data, init_size=2, ema_decay=0.5, val_every=100,
                      lr_schedule="constant")  # a schedule independent of max_steps: step 2 of 2 = step 2 of 4
    run_pvd("train", "--config", str(cfg), "--out", str(tmp_path / "whole"), "--no-progress")
    run_pvd("train", "--config", str(cfg), "--out", str(tmp_path / "split"), "--max-steps", "2", "--no-progress")
    run_pvd("train", "--config", str(cfg), "--out", str(tmp_path / "split"), "--resume", "--no-progress")
    whole, split = load_checkpoint(tmp_path / "whole" / "ema.pt"), load_checkpoint(tmp_path / "split" / "ema.pt")
    last = load_checkpoint(tmp_path / "whole" / "last.pt")
    assert whole.meta["ema_decay"] == 0.5 and whole.meta["step"] == 4 and whole.train_state is None
    assert all(torch.equal(split.model_state[k], v) for k, v in whole.model_state.items())
    differs = [k for k, v in whole.model_state.items()
               if v.is_floating_point() and not torch.equal(v, last.model_state[k])]
    assert len(differs) > len(whole.model_state) // 2  # an average, not a copy of the last weights
    assert last.train_state["ema"]["updates"] == 4
    plain = tiny_config(tmp_path / "plain.yaml", tiny_data, init_size=2, max_steps=2, val_every=100)
    run_pvd("train", "--config", str(plain), "--out", str(tmp_path / "plain"), "--no-progress")
    assert not (tmp_path / "plain" / "ema.pt").exists()


def test_per_scan_matrices_and_fidelity_on_a_split(teacher_run, tiny_data, tmp_path, one_thread):
    from pvd_core.evaluation import evaluate_files
    from pvd_core.fidelity import fidelity_on_files
    from pvd_core.segmenter import Segmenter
    from pvd_core.config import load_config
    from pvd_core.data.dataset import split_files

    teacher = Segmenter.from_checkpoint(teacher_run / "best.pt", device="cpu")
    files = split_files(teacher.config, "val")
    report = evaluate_files(teacher, files, "semantickitti", teacher.label_map, progress=False, per_scan=True)
    assert report.scan_matrices.shape == (len(files),) + report.matrix.shape
    assert np.array_equal(report.scan_matrices.sum(axis=0), report.matrix)
    assert report.scan_matrices[0].sum() == 1200  # every point of one tiny scan is labelled
    # A model against itself: full agreement, zero KL; an untrained student: neither.
    self_fid = fidelity_on_files(teacher, teacher, files, "semantickitti")
    assert self_fid.agreement == 1.0 and self_fid.kl == pytest.approx(0.0, abs=1e-6)
    assert self_fid.points == 2 * 1200
    from pvd_core.models.cylinder3d import build_model
    cfg = load_config(teacher_run / "config.yaml")
    torch.manual_seed(5)
    fresh = Segmenter(build_model(cfg), cfg, teacher.label_map, device="cpu")
    other = fidelity_on_files(fresh, teacher, files, "semantickitti")
    assert other.agreement < 1.0 and other.kl > 0.01
    # The teacher cache: filled once per scan, then reused with the same answer.
    cache: dict = {}
    first = fidelity_on_files(fresh, teacher, files, "semantickitti", teacher_cache=cache)
    assert len(cache) == len(files) and first == other
    assert fidelity_on_files(teacher, teacher, files, "semantickitti", teacher_cache=cache) == self_fid
