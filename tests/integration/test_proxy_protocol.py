"""Behind a load balancer: real TCP clients send PROXY v1/v2 headers; limits, bans and logs use the address
in the header; connections without a valid header, or from an untrusted source, are closed and counted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import running_pool
from tests.support import live
from tests.support import miner as miner_support
from tests.support.chain import arpc, bits_target, ready_miner, solve_where, wait_until

pytestmark = pytest.mark.integration

SIG = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"


def v1(ip: str, port: int = 40000) -> bytes:
    family = "TCP6" if ":" in ip else "TCP4"
    dst = "::1" if family == "TCP6" else "127.0.0.1"
    return f"PROXY {family} {ip} {dst} {port} 3333\r\n".encode()


def v2(ip: str, port: int = 40000) -> bytes:
    if ":" in ip:
        block = socket.inet_pton(socket.AF_INET6, ip) + socket.inet_pton(socket.AF_INET6, "::1")
        kind = 0x21
    else:
        block = socket.inet_pton(socket.AF_INET, ip) + socket.inet_pton(socket.AF_INET, "127.0.0.1")
        kind = 0x11
    block += struct.pack("!HH", port, 3333)
    return SIG + bytes([0x21, kind]) + struct.pack("!H", len(block)) + block


class ProxiedMiner(miner_support.TestMiner):
    """A miner behind a balancer: its connection starts with the header the balancer would write."""

    def __init__(self, port: int, username: str, header: bytes, chunks: int = 1) -> None:
        super().__init__("127.0.0.1", port, username)
        self.header, self.chunks = header, chunks

    async def connect(self) -> None:
        await super().connect()
        assert self.writer is not None
        size = -(-len(self.header) // self.chunks)
        for i in range(0, len(self.header), size):  # split across writes (and TCP segments) when chunks > 1
            self.writer.write(self.header[i:i + size])
            await self.writer.drain()
            if self.chunks > 1:
                await asyncio.sleep(0.02)


async def closed_without_a_byte(port: int, first: bytes, timeout: float = 5.0) -> bool:
    """Connect, send ``first`` and a subscribe; True when the pool closes the connection having sent nothing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):  # RuntimeError: uvloop, closed already
            writer.write(first + b'{"id":1,"method":"mining.subscribe","params":[]}\n')
            await writer.drain()
        try:
            data = await asyncio.wait_for(reader.read(), timeout)
        except (ConnectionError, OSError):
            data = b""
        return data == b""
    finally:
        writer.close()


async def fresh_sample(app: Any, name: str, **labels: str) -> float:
    """``sample`` after asking every Stratum process for its figures of now (as a scrape does)."""
    await app.refresh_live()
    return sample(app, name, **labels)


def sample(app: Any, name: str, **labels: str) -> float:
    return live.metric_now(app, name, labels) or 0.0  # every Stratum process's figures


