"""The Stratum TCP listener: sockets, timeouts, per-address limits and broadcast.

Each connection is a ``StratumProtocol`` (sans-IO) plus the I/O around it. Misbehaving clients get an error
or lose their own connection; nothing one client sends can stop the loop serving the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import socket
import time
from collections import Counter as CountMap
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from pool.config import NODE_ID_BITS, Config, process_bits
from pool.ledger.commit import Outcome
from pool.ledger.sqlite import DuplicateShare
from pool.mining.extranonce import ExtranonceAllocator, extranonce_prefix
from pool.mining.jobs import Job
from pool.mining.shares import Accepted, Reject, Rejected, ShareResult
from pool.mining.vardiff import Vardiff, VardiffConfig
from pool.mining.workers import AuthError, Worker, parse_worker
from pool.ops.telemetry import Metrics
from pool.programme.controller import SiteController
from pool.server.coordinator import Coordinator
from pool.server.fanout import Fanout
from pool.server.guard import AddressGuard, Escalation, InvalidShareTracker, TokenBucket
from pool.server.proxyproto import PROXY_HEADER_TIMEOUT, ProxyHeaderError, TrustedSources, parse_proxy_header
from pool.server.session import Session
from pool.server.tls import TlsListener
from pool.stratum.events import (
    Authorized,
    AuthorizeFailed,
    DifficultySuggested,
    Event,
    ProtocolError,
    ShareRefused,
    ShareSubmitted,
    Subscribed,
    TransactionsRequested,
)
from pool.stratum.protocol import (
    ERR_JOB_NOT_FOUND,
    ERR_OTHER,
    ERR_UNAUTHORIZED,
    Deferred,
    ProtocolConfig,
    StratumProtocol,
)

if TYPE_CHECKING:
    from pool.server.access import AccessControl

log = structlog.get_logger("pool.server")

MAX_PROTOCOL_ERRORS = 50
HINT_BURST = 4.0  # difficulty hints that re-send work at once ...
HINT_RATE = 4.0 / 60  # ... and how fast that allowance refills (per second); later hints are coalesced
SOLO_MAX_PAYOUT_ADDRESSES = 8  # SOLO sends each payout address of a connection its own job
# mining.get_transactions per connection (token bucket): its answer is the largest reply, and an honest miner
# asks at most once per job. Beyond the burst: error 20.
TRANSACTIONS_RATE = 0.2
TRANSACTIONS_BURST = 5
MAX_SHARES_IN_FLIGHT = 256  # accepted shares awaiting their commit per connection; beyond, reading pauses
SHARE_NOT_RECORDED = Rejected(Reject.LEDGER_FAILED)
SHARE_DUPLICATE = Rejected(Reject.DUPLICATE)  # the coordinator had it already, from another front-end process


def _inherited_socket_options(server: asyncio.AbstractServer) -> None:
    """Keepalive finds half-open connections of miners that lost power; no-delay keeps notify fast. Set on the
    listening sockets, whose options every accepted socket inherits (Linux), instead of per connection."""
    for sock in getattr(server, "sockets", ()):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class StratumServer:
    """Accepts miners, runs their sessions and pushes new work to all of them."""

    def __init__(self, config: Config, coordinator: Coordinator, metrics: Metrics,
                 sites: SiteController | None = None, process: int = 0) -> None:
        self.config = config
        self.process = process  # front-end index (0 with one process): in every extranonce1 it hands out
        self.coordinator = coordinator
        self.metrics = metrics
        self.sites = sites
        self._paused_sites: set[str] = sites.paused if sites is not None else set()  # curtailed: no work
        sc = config.stratum
        dc = config.difficulty
        self._proto_config = ProtocolConfig(
            extranonce2_size=sc.extranonce2_size,
            max_line=sc.max_line_bytes,
            pool_version_mask=sc.version_mask,
            start_difficulty=dc.start,
            max_payout_addresses=SOLO_MAX_PAYOUT_ADDRESSES if config.payout.scheme == "solo" else 0,
            max_pending_output=sc.max_pending_output_bytes,
        )
        self._vardiff_config = VardiffConfig(
            start=dc.start,
            minimum=dc.minimum,
            maximum=dc.maximum,
            target_interval=dc.target_share_interval,
            retarget_seconds=dc.retarget_seconds,
        )
        self._network = config.node.network
        prefix, bits = extranonce_prefix(config.node_id, NODE_ID_BITS, process, process_bits(sc.processes))
        self._extranonces = ExtranonceAllocator(sc.extranonce1_size, prefix, bits)
        # Several front-ends: limits are per process (the kernel spreads connections evenly over them).
        self._max_connections = -(-sc.max_connections // sc.processes)
        # Several front-ends: extranonce1 values released here are offered to the others for resume, and a
        # resume here withdraws the value from them (pool/server/frontend.py wires these to the coordinator).
        self.on_release: Callable[[bytes], None] | None = None
        self.on_claim: Callable[[bytes], None] | None = None
        self._recent_extranonces: OrderedDict[bytes, float] = OrderedDict()
        self.guard = AddressGuard(sc.guard)
        self.sessions: dict[int, Session] = {}
        self._handshaking: dict[int, Session] = {}  # not yet logged in: their deadlines are checked every tick
        self._per_ip: CountMap[str] = CountMap()
        # PROXY protocol: connections from a trusted balancer whose header has not arrived yet (not admitted).
        self._proxy = sc.proxy_protocol
        self._proxy_trusted = TrustedSources(sc.proxy_trusted)
        self._awaiting_header: set[Session] = set()
        self._ids = itertools.count(1)
        self._server: asyncio.base_events.Server | None = None
        self.tls: TlsListener | None = None  # Stratum over TLS, beside the plain listener
        self.access: AccessControl | None = None  # licensed operators (authorization.mode = "allowlist")
        self._refusals = {reason: metrics.authorize_refusals.labels(reason)
                          for reason in ("invalid-username", "too-many-workers", "too-many-payout-addresses",
                                         "site-curtailment")}
        self.port = 0
        self.tls_port = 0
        self._fanout: Fanout[Session] = Fanout(self._push, self._call_soon)

    @staticmethod
    def _call_soon(callback: Callable[[], None]) -> object:
        return asyncio.get_running_loop().call_soon(callback)

    async def start(self) -> int:
        sc = self.config.stratum
        loop = asyncio.get_running_loop()
        # Several front-end processes share the port (SO_REUSEPORT: the kernel spreads connections over them).
        shared = sc.processes > 1
        self._server = await loop.create_server(lambda: Session(self), sc.host, sc.port, backlog=1024,
                                                reuse_port=shared or None)
        self.port = int(self._server.sockets[0].getsockname()[1])
        _inherited_socket_options(self._server)
        if sc.tls_port is not None:
            self.tls = TlsListener(sc.tls_cert, sc.tls_key, self.metrics)
            self.tls_port = await self.tls.start(
                lambda address: Session(self, checked=True, address=address), sc.host, sc.tls_port,
                admit=self._refusal, proxy=self._proxy_trusted if self._proxy else None, reuse_port=shared)
            _inherited_socket_options(self.tls)  # type: ignore[arg-type]  # it has ``sockets`` too
        log.info("stratum_listening", host=sc.host, port=self.port, tls_port=self.tls_port or None)
        return self.port

    def reload_tls(self) -> bool:
        """SIGHUP: re-read the TLS certificate and key for new connections (see TlsListener.reload)."""
        return self.tls.reload() if self.tls is not None else False

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self.tls is not None:
            self.tls.close()
        for session in list(self.sessions.values()):
            self._finish(session, "shutdown")
        for session in list(self._awaiting_header):
            self._refuse_unadmitted(session, "shutdown", session.peer)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        if self.tls is not None:
            await self.tls.wait_closed()

    # ---- work broadcast ------------------------------------------------------------------------------------

    def broadcast(self, clean: bool, done: Callable[[int], None] | None = None) -> int:
        """Send the current job to every miner that has been given work, in time slices (pool/server/fanout.py);
        returns how many sessions it goes to, and ``done(sent)`` runs once the last of them has it."""
        sessions = list(self.sessions.values())
        self._fanout.start(sessions, clean, done)
        self.metrics.jobs_broadcast.labels("clean" if clean else "update").inc()
        return len(sessions)

    def _push(self, session: Session, clean: bool) -> bool:
        if session.has_work and session.worker is not None and not session.closing:
            if self._send_jobs(session, clean, fresh=False):
                session.flush()
                return True
        return False

    def _send_jobs(self, session: Session, clean: bool, fresh: bool) -> bool:
        """Send the session its job(s): one, or under SOLO one per payout address (only the first ``clean``).

        ``fresh`` re-sends under alias ids so a new difficulty applies to them alone; the book gains nothing.
        """
        if session.site in self._paused_sites:
            return False
        jobs = self.coordinator.jobs_for(session.protocol.workers.values())
        for i, job in enumerate(jobs):
            alias = self.coordinator.book.next_id() if fresh else None
            session.protocol.send_job(job, clean_jobs=clean and i == 0, alias=alias)
        return bool(jobs)

    def _send_work(self, session: Session, fresh: bool, clean: bool = False) -> None:
        if session.worker is None:
            return
        if self._send_jobs(session, clean or not session.has_work, fresh):
            session.has_work = True

    # ---- operator actions ----------------------------------------------------------------------------------

    def reconnect_all(self, host: str, port: int, wait_seconds: int = 0) -> int:
        """Move miners elsewhere (draining this host): ``client.reconnect`` to every session."""
        count = 0
        for session in list(self.sessions.values()):
            if session.protocol.subscribed and not session.closing:
                session.protocol.send_reconnect(host, port, wait_seconds)
                session.flush()
                count += 1
        return count

    def close_sessions(self, sessions: list[int], reason: str, message: str) -> int:
        """Curtailment: each open session gets ``message`` (``client.show_message``) and is closed; the count."""
        count = 0
        for sid in sessions:
            session = self.sessions.get(sid)
            if session is None or session.finished:
                continue
            self.close_with_message(session, reason, message)
            count += 1
        return count

    def set_version_mask(self, mask: int) -> int:
        """Change the pool's version-rolling mask; rolling miners get ``mining.set_version_mask``."""
        count = 0
        for session in list(self.sessions.values()):
            if session.protocol.set_pool_version_mask(mask):
                session.flush()
                count += 1
        self._proto_config = dataclasses.replace(self._proto_config, pool_version_mask=mask)
        return count

    def _resume(self, requested: str, current: bytes) -> bytes | None:
        """Give a reconnecting miner its previous extranonce1 back if it was released recently."""
        try:
            value = bytes.fromhex(requested)
        except ValueError:
            return None
        closed_at = self._recent_extranonces.get(value)
        window = self.config.stratum.session_resume_seconds
        if closed_at is None or time.monotonic() - closed_at > window:
            return None
        if len(value) != self._extranonces.size or self._extranonces.prefix_of(value, NODE_ID_BITS) != \
                self.config.node_id or not self._extranonces.claim(value):
            return None  # another pool node's value is never ours to give
        del self._recent_extranonces[value]
        self._extranonces.release(current)
        if self.on_claim is not None:
            self.on_claim(value)
        return value

    def add_resumable(self, value: bytes) -> None:
        """Another front-end released ``value``: a miner that comes back here may resume it."""
        if len(value) == self._extranonces.size:
            self._remember_extranonce(value)

    def drop_resumable(self, value: bytes) -> None:
        """Another front-end resumed ``value``: it is live there, so never here."""
        self._recent_extranonces.pop(value, None)

    # ---- connections ---------------------------------------------------------------------------------------

    def _open(self, session: Session) -> None:
        """A new connection: with the PROXY protocol on, it waits for its header (from a trusted balancer only);
        otherwise it is admitted (or refused) at once on its socket's peer address."""
        transport = session.transport
        assert transport is not None
        if session.address is not None:  # from the TLS listener: admitted (and its PROXY header read) already
            self._admit(session, *session.address)
            return
        peername = transport.get_extra_info("peername")
        ip = str(peername[0]) if peername else "?"
        if self._proxy:
            if not self._proxy_trusted.allows(ip):
                self._refuse_unadmitted(session, "proxy-untrusted", ip)
                return
            if len(self.sessions) + len(self._awaiting_header) >= self._max_connections:
                self._refuse_unadmitted(session, "limit", ip)
                return
            session.header = bytearray()
            session.connected = time.monotonic()
            session.peer = f"{ip}:{peername[1]}" if peername else "?"  # the balancer, until the header names the miner
            self._awaiting_header.add(session)
            return
        self._admit(session, ip, peername[1] if peername else None)

    def _receive_proxy_header(self, session: Session, data: bytes) -> None:
        """Bytes before the PROXY header is complete: once it is, the miner's address from it is admitted (bans
        and limits apply to it) and whatever followed the header is handled as Stratum."""
        buffer = session.header
        assert buffer is not None
        buffer += data
        try:
            header = parse_proxy_header(bytes(buffer))
        except ProxyHeaderError as exc:
            self._refuse_unadmitted(session, "proxy-invalid", session.peer, str(exc))
            return
        if header is None:
            return
        self._awaiting_header.discard(session)
        session.header = None
        rest = bytes(buffer[header.length:])
        self.metrics.proxy_headers.labels(f"v{header.version}" if header.source else "own-address").inc()
        if header.source is not None:
            ip, port = header.source
        else:  # UNKNOWN / LOCAL / unspecified: the connection's own address applies
            peername = session.transport.get_extra_info("peername") if session.transport is not None else None
            ip, port = (str(peername[0]), peername[1]) if peername else ("?", None)
        self._admit(session, ip, port)
        if rest and not session.finished:
            self._receive(session, rest)

    def _refuse_unadmitted(self, session: Session, reason: str, peer: str, detail: str = "") -> None:
        """Close a connection that never became a session (no PROXY header yet, or a bad one), and count why."""
        session.finished = True
        self._awaiting_header.discard(session)
        session.header = None
        if reason.startswith("proxy-"):
            self.metrics.proxy_headers.labels(reason.removeprefix("proxy-")).inc()
            log.info("proxy_header_refused", peer=peer, reason=reason, detail=detail or None)
        self.metrics.disconnects.labels(reason).inc()
        if session.transport is not None:
            session.transport.abort()

    def _refusal(self, ip: str, take_token: bool = True) -> str | None:
        """Why a new connection from ``ip`` is refused (banned, or over a limit), or None. The TLS listener asks
        before the handshake (taking the connect-rate token), and the session asks again once it exists."""
        sc = self.config.stratum
        now = time.monotonic()
        if self.guard.banned(ip, now):
            return "banned"
        if (
            len(self.sessions) >= self._max_connections
            or self._per_ip[ip] >= sc.max_connections_per_ip
            or (take_token and not self.guard.allow_connect(ip, now))
        ):
            return "limit"
        return None

    def _admit(self, session: Session, ip: str, port: int | None) -> None:
        """Refused at once when the address is banned or over a limit, else a session with its core."""
        transport = session.transport
        assert transport is not None
        sc = self.config.stratum
        now = time.monotonic()
        refused = self._refusal(ip, take_token=not session.checked)
        if refused is not None:
            session.finished = True
            self.metrics.disconnects.labels(refused).inc()
            transport.abort()
            return
        self._per_ip[ip] += 1
        extranonce1 = self._extranonces.allocate()
        sid = next(self._ids)
        session.id = sid
        session.ip = ip
        session.peer = f"{ip}:{port}" if port is not None else ip
        session.protocol = StratumProtocol(
            self._proto_config, extranonce1, lambda u, p: self._authorize(sid, u, p),  # no cycle via session
            lambda h: self._resume(h, extranonce1),
            backlog=transport.get_write_buffer_size,
        )
        session.vardiff = Vardiff(self._vardiff_config, now)
        session.submits = TokenBucket(sc.guard.submit_rate, sc.guard.submit_burst, now)
        session.invalid = InvalidShareTracker(sc.guard.invalid_share_limit)
        session.rate_limited = 0
        session.connected = session.last_activity = now
        # Difficulty hints re-send work; a few take effect at once, the rest are coalesced (latest wins).
        session.hints = TokenBucket(HINT_RATE, HINT_BURST, now)
        session.retune_pending = False
        session.worker = None
        session.has_work = False
        session.errors = 0
        session.transactions = TokenBucket(TRANSACTIONS_RATE, TRANSACTIONS_BURST, now)
        self.sessions[sid] = session
        self._handshaking[sid] = session
        self.metrics.connects.inc()
        self.metrics.connections.set(len(self.sessions))

    def _receive(self, session: Session, data: bytes) -> None:
        """Bytes from a miner: every complete request is handled now, and the replies that are ready go out."""
        proto = session.protocol
        session.last_activity = time.monotonic()
        try:
            proto.receive_data(data)
            while (event := proto.next_event()) is not None:
                self._dispatch(session, event)
            session.flush()
        except Exception:  # one connection's bug must not take the pool down
            session.log.exception("session_crashed")
            self._finish(session, "error")
            return
        if session.finished:
            return
        if proto.closed:
            self._finish(session, "protocol-error", graceful=True)
        elif session.closing:
            self._finish(session, session.close_reason or "dropped", graceful=True)
        elif session.errors > MAX_PROTOCOL_ERRORS:
            self._finish(session, "too-many-errors")
        elif proto.deferred > MAX_SHARES_IN_FLIGHT and not session.paused:
            session.paused = True  # resumed when its replies are settled (see _settle)
            session.transport.pause_reading()  # type: ignore[union-attr]

    def _finish(self, session: Session, reason: str, graceful: bool = False) -> None:
        """Close a connection once: release what it held, count why. ``graceful`` lets queued bytes (the
        error that explains the close) leave first, for at most a second."""
        if session.finished:
            return
        if session.header is not None:  # still waiting for its PROXY header: never admitted
            self._refuse_unadmitted(session, f"proxy-{reason}" if reason in ("eof", "reset") else reason, session.peer)
            return
        session.finished = True
        self.sessions.pop(session.id, None)
        self._handshaking.pop(session.id, None)
        ip = session.ip
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]
        extranonce1 = session.protocol.extranonce1
        self._extranonces.release(extranonce1)
        self._remember_extranonce(extranonce1)
        if self.on_release is not None:
            self.on_release(extranonce1)
        self.metrics.connections.set(len(self.sessions))
        self.metrics.disconnects.labels(reason).inc()
        if self.sites is not None and session.site is not None:
            self.sites.closed(session.id)
        session.log.debug("disconnected", reason=reason)
        transport = session.transport
        if transport is None or transport.is_closing():
            return
        if graceful:
            with contextlib.suppress(Exception):
                data = session.protocol.data_to_send()
                if data:
                    transport.write(data)
            transport.close()
            asyncio.get_running_loop().call_later(1.0, transport.abort)  # a peer that never reads
        else:
            transport.abort()

    def _change_extranonce(self, session: Session) -> None:
        """A fresh extranonce1 for a miner that subscribed to changes (it may be re-hashing a spent range);
        the caller sends fresh work right after, from which the miner applies it."""
        old = session.protocol.extranonce1
        new = self._extranonces.allocate()
        if session.protocol.set_extranonce(new):
            self._extranonces.release(old)
        else:
            self._extranonces.release(new)

    def _remember_extranonce(self, value: bytes) -> None:
        now = time.monotonic()
        recent = self._recent_extranonces
        recent[value] = now
        recent.move_to_end(value)
        window = self.config.stratum.session_resume_seconds
        while recent and (len(recent) > 100_000 or now - next(iter(recent.values())) > window):
            recent.popitem(last=False)

    def _deadline(self, session: Session) -> tuple[float, str]:
        sc = self.config.stratum
        proto = session.protocol
        if not proto.subscribed:
            return session.connected + sc.subscribe_timeout, "subscribe-timeout"
        if not proto.workers:
            return session.connected + sc.authorize_timeout, "authorize-timeout"
        return session.last_activity + sc.idle_timeout, "idle-timeout"

    def _sweep_deadlines(self, now: float, everyone: bool) -> None:
        """The one timer for every connection: sessions past their deadline are closed. Sessions still in the
        handshake are checked every tick; logged-in ones (idle timeout: minutes) only when ``everyone``."""
        for session in list((self.sessions if everyone else self._handshaking).values()):
            deadline, why = self._deadline(session)
            if now >= deadline:
                self._finish(session, why)
        for session in [s for s in self._awaiting_header if now - s.connected >= PROXY_HEADER_TIMEOUT]:
            self._refuse_unadmitted(session, "proxy-timeout", session.peer, f"no header in {PROXY_HEADER_TIMEOUT:.0f} s")

    def _authorize(self, sid: int, username: str, password: str) -> Worker:
        """Parse the login and check the address's licence (allowlist); a connection's first worker decides its
        site, whose curtailment may refuse it: the miner is told why (``client.show_message``, then error 24)
        and the connection is closed."""
        try:
            worker = parse_worker(username, password, self._network)
        except AuthError:
            self._refusals["invalid-username"].inc()
            raise
        if self.access is not None:
            self.access.check(worker)  # AuthError (error 24) for an address not licensed
        session = self.sessions.get(sid)
        if self.sites is not None and session is not None and session.site is None:
            site, refusal = self.sites.admit(session.ip, worker.name, worker.script)
            if refusal is not None:
                self._refusals["site-curtailment"].inc()
                session.protocol.show_message(refusal)
                session.closing = True
                session.close_reason = "curtailed"
                raise AuthError(refusal)
            session.site = site
        return worker

    def close_with_message(self, session: Session, reason: str, message: str) -> None:
        """Tell the miner why (``client.show_message``, for those that display it), then close gracefully."""
        if session.finished:
            return
        session.protocol.show_message(message)
        self._finish(session, reason, graceful=True)

    def _dispatch(self, session: Session, event: Event) -> None:
        proto = session.protocol
        if isinstance(event, ShareSubmitted):
            if not session.submits.take(time.monotonic()):
                self.metrics.share_rejects.labels("rate-limited").inc()
                proto.answer_error(event.request_id, 20, "Too many submits, slow down")
                session.rate_limited += 1
                if session.rate_limited > 10 * self.config.stratum.guard.submit_burst:
                    session.log.warning("submit_flood_dropped")
                    session.closing = True
                return
            if self.access is not None and not self.access.may_mine(event.worker):
                self.metrics.share_rejects.labels("unlicensed").inc()
                proto.answer_error(event.request_id, ERR_UNAUTHORIZED, "Address is no longer licensed on this pool")
                return
            blocks = self.coordinator.blocks_found
            result, committed = self.coordinator.judge(event, proto.extranonce1)
            if self.sites is not None and session.site is not None:
                # A block counts when the coordinator sent one: a stale share can still carry a block.
                self.sites.share(session.site, event.worker.full_name, event.worker.name,
                                 result.difficulty if isinstance(result, Accepted) else None,
                                 self.coordinator.blocks_found > blocks)
            self._answer_share(session, event, result, committed)
        elif isinstance(event, Subscribed):
            self.metrics.subscribes.inc()
            session.agent = event.user_agent
            session._log = None
            session.log.debug("subscribed", resumed=event.resumed_session)
            if proto.workers and not session.has_work:
                self._send_work(session, fresh=False)
        elif isinstance(event, Authorized):
            self.metrics.authorizes.labels("ok").inc()
            worker = event.worker
            self.coordinator.stats.seen(worker.address, worker.name, time.time())
            if self.sites is not None and session.site is not None:
                self.sites.authorized(session.id, session.site, worker.full_name, worker.name)
            if event.first:
                self._handshaking.pop(session.id, None)
                session.worker = event.worker
                session._log = None  # the worker joins the log context
                if event.worker.fixed_difficulty is not None:
                    proto.set_difficulty(session.vardiff.fix(event.worker.fixed_difficulty))
                else:
                    proto.set_difficulty(session.vardiff.difficulty)
                session.log.info("authorized")
                session._log = None  # not kept: most sessions log nothing more, and a bound logger costs ~0.4 KB
                proto.request_client_version()
            if proto.subscribed and not session.has_work:
                self._send_work(session, fresh=False)
            elif session.has_work and self.coordinator.solo and not event.first:
                job = self.coordinator.job_for(event.worker)  # a new payout address needs its own coinbase
                if job is not None:
                    proto.send_job(job, clean_jobs=False)
        elif isinstance(event, DifficultySuggested):
            if event.minimum:
                session.vardiff.set_floor(event.difficulty)
            session.vardiff.suggest(event.difficulty, time.monotonic())
            self._retune(session, hint=True)
        elif isinstance(event, TransactionsRequested):
            # The core lets through only logged-in sessions, jobs they were sent, and each job once.
            if not session.transactions.take(time.monotonic()):
                self.metrics.protocol_errors.labels("get-transactions-limited").inc()
                proto.answer_error(event.request_id, ERR_OTHER, "Too many get_transactions requests, slow down")
                session.errors += 1
                return
            job = self.coordinator.book.get(event.job_id)
            if isinstance(job, Job):
                txids = [tx.txid[::-1].hex() for tx in job.template.transactions]
                proto.answer_transactions(event.request_id, event.job_id, txids)
            else:
                proto.answer_error(event.request_id, ERR_JOB_NOT_FOUND, "Job not found")
        elif isinstance(event, ShareRefused):
            if self.sites is not None and session.site is not None:
                self.sites.share(session.site, "", "", None, False)
            self.metrics.shares.labels("rejected").inc()
            self.metrics.share_rejects.labels(event.rejected.reason.value).inc()
            session.errors += 1
        elif isinstance(event, AuthorizeFailed):
            self.metrics.authorizes.labels("failed").inc()
            refusal = self._refusals.get(event.reason.replace(" ", "-"))
            if refusal is not None:  # refusals the core makes itself (the authorizer counts its own)
                refusal.inc()
            session.log.info("authorize_failed", username=event.username, reason=event.reason)
            session.errors += 1
        elif isinstance(event, ProtocolError):
            kind = "fatal" if event.fatal else "invalid"
            self.metrics.protocol_errors.labels(kind).inc()
            session.log.info("protocol_error", reason=event.reason, fatal=event.fatal)
            session.errors += 1

    def _answer_share(self, session: Session, event: ShareSubmitted, result: ShareResult,
                      committed: Outcome | None) -> None:
        proto = session.protocol
        if isinstance(result, Accepted):
            assert committed is not None  # the coordinator queues every accepted share to the ledger
            slot = proto.defer_reply()  # "true" only once the ledger has the share; later replies wait behind it
            committed.add_done_callback(lambda done: self._settle(session, event, result, slot, done))
            return
        session.log.debug("share_rejected", reason=result.reason.value, detail=result.detail)
        proto.answer_submit(event.request_id, result)
        if result.reason is not Reject.STALE:
            self._escalate(session, session.invalid.invalid())

    def _settle(self, session: Session, event: ShareSubmitted, result: Accepted, slot: Deferred,
                committed: Outcome) -> None:
        """The ledger answered for one accepted share: fill its reply and send what is now ready."""
        error = committed.exception() if not committed.cancelled() else asyncio.CancelledError()
        proto = session.protocol
        try:
            if isinstance(error, DuplicateShare):  # credited already (through another front-end process)
                proto.settle(slot, event.request_id, SHARE_DUPLICATE)
                self.metrics.shares.labels("rejected").inc()
                self.metrics.share_rejects.labels(Reject.DUPLICATE.value).inc()
            elif error is not None:  # never answer true for a share the ledger did not take
                session.log.error("ledger_write_failed", error=str(error))
                self.coordinator.forget(result)
                proto.settle(slot, event.request_id, SHARE_NOT_RECORDED)
            else:
                proto.settle(slot, event.request_id, result)
                new = session.vardiff.record_share(result.difficulty, time.monotonic())
                if new is not None and new != proto.difficulty:
                    self._resend_at(session, new)
                session.invalid.valid()
            if session.finished:
                return
            session.flush()
            if session.paused and proto.deferred <= MAX_SHARES_IN_FLIGHT // 2 and session.transport is not None:
                session.paused = False
                session.transport.resume_reading()
        except Exception:  # a bug here would leave the reply slot unfilled and the miner waiting for ever
            session.log.exception("session_crashed")
            self._finish(session, "error")

    def _retune(self, session: Session, hint: bool = False) -> None:
        """Bring the miner to its vardiff difficulty. A hint-driven change re-sends work only while the
        session's hint allowance lasts; otherwise it waits (coalesced with later hints) for housekeeping."""
        proto = session.protocol
        new = session.vardiff.difficulty
        if new == proto.difficulty:
            session.retune_pending = False
            return
        if hint and not session.hints.take(time.monotonic()):
            session.retune_pending = True
            self.metrics.difficulty_hints.labels("coalesced").inc()
            return
        if hint:
            self.metrics.difficulty_hints.labels("applied").inc()
        session.retune_pending = False
        self._resend_at(session, new)

    def _resend_at(self, session: Session, difficulty: float) -> None:
        """A new difficulty for a miner: its work is re-sent under alias ids, so the change applies to them
        alone (shares for ids already out keep the difficulty they were sent at)."""
        session.protocol.set_difficulty(difficulty)
        if session.has_work:
            self._send_work(session, fresh=True)

    def _escalate(self, session: Session, step: Escalation) -> None:
        """Sustained invalid shares: fresh work, then reconnect, then drop with a strike (bans repeat offenders)."""
        if step is Escalation.NONE:
            return
        session.log.warning("invalid_share_escalation", step=step.value, consecutive=session.invalid.consecutive)
        self.metrics.protocol_errors.labels(f"escalation-{step.value}").inc()
        if step is Escalation.FRESH_WORK:
            if session.protocol.extranonce_subscribed:
                self._change_extranonce(session)
            self._send_work(session, fresh=True, clean=True)
        elif step is Escalation.RECONNECT:
            session.protocol.send_reconnect_same()
        elif step is Escalation.DROP:
            session.closing = True
            if self.guard.strike(session.ip, time.monotonic()):
                session.log.warning("address_banned", ip=session.ip, seconds=self.config.stratum.guard.ban_seconds)
                self.metrics.protocol_errors.labels("ban").inc()

    def connection_count(self) -> int:
        return len(self.sessions)

    def session_states(self) -> dict[str, int]:
        states = {"connected": 0, "subscribed": 0, "authorized": 0}
        for session in self.sessions.values():
            proto = session.protocol
            states["authorized" if proto.workers else "subscribed" if proto.subscribed else "connected"] += 1
        return states

    async def housekeeping(self) -> None:
        """Run for the server's lifetime under the app's supervisor (a crash restarts it, and /readyz shows it
        down meanwhile): without it no deadline is enforced. Every second: handshake deadlines. Every 5 s: idle deadlines, coalesced hints, lower difficulty for
        miners that went quiet, and sessions counted by state for metrics."""
        tick = 0
        while True:
            await asyncio.sleep(1)
            tick += 1
            now = time.monotonic()
            self._sweep_deadlines(now, everyone=tick % 5 == 0)
            if self.access is not None:
                self.access.tick()  # sessions of addresses removed from the allowlist, closed at a paced rate
            if tick % 5:
                continue
            for session in list(self.sessions.values()):
                if session.retune_pending and session.hints.take(now):
                    self._retune(session)
                    session.flush()
                if session.has_work:
                    new = session.vardiff.idle_check(now)
                    if new is not None:
                        self._resend_at(session, new)
                        session.flush()
            for state, count in self.session_states().items():
                self.metrics.sessions.labels(state).set(count)
