"""The Segmenter inference API, device selection, and `pvd predict`, on real spconv."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pvd_core.checkpoint import save_checkpoint
from pvd_core.cli import main as pvd_main
from pvd_core.config import config_from_dict
from pvd_core.data.batch import collate_scans
from pvd_core.data.semantickitti import read_points, read_raw_labels
from pvd_core.device import resolve_device
from pvd_core.labels import SEMANTIC_KITTI
from pvd_core.models.cylinder3d import build_model
from pvd_core.segmenter import MAX_TTA, Segmenter, SegmentationResult, top_class

GRID = {"size": [32, 32, 8]}


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def tiny_config(out_of_volume: str = "clip"):
    return config_from_dict({"grid": dict(GRID, out_of_volume=out_of_volume), "model": {"init_size": 4}})


def cloud(n: int, seed: int = 0, rho=(1.0, 48.0)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r, a, z = rng.uniform(*rho, n), rng.uniform(-np.pi, np.pi, n), rng.uniform(-3.5, 1.5, n)
    return np.stack([r * np.cos(a), r * np.sin(a), z, rng.uniform(0, 1, n)], 1).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_config()).eval()


@pytest.fixture
def seg(model):
    return Segmenter(model, tiny_config(), SEMANTIC_KITTI, device="cpu")


def test_result_has_one_label_and_confidence_per_point(seg):
    pts = cloud(1200)
    res = seg.segment(pts)
    assert isinstance(res, SegmentationResult)
    assert res.labels.shape == (1200,) and res.labels.dtype == np.uint16
    assert res.confidence.shape == (1200,) and res.confidence.dtype == np.float32
    assert set(res.timings) == {"preprocess", "inference", "postprocess"}
    assert all(v >= 0 for v in res.timings.values())
    assert res.labels.min() >= 1 and res.labels.max() < 20
    assert ((res.confidence > 0) & (res.confidence <= 1)).all()
    assert not seg.model.training
    assert all(not p.requires_grad for p in seg.model.parameters())


def test_keeps_input_order(seg):
    pts = cloud(1500, seed=1)
    perm = np.random.default_rng(5).permutation(len(pts))
    a = seg.segment(pts)
    b = seg.segment(pts[perm])
    assert np.array_equal(a.labels[perm], b.labels)
    np.testing.assert_allclose(a.confidence[perm], b.confidence, rtol=1e-5, atol=1e-6)


def test_nan_and_inf_rows_get_label_zero_and_leave_others_unchanged(seg):
    pts = cloud(1000, seed=2)
    bad = pts.copy()
    bad[[3, 17, 999], 0] = np.nan
    bad[5, 2] = np.inf
    bad[8, 3] = np.nan  # intensity
    res = seg.segment(bad)
    invalid = np.zeros(len(pts), bool)
    invalid[[3, 5, 8, 17, 999]] = True
    assert (res.labels[invalid] == 0).all() and (res.confidence[invalid] == 0).all()
    assert (res.labels[~invalid] >= 1).all()
    clean = seg.segment(pts[~invalid])
    assert np.array_equal(clean.labels, res.labels[~invalid])


def test_drop_mode_labels_outside_points_zero(model):
    seg = Segmenter(model, tiny_config("drop"), SEMANTIC_KITTI, device="cpu")
    pts = np.concatenate([cloud(500, seed=3),
                          cloud(50, seed=4, rho=(60.0, 80.0)),  # beyond rho max 50 m
                          np.array([[3.0, 0.0, 5.0, 0.5], [3.0, 0.0, -9.0, 0.5]], np.float32)])  # z out
    res = seg.segment(pts)
    assert (res.labels[500:] == 0).all() and (res.confidence[500:] == 0).all()
    assert (res.labels[:500] >= 1).all()
    clip = Segmenter(model, tiny_config("clip"), SEMANTIC_KITTI, device="cpu").segment(pts)
    assert (clip.labels >= 1).all()  # upstream clip mode keeps them in the border voxels


def test_empty_and_all_invalid_clouds(seg):
    res = seg.segment(np.zeros((0, 4), np.float32))
    assert res.labels.shape == (0,) and res.labels.dtype == np.uint16
    assert res.confidence.shape == (0,) and res.confidence.dtype == np.float32
    nan = np.full((4, 4), np.nan, np.float32)
    res = seg.segment(nan)
    assert (res.labels == 0).all() and (res.confidence == 0).all()
    with pytest.raises(ValueError, match=r"\(N, >=4\)"):
        seg.segment(np.zeros((5, 3), np.float32))


def test_never_predicts_unlabeled_for_a_valid_point(model):
    torch.manual_seed(0)
    biased = build_model(tiny_config()).eval()
    biased.load_state_dict(model.state_dict())
    with torch.no_grad():
        biased.point_head.classifier.bias[0] = 1000.0  # class 0 dominates every point
    res = Segmenter(biased, tiny_config(), SEMANTIC_KITTI, device="cpu").segment(cloud(800, seed=6))
    assert (res.labels >= 1).all()
    assert (res.confidence < 1e-6).all()  # the softmax mass sits on class 0


def test_tta_votes_are_deterministic_and_combine(model):
    pts = cloud(1000, seed=7)
    seg4 = Segmenter(model, tiny_config(), SEMANTIC_KITTI, device="cpu", tta=4)
    a, b = seg4.segment(pts), seg4.segment(pts)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.confidence, b.confidence)
    single = Segmenter(model, tiny_config(), SEMANTIC_KITTI, device="cpu").segment(pts)
    assert a.labels.shape == single.labels.shape
    assert not np.array_equal(a.confidence, single.confidence)  # the flipped votes changed the sum
    with pytest.raises(ValueError, match="tta"):
        Segmenter(model, tiny_config(), SEMANTIC_KITTI, device="cpu", tta=MAX_TTA + 1)


def test_segment_batch_matches_single_clouds(seg):
    clouds = [cloud(700, seed=8), np.zeros((0, 4), np.float32), cloud(400, seed=9)]
    batch = seg.segment_batch(clouds)
    for pts, res in zip(clouds, batch):
        one = seg.segment(pts)
        assert np.array_equal(one.labels, res.labels)
        np.testing.assert_allclose(one.confidence, res.confidence, rtol=1e-5, atol=1e-6)


def test_warmup_runs(seg):
    seg.warmup(num_points=500)


def test_device_selection_and_fp16_on_cpu(model):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="'gpu'"):
        resolve_device("gpu")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the CPU-only refusals below do not apply")
    with pytest.raises(ValueError, match="'cuda'"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="fp16"):
        Segmenter(model, tiny_config(), SEMANTIC_KITTI, device="cpu", fp16=True)


def test_from_checkpoint_matches_the_saved_model(model, tmp_path):
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, model, tiny_config(), SEMANTIC_KITTI, {"step": 3})
    loaded = Segmenter.from_checkpoint(path, device="cpu")
    assert loaded.device == torch.device("cpu")
    assert loaded.label_map == SEMANTIC_KITTI and loaded.config == tiny_config()
    assert loaded.meta["step"] == 3
    pts = cloud(600, seed=10)
    direct = Segmenter(model, tiny_config(), SEMANTIC_KITTI, device="cpu").segment(pts)
    assert np.array_equal(loaded.segment(pts).labels, direct.labels)


def test_segments_the_real_scan(seg, real_scan_path):
    pts = read_points(real_scan_path)
    res = seg.segment(pts)
    assert res.labels.shape == (len(pts),)
    assert (res.labels >= 1).all()  # clip mode, all finite: every point is segmented


def test_pvd_predict_writes_semantickitti_labels(model, tmp_path, real_scan_path, capsys):
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, model, tiny_config(), SEMANTIC_KITTI, {"step": 1})
    scan = tmp_path / "000000.bin"
    pts = read_points(real_scan_path)[::8].copy()
    pts[0, 0] = np.nan
    pts.tofile(scan)
    out = tmp_path / "pred" / "000000.label"
    assert pvd_main(["predict", "--checkpoint", str(ckpt), "--scan", str(scan), "--out", str(out),
                     "--device", "cpu"]) == 0
    raw = read_raw_labels(out, num_points=len(pts))
    assert raw.dtype == np.uint32
    assert (raw >> 16 == 0).all()  # no instance ids
    classes = SEMANTIC_KITTI.map_raw(raw)  # every id is a known raw SemanticKITTI id
    assert classes[0] == 0 and (classes[1:] >= 1).all()
    canonical = {10, 11, 15, 18, 20, 30, 31, 32, 40, 44, 48, 49, 50, 51, 70, 71, 72, 80, 81}
    assert set(np.unique(raw[1:]).tolist()) <= canonical
    assert str(out) in capsys.readouterr().out
    missing = pvd_main(["predict", "--checkpoint", str(tmp_path / "nope.pt"), "--scan", str(scan),
                        "--out", str(tmp_path / "x.label")])
    assert missing == 1 and "nope.pt" in capsys.readouterr().err


def reference_top_class(class_major: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition: softmax over all classes, then the best of classes 1..C-1 (first on ties)."""
    z = class_major.double()
    prob = torch.softmax(z, dim=0)
    label = torch.tensor([int(np.argmax(column)) + 1 for column in z[1:].t().numpy()])
    return label, prob.gather(0, label[None])[0].float()