@pytest.mark.one_process("reads the one process's sessions (app.server.sessions)")
async def test_limits_and_bans_apply_to_the_address_in_the_header(regtest, tmp_path: Path):
    stratum = {"proxy_protocol": True, "max_connections_per_ip": 2, "invalid_share_limit": 1,
               "strikes_to_ban": 1, "ban_seconds": 60, "connect_burst_per_ip": 1000}
    async with running_pool(regtest, tmp_path / "pool", stratum=stratum) as app:
        port = app.server.port
        user = f"{await arpc(regtest, 'getnewaddress', wallet='pool')}.w"
        miners: list[ProxiedMiner] = []
        try:
            # v1 and v2, IPv4 and IPv6, the header alone or split over several writes: each miner is known by
            # the address its header names, though every connection comes from 127.0.0.1.
            for header, chunks in ((v1("198.51.100.1"), 1), (v2("198.51.100.1"), 4),
                                   (v1("2001:db8::5"), 3), (v2("2001:db8::6"), 1)):
                miners.append(await ready_miner(ProxiedMiner(port, user + str(len(miners)), header, chunks)))
            ips = sorted(s.ip for s in app.server.sessions.values())
            assert ips == ["198.51.100.1", "198.51.100.1", "2001:db8::5", "2001:db8::6"]
            assert sorted(s.peer for s in app.server.sessions.values())[0] == "198.51.100.1:40000"
            assert sample(app, "pool_proxy_headers_total", outcome="v1") == 2
            assert sample(app, "pool_proxy_headers_total", outcome="v2") == 2

            # The per-address limit (2) counts the header's address: a third 198.51.100.1 is refused ...
            assert await closed_without_a_byte(port, v1("198.51.100.1"))
            assert sample(app, "pool_disconnects_total", reason="limit") == 1
            # ... while another address through the same balancer is welcome.
            miners.append(await ready_miner(ProxiedMiner(port, user + "x", v2("198.51.100.2"))))

            # Invalid shares from 203.0.113.9 get that address banned (limit 1, one strike), not the balancer's.
            bad = await ready_miner(ProxiedMiner(port, user + "bad", v1("203.0.113.9")))
            try:
                for step in range(3):  # each on the latest job: fresh work, then reconnect, then drop + strike
                    job = bad.job
                    target = bits_target(job.nbits)
                    en2, ntime, nonce, _ = solve_where(bad, job, lambda v, t=target: v > t)  # surely too weak
                    with contextlib.suppress(ConnectionError, TimeoutError):
                        reply = await bad.submit(job, en2, ntime, nonce)
                        assert reply["error"][0] == 23, reply
                    if step == 0:
                        await bad.wait_job(5, newer_than=job)
                await wait_until(lambda: app.server.guard.banned("203.0.113.9", time.monotonic()), 10,
                                 what="203.0.113.9 banned")
            finally:
                await bad.close()
            assert not app.server.guard.banned("127.0.0.1", time.monotonic())
            assert await closed_without_a_byte(port, v2("203.0.113.9"))
            assert sample(app, "pool_disconnects_total", reason="banned") == 1
            miners.append(await ready_miner(ProxiedMiner(port, user + "y", v1("203.0.113.10"))))
            assert all(not m.reader.at_eof() for m in miners)
        finally:
            for m in miners:
                await m.close()


@pytest.mark.one_process("reads the one process's sessions (app.server.sessions)")
async def test_connections_without_a_valid_header_are_closed_and_counted(regtest, tmp_path: Path):
    async with running_pool(regtest, tmp_path / "pool", stratum={"proxy_protocol": True}) as app:
        port = app.server.port
        assert await closed_without_a_byte(port, b"")  # plain Stratum: no header
        assert await closed_without_a_byte(port, b"PROXY TCP4 198.51.100.1 127.0.0.1 040000 3333\r\n")
        assert await closed_without_a_byte(port, b"PROXY UNKNOWN " + b"f" * 120)  # no CRLF within 107 bytes
        assert await closed_without_a_byte(port, SIG + bytes([0x21, 0x11]) + struct.pack("!H", 0xFFFF))
        await wait_until(lambda: sample(app, "pool_proxy_headers_total", outcome="invalid") == 4, 5,
                         what="four invalid headers counted")
        assert sample(app, "pool_disconnects_total", reason="proxy-invalid") == 4
        assert app.server.sessions == {} and sample(app, "pool_connects_total") == 0

        # LOCAL (a balancer's health check) and UNKNOWN use the connection's own address.
        local = SIG + bytes([0x20, 0x00, 0x00, 0x00])
        user = f"{await arpc(regtest, 'getnewaddress', wallet='pool')}.w"
        for header in (local, b"PROXY UNKNOWN\r\n"):
            miner = await ready_miner(ProxiedMiner(port, user, header))
            try:
                assert [s.ip for s in app.server.sessions.values()] == ["127.0.0.1"]
            finally:
                await miner.close()
            await wait_until(lambda: not app.server.sessions, 5, what="session closed")
        assert sample(app, "pool_proxy_headers_total", outcome="own-address") == 2


@pytest.mark.one_process("reads the one process's sessions (app.server.sessions)")
async def test_a_source_outside_proxy_trusted_is_refused(regtest, tmp_path: Path):
    stratum = {"proxy_protocol": True, "proxy_trusted": ["192.0.2.0/24"]}
    async with running_pool(regtest, tmp_path / "pool", stratum=stratum) as app:
        assert await closed_without_a_byte(app.server.port, v1("198.51.100.1"))
        assert await fresh_sample(app, "pool_proxy_headers_total", outcome="untrusted") == 1
        assert app.server.sessions == {}


