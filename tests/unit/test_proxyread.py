"""Reading a PROXY header off a raw socket takes exactly the header's bytes (a socket pair, no network)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from pool.server.proxyproto import ProxyHeader, ProxyHeaderError
from pool.server.proxyread import read_proxy_header

HEADER = b"PROXY TCP4 198.51.100.1 10.0.0.1 40000 3334\r\n"
CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc"


@pytest.fixture
def pair():
    server, client = socket.socketpair()
    server.setblocking(False)
    try:
        yield server, client
    finally:
        server.close()
        client.close()


async def test_header_split_across_writes_then_the_tls_bytes_stay_on_the_socket(pair) -> None:
    server, client = pair

    async def balancer() -> None:
        client.sendall(HEADER[:9])
        await asyncio.sleep(0.05)
        client.sendall(HEADER[9:] + CLIENT_HELLO)

    sender = asyncio.create_task(balancer())
    header = await read_proxy_header(server, timeout=5)
    await sender
    assert header == ProxyHeader(1, len(HEADER), ("198.51.100.1", 40000), ("10.0.0.1", 3334))
    assert server.recv(100) == CLIENT_HELLO  # nothing after the header was taken


async def test_tls_without_a_header_is_invalid(pair) -> None:
    server, client = pair
    client.sendall(b"\x16\x03\x01")  # TLS without a header
    with pytest.raises(ProxyHeaderError, match="no PROXY protocol header"):
        await read_proxy_header(server, timeout=5)


async def test_peer_closing_before_a_header_is_invalid(pair) -> None:
    server, client = pair
    client.shutdown(socket.SHUT_WR)
    with pytest.raises(ProxyHeaderError, match="closed"):
        await read_proxy_header(server, timeout=5)


async def test_a_header_that_does_not_complete_times_out(pair) -> None:
    server, client = pair
    client.sendall(HEADER[:20])
    with pytest.raises(TimeoutError):
        await read_proxy_header(server, timeout=0.3)
