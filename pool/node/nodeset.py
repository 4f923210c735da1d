"""Several bitcoinds: which one gives templates, and failing over between them without dropping a miner.

The pool asks one node at a time for work: the first healthy one in the configured order. Healthy means it
answers ``getblockchaininfo`` on the configured chain and its tip is not behind the others' (less chainwork
than the best node seen). Every node is probed every few seconds, and a template fetch that fails marks its
node down at once and is retried on the next healthy one, so the switch happens within the fetch that noticed
it (long poll or ZMQ failing, a block found, or at the latest the periodic refresh).

A node that is briefly behind because a block found elsewhere takes milliseconds to reach it would make the
choice flap; the active node is therefore allowed one probe of grace before it counts as behind. A node that
is not active gets none: a lagging node is never chosen.

Found blocks do not go through here: the block submitter sends every block to every node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from pool.node.rpc import NodeClient, NodeError, NodeUnavailable

log = structlog.get_logger("pool.node.nodeset")

PROBE_INTERVAL = 5.0  # seconds between health probes (shorter when the refresh interval is shorter)


@dataclass(slots=True)
class NodeState:
    """What the last probe (or a failed call) said about one node."""

    up: bool = False
    chainwork: int = 0
    height: int | None = None
    behind: int = 0  # consecutive probes that found its tip behind the best node's
    error: str = ""


def update_behind(states: Sequence[NodeState]) -> None:
    """After a probe: count, per node that answered, how many probes in a row its tip was behind the best."""
    best = max((s.chainwork for s in states if s.up), default=0)
    for s in states:
        s.behind = s.behind + 1 if s.up and s.chainwork < best else 0


def choose(states: Sequence[NodeState], active: int | None) -> int | None:
    """The node to take templates from: the first that is up and not behind. The active node keeps its place
    through one probe that finds it behind (block propagation); a node that is not active gets no grace.
    When no node is up, the active one stays (its calls fail and are retried until one comes back)."""
    for i, s in enumerate(states):
        if s.up and (s.behind == 0 or (i == active and s.behind < 2)):
            return i
    for i, s in enumerate(states):
        if s.up:
            return i
    return active


@dataclass(slots=True)
class Member:
    """One configured bitcoind: its name (metric label), RPC client, ZMQ endpoint (may be empty) and a client
    of its own for health probes (so a probe never waits behind a multi-megabyte template)."""

    name: str
    client: NodeClient
    zmq: str = ""
    health: NodeClient | None = None
    state: NodeState = field(default_factory=NodeState)


class NodeSet:
    """The configured bitcoinds in order of preference, with the one in use ("active").

    Offers the calls the template source and the maturity tracker make (``get_template``, ``longpoll_template``,
    ``call``), sent to the active node; ``get_template`` fails over. ``generation`` changes at every switch, so
    an answer from a node that was active when a long poll started can be recognised afterwards.
    """

    def __init__(self, members: Sequence[Member], network: str, probe_interval: float = PROBE_INTERVAL,
                 on_switch: Callable[[Member | None, Member], None] | None = None,
                 on_probe: Callable[[NodeSet], None] | None = None) -> None:
        if not members:
            raise ValueError("NodeSet needs at least one node")
        self.members = list(members)
        self.network = network
        self.probe_interval = probe_interval
        self.on_switch = on_switch
        self.on_probe = on_probe
        self.active: int | None = None
        self.generation = 0
        self.switches = 0
        self._wake = asyncio.Event()
        self._switched: asyncio.Future[None] | None = None  # resolved at the next switch (see _until_switch)

    # ---- the node in use -----------------------------------------------------------------------------------

    @property
    def current(self) -> Member:
        return self.members[self.active if self.active is not None else 0]

    @property
    def active_name(self) -> str:
        return self.current.name

    @property
    def url(self) -> str:
        return self.current.client.url

    def _select(self) -> None:
        chosen = choose([m.state for m in self.members], self.active)
        if chosen is None or chosen == self.active:
            return
        before = self.members[self.active] if self.active is not None else None
        self.active = chosen
        self.generation += 1
        if self._switched is not None and not self._switched.done():
            self._switched.set_result(None)  # calls parked on the previous node stop waiting for it
        self._switched = None
        after = self.members[chosen]
        if before is not None:
            self.switches += 1
            log.warning("bitcoind_switched", to=after.name, url=after.client.url, previous=before.name,
                        previous_error=before.state.error or None,
                        previous_behind=before.state.behind or None)
        else:
            log.info("bitcoind_selected", node=after.name, url=after.client.url)
        if self.on_switch is not None:
            self.on_switch(before, after)

    def mark_down(self, member: Member, error: str) -> None:
        """A call to ``member`` failed: it is down until a probe hears from it again; choose again now."""
        if member.state.up:
            log.warning("bitcoind_down", node=member.name, url=member.client.url, error=error)
        member.state.up = False
        member.state.error = error
        self._select()
        if self.on_probe is not None:
            self.on_probe(self)

    # ---- health ---------------------------------------------------------------------------------------------

    async def _probe_one(self, member: Member, timeout: float) -> None:
        state = member.state
        try:
            info = await asyncio.wait_for((member.health or member.client).call("getblockchaininfo"), timeout)
            if not isinstance(info, dict):
                raise NodeUnavailable(f"getblockchaininfo: unexpected answer {str(info)[:80]!r}")
            chain = info.get("chain")
            if chain != self.network:
                raise NodeError(-1, f"node.network is {self.network!r} but this bitcoind runs chain {chain!r}")
            chainwork = int(str(info.get("chainwork", "0")), 16)
            height = int(info.get("blocks", 0))
        except (NodeUnavailable, NodeError, TimeoutError, ValueError, TypeError) as exc:
            why = f"getblockchaininfo: no answer within {timeout:.0f} s" if isinstance(exc, TimeoutError) else str(exc)
            if state.up:
                log.warning("bitcoind_down", node=member.name, url=member.client.url, error=why)
            state.up, state.error = False, why or type(exc).__name__
            return
        if not state.up:
            log.info("bitcoind_up", node=member.name, url=member.client.url, height=height)
        state.up, state.error, state.chainwork, state.height = True, "", chainwork, height

    async def probe(self) -> None:
        """Ask every node for its tip at once, then choose the node to use."""
        timeout = max(2.0, self.probe_interval)
        await asyncio.gather(*(self._probe_one(m, timeout) for m in self.members))
        update_behind([m.state for m in self.members])
        self._select()
        if self.on_probe is not None:
            self.on_probe(self)

    def wake(self) -> None:
        """Probe now (another node announced a block: the active one may be behind)."""
        self._wake.set()

    async def run(self) -> None:
        """The health loop (supervised by the app)."""
        while True:
            self._wake.clear()
            await self.probe()
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({waiter}, timeout=self.probe_interval)
            finally:
                waiter.cancel()

    async def wait_ready(self, deadline: float, on_wait: Callable[[str], None] | None = None) -> None:
        """Start-up: wait until one node answers (through warm-up), then probe them all. A node on another
        chain, or refusing our credentials, is a configuration error raised here."""
        tasks = {asyncio.ensure_future(m.client.wait_ready(deadline, on_wait)): m for m in self.members}
        errors: list[BaseException] = []
        pending = set(tasks)
        ready = False
        try:
            while pending and not ready:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    member = tasks[task]
                    exc = task.exception()
                    if exc is not None:
                        if isinstance(exc, NodeError) or len(self.members) == 1:
                            raise exc
                        errors.append(exc)
                        continue
                    info = task.result()
                    chain = info.get("chain") if isinstance(info, dict) else None
                    if chain and chain != self.network:  # node.network uses bitcoind's own chain names
                        where = f" ({member.name}, {member.client.url})" if len(self.members) > 1 else ""
                        raise RuntimeError(f"node.network is {self.network!r} but bitcoind runs chain {chain!r}{where}")
                    ready = True
            if not ready:
                raise errors[0]
        finally:
            for task in pending:
                task.cancel()
        await self.probe()

    # ---- calls for the template source and the maturity tracker ------------------------------------------------

    def _next_switch(self) -> asyncio.Future[None]:
        if self._switched is None or self._switched.done():
            self._switched = asyncio.get_running_loop().create_future()
        return self._switched

    async def _until_switch(self, call: Awaitable[Any]) -> tuple[bool, Any]:
        """Await ``call`` unless the node set switches first (a probe found the node hung or behind): then
        (False, None) and the call is abandoned (its worker thread finishes on its own RPC timeout)."""
        task = asyncio.ensure_future(call)
        switched = self._next_switch()
        try:
            await asyncio.wait({task, switched}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            return True, task.result()
        task.cancel()
        return False, None

    async def get_template(self) -> Any:
        """A template from the active node; if it fails, the node is marked down and the next healthy one is
        asked, each node at most once per call. A node that hangs is left as soon as a probe finds it down."""
        tried: set[int] = set()
        while True:
            if self.active is None:
                self._select()
            index = self.active if self.active is not None else 0
            member = self.members[index]
            tried.add(index)
            try:
                answered, template = await self._until_switch(member.client.get_template())
            except (NodeUnavailable, NodeError) as exc:
                self.mark_down(member, str(exc))
                if self.active is None or self.active in tried:
                    raise
                continue
            if answered:
                return template
            if self.active in tried:
                raise NodeUnavailable(f"{member.name}: switched away while waiting for a template")

    async def longpoll_template(self, longpollid: str, timeout: float) -> Any:
        """A long poll on the active node; None when the node set switches meanwhile (the template source
        then polls the new node, see ``generation``)."""
        _, template = await self._until_switch(self.current.client.longpoll_template(longpollid, timeout))
        return template

    async def call(self, method: str, *params: Any) -> Any:
        """One call to the active node, abandoned (NodeUnavailable) if the set switches away meanwhile: callers
        such as the template source's long poll make it while holding their lock, and a node that froze would
        otherwise hold them for its whole RPC timeout."""
        member = self.current
        answered, result = await self._until_switch(member.client.call(method, *params))
        if not answered:
            raise NodeUnavailable(f"{member.name}: switched away while waiting for {method}")
        return result

    def states(self) -> list[dict[str, object]]:
        """For the API and metrics: each node's name, health and tip."""
        return [{"name": m.name, "up": m.state.up, "active": i == self.active, "height": m.state.height,
                 "behind": m.state.behind > 0} for i, m in enumerate(self.members)]

    def close(self) -> None:
        for member in self.members:
            member.client.close()
            if member.health is not None:
                member.health.close()