@pytest.mark.one_process("patches the one process's PROXY header timeout (module constant)")
async def test_a_header_that_never_completes_times_out(regtest, tmp_path: Path, monkeypatch):
    from pool.server import server as server_module

    monkeypatch.setattr(server_module, "PROXY_HEADER_TIMEOUT", 1.0)
    async with running_pool(regtest, tmp_path / "pool", stratum={"proxy_protocol": True}) as app:
        reader, writer = await asyncio.open_connection("127.0.0.1", app.server.port)
        try:
            writer.write(b"PROXY TCP4 198.51.100.1")
            await writer.drain()
            with contextlib.suppress(ConnectionError, OSError):
                assert await asyncio.wait_for(reader.read(), 10) == b""
        finally:
            writer.close()
        assert await fresh_sample(app, "pool_proxy_headers_total", outcome="timeout") == 1


class BlockingTlsMiner:
    """A TLS client behind a balancer, on a plain blocking socket (run in a thread): the PROXY header goes
    out in clear, then the TLS handshake starts on the next byte, as a TCP balancer relays it."""

    def __init__(self, port: int, header: bytes, context: ssl.SSLContext) -> None:
        self.port, self.header, self.context = port, header, context
        self.tls: ssl.SSLSocket | None = None

    def subscribe(self) -> dict[str, Any]:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        try:
            raw.sendall(self.header)
            self.tls = self.context.wrap_socket(raw, server_hostname="localhost")
        except BaseException:
            raw.close()
            raise
        self.tls.sendall(b'{"id":1,"method":"mining.subscribe","params":["tls-behind-lb/1"]}\n')
        line = b""
        while not line.endswith(b"\n") and len(line) < 65536:
            chunk = self.tls.recv(4096)
            if not chunk:
                break
            line += chunk
        return json.loads(line.split(b"\n", 1)[0])

    def close(self) -> None:
        if self.tls is not None:
            self.tls.close()


@pytest.mark.one_process("reads the one process's sessions (app.server.sessions)")
async def test_proxy_header_then_tls_on_the_tls_port(regtest, tmp_path: Path):
    """A TCP balancer in front of the TLS port: the header comes in clear before the handshake; the address in
    it is admitted before any handshake (a banned one gets none) and is the session's."""
    from tests.support.tls import client_context, make_cert

    cert, key = make_cert(tmp_path / "tls", "pool-a")
    stratum = {"proxy_protocol": True, "tls_port": 0, "tls_cert": str(cert), "tls_key": str(key)}
    async with running_pool(regtest, tmp_path / "pool", stratum=stratum) as app:
        port, context = app.server.tls_port, client_context(cert)
        miners = [BlockingTlsMiner(port, header, context) for header in (v2("198.51.100.7"), v1("2001:db8::9"))]
        try:
            for miner in miners:
                reply = await asyncio.to_thread(miner.subscribe)
                assert reply["id"] == 1 and reply["result"], reply
            assert sorted(s.ip for s in app.server.sessions.values()) == ["198.51.100.7", "2001:db8::9"]
        finally:
            for miner in miners:
                miner.close()

        # No header (a bare ClientHello) is refused; so is a banned header address, before its handshake.
        refused = BlockingTlsMiner(port, b"", context)
        with pytest.raises((ssl.SSLError, OSError)):
            await asyncio.to_thread(refused.subscribe)
        refused.close()
        while not app.server.guard.strike("203.0.113.9", time.monotonic()):
            pass
        banned = BlockingTlsMiner(port, v1("203.0.113.9"), context)
        with pytest.raises((ssl.SSLError, OSError)):
            await asyncio.to_thread(banned.subscribe)
        banned.close()
        assert sample(app, "pool_proxy_headers_total", outcome="invalid") == 1
        assert sample(app, "pool_disconnects_total", reason="banned") == 1
        assert sample(app, "pool_proxy_headers_total", outcome="v1") == 2
