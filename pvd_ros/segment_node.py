"""``segment_node``: the student network as a ROS 2 node (thin over pvd_core's Segmenter).

Topics (private names; remap them in the launch file):

- ``~/input/points`` (sensor_msgs/PointCloud2, in): QoS from ``input_reliability`` /
  ``input_depth``, sensor-data (best effort, keep last 1) by default.
- ``~/output/points`` (sensor_msgs/PointCloud2, out): the input's header, height, width
  and point order, with fields x, y, z, intensity, rgb, confidence (float32) and label
  (uint16 class index). Points that fail the point rule (``pvd_core.point_rule``: NaN/Inf
  x, y, z or intensity, exactly (0, 0, 0) as no-return pixels of organised clouds are,
  outside [min_range, max_range]), left out by ``max_points`` or below
  ``confidence_threshold`` get label 0; all but the last also get confidence 0; every
  point keeps its raw x, y, z and intensity.
- ``~/debug/processing_time_ms`` and ``~/debug/pipeline_latency_ms`` (std_msgs/Float64):
  decode-to-encode time of each cloud, and receive-to-publish latency measured as
  node clock now minus header.stamp (sim time aware).
- ``/diagnostics`` (diagnostic_msgs/DiagnosticArray): OK; WARN when the last cloud took
  longer than ``processing_budget_ms``; ERROR when over budget for ``error_after_s``.
  Its values hold the counters (received, processed, dropped_malformed and its reasons,
  skipped_stale, skipped_no_subscriber, errors) and recent mean stage times.
- ``~/legend`` (visualization_msgs/MarkerArray, latched): class names in class colours.
- ``~/ready`` (std_msgs/Bool, latched): True once the model is loaded and warmed up.

Newest-scan-only policy: the subscription callback only validates the message layout
(O(1), malformed clouds are counted and dropped right there) and puts the message in a
one-slot mailbox; a worker thread takes the newest message from the mailbox and
processes it. That worker is the node's only torch thread: it also loads and warms up the
model, while the constructor waits for it (see ``_run_worker`` for why). A message still in
the mailbox when a newer one arrives is replaced and counted as ``skipped_stale``. So the
node never queues more than one unprocessed scan, whatever the executor, and the answer
latency is at most about two processing times.

Ready signal for tools that start the node in-process or as a child process: the
``ready`` attribute, the latched ``~/ready`` Bool, and the log line "segment_node ready".

Shutdown (console script, see ``main``): SIGINT and SIGTERM only *request* shutdown, any
number of them at any time; the main thread then stops the worker, destroys the node and
the context in that order and leaves with exit status 0. A terminal's Ctrl-C under
``ros2 launch`` delivers two SIGINTs (to the process group, then launch's own), the second
often while the first is being handled, so nothing on that path may be interruptible.
"""
from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import threading
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Bool, Float64
from visualization_msgs.msg import MarkerArray

from pvd_core.shipped_models import model_card
from pvd_core.errors import PvdError
from pvd_core.memory import retain_freed_memory
from pvd_core.point_rule import PointRule
from pvd_ros.cloud_codec import CloudError, check_layout, decode_points, encode_labelled, packed_rgb_lut
from pvd_ros.dds_settings import warn_about_transport
from pvd_ros.legend import LEGEND_QOS, legend_markers
from pvd_ros.node_params import NodeParams, ParameterError, declare_parameters

