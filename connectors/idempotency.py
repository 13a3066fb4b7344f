"""Idempotency keys in Redis: at most one sender delivers a given `message_id`.

One key per message, `{key_prefix}{message_id}`, whose value is `state|token|claimed_ms`:

- claim: `SET key "sending|token|now" NX PX ttl` (a Lua script, so the checks below are atomic).
  If the key exists and says `sent|...` the message was delivered: `SENT`. If it says
  `sending|...` and the claim is younger than `lease_s`: `HELD` (another sender, or an
  earlier submission, is delivering it now). If older than the lease, the holder is taken to
  have died mid-send and the key is claimed again: `RECLAIMED`. The same token claiming again
  (a retry after a lost reply) gets its own claim back.
- mark sent: `sending|token|t` becomes `sent|token|t`, TTL kept (default 7 days). If the key
  was claimed again meanwhile (lease expired during a send) or has vanished (Redis lost its
  data), it is set to `sent` all the same and the caller is told.
- release (the send failed for good): the key is deleted if it still holds our claim, so a
  later replay of the message (dead-letter replay) may send it.

The time is Redis's own clock (`TIME`), so senders on machines with skewed clocks agree on
lease expiry. Redis errors surface as `StoreUnavailable`; the sender retries with backoff.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import redis.asyncio as aredis
from redis import exceptions as rx

from connectors.delivery import DeliveryConfigError

__all__ = [
    "CLAIMED",
    "HELD",
    "MARK_KEPT",
    "MARK_MISSING",
    "MARK_TAKEN",
    "RECLAIMED",
    "SENT",
    "Claim",
    "IdempotencyConfig",
    "IdempotencyStore",
    "MemoryIdempotency",
    "RedisIdempotency",
    "StoreUnavailable",
]

CLAIMED, RECLAIMED, SENT, HELD = "claimed", "reclaimed", "sent", "held"
MARK_TAKEN, MARK_KEPT, MARK_MISSING = 0, 1, 2
DAY_S = 86_400.0


class StoreUnavailable(ConnectionError):
    """The idempotency store cannot be reached or cannot write; retry later."""


@dataclass(frozen=True, slots=True)
class IdempotencyConfig:
    """Redis at `url` (`REDIS_URL`); keys live `ttl_s` after a claim; a claim leases `lease_s`."""

    url: str
    key_prefix: str = "espresso:msg:"
    ttl_s: float = 7 * DAY_S
    lease_s: float = 300.0
    socket_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise DeliveryConfigError(f'"url" must be a redis://, rediss:// or unix:// URL: {self.url!r}')
        if self.lease_s <= 0 or self.ttl_s <= self.lease_s:
            raise DeliveryConfigError(
                f'"lease_s" must be > 0 and < "ttl_s": lease_s={self.lease_s} ttl_s={self.ttl_s}')
        if self.socket_timeout_s <= 0:
            raise DeliveryConfigError(f'"socket_timeout_s" must be > 0: {self.socket_timeout_s}')


class Claim(NamedTuple):
    """`status` is CLAIMED, RECLAIMED, SENT or HELD; `value` is the key's value after the call
    (our claim when CLAIMED/RECLAIMED, to pass to `mark_sent_many` / `release_many`)."""

    status: str
    value: str


class IdempotencyStore(Protocol):
    """What the sender needs; every method may raise `StoreUnavailable`."""

    owner: str
    lease_s: float

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def claim_many(self, requests: Sequence[tuple[str, str]]) -> list[Claim]:
        """Claim each (message_id, token); tokens are unique per submission."""
    async def mark_sent_many(self, claims: Sequence[tuple[str, str]]) -> list[int]:
        """Mark each (message_id, claim value) sent: MARK_KEPT, MARK_TAKEN (another sender had
        claimed it again: it was sent twice) or MARK_MISSING (the key was gone: Redis lost it)."""
    async def release_many(self, claims: Sequence[tuple[str, str]]) -> None:
        """Forget each (message_id, claim value) still held by us."""


_CLAIM = """
pcall(redis.replicate_commands)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl, lease, owner = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local out = {}
for i, key in ipairs(KEYS) do
  local mine = 'sending|' .. owner .. '.' .. ARGV[3 + i] .. '|'
  local value = mine .. now
  local status = 'claimed'
  if not redis.call('SET', key, value, 'NX', 'PX', ttl) then
    local v = redis.call('GET', key)
    if string.sub(v, 1, 5) == 'sent|' then
      status, value = 'sent', v
    elseif string.sub(v, 1, string.len(mine)) == mine then
      value = v
    elseif now - (tonumber(string.match(v, '|(%d+)$')) or 0) >= lease then
      redis.call('SET', key, value, 'PX', ttl)
      status = 'reclaimed'
    else
      status, value = 'held', v
    end
  end
  out[2 * i - 1] = status
  out[2 * i] = value
