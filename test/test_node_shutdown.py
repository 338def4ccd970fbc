"""segment_node leaves cleanly on SIGINT/SIGTERM, as a terminal and ``ros2 launch`` deliver them.

Ctrl-C in a terminal sends SIGINT to the whole process group (launch and the node); launch
then sends the node its own SIGINT (SIGTERM after 5 s). Each case here starts the node as
a real child process in its own session (``os.setsid``, i.e. ``start_new_session``), makes
it busy answering 10 Hz clouds published by this process with real rclpy (or leaves it
idle, or signals it while it is still loading), sends a signal to its process group, then
more signals to the node itself after short delays, and asserts exit status 0 with no
traceback, abort or fatal-error text in its log. Without the fix a busy node failed such
an emulation in about half the runs (issue 12), so 20+ busy emulations cannot pass by luck.
One rare hang inside rclpy/Fast DDS entity destruction (docs/ros.md, shutdown) is reported as a
warning, with native stacks where gdb is installed, unless it happens to more than 2 of 30.

Starting 30 fresh interpreters that each import torch would take minutes on the two shared
cores, so most cases fork the node from a ``multiprocessing`` forkserver that has already
imported torch, spconv and rclpy (and started nothing: no thread, no rclpy context). Each
case is still a new process that runs the console script's code from its first line
(``console_main``: signal handlers, ``rclpy.init``, the node, the shutdown, the exit); what
it skips is importing modules. A few cases exec ``python -m pvd_ros.segment_node`` exactly
as ``ros2 run`` does, the full path.
"""
from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (pip extra 'ros' or a ROS 2 distribution)")
pytest.importorskip("spconv", reason="spconv is not installed")

import rclpy  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from conftest import save_tiny_checkpoint  # noqa: E402
from pvd_ros.cloud_codec import make_cloud  # noqa: E402
from pvd_ros.dds_settings import node_environment, private_domain_id  # noqa: E402
from pvd_ros.segment_node import _SHUTDOWN_WATCHDOG_S  # noqa: E402
from pvd_ros.spinning import BackgroundSpinner  # noqa: E402

pytestmark = [pytest.mark.dds, pytest.mark.subprocess]  # slow tier (markers in setup.cfg)

REPO = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO / "config" / "segment.yaml"
# The nodes run with the participant profile that launch/segment.launch.py gives them
# (pvd_ros.dds_settings.node_environment, as pvd_bag replay uses); the driver (this process) keeps
# Fast DDS's default transports, as a LiDAR driver does. Without the profile a node got no cloud for
# 60 s in one CI run; the likely cause (not reproduced): 128 kB best-effort samples through the
# driver's 512 KiB default shared-memory segment, for up to a dozen nodes at 10 Hz.
INT, TERM = signal.SIGINT, signal.SIGTERM
# What an unclean exit leaves in the log (Python, libstdc++, glibc, faulthandler).
UNCLEAN = re.compile(r"Traceback|KeyboardInterrupt|terminate called|Fatal Python error|Segmentation fault"
                     r"|Aborted|core dumped|Exception in thread")
PRELOAD = ["numpy", "torch", "spconv.pytorch", "rclpy", "sensor_msgs.msg", "pvd_core.segmenter",
           "pvd_core.checkpoint", "pvd_ros.segment_node"]
CLOUD_POINTS = 8_000  # 128 kB in, 224 kB out: decode, voxelize, forward and encode take ~10 ms
BATCH = 5  # forked nodes signalled in the same round (their start-ups overlap)
ANSWERS = 2  # answers a busy node has sent before it is signalled
# A node still there this long after its first signal (normal: < 1 s) gets gdb, before its watchdog fires.
STUCK_S = _SHUTDOWN_WATCHDOG_S - 2.0
# A watchdog dump whose main thread is inside rclpy destroying a DDS entity (Fast DDS deleting a
# DataWriter/DataReader; no Python thread of the node's is left then): a hang below our code, seen
# in 1 of 30 emulations of one CI run (2026-12-03) and in none of ~740 stressed ones here (docs/ros.md).
DDS_TEARDOWN_HANG = re.compile(r"Timeout \(0:00:\d\d\)!\nThread 0x[0-9a-f]+ \(most recent call first\):\n"
                               r"  File \"[^\"]*/rclpy/(publisher|subscription|node)\.py\", line \d+ in destroy")
MAX_DDS_TEARDOWN_HANGS = 2  # of 30: a systematic hang fails; a rare third-party one is reported as a warning


