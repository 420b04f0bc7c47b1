"""The HTTP server's limits, enforced by the server (collector/httpserver.py): slow clients are cut
off by the request deadline while others are served, and oversized requests get a 4xx."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from collector import httpserver
from collector.configfile import load_config_text
from collector.engine import Engine
from collector.http import serve_status
from collector.sinks import NullSink
from tests.fixtures._ports import until

CONFIG = """
site: {{plant: p}}
data_dir: {tmp}
http: {{port: 0}}
sources: [{{id: sim, type: simulate}}]
profiles: {{cnc: {{rules: [{{state: idle}}]}}}}
machines: [{{id: m1, source: sim, profile: cnc}}]
"""
TRICKLERS = 2000


@contextlib.asynccontextmanager
async def server(tmp_path: Path) -> AsyncIterator[int]:
    loaded = load_config_text(CONFIG.format(tmp=tmp_path))
    reloads: list[int] = []

    async def reload() -> tuple[bool, list[str]]:
        reloads.append(1)
        return True, []

    async with serve_status(Engine(loaded, NullSink()), loaded.config.http, reload=reload) as port:
        assert port is not None
        yield port
    assert reloads == [], "no oversized request may reach a route"


@pytest.fixture
def many_files() -> None:
    """Room for 2,000 client and 2,000 server sockets in this one process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 3 * TRICKLERS + 1000
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"needs {wanted} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def test_trickling_clients_are_cut_off_and_others_still_served(tmp_path: Path, many_files: None,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that 2,000 connections sending one header byte now and then do not keep /healthz from
    answering within a second, and that the server closes every one of them at its deadline."""
    monkeypatch.setattr(httpserver._DeadlineProtocol, "deadline_s", 3.0)
    async with server(tmp_path) as port:
        conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        for _ in range(TRICKLERS):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            conns.append((reader, writer))
        closed = 0

        async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal closed
            with contextlib.suppress(ConnectionError):
                while not reader.at_eof():
                    writer.write(b"X-Slow: 1\r\n")  # never the blank line that ends the head
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            while await reader.read(1024):
                                pass
            closed += 1

        tasks = [asyncio.create_task(trickle(r, w)) for r, w in conns]
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                started = time.monotonic()
                response = await http.get("/healthz", timeout=5)
                answered = time.monotonic() - started
            assert response.status_code == 200 and response.text == "ok\n"
            assert answered < 1.0, f"/healthz took {answered:.2f}s beside {TRICKLERS} trickling connections"
            await until(lambda: closed == TRICKLERS, 30, "every trickling connection closed by the server",
                        explain=lambda: f"{closed} of {TRICKLERS} closed")
        finally:
            for task in tasks:
                task.cancel()
            for _, writer in conns:
                writer.close()


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read(200)
    finally:
        writer.close()


async def test_oversized_requests_get_a_4xx_and_change_nothing(tmp_path: Path) -> None:
    """Test that an over-long request line, too many headers and a 10 MB body each get a 4xx, reach
    no route (the reload hook is never called), and leave the server answering."""
    async with server(tmp_path) as port:
        long_line = b"GET /" + b"a" * (httpserver.MAX_TARGET + 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        assert (await _raw(port, long_line)).startswith(b"HTTP/1.1 414")
        huge_line = b"GET /" + b"a" * (httpserver.MAX_HEAD + 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        assert (await _raw(port, huge_line))[:12] in (b"HTTP/1.1 400", b"HTTP/1.1 414")  # h11 or ours
        many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 10) for i in range(httpserver.MAX_HEADERS + 1))
        assert (await _raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")).startswith(b"HTTP/1.1 431")
        chunked = (b"POST /api/v1/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"".join(b"10000\r\n" + b"y" * 0x10000 + b"\r\n" for _ in range(4)) + b"0\r\n\r\n")
        assert (await _raw(port, chunked)).startswith(b"HTTP/1.1 413")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            big = await http.post("/api/v1/reload", content=b"x" * (10 * 2**20))  # sends it all, then reads
            assert big.status_code == 413 and "request body over" in big.text
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/nope")).text.startswith("not found: try /healthz")


async def test_connections_are_served_with_nagle_off(tmp_path: Path) -> None:
    """Test that every accepted connection has TCP_NODELAY set. Our listening socket has proto 0,
    so asyncio leaves Nagle on; a small answer (head and body written apart) then waited for the
    client's delayed ACK, 40 ms (bench/exchange.py's search tail)."""
    import gc
    import socket

    async with server(tmp_path) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        assert (await client.get("/healthz")).status_code == 200  # the connection stays open (keep-alive)
        served = [p for p in gc.get_objects() if isinstance(p, httpserver._DeadlineProtocol)
                  and not p.transport.is_closing()]
        assert served, "no open server-side connection found"
        for protocol in served:
            sock = protocol.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
