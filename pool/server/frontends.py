"""The coordinator's side of multi-process Stratum (``stratum.processes`` >= 2): starts, feeds and supervises
the front-end processes (``pool/server/frontend.py``) and stands in for the one-process ``StratumServer``.

The coordinator process keeps what there is one of: the template source, the ledger and its writer, the HTTP
API, maturity and payments. Each front-end owns its miners' connections. Between them, over a Unix socket:

* every template, pickled once, the same bytes to each front-end;
* accepted shares in batches, each committed here and acknowledged after the commit (the miner's ``true``);
  a solution that reaches the ledger twice through different processes is refused here as a duplicate;
* extranonce1 values released by one process, offered to the others for session resume;
* once a second, each process's metrics and counts, merged into the one ``/metrics`` and API here;
* operator commands (reconnect, version mask, TLS reload) fanned out, answers summed;
* the allowlist after a reload here (each front-end enforces it and drains its own sessions), and each site's
  curtailment state as the one ``SiteController`` here decides it; the front-ends report their site events
  (logins, shares, closes, refusals) into that controller, and close the sessions it names, paced here.

A front-end that exits is started again with backoff (``pool_frontend_restarts_total``); the miners it had
reconnect to the others meanwhile (the kernel only gives connections to listening sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import pickle
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import structlog
from prometheus_client.metrics_core import Metric

from pool.config import Config
from pool.ledger.sqlite import DuplicateShare, Ledger, ShareRecord
from pool.mining.allowlist import Allowlist
from pool.node.blocks import FoundBlock
from pool.node.rpc import RpcCredentials
from pool.ops.telemetry import Metrics
from pool.programme.controller import SiteController
from pool.programme.remote import apply_events, split_id
from pool.server.access import AccessControl
from pool.server.coordinator import Coordinator
from pool.server.frontend import TOKEN_ENV
from pool.server.ipc import TEMPLATE_HEAD, Kind, Link, encode_raw

log = structlog.get_logger("pool.frontends")

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding the ``pool`` package

START_TIMEOUT = 60.0  # seconds for every front-end to be listening at start
COMMAND_TIMEOUT = 5.0
STATS_TIMEOUT = 0.5  # a scrape waits this long at most for fresh figures from the front-ends
RESTART_BACKOFF = (0.5, 10.0)  # first and longest wait before starting a dead front-end again
STABLE_AFTER = 60.0  # a front-end up this long restarts without the accumulated backoff next time
LINK_GRACE = 15.0
ADOPT_WAIT = 5.0  # seconds a coordinator started after a crash waits for the front-ends it left to link again
STATE_FILE = "frontends.json"  # a running front-end without its link this long is killed and started again
DUPLICATE_HEIGHTS = 3  # tips whose credited solutions are remembered for the cross-process duplicate check
# Gauges summed over the front-ends (the coordinator's own value is not counted), or their maximum; any other
# gauge is the coordinator's (templates, network, ledger), or the front-ends' maximum when it has none.
SUMMED_GAUGES = frozenset({"pool_connections", "pool_sessions", "pool_blocks_unresolved"})
MAX_GAUGES = frozenset({"pool_block_oldest_unresolved_seconds"})


def run_dir(data_dir: str) -> Path:
    """Where the coordinator's socket lives: under the data dir when the path fits a Unix socket name
    (108 bytes), else a per-user directory in the temp dir named after the data dir."""
    preferred = Path(data_dir).resolve() / "run"
    if len(str(preferred / "frontends.sock")) < 100:
        return preferred
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"pool-{os.getuid()}-{digest}"


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise RuntimeError(f"{path} belongs to another user: the front-end socket cannot live there")
    os.chmod(path, 0o700)


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (not listen) the port with SO_REUSEPORT: it is ours, and front-ends may bind it beside this socket.
    A socket that does not listen gets no connections, so only the front-ends' listeners are served."""
    family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


@dataclasses.dataclass(slots=True, eq=False)
class _Slot:
    """One front-end process and what the coordinator knows of it."""

    index: int
    proc: asyncio.subprocess.Process | None = None
    pid: int = 0
    link: Link | None = None
    ready: asyncio.Future[None] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    backoff: float = RESTART_BACKOFF[0]
    link_lost_at: float | None = None
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    unresolved: set[str] = dataclasses.field(default_factory=set)
    running: bool = False  # started (or adopted) and not yet seen to exit
    adopted: bool = False  # left running by a coordinator that crashed: not our child process

    @property
    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.returncode is None
        return bool(self.pid) and _pid_alive(self.pid)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.proc is not None:
                self.proc.send_signal(sig)
            elif self.pid:
                os.kill(self.pid, sig)


