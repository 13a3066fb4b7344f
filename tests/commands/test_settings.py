"""Settings of the subcommands: flags, environment twins, one-line errors that name the fix; Kafka config."""

from __future__ import annotations

import argparse

import pytest

from commands.deliver import add_deliver_args, config_from_args as deliver_config
from commands.run import add_run_args, config_from_args
from connectors.kafka_config import KafkaConfig, KafkaConfigError, security_from_env
from metrics.health import Health
from state.errors import ConfigError


def _parse(argv: list[str], monkeypatch, env: dict | None = None) -> argparse.Namespace:
    for k in ("KAFKA_BOOTSTRAP_SERVERS", "ESPRESSO_INPUT_TOPIC", "ESPRESSO_ALLOWED_LATENESS", "BYTEWAX_PROCESS_ID",
              "BYTEWAX_ADDRESSES", "BYTEWAX_POD_NAME", "BYTEWAX_STATEFULSET_NAME", "BYTEWAX_HOSTFILE_PATH",
              "BYTEWAX_WORKERS_PER_PROCESS", "ESPRESSO_SHARDS_PER_PARTITION"):
        monkeypatch.delenv(k, raising=False)
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    p = argparse.ArgumentParser()
    add_run_args(p)
    return p.parse_args(argv)


def test_defaults_follow_the_interface_contract(monkeypatch):
    """Topics, lateness, shards, metrics port and epoch interval default as docs/interfaces.md says."""
    rc = config_from_args(_parse(["--bootstrap-servers", "k:9092"], monkeypatch), environ={})
    assert (rc.input_topic, rc.output_topic, rc.dlq_topic) == ("contact-events", "segment-changes",
                                                               "contact-events-dlq")
    assert rc.allowed_lateness_ms == 60_000 and rc.shards_per_partition == 8 and rc.metrics_port == 9464
    assert rc.recovery_dir is None and rc.workers == 1 and rc.single_process


