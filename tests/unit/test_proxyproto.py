"""PROXY protocol headers (sans-IO): v1 and v2, complete, split across reads, truncated and malformed.

The v2 test headers are built here byte by byte from the specification's layout, not by the parser's code.
"""

from __future__ import annotations

import socket
import struct

import pytest

from pool.server.proxyproto import (
    MAX_HEADER,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    parse_proxy_header,
)

SIG = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
STRATUM = b'{"id":1,"method":"mining.subscribe","params":[]}\n'


def v2(command: int, family_transport: int, block: bytes, version: int = 2) -> bytes:
    return SIG + bytes([version << 4 | command, family_transport]) + struct.pack("!H", len(block)) + block


def v2_tcp4(src: str, sport: int, dst: str, dport: int, tlvs: bytes = b"") -> bytes:
    block = socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, dst)
    return v2(1, 0x11, block + struct.pack("!HH", sport, dport) + tlvs)


def v2_tcp6(src: str, sport: int, dst: str, dport: int) -> bytes:
    block = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    return v2(1, 0x21, block + struct.pack("!HH", sport, dport))


def test_signature_is_the_specified_one() -> None:
    assert V2_SIGNATURE == SIG


@pytest.mark.parametrize(
    ("line", "source", "destination"),
    [
        (b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 3333\r\n", ("192.0.2.10", 56324), ("198.51.100.1", 3333)),
        (b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
         ("255.255.255.255", 65535), ("255.255.255.255", 65535)),
        (b"PROXY TCP4 0.0.0.0 10.0.0.1 0 1\r\n", ("0.0.0.0", 0), ("10.0.0.1", 1)),
        (b"PROXY TCP6 2001:db8::7 2001:DB8::1 40000 3333\r\n", ("2001:db8::7", 40000), ("2001:db8::1", 3333)),
        (b"PROXY TCP6 ::ffff:c000:20a ::1 1 2\r\n", ("192.0.2.10", 1), ("::1", 2)),  # mapped: the IPv4 client
    ],
)
def test_v1_tcp(line: bytes, source: tuple[str, int], destination: tuple[str, int]) -> None:
    header = parse_proxy_header(line + STRATUM)
    assert header == ProxyHeader(1, len(line), source, destination)


@pytest.mark.parametrize("line", [b"PROXY UNKNOWN\r\n",
                                  b"PROXY UNKNOWN ffff:f::f:ffff ffff:f::f:ffff 65535 65535\r\n",
                                  b"PROXY UNKNOWN anything at all\r\n"])
def test_v1_unknown_uses_the_connection_address(line: bytes) -> None:
    assert parse_proxy_header(line + STRATUM) == ProxyHeader(1, len(line))


def test_v1_longest_line_is_accepted() -> None:
    line = b"PROXY UNKNOWN " + b"f" * (107 - 16) + b"\r\n"
    assert len(line) == 107
    assert parse_proxy_header(line) == ProxyHeader(1, 107)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 3333\n", "CRLF"),
        (b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 3333\rX\r\n", "CRLF"),
        (b"PROXY UNKNOWN " + b"f" * 100, "longer than 107"),
        (b"PROXY TCP4  192.0.2.10 198.51.100.1 56324 3333\r\n", "6 fields"),
        (b"PROXY TCP4 192.0.2.10 198.51.100.1 56324\r\n", "6 fields"),
        (b"PROXY UDP4 192.0.2.10 198.51.100.1 56324 3333\r\n", "TCP4, TCP6 or UNKNOWN"),
        (b"PROXY TCP4 2001:db8::7 198.51.100.1 56324 3333\r\n", "not a TCP4 address"),
        (b"PROXY TCP6 192.0.2.10 ::1 56324 3333\r\n", "not a TCP6 address"),
        (b"PROXY TCP4 192.0.2.010 198.51.100.1 56324 3333\r\n", "not a TCP4 address"),
        (b"PROXY TCP4 192.0.2.10 198.51.100.1 056324 3333\r\n", "leading zeroes"),
        (b"PROXY TCP4 192.0.2.10 198.51.100.1 65536 3333\r\n", "0-65535"),
        (b"PROXY TCP4 192.0.2.10 198.51.100.1 -1 3333\r\n", "0-65535"),
        (b"PROXY TCP4 192.0.2.10 198.51.100.1 \xd9\xa1 3333\r\n", "ASCII"),
        (b"proxy TCP4 192.0.2.10 198.51.100.1 1 2\r\n", "no PROXY protocol header"),
        (STRATUM, "no PROXY protocol header"),
        (b"\x16\x03\x01\x02\x00\x01", "no PROXY protocol header"),  # a TLS ClientHello
        (b"GET / HTTP/1.1\r\n", "no PROXY protocol header"),
    ],
)
def test_malformed_input_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyHeaderError, match=reason):
        parse_proxy_header(data)


