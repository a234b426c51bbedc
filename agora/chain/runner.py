"""Running a node with its API in one process, and stopping it cleanly.

``serve(node, host, port)`` starts the node's loop and uvicorn on the same event loop. SIGTERM or
SIGINT (Ctrl-C) asks the node to stop after the block in progress, ends the event streams, then
stops the HTTP server and closes the store. A follower that refuses a block stops the same way
and ``serve`` returns a non-zero exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from agora.chain.api import create_app
from agora.chain.errors import FollowerDiverged
from agora.chain.node import Node

__all__ = ["EXIT_DIVERGED", "EXIT_FAILED", "QuietServer", "bind", "serve", "server_for"]

EXIT_FAILED = 1
EXIT_DIVERGED = 3


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: whoever runs it decides when it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, so that a port in use is reported before anything else starts.

    Raises OSError.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def server_for(app: FastAPI, **options: Any) -> QuietServer:
    """A QuietServer for ``app``; ``options`` go to ``uvicorn.Config`` (host, port ...)."""
    settings: dict[str, Any] = {
        "log_level": "warning",
        "lifespan": "off",
        "timeout_graceful_shutdown": 5,
        **options,
    }
    return QuietServer(uvicorn.Config(app, **settings))


async def serve(node: Node, sock: socket.socket, on_ready: Callable[[], None] | None = None) -> int:
    """Run ``node`` and its API on ``sock`` until a signal or a failure. Returns an exit code."""
    server = server_for(create_app(node))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.request_stop)
    try:
        await node.start()
        server_task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not server_task.done():
            await asyncio.sleep(0.01)
        if server.started and on_ready is not None:
            on_ready()
        stopped = asyncio.create_task(node.wait())
        await asyncio.wait({server_task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        node.request_stop()  # ends event streams so the server can finish its connections
        server.should_exit = True
        with contextlib.suppress(SystemExit):
            await server_task
        await stopped
        await node.stop()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if isinstance(node.failure, FollowerDiverged):
        return EXIT_DIVERGED
    return EXIT_FAILED if node.failure is not None else 0
