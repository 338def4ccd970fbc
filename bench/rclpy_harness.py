"""Shared by the rclpy benchmarks: spin nodes in a background thread and wait for connections."""
from __future__ import annotations

import time
from typing import Any, Callable


def spin_in_background(context: Any, *nodes: Any) -> Any:
    """A SingleThreadedExecutor spinning ``nodes`` on a daemon thread (``close()`` it when done)."""
    from rclpy.executors import SingleThreadedExecutor

    from pvd_ros.spinning import BackgroundSpinner

    executor = SingleThreadedExecutor(context=context)
    for node in nodes:
        executor.add_node(node)
    return BackgroundSpinner(executor, name="pvd_bench_spin")


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` (e.g. publishers and subscriptions matched) for up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
