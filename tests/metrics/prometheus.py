"""A real Prometheus for tests: Debian's `/usr/bin/prometheus` on a free loopback port.

    with Prometheus.start(["127.0.0.1:9464"], rule_groups=...) as prom:
        prom.wait_target_up()
        prom.query('rate(espresso_events_consumed_total[10s])')   # -> list of results

It scrapes the targets every second with a generated config and keeps its data in a
temporary directory. `ensure_prometheus()` installs the Debian package when missing (the
test machines run as root and reach Debian's archive).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterable

import yaml

__all__ = ["PROMETHEUS", "PrometheusError", "Prometheus", "ensure_prometheus", "free_port"]

PROMETHEUS = "/usr/bin/prometheus"


class PrometheusError(RuntimeError):
    """Prometheus refused a query or did not come up; the message has its answer."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_prometheus() -> str:
    """Path of the prometheus binary, installing Debian's package if it is missing."""
    if Path(PROMETHEUS).exists():
        return PROMETHEUS
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "--no-install-recommends", "prometheus"],
                ["apt-get", "update"],
                ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]):
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600,
                       check=False)
        if Path(PROMETHEUS).exists():
            return PROMETHEUS
    raise PrometheusError(f"{PROMETHEUS} missing and `apt-get install -y prometheus` did not provide it")


class Prometheus:
    """A running Prometheus process; use `start()`, then `close()` (or a `with` block)."""

    def __init__(self, proc: subprocess.Popen, url: str, workdir: str) -> None:
        self.proc, self.url, self.workdir = proc, url, workdir

    @classmethod
    def start(cls, targets: Iterable[str], rule_groups: list | None = None, scrape_interval: str = "1s",
              timeout_s: float = 20.0) -> "Prometheus":
        binary = ensure_prometheus()
        workdir = tempfile.mkdtemp(prefix="espresso-prom-")
        config: dict[str, Any] = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval,
                       "scrape_timeout": scrape_interval},
            "scrape_configs": [{"job_name": "espresso", "static_configs": [{"targets": list(targets)}]}],
        }
        if rule_groups:
            Path(workdir, "rules.yml").write_text(yaml.safe_dump({"groups": rule_groups}))
            config["rule_files"] = [str(Path(workdir, "rules.yml"))]
        Path(workdir, "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = open(Path(workdir, "prometheus.log"), "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [binary, f"--config.file={workdir}/prometheus.yml", f"--storage.tsdb.path={workdir}/data",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        prom = cls(proc, f"http://127.0.0.1:{port}", workdir)
        try:
            prom._wait_ready(timeout_s)
        except BaseException:
            prom.close()
            raise
        return prom

    def _get(self, path: str, params: dict | None = None) -> Any:
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return json.loads(err.read() or b"{}")

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited {self.proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise PrometheusError(f"prometheus not ready after {timeout_s}s: {self.log()}")

    def log(self) -> str:
        return Path(self.workdir, "prometheus.log").read_text(errors="replace")[-2000:]

    def targets(self) -> list[dict]:
        return self._get("/api/v1/targets")["data"]["activeTargets"]

    def wait_target_up(self, timeout_s: float = 15.0) -> None:
        """Wait until every target was scraped successfully at least once."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            targets = self.targets()
            if targets and all(t["health"] == "up" for t in targets):
                return
            time.sleep(0.2)
        raise PrometheusError(f"targets not up after {timeout_s}s: {self.targets()}")

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """Evaluate `expr` now (or at `at`, Unix seconds); the result list, or PrometheusError."""
        params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        answer = self._get("/api/v1/query", params)
        if answer.get("status") != "success":
            raise PrometheusError(f"{expr!r}: {answer.get('errorType')}: {answer.get('error')}")
        data = answer["data"]
        return data["result"] if data["resultType"] in ("vector", "matrix") else [{"value": data["result"]}]

    def rules(self) -> list[dict]:
        """Loaded rules with their `health` and `lastError` (from /api/v1/rules)."""
        return [r for g in self._get("/api/v1/rules")["data"]["groups"] for r in g["rules"]]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Prometheus":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
