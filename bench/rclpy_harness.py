"""Shared by the rclpy benchmarks: spin nodes in a background thread and wait for connections."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable


def spin_in_background(context: Any, *nodes: Any) -> tuple[Any, threading.Thread]:
    """A SingleThreadedExecutor spinning ``nodes`` in a daemon thread (shut it down when done)."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=context)
    for node in nodes:
        executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    return executor, spinner


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` (e.g. publishers and subscriptions matched) for up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
