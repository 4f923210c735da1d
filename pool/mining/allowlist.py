"""Licensed operators: the allowlist file's format, its validation, and who may mine.

Pure (no file or network access): the caller reads the file and hands in its text, so start-up, reloads and
reports parse it the same way and tests need no disk.

Format, one address per line::

    # comments start with '#', anywhere on a line; blank lines are ignored
    bcrt1q...                                   # address only
    bcrt1q..., Acme Mining Ltd                  # address, operator name
    bcrt1q..., Acme Mining Ltd, north-dam       # address, operator name, site

Fields are separated by commas (operator names have spaces); surrounding spaces are dropped. Every address
must be valid on the pool's network. Entries are matched by output script, not by spelling, so a bech32
address a miner types in upper case matches its lower-case entry (both pay the same script).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from pool.bitcoin.address import AddressError, address_to_script

MAX_NAME = 100
MAX_SITE = 64
MAX_ERRORS_SHOWN = 20


@dataclass(frozen=True, slots=True)
class Licence:
    """One allowlisted payout address and who holds it."""

    address: str
    operator: str = ""
    site: str = ""
    line: int = 0


class AllowlistError(ValueError):
    """The file has bad lines; ``problems`` lists ``(line number, message)``, all of them, in file order."""

    def __init__(self, source: str, problems: list[tuple[int, str]]) -> None:
        self.source = source
        self.problems = problems
        shown = "; ".join(f"line {n}: {msg}" for n, msg in problems[:MAX_ERRORS_SHOWN])
        more = f"; and {len(problems) - MAX_ERRORS_SHOWN} more" if len(problems) > MAX_ERRORS_SHOWN else ""
        super().__init__(f"{source}: {len(problems)} bad line(s): {shown}{more}")


@dataclass(frozen=True, slots=True)
class Allowlist:
    """The licensed addresses, keyed by output script; ``digest`` identifies the file content (audit log)."""

    network: str
    by_script: dict[bytes, Licence] = field(default_factory=dict)
    digest: str = ""

    def __len__(self) -> int:
        return len(self.by_script)

    def allows_script(self, script: bytes) -> bool:
        return script in self.by_script

    def lookup(self, address: str) -> Licence | None:
        """The licence for ``address`` as written anywhere (ledger rows, usernames); None if not listed or invalid."""
        try:
            return self.by_script.get(address_to_script(address.strip(), self.network))
        except AddressError:
            return None

    def sites(self) -> set[str]:
        return {lic.site for lic in self.by_script.values() if lic.site}


def _clean(text: str) -> str:
    return text.split("#", 1)[0].strip()


def parse_allowlist(text: str, network: str, source: str = "allowlist") -> Allowlist:
    """Parse the whole file; raise AllowlistError naming every bad line (not only the first)."""
    problems: list[tuple[int, str]] = []
    entries: dict[bytes, Licence] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _clean(raw)
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) > 3:
            problems.append((number, "expected at most 3 comma-separated fields: address, operator, site"))
            continue
        address, operator, site = (fields + ["", ""])[:3]
        if not address:
            problems.append((number, "missing address"))
            continue
        try:
            script = address_to_script(address, network)
        except AddressError as exc:
            problems.append((number, f"{address[:100]!r} is not a valid {network} address: {exc}"))
            continue
        if len(operator) > MAX_NAME or not operator.isprintable():
            problems.append((number, f"operator name must be printable and at most {MAX_NAME} characters"))
            continue
        if len(site) > MAX_SITE or not site.isprintable() or " " in site:
            problems.append((number, f"site must be one word of at most {MAX_SITE} characters"))
            continue
        previous = entries.get(script)
        if previous is not None:
            problems.append((number, f"{address!r} is already listed on line {previous.line}"))
            continue
        entries[script] = Licence(address, operator, site, number)
    if problems:
        raise AllowlistError(source, problems)
    return Allowlist(network, entries, hashlib.sha256(text.encode()).hexdigest())


@dataclass(frozen=True, slots=True)
class Change:
    """What a reload changes: addresses added and removed (removed ones have their sessions drained)."""

    added: tuple[Licence, ...]
    removed: tuple[Licence, ...]
    changed: tuple[Licence, ...]  # same address, new operator or site


def diff(old: Allowlist, new: Allowlist) -> Change:
    """Licences added, removed, and re-labelled between two lists (in the new file's line order)."""
    added = tuple(new.by_script[s] for s in new.by_script if s not in old.by_script)
    removed = tuple(old.by_script[s] for s in old.by_script if s not in new.by_script)
    changed = tuple(
        lic for s, lic in new.by_script.items()
        if s in old.by_script and (old.by_script[s].operator, old.by_script[s].site) != (lic.operator, lic.site)
    )
    return Change(added, removed, changed)


def removed_scripts(old: Allowlist, new: Allowlist) -> frozenset[bytes]:
    """Output scripts listed in ``old`` and not in ``new``: their live sessions are drained."""
    return frozenset(s for s in old.by_script if s not in new.by_script)
