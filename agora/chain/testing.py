"""Helpers to run apps and nodes on loopback, for tests and scripts (no pytest needed).

- ``free_port()``: a TCP port on 127.0.0.1 that nobody listens on right now.
- ``wait_until_ready(url, timeout)``: poll until a URL answers 200.
- ``running_app(app)``: serve an ASGI app with uvicorn from the running event loop.
- ``app_in_thread(app)``: the same from sync code, in a background thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from agora.chain.runner import server_for

__all__ = ["app_in_thread", "free_port", "running_app", "wait_until_ready"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200. Raises RuntimeError (with the reason) on timeout or
    if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process exited with {proc.returncode} before {url} answered")
        try:
            response = httpx.get(url, timeout=1.0)
            if response.status_code == 200:
                return
            last = response.status_code
        except httpx.HTTPError as error:
            last = error
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s (last: {last!r})")


@contextlib.asynccontextmanager
async def running_app(app: Any, port: int | None = None) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 from the running event loop; yields its base URL."""
    port = port or free_port()
    server = server_for(app, host="127.0.0.1", port=port)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the server stopped before it started")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.contextmanager
def app_in_thread(app: Any, port: int | None = None) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 from a background thread; yields its base URL."""
    port = port or free_port()
    server = server_for(app, host="127.0.0.1", port=port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
