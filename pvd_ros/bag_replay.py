"""`pvd_bag replay`: `ros2 bag play` into a live segment node, scripted and scored.

The bag's clouds are published through real rclpy at the bag's own timing (times
``rate``) with the sensor-data QoS the node subscribes with (best effort, keep last 1),
so nothing queues anywhere: when the node is busy, the newer scan replaces the older
one and the older one is *dropped*. Answers are matched to inputs by header stamp (the
node copies the input header), which gives per-frame latency

    latency = receive time of the answer - wall time just before publishing the input,

and ``dropped = published - answered``. The mIoU is computed over the answered frames
only, against the bag's own ``label`` field. All clocks are this process's monotonic
clock, so the figures are independent of the bag's stamps.

The node runs either in this process (``node="inprocess"``: a SegmentNode on its own
rclpy context, spun in a background thread; cheap to start, shares the GIL with the
player) or as a child process (``node="process"``: ``python -m pvd_ros.segment_node``,
what a robot runs; the player and the node then compete only for CPU). Each replay uses
its own rclpy context and the given ROS domain id; everything is shut down on exit.

The bag is read and converted to rclpy messages before the clock starts (so the player's
own decoding does not eat into the node's CPU during the run); memory is about one copy
of the bag's clouds.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
from tqdm import tqdm

from pvd_core.errors import MissingFileError, PvdError, UsageError
from pvd_core.point_rule import PointRule
from pvd_ros import bag_io
from pvd_ros.bag_eval import latency_summary
from pvd_ros.dds_settings import node_environment
from pvd_ros.spinning import BackgroundSpinner

PathLike = Union[str, Path]
NODE_MODES = ("inprocess", "process")
NODE_NAME = "segment_node"
STARTUP_REPORT_S = 5.0  # while start-up waits, one line on stderr this often says what is seen
RESUBSCRIBE_S = 5.0  # a discovered latched publisher whose sample has not come: re-subscribe this often


class ReplayError(PvdError, RuntimeError):
    """The replay cannot run (node failed to start, topics never matched); the message says why."""


@dataclass
class _Frame:
    timestamp_ns: int  # bag receive time: the replay schedule
    stamp_key: tuple[int, int]
    msg: Any  # rclpy PointCloud2
    gt: Optional[np.ndarray]  # (N,) uint8 class index, 0 where unscored


def _stamp_key(header: Any) -> tuple[int, int]:
    return int(header.stamp.sec), int(header.stamp.nanosec)


def load_frames(bag: Path, topic: str, label_map: Any, max_frames: Optional[int],
                progress: bool, point_rule: PointRule = PointRule()) -> list[_Frame]:
    """Read the bag's clouds as rclpy messages plus their mapped ground truth.

    The ground truth is 0 (not scored) where ``point_rule`` (the node's) keeps a point from the network.
    """
    from pvd_ros.cloud_codec import copy_into_message, decode_points

    frames: list[_Frame] = []
    seen: dict[tuple[int, int], int] = {}
    with bag_io.CloudBagReader(bag, topic) as reader:
        total = len(reader) if max_frames is None else min(len(reader), max_frames)
        for cloud in tqdm(reader, total=total, desc=f"load {bag.name}", unit="frame", disable=not progress):
            if len(frames) >= total:
                break
            key = _stamp_key(cloud.msg.header)
            if key in seen:
                raise bag_io.BagError(
                    f"{bag}: messages {seen[key]} and {cloud.index} on {topic!r} have the same header stamp "
                    f"{key[0]}.{key[1]:09d}; replay matches answers to inputs by stamp, so stamps must be unique")
            seen[key] = cloud.index
            gt = None
            if bag_io.has_label_field(cloud.msg):
                gt = bag_io.ground_truth(cloud.msg, label_map, source=f"{bag} {topic} message {cloud.index}")
                gt[~point_rule.mask(decode_points(cloud.msg).points)] = 0  # the node labels them 0
            frames.append(_Frame(cloud.timestamp_ns, key, copy_into_message(cloud.msg), gt))
    if not frames:
        raise bag_io.BagError(f"{bag}: topic {topic!r} has no messages")
    return frames


class _ChildNode:
    """segment_node as a child process, with its log kept for error messages."""

    def __init__(self, checkpoint: Path, device: str, domain_id: int, params_file: Optional[Path],
                 extra_params: dict[str, Any], env: dict[str, str]) -> None:
        import yaml

        self._tmp = tempfile.TemporaryDirectory(prefix="pvd_bag_replay_")
        overrides = Path(self._tmp.name) / "overrides.yaml"
        params = {"checkpoint": str(checkpoint), "device": device, **extra_params}
        overrides.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
        self.log_path = Path(self._tmp.name) / "segment_node.log"
        cmd = [sys.executable, "-m", "pvd_ros.segment_node", "--ros-args", "-r", f"__node:={NODE_NAME}"]
        if params_file is not None:
            cmd += ["--params-file", str(params_file)]
        cmd += ["--params-file", str(overrides)]
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED="1", **env)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise ReplayError(f"segment_node child process exited with code {code} before the replay ended; "
                              f"its log ends with:\n{self.log_tail()}")

    def log_tail(self, n_chars: int = 3000) -> str:
        self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT: the node's main() shuts down cleanly
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        self._tmp.cleanup()


def replay_bag(
    bag: PathLike,
    checkpoint: PathLike,
    rate: float = 1.0,
    topic: str = bag_io.DEFAULT_TOPIC,
    record: Optional[PathLike] = None,
    record_storage: str = "mcap",
    node: str = "inprocess",
    device: str = "auto",
    domain_id: Optional[int] = None,
    params_file: Optional[PathLike] = None,
    node_params: Optional[dict[str, Any]] = None,
    drain_timeout_s: float = 30.0,
    startup_timeout_s: float = 180.0,
    max_frames: Optional[int] = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Replay ``topic`` of ``bag`` into a segment node running ``checkpoint``; returns the report.

    ``rate`` scales the bag's timing (2.0 = twice as fast). ``record``: write the node's
    labelled clouds to this new bag (receive time = input's bag time + measured latency).
    ``node_params``: extra node parameters (e.g. {"max_points": 50000}).
    ``drain_timeout_s``: after the last publish, the longest wait for the last answers.
    """
    from pvd_core.checkpoint import load_checkpoint

    bag, checkpoint = Path(bag), Path(checkpoint)
    if rate <= 0:
        raise UsageError(f"--rate must be > 0, got {rate}")
    if node not in NODE_MODES:
        raise UsageError(f"node must be one of {NODE_MODES}, got {node!r}")
    if not checkpoint.is_file():
        raise MissingFileError(f"{checkpoint}: checkpoint not found")
    if params_file is not None and not Path(params_file).is_file():
        raise MissingFileError(f"{params_file}: node parameter file not found")
    if record is not None and Path(record).exists():
        raise bag_io.BagError(f"{record}: --record bag already exists; remove it or choose another path")
    if domain_id is None:
        domain_id = int(os.environ.get("ROS_DOMAIN_ID", "0") or 0)
    extra = dict(node_params or {})
    extra.setdefault("publish_legend", False)

    label_map = _checkpoint_label_map(checkpoint, load_checkpoint)
    # The node's point rule: its range parameters as given here, else the defaults (a params_file's are not read).
    rule = PointRule(**{k: float(extra[k]) for k in ("min_range", "max_range") if k in extra})
    frames = load_frames(bag, topic, label_map, max_frames, progress, rule)

    graph = _ReplayGraph(node, checkpoint, device, domain_id, Path(params_file) if params_file else None, extra,
                         frames, record, record_storage)
    with graph:
        graph.connect(startup_timeout_s)
        start, lateness = _publish_on_schedule(graph.player, frames, rate, graph.child, progress)
        _drain(graph.player, len(frames), drain_timeout_s, graph.child)
        wall_s = time.monotonic() - start
        graph.collect_node_figures()
    return _report(graph, bag, topic, rate, label_map, lateness, wall_s)


def _report(graph: "_ReplayGraph", bag: Path, topic: str, rate: float, label_map: Any, lateness: list[float],
            wall_s: float) -> dict[str, Any]:
    """The replay's report: counts, latency, the node's own figures, the DDS settings, the scores."""
    player, frames = graph.player, graph.frames
    with player.lock:
        answered = dict(player.answers)
    report: dict[str, Any] = {
        "bag": str(bag),
        "topic": topic,
        "checkpoint": str(graph.checkpoint),
        "node": graph.mode,
        "device": graph.device_used or graph.device,
        "rate": rate,
        "input_hz": _input_hz(frames, rate),
        "frames": len(frames),
        "published": len(frames),
        "answered": len(answered),
        "dropped": len(frames) - len(answered),
        "drop_rate": round((len(frames) - len(answered)) / len(frames), 4),
        "latency_ms": latency_summary([answered[i][0] * 1e3 for i in sorted(answered)]),
        "publish_lateness_ms": latency_summary([x * 1e3 for x in lateness]),
        "unmatched_answers": player.unmatched,
        "probe_answers": len(player.probe_answers),
        "answers_received": player.received_total,
        "bad_answers": player.bad_answers[:10],
        "wall_s": round(wall_s, 3),
        "probe_round_trip_ms": round(graph.probe_rtt * 1e3, 3),
        "probes_sent": graph.probes_sent,
        "node_stats": graph.node_stats,
        "node_mean_ms": graph.node_mean_ms,
        "domain_id": graph.domain_id,
        "dds_env": graph.transport_env,
        "labelled": any(f.gt is not None for f in frames),
    }
    if graph.record is not None:
        report["record"] = {"bag": str(graph.record), "topic": graph.output_topic,
                            "messages": graph.writer.count if graph.writer else 0}
    report.update(_score(frames, answered, label_map, topic))
    return report


def _checkpoint_label_map(checkpoint: Path, load_checkpoint: Any) -> Any:
    """The label map stored in the checkpoint (CheckpointError names the file if it is not one)."""
    return load_checkpoint(str(checkpoint)).label_map


class _Player:
    """The replay's own node: publishes the bag's clouds, receives the segment node's answers and diagnostics.

    Answers are matched to inputs by header stamp. Every counter is an attribute, read and
    written under ``lock`` (the callbacks run on the executor's thread, publishing on the caller's).
    """

    def __init__(self, node: Any, frames: Sequence[_Frame], input_topic: str, output_topic: str,
                 writer: Optional[bag_io.CloudBagWriter]) -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import PointCloud2

        self.node = node
        self.frames = frames
        self.writer = writer
        self.lock = threading.Lock()
        self.published: dict[tuple[int, int], tuple[float, int]] = {}  # stamp -> (publish monotonic, frame index)
        self.answers: dict[int, tuple[float, Optional[np.ndarray]]] = {}  # frame index -> (latency s, labels)
        self.unmatched = 0  # answers to no published frame, or a second answer to one
        self.received_total = 0  # every answer, probes included
        self.bad_answers: list[str] = []
        self.last_event = time.monotonic()  # the last publish or answer
        self.diag_values: dict[str, str] = {}  # the node's latest /diagnostics key-values
        self.probe_answers: dict[tuple[int, int], float] = {}  # probe stamp -> receive monotonic
        bag_keys = {f.stamp_key for f in frames}
        self.probe_keys = {(0, k) for k in range(1, 1000) if (0, k) not in bag_keys}  # never a bag frame's stamp
        sensor_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)
        answer_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                                reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        self.publisher = node.create_publisher(PointCloud2, input_topic, sensor_qos)
        node.create_subscription(PointCloud2, output_topic, self.on_answer, answer_qos)
        node.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 10)

    def publish(self, index: int, now: float) -> None:
        """Publish frame ``index``, noting ``now`` as its send time."""
        frame = self.frames[index]
        with self.lock:
            self.published[frame.stamp_key] = (now, index)
            self.last_event = now
        self.publisher.publish(frame.msg)

    def answered_count(self) -> int:
        with self.lock:
            return len(self.answers)

    def on_answer(self, msg: Any) -> None:
        from rclpy.serialization import serialize_message

        from pvd_ros.cloud_codec import CloudError

        received = time.monotonic()
        key = _stamp_key(msg.header)
        with self.lock:
            self.received_total += 1
            if key in self.probe_keys:
                self.probe_answers[key] = received
                return
            entry = self.published.get(key)
            self.last_event = received
            if entry is None or entry[1] in self.answers:
                self.unmatched += 1
                return
        sent, index = entry
        frame = self.frames[index]
        labels = None
        n_expected = int(frame.msg.height) * int(frame.msg.width)
        try:
            if int(msg.height) * int(msg.width) != n_expected:
                raise CloudError("layout", f"answer has {int(msg.height) * int(msg.width)} points, "
                                           f"input had {n_expected}")
            if frame.gt is not None:
                labels = np.array(bag_io.read_label_field(msg), dtype=np.int64)
        except CloudError as exc:
            with self.lock:
                self.bad_answers.append(f"frame {index}: {exc}")
            return
        with self.lock:
            self.answers[index] = (received - sent, labels)
        if self.writer is not None:
            self.writer.write_serialized(serialize_message(msg), frame.timestamp_ns + int((received - sent) * 1e9))

    def on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.startswith(f"{NODE_NAME}:"):
                with self.lock:
                    self.diag_values.update({kv.key: kv.value for kv in status.values})


