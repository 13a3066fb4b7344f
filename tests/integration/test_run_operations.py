"""Operating `espresso run`: start-up errors, health probes and metrics, topic creation, the demo."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from tests.integration.live import ROOT, Espresso, now_ms, partitions, produce
from tests.servers import free_port

pytestmark = pytest.mark.integration


def _espresso(*args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    full.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    return subprocess.run([sys.executable, "-m", "commands.cli", *args], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_missing_input_topic_is_one_clear_line(kafka_bootstrap):
    """A topic that does not exist stops the start with exit code 2 and one line that names the
    topic, the flag/variable and the fix; it is not auto-created by asking."""
    res = _espresso("run", "--bootstrap-servers", kafka_bootstrap, "--input-topic", "no-such-topic-x1",
                    "--metrics-port", "-1")
    assert res.returncode == 2
    assert "topic 'no-such-topic-x1' (--input-topic / ESPRESSO_INPUT_TOPIC) does not exist on" in res.stderr
    assert "--create-topics" in res.stderr and "Traceback" not in res.stderr
    from confluent_kafka.admin import AdminClient
    assert "no-such-topic-x1" not in AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics


def test_unreachable_broker_is_one_clear_line():
    """Brokers that do not answer: exit code 2 and a line naming the setting to check."""
    res = _espresso("run", "--bootstrap-servers", f"127.0.0.1:{free_port()}", "--metrics-port", "-1")
    assert res.returncode == 2, res.stderr
    assert "cannot reach Kafka" in res.stderr and "KAFKA_BOOTSTRAP_SERVERS" in res.stderr


def test_create_topics_then_probes_and_metrics(kafka_bootstrap, tmp_path):
    """--create-topics makes the three topics with --partitions; /livez is 200, /readyz turns 200
    once every partition is polled, /metrics shows consumer lag and produced changes; SIGTERM
    stops with exit code 0."""
    tag = f"ops-{now_ms()}"
    topics = (f"{tag}-events", f"{tag}-changes", f"{tag}-dlq")
    port = free_port()
    from tests.servers import delete_topics
    request_cleanup = list(topics)
    try:
        _probes_and_metrics(kafka_bootstrap, tmp_path, topics, port)
    finally:
        delete_topics(kafka_bootstrap, request_cleanup)


def _probes_and_metrics(kafka_bootstrap, tmp_path, topics, port) -> None:
    with Espresso(tmp_path, kafka_bootstrap, topics, "--create-topics", "--partitions", "3",
                  metrics_port=port) as flow:
        flow.wait_ready()
        assert flow.probe("/livez")[0] == 200
        assert partitions(kafka_bootstrap, topics[0]) == [0, 1, 2]
        assert partitions(kafka_bootstrap, topics[1]) == [0, 1, 2]
        produce(kafka_bootstrap, topics[0], [
            {"event_id": "a", "contact_id": "c1", "type": "consent_changed", "ts": now_ms(),
             "properties": {"channel": "email", "status": "subscribed"}},
            {"event_id": "b", "contact_id": "c1", "type": "email_open", "ts": now_ms() + 1}, b"junk"])
        deadline = time.monotonic() + 15
        text = ""
        while time.monotonic() < deadline:
            text = flow.probe("/metrics")[1]
            if 'espresso_records_produced_total{topic="' + topics[1] + '"} 1.0' in text:
                break
            time.sleep(0.3)
        assert 'espresso_records_produced_total{topic="' + topics[1] + '"} 1.0' in text, text[-3000:]
        assert "espresso_kafka_consumer_lag" in text
        assert 'espresso_events_invalid_total{reason="not_json"} 1.0' in text
        assert flow.stop() == 0, flow.tail()
    assert "stopped" in flow.log_path.read_text()


def test_demo_runs_on_a_fresh_embedded_broker(tmp_path):
    """`espresso demo` starts its own broker, streams traffic, prints readable enters/exits, the
    retargeting messages the campaigns send (read back from the messages topic) and a summary,
    and stops by itself after --duration (non-terminal output)."""
    res = _espresso("demo", "--duration", "15", "--rate", "30", "--window", "5s", "--abandoned-after", "2s",
                    "--metrics-port", str(free_port()), timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = res.stdout
    assert "embedded broker" in out
    assert "ENTER" in out and "opened an email" in out
    assert "aged out (window 5s)" in out or "checkout not completed within 2s" in out, out[-3000:]
    assert "segment changes" in out and "event -> change readable on the topic" in out
    # messages: time, who, channel, "what they see", (campaign[, variant]), latency; aligned with the changes
    line = re.compile(r'^\d\d:\d\d:\d\d\.\d{3}  c-\d{4} \(\w+\) +(EMAIL|SMS  |PUSH )  "[^"]+"  '
                      r"\([a-z0-9-]+(/[a-z0-9_.-]+)?(, variant [AB])?\)  -?\d+(\.\d\d s| ms) after (the [a-zA-Z -]+|due)", re.M)
    sent = line.findall(out)
    assert sent, out[-3000:]
    assert re.search(r'EMAIL  "\w+, (did you see this\?|free shipping on us until Sunday)"  '
                     r"\(email-espresso-resend, variant [AB]\)  \d+ ms after the email", out), out[-3000:]
    assert re.search(r"email messages +[1-9]\d* sent", out) and "event -> message readable on the topic" in out
    assert f"{len(sent)} messages;" in out  # every message read was printed
