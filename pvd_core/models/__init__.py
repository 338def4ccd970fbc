"""Cylinder3D (teacher and student differ only in width) and its building blocks."""
