"""Events the Stratum protocol core hands to the server: frozen values, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pool.mining.shares import Rejected, Submission
from pool.mining.workers import Worker


@dataclass(frozen=True, slots=True)
class Subscribed:
    """``mining.subscribe`` answered; ``user_agent`` as the miner reported it."""

    user_agent: str
    resumed_session: str | None


@dataclass(frozen=True, slots=True)
class Authorized:
    """A worker logged in; ``first`` when this session can now be sent work."""

    worker: Worker
    first: bool


@dataclass(frozen=True, slots=True)
class AuthorizeFailed:
    """A login was refused (already answered with error 24)."""

    username: str
    reason: str


@dataclass(frozen=True, slots=True)
class ShareSubmitted:
    """A well-formed submit from an authorized, subscribed session: the server must judge and answer it."""

    request_id: Any
    submission: Submission
    worker: Worker
    difficulty: float
    version_mask: int


@dataclass(frozen=True, slots=True)
class ShareRefused:
    """A submit the core refused itself (not subscribed, unauthorized, malformed); already answered."""

    rejected: Rejected
    worker_name: str


@dataclass(frozen=True, slots=True)
class DifficultySuggested:
    """The miner asked for a difficulty (``suggest_difficulty``, ``suggest_target``), or with ``minimum`` set
    declared the least it can work with (BIP 310 ``minimum-difficulty``)."""

    difficulty: float
    minimum: bool = False


@dataclass(frozen=True, slots=True)
class TransactionsRequested:
    """``mining.get_transactions`` from a logged-in session, for a job it was sent and has not had the list of:
    the server answers with ``answer_transactions`` (the job's transaction ids) or an error."""

    request_id: Any
    job_id: str


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The peer misbehaved. Already answered when a reply was possible; ``fatal`` means close now."""

    reason: str
    fatal: bool


Event = (
    Subscribed
    | Authorized
    | AuthorizeFailed
    | ShareSubmitted
    | ShareRefused
    | DifficultySuggested
    | TransactionsRequested
    | ProtocolError
)
