"""The distillation benchmark's pair files: the committed record a long paired design continues from.

A pair recovered from a results JSON must join only the design it came from (same teacher) and
must not be mistaken for a pair scored in full (it has no per-scan matrices)."""
from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import distill_gain  # noqa: E402
import recover_pairs  # noqa: E402

TEACHER = {"car": 92.326, "road": 95.8}


def results_doc() -> dict:
    return {"pairs": [{"seed": 3, "baseline": 50.1, "pvd": 51.7}, {"seed": 4, "baseline": 49.0, "pvd": 48.5}],
            "teacher_detail": {"miou": 94.06, "iou": TEACHER},
            "loss_curves_seg": {"baseline_s3": [2.0, 1.0, 0.8, 0.7], "pvd_s3": [2.1, 1.1, 0.9, 0.8],
                                "baseline_s4": [2.0, 1.0, 0.8, 0.75]}}


def test_recovered_pairs_keep_each_arm_miou_loss_quarters_and_the_teacher() -> None:
    pairs = recover_pairs.recovered_pairs(results_doc(), "abc123:bench/results/x.json")
    assert [p["seed"] for p in pairs] == [3, 4]
    assert pairs[0]["baseline"] == {"miou": 50.1, "loss_curve_seg": [2.0, 1.0, 0.8, 0.7]}
    assert pairs[0]["pvd"]["miou"] == 51.7
    assert pairs[1]["pvd"]["loss_curve_seg"] == []  # not in the source: left empty, never invented
    assert all(p["teacher_iou"] == TEACHER and p["recovered_from"] == "abc123:bench/results/x.json" for p in pairs)


def test_recovery_refuses_a_file_that_is_not_a_distill_gain_result() -> None:
    with pytest.raises(SystemExit, match="no 'teacher_detail'"):
        recover_pairs.recovered_pairs({"pairs": [], "loss_curves_seg": {}}, "abc:x.json")


def test_pairs_scored_against_another_teacher_are_refused(tmp_path: Path) -> None:
    sub = tmp_path / "ablations" / "no_out_p"
    sub.mkdir(parents=True)
    (tmp_path / "pair_0.json").write_text(json.dumps({"seed": 0, "teacher_iou": TEACHER}))
    distill_gain.check_pairs_teacher(tmp_path, dict(TEACHER))  # same teacher: accepted
    (sub / "pair_0.json").write_text(json.dumps({"seed": 0, "teacher_iou": {**TEACHER, "car": 90.0}}))
    with pytest.raises(SystemExit, match="no_out_p/pair_0.json: scored against a teacher"):
        distill_gain.check_pairs_teacher(tmp_path, dict(TEACHER))


def test_only_pairs_with_per_scan_matrices_count_as_scored_in_full(tmp_path: Path) -> None:
    full = {"seed": 5, "baseline": {"miou": 50.0, "iou": {"car": 90.0}}, "pvd": {"miou": 51.0, "iou": {"car": 91.0}}}
    recovered = recover_pairs.recovered_pairs(results_doc(), "abc:x.json")
    np.savez_compressed(tmp_path / "pair_5.npz", baseline=np.zeros((1, 2, 2)), pvd=np.zeros((1, 2, 2)))
    np.savez_compressed(tmp_path / "pair_3.npz", baseline=np.zeros((1, 2, 2)), pvd=np.zeros((1, 2, 2)))
    no_matrices = {**full, "seed": 6}  # per-class IoU but its .npz is gone: no bootstrap over scans possible
    # pair 3 has a stray .npz but no per-class IoU: still not scored in full
    assert distill_gain.scored_in_full(recovered + [full, no_matrices], tmp_path) == [full]


