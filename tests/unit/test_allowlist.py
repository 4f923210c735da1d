"""The allowlist file: format, validation with line numbers, matching by output script, and reload diffs."""

from __future__ import annotations

import pytest

from pool.bitcoin.address import address_to_script
from pool.mining.allowlist import AllowlistError, diff, parse_allowlist, removed_scripts
from tests.unit.helpers import regtest_address, segwit_address

A, B, C = regtest_address(1), regtest_address(2), regtest_address(3)


def test_fields_comments_and_blank_lines() -> None:
    text = f"""# licensed operators
{A}
{B}, Acme Mining Ltd          # operator only

   {C} ,  North Dam Co-op , north-dam
"""
    allowlist = parse_allowlist(text, "regtest")
    assert len(allowlist) == 3
    a, b, c = (allowlist.lookup(x) for x in (A, B, C))
    assert a is not None and (a.operator, a.site, a.line) == ("", "", 2)
    assert b is not None and (b.operator, b.site, b.line) == ("Acme Mining Ltd", "", 3)
    assert c is not None and (c.address, c.operator, c.site, c.line) == (C, "North Dam Co-op", "north-dam", 5)
    assert allowlist.sites() == {"north-dam"}
    assert allowlist.allows_script(address_to_script(A, "regtest"))
    assert allowlist.lookup(regtest_address(9)) is None
    assert allowlist.lookup("not-an-address") is None


def test_matched_by_script_not_spelling() -> None:
    allowlist = parse_allowlist(f"{A}, Acme\n", "regtest")
    licence = allowlist.lookup(A.upper())  # bech32 is case-insensitive: the same script
    assert licence is not None and licence.operator == "Acme"


def test_every_bad_line_is_reported_with_its_number() -> None:
    mainnet = segwit_address("bc", 0, bytes(20))
    text = "\n".join([
        A,                                  # 1 ok
        f"{mainnet}, Wrong Network",        # 2 another network
        "garbage",                          # 3 not an address
        f"{B}, Acme, north dam",            # 4 site with a space
        f"{A}, Again",                      # 5 duplicate of line 1
        f"{C}, x, y, z",                    # 6 too many fields
        ", Nobody",                         # 7 no address
        f"{C}, Fine, ok-site",              # 8 ok
    ])
    with pytest.raises(AllowlistError) as caught:
        parse_allowlist(text, "regtest", source="ops/allowlist.txt")
    err = caught.value
    assert [n for n, _ in err.problems] == [2, 3, 4, 5, 6, 7]
    message = str(err)
    assert message.startswith("ops/allowlist.txt: 6 bad line(s): line 2: ")
    assert "not a valid regtest address" in message
    assert "already listed on line 1" in message


def test_digest_follows_content() -> None:
    one = parse_allowlist(f"{A}\n", "regtest")
    assert one.digest == parse_allowlist(f"{A}\n", "regtest").digest
    assert one.digest != parse_allowlist(f"{A}\n# comment\n", "regtest").digest
    assert len(parse_allowlist("", "regtest")) == 0


def test_diff_names_added_removed_and_relabelled() -> None:
    old = parse_allowlist(f"{A}, Acme\n{B}, Bravo\n", "regtest")
    new = parse_allowlist(f"{B}, Bravo Renamed, site-2\n{C}\n", "regtest")
    change = diff(old, new)
    assert [lic.address for lic in change.added] == [C]
    assert [lic.address for lic in change.removed] == [A]
    assert [(lic.address, lic.operator) for lic in change.changed] == [(B, "Bravo Renamed")]
    assert removed_scripts(old, new) == {address_to_script(A, "regtest")}
    assert removed_scripts(new, new) == frozenset()


def test_shipped_example_parses_with_its_lines_uncommented() -> None:
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "config" / "allowlist.example.txt"
    text = example.read_text()
    assert len(parse_allowlist(text, "main")) == 0  # all commented out as shipped
    lines = [line[2:] for line in text.splitlines() if line.startswith("# ") and line[2:3] in "b31"]
    allowlist = parse_allowlist("\n".join(lines), "main")
    assert len(allowlist) == 3 and allowlist.sites() == {"north-dam", "south-farm"}
