"""Default-configured peers and segment_node exchange 2 MB clouds under the shipped DDS set-up.

Real processes over real DDS (bench/dds_interop.py does the work): a driver process publishes
the real 123 389-point scan best-effort, a viewer process subscribes to the labelled cloud
reliably (as RViz), both with every DDS variable removed from their environment; only the
node gets what launch/segment.launch.py gives it (config/fastdds_large_clouds.xml). Measured
with the bench: on Fast DDS defaults most scans never reach the node, and with the previous
FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA nothing at all flows, so this fails on either.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from pvd_ros.dds_settings import node_environment, private_domain_id, transport_warnings

pytestmark = [pytest.mark.dds, pytest.mark.subprocess]  # slow tier (markers in setup.cfg)

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "config" / "fastdds_large_clouds.xml"
FRAMES = 5  # on Fast DDS defaults about 4-7 in 10 scans arrived: all 5 by chance is rare


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("rclpy", reason="rclpy is not installed")
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import dds_interop
    finally:
        sys.path.remove(str(REPO / "bench"))
    return dds_interop


@pytest.mark.timeout(400)
def test_default_peers_exchange_2mb_clouds_with_the_node(bench, tiny_checkpoint, real_scan_path, tmp_path):
    args = argparse.Namespace(scan=real_scan_path, frames=FRAMES, period=0.1, ready_timeout=90.0, lockstep=True)
    with private_domain_id() as domain:
        run = bench.measure(f"profile={PROFILE.relative_to(REPO)}", "default", tiny_checkpoint, args,
                            domain_id=domain, workdir=tmp_path)
    detail = f"{run['node_counters']} node log: {run['node_log_tail']}"
    assert run["published"] == FRAMES
    assert run["ready_received_by_driver"], "the latched ~/ready did not reach a default-configured process: " + detail
    assert run["node_counters"].get("received") == str(FRAMES), "scans lost on the way to the node: " + detail
    # Every answer is the full 123 389-point cloud, one per published stamp.
    assert run["answered_stamps"] == list(range(1, FRAMES + 1)), detail


def test_profile_is_a_fast_dds_participant_profile_for_the_default():
    import xml.etree.ElementTree as ET

    root = ET.parse(PROFILE).getroot()
    ns = {"d": "http://www.eprosima.com"}
    participant = root.find("d:profiles/d:participant", ns)
    assert participant is not None and participant.get("is_default_profile") == "true"
    segments = [int(e.text) for e in root.iter("{http://www.eprosima.com}segment_size")]
    assert segments and min(segments) >= 4 * 3_500_000  # several 3.5 MB labelled clouds in flight


@pytest.mark.parametrize("env, expect", [
    ({"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE)}, []),
    ({"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE), "RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}, []),
    ({"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}, ["FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA"]),
    ({}, ["Fast DDS default transports"]),
    ({"FASTDDS_DEFAULT_PROFILES_FILE": "/nonexistent.xml"}, ["no such file", "Fast DDS default transports"]),
    ({"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"},
     ["ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST"]),
    ({"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE), "ROS_DOMAIN_ID": "101"}, []),
    pytest.param({"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE), "ROS_DOMAIN_ID": "150"}, ["ROS_DOMAIN_ID=150"],
                 marks=pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's ephemeral ports")),
])
def test_node_warns_when_its_transport_settings_miss_default_peers(env, expect):
    warnings = transport_warnings(env)
    assert len(warnings) == len(expect), warnings
    for message, words in zip(warnings, expect):
        assert words in message


@pytest.mark.parametrize("env, expect", [
    ({}, ["FASTDDS_DEFAULT_PROFILES_FILE"]),
    ({"ROS_DISTRO": "kilted"}, ["FASTDDS_DEFAULT_PROFILES_FILE"]),
    ({"ROS_DISTRO": "jazzy"}, ["FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"]),
    ({"FASTDDS_DEFAULT_PROFILES_FILE": "/robot/profile.xml"}, []),  # the user's own choice is kept
    ({"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}, []),
    ({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}, []),
])
def test_a_node_started_by_a_tool_gets_the_profile_launch_gives_it(env, expect):
    """pvd_bag replay and the demo start segment_node themselves: same profile, and no warning."""
    added = node_environment(env)
    assert sorted(added) == sorted(expect)
    assert all(Path(value) == PROFILE for value in added.values())
    if added:
        assert transport_warnings({**env, **added}) == []


def test_private_domain_ids_are_safe_on_linux_and_distinct_while_held():
    pytest.importorskip("domain_coordinator", reason="ros-domain-coordinator is not installed (the 'test' extra)")
    with private_domain_id() as first, private_domain_id() as second:
        assert first != second
        assert all(1 <= d <= 100 for d in (first, second))  # <= 101: DDS ports below 32768
        assert transport_warnings({"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE), "ROS_DOMAIN_ID": str(first)}) == []
    with pytest.raises(FileNotFoundError):  # an error in the block is the caller's, not the reservation's
        with private_domain_id():
            raise FileNotFoundError("no such checkpoint")