class _ReplayGraph:
    """The ROS side of one replay: its own rclpy context and executor, the segment node (in this
    process or a child), the player, the spinning thread and the recording; ``with`` starts and
    shuts down all of them. After ``collect_node_figures`` it holds the node's own figures."""

    def __init__(self, mode: str, checkpoint: Path, device: str, domain_id: int, params_file: Optional[Path],
                 extra: dict[str, Any], frames: Sequence[_Frame], record: Optional[PathLike],
                 record_storage: str) -> None:
        self.mode, self.checkpoint, self.device, self.domain_id = mode, checkpoint, device, domain_id
        self.params_file, self.extra, self.frames = params_file, extra, frames
        self.record, self.record_storage = record, record_storage
        # The child gets what launch gives the node; this process keeps its own DDS settings, as a
        # LiDAR driver does (the shipped profile is measured against default peers: docs/ros.md).
        self.transport_env = node_environment() if mode == "process" else {}
        self.context: Any = None
        self.executor: Any = None
        self.seg_node: Any = None
        self.child: Optional[_ChildNode] = None
        self.player: Any = None  # _Player
        self.spinner: Optional[BackgroundSpinner] = None
        self.writer: Optional[bag_io.CloudBagWriter] = None
        self.input_topic = self.output_topic = ""
        self.probe_rtt, self.probes_sent = 0.0, 0
        self.node_stats: dict[str, Any] = {}
        self.node_mean_ms: dict[str, float] = {}
        self.device_used: Optional[str] = None

    def __enter__(self) -> "_ReplayGraph":
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _start(self) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self.context = Context()
        rclpy.init(context=self.context, domain_id=self.domain_id)
        self.executor = SingleThreadedExecutor(context=self.context)
        if self.mode == "inprocess":
            self._start_inprocess_node()
        else:
            self.child = _ChildNode(self.checkpoint, self.device, self.domain_id, self.params_file, self.extra,
                                    self.transport_env)
            self.input_topic, self.output_topic = f"/{NODE_NAME}/input/points", f"/{NODE_NAME}/output/points"
        node = Node("pvd_bag_replay", context=self.context)
        if self.record is not None:
            self.writer = bag_io.CloudBagWriter(self.record, topic=self.output_topic,
                                                storage=self.record_storage).__enter__()
        self.player = _Player(node, self.frames, self.input_topic, self.output_topic, self.writer)
        self.executor.add_node(node)
        self.spinner = BackgroundSpinner(self.executor, name="pvd_bag_replay_spin")

    def _start_inprocess_node(self) -> None:
        from rclpy.parameter import Parameter

        from pvd_ros.segment_node import SegmentNode

        overrides = [Parameter("checkpoint", value=str(self.checkpoint)), Parameter("device", value=self.device)]
        overrides += [Parameter(k, value=v) for k, v in self.extra.items()]
        cli_args = ["--ros-args", "--params-file", str(self.params_file)] if self.params_file is not None else None
        self.seg_node = SegmentNode(context=self.context, parameter_overrides=overrides, cli_args=cli_args)
        self.input_topic, self.output_topic = self.seg_node.input_topic, self.seg_node.output_topic
        self.executor.add_node(self.seg_node)

    def connect(self, startup_timeout_s: float) -> None:
        """Wait until the node is ready, the two have discovered each other and a probe cloud made the round trip."""
        node, child = self.player.node, self.child
        if self.seg_node is None:
            wait_for_ready(node, f"/{NODE_NAME}/ready", startup_timeout_s, child)
        topics = [self.input_topic, self.output_topic]
        _wait(lambda: self.player.publisher.get_subscription_count() > 0 and
              node.count_publishers(self.output_topic) > 0, 30.0, child,
              f"the player and segment_node did not discover each other on {topics[0]} / {topics[1]} "
              f"within 30 s (ROS domain {self.domain_id})", lambda: describe_graph(node, topics))
        # Round trip before the clock starts: discovery is asymmetric (our publisher may see the
        # node's subscription before the node accepts our samples, and the node skips clouds
        # until its own publisher sees our subscription), so a probe cloud is re-sent until one
        # answer comes back. Probe stamps never collide with the bag's; probe answers are not scored.
        self.probe_rtt, self.probes_sent = _probe(self.player, self.frames[0].msg, startup_timeout_s, child)

    def collect_node_figures(self) -> None:
        """The node's counters and mean stage times: its own (in-process) or its last /diagnostics (child)."""
        if self.seg_node is not None:
            self.node_stats = self.seg_node.stats()
            self.device_used = str(self.seg_node.segmenter.device)
            recent = self.seg_node.recent_frames()[-20:]  # the node's own per-frame times (decode to encode)
            self.node_mean_ms = {stage: round(float(np.mean([f.timings[stage] for f in recent])), 3)
                                 for stage in (recent[0].timings if recent else {})}
            return
        with self.player.lock:
            diag = dict(self.player.diag_values)
        self.node_stats = {k: _maybe_int(v) for k, v in diag.items() if not k.startswith("mean_") and k != "checkpoint"}
        self.node_mean_ms = {k[len("mean_"):-len("_ms")]: float(v) for k, v in diag.items()
                             if k.startswith("mean_") and k.endswith("_ms")}

    def close(self) -> None:
        if self.spinner is not None:
            self.spinner.close()
        elif self.executor is not None:
            self.executor.shutdown(timeout_sec=5.0)
        if self.seg_node is not None:
            self.seg_node.destroy_node()
        if self.player is not None:
            self.player.node.destroy_node()
        if self.context is not None:
            self.context.try_shutdown()
        if self.child is not None:
            self.child.stop()
        if self.writer is not None:
            self.writer.__exit__(None, None, None)


