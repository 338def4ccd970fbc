"""PVD losses: KL and affinity properties, no gradient to the teacher, the per-supervoxel
draws, and PVDLoss end to end on synthetic outputs and on a real voxelized scan."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pvd_core.config import DistillConfig, GridConfig
from pvd_core.data.batch import Batch, collate_scans
from pvd_core.losses.distillation import PVDLoss, affinity_loss, draw_members, kl_distillation
from pvd_core.losses.supervoxel import class_weights_from_counts, supervoxel_ids
from pvd_core.models.outputs import SegOutput
from test_train import one_thread  # noqa: F401  (fixture: one torch thread for the real-model tests)

SHAPE = [32, 32, 8]
C = 6


def make_batch(seed: int = 0, batch_size: int = 2, voxels_per_scan: int = 120, points_per_voxel: int = 4,
               labels: bool = True) -> Batch:
    g = torch.Generator().manual_seed(seed)
    coords, p2v, feats, pbatch = [], [], [], []
    offset = 0
    for b in range(batch_size):
        lin = torch.randperm(SHAPE[0] * SHAPE[1] * SHAPE[2], generator=g)[:voxels_per_scan].sort().values
        cells = torch.stack([lin // (SHAPE[1] * SHAPE[2]), (lin // SHAPE[2]) % SHAPE[1], lin % SHAPE[2]], 1)
        coords.append(torch.cat([torch.full((voxels_per_scan, 1), b), cells], 1).int())
        n_pts = voxels_per_scan * points_per_voxel
        v_of_p = torch.randint(0, voxels_per_scan, (n_pts,), generator=g)
        f = torch.randn(n_pts, 9, generator=g)
        f[:, 3] = (cells[v_of_p, 0].float() + torch.rand(n_pts, generator=g)) * 50.0 / SHAPE[0]  # rho in metres
        p2v.append(v_of_p + offset)
        feats.append(f)
        pbatch.append(torch.full((n_pts,), b))
        offset += voxels_per_scan
    p2v_t = torch.cat(p2v)
    point_labels = torch.randint(0, C, (p2v_t.shape[0],), generator=g) if labels else None
    voxel_labels = torch.randint(0, C, (offset,), generator=g) if labels else None
    return Batch(point_features=torch.cat(feats), point_batch=torch.cat(pbatch), point_to_voxel=p2v_t,
                 voxel_coords=torch.cat(coords), batch_size=batch_size, spatial_shape=list(SHAPE),
                 point_labels=point_labels, voxel_labels=voxel_labels)


def make_output(batch: Batch, voxel_width: int, seed: int, requires_grad: bool = True) -> SegOutput:
    g = torch.Generator().manual_seed(seed)

    def t(*shape):
        return torch.randn(*shape, generator=g).requires_grad_(requires_grad)

    return SegOutput(point_logits=t(batch.num_points, C), voxel_logits=t(batch.num_voxels, C),
                     point_features=t(batch.num_points, 64), voxel_features=t(batch.num_voxels, voxel_width),
                     point_to_voxel=batch.point_to_voxel, voxel_coords=batch.voxel_coords)


def small_cfg(**kw) -> DistillConfig:
    base = dict(enabled=True, supervoxel=[8, 8, 4], num_supervoxels=4, points_per_supervoxel=16,
                voxels_per_supervoxel=8, min_points=2, alpha_p=1.0, alpha_v=0.5, beta_p=2.0, beta_v=3.0,
                temperature=2.0)
    base.update(kw)
    return DistillConfig(**base)


CLASS_WEIGHTS = class_weights_from_counts(np.array([0, 500, 200, 50, 10, 2]))


def test_kl_zero_for_equal_logits_positive_otherwise_and_matches_definition():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(50, C, generator=g)
    for T in (1.0, 4.0):
        assert float(kl_distillation(s, s.clone(), T)) == pytest.approx(0.0, abs=1e-6)
        # A constant shift per row changes no probability: still zero.
        assert float(kl_distillation(s, s + 3.0, T)) == pytest.approx(0.0, abs=1e-5)
    t = torch.randn(50, C, generator=g)
    T = 3.0
    got = float(kl_distillation(s, t, T))
    want = float(F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), reduction="batchmean",
                          log_target=True)) * T * T
    assert got > 0
    assert got == pytest.approx(want, rel=1e-5)
    assert float(kl_distillation(torch.zeros(0, C), torch.zeros(0, C), 2.0)) == 0.0


def test_no_gradient_reaches_teacher_even_without_no_grad():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(20, C, generator=g, requires_grad=True)
    t = torch.randn(20, C, generator=g, requires_grad=True)
    kl_distillation(s, t, 2.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    fs = torch.randn(10, 16, generator=g, requires_grad=True)
    ft = torch.randn(10, 32, generator=g, requires_grad=True)
    affinity_loss([fs], [ft]).backward()
    assert fs.grad is not None and fs.grad.abs().sum() > 0
    assert ft.grad is None


def test_affinity_zero_up_to_positive_scale_and_matches_formula():
    g = torch.Generator().manual_seed(2)
    feats = [torch.randn(n, 64, generator=g) for n in (16, 5, 1)]
    scaled = [f * (0.1 + 5 * torch.rand(f.shape[0], 1, generator=g)) for f in feats]  # per-row positive scale
    assert float(affinity_loss(scaled, feats)) == pytest.approx(0.0, abs=1e-10)
    other = [torch.randn(f.shape[0], 32, generator=g) for f in feats]  # narrower "teacher": no adapter needed
    got = float(affinity_loss(feats, other))
    want = 0.0
    for a, b in zip(feats, other):
        ua, ub = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
        want += float(((ua @ ua.T - ub @ ub.T) ** 2).sum()) / a.shape[0] ** 2
    want /= len(feats)
    assert got > 0
    assert got == pytest.approx(want, rel=1e-5)
    # A negative scale flips signs of cosines: not an equivalence, the loss sees it.
    flipped = [f.clone() for f in feats]
    flipped[0][0] *= -1
    assert float(affinity_loss(flipped, feats)) > 0
    with pytest.raises(ValueError, match="rows"):
        affinity_loss([torch.randn(3, 4)], [torch.randn(4, 4)])


def test_draw_members_uniform_without_replacement():
    gen = torch.Generator().manual_seed(3)
    group = torch.tensor([0, 1, 1, 1, 1, 1, 2, 2, 5, 1, 2, 0])
    chosen = torch.tensor([1, 2])
    counts = torch.zeros(len(group))
    for _ in range(3000):
        g1, g2 = draw_members(group, chosen, 2, gen)
        assert torch.all(group[g1] == 1) and torch.all(group[g2] == 2)
        assert len(set(g1.tolist())) == 2 and len(set(g2.tolist())) == 2
        counts[g1] += 1
        counts[g2] += 1
    # Group 1 has 6 rows, 2 drawn: each row 1/3 of the time; group 2 has 3 rows: 2/3.
    freq = counts / 3000
    in1, in2 = group == 1, group == 2
    assert torch.all((freq[in1] - 1 / 3).abs() < 0.04)
    assert torch.all((freq[in2] - 2 / 3).abs() < 0.04)
    assert float(freq[(group == 0) | (group == 5)].sum()) == 0.0
    (few,) = draw_members(group, torch.tensor([2]), 10, gen)  # fewer rows than asked: all of them
    assert sorted(few.tolist()) == [6, 7, 10]


def test_pvd_loss_terms_total_and_teacher_isolation():
    batch = make_batch()
    student = make_output(batch, voxel_width=8, seed=10)
    teacher = make_output(batch, voxel_width=16, seed=11)
    cfg = small_cfg()
    loss = PVDLoss(cfg, SHAPE, rho_max=50.0, class_weights=CLASS_WEIGHTS)
    terms = loss(student, teacher, batch, torch.Generator().manual_seed(0))
    assert set(terms) == {"out_p", "out_v", "aff_p", "aff_v", "pvd"}
    # Each term against its definition, computed here from torch primitives: the KL with
    # F.kl_div at T = 2, the affinities over the very members the loss drew (replayed from
    # the same generator seed: supervoxel draw, then point members, then voxel members).
    def ref_kl(s, t):
        return float(F.kl_div(F.log_softmax(s / 2.0, 1), F.log_softmax(t / 2.0, 1), reduction="batchmean",
                              log_target=True)) * 4.0

    def ref_aff(fs, ft, groups):
        total = 0.0
        for g in groups:
            us, ut = F.normalize(fs[g], dim=1), F.normalize(ft[g], dim=1)
            total += float(((us @ us.T - ut @ ut.T) ** 2).mean())
        return total / len(groups)

    gen = torch.Generator().manual_seed(0)
    vsv = supervoxel_ids(batch.voxel_coords, SHAPE, cfg.supervoxel)
    psv = vsv[batch.point_to_voxel.long()]
    from pvd_core.losses.supervoxel import num_supervoxels, sample_supervoxels, supervoxel_weights
    weights = supervoxel_weights(psv, batch.point_labels, batch.point_features[:, 3],
                                 num_supervoxels(2, SHAPE, cfg.supervoxel),
                                 CLASS_WEIGHTS, min_points=cfg.min_points, rho_max=50.0)
    chosen = sample_supervoxels(weights, cfg.num_supervoxels, gen)
    p_groups = draw_members(psv, chosen, cfg.points_per_supervoxel, gen)
    v_groups = draw_members(vsv, chosen, cfg.voxels_per_supervoxel, gen)
    with torch.no_grad():
        assert terms["out_p"].item() == pytest.approx(ref_kl(student.point_logits, teacher.point_logits), rel=1e-5)
        assert terms["out_v"].item() == pytest.approx(ref_kl(student.voxel_logits, teacher.voxel_logits), rel=1e-5)
        assert terms["aff_p"].item() == pytest.approx(
            ref_aff(student.point_features, teacher.point_features, p_groups), rel=1e-5)
        assert terms["aff_v"].item() == pytest.approx(
            ref_aff(student.voxel_features, teacher.voxel_features, v_groups), rel=1e-5)
    assert [len(g) for g in p_groups] == [min(16, int((psv == k).sum())) for k in chosen.tolist()]
    want = 1.0 * terms["out_p"] + 0.5 * terms["out_v"] + 2.0 * terms["aff_p"] + 3.0 * terms["aff_v"]
    assert terms["pvd"].item() == pytest.approx(want.item(), rel=1e-6)
    assert loss.last_supervoxels is not None and loss.last_supervoxels.numel() == 4
    vsv = supervoxel_ids(batch.voxel_coords, SHAPE, cfg.supervoxel)
    assert set(loss.last_supervoxels.tolist()) <= set(vsv.tolist())  # never an empty supervoxel
    terms["pvd"].backward()
    for name in ("point_logits", "voxel_logits", "point_features", "voxel_features"):
        assert getattr(student, name).grad is not None, name
        assert getattr(teacher, name).grad is None, name


def test_pvd_loss_zero_when_student_matches_teacher_up_to_scale():
    batch = make_batch(seed=4)
    teacher = make_output(batch, voxel_width=16, seed=12, requires_grad=False)
    student = SegOutput(point_logits=teacher.point_logits.clone(), voxel_logits=teacher.voxel_logits.clone(),
                        point_features=teacher.point_features * 2.5, voxel_features=teacher.voxel_features * 0.3,
                        point_to_voxel=batch.point_to_voxel, voxel_coords=batch.voxel_coords)
    terms = PVDLoss(small_cfg(), SHAPE, 50.0, CLASS_WEIGHTS)(student, teacher, batch, torch.Generator().manual_seed(1))
    for name, value in terms.items():
        assert value.item() == pytest.approx(0.0, abs=1e-5), name


def test_pvd_loss_reproducible_with_generator_and_skips_zero_weights():
    batch = make_batch(seed=5)
    student = make_output(batch, 8, seed=20)
    teacher = make_output(batch, 16, seed=21)
    loss = PVDLoss(small_cfg(), SHAPE, 50.0, CLASS_WEIGHTS)
    a = loss(student, teacher, batch, torch.Generator().manual_seed(7))
    sv_a = loss.last_supervoxels.clone()
    b = loss(student, teacher, batch, torch.Generator().manual_seed(7))
    assert torch.equal(sv_a, loss.last_supervoxels)
    assert a["aff_p"].item() == b["aff_p"].item() and a["aff_v"].item() == b["aff_v"].item()
    only_kl = PVDLoss(small_cfg(beta_p=0.0, beta_v=0.0, alpha_v=0.0), SHAPE, 50.0, CLASS_WEIGHTS)
    terms = only_kl(student, teacher, batch, torch.Generator().manual_seed(7))
    assert only_kl.last_supervoxels is None  # no sampling at all when both affinity weights are 0
    assert terms["aff_p"].item() == 0.0 and terms["aff_v"].item() == 0.0 and terms["out_v"].item() == 0.0
    assert terms["pvd"].item() == pytest.approx(terms["out_p"].item())


def test_pvd_loss_unlabeled_batches():
    # No labels at all: the teacher's predictions define the class term.
    batch = make_batch(seed=6, labels=False)
    student, teacher = make_output(batch, 8, 30), make_output(batch, 16, 31)
    loss = PVDLoss(small_cfg(), SHAPE, 50.0, CLASS_WEIGHTS)
    terms = loss(student, teacher, batch, torch.Generator().manual_seed(0))
    assert loss.last_supervoxels.numel() == 4 and terms["aff_p"].item() > 0
    # Every label 0: no supervoxel has a class, the difficulty sampler draws none, nothing is NaN.
    batch0 = make_batch(seed=6)
    batch0.point_labels = torch.zeros_like(batch0.point_labels)
    terms0 = loss(student, teacher, batch0, torch.Generator().manual_seed(0))
    assert loss.last_supervoxels.numel() == 0
    assert terms0["aff_p"].item() == 0.0 and all(torch.isfinite(v) for v in terms0.values())
    terms0["pvd"].backward()
    assert teacher.point_logits.grad is None


def test_pvd_loss_rejects_misaligned_outputs():
    batch = make_batch(seed=7)
    student = make_output(batch, 8, 40)
    other = make_batch(seed=7, voxels_per_scan=100)
    teacher = make_output(other, 16, 41)
    with pytest.raises(ValueError, match="same Batch"):
        PVDLoss(small_cfg(), SHAPE, 50.0, CLASS_WEIGHTS)(student, teacher, batch, torch.Generator())


def test_pvd_loss_on_a_real_voxelized_scan(real_scan_path, real_label_path):
    from pvd_core.data.semantickitti import read_labels, read_points
    from pvd_core.labels import SEMANTIC_KITTI
    from pvd_core.voxelizer import CylindricalVoxelizer

    points = read_points(real_scan_path)
    labels = read_labels(real_label_path, len(points))
    grid = GridConfig(size=[32, 32, 8])
    pick = np.random.default_rng(0).choice(len(points), 20000, replace=False)
    scan = CylindricalVoxelizer(grid)(points[pick], labels[pick])
    batch = collate_scans([scan], grid.size)
    nc = SEMANTIC_KITTI.num_classes
    counts = np.bincount(labels.astype(np.int64), minlength=nc)
    g = torch.Generator().manual_seed(0)

    def out(width, rg):
        return SegOutput(point_logits=torch.randn(batch.num_points, nc, generator=g).requires_grad_(rg),
                         voxel_logits=torch.randn(batch.num_voxels, nc, generator=g).requires_grad_(rg),
                         point_features=torch.randn(batch.num_points, 64, generator=g).requires_grad_(rg),
                         voxel_features=torch.randn(batch.num_voxels, width, generator=g).requires_grad_(rg),
                         point_to_voxel=batch.point_to_voxel, voxel_coords=batch.voxel_coords)

    cfg = DistillConfig(enabled=True, supervoxel=[8, 8, 4], num_supervoxels=6)
    loss = PVDLoss(cfg, grid.size, grid.rho[1], class_weights_from_counts(counts))
    terms = loss(out(8, True), out(16, False), batch, torch.Generator().manual_seed(0))
    assert loss.last_supervoxels.numel() == 6
    assert all(torch.isfinite(v) and v.item() > 0 for v in terms.values())
    # The pointwise KL (T = 1) is the definition's value on these rows, not merely positive.
    s_out, t_out = out(8, True), out(16, False)
    terms = loss(s_out, t_out, batch, torch.Generator().manual_seed(0))
    want = float(F.kl_div(F.log_softmax(s_out.point_logits.detach(), 1), F.log_softmax(t_out.point_logits, 1),
                          reduction="batchmean", log_target=True))
    assert terms["out_p"].item() == pytest.approx(want, rel=1e-5)
    # The drawn supervoxels hold points and, under 'difficulty', at least one class with min_points.
    vsv = supervoxel_ids(batch.voxel_coords, grid.size, cfg.supervoxel)
    psv = vsv[batch.point_to_voxel]
    for k in loss.last_supervoxels.tolist():
        in_k = batch.point_labels[psv == k]
        assert in_k.numel() > 0
        assert (torch.bincount(in_k[in_k > 0], minlength=nc) >= cfg.min_points).any()


# ---------------------------------------------------------------- known values, by hand
def test_kl_distillation_hand_computed_values():
    # Teacher p = softmax([ln 3, 0]) = [3/4, 1/4], student q = [1/2, 1/2]:
    # KL(p || q) = 3/4 ln(3/2) + 1/4 ln(1/2).
    s = torch.zeros(1, 2)
    t = torch.tensor([[math.log(3.0), 0.0]])
    assert float(kl_distillation(s, t, 1.0)) == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-6)
    # T = 2: p = [sqrt3, 1] / (1 + sqrt3), times T^2 = 4.
    p0 = math.sqrt(3.0) / (1.0 + math.sqrt(3.0))
    want = 4.0 * (p0 * math.log(2 * p0) + (1 - p0) * math.log(2 * (1 - p0)))
    assert float(kl_distillation(s, t, 2.0)) == pytest.approx(want, rel=1e-6)
    # A mean over rows: a second, identical row pair (KL 0) halves it.
    both = kl_distillation(torch.cat([s, t]), torch.cat([t, t]), 2.0)
    assert float(both) == pytest.approx(want / 2, rel=1e-6)
    # The direction is KL(teacher || student), not the reverse (which is 1/2 ln(2/3) + 1/2 ln 2 at T = 1).
    assert float(kl_distillation(t, s, 1.0)) == pytest.approx(0.5 * math.log(2 / 3) + 0.5 * math.log(2.0), rel=1e-6)


def test_kl_row_weights_restrict_or_reweight_the_mean():
    s = torch.zeros(3, 2)
    t = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0], [math.log(9.0), 0.0]])  # top-1 0.75, 0.5, 0.9
    per_row = [float(kl_distillation(s[i:i + 1], t[i:i + 1], 1.0)) for i in range(3)]
    # A 0/1 mask is a mean over the kept rows (unchanged scale), not over all of them.
    assert float(kl_distillation(s, t, 1.0, torch.tensor([1.0, 0.0, 1.0]))) == pytest.approx(
        (per_row[0] + per_row[2]) / 2, rel=1e-6)
    assert float(kl_distillation(s, t, 1.0, torch.tensor([3.0, 1.0, 0.0]))) == pytest.approx(
        (3 * per_row[0] + per_row[1]) / 4, rel=1e-6)
    assert float(kl_distillation(s, t, 1.0, torch.zeros(3))) == 0.0  # nothing kept: 0, not NaN
    with pytest.raises(ValueError, match="one entry per row"):
        kl_distillation(s, t, 1.0, torch.ones(2))
    # 'confidence' keeps the rows whose teacher top-1 reaches the threshold: rows 0 and 2 at 0.7.
    from pvd_core.losses.distillation import kl_row_weights
    mask = kl_row_weights(small_cfg(kl_weighting="confidence", kl_min_confidence=0.7), t, None)
    assert mask.tolist() == [1.0, 0.0, 1.0]
    assert kl_row_weights(small_cfg(), t, torch.ones(3)) is None  # uniform: the paper's plain mean


def test_pvd_loss_weights_the_kl_by_supervoxel_or_teacher_confidence():
    from pvd_core.losses.supervoxel import num_supervoxels, supervoxel_weights

    batch = make_batch(seed=6)
    student = make_output(batch, voxel_width=8, seed=30)
    teacher = make_output(batch, voxel_width=16, seed=31)
    vsv = supervoxel_ids(batch.voxel_coords, SHAPE, [8, 8, 4])
    psv = vsv[batch.point_to_voxel.long()]
    sv_w = supervoxel_weights(psv, batch.point_labels, batch.point_features[:, 3],
                              num_supervoxels(2, SHAPE, [8, 8, 4]), CLASS_WEIGHTS, min_points=2, rho_max=50.0)

    def terms(**kw):
        cfg = small_cfg(beta_p=0.0, beta_v=0.0, **kw)  # KL only: the weighting alone is under test
        return PVDLoss(cfg, SHAPE, 50.0, CLASS_WEIGHTS)(student, teacher, batch, torch.Generator().manual_seed(0))

    sv = terms(kl_weighting="supervoxel")
    assert sv["out_p"].item() == pytest.approx(
        kl_distillation(student.point_logits, teacher.point_logits, 2.0, sv_w[psv]).item(), rel=1e-6)
    assert sv["out_v"].item() == pytest.approx(
        kl_distillation(student.voxel_logits, teacher.voxel_logits, 2.0, sv_w[vsv]).item(), rel=1e-6)
    assert sv["out_p"].item() != pytest.approx(terms()["out_p"].item(), rel=1e-3)  # the weights do change it
    confident = F.softmax(teacher.point_logits.detach(), 1).max(1).values >= 0.5
    assert 0 < int(confident.sum()) < batch.num_points  # random logits: some rows in, some out
    conf = terms(kl_weighting="confidence", kl_min_confidence=0.5)
    assert conf["out_p"].item() == pytest.approx(
        kl_distillation(student.point_logits[confident], teacher.point_logits[confident], 2.0).item(), rel=1e-6)
    conf["pvd"].backward()
    assert teacher.point_logits.grad is None
    dropped = student.point_logits.grad[~confident]  # rows the teacher is unsure of teach nothing
    assert float(dropped.abs().sum()) == 0.0 and float(student.point_logits.grad[confident].abs().sum()) > 0


def test_affinity_from_probabilities_compares_what_the_models_predict_not_their_features():
    batch = make_batch(seed=7)
    teacher = make_output(batch, voxel_width=16, seed=41)
    student = make_output(batch, voxel_width=8, seed=40)
    # The student predicts exactly the teacher's distributions, from unrelated features.
    student.point_logits.data.copy_(teacher.point_logits.data)
    student.voxel_logits.data.copy_(teacher.voxel_logits.data)

    def terms(source):
        cfg = small_cfg(alpha_p=0.0, alpha_v=0.0, affinity_source=source)  # the affinity terms alone
        return PVDLoss(cfg, SHAPE, 50.0, CLASS_WEIGHTS)(student, teacher, batch, torch.Generator().manual_seed(3))

    by_features, by_probs = terms("features"), terms("probabilities")
    assert by_features["aff_p"].item() > 0.01 and by_features["aff_v"].item() > 0.01  # random features
    assert by_probs["aff_p"].item() == pytest.approx(0.0, abs=1e-6)
    assert by_probs["aff_v"].item() == pytest.approx(0.0, abs=1e-6)
    # Other student logits: the terms equal the paper's on outputs whose features are softmax(logits / T)
    # (same generator, so the same supervoxels and members are drawn).
    student.point_logits.data.normal_(generator=torch.Generator().manual_seed(9))
    probs = terms("probabilities")

    def as_features(out: SegOutput) -> SegOutput:
        p, v = (F.softmax(x.detach() / 2.0, dim=1) for x in (out.point_logits, out.voxel_logits))
        return SegOutput(point_logits=out.point_logits, voxel_logits=out.voxel_logits, point_features=p,
                         voxel_features=v, point_to_voxel=out.point_to_voxel, voxel_coords=out.voxel_coords)

    paper = PVDLoss(small_cfg(alpha_p=0.0, alpha_v=0.0), SHAPE, 50.0, CLASS_WEIGHTS)(
        as_features(student), as_features(teacher), batch, torch.Generator().manual_seed(3))
    assert probs["aff_p"].item() > 0.01
    assert probs["aff_p"].item() == pytest.approx(paper["aff_p"].item(), rel=1e-5)
    assert probs["aff_v"].item() == pytest.approx(paper["aff_v"].item(), abs=1e-7)
    probs["pvd"].backward()
    assert float(student.point_logits.grad.abs().sum()) > 0  # the student learns through its logits
    assert student.point_features.grad is None and teacher.point_logits.grad is None


def test_affinity_loss_hand_computed_values():
    # Group 1: student rows orthogonal (A_s = I), teacher rows equal (A_t = 1): two off-diagonal
    # errors of 1, ||.||_F^2 / N^2 = 2 / 4. Group 2: student cos = 1/sqrt2, teacher cos = -1:
    # 2 (1/sqrt2 + 1)^2 / 4. The loss is the mean over groups.
    s = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 1.0]])]
    t = [torch.tensor([[2.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0], [-3.0, 0.0, 0.0]])]
    g1, g2 = 0.5, 2 * (1 / math.sqrt(2) + 1) ** 2 / 4
    assert float(affinity_loss(s, t)) == pytest.approx((g1 + g2) / 2, rel=1e-6)
    assert float(affinity_loss(s[:1], t[:1])) == pytest.approx(g1, rel=1e-6)


# ---------------------------------------------------------------- real models (spconv)
TINY_GRID = [32, 32, 8]


def tiny_model_config(init_size: int):
    from pvd_core.config import Config

    cfg = Config()
    cfg.grid.size, cfg.grid.rho, cfg.grid.z = list(TINY_GRID), [0.0, 20.0], [-3.0, 2.0]
    cfg.model.init_size, cfg.model.num_input_features, cfg.model.point_head_dims = init_size, 8, [32, 16]
    return cfg


def tiny_models_and_batch(points: int = 500):
    """A random teacher (init_size 4, point-head layers scaled up so its argmax is confident and
    varies from point to point) and an untrained student (init_size 2) on one voxelized scan, no labels."""
    from pvd_core.models.cylinder3d import build_model
    from pvd_core.voxelizer import CylindricalVoxelizer

    tcfg, scfg = tiny_model_config(4), tiny_model_config(2)
    torch.manual_seed(0)
    teacher = build_model(tcfg).eval()
    with torch.no_grad():  # eval-mode BN does not renormalise: scaled layers spread the logits
        for layer in teacher.point_head.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(15.0)
    torch.manual_seed(1)
    student = build_model(scfg).train()
    rng = np.random.default_rng(0)
    r, a = rng.uniform(2, 19, points), rng.uniform(-np.pi, np.pi, points)
    xyzi = np.stack([r * np.cos(a), r * np.sin(a), rng.uniform(-2.5, 1.5, points), rng.uniform(0, 1, points)], 1)
    batch = collate_scans([CylindricalVoxelizer(tcfg.grid)(xyzi.astype(np.float32))], tcfg.grid.size)
    return teacher, student, batch


def kd_cfg(**kw) -> DistillConfig:
    base = dict(enabled=True, supervoxel=[16, 16, 4], num_supervoxels=2, points_per_supervoxel=16,
                voxels_per_supervoxel=16)
    base.update(kw)
    return DistillConfig(**base)


def test_kd_only_training_raises_agreement_with_the_teacher(one_thread):
    """PVD terms alone, no labels, one fixed batch: the student must come to predict what the
    teacher predicts (eval mode, the Segmenter's top-1 rule), well beyond the teacher's majority
    class, and KL(teacher || student) must fall. Fails if gradients do not reach the student,
    the KL points the wrong way, or the teacher is not what the student is pulled towards."""
    from pvd_core.fidelity import FidelityMeter

    teacher, student, batch = tiny_models_and_batch()
    assert batch.point_labels is None
    with torch.no_grad():
        t_out = teacher(batch)
    t_label = t_out.point_logits[:, 1:].argmax(1) + 1
    majority = float(torch.bincount(t_label).max()) / batch.num_points

    def fidelity():
        student.eval()
        meter = FidelityMeter()
        with torch.no_grad():
            meter.update(student(batch).point_logits, t_out.point_logits)
        student.train()
        return meter.result()

    before = fidelity()
    loss = PVDLoss(kd_cfg(alpha_p=5.0, alpha_v=5.0), TINY_GRID, 20.0, class_weights_from_counts(np.ones(20)))
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        terms = loss(student(batch), t_out, batch, gen)
        opt.zero_grad()
        terms["pvd"].backward()
        opt.step()
    after = fidelity()
    assert majority < 0.6  # the teacher's labels vary: a constant student cannot pass
    assert after.agreement >= 0.7 and after.agreement > before.agreement + 0.4, (before, after, majority)
    assert after.kl < 0.5 * before.kl, (before, after)


# Which student modules each PVD term must reach (docs/method.md sections 2 and 4): the voxel logits come
# from the voxel head (``logits``) after DDCM (``ReconNet``); the point logits from the point
# head, whose 64-d penultimate (``hidden``) gives the point features; the voxel features are the
# last decoder output. All of them sit on the UNet and the point feature generator.
BACKBONE = ["cylinder_3d_generator.PPmodel", "cylinder_3d_generator.fea_compression",
            "cylinder_3d_spconv_seg.downCntx", "cylinder_3d_spconv_seg.resBlock2", "cylinder_3d_spconv_seg.resBlock5",
            "cylinder_3d_spconv_seg.upBlock0", "cylinder_3d_spconv_seg.upBlock3"]
REACH = {
    "out_p": (BACKBONE + ["point_head.hidden", "point_head.classifier"],
              ["cylinder_3d_spconv_seg.logits", "cylinder_3d_spconv_seg.ReconNet"]),
    "out_v": (BACKBONE + ["cylinder_3d_spconv_seg.ReconNet", "cylinder_3d_spconv_seg.logits"],
              ["point_head.hidden", "point_head.classifier"]),
    "aff_p": (BACKBONE + ["point_head.hidden"],
              ["point_head.classifier", "cylinder_3d_spconv_seg.logits", "cylinder_3d_spconv_seg.ReconNet"]),
    "aff_v": (BACKBONE, ["point_head.hidden", "point_head.classifier", "cylinder_3d_spconv_seg.logits",
                         "cylinder_3d_spconv_seg.ReconNet"]),
}


@pytest.mark.parametrize("term", sorted(REACH))
def test_each_pvd_term_reaches_its_student_modules_and_never_the_teacher(term, one_thread):
    teacher, student, batch = tiny_models_and_batch(points=300)
    # The teacher is left trainable and run *with* autograd on purpose: the loss itself must
    # keep every gradient off it, whatever the caller forgot.
    teacher.requires_grad_(True)
    weights = {"out_p": "alpha_p", "out_v": "alpha_v", "aff_p": "beta_p", "aff_v": "beta_v"}
    cfg = kd_cfg(**{w: (1.0 if t == term else 0.0) for t, w in weights.items()})
    terms = PVDLoss(cfg, TINY_GRID, 20.0, class_weights_from_counts(np.ones(20)))(
        student(batch), teacher(batch), batch, torch.Generator().manual_seed(0))
    assert terms[term].item() > 0
    terms["pvd"].backward()

    def reached(model, prefix):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix + ".")]
        assert grads, f"no parameters under {prefix}"
        return any(g is not None and bool(g.abs().sum() > 0) for g in grads)

    must, must_not = REACH[term]
    for prefix in must:
        assert reached(student, prefix), f"{term} does not reach student {prefix}"
    for prefix in must_not:
        assert not reached(student, prefix), f"{term} reaches student {prefix}, which it should not"
    assert all(p.grad is None for p in teacher.parameters()), f"{term} sent a gradient to the teacher"
