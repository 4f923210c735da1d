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


async def test_templates_follow_a_new_rpc_cookie_after_bitcoind_restarts(fresh_regtest, tmp_path: Path) -> None:
    """bitcoind writes a new cookie each time it starts: the pool's template and block calls (sent without
    python-bitcoinrpc) must read it again after a refusal, not keep sending the old one for ever."""
    from pool.node.rpc import NodeClient, NodeUnavailable, RpcCredentials

    node = fresh_regtest
    cookie = tmp_path / ".cookie"
    cookie.write_text(f"{node.user}:{node.password}")
    client = NodeClient(RpcCredentials(node.rpc_url, "", "", cookie_file=str(cookie)), timeout=10)
    try:
        first = await client.get_template()
        assert first["height"] >= 1
        node.stop()
        node.password = "a-new-cookie-secret"  # the restarted node accepts only the new secret
        node.start()
        # The pool asks before bitcoind's new cookie is read (here: before it is written): refused ...
        refused: NodeError | None = None
        for _ in range(3):  # the kept connection may first show as stale; the old secret is then refused
            try:
                await client.get_template()
            except NodeUnavailable:
                continue
            except NodeError as exc:
                refused = exc
                break
        assert refused is not None and refused.code == -401, refused
        cookie.write_text(f"{node.user}:{node.password}")
        # ... and the next call reads the cookie again instead of sending the refused secret for ever.
        again = await client.get_template()
        assert again["height"] == first["height"]
    finally:
        client.close()
