"""Evaluation metrics: confusion matrix against a per-point loop, IoU/mIoU with absent classes,
the JSON dict, the text table, the PNG, and a real label file scored against itself."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pvd_core.metrics import (ConfusionMatrix, compute_iou, format_iou_table, iou_per_class, metrics_dict,
                              save_confusion_png)

NAMES = ["unlabeled", "car", "road", "person", "pole", "sign"]


def test_confusion_matrix_matches_loop_and_excludes_label_zero():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 6, 1000)
    pred = rng.integers(0, 6, 1000)
    cm = ConfusionMatrix(6)
    cm.update(pred[:600], target[:600])
    cm.update(torch.from_numpy(pred[600:]), torch.from_numpy(target[600:]))  # torch input, same counts
    want = np.zeros((6, 6), np.int64)
    for p, t in zip(pred, target):
        if t != 0:
            want[t, p] += 1
    np.testing.assert_array_equal(cm.matrix, want)
    assert cm.points == int((target != 0).sum())
    other = ConfusionMatrix(6)
    other.update(pred, target)
    np.testing.assert_array_equal(cm.merge(other).matrix, 2 * want)
    with pytest.raises(ValueError, match="pred"):
        cm.update(np.array([6]), np.array([1]))
    with pytest.raises(ValueError, match="target"):
        cm.update(np.array([1]), np.array([-1]))
    with pytest.raises(ValueError, match="entries"):
        cm.update(np.array([1, 2]), np.array([1]))


def test_iou_known_values_and_absent_class():
    m = np.zeros((6, 6), np.int64)
    m[1, 1], m[1, 2] = 8, 2  # car: TP 8, FN 2
    m[2, 2], m[2, 1] = 5, 0  # road: TP 5, FP 2 (from car)
    m[3, 0] = 4  # person: predicted as 0 -> TP 0, FN 4, union 4
    # pole (4): never in the ground truth and never predicted -> absent
    m[5, 5] = 3  # sign: perfect
    iou = iou_per_class(m)
    assert np.isnan(iou[0]) and np.isnan(iou[4])
    np.testing.assert_allclose(iou[[1, 2, 3, 5]], [8 / 10, 5 / 7, 0.0, 1.0])
    result = compute_iou(m)
    assert result.absent == [4]
    assert result.num_present == 4
    assert result.miou == pytest.approx(np.mean([0.8, 5 / 7, 0.0, 1.0]))
    assert result.points == 22

    d = metrics_dict(result, NAMES)
    assert set(d) == {"miou", "iou", "points", "classes", "absent_classes"}
    assert d["classes"] == ["car", "road", "person", "sign"]
    assert d["miou"] == pytest.approx(100 * result.miou, abs=1e-3)
    assert d["iou"]["pole"] is None and d["iou"]["car"] == pytest.approx(80.0)
    assert "unlabeled" not in d["iou"]
    assert d["absent_classes"] == ["pole"] and d["points"] == 22
    json.dumps(d, allow_nan=False)  # strictly valid JSON: no NaN anywhere

    table = format_iou_table(result, NAMES)
    assert "absent" in table and "pole" in table
    assert f"{100 * result.miou:.2f}" in table
    assert "over 4 of 5 classes" in table
    assert "80.00" in table
    with pytest.raises(ValueError, match="class names"):
        format_iou_table(result, NAMES[:-1])


def test_empty_matrix_reports_nan_miou_as_null():
    result = ConfusionMatrix(4).result()
    assert np.isnan(result.miou) and result.absent == [1, 2, 3]
    d = metrics_dict(result, ["unlabeled", "a", "b", "c"])
    assert d["miou"] is None and d["points"] == 0
    json.dumps(d, allow_nan=False)


def test_save_confusion_png(tmp_path):
    import matplotlib.image as mpimg

    rng = np.random.default_rng(1)
    cm = ConfusionMatrix(6)
    cm.update(rng.integers(1, 6, 500), rng.integers(0, 6, 500))
    path = save_confusion_png(cm.matrix, NAMES, tmp_path / "sub" / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 300
    with pytest.raises(ValueError, match="class names"):
        save_confusion_png(cm.matrix, NAMES[:3], tmp_path / "bad.png")


def test_class_set_comes_from_ground_truth_not_predictions():
    m = np.zeros((6, 6), np.int64)
    m[1, 1], m[2, 2], m[5, 5] = 10, 10, 10
    before = compute_iou(m)
    assert before.classes == [1, 2, 5] and before.miou == pytest.approx(1.0)
    # One point of car predicted as pole (4), a class with no ground-truth point: pole stays out
    # of the mean (it was not entered at IoU 0); the miss costs car alone.
    m[1, 1], m[1, 4] = 9, 1
    after = compute_iou(m)
    assert after.classes == before.classes and after.absent == [3, 4]
    assert np.isnan(after.iou[4])
    assert after.miou == pytest.approx(np.mean([0.9, 1.0, 1.0]))
    # A class listed by the caller is scored even where nothing saw or predicted it (IoU 0).
    fixed = compute_iou(m, classes=[1, 2, 3, 5])
    assert fixed.classes == [1, 2, 3, 5] and fixed.iou[3] == 0.0
    assert fixed.miou == pytest.approx(np.mean([0.9, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="outside"):
        compute_iou(m, classes=[0, 1])


def test_real_labels_scored_against_themselves(real_label_path):
    from pvd_core.data.semantickitti import read_labels
    from pvd_core.labels import SEMANTIC_KITTI

    labels = read_labels(real_label_path)
    cm = ConfusionMatrix(SEMANTIC_KITTI.num_classes)
    cm.update(labels, labels)
    result = cm.result()
    in_scan = set(np.unique(labels).tolist()) - {0}
    assert result.miou == pytest.approx(1.0)
    assert set(result.absent) == set(range(1, SEMANTIC_KITTI.num_classes)) - in_scan
    assert result.points == int((labels != 0).sum())
    # Shift every prediction of one class to another: exactly those two IoUs drop.
    pred = labels.astype(np.int64).copy()
    victim = max(in_scan, key=lambda c: int((labels == c).sum()))
    pred[labels == victim] = 1 if victim != 1 else 9
    broken = ConfusionMatrix(SEMANTIC_KITTI.num_classes)
    broken.update(pred, labels)
    assert broken.result().iou[victim] == 0.0
    assert broken.result().miou < 1.0
    table = format_iou_table(broken.result(), SEMANTIC_KITTI.class_names)
    assert SEMANTIC_KITTI.class_names[victim] in table
