"""Extranonce1 allocation: unique per live connection, so no two miners ever hash the same coinbase.

Across pool nodes and front-end processes the value is laid out as ``[prefix][counter]``: the prefix is the
node id and the process index (``extranonce_prefix``), fixed per allocator, so allocators with different
prefixes can never hand out the same value and no coordination is needed on the share path.
"""

from __future__ import annotations

import secrets


def extranonce_prefix(node_id: int, node_bits: int, process: int, process_bits: int) -> tuple[int, int]:
    """The prefix of one front-end's values and its width: ``[node_id][process]``, most significant first."""
    if not 0 <= node_id < 1 << node_bits:
        raise ValueError(f"node id {node_id} does not fit {node_bits} bits")
    if not 0 <= process < max(1, 1 << process_bits):
        raise ValueError(f"process index {process} does not fit {process_bits} bits")
    return (node_id << process_bits) | process, node_bits + process_bits


class ExtranonceAllocator:
    """Hands out ``size``-byte extranonce1 values, never two live ones alike.

    Values walk a counter from a random start so a restarted pool does not re-issue the same sequence to
    miners resuming sessions; released values may be reused only after the whole space has been walked.
    With a prefix, the counter fills the low bits and every value starts with ``prefix`` (``prefix_bits`` wide).
    """

    def __init__(self, size: int = 4, prefix: int = 0, prefix_bits: int = 0) -> None:
        if not 2 <= size <= 8:
            raise ValueError("extranonce1 size must be 2..8 bytes")
        if not 0 <= prefix_bits < 8 * size or not 0 <= prefix < 1 << prefix_bits:
            raise ValueError("extranonce1 prefix does not fit")
        self.size = size
        self._counter_bits = 8 * size - prefix_bits
        self._space = 1 << self._counter_bits
        self._base = prefix << self._counter_bits
        self.prefix = prefix
        self.prefix_bits = prefix_bits
        self._next = secrets.randbelow(self._space)
        self._live: set[int] = set()  # counters of our own prefix, and whole values claimed from other prefixes

    def allocate(self) -> bytes:
        if len(self._live) >= self._space:
            raise RuntimeError("extranonce1 space exhausted")
        while self._base | self._next in self._live:
            self._next = (self._next + 1) % self._space
        value = self._base | self._next
        self._next = (self._next + 1) % self._space
        self._live.add(value)
        return value.to_bytes(self.size, "big")

    def prefix_of(self, value: bytes, bits: int) -> int:
        """The top ``bits`` bits of a value (e.g. its node id, to refuse resuming another node's value)."""
        return int.from_bytes(value, "big") >> (8 * self.size - bits)

    def owns(self, value: bytes) -> bool:
        """True when ``value`` carries this allocator's prefix (it was handed out by this process)."""
        return len(value) == self.size and int.from_bytes(value, "big") >> self._counter_bits == self.prefix

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
