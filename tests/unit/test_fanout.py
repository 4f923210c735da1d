"""The work fan-out: sliced by time so shares are answered between slices, and a replaced fan-out keeps the
clean flag it owed (a miner that missed a new tip's clean job must not get the next update as non-clean)."""

from __future__ import annotations

from collections.abc import Callable

from pool.server.fanout import Fanout


class Clock:
    """Advances by ``step`` seconds per session sent: a fake, deterministic cost per send."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, budget: float = 0.001, cost: float = 10e-6, refuse: set[int] | None = None) -> None:
        self.clock = Clock()
        self.cost = cost
        self.sent: list[tuple[int, bool]] = []
        self.pending: list[Callable[[], None]] = []
        self.refuse = refuse or set()
        self.fanout: Fanout[int] = Fanout(self.send, self.pending.append, budget=budget, clock=self.clock)

    def send(self, session: int, clean: bool) -> bool:
        self.clock.now += self.cost
        if session in self.refuse:
            return False
        self.sent.append((session, clean))
        return True

    def run_one(self) -> None:
        callback = self.pending.pop(0)
        callback()

    def run_all(self) -> int:
        slices = 0
        while self.pending:
            self.run_one()
            slices += 1
            assert slices < 10_000
        return slices


def test_small_fanout_is_sent_at_once() -> None:
    h = Harness()
    done: list[int] = []
    h.fanout.start(range(50), clean=True, done=done.append)
    assert [s for s, _ in h.sent] == list(range(50))
    assert all(c for _, c in h.sent)
    assert done == [50]
    assert not h.pending and not h.fanout.in_progress


def test_large_fanout_yields_between_slices_within_budget() -> None:
    h = Harness(budget=0.001, cost=10e-6)  # 100 sends per ms
    done: list[int] = []
    h.fanout.start(range(1000), clean=True, done=done.append)
    first = len(h.sent)
    assert 100 <= first <= 100 + 16, first  # the first slice goes out at once and stops near the budget
    assert h.pending and h.fanout.in_progress and not done
    slices = h.run_all()
    assert 8 <= slices <= 10
    assert [s for s, _ in h.sent] == list(range(1000))
    assert done == [1000]


def test_sessions_refused_are_not_counted() -> None:
    h = Harness(refuse={3, 4})
    done: list[int] = []
    h.fanout.start(range(10), clean=False, done=done.append)
    assert done == [8]
    assert all(not c for _, c in h.sent)


def test_replacement_keeps_the_clean_flag_owed_to_sessions_not_reached() -> None:
    h = Harness(budget=0.001, cost=10e-6)
    tips: list[int] = []
    updates: list[int] = []
    h.fanout.start(range(500), clean=True, done=tips.append)  # new tip: reaches about the first 100
    reached = {s for s, _ in h.sent}
    h.sent.clear()
    h.fanout.start(range(500), clean=False, done=updates.append)  # the full template, before the tip finished
    h.run_all()
    got = dict(h.sent)
    assert sorted(got) == list(range(500))
    for s in range(500):
        assert got[s] is (s not in reached), s  # clean exactly where the tip's clean job never arrived
    assert tips == updates == [500]  # the tip's waiter learns when everyone has its (or newer) work


def test_replacement_of_a_finished_fanout_sends_plain_updates() -> None:
    h = Harness()
    h.fanout.start(range(20), clean=True)
    h.sent.clear()
    h.fanout.start(range(20), clean=False)
    assert all(not c for _, c in h.sent) and len(h.sent) == 20


def test_one_resume_is_scheduled_at_a_time() -> None:
    h = Harness(budget=0.001, cost=10e-6)
    h.fanout.start(range(1000), clean=True)
    h.fanout.start(range(1000), clean=False)
    assert len(h.pending) == 1
    h.run_all()
    assert not h.fanout.in_progress


def test_empty_fanout_completes_at_once() -> None:
    h = Harness()
    done: list[int] = []
    h.fanout.start([], clean=True, done=done.append)
    assert done == [0] and not h.pending
