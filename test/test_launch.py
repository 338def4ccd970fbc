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
REQUIRED_ARGUMENTS = {"checkpoint", "device", "input_topic", "params_file", "use_sim_time", "rviz", "dds_profile"}


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


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    assert len(found) == 1, f"{LAUNCH_FILE}: expected one top-level function {name}()"
    return found[0]


def _declared_default(tree: ast.Module, name: str) -> ast.AST:
    return _kw([c for c in _calls(tree, "DeclareLaunchArgument") if ast.literal_eval(c.args[0]) == name][0],
               "default_value")


def test_launch_file_runs_the_node_with_params_file_overrides_and_remappings(tree):
    node = _segment_node_call(tree)
    assert ast.literal_eval(_kw(node, "package")) == "pvd_ros"
    parameters = _kw(node, "parameters")
    assert isinstance(parameters, ast.List) and len(parameters.elts) == 2
    assert _launch_config_name(parameters.elts[0]) == "params_file"  # the file first, overrides after
    overrides = parameters.elts[1]
    assert isinstance(overrides, ast.Dict)
    # {**_given_overrides(...), "use_sim_time": ...}: only the launch arguments given override the file.
    spread = [v for k, v in zip(overrides.keys, overrides.values) if k is None]
    assert len(spread) == 1 and _call_name(spread[0]) == "_given_overrides"
    assert [ast.literal_eval(k) for k in overrides.keys if k is not None] == ["use_sim_time"]
    remappings: dict[str, str] = {}
    for pair in _kw(node, "remappings").elts:
        remappings[ast.literal_eval(pair.elts[0])] = _launch_config_name(pair.elts[1])
    assert remappings == {"~/input/points": "input_topic", "~/output/points": "output_topic"}


def _run_given_overrides(tree: ast.Module, configurations: dict, params_file: Path) -> dict:
    """Run the launch file's own _given_overrides on launch-like inputs.

    `launch` is not importable here, so LaunchConfiguration and PathJoinSubstitution get
    stand-ins that resolve the way launch resolves them (a configuration's value, a joined path).
    """
    functions = [_function(tree, "_given_overrides")]
    constants = [n for n in tree.body if isinstance(n, ast.Assign)
                 and {t.id for t in n.targets} & {"OVERRIDABLE"}]
    module = ast.Module(body=[*constants, *functions], type_ignores=[])
    namespace = {"LaunchConfiguration": lambda name: ("config", name),
                 "PathJoinSubstitution": lambda parts: ("join", tuple(parts))}
    exec(compile(module, str(LAUNCH_FILE), "exec"), namespace)

    class Context:
        launch_configurations = {"params_file": str(params_file), **configurations}

        def perform_substitution(self, sub):
            kind, value = sub
            return self.launch_configurations[value] if kind == "config" else "/".join(value)

    return namespace["_given_overrides"](Context())


def test_launch_arguments_override_the_params_file_only_when_given(tree, tmp_path):
    # Defaults are empty ("not given"): the old file's default device 'auto' always overrode the file.
    for name in ("device", "checkpoint"):
        assert ast.literal_eval(_declared_default(tree, name)) == "", name
    user_params = tmp_path / "robot.yaml"
    user_params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"device": "cpu", "checkpoint": "/r/s.pt"}}}))
    assert _run_given_overrides(tree, {"device": "", "checkpoint": ""}, user_params) == {}
    assert _run_given_overrides(tree, {"device": "cuda", "checkpoint": ""}, user_params) == {"device": "cuda"}
    # segment.yaml has no checkpoint: nothing is passed and the node runs the shipped default model
    # (test_segment_node checks that), unless checkpoint:= is given.
    assert _run_given_overrides(tree, {"device": "", "checkpoint": ""}, PARAMS_FILE) == {}
    assert _run_given_overrides(tree, {"device": "", "checkpoint": "/x.pt"}, PARAMS_FILE) == {"checkpoint": "/x.pt"}


