"""`espresso report --bootstrap-servers`: the three topics read from their beginning to their
end on the real broker fixture give the figures the files give."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import Producer

from state.report import build_report

from .gen import campaign
from .test_cli import _run

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, topic: str, records, extra: list[bytes] = ()) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for r in records:
        producer.produce(topic, key=r["contact_id"].encode(), value=orjson.dumps(r))
    for raw in extra:
        producer.produce(topic, key=b"x", value=raw)
    assert producer.flush(30) == 0


def test_topics_give_the_figures_of_the_files(kafka_bootstrap, kafka_topic_factory, tmp_path):
    m, d, c = campaign(seed=5, rates={"A": 0.05, "B": 0.10}, sends=600, holdout=120, holdout_rate=0.04)
    topics = {"messages": kafka_topic_factory(partitions=3, prefix="report-messages"),
              "decisions": kafka_topic_factory(partitions=2, prefix="report-decisions"),
              "conversions": kafka_topic_factory(partitions=1, prefix="report-conversions")}
    _produce(kafka_bootstrap, topics["messages"], m, [b"{not json", b"[]"])
    _produce(kafka_bootstrap, topics["decisions"], d)
    _produce(kafka_bootstrap, topics["conversions"], c + c[:5])  # five redelivered
    res = _run(tmp_path, "--bootstrap-servers", kafka_bootstrap, "--messages-topic", topics["messages"],
               "--decisions-topic", topics["decisions"], "--conversions-topic", topics["conversions"],
               "--format", "json")
    assert res.returncode == 0, res.stderr
    got = orjson.loads(res.stdout)
    assert got["campaigns"] == build_report(m, d, c).record()["campaigns"]
    assert got["inputs"]["conversions"]["duplicates"] == 5
    assert got["inputs"]["messages"]["skipped"] == 2
    assert f"topic {topics['messages']}: not JSON (first: {topics['messages']}[" in res.stderr


def test_a_missing_topic_is_named_with_its_flag(kafka_bootstrap, kafka_topic_factory, tmp_path):
    messages = kafka_topic_factory(prefix="report-messages")
    decisions = kafka_topic_factory(prefix="report-decisions")
    res = _run(tmp_path, "--bootstrap-servers", kafka_bootstrap, "--messages-topic", messages,
               "--decisions-topic", decisions, "--conversions-topic", "no-such-conversions")
    assert res.returncode == 2, res.stderr
    line, = res.stderr.strip().splitlines()
    assert "--conversions-topic" in line and "'no-such-conversions' does not exist" in line
    assert "espresso run" in line


def test_empty_topics_give_an_empty_report(kafka_bootstrap, kafka_topic_factory, tmp_path):
    names = [kafka_topic_factory(prefix=f"report-{k}") for k in ("m", "d", "c")]
    res = _run(tmp_path, "--bootstrap-servers", kafka_bootstrap, "--messages-topic", names[0],
               "--decisions-topic", names[1], "--conversions-topic", names[2])
    assert res.returncode == 0, res.stderr
    assert "no campaign in the input" in res.stdout
