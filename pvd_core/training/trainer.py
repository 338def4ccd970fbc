"""The one training loop, shared by ``pvd train`` and ``pvd distill``.

Distillation is training plus a frozen teacher and the PVD loss: the teacher runs in
eval mode, with requires_grad False and under ``torch.no_grad``, on the very Batch
object the student sees (same points, voxel indices and augmentation).

Run directory layout (``--out RUN_DIR``)::

    RUN_DIR/config.yaml        the resolved config the run trains with (after --data-root/--max-steps)
    RUN_DIR/metrics.jsonl      one JSON line per logging step (every loss term, lr, throughput)
                               and one per validation (kind "val", miou in percent)
    RUN_DIR/curves.png         loss curves and validation mIoU against the step
    RUN_DIR/last.pt            latest checkpoint, with train_state (optimizer, scheduler, step,
                               epoch, batch within the epoch, best mIoU, RNG states)
    RUN_DIR/best.pt            best validation mIoU so far (no train_state)
    RUN_DIR/ema.pt             train.ema_decay > 0 only: the EMA of the weights, written with last.pt
                               (no train_state; in-training validation still scores the live weights)
    RUN_DIR/class_counts.json  distill only: labelled points per class of the training split,
                               computed once and reused on resume (also in checkpoint meta)
    RUN_DIR/eval/              val_last.json, val_best.json and val_best_confusion.png from
                               in-training validation; ``pvd eval`` of a run's checkpoint writes
                               here too by default

Resume (``--resume``) continues from RUN_DIR/last.pt. With a fixed seed, on CPU and with
deterministic data order, a resumed run ends with exactly the weights of an
uninterrupted run: data order and augmentation derive from (seed, epoch, index), the
batches of the interrupted epoch already consumed are skipped, the learning rate is a
function of the step, and every RNG (Python, numpy, torch, the PVD sampling generator)
is restored; the DataLoader draws its worker base seed from its own generator so that
starting an iterator never consumes the global torch RNG.
"""
from __future__ import annotations

import itertools
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import yaml
from tqdm import tqdm

from pvd_core.checkpoint import build_model_from_checkpoint, load_checkpoint, load_weights_into, save_checkpoint
from pvd_core.config import Config, ConfigError
from pvd_core.data import stats
from pvd_core.data.batch import collate_scans
from pvd_core.data.dataset import ScanDataset, make_loader, set_epoch, split_files
from pvd_core.data.unlabelled import UnlabelledScans, unlabelled_batches, unlabelled_per_batch, unlabelled_scan_files
from pvd_core.device import resolve_device
from pvd_core.errors import PvdError
from pvd_core.evaluation import EvalReport, evaluate_split
from pvd_core.labels import LabelMap, label_map_for
from pvd_core.losses.distillation import PVDLoss
from pvd_core.losses.segmentation import segmentation_loss
from pvd_core.losses.supervoxel import class_weights_from_counts
from pvd_core.models.cylinder3d import build_model
from pvd_core.training import distributed
from pvd_core.training.ema import WeightEMA
from pvd_core.training.resume import capture_rng_state, restore_rng_state, seed_everything
from pvd_core.training.run_log import MetricsLog, plot_curves
from pvd_core.training.schedule import build_optimizer, build_scheduler

# Fields that may change between an interrupted run and its resumption: they move the
# data or change bookkeeping, not what the network is trained on.
RESUME_MUTABLE = {
    "dataset.data_root", "train.max_steps", "train.num_workers", "train.device", "train.log_every",
    "train.val_every", "train.checkpoint_every", "train.max_val_scans",
}


class TrainError(PvdError, ValueError):
    """Training cannot start or continue; the message names the file or setting."""