def _publish_on_schedule(player: _Player, frames: Sequence[_Frame], rate: float, child: Optional[_ChildNode],
                         progress: bool) -> tuple[float, list[float]]:
    """Publish every frame at its bag time divided by ``rate``, from now on.

    Returns the schedule's start (monotonic s) and each publish's lateness behind its schedule (s).
    """
    t0_bag = frames[0].timestamp_ns
    start = time.monotonic() + 0.05
    lateness: list[float] = []
    bar = tqdm(total=len(frames), desc=f"replay x{rate:g}", unit="frame", disable=not progress)
    for index, frame in enumerate(frames):
        target = start + (frame.timestamp_ns - t0_bag) / 1e9 / rate
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if child is not None and index % 10 == 0:
            child.check_alive()
        now = time.monotonic()
        lateness.append(now - target)
        player.publish(index, now)
        bar.update(1)
        bar.set_postfix(answered=player.answered_count())
    bar.close()
    return start, lateness


def _drain(player: _Player, n_frames: int, drain_timeout_s: float, child: Optional[_ChildNode]) -> None:
    """Bounded wait for the last answers after the last publish.

    Ends when every frame is answered, when nothing has arrived for three times the worst
    latency so far (at least 2 s, at most ``drain_timeout_s``), or ``drain_timeout_s`` after the last publish.
    """
    end_publish = time.monotonic()
    while True:
        with player.lock:
            done = len(player.answers) == n_frames
            worst = max((a[0] for a in player.answers.values()), default=None)
            idle = time.monotonic() - player.last_event
        if done:
            break
        window = drain_timeout_s if worst is None else min(drain_timeout_s, max(2.0, 3.0 * worst))
        if idle > window or time.monotonic() - end_publish > drain_timeout_s:
            break
        if child is not None:
            child.check_alive()
        time.sleep(0.02)


