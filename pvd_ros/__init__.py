"""ROS 2 side of pvd_ros: the segmentation node and the rosbag tools (thin over pvd_core)."""
