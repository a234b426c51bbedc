"""A small HTTP/1.1 client for the gateway's calls to miners: pooled keep-alive connections over
asyncio protocols, responses parsed by ``httptools`` (llhttp, the parser uvicorn uses).

Why not httpx: on the build machine one httpx request on loopback costs about 1 ms of CPU, more
than the whole budget the gateway has for itself (its benchmark asks for < 2 ms added at p50
and >= 80 % of direct throughput on a 2-core machine it shares with the miner). This client costs
about 50 us a request. It does only what the gateway needs: requests to ``http://host:port``
with a body in memory, a response read whole or streamed chunk by chunk (chunked transfer
encoding is decoded by the parser), per-call deadlines.

    pool = HttpPool()
    response = await pool.request("127.0.0.1", 8091, "POST", "/v1/embed", headers, body, 10.0)
    stream = await pool.stream("127.0.0.1", 8092, "POST", "/v1/generate", headers, body, 10.0)
    async with stream:
        async for chunk in stream.iter_chunks(idle_timeout=15.0): ...
    await pool.aclose()

Failures raise :class:`UpstreamError` (refused, reset, timed out, malformed response): the
gateway treats all of them as "this miner failed" and tries another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import httptools

__all__ = ["HttpPool", "Response", "StreamingResponse", "UpstreamError"]

MAX_IDLE_PER_HOST = 256
MAX_RESPONSE_BYTES = 64 << 20


class UpstreamError(Exception):
    """The upstream could not be reached, broke the connection, timed out or sent garbage."""

    def __init__(self, message: str, *, timeout: bool = False, sent: bool = True) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.sent = sent


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.used = False
        self._headers: dict[str, str] = {}
        self._header_name = b""
        self._body: list[bytes] = []
        self._size = 0
        self._head: asyncio.Future[tuple[int, dict[str, str]]] | None = None
        self._done: asyncio.Future[None] | None = None
        self._queue: asyncio.Queue[bytes | BaseException | None] | None = None
        self._got_bytes = False
        self._keep_alive = False

    # -- protocol callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamError("the upstream tried to upgrade the connection"))
        except httptools.HttpParserError as error:
            self._fail(UpstreamError(f"malformed HTTP response: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(
            UpstreamError(
                f"the upstream closed the connection ({exc or 'EOF'})", sent=self._got_bytes
            )
        )

    def eof_received(self) -> bool:
        return False

    # -- parser callbacks ---------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._keep_alive = self.parser.should_keep_alive()  # only valid before the body
        if self._head is not None and not self._head.done():
            self._head.set_result((self.parser.get_status_code(), self._headers))

    def on_body(self, body: bytes) -> None:
        if self._queue is not None:
            self._queue.put_nowait(bytes(body))
            return
        self._size += len(body)
        if self._size > MAX_RESPONSE_BYTES:
            self._fail(UpstreamError("the response is too large"))
            return
        self._body.append(bytes(body))

    def on_message_complete(self) -> None:
        if self._queue is not None:
            self._queue.put_nowait(None)
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    # -- use ----------------------------------------------------------------------------------

    def _fail(self, error: UpstreamError) -> None:
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        if self._done is not None and not self._done.done():
            self._done.set_exception(error)
            self._done.exception()  # mark retrieved: a stream may never await it
        if self._queue is not None:
            self._queue.put_nowait(error)
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.abort()

    def start(self, data: bytes, streaming: bool) -> None:
        loop = asyncio.get_running_loop()
        self._headers = {}
        self._body = []
        self._size = 0
        self._got_bytes = False
        self._keep_alive = False
        self._head = loop.create_future()
        self._done = loop.create_future()
        self._queue = asyncio.Queue() if streaming else None
        self.used = True
        assert self.transport is not None
        self.transport.write(data)

    async def head(self) -> tuple[int, dict[str, str]]:
        assert self._head is not None
        return await self._head

    async def finish(self) -> bytes:
        assert self._done is not None
        await self._done
        return b"".join(self._body)

    def reusable(self) -> bool:
        return (
            not self.closed
            and self._done is not None
            and self._done.done()
            and self._done.exception() is None
            and self._keep_alive
        )

    def abort(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.abort()

    @property
    def queue(self) -> asyncio.Queue[bytes | BaseException | None]:
        assert self._queue is not None
        return self._queue


def _encode_request(
    method: str, target: str, host: str, port: int, headers: Iterable[tuple[str, str]], body: bytes
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"]
    for name, value in headers:
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"Content-Length: {len(body)}\r\n\r\n")
    return "".join(lines).encode("latin-1") + body


class StreamingResponse:
    """A response whose body arrives chunk by chunk. Use as an async context manager."""

    def __init__(
        self, pool: HttpPool, key: tuple[str, int], conn: _Connection, status: int, headers: Any
    ) -> None:
        self._pool = pool
        self._key = key
        self._conn = conn
        self.status = status
        self.headers: dict[str, str] = headers
        self._finished = False

    async def iter_chunks(self, idle_timeout: float) -> AsyncIterator[bytes]:
        """The body's chunks as they come. Raises UpstreamError if the connection breaks or no
        chunk arrives for ``idle_timeout`` seconds."""
        queue = self._conn.queue
        while True:
            try:
                async with asyncio.timeout(idle_timeout):
                    item = await queue.get()
            except TimeoutError:
                self._conn.abort()
                raise UpstreamError(
                    f"no data for {idle_timeout:g} s in the middle of a stream", timeout=True
                ) from None
            if item is None:
                self._finished = True
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def read(self, timeout: float) -> bytes:
        chunks = []
        async with asyncio.timeout(timeout):
            async for chunk in self.iter_chunks(timeout):
                chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        if self._finished and self._conn.reusable():
            self._pool._release(self._key, self._conn)
        else:
            self._conn.abort()

    async def __aenter__(self) -> StreamingResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class HttpPool:
    """Keep-alive connections per ``(host, port)``; one request per connection at a time."""

    def __init__(self, connect_timeout: float = 3.0) -> None:
        self.connect_timeout = connect_timeout
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._closed = False

    async def _connect(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(_Connection, host, port)
        except TimeoutError:
            raise UpstreamError(f"connecting to {host}:{port} timed out", sent=False) from None
        except OSError as error:
            raise UpstreamError(
                f"cannot connect to {host}:{port}: {error.strerror or error}", sent=False
            ) from None
        return conn

    def _take(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    def _release(self, key: tuple[str, int], conn: _Connection) -> None:
        if self._closed:
            conn.abort()
            return
        idle = self._idle.setdefault(key, [])
        if len(idle) < MAX_IDLE_PER_HOST:
            idle.append(conn)
        else:
            conn.abort()

    async def _send(
        self, host: str, port: int, data: bytes, streaming: bool
    ) -> tuple[_Connection, int, dict[str, str]]:
        """Send on a pooled connection (a fresh one if a reused one turns out dead before any
        byte of answer: the server closed it while idle)."""
        key = (host, port)
        conn = self._take(key)
        for attempt in (0, 1):
            if conn is None:
                conn = await self._connect(host, port)
            reused = conn.used
            conn.start(data, streaming)
            try:
                status, headers = await conn.head()
            except UpstreamError as error:
                conn.abort()
                if reused and not error.sent and attempt == 0:
                    conn = None
                    continue
                raise
            except BaseException:
                conn.abort()
                raise
            return conn, status, headers
        raise AssertionError("unreachable")

    async def request(
        self,
        host: str,
        port: int,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        timeout: float,
    ) -> Response:
        """Send one request and read the whole response within ``timeout`` seconds.

        Raises:
            UpstreamError: refused, broken, timed out or malformed.
        """
        data = _encode_request(method, target, host, port, headers, body)
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(timeout):
                conn, status, response_headers = await self._send(host, port, data, False)
                content = await conn.finish()
        except TimeoutError:
            if conn is not None:
                conn.abort()
            raise UpstreamError(
                f"{host}:{port} did not answer within {timeout:g} s", timeout=True
            ) from None
        except BaseException:
            if conn is not None:
                conn.abort()
            raise
        if conn.reusable():
            self._release((host, port), conn)
        else:
            conn.abort()
        return Response(status, response_headers, content)

    async def stream(
        self,
        host: str,
        port: int,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        timeout: float,
    ) -> StreamingResponse:
        """Send one request and return once the response headers arrived (within ``timeout``).

        Raises:
            UpstreamError: refused, broken, timed out or malformed.
        """
        data = _encode_request(method, target, host, port, headers, body)
        try:
            async with asyncio.timeout(timeout):
                conn, status, response_headers = await self._send(host, port, data, True)
        except TimeoutError:
            raise UpstreamError(
                f"{host}:{port} did not answer within {timeout:g} s", timeout=True
            ) from None
        return StreamingResponse(self, (host, port), conn, status, response_headers)

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)
