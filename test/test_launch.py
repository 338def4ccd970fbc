"""launch/segment.launch.py, config/segment.yaml and config/segment.rviz agree with the node.

`ros2 launch` and the `launch` packages do not exist on machines without a ROS
distribution: there the launch file is checked from its syntax tree (package,
executable, parameter file, overrides, remappings, launch arguments); where `launch`
is importable, the launch description itself is built and inspected.
"""
from __future__ import annotations

import ast
import importlib.util
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "segment.launch.py"
PARAMS_FILE = REPO / "config" / "segment.yaml"
RVIZ_FILE = REPO / "config" / "segment.rviz"
REQUIRED_ARGUMENTS = {"checkpoint", "device", "input_topic", "params_file", "use_sim_time", "rviz"}


def _call_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _call_name(n) == name]


def _kw(call: ast.Call, name: str) -> ast.AST:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    raise AssertionError(f"{LAUNCH_FILE}: {_call_name(call)}(...) has no {name}= argument")


def _launch_config_name(node: ast.AST) -> str:
    assert isinstance(node, ast.Call) and _call_name(node) == "LaunchConfiguration", ast.dump(node)
    return ast.literal_eval(node.args[0])


@pytest.fixture(scope="module")
def tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


def _segment_node_call(tree: ast.Module) -> ast.Call:
    nodes = [c for c in _calls(tree, "Node") if ast.literal_eval(_kw(c, "executable")) == "segment_node"]
    assert len(nodes) == 1, f"{LAUNCH_FILE}: expected one Node(executable='segment_node')"
    return nodes[0]


def test_launch_file_declares_the_arguments(tree):
    declared = {ast.literal_eval(c.args[0]) for c in _calls(tree, "DeclareLaunchArgument")}
    assert REQUIRED_ARGUMENTS <= declared, REQUIRED_ARGUMENTS - declared
    # Every LaunchConfiguration used is declared (a typo would silently be an unset substitution).
    used = {ast.literal_eval(c.args[0]) for c in _calls(tree, "LaunchConfiguration")}
    assert used <= declared, used - declared


def test_launch_file_runs_the_node_with_params_file_overrides_and_remappings(tree):
    node = _segment_node_call(tree)
    assert ast.literal_eval(_kw(node, "package")) == "pvd_ros"
    parameters = _kw(node, "parameters")
    assert isinstance(parameters, ast.List) and len(parameters.elts) == 2
    assert _launch_config_name(parameters.elts[0]) == "params_file"  # the file first, overrides after
    overrides = parameters.elts[1]
    assert isinstance(overrides, ast.Dict)
    keys = [ast.literal_eval(k) for k in overrides.keys]
    assert {"checkpoint", "device", "use_sim_time"} <= set(keys)
    remappings: dict[str, str] = {}
    for pair in _kw(node, "remappings").elts:
        remappings[ast.literal_eval(pair.elts[0])] = _launch_config_name(pair.elts[1])
    assert remappings == {"~/input/points": "input_topic", "~/output/points": "output_topic"}
    # Multi-MB best-effort clouds need Fast DDS's LARGE_DATA transports between processes.
    env = _kw(node, "additional_env")
    assert isinstance(env, ast.Dict)
    env_map = {ast.literal_eval(k): _launch_config_name(v) for k, v in zip(env.keys, env.values)}
    assert env_map == {"FASTDDS_BUILTIN_TRANSPORTS": "dds_transports"}
    default = _kw([c for c in _calls(tree, "DeclareLaunchArgument")
                   if ast.literal_eval(c.args[0]) == "dds_transports"][0], "default_value")
    assert _call_name(default) == "EnvironmentVariable" and ast.literal_eval(_kw(default, "default_value")) == "LARGE_DATA"