def _pid_alive(pid: int) -> bool:
    """A process we did not start (adopted): alive and still a front-end (the pid was not reused)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"pool.server.frontend" in fh.read()
    except OSError:
        return False


class FrontendPool:
    """Runs ``stratum.processes`` front-ends; offers the parts of ``StratumServer`` the rest of the pool uses."""

    def __init__(self, config: Config, metrics: Metrics, ledger: Ledger, coordinator: Coordinator,
                 submit_nodes: list[tuple[str, RpcCredentials, float]], pool_script: bytes | None,
                 on_block_resolved: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.ledger = ledger
        self.coordinator = coordinator
        self.submit_nodes = submit_nodes  # (name, credentials, RPC timeout): each front-end submits to every one
        self.tls = None  # the front-ends run the TLS listeners (StratumServer.tls in one process)
        self.pool_script = pool_script
        self.on_block_resolved = on_block_resolved
        self.processes = config.stratum.processes
        self.slots = [_Slot(i) for i in range(self.processes)]
        self.port = 0
        self.tls_port = 0
        self._reserved: list[socket.socket] = []
        self._server: asyncio.AbstractServer | None = None
        self._dir = run_dir(config.data_dir)
        self.socket_path = str(self._dir / "frontends.sock")
        self._token = ""
        self._child_config = config
        self._template_body: bytes | None = None
        self._released: OrderedDict[bytes, float] = OrderedDict()
        self._seen: OrderedDict[int, set[int]] = OrderedDict()  # height -> header hashes credited (_solution)
        self._commands = itertools.count(1)
        self._replies: dict[int, tuple[asyncio.Future[None], list[Any], int, Callable[[Any], None] | None]] = {}
        self._closing = False
        self.sites: SiteController | None = None  # set by the app when sites are configured
        self.access: AccessControl | None = None  # set by the app when an allowlist file is configured
        self.merged = MergedMetrics(metrics, self)

    # ---- start and stop ------------------------------------------------------------------------------------

    async def start(self) -> int:
        """Listen for front-ends, adopt those a crashed coordinator left running (they kept their miners),
        start the others, and return once every one is listening."""
        sc = self.config.stratum
        _private_dir(self._dir)
        survivors, state = self._survivors()
        plain = reserve_port(sc.host, sc.port or (state.get("port", 0) if survivors else 0))
        self._reserved.append(plain)
        self.port = int(plain.getsockname()[1])
        tls_port = None
        if sc.tls_port is not None:
            tls = reserve_port(sc.host, sc.tls_port or (state.get("tls_port", 0) if survivors else 0))
            self._reserved.append(tls)
            self.tls_port = tls_port = int(tls.getsockname()[1])
        self._child_config = dataclasses.replace(
            self.config, stratum=dataclasses.replace(sc, port=self.port, tls_port=tls_port))
        self._token = self._read_token() if survivors else ""
        if not self._token:
            self._token = secrets.token_hex(16)
            self._write_private(self._dir / "token", self._token)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(self._accept, self.socket_path)
        os.chmod(self.socket_path, 0o600)
        for index, pid in survivors.items():
            slot = self.slots[index]
            slot.pid, slot.adopted, slot.running = pid, True, True
            slot.started_at = time.monotonic()
            slot.ready = loop.create_future()
        if survivors:
            adopting = [slot.ready for slot in self.slots if slot.adopted and slot.ready is not None]
            await asyncio.wait(adopting, timeout=ADOPT_WAIT)
            for slot in self.slots:
                if slot.adopted and slot.ready is not None and not slot.ready.done():
                    log.error("frontend_not_adopted", process=slot.index, pid=slot.pid)
                    slot.kill()
                    slot.adopted = slot.running = False
                elif slot.adopted:
                    log.warning("frontend_adopted", process=slot.index, pid=slot.pid)
                    self.metrics.frontend_up.labels(str(slot.index)).set(1)
        for slot in self.slots:
            if not slot.running:
                await self._spawn(slot)
        waiting = [slot.ready for slot in self.slots if slot.ready is not None]
        done, pending = await asyncio.wait(waiting, timeout=START_TIMEOUT)
        if pending or any(f.exception() is not None for f in done):
            raise RuntimeError(f"{len(pending)} of {self.processes} Stratum front-end processes did not start")
        log.info("stratum_listening", host=sc.host, port=self.port, tls_port=self.tls_port or None,
                 processes=self.processes, adopted=len(survivors))
        return self.port

    def _survivors(self) -> tuple[dict[int, int], dict[str, Any]]:
        """Front-ends a crashed coordinator left running: {index: pid} still alive, and the ports they use."""
        try:
            state = json.loads((self._dir / STATE_FILE).read_text())
            pids = {int(i): int(p) for i, p in state.get("pids", {}).items()}
        except (OSError, ValueError, AttributeError):
            return {}, {}
        if state.get("processes") != self.processes:
            for pid in pids.values():  # a different layout: they cannot be adopted
                if _pid_alive(pid):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGTERM)
            return {}, {}
        return {i: p for i, p in pids.items() if 0 <= i < self.processes and _pid_alive(p)}, state

    def _save_state(self) -> None:
        """Which processes run on which ports: what a coordinator started after a crash adopts."""
        state = {"processes": self.processes, "port": self.port, "tls_port": self.tls_port,
                 "pids": {str(s.index): s.pid for s in self.slots if s.running}}
        self._write_private(self._dir / STATE_FILE, json.dumps(state))

    def _read_token(self) -> str:
        try:
            return (self._dir / "token").read_text().strip()
        except OSError:
            return ""

    @staticmethod
    def _write_private(path: Path, text: str) -> None:
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)

    async def _spawn(self, slot: _Slot) -> None:
        env = dict(os.environ)
        env[TOKEN_ENV] = self._token
        # The front-end imports this same code, wherever the pool was started from.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        slot.ready = asyncio.get_running_loop().create_future()
        slot.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pool.server.frontend", self.socket_path, str(slot.index),
            env=env, stdin=asyncio.subprocess.DEVNULL,
        )
        slot.pid = slot.proc.pid
        slot.started_at = time.monotonic()
        slot.restart_at = None
        slot.running, slot.adopted = True, False
        self._save_state()
        self.metrics.frontend_up.labels(str(slot.index)).set(1)
        log.info("frontend_spawned", process=slot.index, pid=slot.pid)

    async def close(self) -> None:
        """Stop every front-end (they close their miners' connections and finish their block submissions)."""
        self._closing = True
        for slot in self.slots:
            if slot.link is not None:
                slot.link.send(Kind.COMMAND, (0, "stop", ()))
            elif slot.alive:
                slot.kill(signal.SIGTERM)
        deadline = time.monotonic() + 35
        while any(slot.alive for slot in self.slots) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for slot in self.slots:
            if slot.alive:
                log.error("frontend_kill", process=slot.index, pid=slot.pid)
                slot.kill()
            if slot.proc is not None:
                await slot.proc.wait()
            slot.running = False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._dir / STATE_FILE)
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        for sock in self._reserved:
            sock.close()

    # ---- supervision ---------------------------------------------------------------------------------------

    async def housekeeping(self) -> None:
        """Supervised for the pool's lifetime: a front-end that exited is started again (with backoff), one
        that lost its link for good is killed (and then started again)."""
        while True:
            await asyncio.sleep(0.2)
            if self._closing:
                continue
            now = time.monotonic()
            for slot in self.slots:
                if slot.running and not slot.alive:
                    self._died(slot, now)
                if slot.restart_at is not None and now >= slot.restart_at:
                    await self._spawn(slot)
                elif slot.running and slot.link is None and slot.link_lost_at is not None \
                        and now - slot.link_lost_at > LINK_GRACE:
                    log.error("frontend_unlinked_killed", process=slot.index, pid=slot.pid)
                    slot.kill()

    def _died(self, slot: _Slot, now: float) -> None:
        code = slot.proc.returncode if slot.proc is not None else None
        slot.running = slot.adopted = False
        if now - slot.started_at > STABLE_AFTER:
            slot.backoff = RESTART_BACKOFF[0]
        slot.restart_at = now + slot.backoff
        log.error("frontend_died", process=slot.index, pid=slot.pid, returncode=code,
                  restart_in=round(slot.backoff, 2))
        slot.backoff = min(slot.backoff * 2, RESTART_BACKOFF[1])
        self.metrics.frontend_restarts.labels(str(slot.index)).inc()
        self.metrics.frontend_up.labels(str(slot.index)).set(0)
        if slot.link is not None:
            slot.link.close()
            slot.link = None
        slot.stats = {}
        slot.unresolved.clear()
        if self.sites is not None:  # its miners are gone (they reconnect to the others)
            book = self.sites.book
            for gid in [g for g in book._sessions if split_id(g)[0] == slot.index]:
                self.sites.closed(gid)
        if self.access is not None:
            self.access.remote_drain_done(slot.index, 0)

    # ---- the links -----------------------------------------------------------------------------------------

    def _accept(self) -> Link:
        holder: list[Link] = []
        link = Link(lambda kind, payload: self._on_frame(holder[0], kind, payload), self._on_lost)
        holder.append(link)
        link.slot = None  # type: ignore[attr-defined]
        return link

    def _slot_of(self, link: Link) -> _Slot | None:
        return getattr(link, "slot", None)

    def _on_lost(self, link: Link) -> None:
        slot = self._slot_of(link)
        if slot is not None and slot.link is link:
            slot.link = None
            slot.link_lost_at = time.monotonic()
            if not self._closing:
                log.warning("frontend_link_lost", process=slot.index, pid=slot.pid)

    def _on_frame(self, link: Link, kind: Kind, payload: bytes) -> None:
        if kind is Kind.HELLO:
            self._hello(link, *pickle.loads(payload))
            return
        slot = self._slot_of(link)
        if slot is None:  # nothing before a good HELLO
            link.close()
            return
        if kind is Kind.OPS:
            self._ops(link, pickle.loads(payload))
        elif kind is Kind.STATS:
            self._stats(slot, pickle.loads(payload))
        elif kind is Kind.RELEASED:
            self._released_values(slot, pickle.loads(payload))
        elif kind is Kind.CLAIMED:
            self._claimed_values(slot, pickle.loads(payload))
        elif kind is Kind.READY:
            if slot.ready is not None and not slot.ready.done():
                slot.ready.set_result(None)
        elif kind is Kind.REPLY:
            self._reply(*pickle.loads(payload))
        elif kind is Kind.FOUND:
            self._found(slot, *pickle.loads(payload))
        elif kind is Kind.SITES:
            if self.sites is not None:
                apply_events(self.sites, pickle.loads(payload))
        elif kind is Kind.EVENT:
            what, value = pickle.loads(payload)
            if what == "drain_done" and self.access is not None:
                self.access.remote_drain_done(slot.index, int(value))

    def _hello(self, link: Link, index: int, pid: int, token: str) -> None:
        if not secrets.compare_digest(str(token), self._token) or not 0 <= index < self.processes:
            log.error("frontend_refused", index=index, pid=pid, reason="bad token or index")
            link.send(Kind.REFUSED, "bad token or index")
            link.close()
            return
        slot = self.slots[index]
        if pid != slot.pid or (slot.link is not None and not slot.link.closed):
            link.send(Kind.REFUSED, "not the process started for this index")
            link.close()
            return
        link.slot = slot  # type: ignore[attr-defined]
        slot.link = link
        slot.link_lost_at = None
        link.send(Kind.WELCOME, (self._child_config, self.submit_nodes, self.pool_script, list(self._released)))
        if self._template_body is not None:  # the current work: a front-end that relinks may have it already
            link.send_raw(self._template_frame(True, False))
        if self.sites is not None:  # every site's curtailment state, as the controller has it now
            for site in self.sites.curtailments:
                link.send(Kind.COMMAND, (0, "site", (site, self.sites.front_state(site, self.processes))))

    # ---- templates -----------------------------------------------------------------------------------------

    def _template_frame(self, clean: bool, fresh: bool) -> bytes:
        assert self._template_body is not None
        return encode_raw(Kind.TEMPLATE, TEMPLATE_HEAD.pack(clean, fresh, time.monotonic()) + self._template_body)

    def broadcast(self, clean: bool, done: Callable[[int], None] | None = None) -> int:
        """The coordinator's current template to every front-end (pickled once); returns the miners with work.
        Each front-end times its own fan-out, so ``done`` is not used here."""
        prepared = self.coordinator.prepared
        if prepared is None:
            return 0
        self._template_body = pickle.dumps(prepared, protocol=pickle.HIGHEST_PROTOCOL)
        frame = self._template_frame(clean, True)
        for slot in self.slots:
            if slot.link is not None:
                slot.link.send_raw(frame)
        self.metrics.jobs_broadcast.labels("clean" if clean else "update").inc()
        return self.session_states().get("authorized", 0)

    # ---- shares and blocks ---------------------------------------------------------------------------------

    def _ops(self, link: Link, ops: list[tuple[int, str, Any]]) -> None:
        """A front-end's batch of ledger writes, queued in its order; each answered after its commit. A run of
        shares is one ledger operation (one savepoint, one answer): the coordinator's cost per share is a set
        lookup and a row, not a future and a thread hand-off each."""
        run: list[tuple[int, ShareRecord]] = []
        bests: list[Any] = []
        for seq, op, payload in ops:
            if op == "share":
                if self._claim(payload):
                    run.append((seq, payload))
                    self._credit_live(payload, bests)
                else:
                    link.queue(Kind.ACKS, (seq, ("duplicate", "share already credited")))
                continue
            if run:
                self._record_run(link, run, bests)
                run, bests = [], []
            if op == "block":
                self.coordinator.best.new_round()  # after the finding share's offer, as in one process
                future = self.ledger.record_block(payload)
            elif op == "status":
                future = self.ledger.set_block_status(*payload)
            else:
                link.queue(Kind.ACKS, (seq, ("failed", f"unknown ledger op {op!r}")))
                continue
            future.add_done_callback(lambda f, s=seq: self._acked(link, [(s, None)], f))
        if run:
            self._record_run(link, run, bests)

    def _credit_live(self, record: ShareRecord, bests: list[Any]) -> None:
        """What the one-process coordinator does for an accepted share besides its row: chart history and best
        shares (the front-ends keep neither; this process sees every share). Best-share rows are written
        right behind the run of shares that holds them."""
        coordinator = self.coordinator
        coordinator.history.add(record.address, record.worker, record.difficulty, record.ts)
        best = coordinator.best.offer(record.address, record.worker, record.share_difficulty, record.ts)
        if best is not None:
            bests.append(best)

    def _claim(self, record: ShareRecord) -> bool:
        """False when the share's solution was credited already (through any front-end)."""
        key = _solution(record)
        seen = self._seen.get(record.height)
        if seen is None:
            seen = self._seen[record.height] = set()
            while len(self._seen) > DUPLICATE_HEIGHTS:
                self._seen.popitem(last=False)
        elif key in seen:
            return False
        seen.add(key)
        return True

    def _record_run(self, link: Link, run: list[tuple[int, ShareRecord]], bests: list[Any]) -> None:
        future = self.ledger.record_shares([record for _, record in run])
        future.add_done_callback(lambda f: self._acked(link, run, f))
        if bests:  # one write for the run; a worker's newest record replaces its earlier ones
            rows = {(b.address, b.worker): b.row() for b in bests}
            self.ledger.record_bests(list(rows.values())).add_done_callback(_best_written)

    def _acked(self, link: Link, entries: list[tuple[int, ShareRecord | None]], future: asyncio.Future[Any]) -> None:
        error = future.exception() if not future.cancelled() else asyncio.CancelledError()
        if error is None:
            stats = self.coordinator.stats
            for seq, record in entries:
                if record is not None:
                    stats.accepted(record.address, record.worker, record.difficulty, record.ts)
                link.queue(Kind.ACKS, (seq, None))
            return
        kind = "duplicate" if isinstance(error, DuplicateShare) else "failed"
        message = str(error) or type(error).__name__
        for seq, record in entries:
            if record is not None:  # not credited: a resubmission must count
                seen = self._seen.get(record.height)
                if seen is not None:
                    seen.discard(_solution(record))
            link.queue(Kind.ACKS, (seq, (kind, message)))

    def _found(self, slot: _Slot, what: str, value: Any) -> None:
        if what == "found":
            block: FoundBlock = value
            self.coordinator.blocks_found += 1
            self.coordinator.last_block = block
            slot.unresolved.add(block.block_hash)
        elif what == "resolved":
            slot.unresolved.discard(value)
            if self.on_block_resolved is not None:
                self.on_block_resolved(value)

    def unresolved(self) -> set[str]:
        """Blocks the front-ends are still submitting (the maturity tracker leaves them alone)."""
        out: set[str] = set()
        for slot in self.slots:
            out |= slot.unresolved
        return out

    # ---- session resume across processes ------------------------------------------------------------------

    def _released_values(self, slot: _Slot, values: list[bytes]) -> None:
        now = time.monotonic()
        window = self.config.stratum.session_resume_seconds
        for value in values:
            self._released[value] = now
            self._released.move_to_end(value)
        while self._released and (len(self._released) > 100_000 or now - next(iter(self._released.values())) > window):
            self._released.popitem(last=False)
        self._fan_out(slot, Kind.RELEASED, values)

    def _claimed_values(self, slot: _Slot, values: list[bytes]) -> None:
        for value in values:
            self._released.pop(value, None)
        self._fan_out(slot, Kind.CLAIMED, values)

    def _fan_out(self, source: _Slot, kind: Kind, values: Iterable[bytes]) -> None:
        for slot in self.slots:
            if slot is not source and slot.link is not None:
                for value in values:
                    slot.link.queue(kind, value)

    # ---- stats, metrics and commands ----------------------------------------------------------------------

    def _stats(self, slot: _Slot, stats: dict[str, Any]) -> None:
        slot.stats = stats
        slot.unresolved = set(stats.get("unresolved", ()))
        coord_stats = self.coordinator.stats
        for (address, name), count in stats.get("rejects", {}).items():
            for _ in range(count):
                coord_stats.rejected(address, name)
        label = str(slot.index)
        for family in stats.get("metrics", ()):
            if family.name == "process_cpu_seconds" and family.samples:
                self.metrics.frontend_cpu_seconds.labels(label).set(family.samples[0].value)
            elif family.name == "process_resident_memory_bytes" and family.samples:
                self.metrics.frontend_memory_bytes.labels(label).set(family.samples[0].value)

    def session_states(self) -> dict[str, int]:
        states = {"connected": 0, "subscribed": 0, "authorized": 0}
        for slot in self.slots:
            for state, count in slot.stats.get("states", {}).items():
                states[state] = states.get(state, 0) + count
        return states

    def connection_count(self) -> int:
        return sum(int(slot.stats.get("connections", 0)) for slot in self.slots)

    async def _command(self, name: str, *args: Any, timeout: float = COMMAND_TIMEOUT,
                       on_answer: Callable[[Any], None] | None = None) -> list[Any]:
        """Send a command to every linked front-end; their answers (within ``timeout``). ``on_answer`` sees
        each as it arrives, before any later frame of the same front-end."""
        command_id = next(self._commands)
        links = [slot.link for slot in self.slots if slot.link is not None]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        answers: list[Any] = []
        self._replies[command_id] = (done, answers, len(links), on_answer)
        for link in links:
            link.send(Kind.COMMAND, (command_id, name, args))
        if links:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(done), timeout)
        self._replies.pop(command_id, None)
        return answers

    def _reply(self, command_id: int, result: Any) -> None:
        entry = self._replies.get(command_id)
        if entry is None:
            return
        done, answers, expected, on_answer = entry
        answers.append(result)
        if on_answer is not None:
            on_answer(result)
        if len(answers) >= expected and not done.done():
            done.set_result(None)

    async def refresh(self) -> None:
        """Fresh figures from every front-end before a scrape or an API answer (bounded by COMMAND_TIMEOUT;
        otherwise the last ones, at most a second old, are used)."""
        await self._command("stats", timeout=STATS_TIMEOUT)

    async def reconnect_all(self, host: str, port: int, wait_seconds: int = 0) -> int:
        return sum(int(a) for a in await self._command("reconnect", host, port, wait_seconds))

    async def set_version_mask(self, mask: int) -> int:
        # Front-ends started later get the new mask too.
        self._child_config = dataclasses.replace(
            self._child_config, stratum=dataclasses.replace(self._child_config.stratum, version_mask=mask))
        return sum(int(a) for a in await self._command("version_mask", mask))

    async def spread_allowlist(self, allowlist: Allowlist, gone: frozenset[bytes]) -> dict[int, int]:
        """A reloaded allowlist to every front-end (and to those started later); {process: sessions queued
        to drain}. Each answer is noted by the access control as it comes (see ``note_remote_drain``)."""
        auth = dataclasses.replace(self._child_config.authorization, allowlist=allowlist)
        self._child_config = dataclasses.replace(self._child_config, authorization=auth)
        access = self.access

        def noted(answer: Any) -> None:
            if access is not None and isinstance(answer, tuple):
                access.note_remote_drain(*answer)

        answers = await self._command("allowlist", allowlist, gone, on_answer=noted)
        return {int(a[0]): int(a[1]) for a in answers if isinstance(a, tuple)}

    def publish_site(self, site: str) -> None:
        """The controller started, ended or changed ``site``'s curtailment: every front-end applies it."""
        if self.sites is None:
            return
        state = self.sites.front_state(site, self.processes)
        for slot in self.slots:
            if slot.link is not None:
                slot.link.send(Kind.COMMAND, (0, "site", (site, state)))

    def close_sessions(self, sessions: list[int], reason: str, message: str) -> int:
        """A curtailment's paced closes (the pace is the controller's, for the whole pool): each session to
        the front-end that holds it. They leave the site book now, so the next tick names others."""
        by_process: dict[int, list[int]] = {}
        for gid in sessions:
            index, sid = split_id(gid)
            by_process.setdefault(index, []).append(sid)
        count = 0
        for index, sids in by_process.items():
            link = self.slots[index].link if 0 <= index < self.processes else None
            if link is not None:
                link.send(Kind.COMMAND, (0, "close_sessions", (sids, reason, message)))
                count += len(sids)
        if self.sites is not None:
            for gid in sessions:
                self.sites.closed(gid)
        return count

    def reload_tls(self) -> bool:
        if self.config.stratum.tls_port is None:
            return False
        asyncio.get_running_loop().create_task(self._command("reload_tls"))
        return True