def _score(frames: Sequence[_Frame], answered: dict[int, tuple[float, Optional[np.ndarray]]], label_map: Any,
           topic: str) -> dict[str, Any]:
    """The IoU fields of the report over the answered labelled frames, or ``miou: None`` and a note why not."""
    from pvd_core.metrics import ConfusionMatrix, iou_report

    if not any(f.gt is not None for f in frames):
        return {"miou": None, "iou": None, "note": f"no cloud on {topic} has a 'label' field: latency only, no mIoU"}
    confusion = ConfusionMatrix(label_map.num_classes)
    for index, (_, labels) in answered.items():
        gt = frames[index].gt
        if gt is not None and labels is not None:
            confusion.update(labels, gt)
    if not confusion.points:
        return {"miou": None, "iou": None, "note": "no labelled frame was answered: no mIoU"}
    return iou_report(confusion.matrix, label_map.class_names)


def _probe(player: _Player, template: Any, timeout_s: float, child: Optional[_ChildNode]) -> tuple[float, int]:
    """Re-send a probe cloud (backing off) until one is answered, then let the node go idle.

    Returns the probe's round-trip time in seconds and how many probes were sent. The node
    keeps only the newest cloud, so after the first answer the last probe sent is the last one it will process: wait
    for its answer (it may also have been dropped, hence the bounded wait) so that the
    timed run starts with an idle node.
    """
    from std_msgs.msg import Header

    from pvd_ros.cloud_codec import copy_into_message

    deadline = time.monotonic() + timeout_s
    publisher, answered, lock = player.publisher, player.probe_answers, player.lock
    probe = copy_into_message(template)
    probe.header = Header(frame_id=template.header.frame_id)  # copy_into_message shares the template's header
    sent: dict[tuple[int, int], float] = {}
    interval = 1.0
    order = sorted(player.probe_keys)
    rtt: Optional[float] = None
    next_report = time.monotonic() + STARTUP_REPORT_S
    while rtt is None:
        if len(sent) == len(order):
            raise ReplayError(f"segment_node answered none of {len(sent)} probe clouds")
        key = order[len(sent)]
        probe.header.stamp.sec, probe.header.stamp.nanosec = key
        sent[key] = time.monotonic()
        publisher.publish(probe)
        resend = time.monotonic() + interval
        interval = min(2.0 * interval, 8.0)
        while rtt is None and time.monotonic() < resend:
            with lock:
                got = [(k, t) for k, t in answered.items() if k in sent]
            if got:
                k, t = min(got, key=lambda kt: kt[1])
                rtt = t - sent[k]
                break
            if child is not None:
                child.check_alive()
            if time.monotonic() > deadline:
                tail = f"\nsegment_node log:\n{child.log_tail()}" if child is not None else ""
                raise ReplayError(f"segment_node answered none of {len(sent)} probe clouds within {timeout_s:.0f} s "
                                  f"(publishing {publisher.topic_name}){tail}")
            if time.monotonic() >= next_report:
                _say(f"no answer yet to {len(sent)} probe cloud(s) on {publisher.topic_name} "
                     f"({publisher.get_subscription_count()} subscription(s) matched){_child_last_line(child)}")
                next_report = time.monotonic() + STARTUP_REPORT_S
            time.sleep(0.02)
    last = key
    quiet_until = time.monotonic() + 3.0 * rtt + 1.0
    while time.monotonic() < quiet_until:
        with lock:
            if last in answered:
                break
        time.sleep(0.02)
    return rtt, len(sent)


