"""Chart history (pool/ledger/history.py): in-memory sums, upserts through the real ledger writer, pruning,
span planning and chart points."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from pool.ledger import history
from pool.ledger.history import HASHES_PER_DIFF1, HistoryWriter, Retention, WorkHistory, WorkRow
from pool.ledger.sqlite import Ledger

T0 = 1_800_000_000  # a whole hour


def rows(conn: sqlite3.Connection, table: str) -> list[tuple]:
    return conn.execute(f"SELECT bucket, address, worker, shares, difficulty FROM {table}"
                        " ORDER BY address, worker, bucket").fetchall()


def test_work_is_summed_per_minute_and_worker_with_a_pool_total():
    work = WorkHistory()
    work.add("a1", "w1", 2.0, T0 + 1)
    work.add("a1", "w1", 3.0, T0 + 59.9)
    work.add("a1", "w2", 5.0, T0 + 30)
    work.add("a2", "", 7.0, T0 + 61)
    assert len(work) == 3
    assert sorted(work.snapshot()) == [(T0, 3, 10.0), (T0 + 60, 1, 7.0)]
    assert work.snapshot("a1", "w2") == [(T0, 1, 5.0)]
    taken = sorted(work.take(), key=lambda r: (r.address, r.worker, r.bucket))
    assert taken == [
        WorkRow(T0, "", "", 3, 10.0), WorkRow(T0 + 60, "", "", 1, 7.0),
        WorkRow(T0, "a1", "w1", 2, 5.0), WorkRow(T0, "a1", "w2", 1, 5.0), WorkRow(T0 + 60, "a2", "", 1, 7.0),
    ]
    assert work.take() == [] and len(work) == 0


def test_write_adds_to_existing_rows_in_both_tables():
    conn = sqlite3.connect(":memory:")
    conn.executescript(history.SCHEMA)
    history.write(conn, [WorkRow(T0, "a", "w", 2, 4.0), WorkRow(T0 + 60, "a", "w", 1, 1.0)])
    history.write(conn, [WorkRow(T0, "a", "w", 3, 6.0), WorkRow(T0 + 3600, "a", "w", 1, 0.5)])
    assert rows(conn, "work_minutely") == [(T0, "a", "w", 5, 10.0), (T0 + 60, "a", "w", 1, 1.0),
                                           (T0 + 3600, "a", "w", 1, 0.5)]
    assert rows(conn, "work_hourly") == [(T0, "a", "w", 6, 11.0), (T0 + 3600, "a", "w", 1, 0.5)]


def test_prune_keeps_each_table_for_its_own_time():
    conn = sqlite3.connect(":memory:")
    conn.executescript(history.SCHEMA)
    history.write(conn, [WorkRow(T0, "a", "w", 1, 1.0), WorkRow(T0 + 7200, "a", "w", 1, 1.0)])
    removed = history.prune(conn, now=T0 + 7200 + 60, minutely_keep=3600, hourly_keep=86400)
    assert removed == 1
    assert [r[0] for r in rows(conn, "work_minutely")] == [T0 + 7200]
    assert [r[0] for r in rows(conn, "work_hourly")] == [T0, T0 + 7200]
    assert history.prune(conn, now=T0 + 7200 + 86400, minutely_keep=3600, hourly_keep=86400) == 2
    assert rows(conn, "work_minutely") == [] and [r[0] for r in rows(conn, "work_hourly")] == [T0 + 7200]


@pytest.mark.parametrize(("text", "seconds"), [("1h", 3600), ("90m", 5400), ("24h", 86400), ("7d", 604800),
                                               ("90D", 90 * 86400)])
def test_spans_parse(text, seconds):
    assert history.parse_span(text) == seconds


@pytest.mark.parametrize("text", ["", "0h", "30m", "1w", "-1h", "24", "400d", "1h;drop", "9" * 30 + "h"])
def test_bad_spans_are_refused_with_a_message(text):
    with pytest.raises(ValueError, match="span"):
        history.parse_span(text)


def test_plan_uses_minutely_rows_while_kept_and_bounds_the_points():
    assert history.plan(3600, 48 * 3600) == (60, 60)
    assert history.plan(86400, 48 * 3600) == (60, 300)
    assert history.plan(48 * 3600, 48 * 3600) == (60, 600)
    assert history.plan(7 * 86400, 48 * 3600) == (3600, 3600)
    assert history.plan(90 * 86400, 48 * 3600) == (3600, 21600)
    for span in (3600, 86400, 7 * 86400, 30 * 86400, 366 * 86400):
        _, step = history.plan(span, 48 * 3600)
        assert span / step <= history.MAX_POINTS


def test_series_fills_every_step_and_rates_the_running_one_by_its_elapsed_time():
    now = T0 + 3600 + 150.0  # 30 s into the third minute of the hour
    out = history.series([(T0 + 3600, 2, 4.0), (T0 + 3600 + 120, 1, 3.0), (T0 - 7200, 9, 9.0)], 3600, 60, now)
    points = out["points"]
    assert out["step"] == 60 and len(points) == 60
    assert [p[0] for p in points] == list(range(T0 + 3600 + 120 - 59 * 60, T0 + 3600 + 180, 60))
    by_start = {p[0]: p for p in points}
    assert by_start[T0 + 3600][1:] == [4.0 * HASHES_PER_DIFF1 / 60, 2]
    assert by_start[T0 + 3600 + 120][1:] == [3.0 * HASHES_PER_DIFF1 / 60, 1]  # running: at least a minute
    assert sum(p[2] for p in points) == 3  # the row before the span is left out


def test_series_of_coarse_steps_sums_minutes():
    now = float(T0 + 86400)
    out = history.series([(T0 + 86400 - 600, 1, 1.0), (T0 + 86400 - 540, 1, 2.0)], 86400, 300, now)
    by_start = {p[0]: p for p in out["points"]}
    assert by_start[T0 + 86400 - 600][1:] == [3.0 * HASHES_PER_DIFF1 / 300, 2]
    assert len(out["points"]) == 288


async def test_writer_flushes_through_the_ledger_and_prunes(ledger_target):  # noqa: ANN001 - both backends
    ledger = Ledger(ledger_target(), rollup_interval=0)
    try:
        work = WorkHistory()
        now = [float(T0 + 50 * 3600)]
        writer = HistoryWriter(ledger, work, Retention(flush_interval=1, minutely_keep=3600, hourly_keep=86400),
                               clock=lambda: now[0])
        for i in range(5):
            work.add("addr", "rig", 1.5, now[0] - 30 + i)
        work.add("addr", "rig", 1.0, T0)  # an old minute, past both retentions by the prune below
        assert await writer.flush() == 4  # two worker minutes and the pool total of each
        assert len(work) == 0
        stored = history.read(ledger.query, 60, 0)
        assert sorted(stored) == [(T0, 1, 1.0), (T0 + 50 * 3600 - 60, 5, 7.5)]
        assert history.read(ledger.query, 3600, 0, "addr", "rig") == [(T0, 1, 1.0), (T0 + 49 * 3600, 5, 7.5)]
        assert history.read(ledger.query, 60, 0, "addr") == history.read(ledger.query, 60, 0, "addr", "rig")
        assert history.read(ledger.query, 60, 0, "other") == []
        assert await writer.prune() == 4  # the old minute and hour, for the worker and the pool
        assert sorted(history.read(ledger.query, 60, 0)) == [(T0 + 50 * 3600 - 60, 5, 7.5)]
    finally:
        ledger.close()


async def test_writer_run_flushes_on_its_timer(ledger_target):  # noqa: ANN001 - both backends
    ledger = Ledger(ledger_target(), rollup_interval=0)
    try:
        work = WorkHistory()
        writer = HistoryWriter(ledger, work, Retention(flush_interval=0.05))
        task = asyncio.create_task(writer.run())
        work.add("addr", "rig", 2.0, T0)
        for _ in range(200):
            await asyncio.sleep(0.02)
            if history.read(ledger.query, 60, 0, "addr"):
                break
        task.cancel()
        assert history.read(ledger.query, 60, 0, "addr") == [(T0, 1, 2.0)]
    finally:
        ledger.close()


async def test_a_refused_flush_is_logged_and_dropped(ledger_target):  # noqa: ANN001 - both backends
    ledger = Ledger(ledger_target(), rollup_interval=0)
    ledger.close()  # every submit now fails
    work = WorkHistory()
    work.add("addr", "rig", 2.0, T0)
    assert await HistoryWriter(ledger, work, Retention()).flush() == 0
    assert len(work) == 0
