"""The coordinator <-> front-end link: frame encoding, reassembly, per-loop-turn batching, the ledger proxy's
acknowledgments, and how /metrics merges the processes' snapshots."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pool.ledger.sqlite import DuplicateShare, LedgerFailed, ShareRecord
from pool.ops.telemetry import Metrics
from pool.server.frontend import LedgerProxy
from pool.server.frontends import MergedMetrics
from pool.server.ipc import HEADER, MAX_FRAME, FrameDecoder, FrameError, Kind, Link, encode, encode_raw


def test_frames_round_trip_whole_split_and_joined() -> None:
    frames = [encode(Kind.OPS, [(1, "share", {"x": 1})]), encode_raw(Kind.TEMPLATE, b"\x00" * 70_000),
              encode(Kind.STATS, {})]
    stream = b"".join(frames)
    whole = FrameDecoder().feed(stream)
    assert [k for k, _ in whole] == [Kind.OPS, Kind.TEMPLATE, Kind.STATS]
    assert pickle.loads(whole[0][1]) == [(1, "share", {"x": 1})]
    decoder = FrameDecoder()
    got: list[tuple[Kind, bytes]] = []
    for i in range(0, len(stream), 7):  # arbitrary cuts, even through the header
        got += decoder.feed(stream[i : i + 7])
    assert got == whole and decoder.pending == 0


def test_share_records_cross_processes_unchanged() -> None:
    """Accepted shares travel front-end -> coordinator pickled field by field (ShareRecord.__reduce__)."""
    shares = [ShareRecord(1.5 + i, "bc1qaddr", f"rig{i}", 2.0 ** -i, 3.25, "1a", 800_000, f"{i:064x}", i == 2,
                          1.2e14, 312_500_000, 12_345) for i in range(4)]
    back = pickle.loads(pickle.dumps([(i, "share", s) for i, s in enumerate(shares)], pickle.HIGHEST_PROTOCOL))
    assert [s for _, _, s in back] == shares
    assert all(type(s) is ShareRecord for _, _, s in back)


def test_oversized_or_unknown_frames_are_refused() -> None:
    with pytest.raises(FrameError):
        FrameDecoder().feed(HEADER.pack(MAX_FRAME + 1, Kind.OPS))
    with pytest.raises(FrameError):
        FrameDecoder().feed(HEADER.pack(1, 250) + b"x")


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        pass


async def test_queued_items_leave_as_one_frame_per_loop_turn_in_order() -> None:
    link = Link(lambda kind, payload: None)
    transport = FakeTransport()
    link.connection_made(transport)  # type: ignore[arg-type]
    for seq in range(1000):
        link.queue(Kind.OPS, (seq, "share", None))
    link.queue(Kind.RELEASED, b"\x00\x01\x02\x03")
    assert transport.writes == []  # nothing before the end of this turn
    await asyncio.sleep(0)
    assert len(transport.writes) == 1
    frames = FrameDecoder().feed(transport.writes[0])
    assert [k for k, _ in frames] == [Kind.OPS, Kind.RELEASED]
    assert [item[0] for item in pickle.loads(frames[0][1])] == list(range(1000))
    # An immediate frame goes after what was queued before it (per-link order holds across kinds).
    link.queue(Kind.OPS, (1000, "share", None))
    link.send(Kind.FOUND, ("found", None))
    kinds = [k for w in transport.writes[1:] for k, _ in FrameDecoder().feed(w)]
    assert kinds == [Kind.OPS, Kind.FOUND]


async def test_frames_reach_the_handler_and_a_bad_one_drops_the_link() -> None:
    seen: list[tuple[Kind, Any]] = []
    lost: list[Link] = []
    link = Link(lambda kind, payload: seen.append((kind, pickle.loads(payload))), lost.append)
    link.connection_made(FakeTransport())  # type: ignore[arg-type]
    frame = encode(Kind.ACKS, [(1, None)])
    link.data_received(frame[:3])
    link.data_received(frame[3:] + encode(Kind.ACKS, [(2, None)]))
    assert seen == [(Kind.ACKS, [(1, None)]), (Kind.ACKS, [(2, None)])]
    link.connection_lost(None)
    assert lost == [link] and link.closed


def _share(n: int) -> ShareRecord:
    return ShareRecord(0.0, "addr", "w", 1.0, 2.0, "1", 100, f"{n:064x}", False)


async def test_ledger_proxy_resolves_at_the_acknowledgment_and_fails_without_link() -> None:
    proxy = LedgerProxy()
    failed = proxy.record_share(_share(0))  # no link yet: error at once, never a silent wait
    with pytest.raises(LedgerFailed):
        failed.result()
    link = Link(lambda kind, payload: None)
    transport = FakeTransport()
    link.connection_made(transport)  # type: ignore[arg-type]
    proxy.attach(link)
    first, second, third = (proxy.record_share(_share(n)) for n in (1, 2, 3))
    await asyncio.sleep(0)
    ops = pickle.loads(FrameDecoder().feed(transport.writes[0])[0][1])
    assert [(op, rec.block_hash[-1]) for _, op, rec in ops] == [("share", "1"), ("share", "2"), ("share", "3")]
    seqs = [seq for seq, _, _ in ops]
    proxy.acknowledge([(seqs[0], None), (seqs[1], ("duplicate", "credited already"))])
    assert first.result() is None
    with pytest.raises(DuplicateShare):
        second.result()
    assert not third.done() and proxy.in_flight == 1
    assert proxy.detach() == 1  # the link went down: what waited on it is an error (20), not a true
    with pytest.raises(LedgerFailed):
        third.result()
    later = proxy.record_share(_share(4))
    with pytest.raises(LedgerFailed):
        later.result()


class _Pool:
    def __init__(self, snapshots: list[list[Any]]) -> None:
        self.slots = [type("S", (), {"stats": {"metrics": snap}})() for snap in snapshots]


def _child_snapshot(connections: int, accepted: int, lag: float, height: int) -> list[Any]:
    m = Metrics(CollectorRegistry())
    m.connections.set(connections)
    m.shares.labels("accepted").inc(accepted)
    m.loop_lag_seconds.observe(lag)
    m.template_height.set(height)
    m.sessions.labels("authorized").set(connections)
    return pickle.loads(pickle.dumps(list(m.registry.collect())))  # as it crosses the socket


def test_merged_metrics_sum_counters_histograms_and_session_gauges() -> None:
    parent = Metrics(CollectorRegistry())
    parent.template_height.set(500)
    parent.sessions.labels("authorized").set(999)  # the coordinator's own count is not added to the children's
    merged = MergedMetrics(parent, _Pool([_child_snapshot(3, 10, 0.002, 499), _child_snapshot(4, 5, 0.2, 499)]))
    text = generate_latest(merged).decode()  # type: ignore[arg-type]

    def value(line_start: str) -> float:
        return next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start + " "))

    assert value("pool_connections") == 7
    assert value('pool_sessions{state="authorized"}') == 7
    assert value('pool_shares_total{result="accepted"}') == 15
    assert value("pool_template_height") == 500  # the coordinator's template, not a sum
    assert value("pool_event_loop_lag_seconds_count") == 2
    assert value('pool_event_loop_lag_seconds_bucket{le="0.005"}') == 1
    assert text.count("# TYPE pool_connections gauge") == 1
    assert text.count("\nprocess_cpu_seconds_total ") == 1  # the coordinator's (front-ends: pool_frontend_*)


def test_parent_only_families_are_kept() -> None:
    registry = CollectorRegistry()
    Counter("only_parent", "x", registry=registry).inc(2)
    Gauge("g_parent", "x", registry=registry).set(3)
    Histogram("h_parent", "x", registry=registry).observe(1)
    metrics = Metrics(registry)
    text = generate_latest(MergedMetrics(metrics, _Pool([])))  # type: ignore[arg-type]
    assert b"only_parent_total 2.0" in text and b"g_parent 3.0" in text


async def test_coordinator_commits_a_batch_in_order_and_refuses_cross_process_duplicates(tmp_path) -> None:  # noqa: ANN001
    """The coordinator's side with a real SQLite ledger: a run of shares is one write, a block row stays right
    behind the share that found it, a solution seen before (from any front-end) is refused, and every
    acknowledgment goes back to the link that sent the write."""
    import dataclasses

    from pool.config import Config
    from pool.ledger.sqlite import BlockRecord, Ledger
    from pool.server.coordinator import Coordinator
    from pool.server.frontends import FrontendPool

    ledger = Ledger(tmp_path / "ledger.sqlite3", rollup_interval=0)
    try:
        config = Config(stratum=dataclasses.replace(Config().stratum, processes=2), data_dir=str(tmp_path))
        metrics = Metrics(CollectorRegistry())
        coordinator = Coordinator(config, b"\x51", ledger, None, metrics)
        pool = FrontendPool(config, metrics, ledger, coordinator, None, b"\x51")  # type: ignore[arg-type]
        links = []
        for _ in range(2):
            link = Link(lambda kind, payload: None)
            transport = FakeTransport()
            link.connection_made(transport)  # type: ignore[arg-type]
            links.append((link, transport))
        block = BlockRecord(f"{2:064x}", 100, "addr", "w", 50, 50, 1.0, 0.0)
        pool._ops(links[0][0], [(1, "share", _share(1)), (2, "share", _share(2)), (3, "block", block),
                                (4, "share", _share(3)), (5, "share", _share(1))])
        pool._ops(links[1][0], [(1, "share", _share(2)), (2, "share", _share(4))])  # 2: through the other one

        def acks(transport: FakeTransport) -> dict[int, Any]:
            out: dict[int, Any] = {}
            for write in transport.writes:
                for kind, payload in FrameDecoder().feed(write):
                    if kind is Kind.ACKS:
                        out.update(dict(pickle.loads(payload)))
            return out

        for _ in range(200):
            if len(acks(links[0][1])) == 5 and len(acks(links[1][1])) == 2:
                break
            await asyncio.sleep(0.01)
        first, second = acks(links[0][1]), acks(links[1][1])
        assert first == {1: None, 2: None, 3: None, 4: None, 5: ("duplicate", "share already credited")}
        assert second == {1: ("duplicate", "share already credited"), 2: None}
        rows = ledger.query("SELECT block_hash FROM shares ORDER BY id")
        assert [r[0][-1] for r in rows] == ["1", "2", "3", "4"]
        last_share = ledger.query("SELECT last_share_id FROM blocks")[0][0]
        assert last_share == 2  # the block's PPLNS window ends at the share that found it
        assert coordinator.stats.workers[("addr", "w")].accepted == 4
    finally:
        ledger.close()


def test_run_dir_falls_back_to_a_short_private_path_for_long_data_dirs(tmp_path) -> None:  # noqa: ANN001
    from pathlib import Path

    from pool.server.frontends import run_dir

    assert run_dir("/srv/pool/data") == Path("/srv/pool/data/run")  # short enough: beside the data
    deep = tmp_path / ("x" * 120)
    fallback = run_dir(str(deep))
    assert len(str(fallback / "frontends.sock")) < 108  # a Unix socket name's limit
    assert fallback == run_dir(str(deep))  # stable: a coordinator started after a crash finds the same socket
    assert fallback != run_dir(str(tmp_path / ("y" * 120)))


def test_survivors_are_the_front_ends_still_running_with_the_same_layout(tmp_path) -> None:  # noqa: ANN001
    """A coordinator started after a crash adopts only live front-end processes of the same process count."""
    import json
    import os
    import subprocess
    import sys

    from pool.config import Config
    from pool.server.frontends import STATE_FILE, FrontendPool, run_dir

    # A stand-in whose command line names the front-end module (how a pid is told from a reused one).
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "pool.server.frontend"])
    try:
        import dataclasses

        config = Config(stratum=dataclasses.replace(Config().stratum, processes=2), data_dir=str(tmp_path / "d"))
        directory = run_dir(config.data_dir)
        directory.mkdir(parents=True)
        gone = subprocess.Popen([sys.executable, "-c", "pass", "pool.server.frontend"])
        gone.wait()
        state = {"processes": 2, "port": 3333, "tls_port": 0, "pids": {"0": alive.pid, "1": gone.pid}}
        (directory / STATE_FILE).write_text(json.dumps(state))
        pool = FrontendPool(config, Metrics(CollectorRegistry()), None, None, [], None)  # type: ignore[arg-type]
        survivors, saved = pool._survivors()
        assert survivors == {0: alive.pid} and saved["port"] == 3333
        # Another process count: nothing is adopted (and the old front-ends are told to stop).
        (directory / STATE_FILE).write_text(json.dumps({**state, "processes": 3}))
        assert pool._survivors() == ({}, {})
        assert alive.wait(10) is not None
        assert os.path.exists(directory / STATE_FILE)
    finally:
        if alive.poll() is None:
            alive.kill()
            alive.wait()
