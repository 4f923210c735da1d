"""Property tests for the Stratum core: whatever arrives, it never raises, every line it writes is JSON, and
every request gets exactly one reply, in order (unless the connection is closed for an oversized line)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pool.mining.jobs import JobBook
from pool.mining.shares import check_submission
from pool.mining.workers import parse_worker
from pool.stratum.events import Authorized, DifficultySuggested, Event, ShareSubmitted, TransactionsRequested
from pool.stratum.protocol import ProtocolConfig, StratumProtocol, _number
from tests.unit.helpers import build_job, make_gbt, regtest_address

EN1 = bytes.fromhex("0a0b0c0d")
ADDR = regtest_address(3)
USER = f"{ADDR}.fuzz"
JOB = build_job(make_gbt(n_txs=2, bits="207fffff"), job_id="1", en_total=4 + 8)
BOOK = JobBook()
BOOK.add(JOB)
NTIME = f"{JOB.ntime:08x}"
METHODS = [
    "mining.subscribe",
    "mining.authorize",
    "mining.submit",
    "mining.configure",
    "mining.suggest_difficulty",
    "mining.suggest_target",
    "mining.extranonce.subscribe",
    "mining.ping",
    "mining.get_transactions",
    "client.get_version",
    "mining.set_difficulty",
    "mining.foo",
    "",
]
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _strict(raw: bytes) -> Any:
    def reject(name: str) -> Any:
        raise AssertionError(f"non-standard JSON constant {name} in output {raw!r}")

    return json.loads(raw, parse_constant=reject)


def _authorizer(username: str, password: str) -> Any:
    return parse_worker(username, password, "regtest")


class Harness:
    """A protocol core with a minimal server around it: judges shares, answers get_transactions, sends work."""

    def __init__(self, max_line: int = 16 * 1024) -> None:
        self.proto = StratumProtocol(ProtocolConfig(max_line=max_line, start_difficulty=1e-9), EN1, _authorizer)
        self.out: list[dict[str, Any]] = []
        self.fatal = False

    def _serve(self, event: Event) -> None:
        p = self.proto
        if isinstance(event, ShareSubmitted):
            result = check_submission(event.submission, BOOK, p.extranonce1, 8, event.difficulty, event.version_mask, JOB.ntime)
            p.answer_submit(event.request_id, result)
        elif isinstance(event, TransactionsRequested):
            p.answer_transactions(event.request_id, event.job_id, [])
        elif isinstance(event, Authorized) and p.subscribed:
            p.send_job(JOB, True)
        elif isinstance(event, DifficultySuggested):
            p.set_difficulty(event.difficulty)
        elif getattr(event, "fatal", False):
            self.fatal = True

    def feed(self, chunk: bytes) -> None:
        self.proto.receive_data(chunk)
        while (event := self.proto.next_event()) is not None:
            self._serve(event)
        data = self.proto.data_to_send()
        assert data == b"" or data.endswith(b"\n")
        for raw in data.splitlines():
            msg = _strict(raw)
            assert isinstance(msg, dict) and "id" in msg
            self.out.append(msg)

    @property
    def replies(self) -> list[dict[str, Any]]:
        return [m for m in self.out if "method" not in m]


def expected_replies(lines: list[bytes]) -> list[Any]:
    """The id each line must be answered with, in order; lines that are replies to us get nothing."""
    ids = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            msg = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            ids.append(None)
            continue
        if not isinstance(msg, dict):
            ids.append(None)
        elif msg.get("method") is None and ("result" in msg or "error" in msg):
            continue
        elif msg.get("id") is None and _silent_hint(msg):
            continue  # a valid difficulty hint sent as a JSON-RPC notification gets no reply
        else:
            ids.append(msg.get("id"))
    return ids


def _silent_hint(msg: dict[str, Any]) -> bool:
    """Whether a message is a well-formed suggest_difficulty/suggest_target (answered only when id is set)."""
    params = msg.get("params", [])
    params = [] if params is None else params
    if not isinstance(params, list) or not params:
        return False
    if msg.get("method") == "mining.suggest_difficulty":
        return _number(params[0]) is not None
    if msg.get("method") == "mining.suggest_target":
        text = params[0]
        try:
            return isinstance(text, str) and 0 < len(text) <= 64 and int(text, 16) > 0
        except ValueError:
            return False
    return False


# ---- strategies -----------------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)
hex8 = st.integers(min_value=0, max_value=2**32 - 1).map(lambda n: f"{n:08x}")


def plausible_params(method: str) -> st.SearchStrategy[Any]:
    user = st.sampled_from([USER, ADDR, "nobody", ""]) | json_scalars
    if method == "mining.submit":
        base = st.tuples(
            user,
            st.sampled_from(["1", "2", "ff"]) | json_scalars,
            st.sampled_from(["0000000000000001", "00", "zz", "00000000000000000000"]) | hex8.map(lambda h: h + h),
            st.sampled_from([NTIME, "0", "ffffffff"]) | hex8,
            hex8 | st.sampled_from(["1", "", "xyz"]),
        )
        return st.one_of(base.map(list), st.tuples(base, st.sampled_from(["00000000", "00002000", "ffffffff"]) | hex8).map(lambda t: [*t[0], t[1]]))
    if method == "mining.authorize":
        return st.tuples(user, st.sampled_from(["x", "d=16", "d=abc", "d=-1", ""]) | json_scalars).map(list)
    if method == "mining.configure":
        exts = st.lists(st.sampled_from(["version-rolling", "minimum-difficulty", "subscribe-extranonce", "info"]) | json_scalars, max_size=4)
        opts = st.fixed_dictionaries(
            {},
            optional={
                "version-rolling.mask": hex8 | json_scalars,
                "version-rolling.min-bit-count": st.integers(-2, 40) | json_scalars,
                "minimum-difficulty.value": st.floats(0, 1e6) | json_scalars,
            },
        )
        return st.tuples(exts, opts).map(list)
    if method in ("mining.suggest_difficulty", "mining.suggest_target"):
        return st.lists(st.sampled_from(["0.500000", "1e-4", "00000000ffff" + "0" * 52]) | json_scalars, max_size=2)
    return st.lists(json_scalars, max_size=3)


@st.composite
def messages(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(json_values)  # anything at all
    if kind == 1:
        return {"id": draw(json_scalars), "result": draw(json_values), "error": draw(json_scalars)}  # a "reply"
    method = draw(st.sampled_from(METHODS) | st.text(max_size=10) | json_scalars)
    msg: dict[str, Any] = {"method": method}
    if draw(st.booleans()) or kind > 5:
        msg["id"] = draw(json_values)
    if draw(st.integers(0, 4)):
        params = draw(plausible_params(method) if isinstance(method, str) and draw(st.booleans()) else json_values)
        msg["params"] = params
    return msg


# ---- properties -----------------------------------------------------------------------------------------


@FUZZ
@given(st.lists(messages(), min_size=1, max_size=12), st.integers(min_value=1, max_value=97))
def test_random_message_sequences(msgs: list[Any], cut: int) -> None:
    h = Harness()
    lines = [json.dumps(m).encode() for m in msgs]
    stream = b"".join(line + b"\n" for line in lines)
    # Deliver in a few chunks of an arbitrary size, so lines also straddle reads.
    for i in range(0, len(stream), cut):
        h.feed(stream[i : i + cut])
    assert not h.fatal and not h.proto.closed
    assert [m["id"] for m in h.replies] == expected_replies(lines)
    for reply in h.replies:
        assert ("result" in reply) and ("error" in reply)
        assert reply["error"] is None or (isinstance(reply["error"], list) and len(reply["error"]) == 3 and reply["error"][0] in (20, 21, 22, 23, 24, 25))


@FUZZ
@given(st.lists(messages(), min_size=1, max_size=12))
def test_session_then_random_messages(msgs: list[Any]) -> None:
    """A subscribed, authorized session with a job: random traffic never breaks the ordering of replies."""
    h = Harness()
    handshake = [
        {"id": 1, "method": "mining.subscribe", "params": ["fuzz/1"]},
        {"id": 2, "method": "mining.authorize", "params": [USER, "x"]},
    ]
    lines = [json.dumps(m).encode() for m in handshake + msgs]
    h.feed(b"".join(line + b"\n" for line in lines))
    assert [m["id"] for m in h.replies] == expected_replies(lines)
    assert h.out[0]["id"] == 1 and h.out[0]["error"] is None


line_fragments = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [
            b'{"id":1,"method":"mining.subscribe","params":[]}\n',
            b'{"id":"a","method":"mining.ping"}\n',
            b'{"id":null,"method":"mining.suggest_difficulty","params":["0.5"]}\n',
            ('{"id":4,"method":"mining.submit","params":["' + USER + '","1","0000000000000001","' + NTIME + '","1"]}\n').encode(),
            ('{"id":2,"method":"mining.authorize","params":["' + USER + '","x"]}\n').encode(),
            b'{"id":9,"result":true,"error":null}\n',
            b"\r\n",
            b"\n",
            b"{",
            b"}\n",
            b"\xff\xfe",
            b"[" * 40,
            b"x" * 300,
        ]
    ),
)


@FUZZ
@given(st.lists(line_fragments, min_size=1, max_size=20))
def test_arbitrary_byte_chunks(chunks: list[bytes]) -> None:
    h = Harness(max_line=512)
    for chunk in chunks:
        h.feed(chunk)
        if h.proto.closed:
            break
    stream = b"".join(chunks)
    if h.proto.closed:
        # Closed for an oversized line: the last thing sent is the fatal error, and nothing follows it.
        assert h.fatal
        assert h.out[-1]["id"] is None and h.out[-1]["error"][0] == 20
        assert len(h.replies) <= len(expected_replies(stream.split(b"\n"))) + 1
        sent = len(h.out)
        h.feed(b'{"id":1,"method":"mining.ping"}\n')
        assert len(h.out) == sent
    else:
        complete = stream.split(b"\n")[:-1]
        assert [m["id"] for m in h.replies] == expected_replies(complete)