INPUT_TOPIC = "~/input/points"
OUTPUT_TOPIC = "~/output/points"
STAGES = ("decode", "preprocess", "inference", "postprocess", "encode", "total")
SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# How often main()'s spin loop looks at the shutdown request: a Python signal handler runs
# only when the main thread is back in the interpreter, never inside rcl's wait.
_SPIN_PERIOD_S = 0.1
# main() waits this long for a worker busy in a forward pass before it leaves without it
# (below launch's 5 s SIGTERM escalation; the process then exits without finalization).
_EXIT_JOIN_TIMEOUT_S = 2.0
# A shutdown that has not finished this long after the signal dumps every thread's stack to
# stderr and exits 1 (faulthandler): a hang that leaves no stack cannot be fixed. Below launch's
# SIGKILL (10 s after its SIGINT), so the stack reaches the launch log too; the worker join
# (_EXIT_JOIN_TIMEOUT_S) and a normal teardown (milliseconds) fit well inside it. The one hang
# seen since the signal-handler fix was inside rclpy's Publisher.destroy (Fast DDS deleting a
# DataWriter), with no other Python thread left: docs/ros.md.
_SHUTDOWN_WATCHDOG_S = 8.0
_LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


class NodeStartupError(PvdError, RuntimeError):
    """The node cannot start (bad parameter, missing or mismatched checkpoint); the message says why."""


class StartupAborted(RuntimeError):
    """Shutdown was requested (``abort_startup`` returned True) while the model was still loading."""


class ShutdownRequest:
    """SIGINT/SIGTERM handlers that only record that shutdown was requested.

    Replaces both rclpy's handlers and Python's KeyboardInterrupt. rclpy's shut the
    context down from their own thread while the worker may be publishing, and chain to
    Python's, which raise KeyboardInterrupt wherever the main thread happens to be: a
    second Ctrl-C then lands in the middle of the shutdown (it was seen in
    ``Thread.join``), the exception escapes ``main`` and the interpreter finalizes with
    the worker inside torch and rclpy's signal thread still joinable (``terminate called
    without an active exception``, exit 134). Here a signal is recorded and the handler
    returns; the main thread polls for it and acts at a point of its choosing.
    """

    def __init__(self) -> None:
        self.received: list[int] = []

    def install(self) -> None:
        """Take over SIGINT and SIGTERM (main thread only, as Python requires)."""
        for signum in SHUTDOWN_SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        # No lock here, not even threading.Event's: Python runs a handler between any two
        # bytecodes of the main thread, including inside this handler, so a second signal
        # arriving while the first one held a lock deadlocked the node before its shutdown
        # began (4 signals within 0.2 s: 2 hangs in about 250 busy emulations; a flood of SIGINTs
        # hung 2 of 3 processes). list.append is atomic and takes no lock.
        self.received.append(signum)

    def is_set(self) -> bool:
        """Whether a shutdown signal has arrived (polled: by the main loop and by start-up)."""
        return bool(self.received)

    def __bool__(self) -> bool:
        return self.is_set()


@dataclass
class FrameResult:
    """One processed cloud: the message to publish and where the time went (ms)."""

    msg: PointCloud2
    timings: dict[str, float]
    num_points: int
    num_inferred: int


@dataclass
class FrameRecord:
    """What the node keeps about recent frames (for diagnostics and the benchmark)."""

    stamp_ns: int
    timings: dict[str, float]
    num_points: int
    published_monotonic: float = field(default=0.0)
    # time.perf_counter() when the subscription callback got the cloud and when the worker
    # took it (same-process tools split transport from queueing with these)
    received_perf: float = field(default=0.0)
    started_perf: float = field(default=0.0)


