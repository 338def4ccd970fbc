"""Run segment_node with the shipped parameters, optionally with RViz.

    ros2 launch pvd_ros segment.launch.py checkpoint:=/path/to/student.pt \
        input_topic:=/velodyne_points rviz:=true fixed_frame:=velodyne

The parameter file is loaded first; a launch argument overrides it only when given on the
command line (``device:=cuda``), so the file's own values (``device: cpu`` in a user's params
file) take effect otherwise. The node's private topics ~/input/points and ~/output/points are
remapped to the given topics.

DDS: every process this file starts (the node and rviz2) gets the Fast DDS profile
config/fastdds_large_clouds.xml (argument ``dds_profile``; FASTDDS_DEFAULT_PROFILES_FILE for
Fast DDS 3 / Kilted, FASTRTPS_DEFAULT_PROFILES_FILE for Fast DDS 2 / Jazzy). With it, peers on
Fast DDS's default transports (a LiDAR driver, ``ros2 topic echo``) exchange 64-beam clouds
with the node (bench/dds_interop.py). Other RMWs ignore the variables.

When the node exits (an error such as a bad checkpoint or parameter, or a crash) the whole
launch shuts down (an OnProcessExit handler emits Shutdown with the exit code as reason), so ``ros2 launch``
does not keep running without it.
``rviz:=true`` without rviz2 installed fails before starting anything, with one message saying so.
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler, SetEnvironmentVariable, Shutdown
from launch.event_handlers import OnProcessExit
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from pvd_ros.dds_settings import FAST_DDS_2_DISTROS

#: Launch arguments that override the params file when given; empty (their default) leaves it.
OVERRIDABLE = ("checkpoint", "device")


def _given_overrides(context) -> dict:
    """Node parameters from the launch arguments given (non-empty); the params file keeps the rest.

    Without ``checkpoint:=`` and without a checkpoint in the params file, the node runs the shipped
    default model (it finds it under this package's share/ folder: pvd_core.shipped_models).
    """
    given = context.launch_configurations
    return {name: given[name] for name in OVERRIDABLE if given.get(name, "")}


def _rviz2_missing() -> bool:
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        get_package_prefix("rviz2")
    except PackageNotFoundError:
        return True
    return False


def _start(context, share, use_sim_time):
    """Start the node (and rviz2), or nothing with one message when rviz2 is asked for but missing."""
    want_rviz = context.perform_substitution(LaunchConfiguration("rviz")).strip().lower() in ("true", "1", "yes")
    if want_rviz and _rviz2_missing():  # before any process: nothing is left running
        raise RuntimeError("rviz:=true but the package 'rviz2' is not installed (sudo apt install "
                           "ros-$ROS_DISTRO-rviz2, or launch with rviz:=false); nothing was started")
    segment_node = Node(
        package="pvd_ros",
        executable="segment_node",
        name="segment_node",
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {**_given_overrides(context), "use_sim_time": use_sim_time},
        ],
        remappings=[
            ("~/input/points", LaunchConfiguration("input_topic")),
            ("~/output/points", LaunchConfiguration("output_topic")),
        ],
    )
    # The node's exit (a refused start: bad checkpoint or parameter; a crash) ends the whole launch.
    on_node_exit = RegisterEventHandler(OnProcessExit(
        target_action=segment_node,
        on_exit=lambda event, _context: Shutdown(reason=f"segment_node exited with code {event.returncode}")))
    actions = [on_node_exit, segment_node]
    if want_rviz:
        actions.append(Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            output="screen",
            arguments=["-d", LaunchConfiguration("rviz_config"), "-f", LaunchConfiguration("fixed_frame")],
            parameters=[{"use_sim_time": use_sim_time}],
            remappings=[("/pvd/labelled_points", LaunchConfiguration("output_topic"))],
        ))
    return actions


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("pvd_ros")
    use_sim_time = ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)

    arguments = [
        DeclareLaunchArgument(
            "checkpoint", default_value="",
            description="Student checkpoint (.pt); empty (default) = the params file's, else the shipped "
                        "models/semantickitti_student_pvd.pt (HDL-64 street scenes; non-commercial terms)"),
        DeclareLaunchArgument(
            "device", default_value="",
            description="auto | cpu | cuda | cuda:N; empty (default) = the params file's device "
                        "(auto in segment.yaml)"),
        DeclareLaunchArgument(
            "input_topic", default_value="/velodyne_points", description="PointCloud2 topic to segment"),
        DeclareLaunchArgument(
            "output_topic", default_value="/pvd/labelled_points", description="Labelled PointCloud2 topic"),
        DeclareLaunchArgument(
            "params_file", default_value=PathJoinSubstitution([share, "config", "segment.yaml"]),
            description="Node parameter file (/**: ros__parameters)"),
        DeclareLaunchArgument(
            "use_sim_time", default_value="false", description="Use /clock (true when replaying a bag)"),
        DeclareLaunchArgument("rviz", default_value="false", description="Start RViz with config/segment.rviz"),
        DeclareLaunchArgument(
            "rviz_config", default_value=PathJoinSubstitution([share, "config", "segment.rviz"]),
            description="RViz configuration file"),
        DeclareLaunchArgument(
            "fixed_frame", default_value="velodyne", description="RViz fixed frame (the clouds' frame_id)"),
        DeclareLaunchArgument(
            "dds_profile",
            default_value=EnvironmentVariable(
                "FASTDDS_DEFAULT_PROFILES_FILE",
                default_value=PathJoinSubstitution([share, "config", "fastdds_large_clouds.xml"])),
            description="Fast DDS XML profile for every process started here (sized for 64-beam clouds)"),
    ]
    # Before any process: SetEnvironmentVariable reaches every process started after it
    # (additional_env would reach the node alone, and rviz2 would hear nothing from it).
    dds_environment = [SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("dds_profile"))]
    if os.environ.get("ROS_DISTRO", "") in FAST_DDS_2_DISTROS:  # newer rmw_fastrtps warns on the old name
        dds_environment.append(
            SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", LaunchConfiguration("dds_profile")))

    start = OpaqueFunction(function=_start, args=[share, use_sim_time])
    return LaunchDescription([*arguments, *dds_environment, start])
