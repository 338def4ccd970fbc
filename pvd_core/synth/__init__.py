"""Synthetic labelled LiDAR: procedural streets ray-cast by a sensor model."""
