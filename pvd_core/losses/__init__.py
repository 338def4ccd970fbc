"""Supervised segmentation losses and the four PVD distillation losses."""
