#!/usr/bin/env python3
"""Distillation benchmark with power: paired seeds until the 95 % CI of PVD's gain is decisive.

Design (issue 11), on `pvd synth` data:

- Training: 4 towns (sequences 00-03, town seed 1). Validation: ``--val-towns`` unseen towns
  (sequences 08, 09, 10, ... with town seeds 2, 3, 4, ...) x ``--val-scans`` scans.
- Cost ratio of the paper: teacher init_size 8 (synthetic_teacher.yaml); students init_size 4
  with the point MLPs halved as in the paper student (STUDENT_MODEL below), about 0.26x the
  teacher's MACs on a VLP-16 scan on the 128 x 128 x 16 grid. ``pvd profile`` measures both on
  a validation scan and the ratio is written to the results (``macs``).
- Fairness: the teacher trains at least as long as the students (``--teacher-steps`` >=
  ``--steps``, enforced). Every run is scored by an **EMA of its weights** (``train.ema_decay``,
  RUN_DIR/ema.pt), not by its last step, and none uses validation to pick a checkpoint.
- Pairs: seed s trains a baseline student (L_seg) and a PVD student (synthetic_distill.yaml)
  with the same train.seed (same init, data order, augmentation), then scores both on every
  validation scan (per-scan confusion matrices) and measures their fidelity to the teacher
  (top-1 agreement, KL(teacher || student)). One file per pair, PAIRS/pair_<seed>.json (+ .npz of
  the per-scan confusion matrices), where PAIRS (``--pairs-dir``) defaults to a folder beside
  ``--results``: in the repo, committed as pairs land, so the design outlives the work folder
  (checkpoints stay in ``--out``; runs with last.pt resume); so does its teacher, when
  ``--export-teacher PATH`` writes it as a committable float16 file that the arms then distil from
  and the pairs are scored against (later sessions pass it as ``--teacher``). Every pair file names the teacher it
  was scored against (its per-class IoU), and the harness refuses a pairs folder scored against
  another teacher. A pair file without its .npz (recovered from a results JSON by
  bench/recover_pairs.py) counts in the paired-t verdict; the per-scan and per-class figures
  then cover the pairs that have them, and the results name those seeds. After each pair the
  paired-t 95 % CI of the mean gain is recomputed; the loop stops when it is decisive
  (lower bound > 0, or upper bound < ``--margin``) with at least ``--min-pairs`` pairs, or at
  ``--max-pairs``.
- Scheduling: ``--jobs`` trainings run at once from one queue (ArmTrainer). The teacher and the
  arms of the first ``--min-pairs`` seeds (needed whatever the verdict) are queued at the start: the
  baselines, which need no teacher, train while it does, and pairs still finish in seed order; later
  seeds are trained a pair at a time, as the rule asks for them.
- The teacher, once trained and scored, is written to RESULTS_teacher.json (+ .md) at once: per-class
  IoU and support and, with ``--margin-against`` an earlier results file of the same design, its lead
  over those baselines class by class (the clear-margin rule), so whether a teacher is fair is known
  before hours of pairs (kept as first written unless a later run adds a margin). ``--teacher-only``
  stops there; ``--jobs 1`` gives a lone teacher every core.
- Ablations: each of the four terms off and the three other samplers, ``--ablation-pairs``
  seeds each, paired against full PVD at the same seed.
- mIoU is over one fixed class list, the classes present in the validation ground truth
  (the same for every model), named in the results.

Results: ``--results`` (default bench/results/distill_gain.json) and a .md next to it,
rewritten after every pair. The committed results (8 pairs about 2.5 hours of 2 CPU cores:
teacher 28 min, each student 4-7 min, scoring 2-5 min per pair; each variant 4 x 7 min more):

    python bench/distill_gain.py --out /tmp/distill_gain --steps 300 --teacher-steps 1000 --scans 40 \\
        --val-towns 3 --val-scans 40 --columns 600 --ema-decay 0.99 --min-pairs 8 --max-pairs 8 \\
        --ablations temperature_4 no_out_p no_out_v no_aff_p no_aff_v sampler_random sampler_class \\
        sampler_distance --ablation-pairs 4 --jobs 2

Without ``--ablations`` every entry of ABLATIONS runs; ``--ablations`` with no names runs none.

Smoke test (minutes, writes to /tmp only):

    python bench/distill_gain.py --out /tmp/dg_smoke --steps 4 --teacher-steps 4 --scans 2 --val-towns 3 \\
        --val-scans 2 --columns 120 --ema-decay 0.5 --min-pairs 2 --max-pairs 2 --ablation-pairs 1 \\
        --ablations no_out_p sampler_random --results /tmp/dg_smoke/distill_gain.json
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import yaml

from result_files import figure, repo_relative, save_figure  # bench/ is on sys.path for a script run from it

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
TRAIN_SEQUENCES = ["00", "01", "02", "03"]
TRAIN_TOWN_SEED = 1
SENSOR = "vlp16"
# The paper student: half the UNet width (init_size 4 vs 8) and halved point MLPs.
STUDENT_MODEL = {"init_size": 4, "point_generator_dims": [32, 64, 128, 128], "point_head_dims": [32, 32, 32]}
ABLATIONS: dict[str, dict[str, Any]] = {
    "no_out_p": {"alpha_p": 0.0},
    "no_out_v": {"alpha_v": 0.0},
    "no_aff_p": {"beta_p": 0.0},
    "no_aff_v": {"beta_v": 0.0},
    "sampler_random": {"sampler": "random"},
    "sampler_class": {"sampler": "class"},
    "sampler_distance": {"sampler": "distance"},
    # Tuning (issue 11 item 4), paired against full PVD the same way: softer teacher distributions.
    "temperature_4": {"temperature": 4.0},
    # Stronger distillation: the review found the KD terms small against the segmentation loss.
    "output_kl_x3": {"alpha_p": 3.0, "alpha_v": 3.0},
    "affinity_x10": {"beta_p": 10.0, "beta_v": 10.0},
    # Where the output KL applies (docs/method.md 4.1): only where the teacher is confident
    # (top-1 >= 0.8), or weighted by the supervoxel sampler (rare classes, far ranges).
    "kl_confidence": {"kl_weighting": "confidence", "kl_min_confidence": 0.8},
    "kl_supervoxel": {"kl_weighting": "supervoxel"},
    # Where the affinity features come from (docs/method.md 4.5): class probabilities, not features.
    "affinity_probabilities": {"affinity_source": "probabilities"},
}


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str], log: Path, threads: int = 1) -> None:
    """Run one tool (``pvd``: the one installed beside this interpreter, so a venv need not be active)."""
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1",
               PATH=os.pathsep.join([bin_dir, os.environ.get("PATH", "")]))
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}), see {log}: {shlex.join(cmd)}")


def write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


def val_sequences(towns: int) -> list[tuple[str, int]]:
    """(sequence, town seed) of the validation towns: 08, 09, ... with seeds 2, 3, ... (unseen)."""
    return [(f"{8 + i:02d}", TRAIN_TOWN_SEED + 1 + i) for i in range(towns)]


def make_data(data: Path, args: argparse.Namespace, log: Path) -> dict[str, Any]:
    seqs = [(s, args.scans, TRAIN_TOWN_SEED) for s in TRAIN_SEQUENCES]
    seqs += [(s, args.val_scans, seed) for s, seed in val_sequences(args.val_towns)]
    for seq, n, seed in seqs:
        if not (data / "sequences" / seq / "synth.json").is_file():
            run(["pvd", "synth", "--out", str(data), "--sequence", seq, "--scans", str(n), "--sensor", SENSOR,
                 "--columns", str(args.columns), "--seed", str(seed), "--quiet"], log)
    return {"root": str(data), "sensor": SENSOR, "columns": args.columns, "train_sequences": TRAIN_SEQUENCES,
            "train_scans_per_sequence": args.scans, "train_town_seed": TRAIN_TOWN_SEED,
            "val_sequences": [s for s, _ in val_sequences(args.val_towns)],
            "val_town_seeds": [t for _, t in val_sequences(args.val_towns)], "val_scans_per_sequence": args.val_scans}


def write_config(out: Path, name: str, base: str, args: argparse.Namespace, seed: int,
                 distill: Optional[dict[str, Any]] = None, student: bool = True) -> Path:
    """A variant config: ``base`` from config/, the student model, no in-training validation, EMA on."""
    data = yaml.safe_load((REPO / "config" / base).read_text())
    if student:
        data["model"].update(STUDENT_MODEL)
    data["dataset"]["val_sequences"] = []  # scored afterwards on the held-out towns, never used to pick
    data["train"].update({"seed": seed, "ema_decay": args.ema_decay, "max_steps": args.teacher_steps if not student
                          else args.steps, "checkpoint_every": max(1, min(200, args.steps // 4))})
    if distill is not None:
        data["distill"].update(distill)
    path = out / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def train(out: Path, data: Path, name: str, cfg: Path, steps: int, teacher: Optional[Path],
          extra: tuple[str, ...] = (), threads: int = 1) -> Path:
    """Train (or resume, or reuse) one run; returns its EMA checkpoint. ``extra``: more CLI flags."""
    run_dir = out / "runs" / name
    if (run_dir / "ema.pt").is_file():
        from pvd_core.checkpoint import load_checkpoint

        if int(load_checkpoint(run_dir / "ema.pt").meta.get("step", 0)) >= steps:
            return run_dir / "ema.pt"
    cmd = ["pvd", "distill" if teacher else "train", "--config", str(cfg), "--data-root", str(data),
           "--out", str(run_dir), "--max-steps", str(steps), "--threads", str(threads), "--no-progress", *extra]
    if teacher:
        cmd[4:4] = ["--teacher", str(teacher)]
    if (run_dir / "last.pt").is_file():
        cmd.append("--resume")
    say(f"{name}: {'distill' if teacher else 'train'} {steps} steps")
    run(cmd, out / "logs" / f"{name}.log", threads)
    return run_dir / "ema.pt"


def given_teacher(args: argparse.Namespace) -> Path:
    """``--teacher``, checked against the design: trained ``--teacher-steps`` steps (its meta says)."""
    from pvd_core.checkpoint import load_checkpoint

    path = args.teacher.resolve()
    if not path.is_file():
        raise SystemExit(f"--teacher {path}: no such file")
    steps = int(load_checkpoint(path).meta.get("step", 0))
    if steps != args.teacher_steps:
        raise SystemExit(f"--teacher {path}: trained {steps} steps, but --teacher-steps is {args.teacher_steps}")
    return path


def check_export_target(args: argparse.Namespace, teacher_ema: Path) -> None:
    """Fail at once, not after hours of teacher training, if ``--export-teacher`` holds another teacher."""
    from pvd_core.checkpoint import load_checkpoint

    dest = args.export_teacher
    if dest is None or not dest.is_file():
        return
    meta = load_checkpoint(dest).meta
    if meta.get("exported_from") != str(teacher_ema) or int(meta.get("step", 0)) != args.teacher_steps:
        raise SystemExit(f"--export-teacher {dest}: exists, but it is not {teacher_ema} after "
                         f"{args.teacher_steps} steps; pass it as --teacher, or choose another path")


def export_teacher(teacher_ema: Path, args: argparse.Namespace) -> Path:
    """The teacher as a committable file (float16, as ``pvd export --half``): a design outlives its work
    folder only with its own teacher, so the arms distil from, and the pairs are scored against, this
    file, the one a later session passes as ``--teacher``."""
    import torch

    from pvd_core.checkpoint import export_checkpoint

    dest = args.export_teacher.resolve()
    if not dest.is_file():
        trained_on = (f"pvd synth streets, sensor {SENSOR}, {args.columns} columns: {len(TRAIN_SEQUENCES)} towns "
                      f"(sequences {TRAIN_SEQUENCES[0]}-{TRAIN_SEQUENCES[-1]}, town seed {TRAIN_TOWN_SEED}) x "
                      f"{args.scans} scans; {args.teacher_steps} steps (bench/distill_gain.py)")
        export_checkpoint(teacher_ema, dest, {"trained_on": trained_on, "licence": None,
                                              "miou_note": f"teacher of {repo_relative(args.results.resolve())}"},
                          float_dtype=torch.float16)
        say(f"teacher exported to {repo_relative(dest)} ({dest.stat().st_size / 1e6:.1f} MB); commit it")
    return dest


def train_rows(run_dir: Path, key: str) -> list[dict[str, Any]]:
    """The run's logged training lines that carry ``key`` (none when its log is gone)."""
    from pvd_core.training.run_log import read_metrics

    log = run_dir / "metrics.jsonl"
    return [r for r in read_metrics(log) if r.get("kind") == "train" and r.get(key) is not None] \
        if log.is_file() else []