def test_environment_twins_set_the_defaults(monkeypatch):
    """Each flag has an environment variable; the flag wins over it."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": "env:9092", "ESPRESSO_INPUT_TOPIC": "in", "ESPRESSO_ALLOWED_LATENESS": "2m",
           "BYTEWAX_WORKERS_PER_PROCESS": "3", "ESPRESSO_SHARDS_PER_PARTITION": "4"}
    rc = config_from_args(_parse([], monkeypatch, env), environ=env)
    assert rc.kafka.bootstrap_servers == "env:9092" and rc.input_topic == "in"
    assert rc.allowed_lateness_ms == 120_000 and rc.workers == 3 and rc.shards_per_partition == 4
    rc = config_from_args(_parse(["--input-topic", "flag", "--allowed-lateness", "500ms"], monkeypatch, env), environ=env)
    assert rc.input_topic == "flag" and rc.allowed_lateness_ms == 500


def test_missing_brokers_name_the_flag_and_the_variable(monkeypatch):
    """No brokers: the error says --bootstrap-servers / KAFKA_BOOTSTRAP_SERVERS and points at the demo."""
    with pytest.raises(ConfigError, match="--bootstrap-servers.*KAFKA_BOOTSTRAP_SERVERS.*espresso demo"):
        config_from_args(_parse([], monkeypatch), environ={})


def test_bad_duration_names_flag_and_variable(monkeypatch):
    """A lateness without unit is refused with the flag, the variable, the value and examples."""
    with pytest.raises(ConfigError, match=r"--allowed-lateness / ESPRESSO_ALLOWED_LATENESS: not a duration "
                                          r"\(got --allowed-lateness '60'\); give a duration such as 60s"):
        config_from_args(_parse(["--bootstrap-servers", "k", "--allowed-lateness", "60"], monkeypatch), environ={})


def test_a_bad_variable_names_itself_and_its_value(monkeypatch):
    """ESPRESSO_METRICS_PORT=http: the message names the flag, the variable, the value and the fix."""
    env = {"ESPRESSO_METRICS_PORT": "http"}
    with pytest.raises(ConfigError, match=r"--metrics-port / ESPRESSO_METRICS_PORT: .*\(got "
                                          r"ESPRESSO_METRICS_PORT='http'\); give a port 0-65535, or -1 for none"):
        config_from_args(_parse(["--bootstrap-servers", "k"], monkeypatch, env), environ=env)


def test_another_subcommands_variable_is_never_read(monkeypatch):
    """ESPRESSO_DELIVER_BATCH_SIZE=x belongs to `deliver`: `run` starts as if it were not set."""
    env = {"ESPRESSO_DELIVER_BATCH_SIZE": "x", "ESPRESSO_PARTITIONS": "x"}
    p = argparse.ArgumentParser()
    add_deliver_args(p)
    cfg = deliver_config(p.parse_args(["--bootstrap-servers", "k", "--redis-url", "redis://h:1/0",
                                       "--claim-lease", "90s"]), environ={"ESPRESSO_PARTITIONS": "x"})
    assert cfg.claim_lease_s == 90.0 and cfg.batch_size == 500
    with pytest.raises(ConfigError, match=r"--batch-size / ESPRESSO_DELIVER_BATCH_SIZE: .*'x'"):
        deliver_config(p.parse_args(["--bootstrap-servers", "k", "--redis-url", "redis://h:1/0"]), environ=env)


def test_claim_lease_flag_and_its_errors():
    """deliver --claim-lease: a duration; a bad one names the flag, the variable and the value."""
    p = argparse.ArgumentParser()
    add_deliver_args(p)
    base = ["--bootstrap-servers", "k:9092", "--redis-url", "redis://127.0.0.1:6379/0"]
    assert deliver_config(p.parse_args(base), environ={}).claim_lease_s == 300.0
    with pytest.raises(ConfigError, match=r"--claim-lease / ESPRESSO_DELIVER_CLAIM_LEASE.*'soon'"):
        deliver_config(p.parse_args([*base, "--claim-lease", "soon"]), environ={})


def test_kubernetes_statefulset_variables_give_process_id_and_addresses(monkeypatch, tmp_path):
    """As `python -m bytewax.run`: the pod ordinal is the process id, the hostfile lists peers."""
    hosts = tmp_path / "hosts"
    hosts.write_text("espresso-0.espresso:2101\nespresso-1.espresso:2101\n\n")
    env = {"BYTEWAX_POD_NAME": "espresso-1", "BYTEWAX_STATEFULSET_NAME": "espresso",
           "BYTEWAX_HOSTFILE_PATH": str(hosts)}
    rc = config_from_args(_parse(["--bootstrap-servers", "k:9092"], monkeypatch, env), environ=env)
    assert rc.process_id == 1 and rc.addresses == ["espresso-0.espresso:2101", "espresso-1.espresso:2101"]
    assert not rc.single_process


def test_process_id_without_addresses_is_refused(monkeypatch):
    """A process id alone cannot form a cluster: the error names --addresses and its variables."""
    with pytest.raises(ConfigError, match="--addresses.*BYTEWAX_ADDRESSES"):
        config_from_args(_parse(["--bootstrap-servers", "k:9092", "-i", "0"], monkeypatch), environ={})


def test_same_topic_twice_is_refused(monkeypatch):
    """Writing changes into the input topic would loop: the three topics must differ."""
    with pytest.raises(ConfigError, match="three different topics"):
        config_from_args(_parse(["--bootstrap-servers", "k", "--output-topic", "contact-events"], monkeypatch),
                         environ={})


def test_kafka_secrets_are_masked_and_passed_to_librdkafka():
    """Security variables become librdkafka settings; repr never shows the password."""
    env = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
           "KAFKA_SASL_USERNAME": "espresso", "KAFKA_SASL_PASSWORD": "hunter2", "KAFKA_SSL_CA_LOCATION": "/ca.pem"}
    cfg = KafkaConfig.from_env("b:9093", env)
    assert cfg.producer()["sasl.password"] == "hunter2" and cfg.consumer("g")["security.protocol"] == "SASL_SSL"
    assert cfg.producer()["enable.idempotence"] is True and cfg.producer()["linger.ms"] == 5
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg) and "***" in repr(cfg)
    assert security_from_env({"KAFKA_SASL_USERNAME": ""}) == {}


def test_librdkafka_settings_pass_through_and_bad_ones_name_the_variable():
    """KAFKA_PRODUCER_SETTINGS / KAFKA_CONSUMER_SETTINGS tune librdkafka; a malformed item is
    refused with the variable's name."""
    cfg = KafkaConfig.from_env("b:9092", {"KAFKA_PRODUCER_SETTINGS": "linger.ms=20, enable.idempotence=false",
                                          "KAFKA_CONSUMER_SETTINGS": "fetch.wait.max.ms=5"})
    assert cfg.producer()["linger.ms"] == "20" and cfg.producer()["enable.idempotence"] == "false"
    assert cfg.consumer("g")["fetch.wait.max.ms"] == "5"
    with pytest.raises(KafkaConfigError, match="KAFKA_PRODUCER_SETTINGS"):
        KafkaConfig.from_env("b:9092", {"KAFKA_PRODUCER_SETTINGS": "linger.ms"})


def test_sasl_without_credentials_is_refused():
    """SASL PLAIN/SCRAM need a username and a password: said at start-up, not at first connect."""
    with pytest.raises(KafkaConfigError, match="KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        KafkaConfig.from_env("b:9093", {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN"})


def test_health_ready_only_after_every_partition_polled():
    """Not ready while starting or while an assigned partition has not been polled; ready after;
    not live when polling stalls; not ready once stopping."""
    now = [0.0]
    h = Health(stall_s=30, clock=lambda: now[0])
    assert not h.ready()[0] and h.live()[0]
    h.source_listed()
    h.partition_built("t", 0)
    h.partition_built("t", 1)
    h.partition_polled("t", 0)
    ok, why = h.ready()
    assert not ok and "t[1]" in why
    h.partition_polled("t", 1)
    h.beat()
    assert h.ready() == (True, "ok: 2 partitions") and h.live()[0]
    now[0] += 31
    assert not h.live()[0]
    h.beat()
    assert h.live()[0]
    h.request_stop()
    assert not h.ready()[0]
