"""Extranonce1 allocation: unique per live connection, so no two miners ever hash the same coinbase."""

from __future__ import annotations

import secrets


class ExtranonceAllocator:
    """Hands out ``size``-byte extranonce1 values, never two live ones alike.

    Values walk a counter from a random start so a restarted pool does not re-issue the same sequence to
    miners resuming sessions; released values may be reused only after the whole space has been walked.
    """

    def __init__(self, size: int = 4) -> None:
        if not 2 <= size <= 8:
            raise ValueError("extranonce1 size must be 2..8 bytes")
        self.size = size
        self._space = 1 << (8 * size)
        self._next = secrets.randbelow(self._space)
        self._live: set[int] = set()

    def allocate(self) -> bytes:
        if len(self._live) >= self._space:
            raise RuntimeError("extranonce1 space exhausted")
        while self._next in self._live:
            self._next = (self._next + 1) % self._space
        value = self._next
        self._next = (self._next + 1) % self._space
        self._live.add(value)
        return value.to_bytes(self.size, "big")

    def claim(self, value: bytes) -> bool:
        """Take a specific value (session resume); False if it is in use or of the wrong size."""
        if len(value) != self.size:
            return False
        number = int.from_bytes(value, "big")
        if number in self._live:
            return False
        self._live.add(number)
        return True

    def release(self, value: bytes) -> None:
        self._live.discard(int.from_bytes(value, "big"))

    def __len__(self) -> int:
        return len(self._live)
