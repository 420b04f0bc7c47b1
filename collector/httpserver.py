"""The HTTP server under the collector's routes: uvicorn, in the collector's own event loop, with
its limits set where the server enforces them.

- **Connections:** at most ``MAX_CONNECTIONS`` at once; past it uvicorn answers 503.
- **Request line and headers:** h11 refuses a head still incomplete past ``MAX_HEAD`` bytes
  (400, connection closed); a head that arrived whole is checked by ``limits``: a target over
  ``MAX_TARGET`` bytes is 414, more than ``MAX_HEADERS`` headers or ``MAX_HEAD`` bytes of them 431.
- **Time to send a request:** ``REQUEST_DEADLINE`` from the connection's first byte (or the end
  of its previous response) to the request's last byte, head and body. uvicorn has no such
  timeout (its keep-alive timer restarts on every byte, so a client sending one header line
  every few seconds keeps a connection for as long as it likes); ``_DeadlineProtocol`` adds it to
  uvicorn's own h11 protocol: 408 and the connection closed.
- **Body:** at most ``MAX_BODY`` bytes (``limits``: 413 from the Content-Length, or as soon as
  a chunked body passes it).

uvicorn's signal handling is left out: the collector owns SIGTERM and SIGHUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import h11
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 4096  # the systemd unit's LimitNOFILE leaves room for these and the sources
MAX_HEAD = 16 * 1024
MAX_TARGET = 4 * 1024
MAX_HEADERS = 100
MAX_BODY = 64 * 1024
# A refused body up to this size is read and dropped before the 413 goes out: a client that
# sends its whole body before reading (most do) then gets the answer, not a reset connection
# (closing on unread data resets it). A larger one is answered at once.
DRAIN_MAX = 16 * 2**20
REQUEST_DEADLINE = 10.0
KEEP_ALIVE = 5.0


class _DeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for receiving each request whole."""

    deadline_s = REQUEST_DEADLINE
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # asyncio turns Nagle off only on sockets made with proto IPPROTO_TCP; ours (see serve)
        # has proto 0. With Nagle on, a small response's body (written after its head) waited for
        # the client's delayed ACK: a 40 ms stall on small answers (bench/exchange.py's search tail).
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _watch(self) -> None:
        """Armed while a request is still arriving (or the next one may start), off once it is whole."""
        receiving = self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing()
        if receiving and self._deadline is None:
            self._deadline = self.loop.call_later(self.deadline_s, self._expired)
        elif not receiving:
            self._disarm()

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # no response of ours under way
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        self.transport.close()


def limits(app: ASGIApp, limit: int = MAX_BODY) -> ASGIApp:
    """Refuse, before any route sees it, a request whose target, headers or body are too large."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = scope["headers"]
        if len(scope["raw_path"]) + len(scope["query_string"]) > MAX_TARGET:
            await _refuse(send, 414, f"request target over {MAX_TARGET} bytes")
            return
        if len(headers) > MAX_HEADERS or sum(len(k) + len(v) for k, v in headers) > MAX_HEAD:
            await _refuse(send, 431, f"more than {MAX_HEADERS} headers or {MAX_HEAD} bytes of them")
            return
        declared = dict(headers).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            if declared.isdigit() and int(declared) <= DRAIN_MAX:
                await _drain(receive)
            await _refuse(send, 413, f"request body over {limit} bytes")
            return
        if declared is None and b"transfer-encoding" in dict(headers):
            # A chunked body says its size only by arriving: read it whole here (it is small, or
            # refused), then hand the app the same messages.
            buffered: list[Message] = []
            size = 0
            while True:
                message = await receive()
                buffered.append(message)
                size += len(message.get("body", b""))
                if size > limit:
                    await _drain(receive)
                    await _refuse(send, 413, f"request body over {limit} bytes")
                    return
                if message["type"] != "http.request" or not message.get("more_body"):
                    break

            async def replay() -> Message:
                return buffered.pop(0) if buffered else await receive()

            await app(scope, replay, send)
            return
        await app(scope, receive, send)

    return guarded


async def _drain(receive: Receive) -> None:
    """Read and drop the rest of a request body, ``DRAIN_MAX`` bytes at most."""
    total = 0
    while total <= DRAIN_MAX:
        message = await receive()
        total += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body"):
            return


async def _refuse(send: Send, status: int, why: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": f"{why}\n".encode()})


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:  # the collector handles its signals itself
        yield


@contextlib.asynccontextmanager
async def serve(app: ASGIApp, host: str, port: int) -> AsyncIterator[int]:
    """Serve ``app`` while the block runs; yields the bound port."""
    config = uvicorn.Config(
        limits(app), host=host, port=port, http=_DeadlineProtocol, ws="none", lifespan="off", log_config=None,
        access_log=False, server_header=False, date_header=False, limit_concurrency=MAX_CONNECTIONS,
        h11_max_incomplete_event_size=MAX_HEAD, timeout_keep_alive=int(KEEP_ALIVE), backlog=MAX_CONNECTIONS)
    config.load()
    # The socket is ours: a port in use raises OSError here (uvicorn would exit the process).
    sock = socket.create_server((host, port), backlog=MAX_CONNECTIONS, reuse_port=False)
    sock.setblocking(False)
    bound: int = sock.getsockname()[1]
    server = _Server(config)
    server.lifespan = config.lifespan_class(config)  # what uvicorn's serve() sets up before startup()
    await server.startup(sockets=[sock])
    try:
        yield bound
    finally:
        server.force_exit = True  # no graceful wait: the collector is stopping
        await server.shutdown()
