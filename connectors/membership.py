"""Membership view in Redis, built from segment change records (docs/interfaces.md).

Keys (prefix `espresso` by default):

- `{prefix}:seg:{segment_id}`: set of contact ids now in the segment;
- `{prefix}:contact:{contact_id}`: set of segment ids the contact is now in;
- `{prefix}:seq:{contact_id}`: hash segment_id -> `seq` of the last change applied.

A change is applied by one Lua script (atomic): it is ignored when its `seq` is not above the
last applied `seq` for that (contact, segment), so a repeated or older change changes
nothing, whatever the order changes arrive in. Changes are sent in pipelines of `batch`.
All of one change's keys are touched by one script, so the view needs one Redis (not a
cluster: the keys of a change do not share a hash slot).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis

from connectors.delivery import DeliveryConfigError

__all__ = ["ApplyStats", "MembershipConfig", "MembershipView"]

log = logging.getLogger(__name__)

_APPLY = """
local last = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
local seq = tonumber(ARGV[4])
if seq <= last then
  return 0
end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
if ARGV[3] == 'enter' then
  redis.call('SADD', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[2])
else
  redis.call('SREM', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[2], ARGV[2])
end
return 1
"""


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    """Redis at `url` (`REDIS_URL`), keys under `prefix`, `batch` changes per round trip."""

    url: str
    prefix: str = "espresso"
    batch: int = 500
    socket_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise DeliveryConfigError(f'"url" must be a redis://, rediss:// or unix:// URL: {self.url!r}')
        if self.batch < 1:
            raise DeliveryConfigError(f'"batch" must be >= 1: {self.batch}')


class ApplyStats(NamedTuple):
    """Changes applied, ignored (repeated or older), and refused (malformed)."""

    applied: int
    ignored: int
    invalid: int


class MembershipView:
    """Applies segment changes to Redis and answers membership questions (synchronous)."""

    def __init__(self, config: MembershipConfig, client: redis.Redis | None = None) -> None:
        self.config = config
        self._redis = client or redis.Redis.from_url(
            config.url, decode_responses=True, socket_timeout=config.socket_timeout_s,
            socket_connect_timeout=config.socket_timeout_s)
        self._apply = self._redis.register_script(_APPLY)
        p = config.prefix
        self._seg, self._contact, self._seq = f"{p}:seg:", f"{p}:contact:", f"{p}:seq:"

    def close(self) -> None:
        self._redis.close()

    def apply(self, changes: Iterable[Mapping[str, Any]]) -> ApplyStats:
        """Apply changes in order, `batch` per pipeline; Redis errors raise (redis-py's own).

        Safe to repeat: re-applying any prefix of the stream leaves the view as it was.
        """
        applied = ignored = invalid = 0
        batch: list[tuple[str, str, str, int]] = []
        for change in changes:
            parsed = _parse(change)
            if parsed is None:
                invalid += 1
                continue
            batch.append(parsed)
            if len(batch) >= self.config.batch:
                a, i = self._send(batch)
                applied, ignored, batch = applied + a, ignored + i, []
        if batch:
            a, i = self._send(batch)
            applied, ignored = applied + a, ignored + i
        return ApplyStats(applied, ignored, invalid)

    def _send(self, batch: list[tuple[str, str, str, int]]) -> tuple[int, int]:
        with self._redis.pipeline(transaction=False) as pipe:
            for contact, segment, direction, seq in batch:
                self._apply(keys=[self._seg + segment, self._contact + contact, self._seq + contact],
                            args=[contact, segment, direction, seq], client=pipe)
            replies = pipe.execute()
        applied = sum(1 for r in replies if r == 1)
        return applied, len(replies) - applied

    def is_member(self, contact_id: str, segment_id: str) -> bool:
        return bool(self._redis.sismember(self._seg + segment_id, contact_id))

    def count(self, segment_id: str) -> int:
        return int(self._redis.scard(self._seg + segment_id))

    def members(self, segment_id: str, page: int = 1000) -> Iterator[str]:
        """Contact ids in the segment (SSCAN: a contact present throughout is seen at least once)."""
        return self._redis.sscan_iter(self._seg + segment_id, count=page)

    def segments_of(self, contact_id: str) -> set[str]:
        return set(self._redis.smembers(self._contact + contact_id))

    def last_seq(self, contact_id: str, segment_id: str) -> int:
        value = self._redis.hget(self._seq + contact_id, segment_id)
        return int(value) if value is not None else 0


def _parse(change: Mapping[str, Any]) -> tuple[str, str, str, int] | None:
    contact, segment = change.get("contact_id"), change.get("segment_id")
    direction, seq = change.get("direction"), change.get("seq")
    if not (isinstance(contact, str) and contact and isinstance(segment, str) and segment):
        return None
    if direction not in ("enter", "exit") or type(seq) is not int or seq < 1:
        return None
    return contact, segment, direction, seq