@pytest.mark.parametrize("num_classes", [2, 3, 17, 20, 33])
def test_top_class_matches_softmax_argmax_including_ties_and_near_ties(num_classes):
    g = torch.Generator().manual_seed(num_classes)
    z = torch.randn(num_classes, 3000, generator=g) * 6 - 2  # many negative logits
    n = z.shape[1]
    z[:, :50] = -1e30  # huge negative logits everywhere
    if num_classes > 2:
        z[1:3, 100:200] = 40.25  # exact ties (above every random logit): the lower class wins
        # near-ties closer than the packed key's resolution (2**-18 relative): exact fix-up path
        z[2, 300:400] = 70.0
        z[1, 300:400] = torch.nextafter(torch.tensor(70.0), torch.tensor(0.0))
        z[1, 400:500] = 70.0
        z[num_classes - 1, 400:500] = torch.nextafter(torch.tensor(70.0), torch.tensor(80.0))
    z[0, 600:700] = 800.0  # class 0 dominates: tiny probabilities
    label, conf = top_class(z)
    ref_label, ref_conf = reference_top_class(z)
    assert label.shape == (n,) and conf.dtype == torch.float32
    assert torch.equal(label, ref_label)
    torch.testing.assert_close(conf, ref_conf, rtol=2e-6, atol=1e-30)
    if num_classes > 2:
        assert (label[100:200] == 1).all() and (label[300:400] == 2).all()
        assert (label[400:500] == num_classes - 1).all()


