"""Supervision of the pool's long-lived background tasks: none of them may die silently.

A background loop that raises (a bug, a malformed answer, ``sqlite3.OperationalError: database is locked``, a
ZMQ endpoint libzmq refuses) used to end for good with nothing in the log: credits stopped maturing, payments
stopped, or the pool served its first template forever. Every such loop now runs under a ``Supervisor``: an
unexpected exception is logged with its traceback, counted (``pool_task_failures_total{task}``) and the loop
is started again after a backoff that doubles up to a cap and resets once a run has lasted a while. A loop
that returns is treated the same way (they are meant to run until cancelled).

While a *required* task is down (between its failure and the moment its restart has run for ``stable_after``
seconds) ``down()`` names it, and the pool's ``/readyz`` answers 503 with that name.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("pool.ops.supervise")

TaskFactory = Callable[[], Awaitable[None]]
FailureHook = Callable[[str, BaseException | None], None]


@dataclass(slots=True)
class TaskState:
    """What the supervisor knows about one task (read by readiness and tests)."""

    name: str
    required: bool
    failures: int = 0
    last_error: str = ""
    down_since: float | None = None  # monotonic time of the failure that put it down; None while up
    started_at: float = 0.0
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    """Runs named coroutine factories forever, restarting each with backoff when it fails."""

    def __init__(
        self,
        on_failure: FailureHook | None = None,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        stable_after: float = 1.0,
        reset_after: float = 60.0,
    ) -> None:
        self._on_failure = on_failure
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.reset_after = reset_after
        self.tasks: dict[str, TaskState] = {}

    def start(self, name: str, factory: TaskFactory, required: bool = True) -> TaskState:
        """Run ``factory()`` under supervision as task ``name`` (names are unique)."""
        if name in self.tasks:
            raise ValueError(f"task {name!r} is already supervised")
        state = TaskState(name, required)
        self.tasks[name] = state
        state.task = asyncio.create_task(self._run(state, factory), name=name)
        return state

    def down(self) -> list[str]:
        """Required tasks that are failing or restarting, each with its last error (for ``/readyz``)."""
        now = time.monotonic()
        out = []
        for s in self.tasks.values():
            if not s.required:
                continue
            if s.down_since is not None or (s.failures and now - s.started_at < self.stable_after):
                out.append(f"task {s.name} is down (restarting after: {s.last_error})")
        return out

    async def _run(self, state: TaskState, factory: TaskFactory) -> None:
        backoff = self.initial_backoff
        while True:
            state.started_at = time.monotonic()
            state.down_since = None
            error: BaseException | None = None
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure of a background loop is logged, counted and restarted
                error = exc
                log.error("task_failed", task=state.name, error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            else:
                log.error("task_exited", task=state.name)
            state.failures += 1
            state.last_error = f"{type(error).__name__}: {error}" if error is not None else "returned"
            state.down_since = time.monotonic()
            if self._on_failure is not None:
                with contextlib.suppress(Exception):
                    self._on_failure(state.name, error)
            if time.monotonic() - state.started_at >= self.reset_after:
                backoff = self.initial_backoff  # it ran fine for a long while: a fresh problem
            log.warning("task_restarting", task=state.name, in_seconds=round(backoff, 3), failures=state.failures)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def stop(self, timeout: float = 10.0) -> None:
        """Cancel every task and wait for them to finish.

        A cancellation can be lost (Python 3.11's ``asyncio.wait_for`` returns the result instead when the
        awaited thing completes at the same moment), so a task still running is cancelled again, until
        ``timeout``; one that still refuses is logged and left behind rather than hanging shutdown.
        """
        tasks = [s.task for s in self.tasks.values() if s.task is not None]
        deadline = time.monotonic() + timeout
        running = [t for t in tasks if not t.done()]
        while running and time.monotonic() < deadline:
            for task in running:
                task.cancel()
            await asyncio.wait(running, timeout=min(0.5, max(0.01, deadline - time.monotonic())))
            running = [t for t in running if not t.done()]
        for task in running:
            log.error("task_ignored_cancel", task=task.get_name())
        for task in tasks:
            if task.done() and not task.cancelled():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    task.result()
