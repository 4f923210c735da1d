"""Stratum over TLS: the server-side TLS context and a listener whose certificate can be replaced live.

The handshake happens before the Stratum server sees a connection, so a client that speaks plain text to the
TLS port is closed by the TLS layer and never becomes a session. ``reload`` (SIGHUP) re-reads the certificate
and key: new handshakes get them, open connections keep theirs, and a pair that does not load is refused
while the certificate in service stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable

import structlog

from pool.ops.telemetry import Metrics

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


class TlsListener:
    """One TLS listening socket in front of the Stratum connection handler."""

    def __init__(self, cert: str, key: str, metrics: Metrics) -> None:
        self.cert = cert
        self.key = key
        self.metrics = metrics
        self._current = load_tls_context(cert, key)
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self, factory: Callable[[], asyncio.Protocol], host: str, port: int,
                    reuse_port: bool = False) -> int:
        listening = self._current
        # OpenSSL calls this for every ClientHello (with or without SNI): the handshake gets the current
        # context, so a reloaded certificate applies to new connections only.
        listening.sni_callback = self._select
        self.server = await asyncio.get_running_loop().create_server(
            factory, host, port, ssl=listening, ssl_handshake_timeout=HANDSHAKE_TIMEOUT, backlog=1024,
            reuse_port=reuse_port or None,
        )
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self.port

    def _select(self, sslobj: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
        if self._current is not ctx:
            sslobj.context = self._current

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
        if self.server is not None:
            self.server.close()

    async def wait_closed(self) -> None:
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)
