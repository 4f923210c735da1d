"""Read a PROXY protocol header off a raw accepted socket, taking exactly its bytes and nothing after them.

The TLS listener needs this: the balancer writes the header and then relays the miner's TLS bytes, and the
handshake must start on the first byte after the header. So the socket is peeked (``MSG_PEEK``) and parsed
(``parse_proxy_header``, sans-IO) until the header is complete; only then are its bytes taken off the socket.
"""

from __future__ import annotations

import asyncio
import socket

from pool.server.proxyproto import MAX_HEADER, ProxyHeader, ProxyHeaderError, parse_proxy_header

PARTIAL_POLL = 0.01  # seconds between peeks while part of a header has arrived (the socket stays readable)


async def read_proxy_header(conn: socket.socket, timeout: float) -> ProxyHeader:
    """The connection's PROXY header; ProxyHeaderError if it is invalid or the peer closed first, TimeoutError
    if it is not complete within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen = 0
    while True:
        try:
            data = conn.recv(MAX_HEADER, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError as exc:
            raise ProxyHeaderError(f"connection failed before a PROXY header: {exc}") from exc
        if data == b"":
            raise ProxyHeaderError("closed before a complete PROXY header")
        if data:
            header = parse_proxy_header(data)
            if header is not None:
                _take(conn, header.length)
                return header
        left = deadline - loop.time()
        if left <= 0:
            raise TimeoutError(f"no complete PROXY header within {timeout:.0f} s")
        if data is None or len(data) == seen:
            if data is None:
                await _readable(loop, conn, left)
            else:
                await asyncio.sleep(min(PARTIAL_POLL, left))
        seen = len(data) if data else seen


def _take(conn: socket.socket, length: int) -> None:
    """Consume the header's bytes, already in the socket buffer (they were just peeked)."""
    remaining = length
    while remaining:
        chunk = conn.recv(remaining)
        if not chunk:
            raise ProxyHeaderError("closed while the PROXY header was read")
        remaining -= len(chunk)


async def _readable(loop: asyncio.AbstractEventLoop, conn: socket.socket, timeout: float) -> None:
    waiter = loop.create_future()
    fd = conn.fileno()
    loop.add_reader(fd, lambda: waiter.done() or waiter.set_result(None))
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        loop.remove_reader(fd)
        waiter.cancel()
