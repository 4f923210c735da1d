"""Stratum over TLS against a real regtest bitcoind: a verifying TLS client mines a block; plain TCP on the TLS
port is closed without harming the miners on the plain port; the certificate is reloaded for new connections
(in process and by SIGHUP to the real ``pool run``)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pool.node.regtest import free_port
from tests.conftest import pool_config
from tests.support.chain import arpc, connect_miner, mine_block_on, ready_miner, wait_tip, wait_until
from tests.support.miner import TestMiner as StratumMiner
from tests.support.pool_run import pool_run
from tests.support.tls import cert_fingerprint, client_context, fingerprint, make_cert

pytestmark = pytest.mark.integration


class TlsMiner(StratumMiner):
    """The independent test miner, over TLS (verifying the pool's certificate)."""

    def __init__(self, port: int, username: str, context: ssl.SSLContext, password: str = "x") -> None:
        super().__init__("127.0.0.1", port, username, password)
        self.context = context

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.context, server_hostname="localhost"
        )
        self._reader_task = asyncio.create_task(self._read_loop())

    @property
    def peer_fingerprint(self) -> str:
        assert self.writer is not None
        return fingerprint(self.writer.get_extra_info("ssl_object").getpeercert(binary_form=True))


async def tls_miner(port: int, username: str, context: ssl.SSLContext, password: str = "x") -> TlsMiner:
    return await ready_miner(TlsMiner(port, username, context, password))


@contextlib.asynccontextmanager
async def tls_pool(regtest: Any, tmp_path: Path) -> AsyncIterator[tuple[Any, Path, Path]]:
    from pool.app import PoolApp

    cert, key = make_cert(tmp_path / "tls", "pool-a")
    stratum = {"tls_port": 0, "tls_cert": str(cert), "tls_key": str(key)}
    cfg = await asyncio.to_thread(pool_config, regtest, tmp_path / "pool", stratum=stratum)
    app = PoolApp(cfg)
    await app.start()
    try:
        yield app, cert, key
    finally:
        await app.stop()


async def test_tls_miner_mines_a_block(regtest, tmp_path: Path):
    async with tls_pool(regtest, tmp_path) as (app, cert, _):
        assert app.server.tls_port and app.server.tls_port != app.server.port
        user = f"{await arpc(regtest, 'getnewaddress', wallet='pool')}.tls1"
        miner = await tls_miner(app.server.tls_port, user, client_context(cert))
        try:
            assert miner.peer_fingerprint == cert_fingerprint(cert)
            for _ in range(3):  # a block by another test's leftovers can make one attempt stale
                tip = await arpc(regtest, "getbestblockhash")
                reply, block_hash, _ = await mine_block_on(miner, tip, timeout=15)
                if reply.get("result") is True:
                    break
            assert reply.get("result") is True, reply
            await wait_tip(regtest, block_hash, timeout=15)
            assert app.coordinator.blocks_found >= 1
        finally:
            await miner.close()


@pytest.mark.one_process("reads the one process's sessions (app.server.sessions)")
async def test_plain_tcp_on_the_tls_port_is_closed_and_harms_nobody(regtest, tmp_path: Path):
    async with tls_pool(regtest, tmp_path) as (app, cert, _):
        user = f"{await arpc(regtest, 'getnewaddress', wallet='pool')}"
        honest = await connect_miner(app.server.port, f"{user}.plain", password="d=1e-10")
        secure = await tls_miner(app.server.tls_port, f"{user}.tls", client_context(cert), password="d=1e-10")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", app.server.tls_port)
            try:
                writer.write(b'{"id": 1, "method": "mining.subscribe", "params": ["plain/1.0"]}\n' * 50)
                await writer.drain()
                data = b""
                with contextlib.suppress(ConnectionError):
                    for _ in range(100):  # bounded: read until the pool closes the connection
                        chunk = await asyncio.wait_for(reader.read(4096), 10)
                        if not chunk:
                            break
                        data += chunk
                assert reader.at_eof() or writer.transport.is_closing()
                assert b"mining" not in data and b"result" not in data  # no Stratum spoken in the clear
            finally:
                writer.close()
            assert len(app.server.sessions) == 2  # the plain-text client never became a session
            for miner in (honest, secure):
                for _ in range(3):
                    reply, _ = await miner.mine_one()
                    assert reply.get("result") is True or reply["error"][0] == 21, reply  # 21: stale after a block
                assert miner.accepted >= 1
        finally:
            await honest.close()
            await secure.close()


