"""``ADDRESS.WORKER`` usernames and ``d=NUMBER`` password options."""

from __future__ import annotations

import pytest

from pool.mining.workers import AuthError, Worker, parse_password_options, parse_worker
from tests.unit.helpers import base58check, segwit_address

H160 = bytes.fromhex("751e76e8199196d454941c45d1b3a323f1433bd6")
MAIN_BECH32 = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
MAIN_P2PKH = "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"
REGTEST = segwit_address("bcrt", 0, H160)


def test_address_and_worker() -> None:
    w = parse_worker(f"{MAIN_BECH32}.rig01", "x", "main")
    assert w == Worker(MAIN_BECH32, "rig01", bytes.fromhex("0014") + H160, None)
    assert w.full_name == f"{MAIN_BECH32}.rig01"


def test_address_without_worker() -> None:
    w = parse_worker(MAIN_P2PKH, "", "main")
    assert w.name == ""
    assert w.full_name == MAIN_P2PKH
    assert w.script.hex() == "76a91477bff20c60e522dfaa3350c39b030a5d004e839a88ac"


def test_regtest_address() -> None:
    w = parse_worker(f"{REGTEST}.bitaxe", "x", "regtest")
    assert w.script == bytes.fromhex("0014") + H160
    assert w.name == "bitaxe"


@pytest.mark.parametrize("name", ["a", "rig_1", "S19-2", "x:y", "me@home", "a+b", "t~1", "A" * 64])
def test_allowed_worker_names(name: str) -> None:
    assert parse_worker(f"{MAIN_BECH32}.{name}", "x", "main").name == name


@pytest.mark.parametrize("name", ["bad name", "a.b", "A" * 65, "é", "x/y", "<script>"])
def test_rejected_worker_names(name: str) -> None:
    with pytest.raises(AuthError):
        parse_worker(f"{MAIN_BECH32}.{name}", "x", "main")


@pytest.mark.parametrize(
    "username",
    ["", "notanaddress", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5.rig", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3", ".rig"],
)
def test_bad_addresses(username: str) -> None:
    with pytest.raises(AuthError):
        parse_worker(username, "x", "main")


@pytest.mark.parametrize(
    ("username", "network"),
    [
        (MAIN_BECH32, "regtest"),
        (MAIN_P2PKH, "test"),
        (REGTEST, "main"),
        (base58check(0x6F, H160), "main"),
        (segwit_address("tb", 0, H160), "regtest"),
    ],
)
def test_wrong_network(username: str, network: str) -> None:
    with pytest.raises(AuthError, match="address"):
        parse_worker(username + ".w", "x", network)


def test_non_string_username() -> None:
    with pytest.raises(AuthError):
        parse_worker(None, "x", "main")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("password", "difficulty"),
    [("d=1024", 1024.0), ("x,d=0.5", 0.5), ("d=1e3;foo=bar", 1000.0), ("D=2048", 2048.0), ("x d=16 ", 16.0), ("x", None), ("", None)],
)
def test_fixed_difficulty_option(password: str, difficulty: float | None) -> None:
    assert parse_worker(MAIN_BECH32, password, "main").fixed_difficulty == difficulty


@pytest.mark.parametrize("password", ["d=abc", "d=", "d=-1", "d=0", "d=nan", "d=inf", "d=-inf"])
def test_invalid_difficulty_option(password: str) -> None:
    with pytest.raises(AuthError, match="d="):
        parse_worker(MAIN_BECH32, password, "main")


def test_non_string_password_ignored() -> None:
    assert parse_worker(MAIN_BECH32, None, "main").fixed_difficulty is None  # type: ignore[arg-type]


def test_parse_password_options() -> None:
    assert parse_password_options("x") == {}
    assert parse_password_options("d=8,x;Foo=Bar baz=1") == {"d": "8", "foo": "Bar", "baz": "1"}
    assert parse_password_options("") == {}


def test_auth_error_is_value_error() -> None:
    assert issubclass(AuthError, ValueError)
