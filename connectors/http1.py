"""A lean HTTP/1.1 POST client for the webhook channel: a pool of keep-alive connections.

Why not aiohttp: profiling `espresso deliver` showed aiohttp's request machinery (session,
request and response objects, payload registry, stream readers, several tasks and futures
per POST) to be the largest part of the CPU per message, 160-260 us a request on the 2-core
machine (BENCHMARKS.md, "Delivery that keeps up"). A webhook needs much less: write a POST,
read the status, a few headers and the body. Here a request is one `transport.write` of
prepared bytes and one future; the response is parsed in `data_received` as it arrives, by
llhttp (`httptools`, the parser under uvicorn) whose callbacks fill in the `Response`.

What it does: http and https (certificates verified: the default context or the caller's),
responses delimited by Content-Length, chunked or the end of the connection, 1xx skipped,
keep-alive with reuse (`Connection: close` and HTTP/1.0 honoured), at most `max_connections`
connections, one deadline for the whole request (connecting included). A request written to
a pooled connection that the server had closed meanwhile (its idle timeout) is sent again on a
new connection when not one byte of answer came back, as browsers do. What it does not:
redirects (a webhook answer is a status), proxies, compression, pipelining.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections import deque
from typing import NamedTuple
from urllib.parse import urlsplit

import httptools

__all__ = ["Http1Pool", "HttpConnectionError", "Response"]

_MAX_HEAD = 64 * 1024


class HttpConnectionError(ConnectionError):
    """No usable answer: connection refused, reset or closed early, or a malformed response."""


class Response(NamedTuple):
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class _Conn(asyncio.Protocol):
    """One connection; one request at a time; the answer is parsed by llhttp (httptools) as
    bytes arrive, its callbacks below fill in the response."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.waiter: asyncio.Future | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.got_bytes = False
        self.head_bytes = 0  # bytes received before the final status's headers were complete
        self.status = 0  # set once the headers of the final (non-1xx) answer are complete
        self.headers: dict[str, str] = {}
        self.until_close = False  # the body is delimited by the end of the connection
        self.keep = True
        self.body: list[bytes] = []

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        w = self.waiter
        if w is not None and not w.done():
            # httptools has no feed_eof: the end of the connection ends only a body that no
            # Content-Length or chunked encoding delimits; any other answer is cut short.
            if self.status and self.until_close:
                self.keep = False
                self._done()
            else:
                w.set_exception(HttpConnectionError(f"connection closed before the answer: {exc or 'EOF'}"))

    def data_received(self, data: bytes) -> None:
        w = self.waiter
        if w is None or w.done():  # nothing asked: the connection is not usable
            self.abort()
            return
        self.got_bytes = True
        if not self.status:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
            if not self.status and self.head_bytes > _MAX_HEAD:
                raise httptools.HttpParserError("header section too long")
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self.keep = False
            self.abort()
            if not w.done():
                w.set_exception(HttpConnectionError(f"malformed HTTP answer: {exc!r}"))

    def request(self, data: bytes) -> asyncio.Future:
        self.waiter = self.loop.create_future()
        self.got_bytes = False
        self.status, self.head_bytes, self.keep = 0, 0, True
        assert self.transport is not None
        self.transport.write(data)
        return self.waiter

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # httptools callbacks (called from feed_data)

    def on_message_begin(self) -> None:
        if self.status:  # bytes after the answer, nobody asked for them: do not reuse
            self.keep = False
        self.headers = {}
        self.body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.status:  # not the trailers of a chunked body
            self.headers[name.decode("latin-1").lower()] = value.decode("latin-1").rstrip()  # llhttp keeps trailing OWS

    def on_headers_complete(self) -> None:
        code = self.parser.get_status_code()
        if code < 200:
            return  # 1xx interim answer: its message completes at once, the real one follows
        self.status = code
        self.keep = self.parser.should_keep_alive()  # Connection, HTTP/1.0, close-delimited
        te = self.headers.get("transfer-encoding")
        self.until_close = not te.lower().endswith("chunked") if te else "content-length" not in self.headers

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.status:
            self._done()

    def _done(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            body = self.body
            w.set_result(Response(self.status, self.headers,
                                  body[0] if len(body) == 1 else b"".join(body)))


class Http1Pool:
    """POSTs to one URL over at most `max_connections` keep-alive connections; one event loop."""

    def __init__(self, url: str, *, max_connections: int = 100, timeout_s: float = 5.0,
                 headers: dict[str, str] | None = None, ssl: ssl_module.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = (ssl or ssl_module.create_default_context()) if parts.scheme == "https" else None
        self.max_connections = max_connections
        self.timeout_s = timeout_s
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]
        head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        for text in (target, host, head.replace("\r\n", "")):
            if "\r" in text or "\n" in text:
                raise ValueError("line break in the URL or a header")
        self._head = f"POST {target} HTTP/1.1\r\nHost: {host}\r\n{head}Content-Length: ".encode("latin-1")
        self._idle: list[_Conn] = []
        self._waiters: deque[asyncio.Future] = deque()
        self._count = 0

    async def post(self, body: bytes, extra_headers: bytes = b"") -> Response:
        """One POST; `extra_headers` are complete `Name: value\\r\\n` lines. Raises
        `HttpConnectionError` or `TimeoutError` (after `timeout_s`, connecting included)."""
        data = b"%s%d\r\n%s\r\n%s" % (self._head, len(body), extra_headers, body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        for _try in range(2):
            conn, reused = await self._acquire(loop, deadline)
            waiter = conn.request(data)
            timer = loop.call_at(deadline, _expire, waiter)
            try:
                response = await waiter
            except TimeoutError:
                self._discard(conn)
                raise TimeoutError(f"no answer within {self.timeout_s}s") from None
            except HttpConnectionError:
                self._discard(conn)
                if reused and not conn.got_bytes:
                    continue  # the server had closed the idle connection: send on a new one
                raise
            except BaseException:
                self._discard(conn)
                raise
            finally:
                timer.cancel()
            if conn.keep and not conn.closed:
                self._release(conn)
            else:
                self._discard(conn)
            return response
        raise HttpConnectionError("connection closed before the answer")

    async def close(self) -> None:
        for conn in self._idle:
            conn.abort()
        self._idle.clear()
        self._count = 0

    async def _acquire(self, loop: asyncio.AbstractEventLoop, deadline: float) -> tuple[_Conn, bool]:
        while True:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn, True
                self._count -= 1
            if self._count < self.max_connections:
                self._count += 1
                try:
                    return await self._connect(loop, deadline), False
                except BaseException:
                    self._count -= 1
                    self._wake()
                    raise
            waiter = loop.create_future()
            self._waiters.append(waiter)
            timer = loop.call_at(deadline, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Conn:
        try:
            async with asyncio.timeout_at(deadline):
                _t, conn = await loop.create_connection(
                    lambda: _Conn(loop), self.host, self.port, ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None)
        except TimeoutError:
            raise TimeoutError(f"no connection within {self.timeout_s}s") from None
        except (OSError, ssl_module.SSLError) as exc:
            raise HttpConnectionError(f"cannot connect: {type(exc).__name__}") from exc
        return conn

    def _release(self, conn: _Conn) -> None:
        conn.waiter = None
        self._idle.append(conn)
        self._wake()

    def _discard(self, conn: _Conn) -> None:
        conn.abort()
        self._count -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(TimeoutError())
