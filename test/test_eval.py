"""`pvd eval` and in-training validation: one confusion matrix through the Segmenter.

The expected figures are recomputed here independently (per-class TP / FP / FN from the
Segmenter's predictions with numpy), and the validation mIoU a training run records for
best.pt must be exactly what `pvd eval` reports for that checkpoint.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pvd_core.cli import main as pvd_main
from test_train import one_thread, read_jsonl, run_pvd, tiny_config, write_tiny_kitti  # noqa: F401

UNLABELLED = 100  # points of each validation scan relabelled to raw 0 (class 0)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval_data")
    write_tiny_kitti(root, ("00",), scans=2, seed=6)
    write_tiny_kitti(root, ("08",), scans=2, seed=7)
    for label_file in sorted((root / "sequences" / "08" / "labels").glob("*.label")):
        raw = np.fromfile(label_file, dtype=np.uint32)
        raw[:UNLABELLED] = 0
        raw.tofile(label_file)
    return root


@pytest.fixture(scope="module")
def checkpoint(data, tmp_path_factory) -> Path:
    """An untrained but deterministic tiny model saved in the one checkpoint format."""
    from pvd_core.checkpoint import save_checkpoint
    from pvd_core.config import load_config
    from pvd_core.labels import label_map_for
    from pvd_core.models.cylinder3d import build_model

    work = tmp_path_factory.mktemp("eval_ckpt")
    cfg = load_config(tiny_config(work / "cfg.yaml", data, init_size=2))
    torch.manual_seed(11)
    model = build_model(cfg)
    path = work / "model.pt"
    save_checkpoint(path, model, cfg, label_map_for("semantickitti"), {"step": 0})
    return path


def expected_metrics(checkpoint: Path, data: Path, tta: int = 1) -> tuple[float, dict, int]:
    from pvd_core.data.dataset import read_scan
    from pvd_core.data.semantickitti import scan_files
    from pvd_core.segmenter import Segmenter

    seg = Segmenter.from_checkpoint(checkpoint, device="cpu", tta=tta)
    names = seg.label_map.class_names
    preds, gts = [], []
    for pts_path, lab_path in scan_files(data, ["08"]):
        pts, labels = read_scan("semantickitti", pts_path, lab_path, seg.label_map)
        preds.append(seg.segment(pts).labels.astype(np.int64))
        gts.append(labels.astype(np.int64))
    pred, gt = np.concatenate(preds), np.concatenate(gts)
    keep = gt != 0
    pred, gt = pred[keep], gt[keep]
    ious = {}
    for c in range(1, len(names)):
        tp = np.sum((pred == c) & (gt == c))
        union = np.sum((pred == c) | (gt == c))
        # the mean is over the classes with ground-truth points, whatever was predicted
        ious[names[c]] = None if not np.any(gt == c) else 100.0 * tp / union
    present = [v for v in ious.values() if v is not None]
    return float(np.mean(present)), ious, int(keep.sum())


def test_eval_json_and_png_match_an_independent_computation(checkpoint, data, tmp_path, capsys, one_thread):
    out = tmp_path / "report.json"
    code = pvd_main(["eval", "--checkpoint", str(checkpoint), "--data-root", str(data), "--sequences", "8",
                     "--json", str(out), "--device", "cpu", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "absent (no ground-truth point" in printed
    report = json.loads(out.read_text())
    for key in ("miou", "iou", "points", "classes", "absent_classes"):
        assert key in report
    miou, ious, points = expected_metrics(checkpoint, data)
    assert report["points"] == points == 2 * (1200 - UNLABELLED)  # class-0 points excluded
    assert report["miou"] == pytest.approx(miou, abs=1e-3)
    for name, value in ious.items():
        assert (report["iou"][name] is None) == (value is None), name
        if value is not None:
            assert report["iou"][name] == pytest.approx(value, abs=1e-3), name
    assert sorted(report["absent_classes"]) == sorted(n for n, v in ious.items() if v is None)
    assert report["classes"] == [n for n, v in ious.items() if v is not None]
    assert report["sequences"] == ["08"] and report["tta"] == 1
    png = tmp_path / "report_confusion.png"
    assert png.is_file() and png.stat().st_size > 5000


def test_eval_with_tta_and_default_output_folder(checkpoint, data, one_thread):
    proc = run_pvd("eval", "--checkpoint", str(checkpoint), "--data-root", str(data), "--sequences", "08",
                   "--tta", "2", "--device", "cpu", "--no-progress")
    out = checkpoint.parent / "eval" / "model_seq08_tta2.json"
    assert str(out) in proc.stdout
    report = json.loads(out.read_text())
    miou, _, _ = expected_metrics(checkpoint, data, tta=2)
    assert report["tta"] == 2 and report["miou"] == pytest.approx(miou, abs=1e-3)
    assert (checkpoint.parent / "eval" / "model_seq08_tta2_confusion.png").is_file()


def test_training_validation_equals_pvd_eval_of_best(data, tmp_path):
    cfg = tiny_config(tmp_path / "cfg.yaml", data, init_size=2, max_steps=2, val_every=2, checkpoint_every=2)
    run_pvd("train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress")
    val = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "val"]
    in_training = json.loads((tmp_path / "run" / "eval" / "val_best.json").read_text())
    assert val[-1]["miou"] == pytest.approx(in_training["miou"], abs=1e-3)
    out = tmp_path / "eval.json"
    run_pvd("eval", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--json", str(out), "--device", "cpu",
            "--no-progress")  # data root and sequences from the checkpoint's config
    report = json.loads(out.read_text())
    assert report["miou"] == pytest.approx(in_training["miou"], abs=1e-6)
    assert report["iou"] == in_training["iou"]
    assert report["points"] == in_training["points"]


def test_eval_of_missing_sequence_names_it(checkpoint, data, capsys):
    code = pvd_main(["eval", "--checkpoint", str(checkpoint), "--data-root", str(data), "--sequences", "42",
                     "--device", "cpu", "--no-progress"])
    assert code == 1
    assert "42" in capsys.readouterr().err
