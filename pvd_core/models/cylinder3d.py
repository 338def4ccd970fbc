"""Cylinder3D with a point head (docs/method.md section 2): one class, width ``init_size``.

Teacher (32), student (16) and the 0.25x / 1.5x variants differ only in
``model.init_size``; everything the distillation losses read comes out of one forward.
Runs unchanged on CPU and CUDA: spconv's CPU problems (backward asking for a CUDA stream,
a racy multi-threaded scatter-add, eval-mode bias) are handled once, at import, by
:mod:`pvd_core.spconv_compat`.
"""
from __future__ import annotations

import spconv.pytorch as spconv
import torch
from torch import nn

from pvd_core.config import Config, GridConfig, ModelConfig
from pvd_core.data.batch import Batch
from pvd_core.labels import label_map_for
from pvd_core.models.blocks import ReconBlock, ResBlock, ResContextBlock, UpBlock, subm
from pvd_core.models.outputs import SegOutput
from pvd_core.models.point_head import PointFeatureGenerator, PointHead
from pvd_core.spconv_compat import apply_spconv_workarounds

apply_spconv_workarounds()


class AsymmetricUNet(nn.Module):
    """Upstream ``Asymm_3d_spconv`` without the dense output: returns sparse logits and features."""

    def __init__(self, num_input_features: int, init_size: int, num_classes: int):
        super().__init__()
        s = init_size
        self.downCntx = ResContextBlock(num_input_features, s, level=0)
        self.resBlock2 = ResBlock(s, 2 * s, level=0, height_pooling=True)
        self.resBlock3 = ResBlock(2 * s, 4 * s, level=1, height_pooling=True)
        self.resBlock4 = ResBlock(4 * s, 8 * s, level=2, height_pooling=False)
        self.resBlock5 = ResBlock(8 * s, 16 * s, level=3, height_pooling=False)
        self.upBlock0 = UpBlock(16 * s, 16 * s, level=3)
        self.upBlock1 = UpBlock(16 * s, 8 * s, level=2)
        self.upBlock2 = UpBlock(8 * s, 4 * s, level=1)
        self.upBlock3 = UpBlock(4 * s, 2 * s, level=0)
        self.ReconNet = ReconBlock(2 * s, 2 * s, level=0)
        self.logits = subm(4 * s, num_classes, (3, 3, 3), level=0, bias=True)

    def forward(self, x: spconv.SparseConvTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (voxel logits, last decoder features), rows in the input voxel order."""
        ret = self.downCntx(x)
        down1c, down1b = self.resBlock2(ret)
        down2c, down2b = self.resBlock3(down1c)
        down3c, down3b = self.resBlock4(down2c)
        down4c, down4b = self.resBlock5(down3c)
        up4e = self.upBlock0(down4c, down4b)
        up3e = self.upBlock1(up4e, down3b)
        up2e = self.upBlock2(up3e, down2b)
        up1e = self.upBlock3(up2e, down1b)
        up0e = self.ReconNet(up1e)
        up0e = up0e.replace_feature(torch.cat((up0e.features, up1e.features), 1))
        return self.logits(up0e).features, up1e.features


class Cylinder3D(nn.Module):
    """Point feature generator -> asymmetric sparse UNet -> voxel head, plus the point head."""

    def __init__(self, model_cfg: ModelConfig, grid: GridConfig, num_classes: int):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (class 0 is unlabeled), got {num_classes}")
        self.model_cfg = model_cfg
        self.spatial_shape = [int(s) for s in grid.size]
        self.num_classes = int(num_classes)
        self.init_size = int(model_cfg.init_size)
        self.cylinder_3d_generator = PointFeatureGenerator(model_cfg.num_input_features,
                                                           model_cfg.point_generator_dims)
        self.cylinder_3d_spconv_seg = AsymmetricUNet(model_cfg.num_input_features, self.init_size, num_classes)
        self.point_head = PointHead(self.cylinder_3d_generator.out_dim + 2 * self.init_size,
                                    model_cfg.point_head_dims, num_classes)

    @property
    def voxel_feature_dim(self) -> int:
        return 2 * self.init_size

    @property
    def point_feature_dim(self) -> int:
        return int(self.model_cfg.point_head_dims[-1])

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype of the Linear layers, which inputs are cast to: under fp16 the batch norms
        (the point generator's first layer among them) keep float32 statistics."""
        # The point generator's MLP only (a few layers): this runs on every forward pass.
        return next(m.weight.dtype for m in self.cylinder_3d_generator.PPmodel if isinstance(m, nn.Linear))

    def forward(self, batch: Batch) -> SegOutput:
        if batch.num_voxels == 0:
            raise ValueError("Cylinder3D.forward: the batch has no points (empty clouds are handled by the caller)")
        if list(batch.spatial_shape) != self.spatial_shape:
            raise ValueError(f"batch spatial_shape {batch.spatial_shape} does not match the model grid "
                             f"{self.spatial_shape} (grid.size)")
        dtype = self.compute_dtype
        point_to_voxel = batch.point_to_voxel
        point_feat, voxel_in = self.cylinder_3d_generator(
            batch.point_features.to(dtype), point_to_voxel, batch.num_voxels)
        # spconv reads the raw buffer and ignores strides: a non-contiguous index tensor
        # (e.g. from torch.nonzero) silently yields wrong rulebooks.
        coords = batch.voxel_coords.to(torch.int32).contiguous()
        x = spconv.SparseConvTensor(voxel_in, coords, self.spatial_shape, batch.batch_size)
        voxel_logits, voxel_features = self.cylinder_3d_spconv_seg(x)
        head_in = torch.cat((point_feat, voxel_features.index_select(0, point_to_voxel)), 1)
        point_logits, point_features = self.point_head(head_in)
        return SegOutput(
            point_logits=point_logits,
            voxel_logits=voxel_logits,
            point_features=point_features,
            voxel_features=voxel_features,
            point_to_voxel=point_to_voxel,
            voxel_coords=batch.voxel_coords,
        )


def build_model(cfg: Config) -> Cylinder3D:
    """The model a config describes; the class count comes from the dataset's label map."""
    return Cylinder3D(cfg.model, cfg.grid, label_map_for(cfg.dataset.kind).num_classes)
