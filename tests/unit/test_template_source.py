"""The template source parses and prepares templates off the event loop (a stand-in node: pure logic)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import pytest

from pool.mining.jobs import BlockTemplate
from pool.node import work
from pool.node.work import TemplateSource
from tests.unit.helpers import make_gbt


class FixedNode:
    async def get_template(self) -> Any:
        return make_gbt(n_txs=20)


async def test_templates_are_parsed_and_prepared_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing a mainnet template and computing its merkle branch and witness commitment take milliseconds:
    done on the loop, they would delay every miner's answer at each new tip."""
    loop_thread = threading.get_ident()
    threads: list[int] = []
    real_prepare = work.prepare

    def recording_prepare(gbt: object) -> Any:
        threads.append(threading.get_ident())
        return real_prepare(gbt)

    monkeypatch.setattr(work, "prepare", recording_prepare)
    delivered: list[tuple[BlockTemplate, bool, str]] = []
    source = TemplateSource(FixedNode(), lambda t, new_tip, reason: delivered.append((t, new_tip, reason)),  # type: ignore[arg-type]
                            longpoll=False)
    assert await source.fetch("start")
    assert threads and loop_thread not in threads
    template, new_tip, reason = delivered[0]
    assert new_tip and reason == "start" and len(template.transactions) == 20
    assert source.prepared is not None and source.prepared.template is template  # the coordinator reuses it


class TipNode:
    """Answers getbestblockhash with ``best``; counts full template fetches."""

    def __init__(self, best: str, gbt: dict[str, Any]) -> None:
        self.best, self.gbt, self.fetches = best, gbt, 0

    async def call(self, method: str, *params: Any) -> Any:
        assert method == "getbestblockhash"
        return self.best

    async def get_template(self) -> Any:
        self.fetches += 1
        return self.gbt


async def test_a_long_poll_tip_is_used_without_fetching_again_when_it_is_still_the_best() -> None:
    """Every extra multi-megabyte template decoded costs the loop GIL time: a long-poll answer for the current
    best block is delivered as it is, and one for a tip ZMQ already brought is dropped."""
    old, new = make_gbt(prevhash="11" * 32), make_gbt(prevhash="22" * 32)
    node = TipNode(new["previousblockhash"], new)
    delivered: list[str] = []
    source = TemplateSource(node, lambda t, new_tip, reason: delivered.append(reason), longpoll=False)  # type: ignore[arg-type]
    source._deliver(work.prepare(old), "start")
    await source._new_tip_from_longpoll(work.prepare(new))
    assert delivered == ["start", "longpoll"] and node.fetches == 0
    await source._new_tip_from_longpoll(work.prepare(new))  # the same tip again (ZMQ got there first)
    assert delivered == ["start", "longpoll"] and node.fetches == 0


async def test_a_long_poll_tip_that_is_no_longer_the_best_fetches_the_current_template() -> None:
    old, parked, current = (make_gbt(prevhash=h * 32) for h in ("11", "22", "33"))
    node = TipNode(current["previousblockhash"], current)
    source = TemplateSource(node, lambda t, new_tip, reason: None, longpoll=False)  # type: ignore[arg-type]
    source._deliver(work.prepare(old), "start")
    await source._new_tip_from_longpoll(work.prepare(parked))  # a poll parked during a burst of blocks
    assert node.fetches == 1
    assert source.template is not None and source.template.prevhash_hex == current["previousblockhash"]


class PollNode(TipNode):
    """Counts long polls; each one parks for a while."""

    def __init__(self, best: str, gbt: dict[str, Any]) -> None:
        super().__init__(best, gbt)
        self.polls = 0

    async def longpoll_template(self, longpollid: str, timeout: float) -> Any:
        self.polls += 1
        await asyncio.sleep(0.05)
        return self.gbt


