"""Idempotency keys on a real Redis: claim, hold, take-over, mark sent, release."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from connectors.delivery import DeliveryConfigError
from connectors.idempotency import (
    CLAIMED,
    HELD,
    MARK_KEPT,
    MARK_MISSING,
    MARK_TAKEN,
    RECLAIMED,
    SENT,
    IdempotencyConfig,
    MemoryIdempotency,
    RedisIdempotency,
    StoreUnavailable,
)
from tests.servers import free_port

pytestmark = pytest.mark.integration


def store(url: str, prefix: str, owner: str, **kw) -> RedisIdempotency:
    return RedisIdempotency(IdempotencyConfig(url, key_prefix=prefix, **kw), owner=owner)


def run(coro):
    return asyncio.run(coro)


def test_claim_then_mark_sent_keeps_ttl(redis_url, key_prefix):
    """A first claim wins; marking it sent keeps the TTL of the claim (default 7 days); a later
    claim by anyone sees `sent`."""
    async def go():
        a = store(redis_url, key_prefix, "a")
        [c] = await a.claim_many([("m1", "1")])
        assert c.status == CLAIMED and c.value.startswith("sending|a.1|")
        assert await a.mark_sent_many([("m1", c.value)]) == [MARK_KEPT]
        [again] = await store(redis_url, key_prefix, "b").claim_many([("m1", "9")])
        assert again.status == SENT and again.value == "sent|" + c.value[len("sending|"):]
        await a.close()
    run(go())
    ttl_ms = redis.Redis.from_url(redis_url).pttl(key_prefix + "m1")
    assert 7 * 86_400_000 - 60_000 < ttl_ms <= 7 * 86_400_000


def test_held_until_lease_expires_then_reclaimed(redis_url, key_prefix):
    """Another owner's fresh claim is `held`; once older than the lease it is `reclaimed`, and
    the first owner's late mark reports the take-over."""
    async def go():
        a, b = store(redis_url, key_prefix, "a", lease_s=0.5), store(redis_url, key_prefix, "b", lease_s=0.5)
        [ca] = await a.claim_many([("m2", "1")])
        [cb] = await b.claim_many([("m2", "1")])
        assert cb.status == HELD and cb.value == ca.value
        await asyncio.sleep(0.6)
        [cb] = await b.claim_many([("m2", "1")])
        assert cb.status == RECLAIMED and cb.value.startswith("sending|b.1|")
        assert await a.mark_sent_many([("m2", ca.value)]) == [MARK_TAKEN]
        assert await b.mark_sent_many([("m2", cb.value)]) == [MARK_TAKEN]  # a already marked it sent
        await a.close()
        await b.close()
    run(go())


def test_same_token_gets_its_claim_back(redis_url, key_prefix):
    """A claim retried with the same token (its reply was lost) is the same claim, not `held`;
    another token of the same owner is `held`."""
    async def go():
        a = store(redis_url, key_prefix, "a")
        [c1] = await a.claim_many([("m3", "7")])
        [c2, c3] = await a.claim_many([("m3", "7"), ("m3", "8")])
        assert (c2.status, c2.value) == (CLAIMED, c1.value) and c3.status == HELD
        assert await a.mark_sent_many([("m3", c1.value)] * 2) == [MARK_KEPT, MARK_KEPT]  # mark is repeatable
        await a.close()
    run(go())


def test_release_forgets_only_our_claim(redis_url, key_prefix):
    """Release deletes the key when it still holds our claim, and leaves someone else's alone."""
    async def go():
        a = store(redis_url, key_prefix, "a")
        [c] = await a.claim_many([("m4", "1")])
        await a.release_many([("m4", "sending|other|1")])
        assert (await a.claim_many([("m4", "2")]))[0].status == HELD
        await a.release_many([("m4", c.value)])
        assert (await a.claim_many([("m4", "3")]))[0].status == CLAIMED
        await a.close()
    run(go())


def test_mark_when_key_vanished_records_sent_anew(redis_url, key_prefix):
    """If Redis lost the key (restart without persistence), mark reports MARK_MISSING and writes
    `sent` with the full TTL, so the message is not sent again."""
    async def go():
        a = store(redis_url, key_prefix, "a")
        [c] = await a.claim_many([("m5", "1")])
        redis.Redis.from_url(redis_url).delete(key_prefix + "m5")
        assert await a.mark_sent_many([("m5", c.value)]) == [MARK_MISSING]
        assert (await a.claim_many([("m5", "2")]))[0].status == SENT
        await a.close()
    run(go())


def test_batch_of_many_keys_is_one_call(redis_url, key_prefix):
    """1000 claims in one call come back in order, each `claimed`; repeating them: each `held`."""
    async def go():
        a = store(redis_url, key_prefix, "a")
        ids = [(f"m{i}", str(i)) for i in range(1000)]
        first = await a.claim_many(ids)
        second = await store(redis_url, key_prefix, "b").claim_many(ids)
        assert [c.status for c in first] == [CLAIMED] * 1000
        assert [c.value for c in second] == [c.value for c in first]
        assert {c.status for c in second} == {HELD}
        await a.close()
    run(go())


def test_unreachable_redis_raises_store_unavailable():
    """No Redis listening: StoreUnavailable (the sender's cue to pause), after the socket timeout."""
    async def go():
        a = store(f"redis://127.0.0.1:{free_port()}/0", "x:", "a", socket_timeout_s=0.5)
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await a.claim_many([("m", "1")])
        assert time.monotonic() - t0 < 30
        await a.close()
    run(go())


def test_memory_store_has_the_same_semantics():
    """The in-process store: claim, held for another token, same token re-entrant, sent, release."""
    async def go():
        m = MemoryIdempotency()
        [c] = await m.claim_many([("x", "1")])
        assert [s.status for s in await m.claim_many([("x", "2"), ("x", "1")])] == [HELD, CLAIMED]
        await m.release_many([("x", c.value)])
        [c] = await m.claim_many([("x", "3")])
        assert await m.mark_sent_many([("x", c.value)]) == [MARK_KEPT]
        assert (await m.claim_many([("x", "4")]))[0].status == SENT
    run(go())


def test_config_validation():
    """The lease must be shorter than the key TTL, the URL a Redis URL."""
    with pytest.raises(DeliveryConfigError, match='"lease_s" must be > 0 and < "ttl_s"'):
        IdempotencyConfig("redis://x", lease_s=10, ttl_s=5)
    with pytest.raises(DeliveryConfigError, match="redis://"):
        IdempotencyConfig("http://x")