@dataclass
class TrainOptions:
    config: Config
    out_dir: Path
    resume: bool = False
    teacher: Optional[Path] = None  # set by `pvd distill`
    init_from: Optional[Path] = None  # weights to start from (fine-tuning); ignored on --resume
    progress: bool = True
    config_source: str = "config"  # where the config came from, for messages


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    best_miou: Optional[float]  # percent; None when nothing was validated
    last_val_miou: Optional[float]
    wall_s: float


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def changed_fields(a: Config, b: Config, sections: Optional[tuple[str, ...]] = None,
                       ignore: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Dotted fields where ``a`` and ``b`` differ, as 'field: a_value vs b_value'."""
    fa, fb = flatten(a.to_dict()), flatten(b.to_dict())
    diffs = []
    for key in sorted(set(fa) | set(fb)):
        if sections is not None and key.split(".")[0] not in sections:
            continue
        if key in ignore:
            continue
        if fa.get(key) != fb.get(key):
            diffs.append(f"{key}: {fa.get(key)!r} vs {fb.get(key)!r}")
    return diffs


def check_teacher_compatible(student: Config, teacher: Config, student_where: str, teacher_where: str) -> None:
    """Teacher and student must see the same voxels and classes: same grid and dataset kind."""
    diffs = changed_fields(student, teacher, sections=("grid",))
    if student.dataset.kind != teacher.dataset.kind:
        diffs.insert(0, f"dataset.kind: {student.dataset.kind!r} vs {teacher.dataset.kind!r}")
    if diffs:
        raise ConfigError(
            f"student config {student_where} and teacher checkpoint {teacher_where} must share the grid and "
            f"dataset kind (PVD compares them voxel by voxel); they differ in (student vs teacher): "
            + "; ".join(diffs))


def write_config_yaml(cfg: Config, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    tmp.replace(path)


def _batches_per_epoch(num_items: int, batch_size: int) -> int:
    return max(1, math.ceil(num_items / batch_size))


def _loader_generator(seed: int, epoch: int) -> torch.Generator:
    """The DataLoader's own generator: its base-seed draw must not touch the global torch RNG."""
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, epoch, 3]).generate_state(1)[0]))
    return g


