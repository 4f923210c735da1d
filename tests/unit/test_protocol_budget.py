"""Bounded output in the sans-IO Stratum core: ``mining.get_transactions`` and the per-connection budget.

A client that never reads must not make the pool buffer without bound. The core counts the bytes it has
queued that the server has not taken yet, adds what the transport still holds (``backlog``), and stops
processing lines once that passes ``max_pending_output``: the server then drops the connection. The list of
transaction ids is the largest reply (about 67 bytes per transaction), so it is answered only to authorized
sessions, only for jobs this session was sent, and once per job.
"""

from __future__ import annotations

from typing import Any

import pytest

from pool.stratum.events import ProtocolError, TransactionsRequested
from pool.stratum.protocol import ProtocolConfig, StratumProtocol
from tests.unit.helpers import build_job, make_gbt
from tests.unit.test_protocol import EN1, authorizer, drive, handshake, is_error, output, req

ERR_STALE = 21
ERR_UNAUTHORIZED = 24
TXIDS = ["ab" * 32] * 1000  # a 1,000-transaction template's reply: about 67 KB


def proto_with(backlog: int | None = None, **config: Any) -> StratumProtocol:
    if backlog is None:
        return StratumProtocol(ProtocolConfig(**config), EN1, authorizer)
    return StratumProtocol(ProtocolConfig(**config), EN1, authorizer, backlog=lambda: backlog)


def working(**config: Any) -> tuple[StratumProtocol, str]:
    """An authorized session that was sent one job; returns the core and that job's id."""
    proto = proto_with(**config)
    handshake(proto)
    job = build_job(make_gbt(n_txs=4), job_id="1a")
    proto.send_job(job, True)
    output(proto)
    return proto, job.job_id


# ---- get_transactions ----------------------------------------------------------------------------------


def test_get_transactions_needs_authorization() -> None:
    for before in ([], [req(1, "mining.subscribe", ["x"])]):
        proto = proto_with()
        drive(proto, *before)
        events, out = drive(proto, req(6, "mining.get_transactions", ["1a"]))
        assert not any(isinstance(e, TransactionsRequested) for e in events)
        assert isinstance(events[0], ProtocolError) and not events[0].fatal
        assert len(out) == 1 and out[0]["id"] == 6 and is_error(out[0], ERR_UNAUTHORIZED)


def test_get_transactions_once_per_job() -> None:
    proto, job_id = working()
    events, out = drive(proto, req(6, "mining.get_transactions", [job_id]))
    assert events == [TransactionsRequested(6, job_id)] and out == []
    proto.answer_transactions(6, job_id, TXIDS[:3])
    assert output(proto) == [{"id": 6, "result": TXIDS[:3], "error": None}]
    # The same job again, even in a burst: an error each time, never the list again.
    events, out = drive(proto, *(req(7 + i, "mining.get_transactions", [job_id]) for i in range(100)))
    assert [e for e in events if isinstance(e, TransactionsRequested)] == []
    assert len(events) == 100 and all(isinstance(e, ProtocolError) and not e.fatal for e in events)
    assert [m["id"] for m in out] == list(range(7, 107)) and all(m["result"] is None for m in out)
    # A new job may be asked for once.
    proto.send_job(build_job(make_gbt(n_txs=4), job_id="1b"), False)
    output(proto)
    events, _ = drive(proto, req(200, "mining.get_transactions", ["1b"]))
    assert events == [TransactionsRequested(200, "1b")]


def test_get_transactions_not_answered_is_not_remembered() -> None:
    """A request the server refused (rate limit, job gone) may be asked again: only a sent list counts."""
    proto, job_id = working()
    events, _ = drive(proto, req(6, "mining.get_transactions", [job_id]))
    proto.answer_error(6, 20, "slow down")
    events, _ = drive(proto, req(7, "mining.get_transactions", [job_id]))
    assert events == [TransactionsRequested(7, job_id)]


def test_get_transactions_only_for_jobs_sent_to_this_session() -> None:
    proto, _ = working()
    events, out = drive(proto, req(6, "mining.get_transactions", ["ffff"]), req(7, "mining.get_transactions", [5]))
    assert all(isinstance(e, ProtocolError) for e in events)
    assert [m["id"] for m in out] == [6, 7] and all(is_error(m, ERR_STALE) for m in out)


def test_get_transactions_without_job_id_means_current_job() -> None:
    proto, job_id = working()
    events, _ = drive(proto, req(6, "mining.get_transactions", []))
    assert events == [TransactionsRequested(6, job_id)]


# ---- the output budget ---------------------------------------------------------------------------------


def test_pending_output_counts_queued_bytes_until_taken() -> None:
    proto = proto_with()
    drive_only(proto, req(1, "mining.ping", []))
    queued = proto.pending_output
    assert queued == len(b'{"id":1,"result":"pong","error":null}\n')
    assert len(proto.data_to_send()) == queued
    assert proto.pending_output == 0 and not proto.over_budget


def test_backlog_counts_towards_the_budget() -> None:
    proto = proto_with(backlog=990, max_pending_output=1000)
    assert proto.pending_output == 990 and not proto.over_budget
    drive_only(proto, req(1, "mining.ping", []))
    assert proto.pending_output > 1000 and proto.over_budget


@pytest.mark.parametrize("method", ["mining.ping", "mining.no_such_method"])
def test_over_budget_stops_processing_within_one_read(method: str) -> None:
    """One read of 64 KiB of requests: the core stops at the reply that crosses the budget, not at the end."""
    request = req("p" * 100, method, [])
    one = proto_with()
    drive_only(one, request)
    per_reply = len(one.data_to_send())
    proto = proto_with(max_pending_output=4096)
    proto.receive_data(request * (65536 // len(request)))
    while proto.next_event() is not None:  # unknown methods are protocol errors: events, still answered
        pass
    assert proto.over_budget
    queued = len(proto.data_to_send())
    assert 4096 < queued <= 4096 + per_reply
    # Nothing more is processed or buffered once over budget, whatever else arrives.
    assert proto.over_budget and proto.next_event() is None
    proto.receive_data(request * 100)
    assert proto.next_event() is None and proto.data_to_send() == b""


def test_budget_applies_to_replies_the_server_answers() -> None:
    """A large server-answered reply (the transaction list) is checked before the next line is processed."""
    proto, job_id = working(max_pending_output=20_000)
    proto.receive_data(req(6, "mining.get_transactions", [job_id]) + req(7, "mining.ping", []))
    event = proto.next_event()
    assert event == TransactionsRequested(6, job_id)
    proto.answer_transactions(6, job_id, TXIDS)
    assert proto.over_budget
    assert proto.next_event() is None  # the ping is not answered
    assert b'"pong"' not in proto.data_to_send()


def test_within_budget_everything_is_answered() -> None:
    proto = proto_with()  # default budget: 1 MiB
    assert ProtocolConfig().max_pending_output == 1 << 20
    ping = req("p" * 100, "mining.ping", [])
    events, out = drive(proto, ping * (65536 // len(ping)))
    assert events == [] and len(out) == 65536 // len(ping) and not proto.over_budget


def drive_only(proto: StratumProtocol, *chunks: bytes) -> None:
    """Feed and process without taking the output (a server that has not flushed yet)."""
    for chunk in chunks:
        proto.receive_data(chunk)
        while proto.next_event() is not None:
            pass