@dataclass
class Case:
    """One emulation: signals[0] goes to the process group, the rest to the node, ``gaps`` s apart."""

    name: str
    signals: tuple[int, ...]
    gaps: tuple[float, ...]
    state: str = "busy"  # busy (answering 10 Hz clouds) | idle (ready, nothing to do) | loading
    exec_script: bool = False  # exec `python -m pvd_ros.segment_node` instead of forking

    @property
    def warmup_points(self) -> int:
        return 3_000_000 if self.state == "loading" else 200  # a warm-up of seconds: still loading when signalled


def _busy_cases() -> list[Case]:
    rng = np.random.default_rng(12)
    cases = []
    for i in range(16):  # the launch pattern, with the second signal anywhere in the shutdown
        cases.append(Case(f"busy_int_int_{i}", (INT, INT), (float(rng.choice([0.0, 0.02, 0.05, 0.1, 0.2, 0.3])),)))
    for i in range(3):
        cases.append(Case(f"busy_int_int_int_{i}", (INT, INT, INT), (0.05 * i, 0.05)))
    cases += [Case("busy_int_term", (INT, TERM), (0.2,)), Case("busy_term_term", (TERM, TERM), (0.1,)),
              Case("busy_term", (TERM,), ()), Case("busy_int", (INT,), ()),
              Case("busy_int_int_int_int", (INT, INT, INT, INT), (0.0, 0.01, 0.2))]
    return cases


CASES = _busy_cases() + [
    Case("idle_int_int", (INT, INT), (0.2,), state="idle"),
    Case("idle_term", (TERM,), (), state="idle"),
    Case("loading_int_int", (INT, INT), (0.2,), state="loading"),
    Case("exec_busy_int_int", (INT, INT), (0.2,), exec_script=True),
    Case("exec_busy_int_term", (INT, TERM), (0.05,), exec_script=True),
    Case("exec_idle_term_int", (TERM, INT), (0.2,), state="idle", exec_script=True),
]


def _forked_node(argv: list[str], env: dict[str, str], log_path: str) -> None:
    """Body of a forked node process: its own session and log, then the console script's entry point."""
    os.setsid()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(env)
    sys.argv = ["segment_node", *argv]
    from pvd_ros.segment_node import console_main

    console_main()  # never returns: exits with the node's own status


class NodeProcess:
    """A segment_node child process (forked from the forkserver, or exec'd) and its log."""

    def __init__(self, case: Case, name: str, checkpoint: Path, env: dict[str, str], log_dir: Path,
                 forkserver: Any) -> None:
        self.case, self.name = case, name
        self.log_path = log_dir / f"{name}.log"
        argv = ["--ros-args", "--params-file", str(PARAMS_FILE), "-r", f"__node:={name}",
                "-p", f"checkpoint:={checkpoint}", "-p", "device:=cpu", "-p", f"warmup_points:={case.warmup_points}",
                "-p", "num_threads:=1", "-p", "publish_legend:=false"]
        self._proc: Any
        if case.exec_script:
            self._log = open(self.log_path, "wb")
            self._proc = subprocess.Popen([sys.executable, "-m", "pvd_ros.segment_node", *argv], env=env,
                                          stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        else:
            self._proc = forkserver.Process(target=_forked_node, args=(argv, env, str(self.log_path)), daemon=False)
            self._proc.start()
        self.pid = self._proc.pid
        self.started = time.monotonic()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def exit_code(self, timeout: float) -> Optional[int]:
        if isinstance(self._proc, subprocess.Popen):
            try:
                code = self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return None
            self._log.close()
            return code
        self._proc.join(timeout)
        return self._proc.exitcode

    def kill(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.exit_code(10.0)


class Driver:
    """This process's side: publishes a cloud to every busy node at 10 Hz and takes their answers."""

    def __init__(self, context: Context) -> None:
        self.node = Node("shutdown_test_driver", context=context)
        self.lock = threading.Lock()
        self.publishers: dict[str, Any] = {}
        self.subscriptions: dict[str, Any] = {}
        self.answers: dict[str, int] = {}
        self.counters: dict[str, dict[str, str]] = {}  # each node's latest /diagnostics values
        self.cloud_points = _cloud()
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, 50)
        self.stamp = 0
        self.node.create_timer(0.1, self._tick)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.spinner = BackgroundSpinner(self.executor, name="shutdown_test_driver_spin")

    def feed(self, name: str) -> None:
        answer_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
        with self.lock:
            self.answers[name] = 0
            self.publishers[name] = self.node.create_publisher(PointCloud2, f"/{name}/input/points",
                                                               qos_profile_sensor_data)
        self.subscriptions[name] = self.node.create_subscription(
            PointCloud2, f"/{name}/output/points", lambda _msg: self._answered(name), answer_qos)

    def _answered(self, name: str) -> None:
        with self.lock:
            self.answers[name] += 1

    def answered(self, name: str) -> int:
        with self.lock:
            return self.answers.get(name, 0)

    def _diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            node = status.name.split(":", 1)[0]
            with self.lock:
                self.counters[node] = {kv.key: kv.value for kv in status.values}

    def matched(self, name: str) -> str:
        """Discovery as this side sees it and the node's own counters (its /diagnostics): tells a
        node never found from clouds lost on the way and from clouds skipped for want of a subscriber."""
        with self.lock:
            counters = self.counters.get(name)
        seen = ("no /diagnostics from the node" if counters is None else "the node counts " + ", ".join(
            f"{key} {counters.get(key, '?')}" for key in ("received", "processed", "skipped_stale",
                                                           "skipped_no_subscriber", "dropped_malformed")))
        return (f"driver's publisher matched {self.publishers[name].get_subscription_count()} subscription(s), "
                f"its answer subscription {self.subscriptions[name].get_publisher_count()} publisher(s), "
                f"{self.stamp} clouds sent; {seen}")

    def _tick(self) -> None:
        self.stamp += 1
        header = Header(frame_id="os_sensor")
        header.stamp.sec = self.stamp
        msg = make_cloud(header, self.cloud_points)
        with self.lock:
            publishers = list(self.publishers.values())
        for pub in publishers:
            pub.publish(msg)

    def close(self) -> None:
        self.spinner.close()
        self.node.destroy_node()


def _cloud() -> np.ndarray:
    rng = np.random.default_rng(0)
    rho = rng.uniform(2.0, 45.0, CLOUD_POINTS)
    phi = rng.uniform(-np.pi, np.pi, CLOUD_POINTS)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), rng.uniform(-3.0, 1.5, CLOUD_POINTS),
                     rng.uniform(0, 1, CLOUD_POINTS)], 1).astype(np.float32)