def test_segmenter_output_is_the_models_softmax(seg, model):
    """Labels and confidences against the model's logits run by hand, without Segmenter code."""
    pts = cloud(2500, seed=11)
    res = seg.segment(pts)
    batch = collate_scans([seg.voxelizer(pts)], tiny_config().grid.size)
    with torch.inference_mode():
        logits = model(batch).point_logits
    prob = torch.softmax(logits.double(), dim=1)
    conf, label = prob[:, 1:].max(dim=1)
    np.testing.assert_array_equal(res.labels, (label + 1).numpy())
    np.testing.assert_allclose(res.confidence, conf.numpy(), rtol=1e-5)


def test_inference_head_is_class_major_and_equals_the_training_head(model):
    """The eval-mode point head returns the transpose view of (C, N) logits, same values."""
    pts = cloud(900, seed=12)
    batch = collate_scans([Segmenter(model, tiny_config(), SEMANTIC_KITTI, device="cpu").voxelizer(pts)],
                          tiny_config().grid.size)
    with torch.no_grad():
        out = model(batch)
        linear = model.point_head.classifier(out.point_features)
    assert out.point_logits.shape == linear.shape
    assert out.point_logits.t().is_contiguous()
    torch.testing.assert_close(out.point_logits, linear, rtol=1e-5, atol=1e-5)


def test_top_class_keeps_labels_in_range_for_nan_and_infinite_logits():
    z = torch.randn(20, 6)
    z[:, 0] = float("nan")
    z[3, 1] = float("nan")
    z[1:, 2] = float("-inf")
    z[5, 3] = float("inf")
    label, conf = top_class(z)
    assert ((label >= 1) & (label <= 19)).all()
    assert torch.isnan(conf[0]) and torch.isnan(conf[1])
    assert label[3] == 5
    assert torch.isfinite(conf[4:]).all()


