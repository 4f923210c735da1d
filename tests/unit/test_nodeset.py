"""Choosing the bitcoind that gives templates, and failing over (stand-in nodes: pure logic)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pool.node.nodeset import Member, NodeSet, NodeState, choose, update_behind
from pool.node.rpc import NodeError, NodeUnavailable


def states(*spec: tuple[bool, int]) -> list[NodeState]:
    out = [NodeState(up=up, chainwork=work) for up, work in spec]
    update_behind(out)
    return out


def test_the_first_healthy_node_is_chosen() -> None:
    assert choose(states((True, 10), (True, 10)), None) == 0
    assert choose(states((False, 0), (True, 10)), None) == 1
    assert choose(states((True, 10), (True, 10)), 1) == 0  # back to the preferred node once it is healthy


def test_a_node_whose_tip_is_behind_is_not_chosen() -> None:
    assert choose(states((True, 9), (True, 10)), None) == 1
    assert choose(states((True, 9), (True, 10), (True, 10)), 2) == 1


def test_the_active_node_gets_one_probe_of_grace_when_behind() -> None:
    s = states((True, 9), (True, 10))  # a block found elsewhere has not reached node 0 yet
    assert choose(s, 0) == 0
    s[0].chainwork = 9
    s[1].chainwork = 11
    update_behind(s)  # still behind at the next probe: it lags
    assert s[0].behind == 2 and choose(s, 0) == 1
    s[0].chainwork = 11
    update_behind(s)
    assert s[0].behind == 0 and choose(s, 1) == 0


def test_with_every_node_down_the_active_one_stays() -> None:
    assert choose(states((False, 0), (False, 0)), 1) == 1
    assert choose(states((False, 0), (False, 0)), None) is None


def test_nodes_that_are_down_do_not_set_the_best_tip() -> None:
    s = [NodeState(up=False, chainwork=99), NodeState(up=True, chainwork=5)]
    update_behind(s)
    assert [x.behind for x in s] == [0, 0]


class StandIn:
    """Answers like a bitcoind, or fails as one that is gone."""

    def __init__(self, name: str, chainwork: int = 10, chain: str = "regtest") -> None:
        self.name, self.chainwork, self.chain = name, chainwork, chain
        self.url = f"http://{name}:1"
        self.down = False
        self.templates = 0

    async def call(self, method: str, *params: Any) -> Any:
        if self.down:
            raise NodeUnavailable(f"{self.name}: connection refused")
        assert method == "getblockchaininfo"
        return {"chain": self.chain, "chainwork": f"{self.chainwork:064x}", "blocks": self.chainwork}

    async def get_template(self) -> Any:
        if self.down:
            raise NodeUnavailable(f"{self.name}: connection refused")
        self.templates += 1
        return {"from": self.name}

    async def wait_ready(self, deadline: float, on_wait: Any = None) -> Any:
        return await self.call("getblockchaininfo")

    def close(self) -> None:
        pass


def node_set(*clients: StandIn, switches: list[tuple[str | None, str]] | None = None) -> NodeSet:
    members = [Member(c.name, c) for c in clients]  # type: ignore[arg-type]
    record = switches if switches is not None else []
    return NodeSet(members, "regtest", on_switch=lambda a, b: record.append((a.name if a else None, b.name)))


async def test_a_failed_fetch_fails_over_in_the_same_call() -> None:
    a, b = StandIn("a"), StandIn("b")
    switches: list[tuple[str | None, str]] = []
    nodes = node_set(a, b, switches=switches)
    await nodes.probe()
    assert nodes.active_name == "a" and switches == [(None, "a")]
    assert await nodes.get_template() == {"from": "a"}
    a.down = True
    assert await nodes.get_template() == {"from": "b"}
    assert nodes.active_name == "b" and switches[-1] == ("a", "b") and nodes.switches == 1
    assert not nodes.members[0].state.up and "refused" in nodes.members[0].state.error
    a.down = False
    await nodes.probe()  # the preferred node answers again, at the same tip
    assert nodes.active_name == "a" and switches[-1] == ("b", "a")


async def test_every_node_failing_raises_after_asking_each_once() -> None:
    a, b = StandIn("a"), StandIn("b")
    nodes = node_set(a, b)
    await nodes.probe()
    a.down = b.down = True
    with pytest.raises(NodeUnavailable):
        await nodes.get_template()
    b.down = False
    assert await nodes.get_template() == {"from": "b"}  # the active node is tried even while marked down


async def test_a_node_on_another_chain_is_never_up() -> None:
    a, b = StandIn("a", chain="main"), StandIn("b")
    nodes = node_set(a, b)
    await nodes.probe()
    assert nodes.active_name == "b"
    assert "chain 'main'" in nodes.members[0].state.error


async def test_start_up_refuses_a_node_on_another_chain_naming_it() -> None:
    nodes = node_set(StandIn("a", chain="main"), StandIn("b"))
    with pytest.raises(RuntimeError, match=r"runs chain 'main' \(a, http://a:1\)"):
        await nodes.wait_ready(0)


async def test_start_up_waits_for_one_node_only() -> None:
    class Refusing(StandIn):
        async def wait_ready(self, deadline: float, on_wait: Any = None) -> Any:
            raise NodeUnavailable("bitcoind not ready")

    refusing = Refusing("a")
    refusing.down = True
    nodes = node_set(refusing, StandIn("b"))
    await nodes.wait_ready(0)
    assert nodes.active_name == "b"


async def test_start_up_reports_refused_credentials() -> None:
    class Locked(StandIn):
        async def wait_ready(self, deadline: float, on_wait: Any = None) -> Any:
            raise NodeError(-401, "bitcoind refused the RPC credentials")

    with pytest.raises(NodeError, match="credentials"):
        await node_set(Locked("a"), StandIn("b")).wait_ready(0)


async def test_states_for_the_api() -> None:
    nodes = node_set(StandIn("a", chainwork=9), StandIn("b", chainwork=10))
    await nodes.probe()
    assert nodes.states() == [
        {"name": "a", "up": True, "active": False, "height": 9, "behind": True},
        {"name": "b", "up": True, "active": True, "height": 10, "behind": False},
    ]


async def test_a_hung_node_is_left_as_soon_as_a_probe_finds_it_down() -> None:
    """A node that accepts the call and never answers would hold the template fetch for its whole RPC timeout;
    the fetch moves on when a probe marks the node down."""

    class Hung(StandIn):
        async def get_template(self) -> Any:
            if self.down:
                await asyncio.Event().wait()  # never answers
            return await super().get_template()

        async def call(self, method: str, *params: Any) -> Any:
            if self.down:
                raise NodeUnavailable("getblockchaininfo: timed out")
            return await super().call(method, *params)

    a, b = Hung("a"), StandIn("b")
    nodes = node_set(a, b)
    await nodes.probe()
    a.down = True
    fetch = asyncio.create_task(nodes.get_template())
    await asyncio.sleep(0.05)
    assert not fetch.done()  # parked on the hung node
    await nodes.probe()
    assert await asyncio.wait_for(fetch, 2) == {"from": "b"}
    assert nodes.active_name == "b"


async def test_a_call_parked_on_a_hung_node_is_abandoned_when_the_set_switches() -> None:
    """Other calls to the active node (the long poll's ``getbestblockhash``, the empty-block header) are made
    while the template source holds its lock: one parked on a node that froze must end at the switch, or no
    template is fetched from the new node until the frozen call's RPC timeout (seen as a flaky integration
    test: a SIGSTOPped node held the pool's work for 30 s)."""

    class Hung(StandIn):
        hung = False

        async def call(self, method: str, *params: Any) -> Any:
            if method == "getbestblockhash":
                await asyncio.Event().wait()  # accepted, never answered
            if self.hung:
                raise NodeUnavailable("getblockchaininfo: timed out")
            return await super().call(method, *params)

    a, b = Hung("a"), StandIn("b")
    nodes = node_set(a, b)
    await nodes.probe()
    parked = asyncio.create_task(nodes.call("getbestblockhash"))
    await asyncio.sleep(0.05)
    assert not parked.done()
    a.hung = True
    await nodes.probe()
    assert nodes.active_name == "b"
    with pytest.raises(NodeUnavailable, match="switched"):
        await asyncio.wait_for(parked, 2)
