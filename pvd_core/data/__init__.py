"""Dataset readers, augmentation, and the batch format."""
