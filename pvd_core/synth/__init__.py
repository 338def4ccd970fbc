"""Synthetic labelled LiDAR: procedural streets ray-cast by a sensor model.

sensors.py (the sensor table of docs/data.md), ground.py (the street's two-level ground),
raycast.py (primitives and the vectorised caster), scene.py (procedural towns),
writer.py (SemanticKITTI-layout output), cli.py (`pvd synth`; --preview draws with
pvd_core.visualize).
"""