@pytest.fixture(scope="module")
def ros_env():
    with private_domain_id() as domain:
        yield {"ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
               "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def driver(ros_env: dict[str, str]):
    with pytest.MonkeyPatch.context() as patch:
        for key, value in ros_env.items():
            patch.setenv(key, value)
        context = Context()
        rclpy.init(context=context)
        drv = Driver(context)
        yield drv
        drv.close()
        rclpy.try_shutdown(context=context)


@pytest.fixture(scope="module")
def forkserver():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _wait(predicate: Any, timeout: float, what: str, proc: NodeProcess, state: Any = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        code = proc.exit_code(0.0) if proc.case.exec_script else proc._proc.exitcode
        if code is not None:
            raise AssertionError(f"{proc.name} exited with {code} while waiting for {what}:\n{proc.log()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{proc.name}: timed out after {timeout} s waiting for {what} ({state()}):\n"
                                 f"{proc.log()[-3000:]}")
        time.sleep(0.02)


def _bring_up(procs: list[NodeProcess], driver: Driver) -> None:
    """Wait until each node is in its case's state (loading: signalled mid-warm-up; idle; busy)."""
    for proc in procs:
        if proc.case.state == "loading":
            _wait(lambda: "loading the model" in proc.log(), 120.0, "the start of model loading", proc)
            time.sleep(0.3)  # into the multi-second warm-up, with the constructor waiting for it
            assert "segment_node ready" not in proc.log(), f"{proc.name} was ready too early to test start-up"
        else:
            _wait(lambda: "segment_node ready" in proc.log(), 120.0, "ready", proc)
    for proc in procs:
        if proc.case.state == "busy":
            _wait(lambda: driver.answered(proc.name) >= ANSWERS, 60.0, "answers to 10 Hz clouds", proc,
                  lambda: driver.matched(proc.name))


def _shutdown_line_signals(log: str) -> list[str]:
    """The signals the node's "shutting down (...)" line names. Not in sending order: signals that
    arrive while the main thread is inside one spin have their Python handlers run by signal number
    (SIGINT before SIGTERM), as a run on a loaded machine showed for TERM, then INT 0.2 s later."""
    found = re.search(r"shutting down \(([A-Z, ]*)\)", log)
    return found.group(1).split(", ") if found else []


def _signal_and_judge(procs: list[NodeProcess]) -> list[str]:
    """Deliver every node's signals (schedules interleaved), then one line per unclean exit."""
    schedule = []  # (time offset, process, signal, to its process group?)
    for i, proc in enumerate(procs):
        t = 0.013 * i
        schedule.append((t, i, proc.case.signals[0], True))
        for gap, sig in zip(proc.case.gaps, proc.case.signals[1:]):
            t += gap
            schedule.append((t, i, sig, False))
    start = time.monotonic()
    for t, i, sig, group in sorted(schedule, key=lambda s: s[0]):
        time.sleep(max(0.0, start + t - time.monotonic()))
        try:
            if group:
                os.killpg(procs[i].pid, sig)
            else:
                os.kill(procs[i].pid, sig)
        except ProcessLookupError:
            pass  # it already left: a later signal of launch's would find nothing either
    failures = []
    for proc in procs:
        code = proc.exit_code(max(0.0, start + STUCK_S - time.monotonic()))
        stacks = ""
        if code is None:
            stacks = _native_stacks(proc.pid)  # before the node's own watchdog ends it
            code = proc.exit_code(60.0)
        log = proc.log()
        native = f"\n[native stacks (gdb) {STUCK_S} s after the signals]\n{stacks}" if stacks else ""
        if code is None:
            proc.kill()
            failures.append(f"{proc.name}: still running 60 s after its signals:\n{log[-3000:]}{native}")
        elif code != 0 or UNCLEAN.search(log):
            failures.append(f"{proc.name}: exit {code}:\n{log[-3000:]}{native}")
        elif signal.Signals(proc.case.signals[0]).name not in _shutdown_line_signals(log):
            # the node's own handler saw the signal (a default handler would have left no such line)
            failures.append(f"{proc.name}: exit 0 but its 'shutting down' line does not name "
                            f"{signal.Signals(proc.case.signals[0]).name}:\n{log[-2000:]}")
    return failures


def _native_stacks(pid: int) -> str:
    """Every native thread's stack of a stuck process (the faulthandler dump has Python frames
    only), restricted to the threads inside ROS or DDS code; empty where gdb is not installed."""
    if shutil.which("gdb") is None:
        return ""
    try:
        out = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "set print frame-arguments none",
                              "-ex", "thread apply all bt 30"],
                             capture_output=True, text=True, timeout=90).stdout
    except subprocess.TimeoutExpired:
        return "(gdb timed out)"
    threads = [t for t in re.split(r"\n(?=Thread \d+ )", out) if re.search(r"eprosima|rmw|rcl_|_rclpy", t)]
    threads.sort(key=lambda t: not t.startswith("Thread 1 "))  # the main thread first: gdb lists it last
    return "\n".join(threads)[:12000]


