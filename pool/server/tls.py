"""Stratum over TLS: the server-side TLS context and a listener whose certificate can be replaced live.

Connections are accepted by the listener itself and put to the server's admission check (bans, per-address
limits) before anything is read from them: only an admitted connection gets a TLS handshake, so a banned
address costs the pool no asymmetric-key operation. The handshake happens before the Stratum server sees a
connection, so a client that speaks plain text to the TLS port is closed by the TLS layer and never becomes
a session. ``reload`` (SIGHUP) re-reads the certificate
and key: new handshakes get them, open connections keep theirs, and a pair that does not load is refused
while the certificate in service stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Callable

import structlog

from pool.ops.telemetry import Metrics
from pool.server.proxyproto import PROXY_HEADER_TIMEOUT, ProxyHeaderError, TrustedSources
from pool.server.proxyread import read_proxy_header

log = structlog.get_logger("pool.tls")

HANDSHAKE_TIMEOUT = 10.0  # seconds; a client that does not finish the handshake is closed


class TlsError(ValueError):
    """A certificate or key that cannot be used; the message names the setting (``stratum.tls_cert``/``_key``)."""


def load_tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2+) from PEM files; TlsError naming the setting otherwise."""
    for name, path in (("stratum.tls_cert", cert), ("stratum.tls_key", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise TlsError(f"{name}: cannot read {path!r}: {exc.strerror or exc}") from exc
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        text = str(exc)
        if "KEY_VALUES_MISMATCH" in text or "key values mismatch" in text:
            raise TlsError(f"stratum.tls_cert and stratum.tls_key do not belong together ({cert!r}, {key!r})") from exc
        # OpenSSL says "PEM lib" for either file; a file that holds a certificate points at the key.
        which = "stratum.tls_key" if _holds_certificate(cert) else "stratum.tls_cert"
        raise TlsError(f"{which}: cannot load the TLS certificate {cert!r} with key {key!r}: {exc}") from exc
    return context


def _holds_certificate(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return b"-----BEGIN CERTIFICATE-----" in fh.read(1 << 20)
    except OSError:
        return False


Admission = Callable[[str], str | None]  # peer address -> None (admitted) or why it is refused
Address = tuple[str, int]
SessionFactory = Callable[[Address], asyncio.Protocol]  # the miner's address -> its Stratum session


class TlsListener:
    """One TLS listening socket in front of the Stratum connection handler.

    ``accept_loop`` (run under the app's supervision) accepts, asks ``admit`` about the peer address, and only
    then starts the handshake, on a task of its own per connection so a slow handshake holds up nobody.

    With ``proxy`` (the PROXY protocol's trusted sources), a connection must come from a trusted balancer and
    start with a PROXY header; the address in it is the one admitted and given to the session, and the TLS
    handshake starts on the first byte after the header.
    """

    def __init__(self, cert: str, key: str, metrics: Metrics) -> None:
        self.cert = cert
        self.key = key
        self.metrics = metrics
        self._current = load_tls_context(cert, key)
        self._sock: socket.socket | None = None
        self._factory: SessionFactory | None = None
        self._admit: Admission = lambda ip: None
        self._proxy: TrustedSources | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        self.sockets: list[socket.socket] = []
        self.port = 0

    async def start(self, factory: SessionFactory, host: str, port: int, admit: Admission | None = None,
                    proxy: TrustedSources | None = None) -> int:
        """Bind and listen; connections are taken by ``accept_loop``. ``admit`` decides about each new
        connection before its handshake (None: everyone is admitted)."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        sock = socket.create_server(address, family=family, backlog=1024)
        sock.setblocking(False)
        self._sock, self._factory, self._proxy = sock, factory, proxy
        if admit is not None:
            self._admit = admit
        self.sockets = [sock]
        self.port = int(sock.getsockname()[1])
        return self.port

    async def accept_loop(self) -> None:
        """Accept for the listener's lifetime: refused addresses are reset at once, admitted ones handshake."""
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(self._sock)
            except OSError as exc:  # out of descriptors (EMFILE) and the like: wait a little and go on
                if self._sock.fileno() < 0:
                    return
                log.warning("tls_accept_failed", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            address: Address = (str(peer[0]), int(peer[1]))
            if self._proxy is not None:
                if not self._proxy.allows(address[0]):
                    self._refuse(conn, "proxy-untrusted", address)
                    continue
                task = loop.create_task(self._proxied(conn, address))
            elif (refused := self._admit(address[0])) is not None:
                self._refuse(conn, refused, address)
                continue
            else:
                task = loop.create_task(self._handshake(conn, address))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    def _refuse(self, conn: socket.socket, reason: str, address: Address, detail: str = "") -> None:
        if reason.startswith("proxy-"):
            self.metrics.proxy_headers.labels(reason.removeprefix("proxy-")).inc()
            log.info("proxy_header_refused", peer=f"{address[0]}:{address[1]}", reason=reason, detail=detail or None,
                     tls=True)
        self.metrics.disconnects.labels(reason).inc()
        _reset(conn)

    async def _proxied(self, conn: socket.socket, peer: Address) -> None:
        """Behind a balancer: the PROXY header first (its bytes only), then admission of the address it names,
        then the handshake."""
        try:
            header = await read_proxy_header(conn, PROXY_HEADER_TIMEOUT)
        except ProxyHeaderError as exc:
            self._refuse(conn, "proxy-invalid", peer, str(exc))
            return
        except TimeoutError as exc:
            self._refuse(conn, "proxy-timeout", peer, str(exc))
            return
        except asyncio.CancelledError:
            _reset(conn)
            raise
        self.metrics.proxy_headers.labels(f"v{header.version}" if header.source else "own-address").inc()
        address = header.source or peer
        refused = self._admit(address[0])
        if refused is not None:
            self._refuse(conn, refused, address)
            return
        await self._handshake(conn, address)

    async def _handshake(self, conn: socket.socket, address: Address) -> None:
        """TLS with the certificate in service now (a reload applies to new connections only), then the
        Stratum session; a failed or late handshake closes the connection."""
        assert self._factory is not None
        factory = self._factory
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: factory(address), conn, ssl=self._current, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.debug("tls_handshake_failed", error=f"{type(exc).__name__}: {exc}")
            _reset(conn)
        except asyncio.CancelledError:
            _reset(conn)
            raise

    def reload(self) -> bool:
        """Re-read the certificate and key; returns whether the new pair was taken."""
        try:
            context = load_tls_context(self.cert, self.key)
        except TlsError as exc:
            self.metrics.tls_reloads.labels("failed").inc()
            log.error("tls_reload_failed", error=str(exc))
            return False
        self._current = context
        self.metrics.tls_reloads.labels("ok").inc()
        log.info("tls_reloaded", cert=self.cert)
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        for task in list(self._handshakes):
            task.cancel()

    async def wait_closed(self) -> None:
        if self._handshakes:
            await asyncio.wait(list(self._handshakes), timeout=5)


def _reset(conn: socket.socket) -> None:
    """Close with a reset (like ``transport.abort``): nothing lingers for a peer we refuse."""
    with contextlib.suppress(OSError):
        if conn.fileno() >= 0:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
