"""`espresso members SEGMENT`: who is in a segment now, from the Redis membership view.

    espresso members email-espresso                 # contact ids, one per line
    espresso members email-espresso --count         # how many
    espresso members email-espresso --contact c-42  # exit 0 if a member, 1 if not

With `--apply-changes-topic TOPIC` the segment change records of TOPIC are first applied to
the view (flows/members.py), then the question is answered.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from state.errors import ConfigError, RuntimeFailure

from .deliver import _redis_url
from .settings import Opt, add_arguments, load

__all__ = ["MembersSettings", "add_members_args", "cmd_members"]


class MembersSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    segment: Annotated[str, Opt(None, help="segment id, e.g. email-espresso")]
    redis_url: Annotated[str | None, AfterValidator(_redis_url), Opt(
        "--redis-url", "REDIS_URL", help="Redis of the membership view (required)",
        fix="give a URL such as redis://HOST:6379/0")] = None
    prefix: Annotated[str, Opt("--prefix", "ESPRESSO_MEMBERSHIP_PREFIX", help="key prefix of the view")] = "espresso"
    apply_changes_topic: Annotated[str | None, Opt(
        "--apply-changes-topic", metavar="TOPIC",
        help="first apply every segment change record of TOPIC (from its beginning to its current end) "
             "to the view")] = None
    bootstrap_servers: Annotated[str | None, Opt("--bootstrap-servers", "KAFKA_BOOTSTRAP_SERVERS",
                                                 help="brokers, for --apply-changes-topic")] = None


def add_members_args(p: argparse.ArgumentParser) -> None:
    add_arguments(p, MembersSettings)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--count", action="store_true", help="print the number of members only")
    what.add_argument("--contact", metavar="ID", help="is contact ID a member? exit code 0 if yes, 1 if no")


def cmd_members(args: argparse.Namespace) -> int:
    import redis

    from connectors.membership import MembershipConfig, MembershipView

    s = load(MembersSettings, args)
    if not s.redis_url:
        raise ConfigError("no Redis for the membership view: pass --redis-url redis://HOST:PORT/DB or set REDIS_URL")
    view = MembershipView(MembershipConfig(s.redis_url, prefix=s.prefix))
    try:
        if s.apply_changes_topic:
            from connectors.kafka_config import KafkaConfig
            from flows.members import apply_changes_topic

            if not s.bootstrap_servers:
                raise ConfigError("--apply-changes-topic needs brokers: pass --bootstrap-servers HOST:PORT or set "
                                  "KAFKA_BOOTSTRAP_SERVERS")
            kafka = KafkaConfig.from_env(s.bootstrap_servers, os.environ, client_id="espresso-members")
            applied, ignored, invalid = apply_changes_topic(view, kafka, s.apply_changes_topic)
            print(f"espresso members: {s.apply_changes_topic}: {applied} changes applied, {ignored} already "
                  f"applied or older, {invalid} invalid", file=sys.stderr)
        if args.count:
            print(view.count(s.segment))
            return 0
        if args.contact is not None:
            member = view.is_member(args.contact, s.segment)
            print(f"{args.contact} {'is' if member else 'is not'} in {s.segment}")
            return 0 if member else 1
        out = sys.stdout
        for contact in view.members(s.segment):
            out.write(contact + "\n")
        out.flush()
        return 0
    except redis.RedisError as exc:
        raise RuntimeFailure(f"Redis at --redis-url (REDIS_URL): {type(exc).__name__}: {exc}") from exc
    finally:
        view.close()