def _say(line: str) -> None:
    print(f"pvd_bag replay: {line}", file=sys.stderr, flush=True)


def describe_graph(node: Any, topics: Sequence[str]) -> str:
    """One line of what ``node``'s participant has discovered: the other nodes, every topic, and the
    publishers (with reliability and durability) and subscriptions of ``topics``."""
    me = node.get_fully_qualified_name()
    nodes = sorted(f"{ns.rstrip('/')}/{name}" for name, ns in node.get_node_names_and_namespaces())
    nodes = [n for n in nodes if n != me]
    parts = [f"nodes {nodes or 'none'}", f"topics {sorted(t for t, _ in node.get_topic_names_and_types()) or 'none'}"]
    for topic in topics:
        pubs = node.get_publishers_info_by_topic(topic)
        qos = ", ".join(f"{p.node_namespace.rstrip('/')}/{p.node_name} {p.qos_profile.reliability.name.lower()} "
                        f"{p.qos_profile.durability.name.lower()}" for p in pubs)
        parts.append(f"{topic}: {len(pubs)} publisher(s){f' ({qos})' if pubs else ''}, "
                     f"{node.count_subscribers(topic)} subscription(s)")
    return "; ".join(parts)


def _child_last_line(child: Optional[_ChildNode]) -> str:
    if child is None:
        return ""
    lines = child.log_tail(500).strip().splitlines()
    return f"; segment_node's last log line: {lines[-1].strip()}" if lines else "; segment_node has logged nothing"