async def test_long_polling_waits_while_zmq_announces_tips_and_resumes_when_it_misses_one() -> None:
    """With ZMQ announcing tips, a long poll would only decode every template a second time; if a periodic
    refresh finds a tip ZMQ never announced, ZMQ is no longer trusted and long polling resumes."""
    a, b, c = (make_gbt(prevhash=h * 32) for h in ("11", "22", "33"))
    node = PollNode(a["previousblockhash"], a)
    source = TemplateSource(node, lambda t, new_tip, reason: None, zmq_endpoint="tcp://127.0.0.1:28332")  # type: ignore[arg-type]
    source._deliver(work.prepare(a), "start")
    poller = asyncio.create_task(source._longpoll_loop())
    try:
        await asyncio.sleep(0.3)
        assert node.polls > 0 and not source.zmq_trusted  # no ZMQ news yet: long polling runs
        source._zmq_announce(b["previousblockhash"])
        source._deliver(work.prepare(b), "zmq")
        assert source.zmq_trusted
        await asyncio.sleep(0.15)  # a poll parked before may still finish
        polls = node.polls
        await asyncio.sleep(0.4)
        assert node.polls == polls  # no new long poll while ZMQ is trusted
        source._deliver(work.prepare(c), "refresh")  # a tip ZMQ never announced
        assert not source.zmq_trusted
        await asyncio.sleep(0.4)
        assert node.polls > polls  # long polling resumed
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller


class ProbeCounter:
    """A stand-in bitcoind for a node set: answers probes, counts them."""

    def __init__(self, name: str, gbt: dict[str, Any]) -> None:
        self.name, self.gbt, self.url, self.probes = name, gbt, f"http://{name}:1", 0

    async def call(self, method: str, *params: Any) -> Any:
        self.probes += 1
        return {"chain": "regtest", "chainwork": "01", "blocks": 1}

    async def get_template(self) -> Any:
        return self.gbt

    def close(self) -> None:
        pass


async def test_with_several_nodes_only_the_active_nodes_zmq_earns_trust() -> None:
    """ZMQ lets long polling rest only while it announces the tips of the node templates come from; another
    node's announcement makes the node set probe (is the active node behind?) instead."""
    from pool.node.nodeset import Member, NodeSet

    a, b = make_gbt(prevhash="11" * 32), make_gbt(prevhash="22" * 32)
    first, second = ProbeCounter("first", a), ProbeCounter("second", a)
    nodes = NodeSet([Member("first", first), Member("second", second)], "regtest")  # type: ignore[arg-type]
    await nodes.probe()
    reasons: list[str] = []
    source = TemplateSource(nodes, lambda t, new_tip, reason: reasons.append(reason), longpoll=False,
                            zmq_endpoint={"first": "tcp://127.0.0.1:1", "second": "tcp://127.0.0.1:2"})
    assert set(source.loops()) == {"template-refresh", "template-zmq-first", "template-zmq-second"}
    source._deliver(work.prepare(a), "start")
    source._zmq_announce(b["previousblockhash"], "second")
    assert nodes._wake.is_set() and not source.zmq_trusted and not source._wake.is_set()
    source._zmq_announce(b["previousblockhash"], "first")
    source._deliver(work.prepare(b), "zmq")
    assert source.zmq_trusted
    source.node_switched(nodes.members[0], nodes.members[1])  # trust is earned again by the new node
    assert not source.zmq_trusted and source._reason == "failover" and source._wake.is_set()


class HeaderNode:
    """Answers getblockheader for the announced tip at once; the full template takes ``delay`` seconds."""

    def __init__(self, tip_header: dict[str, Any], gbt: dict[str, Any], delay: float = 0.05) -> None:
        self.tip_header, self.gbt, self.delay = tip_header, gbt, delay

    async def call(self, method: str, *params: Any) -> Any:
        assert method == "getblockheader" and params == (self.tip_header["hash"],)
        return self.tip_header

    async def get_template(self) -> Any:
        await asyncio.sleep(self.delay)
        return self.gbt


def _mainnet_gbt(prevhash: str, height: int, n_txs: int = 6) -> dict[str, Any]:
    return make_gbt(n_txs=n_txs, height=height, bits="17034219", prevhash=prevhash)


