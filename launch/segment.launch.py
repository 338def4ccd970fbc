"""Run segment_node with the shipped parameters, optionally with RViz.

    ros2 launch pvd_ros segment.launch.py checkpoint:=/path/to/student.pt \
        input_topic:=/velodyne_points rviz:=true fixed_frame:=velodyne

The parameter file is loaded first and the launch arguments override it; the node's
private topics ~/input/points and ~/output/points are remapped to the given topics.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("pvd_ros")
    use_sim_time = ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)

    arguments = [
        DeclareLaunchArgument(
            "checkpoint", default_value=PathJoinSubstitution([share, "models", "student.pt"]),
            description="Student checkpoint (.pt) the node runs"),
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
    ]

    segment_node = Node(
        package="pvd_ros",
        executable="segment_node",
        name="segment_node",
        output="screen",
        emulate_tty=True,
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