class SegmentNode(Node):
    """Subscribes to clouds, labels them with the Segmenter, publishes labelled clouds.

    ``process(msg)`` is the whole per-cloud work as a plain method (no spinning needed);
    the ROS callbacks around it only move messages and count. Construct with
    ``parameter_overrides=[Parameter("checkpoint", value=...)]`` and/or
    ``cli_args=["--ros-args", "--params-file", "config/segment.yaml"]``.
    """

    def __init__(
        self,
        *,
        node_name: str = "segment_node",
        namespace: Optional[str] = None,
        context: Optional[Context] = None,
        parameter_overrides: Optional[Sequence[Parameter]] = None,
        cli_args: Optional[list[str]] = None,
        abort_startup: Optional[Callable[[], bool]] = None,
    ) -> None:
        """``abort_startup``: polled while the model loads; once it returns True the constructor
        raises StartupAborted."""
        super().__init__(node_name, namespace=namespace, context=context, cli_args=cli_args,
                         parameter_overrides=list(parameter_overrides) if parameter_overrides else None)
        self._ready = False
        self._stop = False
        self._destroyed = False
        # Held by the worker around each of its ROS calls and by the shutdown while it sets _stop:
        # once _stop is set under it, the worker never touches a publisher again.
        self._ros_lock = threading.Lock()
        self._worker: Optional[threading.Thread] = None
        try:
            self._start(abort_startup)
        except BaseException:
            self._stop = True
            self._destroyed = True
            super().destroy_node()
            raise

    # ------------------------------------------------------------------ start-up
    def _start(self, abort_startup: Optional[Callable[[], bool]]) -> None:
        try:
            self.params: NodeParams = declare_parameters(self)
        except ParameterError as exc:
            raise NodeStartupError(f"segment_node: {exc}") from exc
        self._warn_unknown_parameters()
        if self.params.retain_freed_memory and not retain_freed_memory():
            self.get_logger().info("retain_freed_memory: not glibc, allocator left as it is")
        self._lock = threading.Condition()
        self._pending: Optional[tuple[PointCloud2, float]] = None  # (message, perf_counter at receipt)
        self._counts: Counter[str] = Counter()
        self._frames: deque[FrameRecord] = deque(maxlen=100)
        self._over_budget_since: Optional[float] = None
        self._legend_frame: Optional[str] = None

        # The worker loads and warms up the model itself (see _run_worker); start-up waits for it
        # so that a bad checkpoint still fails the constructor with NodeStartupError.
        self._loaded = threading.Event()
        self._load_error: Optional[BaseException] = None
        self._worker = threading.Thread(target=self._run_worker, name="segment_node_worker", daemon=True)
        self.get_logger().info(f"loading the model {self.params.checkpoint} (warm-up: {self.params.warmup_points} "
                               "points)")
        self._worker.start()
        while not self._loaded.wait(timeout=0.05):
            if abort_startup is not None and abort_startup():
                raise StartupAborted("shutdown requested while the model was loading")
        if self._load_error is not None:
            raise self._load_error
        self.label_map = self.segmenter.label_map
        self._rgb_lut = packed_rgb_lut(self.label_map.color_array())

        self._cloud_pub = self.create_publisher(PointCloud2, OUTPUT_TOPIC, self.params.output_qos())
        self._time_pub = self.create_publisher(Float64, "~/debug/processing_time_ms", self.params.output_qos())
        self._latency_pub = self.create_publisher(Float64, "~/debug/pipeline_latency_ms", self.params.output_qos())
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._ready_pub = self.create_publisher(Bool, "~/ready", _LATCHED)
        self._legend_pub = (self.create_publisher(MarkerArray, "~/legend", LEGEND_QOS)
                            if self.params.publish_legend else None)
        if self._legend_pub is not None and self.params.legend_frame_id:
            self._publish_legend(self.params.legend_frame_id)
        self._sub = self.create_subscription(PointCloud2, INPUT_TOPIC, self._on_cloud, self.params.input_qos())
        self._diag_timer = self.create_timer(self.params.diagnostics_period_s, self._publish_diagnostics)

        self._ready = True
        self._ready_pub.publish(Bool(data=True))
        self.get_logger().info(
            f"segment_node ready: {self.segmenter.meta.get('checkpoint')} on {self.segmenter.device} "
            f"({self.torch_threads} CPU threads, OpenMP wait policy "
            f"{os.environ.get('OMP_WAIT_POLICY', 'default (spin)')}), "
            f"{self.label_map.num_classes} classes; {self._sub.topic_name} -> {self._cloud_pub.topic_name}; "
            f"model {model_card(self.segmenter.meta)}")

    def _warn_unknown_parameters(self) -> None:
        """A typo in the params file would otherwise be ignored silently (rclpy only applies declared names).

        Only a warning: a ``/**`` file may legitimately carry parameters for other nodes.
        """
        given = set(getattr(self, "_parameter_overrides", {}) or {})
        unknown = sorted(given - set(self._parameters))
        if unknown:
            self.get_logger().warning(f"ignoring unknown parameter(s) {unknown}; known: {sorted(self._parameters)}")

    def _load_segmenter(self, params: NodeParams) -> Any:
        from pvd_core.shipped_models import shipped_model

        try:
            path = Path(params.checkpoint).expanduser() if params.checkpoint else shipped_model()
        except FileNotFoundError as exc:
            raise NodeStartupError(f"segment_node: parameter 'checkpoint' is empty and {exc}") from exc
        if not path.is_file():
            raise NodeStartupError(f"segment_node: parameter 'checkpoint': no such file {str(path)!r}")
        from pvd_core.device import resolve_device  # torch is imported here, after the cheap checks
        from pvd_core.segmenter import Segmenter

        try:
            device = resolve_device(params.device)
        except ValueError as exc:
            raise NodeStartupError(f"segment_node: parameter 'device': {exc}") from exc
        if params.fp16 and device.type != "cuda":
            raise NodeStartupError(f"segment_node: parameter 'fp16' is true but the device is {device} "
                                   "(half precision needs CUDA; set fp16 to false)")
        rule = PointRule(min_range=params.min_range, max_range=params.max_range)  # validated with the params
        try:
            return Segmenter.from_checkpoint(str(path), device=params.device, fp16=params.fp16, point_rule=rule)
        except PvdError as exc:  # CheckpointError (also for a file torch cannot load), a bad option
            raise NodeStartupError(
                f"segment_node: parameter 'checkpoint': cannot use {str(path)!r}: {type(exc).__name__}: {exc}"
            ) from exc

    # ------------------------------------------------------------------ public API
    @property
    def ready(self) -> bool:
        """True once the model is loaded and warmed up and the topics exist."""
        return self._ready

    @property
    def input_topic(self) -> str:
        return self._sub.topic_name

    @property
    def output_topic(self) -> str:
        return self._cloud_pub.topic_name

    def stats(self) -> dict[str, int]:
        """A snapshot of the counters (received, processed, dropped_malformed, drop_<kind>, ...)."""
        with self._lock:
            out = dict(self._counts)
        for key in ("received", "processed", "dropped_malformed", "skipped_stale", "skipped_no_subscriber", "errors"):
            out.setdefault(key, 0)
        return out

    def recent_frames(self) -> list[FrameRecord]:
        with self._lock:
            return list(self._frames)

    def process(self, msg: Any) -> FrameResult:
        """Decode, segment and encode one cloud; raises CloudError for a malformed message."""
        t0 = time.perf_counter()
        decoded = decode_points(msg)
        points = decoded.points
        n = points.shape[0]
        inferred = self._select_points(points)
        t1 = time.perf_counter()
        stage = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        num_inferred = n if inferred is None else int(inferred.size)
        if inferred is None and n:
            result = self.segmenter.segment(points)
            labels, confidence = result.labels, result.confidence
            stage.update({k: float(result.timings.get(k, 0.0)) for k in stage})
        else:
            labels = np.zeros(n, dtype=np.uint16)
            confidence = np.zeros(n, dtype=np.float32)
            if num_inferred:
                result = self.segmenter.segment(points[inferred])
                labels[inferred] = result.labels
                confidence[inferred] = result.confidence
                stage.update({k: float(result.timings.get(k, 0.0)) for k in stage})
        t2 = time.perf_counter()
        if self.params.confidence_threshold > 0.0:
            labels[confidence < self.params.confidence_threshold] = 0
        out = encode_labelled(msg.header, points, labels, confidence, self._rgb_lut, decoded.height, decoded.width)
        t3 = time.perf_counter()
        timings = {"decode": (t1 - t0) * 1e3, **stage, "encode": (t3 - t2) * 1e3, "total": (t3 - t0) * 1e3}
        return FrameResult(msg=out, timings=timings, num_points=n, num_inferred=num_inferred)

    def destroy_node(self, join_timeout_s: float = 30.0) -> None:
        """Stop the worker, then destroy the node; safe to call more than once.

        Waits up to ``join_timeout_s`` for a worker that is inside a forward pass; after
        that the worker is left to finish on its own (it never publishes once stopped).
        """
        if self._destroyed:
            return
        self._destroyed = True
        self._stop_worker(join_timeout_s)
        super().destroy_node()

    # ------------------------------------------------------------------ internals
    def _select_points(self, points: np.ndarray) -> Optional[np.ndarray]:
        """Indices of points to send to the network when ``max_points`` leaves some out, else None.

        Which points may reach the network at all is the Segmenter's point rule; this only
        spreads the ``max_points`` budget uniformly over the points that pass it.
        """
        max_points = self.params.max_points
        if not max_points or points.shape[0] <= max_points:
            return None
        index = self.segmenter.point_rule.select(points)
        if index is None:
            index = np.arange(points.shape[0])
        if index.size > max_points:
            index = index[np.linspace(0, index.size - 1, max_points).astype(np.int64)]
        return index

    def _on_cloud(self, msg: PointCloud2) -> None:
        received = time.perf_counter()
        with self._lock:
            self._counts["received"] += 1
        try:
            check_layout(msg)
        except CloudError as exc:
            self._count_drop(exc)
            return
        with self._lock:
            if self._pending is not None:
                self._counts["skipped_stale"] += 1
            self._pending = (msg, received)
            self._lock.notify()

    def _count_drop(self, exc: CloudError) -> None:
        with self._lock:
            self._counts["dropped_malformed"] += 1
            self._counts[f"drop_{exc.kind}"] += 1
            total = self._counts["dropped_malformed"]
        self.get_logger().warning(f"dropped malformed cloud ({exc.kind}, {total} so far): {exc}",
                                  throttle_duration_sec=5.0)

    def _has_subscribers(self) -> bool:
        with self._ros_lock:
            return not self._stop and any(
                pub.get_subscription_count() > 0 for pub in (self._cloud_pub, self._time_pub, self._latency_pub))

    def _run_worker(self) -> None:
        """The node's one torch thread: load and warm up the model, then process clouds.

        Why one thread: torch runs CPU ops on an OpenMP team per calling thread, and a second
        team (say the main thread's, left over from loading the model there) makes libgomp
        throttle its spin-waits as soon as the teams' threads outnumber the cores. Every small
        op then pays a futex wake-up: the voxelizer of a 123 k-point scan went from 6 to 11 ms
        on a 2-core machine. Nothing else in the node touches torch.
        """
        # Process-directed signals go to a thread that does not block them; keep them off this one
        # (and the OpenMP team it starts, which inherits the mask) so that torch's and libgomp's
        # waits are never interrupted: the Python handlers run on the main thread in any case.
        signal.pthread_sigmask(signal.SIG_BLOCK, SHUTDOWN_SIGNALS)
        try:
            self.torch_threads = self._set_threads(self.params.num_threads)
            self.segmenter = self._load_segmenter(self.params)
            if self.params.warmup_points:
                t0 = time.perf_counter()
                self.segmenter.warmup(num_points=self.params.warmup_points)
                self.get_logger().info(f"warm-up on {self.params.warmup_points} points took "
                                       f"{(time.perf_counter() - t0) * 1e3:.0f} ms")
        except BaseException as exc:  # handed to the constructor, which raises it
            self._load_error = exc
            return
        finally:
            self._loaded.set()
        self._work()

    @staticmethod
    def _set_threads(num_threads: int) -> int:
        """Apply ``num_threads`` (0: torch's default) and return the count in effect.

        Called on the worker like every other torch call of the node (torch applies the count
        process-wide, lazily per thread).
        """
        import torch

        if num_threads:
            torch.set_num_threads(num_threads)
        return torch.get_num_threads()

    def _work(self) -> None:
        while True:
            with self._lock:
                while self._pending is None and not self._stop:
                    self._lock.wait(timeout=0.5)
                if self._stop:
                    return
                (msg, received), self._pending = self._pending, None
            started = time.perf_counter()
            if not self._has_subscribers():
                with self._lock:
                    self._counts["skipped_no_subscriber"] += 1
                continue
            try:
                result = self.process(msg)
            except CloudError as exc:
                self._count_drop(exc)
                continue
            except Exception as exc:  # never let one cloud kill the node; say what happened
                with self._lock:
                    self._counts["errors"] += 1
                self.get_logger().error(f"processing a cloud failed: {type(exc).__name__}: {exc}",
                                        throttle_duration_sec=5.0)
                continue
            if not self._publish(msg, result, received, started):
                return

    def _publish(self, msg: PointCloud2, result: FrameResult, received: float, started: float) -> bool:
        """Publish one result; False (and nothing published) once the node is stopping."""
        with self._ros_lock:
            if self._stop:
                return False
            self._publish_locked(msg, result, received, started)
            return True

    def _publish_locked(self, msg: PointCloud2, result: FrameResult, received: float, started: float) -> None:
        if self._legend_pub is not None and not self.params.legend_frame_id \
                and msg.header.frame_id != self._legend_frame:
            self._publish_legend(msg.header.frame_id)
        stamp = Time.from_msg(msg.header.stamp)
        now_mono = time.monotonic()
        with self._lock:  # state first, so whoever receives the cloud sees the diagnostics it caused
            self._counts["processed"] += 1
            self._frames.append(FrameRecord(stamp.nanoseconds, result.timings, result.num_points, now_mono,
                                            received, started))
            if result.timings["total"] > self.params.processing_budget_ms:
                if self._over_budget_since is None:
                    self._over_budget_since = now_mono
            else:
                self._over_budget_since = None
        self._cloud_pub.publish(result.msg)
        self._time_pub.publish(Float64(data=result.timings["total"]))
        if stamp.nanoseconds > 0:
            latency_ms = (self.get_clock().now().nanoseconds - stamp.nanoseconds) / 1e6
            self._latency_pub.publish(Float64(data=latency_ms))

    def _publish_legend(self, frame_id: str) -> None:
        assert self._legend_pub is not None
        self._legend_pub.publish(legend_markers(self.label_map, frame_id))
        self._legend_frame = frame_id

    def diagnostic_status(self) -> DiagnosticStatus:
        """The node's health now: level, message and counters (also published on /diagnostics)."""
        with self._lock:
            counts = dict(self._counts)
            frames = list(self._frames)[-20:]
            over_since = self._over_budget_since
        status = DiagnosticStatus()
        status.name = f"{self.get_name()}: segmentation pipeline"
        status.hardware_id = str(self.segmenter.device)
        budget = self.params.processing_budget_ms
        if not frames:
            status.level, status.message = DiagnosticStatus.OK, "waiting for clouds"
        elif over_since is None:
            status.level = DiagnosticStatus.OK
            status.message = f"last cloud {frames[-1].timings['total']:.1f} ms (budget {budget:.0f} ms)"
        else:
            over_for = time.monotonic() - over_since
            status.level = DiagnosticStatus.ERROR if over_for >= self.params.error_after_s else DiagnosticStatus.WARN
            status.message = (f"over the {budget:.0f} ms budget for {over_for:.1f} s "
                              f"(last cloud {frames[-1].timings['total']:.1f} ms)")
        values = {k: str(counts.get(k, 0)) for k in
                  ("received", "processed", "dropped_malformed", "skipped_stale", "skipped_no_subscriber", "errors")}
        values.update({k: str(v) for k, v in counts.items() if k.startswith("drop_")})
        for stage in STAGES:
            if frames:
                values[f"mean_{stage}_ms"] = f"{np.mean([f.timings[stage] for f in frames]):.2f}"
        values["checkpoint"] = self.params.checkpoint
        values["cpu_threads"] = str(self.torch_threads)
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        return status

    def _publish_diagnostics(self) -> None:
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [self.diagnostic_status()]
        self._diag_pub.publish(array)

    def _stop_worker(self, join_timeout_s: float) -> None:
        with self._ros_lock:  # waits out a publish in progress; the worker checks _stop under this lock
            self._stop = True
        with self._lock:
            self._lock.notify_all()
        worker, self._worker = self._worker, None
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=join_timeout_s)
            if worker.is_alive():
                self.get_logger().info(f"worker still inside a forward pass after {join_timeout_s:.1f} s; "
                                       "leaving without it (it publishes nothing more)")


