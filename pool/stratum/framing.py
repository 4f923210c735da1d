"""Newline framing with a size cap: the first defence against a client that never sends a newline."""

from __future__ import annotations


class LineTooLong(Exception):
    """The peer sent more than the cap without a newline; the connection must be closed."""


class LineFramer:
    """Splits a byte stream into lines; holds at most ``max_line`` bytes of an unfinished line."""

    def __init__(self, max_line: int = 16 * 1024) -> None:
        self._buf = bytearray()
        self._max = max_line

    def feed(self, data: bytes) -> list[bytes]:
        """Append received bytes; return the complete lines (without terminators, blank lines dropped)."""
        self._buf += data
        if b"\n" not in data:
            if len(self._buf) > self._max:
                self._buf.clear()
                raise LineTooLong(f"line exceeds {self._max} bytes")
            return []
        *lines, rest = self._buf.split(b"\n")
        self._buf = bytearray(rest)
        out = []
        for line in lines:
            if len(line) > self._max:
                self._buf.clear()
                raise LineTooLong(f"line exceeds {self._max} bytes")
            line = line.strip()
            if line:
                out.append(bytes(line))
        if len(self._buf) > self._max:
            self._buf.clear()
            raise LineTooLong(f"line exceeds {self._max} bytes")
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)