def test_loss_trace_thins_a_run_log_and_survives_a_missing_one(tmp_path: Path) -> None:
    rows = [{"kind": "train", "step": s, "seg": 2.0 / s} for s in range(1, 1001)] + [{"kind": "val", "step": 1000}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    trace = distill_gain.loss_trace(tmp_path, points=100)
    assert len(trace["step"]) == 100 and trace["step"][0] == 1 and trace["seg"][0] == 2.0
    assert distill_gain.loss_trace(tmp_path / "gone") == {"step": [], "seg": []}


def test_unlabelled_pairs_live_beside_the_results_one_folder_per_part_and_ratio(tmp_path: Path) -> None:
    import argparse

    import distill_unlabelled

    def args(ratio: float, pairs_dir=None) -> argparse.Namespace:
        return argparse.Namespace(results=tmp_path / "bench" / "x.json", pairs_dir=pairs_dir, unlabelled_ratio=ratio)

    synthetic, real = distill_unlabelled.pairs_dirs(args(1.0))
    assert synthetic == tmp_path / "bench" / "x_pairs" / "synthetic" and real == tmp_path / "bench" / "x_pairs" / "real"
    assert distill_unlabelled.pairs_dirs(args(2.0))[0].name == "synthetic_r2"
    assert distill_unlabelled.pairs_dirs(args(1.0, tmp_path / "p"))[1] == tmp_path / "p" / "real"


def test_unlabelled_reads_distill_gains_pvd_score_only_under_the_same_teacher(tmp_path: Path) -> None:
    import distill_unlabelled

    assert distill_unlabelled.scored_pvd_run(tmp_path, 3, TEACHER) is None  # nothing scored: score it here
    pvd = {"miou": 51.0, "iou": {"car": 91.0}}
    (tmp_path / "pair_3.json").write_text(json.dumps({"seed": 3, "teacher_iou": TEACHER, "pvd": pvd}))
    assert distill_unlabelled.scored_pvd_run(tmp_path, 3, TEACHER) is None  # no per-scan matrices: not in full
    np.savez_compressed(tmp_path / "pair_3.npz", baseline=np.zeros((1, 2, 2)), pvd=np.ones((1, 2, 2)))
    doc, matrices = distill_unlabelled.scored_pvd_run(tmp_path, 3, TEACHER)
    assert doc == pvd and matrices.shape == (1, 2, 2) and matrices.sum() == 4
    with pytest.raises(SystemExit, match="pair_3.json: scored against a teacher"):
        distill_unlabelled.scored_pvd_run(tmp_path, 3, {**TEACHER, "car": 80.0})


def test_a_clear_margin_is_a_lead_outside_the_baselines_seed_spread() -> None:
    pairs = [{"baseline": {"iou": {"car": v}}} for v in (88.0, 90.0, 92.0)]  # mean 90, sd 2
    sd = distill_gain.baseline_sd(pairs, "car")
    assert sd == pytest.approx(2.0)
    row = {"baseline_mean": 90.0, "baseline_sd": sd}
    assert distill_gain.clearly_ahead({**row, "teacher": 94.0})  # 2 sd ahead
    assert not distill_gain.clearly_ahead({**row, "teacher": 93.0})  # ahead, but inside the spread
    assert not distill_gain.clearly_ahead({**row, "teacher": 89.0})  # behind
    # One pair: no spread to judge by, so any lead counts; a tie never does.
    assert distill_gain.baseline_sd(pairs[:1], "car") is None
    assert distill_gain.clearly_ahead({"baseline_mean": 0.0, "baseline_sd": None, "teacher": 0.1})
    assert not distill_gain.clearly_ahead({"baseline_mean": 0.0, "baseline_sd": 0.0, "teacher": 0.0})


def test_the_queue_trains_baselines_while_the_teacher_does_and_finishes_pairs_in_seed_order() -> None:
    def job(seed: int, pvd: bool) -> distill_gain.Job:
        return distill_gain.Job((seed, 0 if pvd else 1), pvd, lambda: Path("unused"))

    teacher = distill_gain.Job((-1, 0), False, lambda: Path("unused"))
    pending = [job(s, pvd) for s in (5, 6) for pvd in (True, False)] + [teacher]
    order = []
    while (nxt := distill_gain.next_job(pending, teacher_ready=False)) is not None:
        pending.remove(nxt)
        order.append(nxt)
    # The teacher first, then every baseline; the PVD arms wait (a free worker waits with them).
    assert order[0] is teacher
    assert [j.rank for j in order[1:]] == [(5, 1), (6, 1)]
    assert [j.rank for j in pending] == [(5, 0), (6, 0)]
    # Once the teacher is there, the lowest seed goes first, its PVD arm (the longer) before its baseline.
    pending = [job(s, pvd) for s in (6, 5) for pvd in (False, True)]
    assert distill_gain.next_job(pending, teacher_ready=True).rank == (5, 0)


def test_a_free_worker_trains_a_baseline_while_the_teacher_trains(tmp_path: Path) -> None:
    """Real threads: the teacher cannot finish until the baseline has run, so with a worker that
    grabbed a PVD arm and blocked on the teacher (the race this queue once had) nothing runs."""
    trainer = distill_gain.ArmTrainer(tmp_path, tmp_path, argparse.Namespace(jobs=2))
    events: list[str] = []
    baseline_ran = threading.Event()

    def teacher() -> Path:
        assert baseline_ran.wait(10), "no baseline ran while the teacher trained"
        events.append("teacher")
        return tmp_path / "teacher.pt"

    def baseline() -> Path:
        events.append("baseline")
        baseline_ran.set()
        return tmp_path / "baseline.pt"

    try:
        trainer.queue_teacher(distill_gain.Job((-1, 0), False, teacher))
        def pvd_arm() -> Path:  # as ArmTrainer.submit's PVD arms do: needs the teacher's checkpoint
            trainer.teacher.result()
            events.append("pvd")
            return tmp_path / "pvd.pt"

        pvd = trainer.queue(distill_gain.Job((0, 0), True, pvd_arm))
        base = trainer.queue(distill_gain.Job((0, 1), False, baseline))  # queued after PVD, as main() does
        assert base.result(timeout=10) == tmp_path / "baseline.pt"
        assert pvd.result(timeout=10) == tmp_path / "pvd.pt"
        assert trainer.teacher.result(timeout=10) == tmp_path / "teacher.pt"
        assert events == ["baseline", "teacher", "pvd"]
    finally:
        trainer.close()


def test_the_exported_teacher_is_the_runs_own_or_the_harness_stops_before_training(tmp_path: Path) -> None:
    from conftest import save_tiny_checkpoint

    run_ema = save_tiny_checkpoint(tmp_path / "runs" / "teacher" / "ema.pt")
    args = argparse.Namespace(export_teacher=tmp_path / "exported.pt", teacher_steps=0, columns=600, scans=40,
                              results=tmp_path / "distill_gain.json")
    distill_gain.check_export_target(args, run_ema)  # nothing there yet: fine
    assert distill_gain.export_teacher(run_ema, args) == args.export_teacher.resolve()
    from pvd_core.checkpoint import load_checkpoint

    exported = load_checkpoint(args.export_teacher)
    assert exported.meta["stored_dtype"] == "float16" and exported.meta["exported_from"] == str(run_ema)
    distill_gain.check_export_target(args, run_ema)  # a rerun of the same design reuses it
    other = save_tiny_checkpoint(tmp_path / "other" / "runs" / "teacher" / "ema.pt", seed=1)
    with pytest.raises(SystemExit, match="exported.pt: exists, but it is not .*other"):
        distill_gain.check_export_target(args, other)
    with pytest.raises(SystemExit, match="after 500 steps"):
        distill_gain.check_export_target(argparse.Namespace(**{**vars(args), "teacher_steps": 500}), run_ema)


def test_a_teachers_margin_is_judged_only_against_baselines_of_the_same_design(tmp_path: Path) -> None:
    data = {"root": "/runs/a/data", "sensor": "vlp16", "columns": 600, "val_sequences": ["08", "09", "10"]}
    per_class = {"car": {"baseline_mean": 90.0, "baseline_sd": 2.0, "support": 100},
                 "road": {"baseline_mean": 80.0, "baseline_sd": 1.0, "support": 500}}
    ref = tmp_path / "replication.json"
    ref.write_text(json.dumps({"per_class": per_class, "data": data, "student_model": distill_gain.STUDENT_MODEL,
                               "settings": {"steps": 4000, "ema_decay": 0.99}}))
    args = argparse.Namespace(steps=4000, ema_decay=0.99)
    mine = {**data, "root": "/runs/b/data"}  # another work folder of the same design: fine
    assert distill_gain.margin_reference(ref, mine, args) == per_class
    with pytest.raises(SystemExit, match="replication.json: another design \\(steps differ\\)"):
        distill_gain.margin_reference(ref, mine, argparse.Namespace(steps=2000, ema_decay=0.99))
    with pytest.raises(SystemExit, match="columns differ"):
        distill_gain.margin_reference(ref, {**mine, "columns": 120}, args)

    margin = distill_gain.teacher_margin({"car": 95.0, "road": 81.0}, {"car": 100, "road": 500}, per_class)
    assert margin["clearly_ahead_on"] == ["car"]  # road: ahead by 1, inside 2 sds
    assert margin["per_class"]["road"] == {"teacher": 81.0, "baseline_mean": 80.0, "baseline_sd": 1.0,
                                           "lead": 1.0, "clearly_ahead": False}
    assert distill_gain.teacher_margin({"car": 85.0}, {"car": 100}, per_class)["not_ahead_on"] == ["car"]
    with pytest.raises(SystemExit, match="support differs in \\['road'\\]"):  # other validation scans
        distill_gain.teacher_margin({"car": 95.0, "road": 81.0}, {"car": 100, "road": 499}, per_class)


def test_the_teachers_result_file_keeps_its_first_writing_unless_a_rerun_adds_a_margin(tmp_path: Path) -> None:
    """A later session passes the committed teacher as --teacher: its folder has no loss log, so a
    rewrite would drop the loss curve and the command that made the file."""
    from types import SimpleNamespace

    names = ["car", "road"]
    scorer = SimpleNamespace(teacher=SimpleNamespace(label_map=SimpleNamespace(class_names=names)), classes=[0, 1],
                             support=lambda: {"car": 100, "road": 500})
    first = {"miou": 88.0, "iou": {"car": 95.0, "road": 81.0}, "steps": 8000, "loss_curve_seg": [1.3, 0.7, 0.5, 0.4],
             "checkpoint": "models/bench/t.pt"}
    args = argparse.Namespace(results=tmp_path / "design.json", ema_decay=0.99, margin_against=None, steps=4000)
    path = distill_gain.publish_teacher(args, scorer, first, {}, {}, "python first")
    assert path == tmp_path / "design_teacher.json" and path.with_suffix(".md").is_file()
    rerun = {**first, "loss_curve_seg": []}  # the same teacher given as a file: no loss log
    distill_gain.publish_teacher(args, scorer, rerun, {}, {}, "python rerun")
    assert json.loads(path.read_text())["command"] == "python first"
    assert json.loads(path.read_text())["teacher"]["loss_curve_seg"] == [1.3, 0.7, 0.5, 0.4]

    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"per_class": {"car": {"baseline_mean": 90.0, "baseline_sd": 2.0, "support": 100},
                                             "road": {"baseline_mean": 80.0, "baseline_sd": 1.0, "support": 500}},
                               "data": {}, "student_model": distill_gain.STUDENT_MODEL,
                               "settings": {"steps": 4000, "ema_decay": 0.99}}))
    with_margin = argparse.Namespace(**{**vars(args), "margin_against": ref})
    distill_gain.publish_teacher(with_margin, scorer, first, {}, {}, "python margin")
    doc = json.loads(path.read_text())
    assert doc["command"] == "python margin" and doc["margin_against"]["clearly_ahead_on"] == ["car"]
    assert "| car | 100 | 95.00 | 90.00 | 2.00 | +5.00 | yes |" in path.with_suffix(".md").read_text()
    distill_gain.publish_teacher(args, scorer, rerun, {}, {}, "python rerun")  # no margin given: kept
    assert json.loads(path.read_text())["command"] == "python margin"
    distill_gain.publish_teacher(args, scorer, {**first, "iou": {"car": 96.0, "road": 81.0}}, {}, {}, "python other")
    assert json.loads(path.read_text())["command"] == "python other"  # another teacher is written


def test_a_results_files_settings_are_plain_json_with_every_path_option_given(tmp_path: Path) -> None:
    """The 4000/8000 design's command as run: its first summary, after hours of training, must not
    fail on a Path (``--margin-against`` once did) nor record where this machine keeps its runs."""
    repo = Path(__file__).resolve().parents[1]
    reference = repo / "bench" / "results" / "distill_gain_students4000_replication.json"
    args = distill_gain.parser().parse_args([
        "--out", str(tmp_path / "runs"), "--steps", "4000", "--teacher-steps", "8000",
        "--teacher", str(repo / "models" / "bench" / "synthetic_teacher8000.pt"),
        "--results", str(tmp_path / "design.json"), "--pairs-dir", str(tmp_path / "pairs"),
        "--margin-against", str(reference)])
    settings = json.loads(json.dumps(distill_gain.run_settings(args)))
    assert settings["margin_against"] == "bench/results/distill_gain_students4000_replication.json"
    assert settings["steps"] == 4000 and settings["teacher_steps"] == 8000
    assert not {"out", "results", "pairs_dir", "teacher", "export_teacher"} & set(settings)
    assert str(tmp_path) not in json.dumps(settings)