def test_v2_proxy_ipv4_with_tlvs_skipped() -> None:
    tlvs = bytes([0x05, 0x00, 0x03]) + b"abc"  # a unique-id TLV: skipped by length
    head = v2_tcp4("203.0.113.9", 51000, "10.0.0.2", 3333, tlvs)
    assert parse_proxy_header(head + STRATUM) == ProxyHeader(2, len(head), ("203.0.113.9", 51000), ("10.0.0.2", 3333))


def test_v2_proxy_ipv6() -> None:
    head = v2_tcp6("2001:db8:1::5", 443, "2001:db8:2::1", 3333)
    assert len(head) == 16 + 36
    assert parse_proxy_header(head) == ProxyHeader(2, 52, ("2001:db8:1::5", 443), ("2001:db8:2::1", 3333))


@pytest.mark.parametrize("block", [b"", b"\x00" * 12])  # LOCAL must skip whatever length it announces
def test_v2_local_uses_the_connection_address(block: bytes) -> None:
    head = v2(0, 0x00 if not block else 0x11, block)
    assert parse_proxy_header(head + STRATUM) == ProxyHeader(2, len(head))


@pytest.mark.parametrize("kind", [0x00, 0x10, 0x01, 0x31])  # unspecified family/transport, UNIX stream
def test_v2_proxy_without_an_ip_address_uses_the_connection_address(kind: int) -> None:
    head = v2(1, kind, b"\x00" * (216 if kind == 0x31 else 0))
    assert parse_proxy_header(head) == ProxyHeader(2, len(head))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (v2(1, 0x11, b"")[:12] + bytes([0x11]), "version 1"),
        (v2(1, 0x11, b"", version=3), "version 3"),
        (v2(2, 0x11, b"\x00" * 12), "unknown command 2"),
        (v2(1, 0x41, b"\x00" * 12), "family/transport"),
        (v2(1, 0x13, b"\x00" * 12), "family/transport"),
        (v2(1, 0x12, b"\x00" * 12), "datagram"),
        (v2(1, 0x22, b"\x00" * 36), "datagram"),
        (v2(1, 0x11, b"\x00" * 11), "needs 12"),
        (v2(1, 0x21, b"\x00" * 35), "needs 36"),
        (SIG + bytes([0x21, 0x11]) + struct.pack("!H", MAX_HEADER), "at most"),
    ],
)
def test_v2_malformed_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyHeaderError, match=reason):
        parse_proxy_header(data)


def test_v2_oversized_is_refused_before_its_bytes_arrive() -> None:
    head = SIG + bytes([0x21, 0x11]) + struct.pack("!H", 0xFFFF)
    with pytest.raises(ProxyHeaderError, match="at most"):
        parse_proxy_header(head)


@pytest.mark.parametrize(
    "whole",
    [
        b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 3333\r\n",
        b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 3333\r\n",
        b"PROXY UNKNOWN\r\n",
        v2_tcp4("203.0.113.9", 51000, "10.0.0.2", 3333, b"\x04\x00\x02xy"),
        v2_tcp6("2001:db8:1::5", 443, "2001:db8:2::1", 3333),
        v2(0, 0x00, b""),
    ],
)
def test_a_header_split_across_reads_needs_more_until_complete(whole: bytes) -> None:
    """Every strict prefix asks for more; the whole header parses, wherever the split fell."""
    for cut in range(len(whole)):
        assert parse_proxy_header(whole[:cut]) is None, cut
    header = parse_proxy_header(whole + STRATUM)
    assert header is not None and header.length == len(whole)


@pytest.mark.parametrize("garbage", [b"P", b"PRO", b"\r\n\r\n\x00", b"\r\n\r\n\x00\r\nQUIT\n"])
def test_prefixes_wait_but_a_wrong_byte_after_them_is_refused(garbage: bytes) -> None:
    assert parse_proxy_header(garbage) is None
    with pytest.raises(ProxyHeaderError):
        parse_proxy_header(garbage + b"\xff" * 4 if garbage.endswith(b"QUIT\n") else garbage + b"Z")


def test_trusted_sources() -> None:
    from pool.server.proxyproto import TrustedSources

    trusted = TrustedSources(("127.0.0.0/8", "::1/128", "10.1.0.0/16", "192.0.2.7"))
    assert trusted.allows("127.0.0.1") and trusted.allows("::1") and trusted.allows("10.1.200.3")
    assert trusted.allows("::ffff:10.1.0.9")  # an IPv4 balancer seen through a dual-stack socket
    assert trusted.allows("192.0.2.7") and not trusted.allows("192.0.2.8")
    assert not trusted.allows("10.2.0.1") and not trusted.allows("2001:db8::1") and not trusted.allows("?")