def wait_for_ready(player: Any, topic: str, timeout_s: float, child: Optional[_ChildNode] = None, *,
                   report_every_s: float = STARTUP_REPORT_S, resubscribe_after_s: float = RESUBSCRIBE_S,
                   say: Any = _say) -> int:
    """Wait for ``True`` on the node's latched ``topic``; returns how often the subscription was re-created.

    Never silent: every ``report_every_s`` one line (``say``) tells what this process has
    discovered (nodes, topics, the ready topic's publishers and their QoS) and the child's
    last log line. A latched sample that does not come although its publisher has been
    discovered (seen once in test_demo: the node had logged "ready") is asked for again
    every ``resubscribe_after_s`` by re-creating the subscription: a new reader is a new
    late joiner, to which the publisher sends its transient-local sample anew. Raises
    ReplayError with what was seen after ``timeout_s``; a child that exits ends the wait at once.
    """
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Bool

    ready = threading.Event()
    latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

    def subscribe() -> Any:
        return player.create_subscription(Bool, topic, lambda m: m.data and ready.set(), latched)

    subscription = subscribe()
    start = time.monotonic()
    next_report = start + report_every_s
    publisher_seen: Optional[float] = None
    resubscribed = 0
    while not ready.wait(0.05):
        now = time.monotonic()
        if child is not None:
            child.check_alive()
        if publisher_seen is None and player.count_publishers(topic) > 0:
            publisher_seen = now
        if publisher_seen is not None and now - publisher_seen >= resubscribe_after_s * (resubscribed + 1):
            player.destroy_subscription(subscription)
            subscription = subscribe()
            resubscribed += 1
            say(f"{topic} has a publisher (discovered {now - publisher_seen:.0f} s ago) but no sample came; "
                f"re-created the subscription (retry {resubscribed})")
        if now - start > timeout_s:
            tail = f"\nsegment_node log:\n{child.log_tail()}" if child is not None else ""
            raise ReplayError(f"segment_node did not report ready on {topic} within {timeout_s:.0f} s "
                              f"({resubscribed} re-subscriptions); this process sees {describe_graph(player, [topic])}"
                              f"{tail}")
        if now >= next_report:
            say(f"waiting {now - start:.0f} s for {topic}: this process sees {describe_graph(player, [topic])}"
                f"{_child_last_line(child)}")
            next_report = now + report_every_s
    return resubscribed