def test_point_rule_keeps_origin_near_and_nan_intensity_points_from_the_network(model):
    """No-return pixels (0, 0, 0), points inside min_range and a NaN intensity get label 0 and are never
    voxelized: every other point is labelled exactly as in the cloud without them."""
    from pvd_core.point_rule import DEFAULT_MIN_RANGE, PointRule

    pts = cloud(900, seed=9)
    pts[[0, 10, 20], :] = 0.0  # an Ouster no-return pixel: all zeros
    pts[30, :3], pts[30, 3] = 0.0, 0.7  # at the origin with an intensity
    pts[40, :3] = [0.6 * DEFAULT_MIN_RANGE, 0.0, 0.0]  # inside the default minimum range
    pts[50, 3] = np.nan
    pts[60, 1] = -np.inf
    dropped = np.array([0, 10, 20, 30, 40, 50, 60])
    seg = Segmenter(model, tiny_config(), SEMANTIC_KITTI, device="cpu")
    res = seg.segment(pts)
    assert (res.labels[dropped] == 0).all() and (res.confidence[dropped] == 0).all()
    keep = np.ones(len(pts), bool)
    keep[dropped] = False
    assert np.array_equal(res.labels == 0, ~keep)
    alone = seg.segment(pts[keep])
    assert np.array_equal(alone.labels, res.labels[keep])
    np.testing.assert_allclose(alone.confidence, res.confidence[keep], rtol=1e-6)
    assert np.array_equal(PointRule().mask(pts), keep)  # the rule the bag tools score with

    # min_range 0 still drops the origin, keeps the near point; max_range drops the far ones.
    rule = PointRule(min_range=0.0, max_range=20.0)
    far = np.linalg.norm(pts[:, :3], axis=1) > 20.0
    res0 = Segmenter(model, tiny_config(), SEMANTIC_KITTI, device="cpu", point_rule=rule).segment(pts)
    assert res0.labels[40] > 0 and (res0.labels[[0, 10, 20, 30]] == 0).all()
    assert (res0.labels[far] == 0).all() and far.sum() > 100
    assert np.array_equal(res0.labels == 0, ~rule.mask(pts))
    tta = Segmenter(model, tiny_config(), SEMANTIC_KITTI, device="cpu", tta=2).segment(pts)
    assert np.array_equal(tta.labels == 0, ~keep)


@pytest.mark.parametrize("kwargs, match", [
    ({"min_range": -1.0}, "min_range"), ({"max_range": float("nan")}, "max_range"),
    ({"min_range": 5.0, "max_range": 2.0}, "max_range"),
])
def test_point_rule_refuses_bad_limits_naming_them(kwargs, match):
    from pvd_core.point_rule import PointRule

    with pytest.raises(ValueError, match=match):
        PointRule(**kwargs)


def test_half_precision_keeps_batch_norm_statistics_that_float16_cannot_hold():
    """Long-trained models carry BN running variances of 1e5-1e7 (a 4000-step teacher: 1e7), past
    float16's 65504. Cast whole, those become inf and their channels constant; the fp16 path
    keeps batch norms in float32. (spconv runs float16 on this CPU too, so the forward is real.)"""
    import copy

    from pvd_core.models.fusion import fold_point_mlps
    from pvd_core.segmenter import half_precision
    from pvd_core.voxelizer import CylindricalVoxelizer

    cfg = tiny_config()
    torch.manual_seed(0)
    model = build_model(cfg)
    batch = collate_scans([CylindricalVoxelizer(cfg.grid)(cloud(600))], cfg.grid.size)
    model.train()
    with torch.no_grad():
        model(batch)  # real statistics
        model.eval()
        for name, module in model.named_modules():  # x1e6 variance, x1e3 scale: the same function in float32
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and "spconv_seg" in name:
                module.running_var.mul_(1e6)
                module.weight.mul_(1e3)
        reference = model(batch).voxel_logits
        half = half_precision(fold_point_mlps(model))
        norms = [m for m in half.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert norms and all(t.dtype == torch.float32 for m in norms for t in m.state_dict().values()
                             if t.is_floating_point())
        assert all(m.weight.dtype == torch.float16 for m in half.modules() if isinstance(m, nn.Linear))
        out = half(batch)
        naive = copy.deepcopy(model).half()(batch).voxel_logits.float()
    assert out.voxel_logits.dtype == torch.float16 and out.point_logits.dtype == torch.float16
    scale = reference.abs().max()
    assert (out.voxel_logits.float() - reference).abs().max() < 0.01 * scale
    assert (naive - reference).abs().max() > 0.05 * scale  # what the cast-everything path did