def test_default_params_file_and_rviz_config_are_the_shipped_ones(tree):
    joins = [[ast.literal_eval(e) for e in c.args[0].elts[1:]] for c in _calls(tree, "PathJoinSubstitution")]
    assert ["config", "segment.yaml"] in joins and ["config", "segment.rviz"] in joins
    packages = {ast.literal_eval(c.args[0]) for c in _calls(tree, "FindPackageShare")}
    assert packages == {"pvd_ros"}
    rviz = [c for c in _calls(tree, "Node") if ast.literal_eval(_kw(c, "executable")) == "rviz2"]
    assert len(rviz) == 1
    args = _kw(rviz[0], "arguments").elts
    assert ast.literal_eval(args[0]) == "-d" and _launch_config_name(args[1]) == "rviz_config"
    assert ast.literal_eval(args[2]) == "-f" and _launch_config_name(args[3]) == "fixed_frame"
    condition = _kw(rviz[0], "condition")
    assert _call_name(condition) == "IfCondition" and _launch_config_name(condition.args[0]) == "rviz"


def test_params_file_uses_the_wildcard_form_and_only_known_parameters():
    pytest.importorskip("rclpy", reason="rclpy is needed to import the node's parameter table")
    from pvd_ros.node_params import NodeParams

    data = yaml.safe_load(PARAMS_FILE.read_text())
    assert list(data) == ["/**"] and list(data["/**"]) == ["ros__parameters"]
    params = data["/**"]["ros__parameters"]
    fields = NodeParams.__dataclass_fields__
    assert set(params) <= set(fields), set(params) - set(fields)
    for name, value in params.items():  # same types as the declared defaults (ROS parameters are typed)
        assert type(value) is type(fields[name].default), name
    NodeParams(**{**params, "checkpoint": "x.pt"}).validate()


def test_rviz_config_shows_rgb_cloud_and_latched_legend():
    data = yaml.safe_load(RVIZ_FILE.read_text())
    displays = {d["Class"]: d for d in data["Visualization Manager"]["Displays"]}
    cloud = displays["rviz_default_plugins/PointCloud2"]
    assert cloud["Color Transformer"] == "RGB8"
    assert cloud["Topic"]["Value"] == "/pvd/labelled_points"
    assert cloud["Topic"]["Reliability Policy"] == "Reliable"
    legend = displays["rviz_default_plugins/MarkerArray"]
    assert legend["Topic"]["Value"] == "/segment_node/legend"
    assert legend["Topic"]["Durability Policy"] == "Transient Local"
    # The launch file's default output topic is the one RViz shows (rviz2 is remapped for other values).
    tree = ast.parse(LAUNCH_FILE.read_text())
    defaults = {ast.literal_eval(c.args[0]): c for c in _calls(tree, "DeclareLaunchArgument")}
    assert ast.literal_eval(_kw(defaults["output_topic"], "default_value")) == "/pvd/labelled_points"


def test_private_topic_remapping_form_is_accepted_by_rcl(tmp_path):
    """The launch file's ('~/input/points', topic) remapping, as rcl applies it to a node."""
    rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")
    from rclpy.context import Context
    from std_msgs.msg import Bool

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    context = Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("segment_node", context=context, cli_args=[
            "--ros-args", "-r", "~/input/points:=/velodyne_points", "-r", "~/output/points:=/pvd/labelled_points"])
        try:
            sub = node.create_subscription(Bool, "~/input/points", lambda _: None, 1)
            pub = node.create_publisher(Bool, "~/output/points", 1)
            assert sub.topic_name == "/velodyne_points" and pub.topic_name == "/pvd/labelled_points"
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_launch_description_builds_where_launch_is_installed():
    pytest.importorskip("launch", reason="the ROS 'launch' package is not installed (not on PyPI)")
    pytest.importorskip("launch_ros", reason="the ROS 'launch_ros' package is not installed (not on PyPI)")
    from launch.actions import DeclareLaunchArgument
    from launch_ros.actions import Node

    spec = importlib.util.spec_from_file_location("segment_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = {e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)}
    assert REQUIRED_ARGUMENTS <= names
    nodes = [e for e in description.entities if isinstance(e, Node)]
    assert any(n.node_package == "pvd_ros" and n.node_executable == "segment_node" for n in nodes)