end
return out
"""

_MARK_SENT = """
local out = {}
for i, key in ipairs(KEYS) do
  local claim = ARGV[1 + i]
  local sent = 'sent|' .. string.sub(claim, 9)
  local v = redis.call('GET', key)
  local kept = 0
  if v == claim then
    redis.call('SET', key, sent, 'KEEPTTL')
    kept = 1
  elseif v == sent then
    kept = 1
  elseif not v then
    redis.call('SET', key, sent, 'PX', ARGV[1])
    kept = 2
  elseif string.sub(v, 1, 8) == 'sending|' then
    redis.call('SET', key, sent, 'KEEPTTL')
  end
  out[i] = kept
end
return out
"""

_RELEASE = """
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then
    n = n + redis.call('DEL', key)
  end
end
return n
"""

# Every Redis error pauses sending rather than failing messages: connection loss, timeouts,
# a read-only replica after failover, OOM or a busy script all pass with time.
_UNAVAILABLE = (rx.RedisError, OSError)


class RedisIdempotency:
    """`IdempotencyStore` on Redis; each batch is one script call (one round trip).

    A batch's keys go to one script, so the store needs one Redis, not a cluster.
    """

    def __init__(self, config: IdempotencyConfig, owner: str | None = None) -> None:
        self.config = config
        self.owner = owner or uuid.uuid4().hex[:12]
        self.lease_s = config.lease_s
        self._ttl_ms = str(int(config.ttl_s * 1000))
        self._lease_ms = str(int(config.lease_s * 1000))
        self._client: aredis.Redis | None = None

    def __repr__(self) -> str:
        return f"RedisIdempotency(owner={self.owner!r}, prefix={self.config.key_prefix!r})"

    async def open(self) -> None:
        if self._client is None:
            c = self.config
            self._client = aredis.Redis.from_url(
                c.url, socket_timeout=c.socket_timeout_s, socket_connect_timeout=c.socket_timeout_s,
                decode_responses=True, health_check_interval=30)
            self._claim = self._client.register_script(_CLAIM)
            self._mark = self._client.register_script(_MARK_SENT)
            self._release = self._client.register_script(_RELEASE)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def claim_many(self, requests: Sequence[tuple[str, str]]) -> list[Claim]:
        reply = await self._run("_claim", [mid for mid, _ in requests],
                                [self._ttl_ms, self._lease_ms, self.owner, *(token for _, token in requests)])
        return [Claim(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]

    async def mark_sent_many(self, claims: Sequence[tuple[str, str]]) -> list[int]:
        reply = await self._run("_mark", [mid for mid, _ in claims], [self._ttl_ms, *(value for _, value in claims)])
        return [int(r) for r in reply]

    async def release_many(self, claims: Sequence[tuple[str, str]]) -> None:
        await self._run("_release", [mid for mid, _ in claims], [value for _, value in claims])

    async def _run(self, script_name: str, message_ids: list[str], args: list[str]) -> list:
        """One script call over all keys: one round trip, one command to encode."""
        if not message_ids:
            return []
        await self.open()
        script = getattr(self, script_name)
        prefix = self.config.key_prefix
        try:
            return await script(keys=[prefix + mid for mid in message_ids], args=args)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc


class MemoryIdempotency:
    """In-process `IdempotencyStore` for one sender without Redis (demo, unit tests).

    Keeps the last `max_keys` message ids; it dedupes within one process only.
    """

    def __init__(self, max_keys: int = 1_000_000, lease_s: float = 300.0) -> None:
        self.owner = "memory"
        self.lease_s = lease_s
        self._max = max_keys
        self._keys: OrderedDict[str, str] = OrderedDict()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def claim_many(self, requests: Sequence[tuple[str, str]]) -> list[Claim]:
        out = []
        for mid, token in requests:
            value = self._keys.get(mid)
            if value is None:
                value = self._keys[mid] = f"sending|{token}|0"
                if len(self._keys) > self._max:
                    self._keys.popitem(last=False)
                out.append(Claim(CLAIMED, value))
            elif value.startswith("sent|"):
                out.append(Claim(SENT, value))
            elif value == f"sending|{token}|0":
                out.append(Claim(CLAIMED, value))
            else:
                out.append(Claim(HELD, value))
        return out

    async def mark_sent_many(self, claims: Sequence[tuple[str, str]]) -> list[int]:
        out = []
        for mid, value in claims:
            current = self._keys.get(mid)
            sent = "sent|" + value[len("sending|"):]
            self._keys[mid] = sent
            out.append(MARK_KEPT if current in (value, sent) else MARK_MISSING if current is None else MARK_TAKEN)
        return out

    async def release_many(self, claims: Sequence[tuple[str, str]]) -> None:
        for mid, value in claims:
            if self._keys.get(mid) == value:
                del self._keys[mid]