class Trainer:
    """One run: builds everything from the options, then :meth:`run` trains to max_steps."""

    def __init__(self, opts: TrainOptions) -> None:
        self.opts = opts
        self.cfg = opts.config
        self.out_dir = Path(opts.out_dir)
        self.env = distributed.env_from_environment()
        self.distill = opts.teacher is not None
        self._check_mode()
        self.device = distributed.setup(self.env, resolve_device(self.cfg.train.device))
        self.is_main = self.env.is_main
        self.label_map: LabelMap = label_map_for(self.cfg.dataset.kind)
        self.last_path = self.out_dir / "last.pt"
        self.best_path = self.out_dir / "best.pt"
        self.resume_ckpt = self._check_run_dir()
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_miou: Optional[float] = None
        self.last_val_miou: Optional[float] = None
        self.wall_before = 0.0  # training seconds of earlier (interrupted) sessions
        self.init_info: Optional[dict[str, Any]] = None
        self.log = MetricsLog(self.out_dir / "metrics.jsonl")

    # ------------------------------------------------------------------ set-up checks
    def _check_mode(self) -> None:
        where = self.opts.config_source
        if self.distill and not self.cfg.distill.enabled:
            raise ConfigError(f"{where}: distill.enabled is false; `pvd distill` needs a config with "
                              "distill.enabled: true (the PVD weights live there)")
        if not self.distill and self.cfg.distill.enabled:
            raise ConfigError(f"{where}: distill.enabled is true; train it with `pvd distill --teacher CKPT`, "
                              "or set distill.enabled: false for supervised training")
        if not self.distill and self.cfg.dataset.unlabelled:
            raise ConfigError(f"{where}: dataset.unlabelled {self.cfg.dataset.unlabelled} needs a teacher: "
                              "unlabelled scans contribute only the PVD terms (use `pvd distill --teacher CKPT`)")

    def _check_run_dir(self):
        if self.opts.resume:
            if not self.last_path.is_file():
                raise TrainError(f"--resume: {self.last_path} not found (nothing to resume in {self.out_dir})")
            ckpt = load_checkpoint(self.last_path)
            if not ckpt.train_state:
                raise TrainError(f"--resume: {self.last_path} has no train_state (not a resumable checkpoint)")
            diffs = changed_fields(self.cfg, ckpt.config, ignore=RESUME_MUTABLE)
            if diffs:
                raise ConfigError(
                    f"--resume: {self.opts.config_source} differs from the config {self.last_path} was trained "
                    f"with in (this config vs the checkpoint's): " + "; ".join(diffs)
                    + f" (only {sorted(RESUME_MUTABLE)} may change on resume)")
            return ckpt
        if self.last_path.exists():
            raise TrainError(f"{self.last_path} exists: pass --resume to continue that run, or choose another --out")
        return None

    # ------------------------------------------------------------------ building
    def _build(self) -> None:
        cfg = self.cfg
        seed_everything(cfg.train.seed)
        model = build_model(cfg)
        if self.opts.init_from is not None and self.resume_ckpt is None:
            source = load_weights_into(model, self.opts.init_from, self.label_map)
            self.init_info = {"path": str(self.opts.init_from), "step": (source.meta or {}).get("step"),
                              "data_root": source.config.dataset.data_root}
        model = model.to(self.device)
        self.raw_model = model
        self.model = distributed.wrap_ddp(model, self.device, cfg.train.sync_batchnorm) if self.env.enabled else model
        self.optimizer = build_optimizer(self.model.parameters(), cfg.train)
        self.scheduler = build_scheduler(self.optimizer, cfg.train)
        self.ema = WeightEMA(model, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None

        self.train_set = ScanDataset(cfg, "train", augment=True, max_points=cfg.train.max_points)
        if len(self.train_set) == 0:
            raise TrainError(f"{self.opts.config_source}: the training split {cfg.dataset.train_sequences} under "
                             f"{cfg.dataset.data_root} holds no scans")
        sampler = None
        if self.env.enabled:
            sampler = torch.utils.data.DistributedSampler(
                self.train_set, num_replicas=self.env.world_size, rank=self.env.rank, shuffle=True,
                seed=cfg.train.seed)
        self.unlabelled_set: Optional[UnlabelledScans] = None
        self.unlabelled_iter = None
        if cfg.dataset.unlabelled:
            self.unlabelled_set = UnlabelledScans(cfg, unlabelled_scan_files(cfg.dataset.unlabelled))
            if self.is_main:
                print(f"unlabelled: {len(self.unlabelled_set)} scans from {len(cfg.dataset.unlabelled)} source(s), "
                      f"{unlabelled_per_batch(cfg)} per batch next to {cfg.train.batch_size} labelled (PVD terms only)")
        # Mixed runs collate after the unlabelled scans are added (_epoch_batches).
        self.loader = make_loader(self.train_set, cfg, shuffle=True, sampler=sampler,
                                  collate=self.unlabelled_set is None)
        per_rank = len(sampler) if sampler is not None else len(self.train_set)
        self.batches_per_epoch = _batches_per_epoch(per_rank, cfg.train.batch_size)
        self.validate_enabled = bool(cfg.dataset.val_sequences)
        if self.validate_enabled and not split_files(cfg, "val"):
            # Fail now rather than after val_every steps of training.
            raise TrainError(f"{self.opts.config_source}: the validation split {cfg.dataset.val_sequences} under "
                             f"{cfg.dataset.data_root} holds no scans (use val_sequences: [] for no validation)")

        self.teacher = None
        self.pvd_loss = None
        self.generator = None
        self.class_counts = None
        if self.distill:
            self._build_teacher()

    def _build_teacher(self) -> None:
        cfg = self.cfg
        path = Path(self.opts.teacher)
        if not path.is_file():
            raise TrainError(f"--teacher: checkpoint {path} not found")
        tckpt = load_checkpoint(path)
        check_teacher_compatible(cfg, tckpt.config, self.opts.config_source, str(path))
        if tckpt.label_map.class_names != self.label_map.class_names:
            raise ConfigError(f"teacher checkpoint {path} has classes {tckpt.label_map.class_names}, the student "
                              f"config's {cfg.dataset.kind} map has {self.label_map.class_names}")
        teacher = build_model_from_checkpoint(tckpt, device=self.device)
        teacher.eval()
        teacher.requires_grad_(False)
        self.teacher = teacher
        self.teacher_info = {"path": str(path), "init_size": tckpt.config.model.init_size,
                             "meta_step": (tckpt.meta or {}).get("step")}
        self.class_counts = self._class_counts()
        weights = class_weights_from_counts(self.class_counts).to(self.device)
        self.pvd_loss = PVDLoss(cfg.distill, cfg.grid.size, cfg.grid.rho[1], weights)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(cfg.train.seed + 7919 * self.env.rank)

    def _class_counts(self) -> np.ndarray:
        """Counts of the training split: from the run dir when resuming, else computed once (rank 0)."""
        path = self.out_dir / "class_counts.json"
        counts = None
        if self.is_main:
            if self.opts.resume and path.is_file():
                counts = stats.load_class_counts(path, self.label_map)
            elif self.resume_ckpt is not None and "class_counts" in (self.resume_ckpt.meta or {}):
                counts = np.asarray(self.resume_ckpt.meta["class_counts"], dtype=np.int64)
                stats.save_class_counts(path, counts, self.label_map)
            else:
                counts = stats.class_point_counts(split_files(self.cfg, "train"), self.label_map,
                                                  progress=self.opts.progress)
                stats.save_class_counts(path, counts, self.label_map)
        counts = distributed.broadcast_object(counts)
        return np.asarray(counts, dtype=np.int64)

    # ------------------------------------------------------------------ state
    def _meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "trained_with": "distill" if self.distill else "train",
            "step": self.step,
            "epoch": self.epoch,
            "metrics": {"best_miou": self.best_miou, "val_miou": self.last_val_miou},
            "config_source": self.opts.config_source,
            "world_size": self.env.world_size,
            "wall_s": round(self.wall_before + (time.perf_counter() - self.t_start), 2),
        }
        if self.init_info is not None:
            meta["init_from"] = self.init_info
        if self.distill:
            meta["teacher"] = self.teacher_info
            meta["class_counts"] = [int(c) for c in self.class_counts]
        if self.unlabelled_set is not None:
            meta["unlabelled"] = {"sources": list(self.cfg.dataset.unlabelled), "scans": len(self.unlabelled_set),
                                  "per_batch": unlabelled_per_batch(self.cfg)}
        return meta

    def _train_state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_miou": self.best_miou,
            "last_val_miou": self.last_val_miou,
            "world_size": self.env.world_size,
            # one RNG state per rank (the PVD generator is seeded per rank)
            "rng": distributed.gather_objects(capture_rng_state(self.generator)),
            "ema": None if self.ema is None else self.ema.state_dict(),
        }

    def _save(self, path: Path, train_state: Optional[dict[str, Any]] = None) -> None:
        save_checkpoint(path, self.raw_model, self.cfg, self.label_map, self._meta(), train_state=train_state)

    def _restore(self) -> dict[str, Any]:
        ckpt = self.resume_ckpt
        state = ckpt.train_state
        if int(state.get("world_size", 1)) != self.env.world_size:
            raise TrainError(f"--resume: {self.last_path} was written by a {state.get('world_size')}-process run; "
                             f"resume it with the same number of processes (now {self.env.world_size})")
        self.raw_model.load_state_dict(ckpt.model_state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            if not state.get("ema"):
                raise TrainError(f"--resume: {self.last_path} holds no weight average (train.ema_decay was 0)")
            self.ema.load_state_dict(state["ema"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.best_miou = state.get("best_miou")
        self.last_val_miou = state.get("last_val_miou")
        self.wall_before = float((ckpt.meta or {}).get("wall_s", 0.0))
        self.init_info = (ckpt.meta or {}).get("init_from")
        rng = state["rng"]
        if self.batch_in_epoch >= self.batches_per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        return rng[self.env.rank]

    # ------------------------------------------------------------------ validation
    def _validate(self) -> Optional[EvalReport]:
        from pvd_core.segmenter import Segmenter

        model = self.raw_model
        was_training = model.training
        # The Segmenter puts the model in eval mode and freezes its parameters: undo both after.
        grad_flags = [p.requires_grad for p in model.parameters()]
        try:
            segmenter = Segmenter(model, self.cfg, self.label_map, device=self.device)
            report = evaluate_split(segmenter, self.cfg, "val", self.cfg.train.max_val_scans,
                                    progress=self.opts.progress and self.is_main,
                                    rank=self.env.rank, world_size=self.env.world_size)
        finally:
            for p, flag in zip(model.parameters(), grad_flags):
                p.requires_grad_(flag)
            model.train(was_training)
        return report

    def _after_validation(self, report: EvalReport) -> None:
        miou = report.miou_percent
        self.last_val_miou = miou
        improved = miou is not None and (self.best_miou is None or miou > self.best_miou)
        if improved:
            self.best_miou = miou
        if not self.is_main:
            return
        self.log.write({"kind": "val", "step": self.step, "epoch": self.epoch, "miou": miou,
                        "best_miou": self.best_miou, "points": report.result.points, "scans": report.scans,
                        "seconds": round(report.seconds, 2)})
        report.extra = {"step": self.step}
        report.write(self.out_dir / "eval" / "val_last.json")
        if improved:
            self._save(self.best_path)
            report.write(self.out_dir / "eval" / "val_best.json", self.out_dir / "eval" / "val_best_confusion.png",
                         title=f"validation, step {self.step}, mIoU {miou:.2f}")
        plot_curves(self.log.read(), self.out_dir / "curves.png", title=str(self.out_dir.name))

    # ------------------------------------------------------------------ the loop
    def _step(self, batch) -> dict[str, float]:
        batch = batch.to(self.device)
        out = self.model(batch)
        terms = segmentation_loss(out, batch, self.cfg.train)
        loss = terms["seg"]
        if self.teacher is not None:
            with torch.no_grad():
                t_out = self.teacher(batch)
            pvd = self.pvd_loss(out, t_out, batch, self.generator)
            terms.update(pvd)
            loss = loss + pvd["pvd"]
        terms["loss"] = loss
        if batch.point_labelled is not None:
            terms["unlabelled_points"] = (~batch.point_labelled).sum().to(torch.float32)
        if not torch.isfinite(loss):
            values = {k: float(v.detach()) for k, v in terms.items()}
            raise TrainError(f"non-finite loss at step {self.step + 1} (epoch {self.epoch}): {values}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.raw_model)
        return {k: float(v.detach()) for k, v in terms.items()}

    def _epoch_batches(self):
        """Batches of the current epoch, minus those a resumed run already consumed; with
        unlabelled scans, each labelled batch plus the unlabelled scans of its step."""
        batches = self._labelled_batches()
        if self.unlabelled_set is None:
            return batches
        if self.unlabelled_iter is None:  # draws are a function of the step: a resumed run continues them
            self.unlabelled_iter = unlabelled_batches(self.unlabelled_set, self.cfg, self.step, self.env.rank,
                                                      self.env.world_size)
        return (collate_scans(list(scans) + next(self.unlabelled_iter), self.cfg.grid.size) for scans in batches)

    def _labelled_batches(self):
        self.loader.generator = _loader_generator(self.cfg.train.seed, self.epoch)
        if isinstance(self.loader.sampler, torch.utils.data.DistributedSampler):
            set_epoch(self.loader, self.epoch)
            return itertools.islice(iter(self.loader), self.batch_in_epoch, None)
        set_epoch(self.loader, self.epoch, start_batch=self.batch_in_epoch)
        return iter(self.loader)

    def run(self) -> TrainResult:
        """Build (or restore) everything, train to train.max_steps, write the final files."""
        self.t_start = time.perf_counter()
        try:
            self._build()
            rng_state = self._restore() if self.resume_ckpt is not None else None
            self._prepare_run_dir(resumed=rng_state is not None)
            self._train(rng_state)
            return self._finish()
        finally:
            distributed.cleanup()

    def _prepare_run_dir(self, resumed: bool) -> None:
        """Write config.yaml; drop metrics lines logged after the checkpoint we start from (rank 0).

        On a fresh start that is every line: they belong to a run killed before its first
        checkpoint, and appending to them would give the loss curve two step 10s."""
        if not self.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_config_yaml(self.cfg, self.out_dir / "config.yaml")
        dropped = self.log.truncate_after(self.step if resumed else 0)
        if dropped:
            print(f"{'resume' if resumed else 'fresh start'}: dropped {dropped} metrics line(s) logged after step "
                  f"{self.step if resumed else 0}" + ("" if resumed else " by a run that never reached a checkpoint"))
        if resumed:
            print(f"resuming {self.out_dir} at step {self.step} (epoch {self.epoch}, batch {self.batch_in_epoch})")

    def _train(self, rng_state: Optional[dict[str, Any]]) -> None:
        """The loop over epochs and batches: one optimiser step per batch, then logging,
        validation and checkpointing when their step comes. ``rng_state`` (resume) is
        restored after the epoch's iterator is created, exactly where the interrupted run was."""
        max_steps = self.cfg.train.max_steps
        bar = tqdm(total=max_steps, initial=self.step, desc="distill" if self.distill else "train",
                   unit="step", disable=not (self.opts.progress and self.is_main), dynamic_ncols=True)
        window = _LogWindow(t_start=time.perf_counter())
        while self.step < max_steps:
            batches = self._epoch_batches()
            if rng_state is not None:
                restore_rng_state(rng_state, self.generator)
                rng_state = None
            finished_epoch = True
            for batch in batches:
                terms = self._step(batch)
                self.step += 1
                self.batch_in_epoch += 1
                window.add(terms, batch.batch_size * self.env.world_size)
                bar.update(1)
                if self._due(self.cfg.train.log_every):
                    self._log_step(window, bar)
                    window = _LogWindow(t_start=window.t_end)
                self._maybe_validate()
                self._maybe_checkpoint()
                if self.step >= max_steps:
                    finished_epoch = False
                    break
            if finished_epoch:
                self.epoch += 1
                self.batch_in_epoch = 0
        bar.close()

    def _due(self, every: int) -> bool:
        """Whether a task run every ``every`` steps (and always at the last step) runs at this step."""
        return self.step % every == 0 or self.step == self.cfg.train.max_steps

    def _log_step(self, window: "_LogWindow", bar: Any) -> None:
        """Means of the loss terms since the last log line (over all ranks), throughput; one metrics line."""
        means = distributed.mean_over_ranks(window.means())  # collective under DDP: every rank calls it
        now = time.perf_counter()
        window.t_end = now
        rate = window.scans / max(now - window.t_start, 1e-9)
        bar.set_postfix({k: f"{means[k]:.3f}" for k in ("loss", "seg", "pvd") if k in means}
                        | {"scans/s": f"{rate:.2f}"})
        if self.is_main:
            record = {"kind": "train", "step": self.step, "epoch": self.epoch,
                      "lr": self.optimizer.param_groups[0]["lr"]}
            record.update({k: round(v, 6) for k, v in means.items()})
            record["scans_per_s"] = round(rate, 3)
            record["elapsed_s"] = round(self.wall_before + now - self.t_start, 2)
            self.log.write(record)

    def _maybe_validate(self) -> None:
        if self.validate_enabled and self._due(self.cfg.train.val_every):
            self._after_validation(self._validate())

    def _maybe_checkpoint(self) -> None:
        """last.pt (with train_state) and, with EMA, ema.pt every checkpoint_every steps and at the end."""
        if not self._due(self.cfg.train.checkpoint_every):
            return
        if self.step == self.cfg.train.max_steps and self.env.enabled:
            distributed.sync_buffers(self.raw_model)
        state = self._train_state()  # collective under DDP: every rank calls it
        if self.is_main:
            self._save(self.last_path, state)
            if self.ema is not None:
                save_checkpoint(self.out_dir / "ema.pt", self.ema.as_module(self.raw_model),
                                self.cfg, self.label_map, self._meta() | {"ema_decay": self.ema.decay})
        distributed.barrier()

    def _finish(self) -> TrainResult:
        """Per-rank final digest under DDP; best.pt without validation; the final curves."""
        if self.env.enabled:
            # Every rank reports its final weights: equal digests prove the ranks stayed in sync.
            print(f"rank {self.env.rank}/{self.env.world_size}: final state sha256 "
                  f"{distributed.state_digest(self.raw_model)}", flush=True)
        if self.is_main:
            if not self.validate_enabled:
                shutil.copyfile(self.last_path, self.best_path)
            plot_curves(self.log.read(), self.out_dir / "curves.png", title=str(self.out_dir.name))
        wall = self.wall_before + time.perf_counter() - self.t_start
        return TrainResult(out_dir=self.out_dir, step=self.step, best_miou=self.best_miou,
                           last_val_miou=self.last_val_miou, wall_s=wall)


@dataclass
class _LogWindow:
    """The steps since the last log line: summed loss terms, their count, scans seen, and when it began."""

    t_start: float
    t_end: float = 0.0  # set when the window is logged: the next one begins then
    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0
    scans: int = 0

    def add(self, terms: dict[str, float], scans: int) -> None:
        self.scans += scans
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: v / self.count for k, v in self.sums.items()}


def train(opts: TrainOptions) -> TrainResult:
    return Trainer(opts).run()
