"""PROXY protocol v1 (text) and v2 (binary) headers, as HAProxy and cloud load balancers send them: sans-IO.

Behind a TCP load balancer every connection comes from the balancer; the header it writes first carries the
miner's own address, which the server then uses for per-address limits, bans and logs. ``parse_proxy_header``
takes the bytes received so far and answers "need more", a header (and how many bytes it took), or
``ProxyHeaderError``. The facts it follows (from HAProxy's proxy-protocol.txt):

* v1 is one US-ASCII line ``PROXY TCP4|TCP6|UNKNOWN ...`` ending in CRLF within 107 bytes; fields are
  separated by exactly one space; ports are decimal without leading zeroes; a lone CR or LF is invalid;
  with ``UNKNOWN`` the rest of the line is ignored and the connection's own addresses apply.
* v2 starts with a 12-byte signature, then version 2 and a command (LOCAL: the balancer's own connection, e.g.
  a health check, whose own addresses apply; PROXY: relayed), the family and transport, and a big-endian
  length of what follows (addresses, then optional TLVs, skipped here). IPv4 TCP takes 12 address bytes,
  IPv6 TCP 36; an unspecified family or transport, or a UNIX socket, means the connection's own addresses.

The receiver must not guess: when the server expects a header, a connection that does not start with one is
refused, as is one that is malformed or longer than the bounds below.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX_LINE = 107  # bytes, CRLF included (the longest UNKNOWN line the specification allows)
V2_FIXED = 16
V2_MAX_HEADER = 4096  # signature, fixed part, addresses and TLVs; a longer announced header is refused
MAX_HEADER = V2_MAX_HEADER  # the most bytes a caller buffers before a header is complete
PROXY_HEADER_TIMEOUT = 10.0  # seconds a connection may take to deliver its header (the spec asks for >= 3)

_V2_TCP4, _V2_UDP4, _V2_TCP6, _V2_UDP6 = 0x11, 0x12, 0x21, 0x22


class ProxyHeaderError(ValueError):
    """The connection did not start with a valid PROXY protocol header (the reason is for the log)."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete header. ``source``/``destination`` are None when the connection's own addresses apply
    (v1 UNKNOWN, v2 LOCAL, v2 unspecified family or transport, v2 UNIX sockets)."""

    version: int
    length: int  # bytes of the stream the header took; what follows is the miner's first data
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None


def parse_proxy_header(data: bytes) -> ProxyHeader | None:
    """Parse the start of a connection: a header, None while it is incomplete, or ProxyHeaderError."""
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if data.startswith(V1_PREFIX):
        return _parse_v1(data)
    if V2_SIGNATURE.startswith(data) or V1_PREFIX.startswith(data):
        return None  # a prefix of one of the two: wait for more
    raise ProxyHeaderError("no PROXY protocol header")


# ---- version 1 ------------------------------------------------------------------------------------------------


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX_LINE)
    if end < 0:
        window = data[:V1_MAX_LINE]
        if b"\n" in window or b"\r" in window[:-1]:
            raise ProxyHeaderError("v1 header line holds a lone CR or LF (it must end with CRLF)")
        if len(data) >= V1_MAX_LINE:
            raise ProxyHeaderError(f"v1 header longer than {V1_MAX_LINE} bytes")
        return None
    if b"\r" in data[:end] or b"\n" in data[:end]:
        raise ProxyHeaderError("v1 header line holds a lone CR or LF (it must end with CRLF)")
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProxyHeaderError("v1 header is not ASCII") from exc
    length = end + 2
    parts = line.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyHeader(1, length)
    if len(parts) != 6:
        raise ProxyHeaderError(f"v1 header needs 6 fields separated by single spaces, got {len(parts)}")
    family = parts[1]
    if family not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"v1 protocol must be TCP4, TCP6 or UNKNOWN, got {family[:10]!r}")
    version = 4 if family == "TCP4" else 6
    source = _v1_address(parts[2], version), _v1_port(parts[4])
    destination = _v1_address(parts[3], version), _v1_port(parts[5])
    return ProxyHeader(1, length, source, destination)


def _v1_address(text: str, version: int) -> str:
    try:
        if version == 4:
            return str(ipaddress.IPv4Address(text))  # refuses leading zeroes (octal ambiguity)
        if "%" in text or "." in text:
            raise ValueError("scoped or dotted IPv6 address")
        return _plain(ipaddress.IPv6Address(text))
    except ValueError as exc:
        raise ProxyHeaderError(f"v1 address {text[:45]!r} is not a TCP{version} address") from exc


def _v1_port(text: str) -> int:
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0") or int(text) > 65535:
        raise ProxyHeaderError(f"v1 port {text[:8]!r} is not a decimal 0-65535 without leading zeroes")
    return int(text)


# ---- version 2 ------------------------------------------------------------------------------------------------


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) > 12:
        version, command = data[12] >> 4, data[12] & 0x0F
        if version != 2:
            raise ProxyHeaderError(f"v2 header with version {version}")
        if command not in (0, 1):
            raise ProxyHeaderError(f"v2 header with unknown command {command}")
    if len(data) > 13:
        family, transport = data[13] >> 4, data[13] & 0x0F
        if family > 3 or transport > 2:
            raise ProxyHeaderError(f"v2 header with unknown family/transport byte 0x{data[13]:02x}")
    if len(data) < V2_FIXED:
        return None
    total = V2_FIXED + int.from_bytes(data[14:16], "big")
    if total > V2_MAX_HEADER:
        raise ProxyHeaderError(f"v2 header of {total} bytes (at most {V2_MAX_HEADER})")
    if len(data) < total:
        return None
    if data[12] & 0x0F == 0:  # LOCAL: the balancer's own connection; the address block is skipped
        return ProxyHeader(2, total)
    kind = data[13]
    block = data[V2_FIXED:total]
    if kind in (_V2_UDP4, _V2_UDP6):
        raise ProxyHeaderError("v2 header for a datagram connection")
    if kind == _V2_TCP4:
        if len(block) < 12:
            raise ProxyHeaderError(f"v2 TCP4 address block of {len(block)} bytes (needs 12)")
        src = str(ipaddress.IPv4Address(block[0:4]))
        dst = str(ipaddress.IPv4Address(block[4:8]))
        ports = block[8:10], block[10:12]
    elif kind == _V2_TCP6:
        if len(block) < 36:
            raise ProxyHeaderError(f"v2 TCP6 address block of {len(block)} bytes (needs 36)")
        src = _plain(ipaddress.IPv6Address(block[0:16]))
        dst = _plain(ipaddress.IPv6Address(block[16:32]))
        ports = block[32:34], block[34:36]
    else:  # unspecified family or transport, or a UNIX socket: no IP address to use
        return ProxyHeader(2, total)
    return ProxyHeader(2, total, (src, int.from_bytes(ports[0], "big")), (dst, int.from_bytes(ports[1], "big")))


def _plain(address: ipaddress.IPv6Address) -> str:
    """An IPv4-mapped IPv6 address is the IPv4 client it stands for: one key for limits and bans."""
    mapped = address.ipv4_mapped
    return str(mapped) if mapped is not None else str(address)


class TrustedSources:
    """The networks allowed to send PROXY headers (``stratum.proxy_trusted``): anyone else could claim any
    address, so their connections are refused while the PROXY protocol is on."""

    def __init__(self, networks: tuple[str, ...]) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def allows(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self._networks)