def loss_curve(run_dir: Path, key: str = "seg") -> list[Optional[float]]:
    """Mean ``key`` loss over each quarter of the run: flat last quarters = a converged run."""
    values = [r[key] for r in train_rows(run_dir, key)]
    if not values:
        return []
    return [round(float(np.mean(q)), 4) if len(q) else None for q in np.array_split(np.asarray(values), 4)]


def complete_quarters(quarters: list[Optional[float]]) -> bool:
    """Four quarters each with a logged loss (a run shorter than four logging windows has empty ones)."""
    return len(quarters) == 4 and None not in quarters


def last_quarter_fall(quarters: list[float]) -> float:
    """Relative fall of the loss from the third to the last quarter of a run: near 0 once it has flattened
    (under a cosine schedule it never reaches 0, the learning rate keeps shrinking the loss)."""
    return (quarters[2] - quarters[3]) / quarters[2]


def loss_trace(run_dir: Path, key: str = "seg", points: int = 100) -> dict[str, list]:
    """The logged ``key`` loss against the step, thinned to about ``points`` rows: small enough for a
    committed pair file, so the loss picture survives the run folder."""
    rows = train_rows(run_dir, key)
    rows = rows[::max(1, len(rows) // points)]
    return {"step": [int(r["step"]) for r in rows], key: [round(float(r[key]), 5) for r in rows]}


def plot_seg_loss(out: Path, pairs: list[dict[str, Any]], path: Path) -> Optional[Path]:
    """Segmentation loss of every run against the step (as logged: the mean of each logging window),
    with the teacher's: shows whether the students' curves have flattened. A run's curve comes from its
    pair file (``seg_loss_trace``) or else its run folder; None when no run has either."""

    def curve(run: str, doc: Optional[dict[str, Any]] = None) -> Optional[tuple[np.ndarray, np.ndarray]]:
        trace = (doc or {}).get("seg_loss_trace") or loss_trace(out / "runs" / run)
        if not trace["step"]:
            return None
        return np.array(trace["step"]), np.array(trace["seg"], dtype=float)

    students = {arm: [c for c in (curve(f"{arm}_s{p['seed']}", p[arm]) for p in pairs) if c is not None]
                for arm in ("baseline", "pvd")}
    if not any(students.values()):
        return None
    fig, ax = figure((8, 4.5))
    for (arm, curves), colour in zip(students.items(), ("tab:blue", "tab:orange")):
        for i, c in enumerate(curves):
            ax.plot(*c, color=colour, alpha=0.6, linewidth=1.0, label=arm if i == 0 else None)
    teacher = curve("teacher")
    if teacher is not None:
        ax.plot(*teacher, color="black", linewidth=1.5, label="teacher")
    ax.set_xlabel("step")
    ax.set_ylabel("segmentation loss (logged window means)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Are the students converged? Segmentation loss of every run")
    return save_figure(fig, path)


def plot_sequential(pairs: list[dict[str, Any]], margin: float, min_pairs: int, path: Path) -> Optional[Path]:
    """The sequential rule as a picture: every pair's gain, and the mean with its paired-t 95 % CI after
    each pair, against the two decision bounds (0 and ``margin``). Shows at a glance how far from a
    decision a run is and whether one pair carries it. None with fewer than two pairs."""
    if len(pairs) < 2:
        return None
    from pvd_core.paired_stats import running_ci

    gains = np.array([p["pvd"] - p["baseline"] for p in pairs])
    n = np.arange(2, len(pairs) + 1)
    lo, hi = (bound[0, 1:] for bound in running_ci(gains[None, :]))
    fig, ax = figure((8, 5.5))
    ax.fill_between(n, lo, hi, color="tab:orange", alpha=0.25, label="paired-t 95 % CI of the mean gain")
    ax.plot(n, np.cumsum(gains)[1:] / n, color="tab:orange", marker="o", label="mean gain after n pairs")
    ax.scatter(np.arange(1, len(pairs) + 1), gains, color="tab:blue", zorder=3,
               label="gain of each pair (seeds in order)")
    ax.axhline(0.0, color="black", linewidth=1.0)
    ax.axhline(margin, color="tab:green", linestyle="--", linewidth=1.0,
               label=f"margin +{margin:g}: an upper bound below it decides 'no useful gain'")
    ax.axvline(min_pairs, color="grey", linestyle=":", linewidth=1.0, label=f"min pairs ({min_pairs})")
    # The first CIs (2-3 pairs) are tens of mIoU wide; scale to the pairs' own gains so the late ones read.
    span = 1.5 * max(max(abs(g) for g in gains), margin)
    ax.set_ylim(-span, span)
    ax.set_xlabel("pairs")
    ax.set_ylabel("PVD - baseline (mIoU)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    ax.set_title("Sequential test: decided once the CI clears 0 or falls below the margin")
    return save_figure(fig, path)


class Scorer:
    """Scores checkpoints on the validation towns: per-scan matrices, mIoU over fixed classes, fidelity."""

    def __init__(self, teacher_ckpt: Path, data: Path, args: argparse.Namespace) -> None:
        from pvd_core.segmenter import Segmenter

        self.teacher = Segmenter.from_checkpoint(teacher_ckpt, device="cpu")
        root = data / "sequences"
        self.files = [(str(p), str(root / s / "labels" / (p.stem + ".label")))
                      for s, _ in val_sequences(args.val_towns) for p in sorted((root / s / "velodyne").glob("*.bin"))]
        self.teacher_matrices = self.matrices(self.teacher)
        from pvd_core.metrics import gt_classes

        self.classes = gt_classes(self.teacher_matrices.sum(axis=0))  # ground truth only: same for every model
        self.teacher_logits: dict = {}  # the teacher runs once per validation scan, whatever the students

    def matrices(self, segmenter) -> np.ndarray:
        from pvd_core.evaluation import evaluate_files

        return evaluate_files(segmenter, self.files, "semantickitti", segmenter.label_map, progress=False,
                              per_scan=True).scan_matrices

    def miou(self, matrices: np.ndarray) -> float:
        return round(self.miou_over(matrices, self.classes), 4)

    @staticmethod
    def miou_over(matrices: np.ndarray, classes: list[int]) -> float:
        from pvd_core.metrics import compute_iou

        return 100.0 * compute_iou(matrices.sum(axis=0), classes).miou

    def iou(self, matrices: np.ndarray) -> dict[str, float]:
        from pvd_core.metrics import compute_iou

        names = self.teacher.label_map.class_names
        res = compute_iou(matrices.sum(axis=0), self.classes)
        return {names[c]: round(100.0 * float(res.iou[c]), 3) for c in self.classes}

    def support(self) -> dict[str, int]:
        """Validation ground-truth points per scored class: a class of a few dozen points is scored on noise."""
        names = self.teacher.label_map.class_names
        rows = self.teacher_matrices.sum(axis=0).sum(axis=1)  # confusion rows are the ground truth
        return {names[c]: int(rows[c]) for c in self.classes}

    def score(self, ckpt: Path) -> tuple[dict[str, Any], np.ndarray]:
        from pvd_core.fidelity import fidelity_on_files
        from pvd_core.segmenter import Segmenter

        seg = Segmenter.from_checkpoint(ckpt, device="cpu")
        m = self.matrices(seg)
        fid = fidelity_on_files(seg, self.teacher, self.files, "semantickitti", teacher_cache=self.teacher_logits)
        return {"miou": self.miou(m), "iou": self.iou(m), "fidelity": fid.to_dict(),
                "loss_curve_seg": loss_curve(ckpt.parent), "seg_loss_trace": loss_trace(ckpt.parent)}, m


def check_pairs_teacher(pairs_dir: Path, teacher_iou: dict[str, float]) -> None:
    """Refuse pair files scored against another teacher: their pairs belong to another design."""
    for path in sorted(pairs_dir.rglob("pair_*.json")):
        recorded = json.loads(path.read_text()).get("teacher_iou")
        if recorded != teacher_iou:
            raise SystemExit(f"{path}: scored against a teacher with per-class IoU {recorded}, but this teacher "
                             f"scores {teacher_iou}; use a new --pairs-dir (or the work folder of that teacher)")


@dataclass
class Job:
    """One training the queue holds: ``rank`` orders it (lower first), ``needs_teacher`` holds it back
    until the teacher has finished."""

    rank: tuple[int, int]
    needs_teacher: bool
    fn: Callable[[], Path]
    future: Future = field(default_factory=Future)


def next_job(pending: list[Job], teacher_ready: bool) -> Optional[Job]:
    """The job a free worker takes: the lowest-ranked one it can run now (a PVD arm only once the
    teacher is there), or None: then it waits for the teacher or for a new job."""
    runnable = [j for j in pending if teacher_ready or not j.needs_teacher]
    return min(runnable, key=lambda j: j.rank) if runnable else None


class ArmTrainer:
    """Trains the teacher and the arms on ``--jobs`` workers (``--threads`` torch threads each), each run once.

    Why one queue for everything: a PVD arm takes about 1.6x a baseline's time, so trained pair by
    pair one of two cores idles for a third of every pair, and a baseline needs no teacher, so it
    can train while the teacher does. main() queues the teacher and the arms of the first
    ``--min-pairs`` seeds (needed whatever the verdict) at the start. A free worker takes the teacher
    first, then the lowest seed's arm it can run (PVD before baseline, the longer job; PVD only once
    the teacher is done), so pairs still finish in seed order and both cores stay busy."""

    def __init__(self, out: Path, data: Path, args: argparse.Namespace) -> None:
        self.out, self.data, self.args = out, data, args
        self.pool = ThreadPoolExecutor(max_workers=max(1, args.jobs))
        self.changed = threading.Condition()  # guards pending; notified on a new job and on the teacher's end
        self.pending: list[Job] = []
        self.futures: dict[tuple[int, str], Future] = {}
        self.teacher: Future = Future()  # the teacher's checkpoint; replaced by its job's future when trained here

    def _notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def queue(self, job: Job) -> Future:
        """Queue one training; the returned future is the job's."""
        with self.changed:
            self.pending.append(job)
            self.changed.notify_all()
        self.pool.submit(self._run_next)
        return job.future

    def _run_next(self) -> None:
        """One pool task per queued job; each takes whichever job is best when a worker is free."""
        with self.changed:
            job = self.changed.wait_for(lambda: next_job(self.pending, self.teacher.done()))
            self.pending.remove(job)
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            job.future.set_result(job.fn())
        except BaseException as exc:  # handed to whoever waits on the run
            job.future.set_exception(exc)

    def use_teacher(self, ckpt: Path) -> None:
        """A teacher trained elsewhere (``--teacher``)."""
        self.teacher.set_result(ckpt)
        self._notify()

    def train_teacher(self) -> Future:
        """Queue the teacher's run (first of all); the result is its EMA checkpoint."""
        cfg = write_config(self.out, "teacher", "synthetic_teacher.yaml", self.args, 0, student=False)

        def fn() -> Path:
            ema = train(self.out, self.data, "teacher", cfg, self.args.teacher_steps, None, threads=self.args.threads)
            return export_teacher(ema, self.args) if self.args.export_teacher else ema

        return self.queue_teacher(Job((-1, 0), False, fn))

    def queue_teacher(self, job: Job) -> Future:
        """Queue the teacher's training: its future becomes ``self.teacher``, which PVD arms wait for."""
        self.teacher = job.future
        job.future.add_done_callback(lambda _: self._notify())  # PVD arms become runnable
        self.queue(job)
        return self.teacher

    def submit(self, seed: int, arm: str, base: str, distill: Optional[dict[str, Any]]) -> Future:
        """Queue one arm (or return the one already queued); the result is the run's EMA checkpoint."""
        key = (seed, arm)
        if key not in self.futures:
            name = f"{arm}_s{seed}"

            def fn() -> Path:
                cfg = write_config(self.out, name, base, self.args, seed, distill)
                teacher = self.teacher.result() if distill is not None else None
                return train(self.out, self.data, name, cfg, self.args.steps, teacher, threads=self.args.threads)

            self.futures[key] = self.queue(Job((seed, 1 if distill is None else 0), distill is not None, fn))
        return self.futures[key]

    def close(self) -> None:
        """Drop the runs not started yet (an early stop or an error) and wait for the running ones."""
        with self.changed:
            for job in self.pending:
                job.future.cancel()
        self.teacher.cancel()  # not started: wakes the workers that wait for it (running: they wait for its end)
        self.pool.shutdown(wait=True, cancel_futures=True)


def run_pair(trainer: ArmTrainer, scorer: Scorer, seed: int, arms: dict[str, tuple[str, Optional[dict[str, Any]]]],
             folder: Path) -> dict[str, Any]:
    """Train (via ``trainer``) and score the arms of one seed; one JSON + NPZ per pair in ``folder``."""
    path = folder / f"pair_{seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    futures = {arm: trainer.submit(seed, arm, *arms[arm]) for arm in arms}
    ckpts = {arm: f.result() for arm, f in futures.items()}
    doc: dict[str, Any] = {"seed": seed, "teacher_iou": scorer.iou(scorer.teacher_matrices)}
    mats = {}
    for arm in arms:
        doc[arm], mats[arm] = scorer.score(ckpts[arm])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path.with_suffix(".npz"), **mats)
    write_json(path, doc)
    say(f"{repo_relative(folder)} seed {seed}: " + ", ".join(f"{a} {doc[a]['miou']:.2f}" for a in arms))
    return doc


def paired_gain(reference: list[float], arm: list[float]) -> dict[str, Any]:
    """The paired-t fields every comparison of these benchmarks writes: mean gain of ``arm`` over
    ``reference``, its 95 % CI, p."""
    from pvd_core.paired_stats import paired_t

    t = paired_t(reference, arm)
    return {"gain_mean": round(t.mean, 4), "gain_ci95": [round(x, 4) for x in t.ci95], "p_value": t.p_value}


CLEAR_MARGIN_SD = 2.0


def clearly_ahead(row: dict[str, Any]) -> bool:
    """Is the teacher ahead of the mean baseline in this per-class row by a clear margin (CLEAR_MARGIN_SD)?"""
    lead = row["teacher"] - row["baseline_mean"]
    return lead > 0 and (row.get("baseline_sd") is None or lead >= CLEAR_MARGIN_SD * row["baseline_sd"])


def scoring(args: argparse.Namespace) -> str:
    """How every run of a design is scored, as its result files say."""
    return f"EMA of weights (train.ema_decay {args.ema_decay}), ema.pt at the last step"


def margin_reference(path: Path, data_info: dict[str, Any], args: argparse.Namespace) -> dict[str, dict]:
    """The per-class baselines (mean, seed sd, support) of an earlier results file of this design:
    same data, student, student steps and EMA, or the comparison would be of different students."""
    doc = json.loads(path.read_text())
    if "per_class" not in doc:
        raise SystemExit(f"--margin-against {path}: no per_class baselines (no pair scored in full)")
    mine = {**data_info, "student_model": STUDENT_MODEL, "steps": args.steps, "ema_decay": args.ema_decay}
    theirs = {**doc.get("data", {}), "student_model": doc.get("student_model"),
              **{k: doc.get("settings", {}).get(k) for k in ("steps", "ema_decay")}}
    differ = sorted(k for k in mine if k != "root" and mine[k] != theirs.get(k))
    if differ:
        raise SystemExit(f"--margin-against {path}: another design ({', '.join(differ)} differ); its baselines "
                         "say nothing about this teacher")
    return doc["per_class"]


def teacher_margin(teacher_iou: dict[str, float], support: dict[str, int],
                   reference: dict[str, dict]) -> dict[str, Any]:
    """The teacher's lead over earlier baselines of the same design, class by class (CLEAR_MARGIN_SD):
    whether a teacher is fair is known before any pair is paid for. The same validation ground truth
    is checked by its per-class support."""
    moved = [c for c in teacher_iou if reference.get(c, {}).get("support") != support[c]]
    if moved:
        raise SystemExit(f"--margin-against: validation support differs in {moved}: other validation data")
    rows = {c: {"teacher": v, "baseline_mean": reference[c]["baseline_mean"],
                "baseline_sd": reference[c]["baseline_sd"], "lead": round(v - reference[c]["baseline_mean"], 3)}
            for c, v in teacher_iou.items()}
    for row in rows.values():
        row["clearly_ahead"] = clearly_ahead(row)
    return {"rule": f"teacher above the mean baseline by at least {CLEAR_MARGIN_SD} baseline sds", "per_class": rows,
            "clearly_ahead_on": [c for c, r in rows.items() if r["clearly_ahead"]],
            "not_ahead_on": [c for c, r in rows.items() if r["lead"] <= 0]}


def baseline_sd(pairs: list[dict], cls: str) -> Optional[float]:
    """Seed-to-seed sd of the baselines' IoU in one class (None below two pairs)."""
    values = [p["baseline"]["iou"][cls] for p in pairs]
    return round(float(np.std(values, ddof=1)), 3) if len(values) > 1 else None


def teacher_ahead_gain(scorer: Scorer, behind: list[str], npz: list) -> dict[str, Any]:
    """PVD's paired gain in mIoU over only the classes where the teacher beats the mean baseline.

    Where the teacher knows no more than the baseline there is nothing to distil, so a teacher that
    is not ahead on every class dilutes the comparison. This class list is fixed by the teacher and
    the baselines (``behind``: the classes where it is not ahead), never by the PVD runs it scores.
    """
    names = scorer.teacher.label_map.class_names
    ahead = [c for c in scorer.classes if names[c] not in behind]
    if not ahead:
        return {}
    arm = {a: [scorer.miou_over(z[a], ahead) for z in npz] for a in ("baseline", "pvd")}
    return {"classes": [names[c] for c in ahead], "teacher": round(scorer.miou_over(scorer.teacher_matrices, ahead), 4),
            "baseline_mean": round(float(np.mean(arm["baseline"])), 4),
            "pvd_mean": round(float(np.mean(arm["pvd"])), 4), **paired_gain(arm["baseline"], arm["pvd"])}


def scored_in_full(pairs: list[dict], pairs_dir: Path) -> list[dict]:
    """The pairs with per-class IoU, fidelity and per-scan matrices (not those recovered from a results JSON)."""
    return [p for p in pairs if "iou" in p["baseline"] and (pairs_dir / f"pair_{p['seed']}.npz").is_file()]


def summarise(args: argparse.Namespace, pairs_dir: Path, scorer: Scorer, teacher: dict[str, Any], pairs: list[dict],
              ablations: dict[str, list[dict]], data_info: dict, macs: dict, command: str,
              stopped: Optional[str]) -> dict[str, Any]:
    from pvd_core.paired_stats import bootstrap_gain_ci, paired_ranks, paired_spread, paired_t, pairs_to_decide

    base = [p["baseline"]["miou"] for p in pairs]
    pvd = [p["pvd"]["miou"] for p in pairs]
    t = paired_t(base, pvd)
    spread = paired_spread(base, pvd)
    ranks = paired_ranks(base, pvd)
    names = scorer.teacher.label_map.class_names
    full_pairs = scored_in_full(pairs, pairs_dir)
    doc: dict[str, Any] = {
        "pairs": [{"seed": p["seed"], "baseline": p["baseline"]["miou"], "pvd": p["pvd"]["miou"]} for p in pairs],
        "gain_mean": round(t.mean, 4) if pairs else None,
        "gain_ci95": [round(x, 4) for x in t.ci95],
        "p_value": t.p_value,
        "teacher": teacher["miou"],
        "gap_closed": (round(t.mean / (teacher["miou"] - float(np.mean(base))), 4)
                       if pairs and teacher["miou"] != float(np.mean(base)) else None),
        "classes": [names[c] for c in scorer.classes],
        "fidelity": {arm: {k: round(float(np.mean([p[arm]["fidelity"][k] for p in full_pairs])), 6)
                           for k in ("agreement", "kl")} for arm in ("baseline", "pvd")} if full_pairs else None,
        "ablations": {},
        "command": command,
        "decision": stopped,
        "gain_stdev": t.stdev,
        # If undecided: the pairs the rule would need were the mean and stdev to stay as they are (planning only).
        "pairs_to_decide_projection": None if stopped or t.n < 2 else pairs_to_decide(
            t.mean, t.stdev, args.min_pairs, args.margin),
        # Exploratory, not the benchmark's verdict: does PVD change how much students vary by seed?
        "seed_spread": {"baseline_sd": round(spread.sd_baseline, 4), "pvd_sd": round(spread.sd_treated, 4),
                        "pitman_morgan_p": spread.p_value},
        # Exploratory, not the verdict: is the mean gain typical of the pairs or carried by a few?
        "gain_per_pair": {"median": round(ranks.median, 4), "pvd_ahead": ranks.treated_ahead,
                          "baseline_ahead": ranks.baseline_ahead, "wilcoxon_p": ranks.wilcoxon_p},
        "scoring": scoring(args),
    }
    if len(full_pairs) < len(pairs):
        # Fidelity, the bootstrap over scans and the per-class figures need a pair's per-scan matrices.
        doc["scored_in_full"] = {
            "seeds": [p["seed"] for p in full_pairs],
            "why": "the other pairs' files were recovered from a results JSON (miou and loss quarters only); "
                   "fidelity, gain_bootstrap_ci95_over_scans, per_class and on_teacher_ahead_classes cover these "
                   "seeds only", "recovered_from": sorted({p["recovered_from"] for p in pairs
                                                           if p.get("recovered_from")})}
    if full_pairs:
        npz = [np.load(pairs_dir / f"pair_{p['seed']}.npz") for p in full_pairs]
        doc["gain_bootstrap_ci95_over_scans"] = [round(x, 4) for x in bootstrap_gain_ci(
            [z["baseline"] for z in npz], [z["pvd"] for z in npz], scorer.classes, seed=0)]
        support = scorer.support()
        doc["per_class"] = {c: {"teacher": teacher["iou"][c],
                                **{f"{arm}_mean": round(float(np.mean([p[arm]["iou"][c] for p in full_pairs])), 3)
                                   for arm in ("baseline", "pvd")},
                                "baseline_sd": baseline_sd(full_pairs, c),
                                "support": support[c]}
                            for c in doc["classes"]}
        doc["teacher_not_ahead_on"] = [c for c, v in doc["per_class"].items() if v["teacher"] <= v["baseline_mean"]]
        # "A clear margin" (issue 11), made a number: the teacher above the mean baseline by at least
        # CLEAR_MARGIN_SD of the baselines' seed-to-seed sd in that class, i.e. outside their spread.
        doc["teacher_clear_margin"] = {"rule": f"teacher above the mean baseline by at least {CLEAR_MARGIN_SD} "
                                               "baseline sds (seed to seed, over the pairs)",
                                       "not_clearly_ahead_on": [c for c, v in doc["per_class"].items()
                                                                if not clearly_ahead(v)]}
        doc["teacher_beats_baseline_on_every_class"] = not doc["teacher_not_ahead_on"]
        # Does PVD gain where the teacher knows more? Pearson r over classes of (teacher - baseline)
        # and (PVD - baseline), per-class means over the pairs (the review found it negative).
        advantage = [v["teacher"] - v["baseline_mean"] for v in doc["per_class"].values()]
        gain = [v["pvd_mean"] - v["baseline_mean"] for v in doc["per_class"].values()]
        doc["per_class_gain_vs_teacher_advantage_r"] = (  # undefined (null) where either side is constant
            round(float(np.corrcoef(advantage, gain)[0, 1]), 3) if np.std(advantage) > 0 and np.std(gain) > 0 else None)
        doc["on_teacher_ahead_classes"] = teacher_ahead_gain(scorer, doc["teacher_not_ahead_on"], npz)
    full = {p["seed"]: p["pvd"]["miou"] for p in pairs}
    baseline = {p["seed"]: p["baseline"]["miou"] for p in pairs}
    for name, runs in ablations.items():
        runs = [r for r in runs if r["seed"] in full]
        at = paired_t([full[r["seed"]] for r in runs], [r[name]["miou"] for r in runs])
        # The ablation seeds are the first pairs; full PVD's own gain on them puts "vs full" in context.
        vb = paired_t([baseline[r["seed"]] for r in runs], [r[name]["miou"] for r in runs])
        fb = paired_t([baseline[r["seed"]] for r in runs], [full[r["seed"]] for r in runs])
        doc["ablations"][name] = {"pairs": [{"seed": r["seed"], "full": full[r["seed"]], name: r[name]["miou"],
                                             "baseline": baseline[r["seed"]]} for r in runs],
                                  "gain_vs_full_mean": round(at.mean, 4) if runs else None,
                                  "ci95": [round(x, 4) for x in at.ci95], "p_value": at.p_value,
                                  "vs_baseline": {"mean": round(vb.mean, 4) if runs else None,
                                                  "ci95": [round(x, 4) for x in vb.ci95]},
                                  "full_vs_baseline_same_seeds": round(fb.mean, 4) if runs else None}
    doc.update({"teacher_detail": teacher, "macs": macs, "data": data_info,
                "settings": run_settings(args),
                "pairs_dir": repo_relative(pairs_dir),
                "student_model": STUDENT_MODEL, "loss_curves_seg": {
                    f"{arm}_s{p['seed']}": p[arm]["loss_curve_seg"] for p in pairs for arm in ("baseline", "pvd")}})
    if pairs:
        falls = {arm: [last_quarter_fall(p[arm]["loss_curve_seg"]) for p in pairs
                       if complete_quarters(p[arm]["loss_curve_seg"])] for arm in ("baseline", "pvd")}
        doc["seg_loss_last_quarter_fall"] = {arm: round(float(np.mean(v)), 4) if v else None
                                             for arm, v in falls.items()}
    return json.loads(json.dumps(doc, default=float).replace("NaN", "null"))


def _num(x: Optional[float], spec: str) -> str:
    """A figure for the report, or 'n/a' where the JSON holds null (summarise turns NaN into null)."""
    return "n/a" if x is None else format(x, spec)


def _interval(ci: Optional[list]) -> str:
    return "n/a" if not ci or ci[0] is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def write_markdown(doc: dict[str, Any], path: Path) -> None:
    lines = ["# Distillation benchmark: paired seeds (synthetic data, CPU)", "", f"Command: `{doc['command']}`", "",
             f"mIoU over {len(doc['classes'])} classes present in the validation ground truth: "
             f"{', '.join(doc['classes'])}. {doc['scoring']}.", "",
             "| seed | baseline | PVD | gain |", "|---|---|---|---|"]
    lines += [f"| {p['seed']} | {p['baseline']:.2f} | {p['pvd']:.2f} | {p['pvd'] - p['baseline']:+.2f} |"
              for p in doc["pairs"]]
    needed = doc.get("pairs_to_decide_projection")
    projection = f" (at this mean and stdev, about {needed} pairs would decide)" if needed else ""
    boot = doc.get("gain_bootstrap_ci95_over_scans")
    fid = doc.get("fidelity") or {}
    lines += ["", f"Teacher {doc['teacher']:.2f}. Mean gain {_num(doc['gain_mean'], '+.2f')} mIoU, paired-t 95 % CI "
              f"{_interval(doc['gain_ci95'])}, p = {_num(doc['p_value'], '.3g')}, bootstrap CI over scans "
              f"{_interval(boot)}, gap closed {_num(doc['gap_closed'], '.2f')}; decision: "
              f"{doc['decision'] or 'none yet'}{projection}."]
    partial = doc.get("scored_in_full")
    if partial:
        seeds = ", ".join(map(str, partial["seeds"]))
        lines += ["", f"Fidelity, the bootstrap over scans and the per-class figures cover only the "
                  f"{len(partial['seeds'])} pair(s) scored in full here (seeds {seeds}): "
                  f"the files of the others were recovered from {', '.join(partial['recovered_from'])} "
                  "(mIoU and loss quarters only), and git history holds their earlier per-class report."]
    if fid:
        lines += ["", "Fidelity to the teacher on validation (mean over the pairs): top-1 agreement "
                  + ", ".join(f"{arm} {v['agreement']:.3f}" for arm, v in fid.items()) + "; KL(teacher || student) "
                  + ", ".join(f"{arm} {v['kl']:.3f}" for arm, v in fid.items()) + ". "
                  f"Per class, PVD's gain against the teacher's advantage over the baseline: "
                  f"r = {_num(doc.get('per_class_gain_vs_teacher_advantage_r'), '+.2f')}."]
    spread = doc.get("seed_spread") or {}
    if spread.get("pitman_morgan_p") is not None:
        lines += ["", f"Seed-to-seed spread (exploratory, not the verdict): baseline sd "
                  f"{spread['baseline_sd']:.2f}, PVD sd {spread['pvd_sd']:.2f} mIoU; Pitman-Morgan test of equal "
                  f"variances p = {spread['pitman_morgan_p']:.3g}."]
    per_pair = doc.get("gain_per_pair") or {}
    if per_pair.get("wilcoxon_p") is not None:
        lines += ["", f"Per pair (exploratory, not the verdict): median gain {per_pair['median']:+.2f} mIoU; PVD "
                  f"ahead in {per_pair['pvd_ahead']} of {len(doc['pairs'])} pairs, the baseline in "
                  f"{per_pair['baseline_ahead']}; Wilcoxon signed-rank p = {per_pair['wilcoxon_p']:.3g}."]
    if doc.get("sequential_png"):
        lines += ["", f"![gain after each pair]({Path(doc['sequential_png']).name})"]
    if doc["ablations"]:
        lines += ["", "| variant | pairs | mean vs full PVD | 95 % CI | vs baseline | 95 % CI "
                  "| full PVD vs baseline, same seeds |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {len(a['pairs'])} | {_num(a['gain_vs_full_mean'], '+.2f')} | {_interval(a['ci95'])} | "
              f"{_num(a['vs_baseline']['mean'], '+.2f')} | {_interval(a['vs_baseline']['ci95'])} | "
              f"{_num(a['full_vs_baseline_same_seeds'], '+.2f')} |" for n, a in doc["ablations"].items()]
    if doc.get("per_class"):
        lines += ["", "Per class IoU (means over the pairs):", "",
                  "| class | teacher | baseline (sd) | PVD | PVD - baseline | validation points |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {c} | {v['teacher']:.1f} | {v['baseline_mean']:.1f} ({_num(v.get('baseline_sd'), '.1f')}) | "
                  f"{v['pvd_mean']:.1f} | "
                  f"{v['pvd_mean'] - v['baseline_mean']:+.1f} | {v.get('support', '')} |"
                  for c, v in doc["per_class"].items()]
        behind = doc.get("teacher_not_ahead_on") or []
        lines += ["", "The teacher is ahead of the mean baseline on every class." if not behind else
                  f"The teacher is not ahead of the mean baseline on {len(behind)} of {len(doc['per_class'])} "
                  f"classes: {', '.join(behind)}."]
        unclear = (doc.get("teacher_clear_margin") or {}).get("not_clearly_ahead_on")
        if unclear is not None:
            lines += ["", f"Clear margin: the {doc['teacher_clear_margin']['rule']}. "
                      + ("The teacher has it on every class." if not unclear else
                         f"The teacher does not have it on {len(unclear)} of {len(doc['per_class'])} classes: "
                         f"{', '.join(unclear)}.")]
        ahead = doc.get("on_teacher_ahead_classes") or {}
        if behind and ahead and ahead["gain_ci95"][0] is not None:  # a CI needs two pairs
            lo, hi = ahead["gain_ci95"]
            lines += ["", f"Over the {len(ahead['classes'])} classes where it is ahead (a list fixed by the teacher "
                      f"and the baselines, not by PVD): teacher {ahead['teacher']:.2f}, baseline "
                      f"{ahead['baseline_mean']:.2f}, PVD {ahead['pvd_mean']:.2f}; PVD's gain "
                      f"{ahead['gain_mean']:+.2f}, 95 % CI [{lo:.2f}, {hi:.2f}], p = {_num(ahead['p_value'], '.3g')}."]
    curves = doc.get("loss_curves_seg", {})
    if curves:
        lines += ["", "Segmentation loss, mean over each quarter of the run (flat last quarters = converged; "
                  "the last column is the relative fall from Q3 to Q4):", "",
                  "| arm | Q1 | Q2 | Q3 | Q4 | Q3 to Q4 |", "|---|---|---|---|---|---|"]
        for arm in ("baseline", "pvd"):
            rows = [c for k, c in curves.items() if k.startswith(arm + "_s") and complete_quarters(c)]
            if rows:
                mean = np.mean(rows, axis=0)
                lines.append(f"| {arm} (mean of {len(rows)}) | " + " | ".join(f"{v:.3f}" for v in mean)
                             + f" | {last_quarter_fall(list(mean)):.1%} |")
        teacher_curve = doc.get("teacher_detail", {}).get("loss_curve_seg") or []
        if complete_quarters(teacher_curve):
            lines.append("| teacher | " + " | ".join(f"{v:.3f}" for v in teacher_curve)
                         + f" | {last_quarter_fall(teacher_curve):.1%} |")
    if doc.get("seg_loss_png"):
        lines += ["", f"![segmentation loss of every run]({Path(doc['seg_loss_png']).name})"]
    path.write_text("\n".join(lines) + "\n")


def publish_teacher(args: argparse.Namespace, scorer: Scorer, teacher: dict[str, Any], macs: dict,
                    data_info: dict, command: str) -> Path:
    """RESULTS_teacher.json (+ .md): the teacher is a finished run, so its scores are committed when it
    ends, not with the first pair hours later; with ``--margin-against``, its lead per class."""
    doc: dict[str, Any] = {"teacher": teacher, "classes": [scorer.teacher.label_map.class_names[c]
                                                           for c in scorer.classes],
                           "support": scorer.support(), "macs": macs, "data": data_info, "command": command,
                           "scoring": scoring(args)}
    if args.margin_against:
        reference = margin_reference(args.margin_against, data_info, args)
        doc["margin_against"] = {"results": repo_relative(args.margin_against),
                                 **teacher_margin(teacher["iou"], doc["support"], reference)}
        say(f"teacher clearly ahead of {repo_relative(args.margin_against)}'s baselines on "
            f"{len(doc['margin_against']['clearly_ahead_on'])} of {len(doc['classes'])} classes: "
            f"{', '.join(doc['margin_against']['clearly_ahead_on']) or 'none'}")
    path = args.results.with_name(args.results.stem + "_teacher.json")
    if path.is_file():  # kept as its first writer left it unless this run adds a margin it lacks: a rerun
        old = json.loads(path.read_text())  # (or --teacher, whose folder has no loss log) adds nothing
        if old["teacher"]["iou"] == teacher["iou"] and doc.get("margin_against") in (None, old.get("margin_against")):
            return path
    write_json(path, doc)
    write_teacher_markdown(doc, path.with_suffix(".md"))
    return path


def write_teacher_markdown(doc: dict[str, Any], path: Path) -> None:
    t = doc["teacher"]
    lines = [f"# Teacher of {path.stem.removesuffix('_teacher')}", "",
             f"`{t['checkpoint']}`: {t['steps']} steps, mIoU **{t['miou']:.2f}** over the {len(doc['classes'])} "
             f"classes of the validation ground truth; {doc['scoring']}. Seg loss by quarter of the run: "
             f"{t['loss_curve_seg']}.", "", f"Command: `{doc['command']}`", ""]
    m = doc.get("margin_against")
    if m:
        lines += [f"Against the baselines of `{m['results']}` (same data, student and steps); rule: {m['rule']}. "
                  f"Clearly ahead on **{len(m['clearly_ahead_on'])} of {len(m['per_class'])}** classes.", "",
                  "| class | support | teacher | baseline mean | baseline sd | lead | clear |",
                  "|---|---:|---:|---:|---:|---:|:---:|"]
        lines += [f"| {c} | {doc['support'][c]} | {r['teacher']:.2f} | {r['baseline_mean']:.2f} | "
                  f"{_num(r['baseline_sd'], '.2f')} | {r['lead']:+.2f} | {'yes' if r['clearly_ahead'] else ''} |"
                  for c, r in m["per_class"].items()]
    else:
        lines += ["| class | support | teacher IoU |", "|---|---:|---:|"]
        lines += [f"| {c} | {doc['support'][c]} | {v:.2f} |" for c, v in t["iou"].items()]
    path.write_text("\n".join(lines) + "\n")


def measure_macs(out: Path, args: argparse.Namespace, scan: str) -> dict[str, Any]:
    """Teacher and student MACs on one validation scan (``pvd profile``), measured once per work folder."""
    path = out / "macs.json"
    if not path.is_file():
        for name, base in (("teacher", "synthetic_teacher.yaml"), ("baseline_s0", "synthetic_student.yaml")):
            cfg = write_config(out, name, base, args, 0, student=name != "teacher")
            run(["pvd", "profile", "--config", str(cfg), "--scan", scan, "--repeat", "1", "--device", "cpu",
                 "--json", str(out / f"profile_{name}.json")], out / "logs" / "profile.log")
        t_macs = json.loads((out / "profile_teacher.json").read_text())["macs"]
        s_macs = json.loads((out / "profile_baseline_s0.json").read_text())["macs"]
        write_json(path, {"teacher": t_macs, "student": s_macs, "ratio": round(s_macs / t_macs, 4)})
    return json.loads(path.read_text())


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options a results file records: machine-specific places (work folder, outputs, the teacher
    file, which ``teacher_detail`` names) left out, any other path written repo-relative, so the
    file is plain JSON: a Path left in fails the first summary, hours into a run."""
    skip = ("out", "results", "pairs_dir", "teacher", "export_teacher")
    return {k: repo_relative(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in skip}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/distill_gain"), help="work folder (data, runs)")
    ap.add_argument("--steps", type=int, default=1500, help="optimiser steps of every student")
    ap.add_argument("--teacher-steps", type=int, default=3000, help="teacher steps (>= --steps)")
    ap.add_argument("--scans", type=int, default=40, help="scans per training town (4 towns)")
    ap.add_argument("--val-towns", type=int, default=3, help="unseen validation towns (>= 3 for the issue's design)")
    ap.add_argument("--val-scans", type=int, default=40, help="scans per validation town")
    ap.add_argument("--columns", type=int, default=600, help="vlp16 azimuth columns")
    ap.add_argument("--ema-decay", type=float, default=0.995, help="train.ema_decay of every run (scored by ema.pt)")
    ap.add_argument("--min-pairs", type=int, default=8)
    ap.add_argument("--max-pairs", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seed of the first pair (a replication on fresh seeds starts past the earlier ones)")
    ap.add_argument("--margin", type=float, default=1.5, help="stop once the CI's upper bound is below this")
    ap.add_argument("--ablation-pairs", type=int, default=4)
    ap.add_argument("--ablations", nargs="*", default=list(ABLATIONS), choices=list(ABLATIONS))
    ap.add_argument("--jobs", type=int, default=2, help="trainings at once")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of each training (default: CPU cores / --jobs, at least 1); "
                         "--jobs 1 gives a lone teacher every core")
    ap.add_argument("--results", type=Path, default=RESULTS / "distill_gain.json")
    ap.add_argument("--teacher", type=Path, default=None,
                    help="a trained teacher checkpoint (e.g. models/bench/synthetic_teacher4000.pt) instead of "
                         "training one in --out: a design continues across machines only with its own teacher")
    ap.add_argument("--export-teacher", type=Path, default=None, metavar="PATH",
                    help="write the trained teacher there as float16 (e.g. models/bench/synthetic_teacher8000.pt, "
                         "to commit) and distil from and score against that file")
    ap.add_argument("--margin-against", type=Path, default=None, metavar="RESULTS",
                    help="an earlier results JSON of this design (e.g. the replication's): the teacher's per-class "
                         "lead over its baselines is written to RESULTS_teacher.json before any pair is trained")
    ap.add_argument("--teacher-only", action="store_true",
                    help="train, export and score the teacher (RESULTS_teacher.json), then stop: no pairs")
    ap.add_argument("--pairs-dir", type=Path, default=None,
                    help="one JSON + NPZ per pair (default: RESULTS_pairs/ beside --results, committed with it)")
    return ap


def main() -> int:
    ap = parser()
    args = ap.parse_args()
    if args.teacher and args.export_teacher:
        ap.error("--teacher and --export-teacher: a given teacher is already a file; export only one trained here")
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    if args.teacher_steps < args.steps:
        ap.error(f"--teacher-steps {args.teacher_steps} < --steps {args.steps}: the teacher must train at least "
                 "as long as the students, or the 'gap' is partly extra optimisation")
    import torch

    torch.set_num_threads(1)
    from pvd_core.paired_stats import decision, paired_t

    command = "python " + shlex.join(["bench/distill_gain.py"] + sys.argv[1:])
    out = args.out.resolve()
    check_export_target(args, out / "runs" / "teacher" / "ema.pt")
    pairs_dir = (args.pairs_dir or args.results.with_name(args.results.stem + "_pairs")).resolve()
    data = out / "data"
    data_info = make_data(data, args, out / "logs" / "synth.log")
    if args.margin_against:  # a reference of another design stops the harness now, not after the teacher
        margin_reference(args.margin_against, data_info, args)

    arms = {"baseline": ("synthetic_student.yaml", None), "pvd": ("synthetic_distill.yaml", {})}
    trainer = ArmTrainer(out, data, args)
    if args.teacher:
        trainer.use_teacher(given_teacher(args))
    else:
        trainer.train_teacher()
    seeds = range(args.first_seed, args.first_seed + args.max_pairs)
    for seed in seeds[:0 if args.teacher_only else args.min_pairs]:  # needed whatever the verdict: queued now
        if not (pairs_dir / f"pair_{seed}.json").is_file():
            for arm in ("pvd", "baseline"):
                trainer.submit(seed, arm, *arms[arm])
    try:
        teacher_ckpt = trainer.teacher.result()
        scorer = Scorer(teacher_ckpt, data, args)
        teacher_run = teacher_ckpt.parent if args.teacher else out / "runs" / "teacher"  # its metrics.jsonl
        teacher = {"miou": scorer.miou(scorer.teacher_matrices), "iou": scorer.iou(scorer.teacher_matrices),
                   "steps": args.teacher_steps, "loss_curve_seg": loss_curve(teacher_run),
                   "checkpoint": repo_relative(teacher_ckpt)}
        macs = measure_macs(out, args, scorer.files[0][0])
        say(f"teacher mIoU {teacher['miou']:.2f}; student/teacher MACs {macs['ratio']}")
        publish_teacher(args, scorer, teacher, macs, data_info, command)
        if args.teacher_only:
            return 0
        check_pairs_teacher(pairs_dir, teacher["iou"])

        pairs: list[dict] = []
        ablations: dict[str, list[dict]] = {n: [] for n in args.ablations}
        stopped: Optional[str] = None

        def publish() -> None:
            doc = summarise(args, pairs_dir, scorer, teacher, pairs, ablations, data_info, macs, command, stopped)
            png = plot_seg_loss(out, pairs, args.results.with_name(args.results.stem + "_seg_loss.png"))
            doc["seg_loss_png"] = repo_relative(png)
            seq_png = args.results.with_name(args.results.stem + "_sequential.png")
            doc["sequential_png"] = repo_relative(plot_sequential(doc["pairs"], args.margin, args.min_pairs, seq_png))
            write_json(args.results, doc)
            write_markdown(doc, args.results.with_suffix(".md"))

        for seed in seeds:
            pairs.append(run_pair(trainer, scorer, seed, arms, pairs_dir))
            t = paired_t([p["baseline"]["miou"] for p in pairs], [p["pvd"]["miou"] for p in pairs])
            stopped = decision(t.ci95, t.n, args.min_pairs, args.margin)
            publish()
            say(f"{t.n} pairs: gain {t.mean:+.2f}, 95 % CI [{t.ci95[0]:.2f}, {t.ci95[1]:.2f}]"
                + (f" -> stop ({stopped})" if stopped else ""))
            if stopped:
                break
        for name in args.ablations:
            for seed in [p["seed"] for p in pairs][:args.ablation_pairs]:
                doc = run_pair(trainer, scorer, seed, {name: ("synthetic_distill.yaml", ABLATIONS[name])},
                               pairs_dir / "ablations" / name)
                ablations[name].append(doc)
                publish()
    except BaseException as exc:  # the error itself is raised after the running trainings end
        why = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        say(f"stopping ({why}): queued runs dropped, waiting for the running ones "
            "(Ctrl-C ends them; they resume from last.pt)")
        raise
    finally:
        trainer.close()
    say(f"done; results in {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