def test_every_process_gets_the_dds_profile_and_none_only_its_own(tree):
    """SetEnvironmentVariable before the processes (rviz2 too), no node-only additional_env."""
    node = _segment_node_call(tree)
    assert "additional_env" not in {k.arg for k in node.keywords}
    sets = {ast.literal_eval(c.args[0]): c for c in _calls(tree, "SetEnvironmentVariable")}
    assert "FASTDDS_DEFAULT_PROFILES_FILE" in sets and "FASTRTPS_DEFAULT_PROFILES_FILE" in sets
    assert all(_launch_config_name(c.args[1]) == "dds_profile" for c in sets.values())
    default = _declared_default(tree, "dds_profile")
    assert _call_name(default) == "EnvironmentVariable"  # a profile the user set is kept
    shipped = _kw(default, "default_value")
    assert [ast.literal_eval(e) for e in shipped.args[0].elts[1:]] == ["config", "fastdds_large_clouds.xml"]
    assert (REPO / "config" / "fastdds_large_clouds.xml").is_file()
    # The environment actions come before the OpaqueFunction that starts the processes.
    description = _calls(tree, "LaunchDescription")[-1].args[0]
    order = [ast.unparse(e) for e in description.elts]
    assert order.index("*dds_environment") < order.index("start")
    assert _call_name(_calls(tree, "OpaqueFunction")[0]) == "OpaqueFunction"


def test_node_exit_shuts_the_launch_down(tree):
    handlers = _calls(tree, "OnProcessExit")
    assert len(handlers) == 1
    assert ast.unparse(_kw(handlers[0], "target_action")) == "segment_node"
    on_exit = _kw(handlers[0], "on_exit")
    shutdowns = [n for n in ast.walk(on_exit) if isinstance(n, ast.Call) and _call_name(n) == "Shutdown"]
    assert len(shutdowns) == 1 and "returncode" in ast.unparse(_kw(shutdowns[0], "reason"))
    registered = [c for c in _calls(tree, "RegisterEventHandler") if c.args and c.args[0] is handlers[0]]
    assert len(registered) == 1


def test_missing_rviz2_stops_before_any_process_starts(tree):
    start = _function(tree, "_start")
    checks = [n for n in ast.walk(start) if isinstance(n, ast.If) and "_rviz2_missing()" in ast.unparse(n.test)]
    assert len(checks) == 1 and isinstance(checks[0].body[0], ast.Raise)
    first_node = min(c.lineno for c in ast.walk(start) if isinstance(c, ast.Call) and _call_name(c) == "Node")
    assert checks[0].lineno < first_node
    message = ast.literal_eval(checks[0].body[0].exc.args[0])
    assert "rviz2" in message and "nothing was started" in message
    # The check itself asks the ament index, as `ros2 launch` resolves package='rviz2'.
    assert "get_package_prefix" in ast.unparse(_function(tree, "_rviz2_missing"))


def test_default_params_file_and_rviz_config_are_the_shipped_ones(tree):
    joins = [[ast.literal_eval(e) for e in c.args[0].elts[1:]] for c in _calls(tree, "PathJoinSubstitution")
             if all(isinstance(e, ast.Constant) for e in c.args[0].elts[1:])]
    assert ["config", "segment.yaml"] in joins and ["config", "segment.rviz"] in joins
    packages = {ast.literal_eval(c.args[0]) for c in _calls(tree, "FindPackageShare")}
    assert packages == {"pvd_ros"}
    rviz = [c for c in _calls(tree, "Node") if ast.literal_eval(_kw(c, "executable")) == "rviz2"]
    assert len(rviz) == 1
    args = _kw(rviz[0], "arguments").elts
    assert ast.literal_eval(args[0]) == "-d" and _launch_config_name(args[1]) == "rviz_config"
    assert ast.literal_eval(args[2]) == "-f" and _launch_config_name(args[3]) == "fixed_frame"
    # rviz2 starts only when asked for (rviz:=true), from the same function as the node.
    start = _function(tree, "_start")
    assert rviz[0] in list(ast.walk(start)) and "want_rviz" in ast.unparse(start)


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


@pytest.mark.dds
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
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable

    spec = importlib.util.spec_from_file_location("segment_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = {e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)}
    assert REQUIRED_ARGUMENTS <= names
    assert any(isinstance(e, SetEnvironmentVariable) for e in description.entities)
    assert isinstance(description.entities[-1], OpaqueFunction)
