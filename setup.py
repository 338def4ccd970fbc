"""ament_python package pvd_ros, holding the Python packages pvd_core (no ROS) and pvd_ros (ROS).

torch is deliberately not in install_requires: a bare torch requirement makes pip pull the
multi-GB CUDA build onto CPU machines. `.ci/setup` installs the right torch (CPU or CUDA)
first; the `cpu` / `cu118` / `cu120` / `cu121` / `cu124` / `cu126` extras pick the spconv
build that matches it (alternatives, never two at once).
"""
from glob import glob

from setuptools import find_packages, setup

package_name = "pvd_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["pvd_core", "pvd_core.*", "pvd_ros", "pvd_ros.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
        ("share/" + package_name + "/models", glob("models/*.pt")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.23",
        "pyyaml>=5.4",
        "tqdm>=4.60",
        "matplotlib>=3.5",
        "rosbags>=0.9.20",
        "scipy>=1.9",  # paired-t / bootstrap statistics of the distillation benchmark
    ],
    extras_require={
        "cpu": ["spconv>=2.3,<2.4"],
        "cu118": ["spconv-cu118>=2.3,<2.4"],
        "cu120": ["spconv-cu120>=2.3,<2.4"],
        "cu121": ["spconv-cu121>=2.3,<2.4"],
        "cu124": ["spconv-cu124>=2.3,<2.4"],
        "cu126": ["spconv-cu126>=2.3,<2.4"],
        # Real ROS 2 (Kilted) from PyPI for machines without a ROS distribution. Where
        # /opt/ros/<distro> is sourced, leave this extra out: the distribution provides them.
        "ros": [
            "ros-rclpy[fastrtps]",
            "ros-sensor-msgs",
            "ros-std-msgs",
            "ros-diagnostic-msgs",
            "ros-visualization-msgs",
            "pointcloud2>=0.6",
        ],
        # Test dependencies live here (pip install -e ".[test]"): setuptools' tests_require is
        # gone, and colcon printed "Unknown distribution option: 'tests_require'" for it.
        # ros-domain-coordinator: ROS 2's own reservation of a private ROS_DOMAIN_ID per test/bench run.
        "test": ["pytest>=7", "pytest-timeout>=2.1", "ruff==0.17.5", "ros-domain-coordinator>=0.10"],
    },
    zip_safe=True,
    maintainer="pvd_ros developers",
    maintainer_email="pvd-ros@example.com",
    description="Real-time LiDAR semantic segmentation with Point-to-Voxel knowledge distillation, as a ROS 2 node",
    license="MIT",
    entry_points={
        "console_scripts": [
            "pvd = pvd_core.cli:main",
            "segment_node = pvd_ros.segment_node:console_main",
            "pvd_bag = pvd_ros.cli:bag_main",
            "pvd_demo = pvd_ros.cli:demo_main",
        ],
    },
)
