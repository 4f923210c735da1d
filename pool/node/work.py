"""Fresh work from bitcoind: new tips at once (GBT long poll, ZMQ hashblock), new transactions on a timer.

Delivers each template to ``on_template`` with whether it starts a new chain tip. While bitcoind is warming up
or unreachable it backs off and retries; miners keep the work they already have until a template arrives.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

import structlog

from pool.mining.jobs import BlockTemplate, PreparedTemplate, TemplateError, parse_template
from pool.mining.speculate import HeaderError, empty_successor
from pool.node.nodeset import Member, NodeSet
from pool.node.rpc import NodeClient, NodeError, NodeUnavailable

log = structlog.get_logger("pool.node.work")


def prepare(gbt: object) -> PreparedTemplate:
    """Parse and prepare a template (hex decoding, merkle branch, witness commitment: milliseconds for a
    mainnet template), on a worker thread: never on the loop that answers miners."""
    return PreparedTemplate.from_template(parse_template(gbt))  # type: ignore[arg-type]

TemplateCallback = Callable[[BlockTemplate, bool, str], None]


class TemplateSource:
    """Keeps the pool's template current; one fetch at a time, triggers coalesced.

    ``client`` is one bitcoind, or a ``NodeSet`` of several (templates from the active one, failing over).
    ``zmq_endpoint`` is one endpoint, or one per node name; only the active node's announcements count for
    trusting ZMQ, another node's makes the node set probe at once (the active node may be behind).
    """

    def __init__(
        self,
        client: NodeClient | NodeSet,
        on_template: TemplateCallback,
        refresh_interval: float = 30.0,
        longpoll: bool = True,
        zmq_endpoint: str | Mapping[str, str] = "",
        on_health: Callable[[bool], None] | None = None,
        empty_first_network: str | None = None,
    ) -> None:
        self._client = client
        self._nodes = client if isinstance(client, NodeSet) else None
        self._on_template = on_template
        self._refresh = refresh_interval
        self._longpoll = longpoll
        if isinstance(zmq_endpoint, str):
            self._zmq_endpoints = {"": zmq_endpoint} if zmq_endpoint else {}
        else:
            self._zmq_endpoints = {name: ep for name, ep in zmq_endpoint.items() if ep}
        self._has_zmq = bool(self._zmq_endpoints)
        self._on_health = on_health
        self._wake = asyncio.Event()
        self._reason = "start"
        self._lock = asyncio.Lock()
        self.template: BlockTemplate | None = None
        self.prepared: PreparedTemplate | None = None  # ``template`` prepared off the loop
        self.zmq_trusted = False  # ZMQ has announced a tip and missed none since: long polling waits
        self._zmq_announced: deque[str] = deque(maxlen=8)
        self.fetched_at = 0.0
        self.healthy = False
        # Empty-block work on a ZMQ tip before the full template (None: off). While it is in place, a full
        # template on the tip it replaced is a fetch that started before the block: dropped, not a step back.
        self._empty_first = empty_first_network
        self._speculating: set[asyncio.Task[None]] = set()
        self._replaced_tip: bytes | None = None
        self.speculative = False

    def trigger(self, reason: str) -> None:
        """Ask for a fetch now (a block was found, ZMQ said so, ...)."""
        self._reason = reason
        self._wake.set()

    def loops(self) -> dict[str, Callable[[], Awaitable[None]]]:
        """The source's loops by task name, each to run under its own supervision.

        They are separate tasks on purpose (the pool runs each under ``pool.ops.supervise``): under one
        ``gather`` a failing ZMQ loop cancelled the refresh and the long poll with it, and the pool served its
        first template forever.
        """
        loops: dict[str, Callable[[], Awaitable[None]]] = {"template-refresh": self._refresh_loop}
        if self._longpoll:
            loops["template-longpoll"] = self._longpoll_loop
        for name, endpoint in self._zmq_endpoints.items():
            key = f"template-zmq-{name}" if name else "template-zmq"
            loops[key] = lambda name=name, endpoint=endpoint: self._zmq_loop(name, endpoint)  # type: ignore[misc]
        return loops

    def node_switched(self, before: Member | None, after: Member) -> None:
        """The node set chose another bitcoind: fetch from it now; ZMQ trust is earned again by its own
        announcements (the new node may have no ZMQ at all)."""
        self.zmq_trusted = False
        if before is not None:
            self.trigger("failover")

    def _set_health(self, healthy: bool) -> None:
        if healthy != self.healthy:
            self.healthy = healthy
            if self._on_health is not None:
                self._on_health(healthy)

    async def fetch(self, reason: str) -> bool:
        """Fetch one template and deliver it; False (logged) when bitcoind could not give one."""
        async with self._lock:
            return await self._fetch_locked(reason)

    async def _fetch_locked(self, reason: str) -> bool:
        try:
            gbt = await self._client.get_template()
            prepared = await asyncio.to_thread(prepare, gbt)
        except (NodeUnavailable, NodeError, TemplateError) as exc:
            self._set_health(False)
            log.warning("template_fetch_failed", reason=reason, error=str(exc))
            return False
        self._deliver(prepared, reason)
        return True

    def _deliver(self, prepared: PreparedTemplate, reason: str, speculative: bool = False) -> None:
        template = prepared.template
        if self.speculative and template.prevhash == self._replaced_tip:
            log.debug("template_behind_empty_tip_dropped", height=template.height, reason=reason)
            self.trigger("behind-empty-tip")
            return
        new_tip = self.template is None or template.prevhash != self.template.prevhash
        self.speculative = speculative
        self._replaced_tip = self.template.prevhash if speculative and self.template is not None else None
        self.template = template
        self.prepared = prepared
        self.fetched_at = time.monotonic()
        self._set_health(True)
        if new_tip and self._has_zmq:
            # ZMQ earns trust by announcing tips; a periodic refresh that finds a tip ZMQ has not announced
            # means ZMQ missed it (bitcoind restarted without -zmqpubhashblock, a broken socket): long polling
            # resumes until ZMQ announces a tip again.
            if template.prevhash_hex in self._zmq_announced:
                self.zmq_trusted = True
            elif reason == "refresh" and self.zmq_trusted:
                self.zmq_trusted = False
                log.warning("zmq_missed_a_block", height=template.height, note="long polling resumes")
        self._on_template(template, new_tip, reason)

    def _zmq_announce(self, block_hash: str, node: str = "") -> None:
        """A ZMQ hashblock: remembered (a few), and trusted at once if the tip it names is already ours.

        From a node that is not the active one: the node set probes now (is the active node behind?), and
        when the active node has no ZMQ of its own a fetch is asked for too (it most likely has the block).
        """
        if node and self._nodes is not None and node != self._nodes.active_name:
            self._nodes.wake()
            if self._nodes.active_name not in self._zmq_endpoints:
                self.trigger("zmq")
            return
        self._zmq_announced.append(block_hash)
        if self.template is not None and self.template.prevhash_hex == block_hash:
            self.zmq_trusted = True
        elif self._empty_first and self.template is not None and block_hash:
            # The full fetch waits for the empty work to be out: decoding megabytes of template JSON on the RPC
            # thread holds the GIL for tens of milliseconds, which would delay the header and the broadcast.
            task = asyncio.ensure_future(self._speculate(block_hash))
            self._speculating.add(task)
            task.add_done_callback(self._speculating.discard)
            task.add_done_callback(lambda _: self.trigger("zmq"))
            return
        self.trigger("zmq")

    async def _speculate(self, block_hash: str) -> None:
        """Deliver the coinbase-only template on the announced tip (one getblockheader away), unless a full
        template for it, or a newer tip, got here first. Never raises: the full fetch follows regardless."""
        try:
            header = await self._client.call("getblockheader", block_hash)
            current = self.template
            if current is None or current.prevhash_hex == block_hash or self._empty_first is None:
                return
            empty = empty_successor(current, header, self._empty_first, int(time.time()))
            if empty is None or empty.height < current.height:
                return
            prepared = PreparedTemplate.from_template(empty)  # no transactions: microseconds
        except (NodeUnavailable, NodeError, HeaderError, TemplateError) as exc:
            log.debug("empty_template_skipped", block_hash=block_hash, error=str(exc))
            return
        except Exception:  # noqa: BLE001 - a speculation must never take the tip announcement down with it
            log.exception("empty_template_failed", block_hash=block_hash)
            return
        if self.template is not None and self.template.prevhash_hex == block_hash:
            return  # the full template arrived while the header was on its way
        self._deliver(prepared, "zmq-empty", speculative=True)

    async def _refresh_loop(self) -> None:
        backoff = 0.25
        while True:
            reason, self._reason = self._reason, "refresh"
            self._wake.clear()
            if await self.fetch(reason):
                backoff = 0.25
                timeout = self._refresh
            else:
                timeout = backoff
                backoff = min(backoff * 2, 10.0)
            await self._sleep_or_wake(timeout)

    async def _sleep_or_wake(self, timeout: float) -> None:
        """Wait for ``trigger`` or ``timeout``. Not ``asyncio.wait_for``: on Python 3.11 it drops a cancellation
        that arrives as the event is set, and the refresh loop then outlived shutdown."""
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({waiter}, timeout=timeout)
        finally:
            waiter.cancel()

    async def _longpoll_loop(self) -> None:
        backoff = 0.5
        poll_id: str | None = None
        while True:
            template = self.template
            if template is None or not template.longpollid or self.zmq_trusted:
                # With ZMQ announcing tips, a long poll would only decode every template a second time:
                # multi-megabyte JSON on a thread, GIL time taken from the loop that answers miners.
                await asyncio.sleep(0.2)
                continue
            # Poll with the id of the last long-poll answer when it is for the current tip: a plain fetch
            # may return bitcoind's cached template (same id), which would make the poll return at once.
            if poll_id is None or not poll_id.startswith(template.prevhash_hex):
                poll_id = template.longpollid
            generation = self._nodes.generation if self._nodes is not None else 0
            try:
                gbt = await self._client.longpoll_template(poll_id, timeout=max(90.0, self._refresh * 3))
                if self._nodes is not None and self._nodes.generation != generation:
                    poll_id = None  # answered by a node no longer in use: poll the active one
                    continue
                ready = await asyncio.to_thread(prepare, gbt)
                fresh = ready.template
            except (NodeUnavailable, NodeError, TemplateError) as exc:
                log.debug("longpoll_failed", error=str(exc))
                if isinstance(exc, NodeUnavailable):
                    self._set_health(False)
                    self.trigger("longpoll-failed")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            poll_id = fresh.longpollid
            current = self.template
            if current is None or fresh.prevhash != current.prevhash:
                await self._new_tip_from_longpoll(ready)
            elif fresh.longpollid != current.longpollid:
                async with self._lock:
                    if self.template is not None and self.template.prevhash == fresh.prevhash:
                        self._deliver(ready, "longpoll")

    async def _new_tip_from_longpoll(self, ready: PreparedTemplate) -> None:
        """A poll parked during a burst of blocks can return an older tip than one already fetched: its
        template is used only if its parent is still bitcoind's best block (a cheap call); otherwise the
        current template is fetched. When ZMQ or a refresh already brought this tip, nothing is done: every
        extra multi-megabyte template decoded is GIL time taken from the loop that answers miners."""
        fresh = ready.template
        async with self._lock:
            if self.template is not None and self.template.prevhash == fresh.prevhash and not self.speculative:
                return
            try:
                best = await self._client.call("getbestblockhash")
            except (NodeUnavailable, NodeError):
                best = None
            if best == fresh.prevhash_hex:
                self._deliver(ready, "longpoll")
            else:
                await self._fetch_locked("longpoll")

    async def _zmq_loop(self, node: str, endpoint: str) -> None:
        import zmq
        import zmq.asyncio

        ctx = zmq.asyncio.Context.instance()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"hashblock")
        try:
            sock.connect(endpoint)
            log.info("zmq_subscribed", endpoint=endpoint, node=node or None)
            while True:
                parts = await sock.recv_multipart()
                if parts and parts[0] == b"hashblock":
                    block_hash = parts[1].hex() if len(parts) > 1 else ""
                    log.debug("zmq_hashblock", block_hash=block_hash, node=node or None)
                    self._zmq_announce(block_hash, node)
        finally:
            sock.close(0)
