"""Spin an rclpy executor on a background thread and stop it without racing its shutdown.

``Executor.shutdown()`` called from another thread while ``spin()`` runs is racy in rclpy
(ros2/rclpy#968, open): it drops the executor's guard condition while the spinning thread
may still be building a handler with it, and that thread dies with ``AttributeError:
'NoneType' object has no attribute 'trigger'`` (seen in this project's test driver). Here the
spinning thread checks a stop flag between short ``spin_once`` calls, ``close`` joins it,
and only then shuts the executor down, on a thread that no longer spins. Shared by
``pvd_bag replay``, the rclpy benchmarks and the tests.
"""
from __future__ import annotations

import threading
from typing import Any

_PERIOD_S = 0.05  # longest wait in one spin_once: how late close() can notice the stop flag


class BackgroundSpinner:
    """An executor spinning on a daemon thread until ``close()``.

    Stops quietly when the executor's context is shut down by someone else (whatever
    rclpy raises then); any other exception ends the thread the usual way, printed by
    ``threading.excepthook``.
    """

    def __init__(self, executor: Any, name: str = "pvd_spin") -> None:
        self.executor = executor
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            while not self._stop.is_set() and self.executor.context.ok():
                self.executor.spin_once(timeout_sec=_PERIOD_S)
        except ExternalShutdownException:
            pass
        except Exception:
            if self.executor.context.ok():
                raise

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop spinning, join the thread (up to ``timeout_s``), then shut the executor down."""
        self._stop.set()
        self.executor.wake()
        self.thread.join(timeout=timeout_s)
        self.executor.shutdown(timeout_sec=timeout_s)
