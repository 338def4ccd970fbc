"""`pvd distill --unlabelled`: unlabelled scans found, drawn, mixed into batches, PVD terms only.

The end-to-end tests run real distillations on tiny SemanticKITTI-layout data; the unit
tests pin the rules a wrong implementation would break silently: the supervised loss of a
mixed batch equals that of its labelled scans alone, the sampler sees the teacher's classes
on unlabelled points, and draws depend on the step only (so resume is exact).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from test_resume import assert_same_state
from test_train import read_jsonl, run_pvd, tiny_config, write_tiny_kitti


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("unl_data")
    write_tiny_kitti(root / "labelled", ("00",), scans=4, seed=1)
    write_tiny_kitti(root / "labelled", ("08",), scans=1, seed=2)
    write_tiny_kitti(root / "raw", ("00", "01"), scans=3, seed=7)
    for seq in ("00", "01"):  # a recording without labels
        shutil.rmtree(root / "raw" / "sequences" / seq / "labels")
    return root


@pytest.fixture(scope="module")
def teacher(data, tmp_path_factory) -> Path:
    from pvd_core.checkpoint import save_checkpoint
    from pvd_core.config import load_config
    from pvd_core.labels import label_map_for
    from pvd_core.models.cylinder3d import build_model

    work = tmp_path_factory.mktemp("unl_teacher")
    cfg = load_config(tiny_config(work / "t.yaml", data / "labelled", init_size=4))
    torch.manual_seed(5)
    path = work / "teacher.pt"  # an untrained teacher exercises every PVD term
    save_checkpoint(path, build_model(cfg), cfg, label_map_for("semantickitti"), {"step": 0})
    return path


def student_config(path: Path, data: Path, **train) -> Path:
    return tiny_config(path, data / "labelled", init_size=2, distill={"sampler": "difficulty"},
                       lr_schedule="constant", val_every=100, **train)


# ---------------------------------------------------------------------------------------- sources
def test_sources_in_every_layout(data):
    from pvd_core.data.unlabelled import source_scan_files, unlabelled_scan_files

    root = data / "raw"
    seq = root / "sequences" / "00"
    assert len(source_scan_files(root)) == 6  # every sequence of a dataset root
    assert source_scan_files(seq) == sorted((seq / "velodyne").glob("*.bin"))
    assert source_scan_files(seq / "velodyne") == source_scan_files(seq)
    one = seq / "velodyne" / "000001.bin"
    assert source_scan_files(one) == [one]
    # Overlapping sources count each scan once.
    assert len(unlabelled_scan_files([root, seq, one])) == 6


def test_a_source_without_scans_names_itself(tmp_path):
    from pvd_core.data.semantickitti import DataError
    from pvd_core.data.unlabelled import source_scan_files

    with pytest.raises(DataError, match=f"--unlabelled {tmp_path}: no scans found"):
        source_scan_files(tmp_path)
    with pytest.raises(DataError, match="no such file or folder"):
        source_scan_files(tmp_path / "missing")


# ---------------------------------------------------------------------------------------- draws
def test_draws_visit_every_scan_once_per_sweep_and_ranks_differ(data, tmp_path):
    from pvd_core.config import load_config
    from pvd_core.data.unlabelled import DrawSampler, UnlabelledScans, unlabelled_scan_files

    cfg = load_config(student_config(tmp_path / "s.yaml", data))
    scans = UnlabelledScans(cfg, unlabelled_scan_files([data / "raw"]))
    n = len(scans)
    sweeps = [[scans.scan_of_draw(d) for d in range(k * n, (k + 1) * n)] for k in range(3)]
    for k, sweep in enumerate(sweeps):
        assert sorted(i for _, i in sweep) == list(range(n)) and {s for s, _ in sweep} == {k}
    assert [i for _, i in sweeps[0]] != [i for _, i in sweeps[1]]  # a new order each sweep

    def first(sampler, count):
        it = iter(sampler)
        return [next(it) for _ in range(count)]

    # Step 3 of a resumed run continues exactly where an uninterrupted run would be.
    assert first(DrawSampler(0, 2), 10)[6:] == first(DrawSampler(3, 2), 4)
    r0, r1 = first(DrawSampler(0, 2, 0, 2), 6), first(DrawSampler(0, 2, 1, 2), 6)
    assert not set(r0) & set(r1) and sorted(r0 + r1) == list(range(12))
    # The same draw is the same augmented scan, whichever process loads it.
    a, b = scans[5], UnlabelledScans(cfg, scans.files)[5]
    assert np.array_equal(a.point_features, b.point_features) and a.point_labels is None


# ---------------------------------------------------------------------------------------- batches
def _mixed_batch(data, tmp_path):
    from pvd_core.config import load_config
    from pvd_core.data.batch import collate_scans
    from pvd_core.data.dataset import ScanDataset
    from pvd_core.data.unlabelled import UnlabelledScans, unlabelled_scan_files

    cfg = load_config(student_config(tmp_path / "s.yaml", data))
    labelled = ScanDataset(cfg, "train", augment=False)
    raw = UnlabelledScans(cfg, unlabelled_scan_files([data / "raw"]), augment=False)
    scans = [labelled[0], raw[0], labelled[1]]
    return cfg, scans, collate_scans(scans, cfg.grid.size)


def _output(point_logits, voxel_logits, batch):
    from pvd_core.models.outputs import SegOutput

    return SegOutput(point_logits=point_logits, voxel_logits=voxel_logits, point_features=point_logits,
                     voxel_features=voxel_logits, point_to_voxel=batch.point_to_voxel,
                     voxel_coords=batch.voxel_coords)


def test_a_mixed_batch_marks_its_labelled_points(data, tmp_path):
    _, scans, batch = _mixed_batch(data, tmp_path)
    sizes = [s.num_points for s in scans]
    expected = np.repeat([True, False, True], sizes)
    assert torch.equal(batch.point_labelled, torch.from_numpy(expected))
    assert int(batch.point_labels[~batch.point_labelled].abs().sum()) == 0
    assert int(batch.point_labels[batch.point_labelled].min()) >= 0
    assert int((batch.point_labels[batch.point_labelled] > 0).sum()) > 0
    first = scans[0].num_voxels
    assert int(batch.voxel_labels[first:first + scans[1].num_voxels].abs().sum()) == 0


def test_unlabelled_scans_add_nothing_to_the_supervised_loss(data, tmp_path):
    """seg loss of (labelled + unlabelled) == seg loss of the labelled scans alone, same logits."""
    from pvd_core.data.batch import collate_scans
    from pvd_core.losses.segmentation import segmentation_loss

    cfg, scans, mixed = _mixed_batch(data, tmp_path)
    alone = collate_scans([scans[0], scans[2]], cfg.grid.size)
    g = torch.Generator().manual_seed(0)
    p_logits = torch.randn(mixed.num_points, 20, generator=g)
    v_logits = torch.randn(mixed.num_voxels, 20, generator=g)
    v_batch = mixed.voxel_coords[:, 0]
    out_mixed = _output(p_logits, v_logits, mixed)
    out_alone = _output(p_logits[mixed.point_labelled], v_logits[v_batch != 1], alone)
    a = segmentation_loss(out_mixed, mixed, cfg.train)
    b = segmentation_loss(out_alone, alone, cfg.train)
    for key in ("voxel_ce", "point_ce", "voxel_lovasz", "point_lovasz", "seg"):
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_the_sampler_uses_teacher_classes_on_unlabelled_points(data, tmp_path):
    from pvd_core.config import DistillConfig
    from pvd_core.losses.distillation import PVDLoss

    cfg, _, batch = _mixed_batch(data, tmp_path)
    teacher_class = 7
    logits = torch.zeros(batch.num_points, 20)
    logits[:, teacher_class] = 5.0
    teacher = _output(logits, torch.zeros(batch.num_voxels, 20), batch)
    loss = PVDLoss(DistillConfig(enabled=True), cfg.grid.size, cfg.grid.rho[1], torch.ones(20))
    labels = loss._labels_for_sampling(teacher, batch)
    assert torch.equal(labels[batch.point_labelled], batch.point_labels[batch.point_labelled])
    assert bool((labels[~batch.point_labelled] == teacher_class).all())


# ---------------------------------------------------------------------------------------- runs
def test_distill_with_unlabelled_scans_logs_and_records_them(data, teacher, tmp_path):
    from pvd_core.checkpoint import load_checkpoint

    cfg = student_config(tmp_path / "s.yaml", data, max_steps=2)
    out = tmp_path / "run"
    proc = run_pvd("distill", "--config", str(cfg), "--teacher", str(teacher), "--out", str(out),
                   "--unlabelled", str(data / "raw" / "sequences" / "00"),
                   "--unlabelled", str(data / "raw" / "sequences" / "01"), "--unlabelled-ratio", "0.5",
                   "--no-progress")
    assert "unlabelled: 6 scans from 2 source(s), 1 per batch next to 2 labelled" in proc.stdout
    meta = load_checkpoint(out / "last.pt").meta
    assert meta["unlabelled"] == {"sources": [str(data / "raw" / "sequences" / s) for s in ("00", "01")],
                                  "scans": 6, "per_batch": 1}
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "train"]
    assert rows and all(r["unlabelled_points"] > 0 and r["out_p"] > 0 for r in rows)


def test_resumed_unlabelled_distillation_matches_an_uninterrupted_one(data, teacher, tmp_path):
    from pvd_core.checkpoint import load_checkpoint

    cfg = student_config(tmp_path / "s.yaml", data, max_steps=4, checkpoint_every=2)
    unl = ["--unlabelled", str(data / "raw")]
    run_pvd("distill", "--config", str(cfg), "--teacher", str(teacher), "--out", str(tmp_path / "straight"),
            *unl, "--no-progress")
    run_pvd("distill", "--config", str(cfg), "--teacher", str(teacher), "--out", str(tmp_path / "legs"),
            *unl, "--max-steps", "2", "--no-progress")
    run_pvd("distill", "--config", str(cfg), "--teacher", str(teacher), "--out", str(tmp_path / "legs"),
            *unl, "--resume", "--no-progress")
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "legs" / "last.pt")
    assert b.meta["step"] == 4
    assert_same_state(a.model_state, b.model_state, "student weights")
    la = [r for r in read_jsonl(tmp_path / "straight" / "metrics.jsonl") if r["kind"] == "train"]
    lb = [r for r in read_jsonl(tmp_path / "legs" / "metrics.jsonl") if r["kind"] == "train"]
    assert [(r["step"], r["out_p"], r["unlabelled_points"]) for r in la] == \
        [(r["step"], r["out_p"], r["unlabelled_points"]) for r in lb]
    # Resuming with other unlabelled sources is refused, naming the field.
    proc = run_pvd("distill", "--config", str(cfg), "--teacher", str(teacher), "--out", str(tmp_path / "legs"),
                   "--unlabelled", str(data / "raw" / "sequences" / "00"), "--resume", "--max-steps", "6",
                   "--no-progress", check=False)
    assert proc.returncode != 0 and "dataset.unlabelled" in proc.stderr


def test_unlabelled_scans_change_what_the_student_learns(data, teacher, tmp_path):
    """Same seed, same labelled batches: adding unlabelled scans must change the weights."""
    from pvd_core.checkpoint import load_checkpoint

    cfg = student_config(tmp_path / "s.yaml", data, max_steps=2)
    run_pvd("distill", "--config", str(cfg), "--teacher", str(teacher), "--out", str(tmp_path / "plain"),
            "--no-progress")
    run_pvd("distill", "--config", str(cfg), "--teacher", str(teacher), "--out", str(tmp_path / "mixed"),
            "--unlabelled", str(data / "raw"), "--no-progress")
    a = load_checkpoint(tmp_path / "plain" / "last.pt").model_state
    b = load_checkpoint(tmp_path / "mixed" / "last.pt").model_state
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    plain = [r for r in read_jsonl(tmp_path / "plain" / "metrics.jsonl") if r["kind"] == "train"]
    assert all("unlabelled_points" not in r for r in plain)


def test_supervised_training_refuses_unlabelled_scans(data, tmp_path):
    import yaml

    cfg = tiny_config(tmp_path / "t.yaml", data / "labelled")
    doc = yaml.safe_load(cfg.read_text())
    doc["dataset"]["unlabelled"] = [str(data / "raw")]
    cfg.write_text(yaml.safe_dump(doc))
    proc = run_pvd("train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress", check=False)
    assert proc.returncode != 0 and "needs a teacher" in proc.stderr
