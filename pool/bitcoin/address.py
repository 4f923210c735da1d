"""Decode Bitcoin addresses into the output scripts they stand for, per network.

Miners authorize as ``ADDRESS.WORKER``; the pool must refuse an address of the wrong network (a mainnet
address on a regtest pool would make a coinbase nobody can spend on that chain) and must build the payout
output itself, without asking bitcoind for every login. Covers base58check P2PKH/P2SH (BIP 13), bech32
segwit v0 (BIP 173) and bech32m v1+ (BIP 350).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_INDEX = {c: i for i, c in enumerate(_BECH32_CHARSET)}
_BECH32_CONST = 1
_BECH32M_CONST = 0x2BC830A3


@dataclass(frozen=True, slots=True)
class Network:
    """Address prefixes of one Bitcoin network."""

    name: str
    hrp: str
    p2pkh: int
    p2sh: int


NETWORKS: dict[str, Network] = {
    "main": Network("main", "bc", 0x00, 0x05),
    "test": Network("test", "tb", 0x6F, 0xC4),
    "testnet4": Network("testnet4", "tb", 0x6F, 0xC4),
    "signet": Network("signet", "tb", 0x6F, 0xC4),
    "regtest": Network("regtest", "bcrt", 0x6F, 0xC4),
}


class AddressError(ValueError):
    """The string is not a valid address for the pool's network."""


def _b58decode_check(s: str) -> bytes:
    num = 0
    for ch in s:
        if ch not in _B58_INDEX:
            raise AddressError(f"invalid base58 character {ch!r}")
        num = num * 58 + _B58_INDEX[ch]
    raw = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    pad = len(s) - len(s.lstrip("1"))
    raw = b"\x00" * pad + raw
    if len(raw) < 5:
        raise AddressError("base58 address too short")
    payload, checksum = raw[:-4], raw[-4:]
    if hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] != checksum:
        raise AddressError("bad base58 checksum")
    return payload


def _bech32_polymod(values: list[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: list[int], from_bits: int, to_bits: int) -> bytes:
    acc = 0
    bits = 0
    out = bytearray()
    maxv = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if bits >= from_bits or ((acc << (to_bits - bits)) & maxv):
        raise AddressError("invalid bech32 padding")
    return bytes(out)


def _decode_segwit(address: str, hrp: str) -> bytes:
    if address.lower() != address and address.upper() != address:
        raise AddressError("mixed-case bech32 address")
    address = address.lower()
    pos = address.rfind("1")
    if pos < 1 or pos + 7 > len(address) or len(address) > 90:
        raise AddressError("malformed bech32 address")
    if address[:pos] != hrp:
        raise AddressError(f"address is for another network (prefix {address[:pos]!r}, expected {hrp!r})")
    try:
        data = [_BECH32_INDEX[c] for c in address[pos + 1 :]]
    except KeyError as exc:
        raise AddressError("invalid bech32 character") from exc
    const = _bech32_polymod(_hrp_expand(hrp) + data)
    if const not in (_BECH32_CONST, _BECH32M_CONST):
        raise AddressError("bad bech32 checksum")
    witver = data[0]
    program = _convert_bits(data[1:-6], 5, 8)
    if witver > 16 or not 2 <= len(program) <= 40:
        raise AddressError("invalid witness program")
    if witver == 0:
        if const != _BECH32_CONST or len(program) not in (20, 32):
            raise AddressError("invalid segwit v0 address")
    elif const != _BECH32M_CONST:
        raise AddressError("segwit v1+ must use bech32m")
    opcode = 0 if witver == 0 else 0x50 + witver
    return bytes([opcode, len(program)]) + program


def address_to_script(address: str, network: str) -> bytes:
    """Output script (scriptPubKey) paying ``address`` on ``network``; raises AddressError if invalid."""
    try:
        net = NETWORKS[network]
    except KeyError as exc:
        raise AddressError(f"unknown network {network!r}") from exc
    if not address or len(address) > 90:
        raise AddressError("empty or overlong address")
    if address.lower().startswith(net.hrp + "1"):
        return _decode_segwit(address, net.hrp)
    for other in {n.hrp for n in NETWORKS.values()} - {net.hrp}:
        if address.lower().startswith(other + "1") and not address.lower().startswith(net.hrp):
            raise AddressError(f"address is for another network (prefix {other!r}, expected {net.hrp!r})")
    payload = _b58decode_check(address)
    if len(payload) != 21:
        raise AddressError("base58 address has the wrong length")
    version, h160 = payload[0], payload[1:]
    if version == net.p2pkh:
        return b"\x76\xa9\x14" + h160 + b"\x88\xac"
    if version == net.p2sh:
        return b"\xa9\x14" + h160 + b"\x87"
    raise AddressError("base58 address is for another network")
