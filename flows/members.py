"""`espresso members SEGMENT`: who is in a segment now, from the Redis membership view.

    espresso members email-espresso                 # contact ids, one per line
    espresso members email-espresso --count         # how many
    espresso members email-espresso --contact c-42  # exit 0 if a member, 1 if not

With `--apply-changes-topic TOPIC` the segment change records of TOPIC are first read from
its beginning to its current end and applied to the view (repeating this is harmless: a
change whose `seq` was already applied changes nothing), then the question is answered.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import orjson

from state.errors import EspressoError

__all__ = ["MembersConfigError", "add_members_args", "apply_changes_topic", "cmd_members"]


class MembersConfigError(EspressoError):
    """A setting of `espresso members` that cannot work; names the flag, the variable and the fix."""


def _env(name: str, default: Any = None) -> Any:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def add_members_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("segment", help="segment id, e.g. email-espresso")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--count", action="store_true", help="print the number of members only")
    what.add_argument("--contact", metavar="ID", help="is contact ID a member? exit code 0 if yes, 1 if no")
    p.add_argument("--redis-url", default=_env("REDIS_URL"),
                   help="Redis of the membership view [env REDIS_URL] (required)")
    p.add_argument("--prefix", default=_env("ESPRESSO_MEMBERSHIP_PREFIX", "espresso"),
                   help="key prefix of the view [env ESPRESSO_MEMBERSHIP_PREFIX] (default %(default)s)")
    p.add_argument("--apply-changes-topic", metavar="TOPIC",
                   help="first apply every segment change record of TOPIC (from its beginning to its "
                        "current end) to the view")
    p.add_argument("--bootstrap-servers", default=_env("KAFKA_BOOTSTRAP_SERVERS"),
                   help="brokers, for --apply-changes-topic [env KAFKA_BOOTSTRAP_SERVERS]")


def apply_changes_topic(view: Any, kafka: Any, topic: str, timeout_s: float = 120.0) -> tuple[int, int, int]:
    """Apply `topic` from its beginning to its end now; (applied, ignored, invalid)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    try:
        consumer = Consumer(kafka.consumer("espresso-members", **{"enable.partition.eof": True}))
    except KafkaException as exc:
        raise MembersConfigError(f"Kafka consumer: {exc}") from exc
    try:
        md = consumer.list_topics(timeout=15)
        if topic not in md.topics or md.topics[topic].error is not None:
            raise MembersConfigError(f"topic {topic!r} (--apply-changes-topic) does not exist on "
                                     f"{kafka.bootstrap_servers}")
        ends: dict[int, int] = {}
        for p in md.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        # `assign` with offset 0 below the low watermark resets to earliest (auto.offset.reset)
        applied = ignored = invalid = 0
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise MembersConfigError(f"could not read {topic!r} to its end within {timeout_s:.0f}s")
            changes: list = []
            for m in consumer.consume(1000, 0.5):
                if m.error():
                    continue
                if m.offset() + 1 >= ends.get(m.partition(), 0):
                    ends.pop(m.partition(), None)
                try:
                    record = orjson.loads(m.value() or b"")
                except orjson.JSONDecodeError:
                    invalid += 1
                    continue
                if isinstance(record, dict):
                    changes.append(record)
                else:
                    invalid += 1
            if changes:
                st = view.apply(changes)
                applied, ignored, invalid = applied + st.applied, ignored + st.ignored, invalid + st.invalid
        return applied, ignored, invalid
    finally:
        consumer.close()


def cmd_members(args: argparse.Namespace) -> int:
    import redis

    from connectors.delivery import DeliveryConfigError
    from connectors.membership import MembershipConfig, MembershipView

    if not args.redis_url:
        raise MembersConfigError("no Redis for the membership view: pass --redis-url redis://HOST:PORT/DB "
                                 "or set REDIS_URL")
    try:
        view = MembershipView(MembershipConfig(args.redis_url, prefix=args.prefix))
    except DeliveryConfigError as exc:
        raise MembersConfigError(f"--redis-url (REDIS_URL): {exc}") from exc
    try:
        if args.apply_changes_topic:
            from connectors.kafka_config import KafkaConfig

            kafka = KafkaConfig.from_env(args.bootstrap_servers, client_id="espresso-members")
            applied, ignored, invalid = apply_changes_topic(view, kafka, args.apply_changes_topic)
            print(f"espresso members: {args.apply_changes_topic}: {applied} changes applied, {ignored} already "
                  f"applied or older, {invalid} invalid", file=sys.stderr)
        if args.count:
            print(view.count(args.segment))
            return 0
        if args.contact is not None:
            member = view.is_member(args.contact, args.segment)
            print(f"{args.contact} {'is' if member else 'is not'} in {args.segment}")
            return 0 if member else 1
        out = sys.stdout
        for contact in view.members(args.segment):
            out.write(contact + "\n")
        out.flush()
        return 0
    except redis.RedisError as exc:
        raise MembersConfigError(f"Redis at --redis-url (REDIS_URL): {type(exc).__name__}: {exc}") from exc
    finally:
        view.close()