class MergedMetrics:
    """One ``/metrics`` for every process: the coordinator's registry merged with each front-end's last
    snapshot (at most a second old). Counters and histograms are summed; gauges follow ``SUMMED_GAUGES`` /
    ``MAX_GAUGES``, else the coordinator's value. Per-process CPU and memory are ``pool_frontend_*``."""

    def __init__(self, metrics: Metrics, pool: FrontendPool) -> None:
        self.metrics = metrics
        self.pool = pool

    def collect(self) -> list[Metric]:
        order: list[str] = []
        families: dict[str, Metric] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], Any]] = {}
        own: dict[str, set[tuple[str, tuple[tuple[str, str], ...]]]] = {}

        def add(family: Metric, from_child: bool) -> None:
            name = family.name
            if name not in families:
                families[name] = family
                values[name] = {}
                own[name] = set()
                order.append(name)
            merged = values[name]
            mode = _mode(families[name].type, name)
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                current = merged.get(key)
                if not from_child:
                    own[name].add(key)
                    if mode != "sum-children":
                        merged[key] = sample
                    continue
                if current is None:
                    merged[key] = sample
                elif sample.name.endswith("_created"):
                    merged[key] = current._replace(value=min(current.value, sample.value))
                elif mode in ("sum", "sum-children"):
                    merged[key] = current._replace(value=current.value + sample.value)
                elif mode == "max" or key not in own[name]:
                    merged[key] = current._replace(value=max(current.value, sample.value))

        for family in self.metrics.registry.collect():
            add(family, from_child=False)
        for slot in self.pool.slots:
            for family in slot.stats.get("metrics", ()):
                if not family.name.startswith("process_"):
                    add(family, from_child=True)
        out = []
        for name in order:
            source = families[name]
            family = Metric(source.name, source.documentation, source.type, source.unit)
            family.samples = list(values[name].values())
            out.append(family)
        return out


def _best_written(done: asyncio.Future[Any]) -> None:
    """A best-share row that did not land is logged; the worker's next record carries it again."""
    if not done.cancelled() and done.exception() is not None:
        log.warning("best_share_not_recorded", error=str(done.exception()))


def _solution(record: ShareRecord) -> int:
    """A share's header hash as the duplicate check keeps it: its low 96 bits (the end of the display hex; the
    start is the leading zeros every share has), an int of ~40 bytes instead of a 64-character string: a tip
    can see tens of millions of shares."""
    return int(record.block_hash[-24:], 16)


def _mode(kind: str, name: str) -> str:
    if kind in ("counter", "histogram", "summary", "gaugehistogram"):
        return "sum"
    if name in SUMMED_GAUGES:
        return "sum-children"
    if name in MAX_GAUGES:
        return "max"
    return "coordinator"
