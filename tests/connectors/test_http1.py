"""connectors.http1 (the webhook's HTTP/1.1 client) against raw asyncio servers on loopback.

Each test's server writes exactly the bytes it wants (chunked, close-delimited, 1xx, malformed,
an idle connection closed under the client) and counts connections and requests, so keep-alive
reuse and the resend of a request lost on a stale connection are seen on the wire.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable

import pytest

from connectors.http1 import Http1Pool, HttpConnectionError, Response

pytestmark = pytest.mark.integration

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

# answer(writer, n, body) -> keep the connection open? n counts requests from 1 (all connections)
Answer = Callable[[asyncio.StreamWriter, int, bytes], Awaitable[bool]]


class RawServer:
    """Reads POSTs (Content-Length bodies) and lets `answer` write whatever it wants."""

    def __init__(self, answer: Answer, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        self.connections = 0
        self.requests = 0
        self.bodies: list[bytes] = []
        self.heads: list[bytes] = []

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/hook?x=1"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    break
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                body = await reader.readexactly(length)
                self.requests += 1
                self.heads.append(head)
                self.bodies.append(body)
                if not await self.answer(writer, self.requests, body):
                    break
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def post_times(answer, n: int) -> tuple["RawServer", list[Response]]:
    """`n` POSTs of `{}` through one pool to a server answering with `answer`: (server, answers)."""
    async def main():
        async with RawServer(answer) as server:
            pool = Http1Pool(server.url)
            try:
                got = [await pool.post(b"{}") for _ in range(n)]
            finally:
                await pool.close()
            return server, got
    return run(main())


async def reply(writer: asyncio.StreamWriter, *parts: bytes, pause_s: float = 0.01) -> None:
    """Write the answer in several packets, so the client parses it across `data_received`s."""
    for i, part in enumerate(parts):
        if i:
            await writer.drain()
            await asyncio.sleep(pause_s)
        writer.write(part)


def test_content_length_and_keep_alive_reuse_one_connection():
    async def answer(writer, n, body):
        writer.write(b"HTTP/1.1 201 Created\r\nX-N: %d\r\nContent-Length: %d\r\n\r\n%s" % (n, len(body), body))
        return True

    async def main():
        async with RawServer(answer) as server:
            pool = Http1Pool(server.url, headers={"Authorization": "Bearer t"})
            try:
                got = [await pool.post(b"body-%d" % i, b"Idempotency-Key: k%d\r\n" % i) for i in range(5)]
            finally:
                await pool.close()
            return server, got

    server, got = run(main())
    assert got == [Response(201, {"x-n": str(i + 1), "content-length": str(len(b"body-%d" % i))}, b"body-%d" % i)
                   for i in range(5)]
    assert server.connections == 1 and server.requests == 5
    assert server.heads[0].startswith(b"POST /hook?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Authorization: Bearer t\r\n" in server.heads[0] and b"Idempotency-Key: k0\r\n" in server.heads[0]


def test_concurrent_posts_share_at_most_max_connections():
    async def answer(writer, n, body):
        await asyncio.sleep(0.005)
        writer.write(OK)
        return True

    async def main():
        async with RawServer(answer) as server:
            pool = Http1Pool(server.url, max_connections=3)
            try:
                got = await asyncio.gather(*(pool.post(b"x") for _ in range(40)))
            finally:
                await pool.close()
            return server, got

    server, got = run(main())
    assert [r.status for r in got] == [200] * 40
    assert server.requests == 40 and server.connections == 3


def test_chunked_answer_in_pieces_with_extension_and_trailer():
    async def answer(writer, n, body):
        await reply(writer, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A:  spaced  \r\n\r\n5\r\nhel",
                    b"lo\r\n7;ext=1\r\n, world\r\n", b"0\r\nX-Trailer: t\r\n\r\n")
        return True

    server, got = post_times(answer, 2)
    assert [(r.status, r.body, r.headers) for r in got] == [
        (200, b"hello, world", {"transfer-encoding": "chunked", "x-a": "spaced"})] * 2  # trailers left out
    assert server.connections == 1  # a chunked answer ends at its last chunk: the connection is reused


def test_answer_delimited_by_the_end_of_the_connection():
    async def answer(writer, n, body):
        await reply(writer, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst part, ", b"second part")
        return False  # no Content-Length, not chunked: the close ends the body

    server, got = post_times(answer, 2)
    assert [(r.status, r.body) for r in got] == [(200, b"first part, second part")] * 2
    assert server.connections == 2  # not reused


def test_connection_close_and_http10_are_not_reused():
    answers = {
        "close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
        "1.0": b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        "1.0 keep-alive": b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}",
    }

    def case(raw: bytes, close: bool):
        async def answer(writer, n, body):
            writer.write(raw)
            return not close  # a server that says close does close, but the client must not wait for it

        return post_times(answer, 3)

    for name, close, connections in (("close", False, 3), ("close", True, 3), ("1.0", False, 3),
                                      ("1.0 keep-alive", False, 1)):
        server, got = case(answers[name], close)
        assert [(r.status, r.body) for r in got] == [(200, b"{}")] * 3, name
        assert (server.connections, server.requests) == (connections, 3), (name, close)


def test_interim_1xx_answers_are_skipped():
    async def answer(writer, n, body):
        await reply(writer, b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                    b"HTTP/1.1 202 Accepted\r\nContent-Length: 4\r\n\r\ndone")
        return True

    server, got = post_times(answer, 2)
    assert got == [Response(202, {"content-length": "4"}, b"done")] * 2
    assert server.connections == 1


def test_204_without_body_keeps_the_connection():
    async def answer(writer, n, body):
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        return True

    server, got = post_times(answer, 3)
    assert [(r.status, r.body) for r in got] == [(204, b"")] * 3
    assert server.connections == 1


def test_idle_connection_closed_by_the_server_is_replaced():
    """The server closes each connection after its first answer (an idle timeout): the client
    sees the close while the connection is idle and opens a new one."""
    async def answer(writer, n, body):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % n)
        await writer.drain()
        return False

    async def main():
        async with RawServer(answer) as server:
            pool = Http1Pool(server.url)
            try:
                got = []
                for _ in range(3):
                    got.append(await pool.post(b"{}"))
                    await asyncio.sleep(0.05)  # the close arrives while the connection is idle
            finally:
                await pool.close()
            return server, got

    server, got = run(main())
    assert [r.body for r in got] == [b"1", b"2", b"3"]
    assert (server.connections, server.requests) == (3, 3)


def test_request_lost_on_a_stale_connection_is_sent_again_once():
    """The server closes a kept-alive connection right as the next request arrives (the idle
    timeout race): no byte of answer came back, so the request goes again on a new connection."""
    async def answer(writer, n, body):
        if n == 2:
            return False  # read, then closed without a byte of answer
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % n)
        return True

    async def main():
        async with RawServer(answer) as server:
            pool = Http1Pool(server.url)
            try:
                got = [await pool.post(b"a"), await pool.post(b"b")]
            finally:
                await pool.close()
            return server, got

    server, got = run(main())
    assert [(r.status, r.body) for r in got] == [(200, b"1"), (200, b"3")]
    assert server.bodies == [b"a", b"b", b"b"] and server.connections == 2


def test_no_resend_on_a_new_connection_or_after_part_of_an_answer():
    async def closes_at_once(writer, n, body):
        return False

    async def cut_short(writer, n, body):
        if n == 1:
            writer.write(OK)
            return True
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}")
        return False

    async def main(answer, posts):
        async with RawServer(answer) as server:
            pool = Http1Pool(server.url)
            try:
                for _ in range(posts - 1):
                    await pool.post(b"{}")
                with pytest.raises(HttpConnectionError, match="closed before the answer"):
                    await pool.post(b"{}")
            finally:
                await pool.close()
            return server

    assert run(main(closes_at_once, 1)).requests == 1  # a fresh connection: not sent again
    assert run(main(cut_short, 2)).requests == 2  # bytes of the answer came back: not sent again


@pytest.mark.parametrize("raw", [
    b"HELLO\r\n\r\n",
    b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000,
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
], ids=["garbage", "status", "length", "two-lengths", "chunk-size", "huge-head", "upgrade"])
def test_malformed_answer_is_a_connection_error_and_not_reused(raw):
    async def answer(writer, n, body):
        writer.write(raw if n == 1 else OK)
        return True

    async def main():
        async with RawServer(answer) as server:
            pool = Http1Pool(server.url)
            try:
                with pytest.raises(HttpConnectionError, match="malformed HTTP answer"):
                    await pool.post(b"{}")
                after = await pool.post(b"{}")
            finally:
                await pool.close()
            return server, after

    server, after = run(main())
    assert after.status == 200
    assert (server.connections, server.requests) == (2, 2)


def test_bytes_after_the_answer_make_the_connection_unusable():
    async def answer(writer, n, body):
        writer.write(OK + b"HTTP/1.1 200 OK\r\n")
        return True

    server, got = post_times(answer, 2)
    assert [r.body for r in got] == [b"{}"] * 2
    assert server.connections == 2


def test_one_deadline_for_the_whole_request():
    async def answer(writer, n, body):
        await reply(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", b"{}", pause_s=1.0)
        return True

    async def main():
        async with RawServer(answer) as server:
            pool = Http1Pool(server.url, timeout_s=0.3)
            loop = asyncio.get_running_loop()
            start = loop.time()
            try:
                with pytest.raises(TimeoutError):
                    await pool.post(b"{}")
            finally:
                await pool.close()
            return loop.time() - start

    assert 0.25 < run(main()) < 0.9


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_verifies_the_certificate_and_keeps_alive(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def answer(writer, n, body):
        await reply(writer, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"2\r\nok\r\n0\r\n\r\n")
        return True

    async def main():
        async with RawServer(answer, tls=server_tls) as server:
            pool = Http1Pool(server.url, ssl=ssl.create_default_context(cafile=str(cert)))
            untrusted = Http1Pool(server.url)  # the default context does not know this certificate
            try:
                got = [await pool.post(b"{}") for _ in range(3)]
                with pytest.raises(HttpConnectionError, match="cannot connect"):
                    await untrusted.post(b"{}")
            finally:
                await pool.close()
                await untrusted.close()
            return server, got

    server, got = run(main())
    assert [(r.status, r.body) for r in got] == [(200, b"ok")] * 3
    assert (server.connections, server.requests) == (1, 3)  # kept alive; the refused handshake never got here