def _wait(condition: Any, timeout_s: float, child: Optional[_ChildNode], message: str,
          describe: Any = None) -> None:
    """Poll ``condition``; every STARTUP_REPORT_S say what ``describe()`` sees, and raise with it at the end."""
    start = time.monotonic()
    next_report = start + STARTUP_REPORT_S
    while not condition():
        if child is not None:
            child.check_alive()
        now = time.monotonic()
        if now - start > timeout_s:
            seen = f"; this process sees {describe()}" if describe is not None else ""
            tail = f"\nsegment_node log:\n{child.log_tail()}" if child is not None else ""
            raise ReplayError(message + seen + tail)
        if describe is not None and now >= next_report:
            _say(f"waiting {now - start:.0f} s: {describe()}{_child_last_line(child)}")
            next_report = now + STARTUP_REPORT_S
        time.sleep(0.05)


def _input_hz(frames: Sequence[_Frame], rate: float) -> Optional[float]:
    if len(frames) < 2:
        return None
    span = (frames[-1].timestamp_ns - frames[0].timestamp_ns) / 1e9
    return round((len(frames) - 1) / span * rate, 3) if span > 0 else None


def _maybe_int(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        return value


def print_report(report: dict[str, Any]) -> None:
    if report.get("table"):
        print(report["table"])
    lat = report["latency_ms"]
    print(f"replay x{report['rate']:g} ({report['input_hz']} Hz) of {report['frames']} frames, node {report['node']} "
          f"on {report['device']}: answered {report['answered']}, dropped {report['dropped']} "
          f"({100 * report['drop_rate']:.1f} %)")
    print(f"latency ms (answer received - input published): p50 {lat['p50']}  p95 {lat['p95']}  max {lat['max']}")
    if report.get("note"):
        print(f"note: {report['note']}")
    if report.get("record"):
        print(f"recorded {report['record']['messages']} labelled clouds to {report['record']['bag']}")