def main(args: Optional[list[str]] = None) -> int:
    """Console script ``segment_node`` (``ros2 run pvd_ros segment_node --ros-args ...``).

    Exit status: 0 after SIGINT/SIGTERM (any number, at any time after the module is
    imported, including during start-up), 1 when the node refuses to start.

    Order of the shutdown, each step once and none interruptible (the signal handlers
    never raise): stop spinning, stop the worker (after a publish in progress; a
    forward pass is waited for at most ``_EXIT_JOIN_TIMEOUT_S``), destroy the node,
    shut the context down. ``console_main`` then leaves without interpreter teardown.
    """
    faulthandler.enable()  # a native crash prints the Python stack instead of a bare SIGSEGV
    request = ShutdownRequest()
    request.install()  # before rclpy.init: a Ctrl-C during start-up is a request too
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    logger = rclpy.logging.get_logger("segment_node")
    warn_about_transport(logger)  # DDS settings default peers miss
    node: Optional[SegmentNode] = None
    executor: Optional[SingleThreadedExecutor] = None
    try:
        node = SegmentNode(abort_startup=request.is_set)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not request:
            executor.spin_once(timeout_sec=_SPIN_PERIOD_S)
    except StartupAborted:
        pass
    except PvdError as exc:  # a user error: one line (the logger names the node); anything else is a bug
        logger.fatal(str(exc))
        return 1
    except ExternalShutdownException:  # someone else shut the context down: also a clean exit
        pass
    finally:
        with shutdown_watchdog(_SHUTDOWN_WATCHDOG_S):
            if request:
                names = ", ".join(signal.Signals(s).name for s in request.received)
                logger.info(f"shutting down ({names})")
            if executor is not None:
                executor.shutdown()
            if node is not None:
                node.destroy_node(join_timeout_s=_EXIT_JOIN_TIMEOUT_S)
            rclpy.try_shutdown()
    return 0


@contextlib.contextmanager
def shutdown_watchdog(seconds: float) -> Iterator[None]:
    """Within the block, a process that is still there after ``seconds`` prints every thread's
    stack to stderr and exits 1 (faulthandler, C level: it fires even with the GIL held)."""
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def _exit_without_native_teardown(code: int) -> None:
    """Leave the process once the node, executor and context are shut down explicitly.

    A clean Ctrl-C was seen ending in SIGSEGV once in a few CI runs (not reproducible in 30
    tries): after ``main`` has released everything it owns, only interpreter finalization is
    left, where Fast DDS, torch and spconv destroy their threads and singletons in no fixed
    order. Exiting here skips that step; nothing of the node's is left to flush but stdio.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def console_main() -> None:
    """Entry point of the ``segment_node`` console script."""
    from pvd_core.device import prefer_passive_openmp_wait

    prefer_passive_openmp_wait()  # before torch loads: degrade gracefully when other processes load the CPU
    try:
        code = main()
    except BaseException:  # a bug: say where, then leave the same way (never through interpreter teardown)
        traceback.print_exc()
        code = 1
    _exit_without_native_teardown(code)


if __name__ == "__main__":
    console_main()
