"""`pvd_bag replay` start-up says what it sees instead of waiting in silence.

Real rclpy participants over DDS in one process (two contexts, so two participants, as
the player and a child node are): a stand-in node called ``segment_node`` that never
becomes ready, one that becomes ready late, and an empty graph.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Iterator

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (extra 'ros') is not installed")

from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402

from pvd_ros.bag_replay import ReplayError, wait_for_ready  # noqa: E402

pytestmark = pytest.mark.dds  # slow tier (markers in setup.cfg)

DOMAIN_ID = 20 + os.getpid() % 100  # 20..119: away from the default 0 and from test_bag_replay's 120..219
READY = "/segment_node/ready"


class Participant:
    """A node on its own rclpy context (its own DDS participant), spun in a background thread."""

    def __init__(self, name: str) -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=DOMAIN_ID)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # the context is shut down under the executor at close()
            pass

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.context.try_shutdown()
        self.thread.join(timeout=5.0)


@pytest.fixture
def player() -> Iterator[Node]:
    p = Participant("pvd_bag_replay")
    yield p.node
    p.close()


@pytest.fixture
def stand_in() -> Iterator[Participant]:
    p = Participant("segment_node")
    yield p
    p.close()


def _latched() -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def test_node_that_never_becomes_ready_is_reported_retried_and_refused(player: Node, stand_in: Participant) -> None:
    stand_in.node.create_publisher(Bool, "~/ready", _latched())  # publishes nothing, ever
    lines: list[tuple[float, str]] = []
    start = time.monotonic()
    with pytest.raises(ReplayError) as info:
        wait_for_ready(player, READY, timeout_s=7.0, report_every_s=1.0, resubscribe_after_s=2.0,
                       say=lambda line: lines.append((time.monotonic() - start, line)))
    elapsed = time.monotonic() - start
    assert 7.0 <= elapsed < 12.0
    reports = [(t, line) for t, line in lines if line.startswith("waiting")]
    assert reports and reports[0][0] < 2.5, lines  # the first report comes within seconds
    # What it saw: the stand-in node, its ready topic, and that topic's publisher with its QoS.
    assert any("/segment_node" in line and f"{READY}: 1 publisher(s) (/segment_node reliable transient_local)"
               in line for _, line in reports), reports
    retries = [line for _, line in lines if "re-created the subscription" in line]
    assert len(retries) >= 2, lines
    message = str(info.value)
    assert "did not report ready" in message and READY in message and "/segment_node" in message
    assert f"{len(retries)} re-subscriptions" in message


def test_late_ready_is_picked_up(player: Node, stand_in: Participant) -> None:
    publisher = stand_in.node.create_publisher(Bool, "~/ready", _latched())
    timer = threading.Timer(2.5, lambda: publisher.publish(Bool(data=True)))
    timer.start()
    lines: list[str] = []
    start = time.monotonic()
    try:
        retries = wait_for_ready(player, READY, timeout_s=30.0, report_every_s=1.0, resubscribe_after_s=10.0,
                                 say=lines.append)
    finally:
        timer.cancel()
    assert 2.5 <= time.monotonic() - start < 15.0
    assert retries == 0 and any(line.startswith("waiting") for line in lines)


def test_empty_graph_says_nothing_publishes_ready(player: Node) -> None:
    lines: list[str] = []
    with pytest.raises(ReplayError, match=r"/segment_node/ready: 0 publisher\(s\)"):
        wait_for_ready(player, READY, timeout_s=2.5, report_every_s=1.0, say=lines.append)
    assert lines and all(f"{READY}: 0 publisher(s)" in line for line in lines)
    assert not any("re-created" in line for line in lines)  # nothing to re-subscribe to
