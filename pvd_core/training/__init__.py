"""Teacher training, PVD distillation, resume and multi-process training."""
