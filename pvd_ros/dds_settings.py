"""Will this process's DDS settings reach peers that run with Fast DDS's defaults?

A LiDAR driver, rviz2 or ``ros2 topic echo`` usually runs with no DDS settings at all. What was
measured between real processes (bench/dds_interop.py, bench/results/dds_interop.json):

- ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`` on one side only: the processes discover each
  other, but no data flows either way (not even the latched ``~/ready``).
- Default transports on both sides: most 2 MB best-effort scans from the driver are lost.
- ``config/fastdds_large_clouds.xml`` (``FASTDDS_DEFAULT_PROFILES_FILE``) on the node only:
  default peers' scans arrive and default subscribers get the answers.
- ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``: 2 MB clouds got no answer (docs/ros.md, DDS).
- ``ROS_DOMAIN_ID`` above 101 on Linux: the domain's UDP ports (7400 + 250 x id and up) lie in
  the kernel's ephemeral range (32768-60999), where any socket may already hold them; the ROS 2
  documentation ("About Domain ID") says to choose 0-101 there.

:func:`transport_warnings` turns a process environment into the warnings that apply;
:func:`warn_about_transport` logs them (segment_node calls it once at start);
:func:`node_environment` is what a process that starts the node itself (``pvd_bag replay``,
the demo) adds to its environment, the same profile launch/segment.launch.py gives it;
:func:`private_domain_id` reserves a safe domain of its own for a test or benchmark.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from pvd_core.shipped_models import share_dirs

PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
SHIPPED_PROFILE = "fastdds_large_clouds.xml"
# Distributions on Fast DDS 2, which reads FASTRTPS_DEFAULT_PROFILES_FILE (newer ones warn on that name).
FAST_DDS_2_DISTROS = ("humble", "iron", "jazzy")
# ROS 2 "About Domain ID": on Linux, ids above 101 put DDS ports in the ephemeral port range.
LINUX_MAX_SAFE_DOMAIN_ID = 101
# Successive reservations of one process start from different ids (see private_domain_id).
_DOMAIN_CANDIDATES = itertools.count(os.getpid())
_FIX = (f"start the node with FASTDDS_DEFAULT_PROFILES_FILE=<share/pvd_ros/config/{SHIPPED_PROFILE}> "
        "(launch/segment.launch.py does) and no FASTDDS_BUILTIN_TRANSPORTS")


def transport_warnings(environ: Optional[Mapping[str, str]] = None) -> list[str]:
    """Reasons why 2 MB clouds would not pass between this process and default-configured peers."""
    env = os.environ if environ is None else environ
    rmw = env.get("RMW_IMPLEMENTATION", "") or "rmw_fastrtps_cpp"
    warnings: list[str] = []
    domain = env.get("ROS_DOMAIN_ID", "").strip()
    if sys.platform.startswith("linux") and domain.isdigit() and int(domain) > LINUX_MAX_SAFE_DOMAIN_ID:
        warnings.append(f"ROS_DOMAIN_ID={domain}: above {LINUX_MAX_SAFE_DOMAIN_ID} its DDS ports lie in Linux's "
                        "ephemeral port range, where other sockets can hold them; choose 0-101")
    if env.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "").upper() == "LOCALHOST":
        warnings.append("ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST: 2 MB clouds got no answer in tests; "
                        "leave it unset (SUBNET) for LiDAR-sized messages")
    if not rmw.startswith("rmw_fastrtps"):
        return warnings  # the Fast DDS settings below do not apply to other RMWs
    builtin = env.get("FASTDDS_BUILTIN_TRANSPORTS", "").strip().upper()
    if builtin and builtin not in ("DEFAULT", "DEFAULTV6"):
        warnings.append(f"FASTDDS_BUILTIN_TRANSPORTS={builtin}: peers on Fast DDS's default transports "
                        f"(a LiDAR driver, rviz2, ros2 topic echo) discover this node but exchange no data "
                        f"with it unless they set the same; {_FIX}")
    profiles = [(name, env[name]) for name in PROFILE_VARIABLES if env.get(name)]
    missing = [f"{name}={value}" for name, value in profiles if not Path(value).is_file()]
    if missing:
        warnings.append(f"{', '.join(missing)}: no such file, Fast DDS falls back to its defaults")
    if not builtin and len(missing) == len(profiles):
        warnings.append("Fast DDS default transports: a default peer's 2 MB best-effort scans are mostly "
                        f"lost on the way to this node; {_FIX}")
    return warnings


def warn_about_transport(logger: Any, environ: Optional[Mapping[str, str]] = None) -> list[str]:
    """Log each of :func:`transport_warnings` with ``logger.warning``; return them."""
    warnings = transport_warnings(environ)
    for message in warnings:
        logger.warning(message)
    return warnings


def shipped_profile() -> Optional[Path]:
    """``config/fastdds_large_clouds.xml`` of the source tree or an installed share folder; None if absent."""
    for folder in share_dirs("config"):
        if (folder / SHIPPED_PROFILE).is_file():
            return folder / SHIPPED_PROFILE
    return None


def node_environment(environ: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Variables to add for a segment_node child: the shipped profile, as launch gives it.

    Empty where the user chose transports (a profile variable, FASTDDS_BUILTIN_TRANSPORTS),
    another RMW, or the profile is not found. The starting process itself keeps its own
    settings, as a LiDAR driver would: the profile is measured to work against default peers.
    """
    env = os.environ if environ is None else environ
    rmw = env.get("RMW_IMPLEMENTATION", "") or "rmw_fastrtps_cpp"
    chosen = any(env.get(name) for name in (*PROFILE_VARIABLES, "FASTDDS_BUILTIN_TRANSPORTS"))
    profile = shipped_profile()
    if chosen or profile is None or not rmw.startswith("rmw_fastrtps"):
        return {}
    names = PROFILE_VARIABLES if env.get("ROS_DISTRO", "") in FAST_DDS_2_DISTROS else PROFILE_VARIABLES[:1]
    return {name: str(profile) for name in names}


@contextlib.contextmanager
def private_domain_id() -> Iterator[int]:
    """Reserve a ROS domain id in 1-100 that no other cooperating process holds, while in the block.

    For tests and benchmarks that start nodes: their own domain keeps them apart from each other
    and from a robot's nodes, and ids up to 100 keep DDS ports out of Linux's ephemeral range.
    ROS 2's ``domain_coordinator`` does the reservation (a port per id, as launch_testing uses);
    candidates start from this process's id and advance, so that parallel runs and successive
    reservations in one run pick different domains (a node left over from one cannot join the next).
    """
    try:
        from domain_coordinator import domain_id
    except ImportError as exc:
        raise ImportError("private_domain_id needs ROS 2's domain_coordinator: pip install ros-domain-coordinator "
                          "(in the 'test' extra) or install it from the ROS distribution") from exc
    raised: Optional[BaseException] = None
    with domain_id(lambda: next(_DOMAIN_CANDIDATES) % 100 + 1) as reserved:
        try:
            yield reserved
        except BaseException as exc:  # raised below, outside: domain_id() would take an OSError for a busy
            raised = exc  # port, try the next id and fail with "generator didn't stop after throw()"
    if raised is not None:
        raise raised
