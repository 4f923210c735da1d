"""One miner's connection as the event loop sees it: an asyncio protocol around the sans-IO Stratum core.

Everything it receives goes to the server (``StratumServer._receive``), which owns the policy; what the core
queues goes out in ``flush``, bounded by the per-connection output budget.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from pool.server.server import StratumServer

log = structlog.get_logger("pool.server")


class Session(asyncio.Protocol):
    """One connection: the asyncio protocol around its sans-IO Stratum core.

    No task, no stream reader and no timer per connection: bytes arrive in ``data_received`` and are handled at
    once; deadlines (subscribe, authorize, idle) are checked by the server's one sweep. An accepted share's reply
    waits for its ledger commit in a reserved place of the output (``StratumProtocol.defer_reply``), so a miner
    may have several shares in flight while its replies still leave in request order.
    """

    __slots__ = (
        "server", "transport", "id", "peer", "ip", "protocol", "vardiff", "connected", "last_activity", "worker",
        "has_work", "errors", "_log", "agent", "closing", "submits", "invalid", "rate_limited", "hints", "retune_pending",
        "transactions", "finished", "paused", "header", "checked", "address", "site", "close_reason",
    )

    def __init__(self, server: StratumServer, checked: bool = False, address: tuple[str, int] | None = None) -> None:
        self.server = server
        self.checked = checked  # admitted before its TLS handshake: its connect-rate token is already taken
        self.address = address  # the miner's address when known before the session (TLS listener, PROXY header)
        self.transport: asyncio.Transport | None = None
        self.header: bytearray | None = None  # PROXY protocol: bytes received before the header is complete
        self.finished = False
        self.closing = False
        self.paused = False
        self._log: Any = None
        self.agent: str | None = None
        self.site: str | None = None  # decided at the first authorize (pool/programme/sites.py)
        self.close_reason: str | None = None  # why ``closing`` was set, when it is not a plain drop

    @property
    def log(self) -> Any:
        """This connection's logger (session, peer, worker, agent), bound at first use: most connections
        log nothing between authorize and close, and a bound logger costs memory per connection."""
        if self._log is None:
            worker = self.worker.full_name if getattr(self, "worker", None) is not None else None
            context: dict[str, Any] = {"session": self.id, "peer": self.peer, "worker": worker}
            if self.agent is not None:
                context["agent"] = self.agent
            self._log = log.bind(**context)
        return self._log

    # ---- asyncio.Protocol ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport
        self.server._open(self)

    def data_received(self, data: bytes) -> None:
        if not self.finished:
            if self.header is None:
                self.server._receive(self, data)
            else:
                self.server._receive_proxy_header(self, data)

    def eof_received(self) -> bool:
        if not self.finished:
            self.server._finish(self, "dropped" if self.closing else "eof")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished:
            self.server._finish(self, "reset" if exc is not None else ("dropped" if self.closing else "eof"))

    # ---- output ----------------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Hand queued output to the transport, or drop a peer whose pending output passed its budget.

        The core counts its queued bytes plus the transport's write buffer (``backlog``) and stops processing
        requests as soon as the sum passes the budget, so a client that never reads costs the pool at most the
        budget plus one reply (beside the kernel's socket buffers): it is dropped here, without writing more.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        proto = self.protocol
        if not proto.over_budget:
            data = proto.data_to_send()
            if data:
                transport.write(data)
            if not proto.over_budget:
                return
        self.log.warning("slow_reader_dropped", pending_bytes=proto.pending_output)
        self.closing = True
        self.server._finish(self, "dropped")
