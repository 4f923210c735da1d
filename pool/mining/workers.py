"""Miner identities: ``PAYOUT_ADDRESS[.WORKER]`` usernames and password options such as ``d=NUMBER``.

Pure parsing so the protocol core can authorize without I/O; the address is checked against the pool's
network because a coinbase paying another network's address would be unspendable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pool.bitcoin.address import AddressError, address_to_script

_WORKER_NAME = re.compile(r"\A[A-Za-z0-9_\-:@+~]{0,64}\Z")


@dataclass(frozen=True, slots=True)
class Worker:
    """An authorized worker: where its rewards go and the name it reports under."""

    address: str
    name: str
    script: bytes
    fixed_difficulty: float | None = None

    @property
    def full_name(self) -> str:
        return f"{self.address}.{self.name}" if self.name else self.address


class AuthError(ValueError):
    """The username or password cannot be accepted; the message is safe to send to the miner."""


def parse_password_options(password: str) -> dict[str, str]:
    """``d=1024,x`` or ``d=1024;foo=bar`` style options; anything without ``=`` is ignored (often just 'x')."""
    options: dict[str, str] = {}
    for part in re.split(r"[,;\s]+", password or ""):
        if "=" in part:
            key, _, value = part.partition("=")
            options[key.strip().lower()] = value.strip()
    return options


def parse_worker(username: str, password: str, network: str) -> Worker:
    """Validate a ``mining.authorize`` username/password pair."""
    if not isinstance(username, str) or not username:
        raise AuthError("username must be PAYOUT_ADDRESS[.WORKER]")
    address, _, name = username.partition(".")
    if not _WORKER_NAME.match(name):
        raise AuthError("worker name may use letters, digits and _-:@+~ (at most 64)")
    try:
        script = address_to_script(address.strip(), network)
    except AddressError as exc:
        raise AuthError(f"invalid payout address: {exc}") from exc
    fixed: float | None = None
    options = parse_password_options(password if isinstance(password, str) else "")
    if "d" in options:
        try:
            fixed = float(options["d"])
        except ValueError as exc:
            raise AuthError("password option d= must be a number") from exc
        if not fixed > 0 or fixed != fixed or fixed == float("inf"):
            raise AuthError("password option d= must be a positive number")
    return Worker(address.strip(), name, script, fixed)
