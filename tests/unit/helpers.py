"""Independent reference code for the unit tests: hashing, transaction parsing, templates, addresses.

Nothing here imports the pool's own encoders, so a bug in ``pool/`` cannot cancel out against the test's
expectation. The only pool imports are the types needed to build jobs (template parsing, job construction).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any

DIFF1 = 0xFFFF * 2**208
ZERO32 = b"\x00" * 32


# ---- hashing and merkle ----------------------------------------------------------------------------------


def dsha(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def ref_merkle_root(leaves: list[bytes]) -> bytes:
    """Bitcoin merkle root written recursively (a different shape from the pool's iterative version)."""
    assert leaves
    if len(leaves) == 1:
        return leaves[0]
    padded = leaves + [leaves[-1]] if len(leaves) % 2 else leaves
    parents = [dsha(padded[i] + padded[i + 1]) for i in range(0, len(padded), 2)]
    return ref_merkle_root(parents)


def ref_witness_commitment_script(wtxids: list[bytes]) -> bytes:
    """BIP141: OP_RETURN 0x24 aa21a9ed || sha256d(witness_root || reserved), coinbase wtxid counted as zero."""
    root = ref_merkle_root([ZERO32, *wtxids])
    return bytes.fromhex("6a24aa21a9ed") + dsha(root + ZERO32)


# ---- wire encodings --------------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 0xFD:
        return first, pos + 1
    width = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
    return int.from_bytes(data[pos + 1 : pos + 1 + width], "little"), pos + 1 + width


@dataclass
class ParsedTx:
    version: int
    inputs: list[tuple[bytes, int, bytes, int]]  # (prev txid, vout, scriptSig, sequence)
    outputs: list[tuple[int, bytes]]  # (value, scriptPubKey)
    witnesses: list[list[bytes]]
    locktime: int
    legacy: bytes  # serialization without witness (what the txid hashes)
    raw: bytes  # serialization as found
    segwit: bool = False

    @property
    def txid(self) -> bytes:
        return dsha(self.legacy)

    @property
    def wtxid(self) -> bytes:
        return dsha(self.raw)


def parse_tx(data: bytes, pos: int = 0) -> tuple[ParsedTx, int]:
    """Parse one transaction at ``pos`` (segwit-aware); return it and the offset after it."""
    start = pos
    version = struct.unpack_from("<i", data, pos)[0]
    pos += 4
    segwit = data[pos] == 0 and data[pos + 1] == 1
    if segwit:
        pos += 2
    body_start = pos
    n_in, pos = read_varint(data, pos)
    inputs = []
    for _ in range(n_in):
        prev = data[pos : pos + 32]
        vout = struct.unpack_from("<I", data, pos + 32)[0]
        pos += 36
        slen, pos = read_varint(data, pos)
        script = data[pos : pos + slen]
        pos += slen
        seq = struct.unpack_from("<I", data, pos)[0]
        pos += 4
        inputs.append((prev, vout, script, seq))
    n_out, pos = read_varint(data, pos)
    outputs = []
    for _ in range(n_out):
        value = struct.unpack_from("<q", data, pos)[0]
        pos += 8
        slen, pos = read_varint(data, pos)
        outputs.append((value, data[pos : pos + slen]))
        pos += slen
    body_end = pos
    witnesses: list[list[bytes]] = []
    if segwit:
        for _ in range(n_in):
            n_items, pos = read_varint(data, pos)
            items = []
            for _ in range(n_items):
                ilen, pos = read_varint(data, pos)
                items.append(data[pos : pos + ilen])
                pos += ilen
            witnesses.append(items)
    locktime = struct.unpack_from("<I", data, pos)[0]
    pos += 4
    legacy = data[start : start + 4] + data[body_start:body_end] + data[pos - 4 : pos]
    return ParsedTx(version, inputs, outputs, witnesses, locktime, legacy, data[start:pos], segwit), pos


def parse_whole_tx(data: bytes) -> ParsedTx:
    tx, end = parse_tx(data)
    assert end == len(data), f"trailing bytes after transaction: {len(data) - end}"
    return tx


@dataclass
class ParsedBlock:
    header: bytes
    txs: list[ParsedTx] = field(default_factory=list)

    @property
    def merkle_root(self) -> bytes:
        return self.header[36:68]


def parse_block(data: bytes) -> ParsedBlock:
    header = data[:80]
    count, pos = read_varint(data, 80)
    block = ParsedBlock(header)
    for _ in range(count):
        tx, pos = parse_tx(data, pos)
        block.txs.append(tx)
    assert pos == len(data), f"trailing bytes after block: {len(data) - pos}"
    return block


# ---- templates and jobs ----------------------------------------------------------------------------------


def make_segwit_tx(seed: int) -> bytes:
    """A syntactically valid one-in/one-out segwit transaction; distinct per seed."""
    prev = hashlib.sha256(b"prev" + seed.to_bytes(4, "little")).digest()
    witness_item = hashlib.sha256(b"sig" + seed.to_bytes(4, "little")).digest() + b"\x01"
    return (
        struct.pack("<i", 2)
        + b"\x00\x01"
        + b"\x01"
        + prev
        + struct.pack("<I", seed % 3)
        + b"\x00"
        + b"\xfd\xff\xff\xff"
        + b"\x01"
        + struct.pack("<q", 10_000 + seed)
        + b"\x16\x00\x14"
        + hashlib.sha256(b"pk" + seed.to_bytes(4, "little")).digest()[:20]
        + b"\x01"
        + varint(len(witness_item))
        + witness_item
        + struct.pack("<I", 0)
    )


def make_legacy_tx(seed: int) -> bytes:
    prev = hashlib.sha256(b"legacy" + seed.to_bytes(4, "little")).digest()
    return (
        struct.pack("<i", 1)
        + b"\x01"
        + prev
        + b"\x00\x00\x00\x00"
        + b"\x02\x51\x51"
        + b"\xff\xff\xff\xff"
        + b"\x01"
        + struct.pack("<q", 5_000 + seed)
        + b"\x01\x51"
        + struct.pack("<I", 0)
    )


def display(h: bytes) -> str:
    return h[::-1].hex()


PREVHASH_DISPLAY = "00000000000000000002a7c4c1e48d76c5a37902165a270156b7a8d72728a054"


def make_gbt(
    n_txs: int = 3,
    bits: str = "207fffff",
    height: int = 500_000,
    prevhash: str = PREVHASH_DISPLAY,
    curtime: int = 1_700_000_000,
    mintime: int = 1_699_990_000,
    version: int = 0x20000000,
    segwit: bool = True,
) -> dict[str, Any]:
    """A getblocktemplate result as bitcoind returns it, commitment computed independently."""
    txs = []
    wtxids = []
    for i in range(n_txs):
        raw = make_segwit_tx(i) if i % 2 == 0 else make_legacy_tx(i)
        tx = parse_whole_tx(raw)
        txs.append(
            {
                "data": raw.hex(),
                "txid": display(tx.txid),
                "hash": display(tx.wtxid),
                "fee": 1000 + i,
                "weight": 4 * len(tx.legacy) + (len(raw) - len(tx.legacy)),
                "depends": [],
                "sigops": 1,
            }
        )
        wtxids.append(tx.wtxid)
    gbt: dict[str, Any] = {
        "capabilities": ["proposal"],
        "version": version,
        "rules": ["csv", "!segwit", "taproot"] if segwit else ["csv"],
        "vbavailable": {},
        "vbrequired": 0,
        "previousblockhash": prevhash,
        "transactions": txs,
        "coinbaseaux": {},
        "coinbasevalue": 312_500_000 + sum(1000 + i for i in range(n_txs)),
        "longpollid": prevhash + "42",
        "target": f"{0:064x}",
        "mintime": mintime,
        "mutable": ["time", "transactions", "prevblock"],
        "noncerange": "00000000ffffffff",
        "sigoplimit": 80000,
        "sizelimit": 4000000,
        "weightlimit": 4000000,
        "curtime": curtime,
        "bits": bits,
        "height": height,
    }
    if segwit:
        gbt["default_witness_commitment"] = ref_witness_commitment_script(wtxids).hex()
    return gbt


P2WPKH_SCRIPT = bytes.fromhex("0014751e76e8199196d454941c45d1b3a323f1433bd6")


def build_job(
    gbt: dict[str, Any] | None = None,
    job_id: str = "1",
    en_total: int = 12,
    pool_tag: bytes = b"/unit-test/",
    outputs: list[Any] | None = None,
) -> Any:
    """A Job from a GBT dict through the pool's own parse_template / PreparedTemplate / make_job."""
    from pool.bitcoin.coinbase import TxOut
    from pool.mining.jobs import PreparedTemplate, make_job, parse_template

    template = parse_template(gbt if gbt is not None else make_gbt())
    prepared = PreparedTemplate.from_template(template)
    outs = outputs if outputs is not None else [TxOut(template.coinbase_value, P2WPKH_SCRIPT)]
    return make_job(job_id, prepared, outs, pool_tag, en_total, float(template.curtime))


# ---- a miner's view: rebuild everything from the notify params -------------------------------------------


def header_from_notify(
    params: list[Any], extranonce1: bytes, extranonce2: bytes, ntime: int, nonce: int, version: int | None = None
) -> bytes:
    """The 80-byte header a Stratum miner hashes, built only from ``mining.notify`` params."""
    _job_id, prevhash, coinb1, coinb2, branch, version_hex, nbits_hex, _ntime_hex, _clean = params
    coinbase = bytes.fromhex(coinb1) + extranonce1 + extranonce2 + bytes.fromhex(coinb2)
    root = dsha(coinbase)
    for h in branch:
        root = dsha(root + bytes.fromhex(h))
    prev = bytes.fromhex(prevhash)
    prev_internal = b"".join(prev[i : i + 4][::-1] for i in range(0, 32, 4))
    ver = int(version_hex, 16) if version is None else version
    return (
        struct.pack("<I", ver)
        + prev_internal
        + root
        + struct.pack("<I", ntime)
        + struct.pack("<I", int(nbits_hex, 16))
        + struct.pack("<I", nonce)
    )


def hash_value(header: bytes) -> int:
    return int.from_bytes(dsha(header), "little")


def find_nonce(
    params: list[Any],
    extranonce1: bytes,
    extranonce2: bytes,
    ntime: int,
    accept: Any,
    version: int | None = None,
    start: int = 0,
    limit: int = 1_000_000,
) -> int:
    """First nonce >= start whose header hash value satisfies ``accept(value)``."""
    for nonce in range(start, start + limit):
        if accept(hash_value(header_from_notify(params, extranonce1, extranonce2, ntime, nonce, version))):
            return nonce
    raise AssertionError("no nonce found")


# ---- addresses (reference encoders from BIP173/BIP350 and base58check) -----------------------------------

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def base58check(version: int, payload: bytes) -> str:
    data = bytes([version]) + payload
    data += dsha(data)[:4]
    num = int.from_bytes(data, "big")
    out = ""
    while num:
        num, rem = divmod(num, 58)
        out = _B58[rem] + out
    pad = len(data) - len(data.lstrip(b"\x00"))
    return "1" * pad + out


def _polymod(values: list[int]) -> int:
    gen = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for v in values:
        b = chk >> 25
        chk = ((chk & 0x1FFFFFF) << 5) ^ v
        for i in range(5):
            if (b >> i) & 1:
                chk ^= gen[i]
    return chk


def _convertbits(data: bytes, frombits: int, tobits: int) -> list[int]:
    acc = bits = 0
    ret = []
    maxv = (1 << tobits) - 1
    for value in data:
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            ret.append((acc >> bits) & maxv)
    if bits:
        ret.append((acc << (tobits - bits)) & maxv)
    return ret


def segwit_address(hrp: str, witver: int, program: bytes, force_const: int | None = None) -> str:
    """Encode a segwit address (bech32 for v0, bech32m for v1+ unless ``force_const`` says otherwise)."""
    const = force_const if force_const is not None else (1 if witver == 0 else 0x2BC830A3)
    data = [witver] + _convertbits(program, 8, 5)
    hrp_exp = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    polymod = _polymod(hrp_exp + data + [0] * 6) ^ const
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32[d] for d in data + checksum)


def regtest_address(seed: int = 0) -> str:
    return segwit_address("bcrt", 0, hashlib.sha256(b"addr" + bytes([seed])).digest()[:20])