def client_hello(context: ssl.SSLContext) -> bytes:
    """The first bytes a TLS client sends (its ClientHello), made without a socket."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def answer_to_hello(port: int, hello: bytes) -> bytes:
    """Send a ClientHello on plain TCP; everything the pool sends back before closing (bounded)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = b""
    try:
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(hello)
            await writer.drain()
            for _ in range(100):
                chunk = await asyncio.wait_for(reader.read(65536), 10)
                if not chunk:
                    break
                data += chunk
                if len(data) > 5:  # a TLS record came back: the handshake started
                    break
    finally:
        writer.close()
    return data


@pytest.mark.one_process("reads the one process's connection guard (app.server.guard)")
async def test_a_banned_address_is_closed_before_any_tls_handshake(regtest, tmp_path: Path):
    """A handshake costs the pool an asymmetric-key operation: a banned address, or one over its limits, must
    not get one. Its connection is closed before the pool answers the ClientHello."""
    async with tls_pool(regtest, tmp_path) as (app, cert, _):
        hello = client_hello(client_context(cert))
        assert (await answer_to_hello(app.server.tls_port, hello))[:1] == b"\x16"  # not banned: a ServerHello
        now = time.monotonic()
        while not app.server.guard.strike("127.0.0.1", now):
            pass
        assert await answer_to_hello(app.server.tls_port, hello) == b""
        assert app.metrics.registry.get_sample_value("pool_disconnects_total", {"reason": "banned"}) == 1


@pytest.mark.one_process("reads StratumServer.reload_tls's answer (with N >= 2 each front-end reloads on its own and refuses a broken pair, logged)")
async def test_certificate_reload_applies_to_new_connections(regtest, tmp_path: Path):
    async with tls_pool(regtest, tmp_path) as (app, cert, key):
        user = f"{await arpc(regtest, 'getnewaddress', wallet='pool')}.tls"
        old_fp = cert_fingerprint(cert)
        new_cert, new_key = make_cert(tmp_path / "tls-new", "pool-b")
        trust_both = client_context(cert, new_cert)
        first = await tls_miner(app.server.tls_port, user, trust_both, password="d=1e-10")
        try:
            assert first.peer_fingerprint == old_fp
            # A broken pair is refused and the old certificate stays in service.
            shutil.copy(new_cert, cert)
            assert app.server.reload_tls() is False
            probe = await tls_miner(app.server.tls_port, user, trust_both)
            assert probe.peer_fingerprint == old_fp
            await probe.close()
            # The full new pair is taken for new connections; the open one carries on.
            shutil.copy(new_key, key)
            assert app.server.reload_tls() is True
            second = await tls_miner(app.server.tls_port, user, trust_both, password="d=1e-10")
            try:
                assert second.peer_fingerprint == cert_fingerprint(new_cert)
                reply, _ = await second.mine_one()
                assert reply.get("result") is True or reply["error"][0] == 21, reply
            finally:
                await second.close()
            reply, _ = await first.mine_one()
            assert reply.get("result") is True or reply["error"][0] == 21, reply
        finally:
            await first.close()
        m = app.metrics.registry.get_sample_value
        assert m("pool_tls_reloads_total", {"result": "ok"}) == 1
        assert m("pool_tls_reloads_total", {"result": "failed"}) == 1


async def test_sighup_reloads_the_certificate_of_pool_run(regtest, tmp_path: Path):
    cert, key = make_cert(tmp_path / "tls", "pool-a")
    new_cert, new_key = make_cert(tmp_path / "tls-new", "pool-b")
    port, tls_port = free_port(), free_port()
    address = await arpc(regtest, "getnewaddress", wallet="pool")
    settings = (f'[stratum]\nhost = "127.0.0.1"\nport = {port}\ntls_port = {tls_port}\n'
                f'tls_cert = "{cert}"\ntls_key = "{key}"\n')
    async with pool_run(regtest, tmp_path, address, settings) as (proc, banner):
        assert b"stratum+ssl://" in banner and str(tls_port).encode() in banner
        trust_both = client_context(cert, new_cert)
        user = f"{address}.hup"
        first = await tls_miner(tls_port, user, trust_both)
        assert first.peer_fingerprint == cert_fingerprint(cert)
        shutil.copy(new_cert, cert)
        shutil.copy(new_key, key)
        proc.send_signal(signal.SIGHUP)

        async def new_cert_served() -> bool:
            probe = await tls_miner(tls_port, user, trust_both)
            try:
                return probe.peer_fingerprint == cert_fingerprint(new_cert)
            finally:
                await probe.close()

        await wait_until(new_cert_served, 10, interval=0.2, what="the reloaded certificate")
        assert proc.returncode is None  # SIGHUP reloads, it does not stop the pool
        reply = await first.request("mining.ping", [])  # the open connection carries on
        assert "result" in reply
        await first.close()
