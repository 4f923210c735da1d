"""A block template from ``getblocktemplate``, parsed and checked once so jobs can trust it.

Parsing happens at the edge where the node's JSON arrives; everything downstream works on these typed values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pool.bitcoin.serialize import hex_to_hash
from pool.bitcoin.target import bits_to_target


class TemplateError(ValueError):
    """bitcoind returned a template we cannot mine on."""


@dataclass(frozen=True, slots=True)
class TemplateTx:
    """A non-coinbase transaction of the template."""

    data: bytes
    txid: bytes  # internal order
    wtxid: bytes  # internal order
    fee: int
    weight: int


@dataclass(frozen=True, slots=True)
class BlockTemplate:
    """The fields of a template that job building and block assembly need."""

    height: int
    version: int
    prevhash: bytes  # internal order
    bits: int
    curtime: int
    mintime: int
    coinbase_value: int
    transactions: tuple[TemplateTx, ...]
    default_witness_commitment: bytes | None
    longpollid: str | None
    rules: tuple[str, ...] = field(default=())

    @property
    def network_target(self) -> int:
        return bits_to_target(self.bits)

    @property
    def prevhash_hex(self) -> str:
        return self.prevhash[::-1].hex()

    @property
    def total_fees(self) -> int:
        return sum(tx.fee for tx in self.transactions)


def parse_template(gbt: dict[str, Any]) -> BlockTemplate:
    """Turn bitcoind's JSON template into a BlockTemplate, or raise TemplateError naming the bad field."""
    try:
        txs = tuple(
            TemplateTx(
                data=bytes.fromhex(tx["data"]),
                txid=hex_to_hash(tx["txid"]),
                wtxid=hex_to_hash(tx.get("hash", tx["txid"])),
                fee=int(tx.get("fee", 0)),
                weight=int(tx.get("weight", 0)),
            )
            for tx in gbt["transactions"]
        )
        dwc = gbt.get("default_witness_commitment")
        template = BlockTemplate(
            height=int(gbt["height"]),
            version=int(gbt["version"]),
            prevhash=hex_to_hash(gbt["previousblockhash"]),
            bits=int(gbt["bits"], 16),
            curtime=int(gbt["curtime"]),
            mintime=int(gbt.get("mintime", 0)),
            coinbase_value=int(gbt["coinbasevalue"]),
            transactions=txs,
            default_witness_commitment=bytes.fromhex(dwc) if dwc else None,
            longpollid=gbt.get("longpollid"),
            rules=tuple(gbt.get("rules", ())),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TemplateError(f"malformed getblocktemplate result: {exc!r}") from exc
    if len(template.prevhash) != 32 or any(len(tx.txid) != 32 or len(tx.wtxid) != 32 for tx in txs):
        raise TemplateError("malformed getblocktemplate result: a hash is not 32 bytes")
    return template
