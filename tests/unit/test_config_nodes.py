"""Several bitcoinds (``[[node]]``) and the PROXY protocol settings: values read, mistakes named."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from pool.config import ConfigError, NodeConfig, parse_config

MAIN_ADDR = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"


def parse(node: Any, **sections: Any) -> Any:
    return parse_config({"node": node, "payout": {"pool_address": MAIN_ADDR}, **sections}, env={})


def error_for(node: Any, **sections: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse(node, **sections)
    return str(info.value)


def test_one_node_table_is_one_node() -> None:
    cfg = parse({"rpc_url": "http://10.0.0.1:8332"})
    assert cfg.nodes == (cfg.node,) and cfg.extra_nodes == ()
    assert cfg.node.name == "node1" and cfg.node.rpc_url == "http://10.0.0.1:8332"


def test_array_of_tables_lists_nodes_in_order_and_shares_pool_wide_settings() -> None:
    raw = tomllib.loads("""
[[node]]
name = "alpha"
rpc_url = "http://10.0.0.1:8332"
network = "test"
refresh_interval = 5
zmq_hashblock = "tcp://10.0.0.1:28332"

[[node]]
rpc_url = "http://10.0.0.2:8332"
rpc_cookie_file = "/var/lib/b/.cookie"
rpc_timeout = 10
""")
    cfg = parse(raw["node"], payout={"pool_address": "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"})
    first, second = cfg.nodes
    assert first.name == "alpha" and second.name == "node2"
    assert second.network == "test" and second.refresh_interval == 5  # copied from the first
    assert second.rpc_cookie_file == "/var/lib/b/.cookie" and second.rpc_timeout == 10
    assert first.zmq_hashblock and not second.zmq_hashblock
    assert cfg.node is first


def test_env_credentials_apply_to_every_node_unless_given() -> None:
    cfg = parse_config({"node": [{"rpc_url": "http://a:1"}, {"rpc_url": "http://b:1", "rpc_user": "own"}],
                        "payout": {"pool_address": MAIN_ADDR}},
                       env={"POOL_RPC_USER": "u", "POOL_RPC_PASSWORD": "p"})
    assert [(n.rpc_user, n.rpc_password) for n in cfg.nodes] == [("u", "p"), ("own", "p")]


@pytest.mark.parametrize(
    ("node", "needle"),
    [
        ([], "non-empty list of tables"),
        (["http://a:1"], "non-empty list of tables"),
        ("http://a:1", "non-empty list of tables"),
        ([{"rpc_url": "http://a:1"}, {"rpc_url": "http://b:1", "network": "main"}], "node[2].network"),
        ([{"rpc_url": "http://a:1"}, {"rpc_url": "http://b:1", "refresh_interval": 3}], "node[2].refresh_interval"),
        ([{"rpc_url": "http://a:1"}, {"rpc_url": "http://a:1/"}], "node[2].rpc_url"),
        ([{"rpc_url": "http://a:1", "name": "x"}, {"rpc_url": "http://b:1", "name": "x"}], "node[2].name"),
        ([{"rpc_url": "http://a:1"}, {"rpc_url": "ftp://b:1"}], "node[2].rpc_url"),
        ([{"rpc_url": "http://a:1"}, {"rpc_url": "http://b:1", "name": "bad name"}], "node[2].name"),
        ([{"rpc_url": "http://a:1"}, {"rpc_url": "http://b:1", "zmq_hashblock": "tcp://b"}], "node[2].zmq_hashblock"),
        ([{"rpc_url": "http://a:1"}, {"rpc_url": "http://b:1", "colour": 1}], "node[2].colour"),
        ([{"rpc_url": f"http://a:{i}"} for i in range(1, 18)], "at most 16"),
        ({"rpc_url": "http://a:1", "name": ""}, "node.name"),
    ],
)
def test_node_list_mistakes_name_the_setting(node: Any, needle: str) -> None:
    assert needle in error_for(node)


def test_managed_regtest_takes_one_node() -> None:
    message = error_for([{"network": "regtest", "rpc_url": "http://a:1"}, {"rpc_url": "http://b:1"}],
                        regtest={"managed": True})
    assert "regtest.managed" in message


def test_single_node_default_is_unchanged() -> None:
    assert parse({}).node == NodeConfig()


def test_proxy_protocol_defaults_off_with_loopback_trusted() -> None:
    cfg = parse({})
    assert cfg.stratum.proxy_protocol is False
    assert cfg.stratum.proxy_trusted == ("127.0.0.0/8", "::1/128")


def test_proxy_protocol_settings_read() -> None:
    cfg = parse({}, stratum={"proxy_protocol": True, "proxy_trusted": ["10.1.0.0/16", "fd00::/8", "192.0.2.7"]})
    assert cfg.stratum.proxy_protocol is True
    assert cfg.stratum.proxy_trusted == ("10.1.0.0/16", "fd00::/8", "192.0.2.7")


@pytest.mark.parametrize(
    ("stratum", "needle"),
    [
        ({"proxy_protocol": "yes"}, "stratum.proxy_protocol"),
        ({"proxy_trusted": ["10.0.0.0/33"]}, "stratum.proxy_trusted"),
        ({"proxy_trusted": ["lb.example"]}, "stratum.proxy_trusted"),
        ({"proxy_trusted": "10.0.0.0/8"}, "stratum.proxy_trusted"),
        ({"proxy_protocol": True, "proxy_trusted": []}, "stratum.proxy_trusted is empty"),
    ],
)
def test_proxy_settings_mistakes_name_the_setting(stratum: dict[str, Any], needle: str) -> None:
    assert needle in error_for({}, stratum=stratum)
