"""Run segment_node with the shipped parameters, optionally with RViz.

    ros2 launch pvd_ros segment.launch.py checkpoint:=/path/to/student.pt \
        input_topic:=/velodyne_points rviz:=true fixed_frame:=velodyne

The parameter file is loaded first and the launch arguments override it; the node's
private topics ~/input/points and ~/output/points are remapped to the given topics.

Fast DDS (the default RMW) with its default transports never delivers best-effort samples
of about 1 MB or more to another process (measured: a 2 MB 64-beam cloud is lost every
time; see pvd_ros/bag_replay.py). The node is therefore started with
FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA (argument ``dds_transports``); give the LiDAR driver
the same variable, or run both in one process. Other RMWs ignore the variable.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("pvd_ros")
    use_sim_time = ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)

    arguments = [
        DeclareLaunchArgument(
            "checkpoint", default_value=PathJoinSubstitution([share, "models", "synthetic_student_pvd.pt"]),
            description="Student checkpoint (.pt) the node runs (the default knows synthetic streets only)"),
        DeclareLaunchArgument("device", default_value="auto", description="auto | cpu | cuda"),
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
            "dds_transports",
            default_value=EnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", default_value="LARGE_DATA"),
            description="FASTDDS_BUILTIN_TRANSPORTS for the node (LARGE_DATA carries multi-MB clouds)"),
    ]

    segment_node = Node(
        package="pvd_ros",
        executable="segment_node",
        name="segment_node",
        output="screen",
        emulate_tty=True,
        additional_env={"FASTDDS_BUILTIN_TRANSPORTS": LaunchConfiguration("dds_transports")},
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "checkpoint": LaunchConfiguration("checkpoint"),
                "device": LaunchConfiguration("device"),
                "use_sim_time": use_sim_time,
            },
        ],
        remappings=[
            ("~/input/points", LaunchConfiguration("input_topic")),
            ("~/output/points", LaunchConfiguration("output_topic")),
        ],
    )

    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        output="screen",
        arguments=["-d", LaunchConfiguration("rviz_config"), "-f", LaunchConfiguration("fixed_frame")],
        parameters=[{"use_sim_time": use_sim_time}],
        remappings=[("/pvd/labelled_points", LaunchConfiguration("output_topic"))],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )

    return LaunchDescription([*arguments, segment_node, rviz])