async def test_a_zmq_tip_gets_empty_work_at_once_then_the_full_template_as_an_update() -> None:
    """Fetching and decoding a mainnet template takes tens of milliseconds; the coinbase-only successor needs one
    getblockheader: miners switch to the new tip with it (clean), and the full template follows (not clean)."""
    old = _mainnet_gbt("11" * 32, 900_000)
    new = _mainnet_gbt("22" * 32, 900_001)
    node = HeaderNode({"hash": "22" * 32, "height": 900_000, "bits": "17034219", "mediantime": 1_700_000_000}, old)
    delivered: list[tuple[str, bool, int, str]] = []
    source = TemplateSource(node, lambda t, new_tip, reason: delivered.append(  # type: ignore[arg-type]
        (t.prevhash_hex, new_tip, len(t.transactions), reason)), longpoll=False, empty_first_network="main")
    source._deliver(work.prepare(old), "start")
    refresher = asyncio.create_task(source._refresh_loop())
    try:
        await asyncio.sleep(0.1)  # the loop's first fetch (the old tip again: same work, not a new tip)
        delivered.clear()
        node.gbt = new
        source._zmq_announce("22" * 32)
        for _ in range(100):
            if len(delivered) >= 2:
                break
            await asyncio.sleep(0.01)
        assert delivered[:2] == [("22" * 32, True, 0, "zmq-empty"), ("22" * 32, False, 6, "zmq")], delivered
        assert not source.speculative and source.template is not None and len(source.template.transactions) == 6
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher


async def test_a_fetch_for_the_tip_the_empty_work_replaced_is_dropped_not_a_step_back() -> None:
    """A fetch that started before the block arrives returns the old tip after the empty work went out: adopting
    it would send every miner back to stale work. It is dropped and a fresh fetch is asked for."""
    old = _mainnet_gbt("11" * 32, 900_000)
    node = HeaderNode({"hash": "22" * 32, "height": 900_000, "bits": "17034219", "mediantime": 1_700_000_000}, old)
    delivered: list[tuple[str, str]] = []
    source = TemplateSource(node, lambda t, new_tip, reason: delivered.append((t.prevhash_hex, reason)),  # type: ignore[arg-type]
                            longpoll=False, empty_first_network="main")
    source._deliver(work.prepare(old), "start")
    await source._speculate("22" * 32)
    assert source.speculative and delivered[-1] == ("22" * 32, "zmq-empty")
    source._wake.clear()
    source._deliver(work.prepare(old), "refresh")  # the late answer of a fetch begun on the old tip
    assert delivered[-1] == ("22" * 32, "zmq-empty") and source.template.prevhash_hex == "22" * 32  # type: ignore[union-attr]
    assert source._wake.is_set()  # a fetch of the new tip's full template is on its way
    source._deliver(work.prepare(_mainnet_gbt("22" * 32, 900_001)), "refresh")
    assert delivered[-1] == ("22" * 32, "refresh") and not source.speculative


async def test_no_empty_work_when_the_full_template_won_the_race_or_the_feature_is_off() -> None:
    old, new = _mainnet_gbt("11" * 32, 900_000), _mainnet_gbt("22" * 32, 900_001)
    header = {"hash": "22" * 32, "height": 900_000, "bits": "17034219", "mediantime": 1_700_000_000}
    reasons: list[str] = []
    source = TemplateSource(HeaderNode(header, new), lambda t, new_tip, reason: reasons.append(reason),  # type: ignore[arg-type]
                            longpoll=False, empty_first_network="main")
    source._deliver(work.prepare(old), "start")
    source._deliver(work.prepare(new), "longpoll")
    await source._speculate("22" * 32)
    assert reasons == ["start", "longpoll"]
    off = TemplateSource(HeaderNode(header, new), lambda t, new_tip, reason: reasons.append(reason),  # type: ignore[arg-type]
                         longpoll=False)
    off._deliver(work.prepare(old), "start")
    off._zmq_announce("22" * 32)
    await asyncio.sleep(0.05)
    assert not off._speculating and reasons[-1] == "start"
