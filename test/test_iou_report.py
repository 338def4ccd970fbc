"""The one IoU report of the bag commands (``pvd_bag eval`` and ``pvd_bag replay``)."""
from __future__ import annotations

import numpy as np

from pvd_core.metrics import compute_iou, format_iou_table, iou_report, metrics_dict

NAMES = ["unlabeled", "car", "road", "pole"]


def test_iou_report_is_metrics_dict_and_table_under_bag_names() -> None:
    matrix = np.array([[5, 0, 0, 0],
                       [0, 8, 2, 0],
                       [0, 1, 9, 0],
                       [0, 0, 0, 0]])  # no ground-truth pole: absent from the mean
    report = iou_report(matrix, NAMES)
    scores = metrics_dict(compute_iou(matrix), NAMES)
    assert list(report) == ["miou", "iou", "classes", "absent_classes", "scored_points", "table"]
    assert report["miou"] == scores["miou"] and report["iou"] == scores["iou"]
    assert report["classes"] == ["car", "road"] and report["absent_classes"] == ["pole"]
    assert report["scored_points"] == 20  # class-0 rows are not scored
    assert report["table"] == format_iou_table(compute_iou(matrix), NAMES)
    assert report["iou"]["pole"] is None and report["miou"] == round(100 * (8 / 11 + 9 / 12) / 2, 4)
