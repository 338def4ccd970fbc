"""The node's parameter table (pvd_ros/node_params.py) and what follows from it without a node:
the dataclass of values, the descriptors, validation and the shipped config/segment.yaml.

The declaration on a real node (``describe_parameters``, refusals at start-up) is tested in
test_segment_node.py.
"""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy", reason="rclpy is not installed (pip extra 'ros' or a ROS 2 distribution)")

from rcl_interfaces.msg import ParameterType  # noqa: E402

from pvd_ros.node_params import PARAMS, SPECS, NodeParams, ParameterError, params_file_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO / "config" / "segment.yaml"


def test_committed_params_file_is_the_generated_one():
    assert PARAMS_FILE.read_text() == params_file_text(), (
        "config/segment.yaml differs from the table: python -m pvd_ros.node_params --yaml > config/segment.yaml")


def test_generator_command_prints_the_params_file():
    out = subprocess.run([sys.executable, "-m", "pvd_ros.node_params", "--yaml"], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert out == params_file_text()


def test_every_parameter_is_in_the_params_file_with_its_default_and_description():
    text = PARAMS_FILE.read_text()
    shipped = yaml.safe_load(text)["/**"]["ros__parameters"]
    in_file = [spec.name for spec in PARAMS if spec.in_params_file]
    assert list(shipped) == in_file
    assert in_file == [spec.name for spec in PARAMS if spec.name != "checkpoint"]  # launch picks the model
    comments = " ".join(line.strip().lstrip("#").strip() for line in text.splitlines() if line.strip().startswith("#"))
    for spec in PARAMS:
        if spec.in_params_file:
            value = shipped[spec.name]
            assert value == spec.default and type(value) is type(spec.default), spec.name  # ROS params are typed
        assert spec.description in comments, spec.name


def test_node_params_fields_are_the_table():
    assert [(f.name, f.default) for f in dataclasses.fields(NodeParams)] == [(s.name, s.default) for s in PARAMS]
    # Defaults the node has always had (tests elsewhere and users' launch files rely on them).
    assert NodeParams().min_range == 0.1 and NodeParams().checkpoint == "" and NodeParams().device == "auto"


def test_descriptors_carry_description_type_range_and_constraints():
    confidence = SPECS["confidence_threshold"].descriptor()
    assert confidence.type == ParameterType.PARAMETER_DOUBLE and confidence.read_only
    assert (confidence.floating_point_range[0].from_value, confidence.floating_point_range[0].to_value) == (0.0, 1.0)
    depth = SPECS["input_depth"].descriptor()
    assert (depth.integer_range[0].from_value, depth.integer_range[0].to_value) == (1, 1000)
    max_points = SPECS["max_points"].descriptor()
    assert max_points.type == ParameterType.PARAMETER_INTEGER and not max_points.integer_range
    assert max_points.additional_constraints == ">= 0"
    assert SPECS["processing_budget_ms"].descriptor().additional_constraints == "> 0"
    assert SPECS["device"].descriptor().additional_constraints == "auto | cpu | cuda | cuda:N"
    for spec in PARAMS:
        assert spec.descriptor().description == spec.description and spec.descriptor().name == spec.name


@pytest.mark.parametrize("name, value", [
    ("checkpoint", 7),
    ("device", "gpu"),
    ("device", "cuda:x"),
    ("device", "cuda:"),
    ("max_points", -1),
    ("max_points", "many"),
    ("min_range", -0.5),
    ("confidence_threshold", 1.5),
    ("input_reliability", "sometimes"),
    ("output_depth", 0),
    ("processing_budget_ms", 0.0),
    ("diagnostics_period_s", -1.0),
    ("error_after_s", -1.0),
    ("publish_legend", 1),
])
def test_bad_value_is_refused_naming_the_parameter(name, value):
    with pytest.raises(ParameterError, match=f"parameter '{name}'"):
        NodeParams(**{"checkpoint": "x.pt", name: value}).validate()


@pytest.mark.parametrize("name, value", [
    ("device", "cuda:1"), ("device", "cuda"), ("device", "cpu"), ("processing_budget_ms", 0.001),
    ("error_after_s", 0.0), ("confidence_threshold", 1.0), ("max_range", 0.2), ("min_range", 3),
])
def test_edge_values_pass(name, value):
    NodeParams(**{"checkpoint": "x.pt", name: value}).validate()


def test_max_range_must_exceed_min_range():
    with pytest.raises(ParameterError, match="'max_range'.*'min_range'"):
        NodeParams(checkpoint="x.pt", min_range=10.0, max_range=5.0).validate()
