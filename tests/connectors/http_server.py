"""A webhook provider on loopback that misbehaves on purpose (aiohttp, in its own thread).

`behaviour(n, message) -> Reply` decides each answer; `n` counts requests from 1. Replies:
a status (with headers) after an optional delay, or a dropped connection. The server counts
requests, the peak number answered at once, and the messages it accepted (2xx) by
`Idempotency-Key`, which is what "delivered" means for a provider.

A batch (`{"messages": [...]}`, the webhook's batch option) gets `behaviour` for the whole
request and, when that is a 2xx, `{"results": [...]}` with `item_status(n, message)` for each
message (None leaves it out of the answer); the messages answered 2xx count as accepted by
their `message_id`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from tests.servers import free_port


@dataclass(frozen=True)
class Reply:
    status: int = 200
    delay_s: float = 0.0
    drop: bool = False
    headers: dict = field(default_factory=dict)
    gate: threading.Event | None = None  # answer only once this is set (30 s at most)


OK = Reply()


class WebhookServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.behaviour: Callable[[int, dict], Reply] = lambda n, m: OK
        self._lock = threading.Lock()
        self.reset()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook-server", daemon=True)

    def reset(self, behaviour: Callable[[int, dict], Reply] | None = None) -> None:
        with self._lock:
            self.behaviour = behaviour or (lambda n, m: OK)
            self.item_status: Callable[[int, dict], int | None] = lambda n, m: 200
            self.requests = 0
            self.active = 0
            self.peak = 0
            self.accepted: Counter[str] = Counter()
            self.received_at: dict[str, float] = {}
            self.headers: list[dict] = []
            self.bodies: list[dict] = []

    def start(self) -> WebhookServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self._ready.set()
        await self._stopping.wait()
        await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        with self._lock:
            self.requests += 1
            n = self.requests
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.headers.append(dict(request.headers))
            self.bodies.append(body)
            reply = self.behaviour(n, body)
        try:
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            if reply.gate is not None:
                await asyncio.get_running_loop().run_in_executor(None, reply.gate.wait, 30)
            if reply.drop:
                assert request.transport is not None
                request.transport.abort()
                raise asyncio.CancelledError()
            text = "{}"
            if 200 <= reply.status < 300 and isinstance(body, dict) and "messages" in body:
                results = []
                with self._lock:
                    for m in body["messages"]:
                        status = self.item_status(n, m)
                        if status is not None:
                            results.append({"message_id": m["message_id"], "status": status})
                        if status is not None and 200 <= status < 300:
                            self.accepted[m["message_id"]] += 1
                            self.received_at.setdefault(m["message_id"], time.time())
                text = orjson.dumps({"results": results}).decode()
            elif 200 <= reply.status < 300:
                key = request.headers.get("Idempotency-Key", "")
                with self._lock:
                    self.accepted[key] += 1
                    self.received_at.setdefault(key, time.time())
            return web.Response(status=reply.status, headers=reply.headers, text=text,
                                content_type="application/json")
        finally:
            with self._lock:
                self.active -= 1

    def delivered(self) -> Counter:
        """Accepted (2xx) count per Idempotency-Key."""
        with self._lock:
            return Counter(self.accepted)
