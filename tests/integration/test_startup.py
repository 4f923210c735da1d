"""Start-up against a real node: a misconfigured operator gets one clear message naming the setting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pool.app import PoolApp
from pool.node.rpc import NodeError
from tests.conftest import pool_config

pytestmark = pytest.mark.integration


async def test_wrong_network_names_the_setting(regtest, tmp_path: Path) -> None:
    cfg = pool_config(regtest, tmp_path / "pool")
    # A signet-configured pool pointed at a regtest node (the address check is for the config's network).
    cfg = dataclasses.replace(
        cfg, node=dataclasses.replace(cfg.node, network="signet"),
        payout=dataclasses.replace(cfg.payout, pool_address="tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"),
    )
    app = PoolApp(cfg)
    try:
        with pytest.raises(RuntimeError, match=r"node\.network is 'signet' but bitcoind runs chain 'regtest'"):
            await app.start()
    finally:
        await app.stop()


async def test_wrong_rpc_password_is_reported_as_credentials(regtest, tmp_path: Path) -> None:
    cfg = pool_config(regtest, tmp_path / "pool")
    cfg = dataclasses.replace(cfg, node=dataclasses.replace(cfg.node, rpc_password="not-the-password"))
    app = PoolApp(cfg)
    try:
        with pytest.raises(NodeError, match="rpc_user/rpc_password"):
            await app.start()
    finally:
        await app.stop()