def _split_dds_teardown_hangs(failures: list[str]) -> tuple[list[str], list[str]]:
    """(hangs inside rclpy's destruction of a DDS entity, every other failure)."""
    hangs = [f for f in failures if DDS_TEARDOWN_HANG.search(f) and not UNCLEAN.search(f)]
    return hangs, [f for f in failures if f not in hangs]


def test_signals_while_busy_idle_or_loading_always_end_in_a_clean_exit(driver, forkserver, ros_env, tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    env = dict(os.environ, **ros_env)
    env.update(node_environment(env))
    assert sum(c.state == "busy" for c in CASES) >= 20
    failures: list[str] = []
    started: list[NodeProcess] = []

    def start(cases: list[Case]) -> list[NodeProcess]:
        procs = [NodeProcess(case, f"shutdown_{case.name}", checkpoint, env, tmp_path, forkserver) for case in cases]
        started.extend(procs)
        for proc in procs:
            if proc.case.state == "busy":
                driver.feed(proc.name)  # discovery overlaps the node's start-up
        return procs

    try:
        # The exec'd nodes import torch for seconds: start them first, signal them last.
        executed = start([c for c in CASES if c.exec_script])
        forked = [c for c in CASES if not c.exec_script and c.state != "loading"]
        batches = [forked[i:i + BATCH] for i in range(0, len(forked), BATCH)]
        current = start(batches[0])
        for k in range(len(batches)):
            _bring_up(current, driver)
            upcoming = start(batches[k + 1]) if k + 1 < len(batches) else []  # starts while these stop
            failures += _signal_and_judge(current)
            current = upcoming
        loading = start([c for c in CASES if c.state == "loading"])
        _bring_up(loading, driver)
        failures += _signal_and_judge(loading)
        _bring_up(executed, driver)
        failures += _signal_and_judge(executed)
    finally:
        for proc in started:
            if proc.exit_code(0.0) is None:
                proc.kill()
    hangs, failures = _split_dds_teardown_hangs(failures)
    if hangs:
        warnings.warn(f"{len(hangs)} of {len(CASES)} nodes hung inside rclpy/Fast DDS entity destruction and "
                      f"were ended by their watchdog (exit 1):\n" + "\n\n".join(hangs))
    assert not failures, f"{len(failures)} of {len(CASES)} emulations ended uncleanly:\n" + "\n\n".join(failures)
    assert len(hangs) <= MAX_DDS_TEARDOWN_HANGS, (f"{len(hangs)} of {len(CASES)} nodes hung in DDS teardown: "
                                                  "not the rare third-party hang but a systematic one")


@pytest.mark.parametrize("hangs", [True, False])
def test_a_shutdown_that_hangs_prints_every_stack_and_exits_1(hangs: bool, ros_env) -> None:
    """The watchdog around main()'s shutdown: a hang leaves the stacks that say where (the one
    CI hang left only its last log line); a shutdown that finishes leaves it cancelled."""
    body = "time.sleep(60)" if hangs else "pass"
    code = ("import time\nfrom pvd_ros.segment_node import shutdown_watchdog\n"
            f"with shutdown_watchdog(1.0):\n    {body}\ntime.sleep(3)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, **ros_env),
                          capture_output=True, text=True, timeout=120)
    if hangs:
        assert proc.returncode == 1, proc.stderr
        assert "Timeout (0:00:01)!" in proc.stderr and 'File "<string>", line 4 in <module>' in proc.stderr
    else:
        assert proc.returncode == 0 and "Timeout" not in proc.stderr, proc.stderr


_FLOODED_CHILD = """
import time
from pvd_ros.segment_node import ShutdownRequest
request = ShutdownRequest()
request.install()
print("ready", flush=True)
end = time.monotonic() + 4.0
while time.monotonic() < end:
    bool(request)
print("left", len(request.received) > 0, flush=True)
"""


def test_a_flood_of_signals_never_deadlocks_the_signal_handler(ros_env) -> None:
    """Python runs a signal handler between any two bytecodes of the main thread, inside a
    running handler too: one that took a lock (threading.Event.set did) deadlocked when a second
    signal arrived while the first held it. Four signals within 0.2 s hung a busy node before its
    'shutting down' line, 2 times in about 250 emulations; this flood hung 2 of 3 such processes."""
    children = [subprocess.Popen([sys.executable, "-c", _FLOODED_CHILD], cwd=REPO, env=dict(os.environ, **ros_env),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready", child.stderr
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            for child in children:
                os.kill(child.pid, signal.SIGINT)
        for child in children:
            try:
                out, err = child.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                raise AssertionError("a process flooded with SIGINT hung in its signal handler") from None
            assert child.returncode == 0 and out.strip() == "left True", err[-2000:]
    finally:
        for child in children:
            child.kill()
            child.wait()


_CI_DUMP = """shutdown_exec_busy_int_term: exit 1:
[INFO] [1796328714.511101953] [segment_node]: shutting down (SIGINT, SIGTERM)
Timeout (0:00:08)!
Thread 0x00007f663a2374c0 (most recent call first):
  File "/check/work/main/.venv/lib/python3.11/site-packages/rclpy/publisher.py", line 107 in destroy
  File "/check/work/main/.venv/lib/python3.11/site-packages/rclpy/node.py", line 1948 in destroy_publisher
  File "/check/work/main/pvd_ros/segment_node.py", line 363 in destroy_node
"""


def test_only_a_hang_inside_rclpy_entity_destruction_counts_as_the_third_party_teardown_hang() -> None:
    """The CI dump of 2026-12-03 is classified as the DDS teardown hang; a hang in our own code,
    a second Python thread in front, or a traceback (alone or before such a dump) stay failures."""
    ours = _CI_DUMP.replace('lib/python3.11/site-packages/rclpy/publisher.py", line 107 in destroy',
                            'pvd_ros/segment_node.py", line 363 in destroy_node')
    other_thread_first = _CI_DUMP.replace("(most recent call first):\n", "(most recent call first):\n"
                                          '  File "/x/pvd_ros/segment_node.py", line 5 in _work\n\n'
                                          "Thread 0x1 (most recent call first):\n", 1)
    plain = "shutdown_busy_int: exit 1:\nTraceback (most recent call last):\n"
    hang_after_traceback = plain + _CI_DUMP
    hangs, others = _split_dds_teardown_hangs([_CI_DUMP, ours, other_thread_first, plain, hang_after_traceback])
    assert hangs == [_CI_DUMP]
    assert others == [ours, other_thread_first, plain, hang_after_traceback]
