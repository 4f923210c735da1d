"""The sans-IO Stratum core driven with bytes, as the miners in /work/shared/STRATUM.md talk to it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from pool.bitcoin.target import DIFF1_TARGET
from pool.mining.jobs import JobBook
from pool.mining.shares import Accepted, Reject, Rejected, check_submission
from pool.mining.workers import parse_worker
from pool.stratum.events import (
    Authorized,
    AuthorizeFailed,
    DifficultySuggested,
    Event,
    ProtocolError,
    ShareRefused,
    ShareSubmitted,
    Subscribed,
)
from pool.stratum.protocol import MAX_WORKERS_PER_SESSION, ProtocolConfig, StratumProtocol
from tests.unit.helpers import DIFF1, build_job, find_nonce, make_gbt, regtest_address

MAINNET_GBT = make_gbt(bits="17034219")  # mainnet-like: far above the difficulties these tests send

EN1 = bytes.fromhex("08000002")
SID = EN1.hex()
ADDR = regtest_address(1)
USER = f"{ADDR}.rig1"


def authorizer(username: str, password: str) -> Any:
    return parse_worker(username, password, "regtest")


def new_proto(**config: Any) -> StratumProtocol:
    return StratumProtocol(ProtocolConfig(**config), EN1, authorizer)


def line(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def req(req_id: Any, method: str, params: Any = None) -> bytes:
    msg: dict[str, Any] = {"id": req_id, "method": method}
    if params is not None:
        msg["params"] = params
    return line(msg)


Answer = Callable[[StratumProtocol, Event], None]


def drive(proto: StratumProtocol, *chunks: bytes, answer: Answer | None = None) -> tuple[list[Event], list[dict[str, Any]]]:
    """Feed chunks, drain events (answering each as a server would), return events and output messages."""
    events: list[Event] = []
    for chunk in chunks:
        proto.receive_data(chunk)
        while (event := proto.next_event()) is not None:
            events.append(event)
            if answer is not None:
                answer(proto, event)
    return events, output(proto)


def output(proto: StratumProtocol) -> list[dict[str, Any]]:
    data = proto.data_to_send()
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(raw) for raw in data.splitlines()]


def handshake(proto: StratumProtocol, user: str = USER) -> None:
    drive(proto, req(1, "mining.subscribe", ["test/1.0"]), req(2, "mining.authorize", [user, "x"]))


def is_error(msg: dict[str, Any], code: int) -> bool:
    return msg["result"] is None and isinstance(msg["error"], list) and msg["error"][0] == code and len(msg["error"]) == 3


# ---- subscribe / authorize ------------------------------------------------------------------------------


def test_subscribe_reply_shape() -> None:
    proto = new_proto()
    events, out = drive(proto, req(1, "mining.subscribe", ["cpuminer/2.5.1"]))
    assert out == [
        {
            "id": 1,
            "result": [[["mining.set_difficulty", SID], ["mining.notify", SID]], SID, 8],
            "error": None,
        }
    ]
    assert events == [Subscribed("cpuminer/2.5.1", None)]
    assert proto.subscribed


def test_subscribe_extranonce2_size_from_config() -> None:
    _, out = drive(new_proto(extranonce2_size=4), req(0, "mining.subscribe", []))
    assert out[0]["result"][2] == 4


@pytest.mark.parametrize(
    ("params", "ua", "resumed"),
    [
        (["cgminer/4.11.1", "deadbeef"], "cgminer/4.11.1", None),  # no resumer: a fresh session
        ([], "", None),
        (None, "", None),
        (["bOS_x", None, "pool.example:3333", None], "bOS_x", None),  # Braiins translator
        ([123], "", None),
        (["x" * 500], "x" * 128, None),
    ],
)
def test_subscribe_params_variants(params: Any, ua: str, resumed: str | None) -> None:
    events, out = drive(new_proto(), req(1, "mining.subscribe", params))
    assert events == [Subscribed(ua, resumed)]
    assert out[0]["error"] is None


def test_subscribe_resumes_session_when_allowed() -> None:
    asked: list[str] = []

    def resumer(sid: str) -> bytes | None:
        asked.append(sid)
        return bytes.fromhex(sid) if sid == "cafebabe" else None

    proto = StratumProtocol(ProtocolConfig(), EN1, authorizer, resumer)
    events, out = drive(proto, req(1, "mining.subscribe", ["cgminer/4.11.1", "CAFEBABE"]))
    assert events == [Subscribed("cgminer/4.11.1", "cafebabe")]
    assert asked == ["cafebabe"]
    assert proto.extranonce1 == bytes.fromhex("cafebabe")
    assert out[0]["result"] == [[["mining.set_difficulty", "cafebabe"], ["mining.notify", "cafebabe"]], "cafebabe", 8]


def test_subscribe_resume_refused_or_not_applicable() -> None:
    proto = StratumProtocol(ProtocolConfig(), EN1, authorizer, lambda sid: None)
    events, out = drive(proto, req(1, "mining.subscribe", ["cgminer/4.11.1", "01020304"]))
    assert events == [Subscribed("cgminer/4.11.1", None)]
    assert out[0]["result"][1] == SID
    # Overlong session ids are not even looked up; a second subscribe never switches extranonce1.
    asked: list[str] = []
    proto2 = StratumProtocol(ProtocolConfig(), EN1, authorizer, lambda sid: asked.append(sid) or bytes(4))
    drive(proto2, req(1, "mining.subscribe", ["x", "0" * 17]))
    assert asked == []
    drive(proto2, req(2, "mining.subscribe", ["x", "00000000"]))
    assert asked == [] and proto2.extranonce1 == EN1


def test_subscribe_reply_before_any_notification_nerdminer() -> None:
    """NerdMiner treats the first line it receives as the subscribe reply; authorize follows without waiting."""
    proto = new_proto()
    job = build_job()

    def server(p: StratumProtocol, e: Event) -> None:
        if isinstance(e, Authorized) and p.subscribed:
            p.set_difficulty(0.00015)
            p.send_job(job, True)

    _, out = drive(proto, req(1, "mining.subscribe", ["NerdMinerV2"]) + req(2, "mining.authorize", [USER, "x"]), answer=server)
    assert out[0]["id"] == 1 and out[0]["result"][1] == SID
    assert out[1] == {"id": 2, "result": True, "error": None}
    assert [m.get("method") for m in out[2:]] == ["mining.set_difficulty", "mining.notify"]


def test_bitaxe_back_to_back_handshake() -> None:
    proto = new_proto()
    job = build_job()

    def server(p: StratumProtocol, e: Event) -> None:
        if isinstance(e, Authorized):
            p.send_job(job, True)

    chunk = (
        req(1, "mining.configure", [["version-rolling"], {"version-rolling.mask": "ffffffff"}])
        + req(2, "mining.subscribe", ["bitaxe/BM1370/v2.9.0"])
        + req(3, "mining.authorize", [USER, "x"])
        + req(4, "mining.suggest_difficulty", [1000])
    )
    events, out = drive(proto, chunk, answer=server)
    replies = [m for m in out if "method" not in m]
    assert [m["id"] for m in replies] == [1, 2, 3, 4]
    first_notification = next(i for i, m in enumerate(out) if "method" in m)
    subscribe_reply = next(i for i, m in enumerate(out) if m.get("id") == 2)
    assert subscribe_reply < first_notification
    assert out[0]["result"] == {"version-rolling": True, "version-rolling.mask": "1fffe000"}
    assert DifficultySuggested(1000.0) in events


def test_authorize_ok_and_second_worker() -> None:
    proto = new_proto()
    events, out = drive(proto, req(1, "mining.subscribe", []), req(2, "mining.authorize", [USER, "x"]))
    assert out[1] == {"id": 2, "result": True, "error": None}
    auth = events[1]
    assert isinstance(auth, Authorized) and auth.first
    assert auth.worker.address == ADDR and auth.worker.name == "rig1"
    events, out = drive(proto, req(3, "mining.authorize", [f"{ADDR}.rig2", "d=512"]))
    assert out == [{"id": 3, "result": True, "error": None}]
    assert isinstance(events[0], Authorized) and not events[0].first
    assert events[0].worker.fixed_difficulty == 512.0
    assert set(proto.workers) == {USER, f"{ADDR}.rig2"}


@pytest.mark.parametrize(
    "params",
    [
        ["bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4.rig", "x"],  # mainnet address on a regtest pool
        ["garbage", "x"],
        [USER, "d=abc"],
        [USER, "d=-5"],
        [],
        [None, None],
        [42, "x"],
    ],
)
def test_authorize_failed(params: list[Any]) -> None:
    proto = new_proto()
    events, out = drive(proto, req("auth", "mining.authorize", params))
    assert len(out) == 1 and out[0]["id"] == "auth"
    assert is_error(out[0], 24)
    assert isinstance(events[0], AuthorizeFailed)
    assert proto.workers == {}


def test_too_many_workers() -> None:
    proto = new_proto()
    chunk = b"".join(req(i, "mining.authorize", [f"{ADDR}.w{i}", "x"]) for i in range(MAX_WORKERS_PER_SESSION + 1))
    events, out = drive(proto, chunk)
    assert all(m["result"] is True for m in out[:-1])
    assert is_error(out[-1], 24)
    assert isinstance(events[-1], AuthorizeFailed)
    assert len(proto.workers) == MAX_WORKERS_PER_SESSION
    # An already-authorized name may authorize again.
    _, out = drive(proto, req(99, "mining.authorize", [f"{ADDR}.w0", "x"]))
    assert out[0]["result"] is True


# ---- submit ---------------------------------------------------------------------------------------------


def submit(req_id: Any, *params: Any) -> bytes:
    return req(req_id, "mining.submit", list(params))


GOOD_SUBMIT = (USER, "1", "0000000000000001", "6553f100", "00000000")


def test_submit_before_subscribe_is_25() -> None:
    proto = new_proto()
    drive(proto, req(1, "mining.authorize", [USER, "x"]))
    events, out = drive(proto, submit(4, *GOOD_SUBMIT))
    assert is_error(out[0], 25) and out[0]["id"] == 4
    assert isinstance(events[0], ShareRefused) and events[0].rejected.reason is Reject.NOT_SUBSCRIBED


def test_submit_unauthorized_worker_is_24() -> None:
    proto = new_proto()
    handshake(proto)
    events, out = drive(proto, submit(4, f"{ADDR}.other", *GOOD_SUBMIT[1:]))
    assert is_error(out[0], 24)
    assert isinstance(events[0], ShareRefused) and events[0].rejected.reason is Reject.UNAUTHORIZED


@pytest.mark.parametrize(
    "params",
    [
        GOOD_SUBMIT[:4],
        (*GOOD_SUBMIT, "00000000", "extra"),
        (USER, "1", "0000000000000001", "6553f100", 0),
        (USER, "1", 1, "6553f100", "00000000"),
        (USER, "1", "0000000000000001", None, "00000000"),
        (USER, True, "0000000000000001", "6553f100", "00000000"),
        (USER, ["1"], "0000000000000001", "6553f100", "00000000"),
        (*GOOD_SUBMIT, 0),
    ],
)
def test_submit_wrong_params_is_20(params: tuple[Any, ...]) -> None:
    proto = new_proto()
    handshake(proto)
    events, out = drive(proto, submit(7, *params))
    assert len(out) == 1 and is_error(out[0], 20) and out[0]["id"] == 7
    assert isinstance(events[0], ShareRefused) and events[0].rejected.reason is Reject.MALFORMED


def test_submit_becomes_event_with_session_state() -> None:
    proto = new_proto()
    handshake(proto)
    events, out = drive(proto, submit(4, *GOOD_SUBMIT))
    assert out == []  # the server answers it
    (event,) = events
    assert isinstance(event, ShareSubmitted)
    assert event.request_id == 4
    assert event.worker.name == "rig1"
    assert event.submission.job_id == "1" and event.submission.nonce == "00000000"
    assert event.submission.version_bits is None
    assert event.difficulty == 1.0 and event.version_mask == 0


def test_integer_job_id_is_read_as_hex() -> None:
    proto = new_proto()
    handshake(proto)
    events, _ = drive(proto, submit(4, USER, 31, *GOOD_SUBMIT[2:]))
    assert isinstance(events[0], ShareSubmitted) and events[0].submission.job_id == "1f"


def test_sixth_param_without_negotiated_rolling() -> None:
    proto = new_proto()
    handshake(proto)
    events, out = drive(proto, submit(4, *GOOD_SUBMIT, "00000000"))
    assert isinstance(events[0], ShareSubmitted) and events[0].submission.version_bits is None
    events, out = drive(proto, submit(5, *GOOD_SUBMIT, "00002000"))
    assert is_error(out[0], 20)
    assert isinstance(events[0], ShareRefused) and events[0].rejected.reason is Reject.BAD_VERSION


def test_sixth_param_with_negotiated_rolling() -> None:
    proto = new_proto()
    drive(proto, req(0, "mining.configure", [["version-rolling"], {"version-rolling.mask": "ffffffff"}]))
    handshake(proto)
    events, _ = drive(proto, submit(4, *GOOD_SUBMIT, "00002000"))
    assert isinstance(events[0], ShareSubmitted)
    assert events[0].submission.version_bits == "00002000"
    assert events[0].version_mask == 0x1FFFE000


# ---- ids, unknown methods, bad input --------------------------------------------------------------------


@pytest.mark.parametrize("req_id", [0, 1, 2**40, "auth", "xnsub", "", None, 1.5, -3, True, [1, "a"], {"k": "v"}])
def test_ids_echoed_verbatim(req_id: Any) -> None:
    proto = new_proto()
    _, out = drive(proto, req(req_id, "mining.ping"))
    assert out == [{"id": req_id, "result": "pong", "error": None}]
    _, out = drive(proto, req(req_id, "mining.nonexistent"))
    assert out[0]["id"] == req_id and is_error(out[0], 20)


def test_missing_id_answered_with_null() -> None:
    _, out = drive(new_proto(), b'{"method":"mining.ping"}\n')
    assert out == [{"id": None, "result": "pong", "error": None}]


def test_unknown_method() -> None:
    events, out = drive(new_proto(), req(9, "mining.foo", []))
    assert is_error(out[0], 20) and out[0]["id"] == 9
    assert isinstance(events[0], ProtocolError) and not events[0].fatal


@pytest.mark.parametrize(
    "bad",
    [b"{not json", b"[1,2,3]", b'"string"', b"42", b"\xff\xfe\xfd", b'{"id":5}', b'{"id":5,"method":7}', b"null"],
)
def test_bad_requests_answered_and_connection_usable(bad: bytes) -> None:
    proto = new_proto()
    events, out = drive(proto, bad + b"\n" + req(2, "mining.ping"))
    assert len(out) == 2
    assert is_error(out[0], 20)
    assert out[1] == {"id": 2, "result": "pong", "error": None}
    assert isinstance(events[0], ProtocolError) and not events[0].fatal
    assert not proto.closed


@pytest.mark.parametrize("params", ['"abc"', "5", "true"])
def test_params_must_be_array(params: str) -> None:
    _, out = drive(new_proto(), b'{"id":3,"method":"mining.subscribe","params":' + params.encode() + b"}\n")
    assert out[0]["id"] == 3 and is_error(out[0], 20)


def test_null_params_are_empty() -> None:
    events, out = drive(new_proto(), b'{"id":3,"method":"mining.subscribe","params":null}\n')
    assert out[0]["error"] is None
    assert isinstance(events[0], Subscribed)


def test_replies_from_the_miner_are_ignored() -> None:
    events, out = drive(
        new_proto(),
        line({"id": 50, "result": "cpuminer-opt/26.1", "error": None}),
        line({"id": 51, "result": None, "error": [20, "x", None]}),
    )
    assert events == [] and out == []


def test_oversized_line_is_fatal() -> None:
    proto = new_proto(max_line=1024)
    events, out = drive(proto, req(1, "mining.ping"), b"x" * 2000)
    assert out[0] == {"id": 1, "result": "pong", "error": None}
    assert is_error(out[1], 20) and out[1]["id"] is None
    assert events == [ProtocolError(events[0].reason, fatal=True)]  # type: ignore[union-attr]
    assert proto.closed
    # Nothing more is processed or sent once closed.
    events, out = drive(proto, req(2, "mining.ping"))
    assert events == [] and out == []


def test_oversized_line_with_newline_is_fatal() -> None:
    proto = new_proto(max_line=1024)
    events, out = drive(proto, b'{"id":1,"method":"mining.ping","params":["' + b"a" * 2000 + b'"]}\n')
    assert len(events) == 1 and isinstance(events[0], ProtocolError) and events[0].fatal
    assert proto.closed
    assert len(out) == 1 and is_error(out[0], 20)


def test_line_split_across_reads() -> None:
    proto = new_proto()
    raw = req(1, "mining.subscribe", ["x"])
    events, out = drive(proto, raw[:10], raw[10:25], raw[25:])
    assert len(events) == 1 and out[0]["id"] == 1


def test_deeply_nested_json_does_not_raise() -> None:
    proto = new_proto()
    events, out = drive(proto, b"[" * 5000 + b"\n" + req(2, "mining.ping"))
    assert isinstance(events[0], ProtocolError)
    assert out[-1] == {"id": 2, "result": "pong", "error": None}


def _strict_loads(raw: bytes) -> Any:
    def reject(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(raw, parse_constant=reject)


@pytest.mark.parametrize("raw_id", [b"1e400", b"-1e400", b"NaN", b"Infinity"])
def test_reply_is_valid_json_for_non_finite_ids(raw_id: bytes) -> None:
    proto = new_proto()
    proto.receive_data(b'{"id":' + raw_id + b',"method":"mining.ping"}\n')
    while proto.next_event() is not None:
        pass
    lines = proto.data_to_send().splitlines()
    assert len(lines) == 1, lines  # exactly one answer: silence would pass a loop over no lines
    reply = _strict_loads(lines[0])
    assert reply["id"] is None and reply["result"] is None and reply["error"], reply


# ---- configure ------------------------------------------------------------------------------------------


def configure(proto: StratumProtocol, extensions: list[Any], options: dict[str, Any]) -> tuple[list[Event], dict[str, Any]]:
    events, out = drive(proto, req(0, "mining.configure", [extensions, options]))
    assert len(out) == 1 and out[0]["id"] == 0 and out[0]["error"] is None
    return events, out[0]["result"]


def test_version_rolling_full_mask_gets_pool_mask() -> None:
    proto = new_proto()
    _, result = configure(proto, ["version-rolling"], {"version-rolling.mask": "ffffffff"})
    assert result == {"version-rolling": True, "version-rolling.mask": "1fffe000"}
    assert proto.version_mask == 0x1FFFE000


def test_version_rolling_default_mask_when_not_given() -> None:
    proto = new_proto()
    _, result = configure(proto, ["version-rolling"], {})
    assert result["version-rolling.mask"] == "1fffe000"


def test_braiins_translator_exact_mask() -> None:
    proto = new_proto()
    _, result = configure(
        proto, ["version-rolling"], {"version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 16}
    )
    assert result == {"version-rolling": True, "version-rolling.mask": "1fffe000"}


def test_antminer_mask_and_min_bits() -> None:
    proto = new_proto()
    _, result = configure(proto, ["version-rolling"], {"version-rolling.mask": "00c00000", "version-rolling.min-bit-count": 2})
    assert result == {"version-rolling": True, "version-rolling.mask": "00c00000"}
    assert proto.version_mask == 0x00C00000


@pytest.mark.parametrize(
    "options",
    [
        {"version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 17},
        {"version-rolling.mask": "e0001fff"},
        {"version-rolling.mask": "00000000"},
        {"version-rolling.mask": "zz"},
    ],
)
def test_version_rolling_refused(options: dict[str, Any]) -> None:
    proto = new_proto()
    _, result = configure(proto, ["version-rolling"], options)
    assert result["version-rolling"] is False
    assert "version-rolling.mask" not in result
    assert proto.version_mask == 0


def test_pool_mask_from_config() -> None:
    proto = new_proto(pool_version_mask=0x00FFE000)
    _, result = configure(proto, ["version-rolling"], {"version-rolling.mask": "1fffffff"})
    assert result["version-rolling.mask"] == "00ffe000"


def test_braiins_os_unknown_extensions_answered_false() -> None:
    proto = new_proto()
    _, result = configure(
        proto,
        ["version-rolling", "sp-telemetry", "info"],
        {"version-rolling.mask": "ffffffff", "info.connection-url": "x", "sp-telemetry.enabled": True},
    )
    assert result == {
        "version-rolling": True,
        "version-rolling.mask": "1fffe000",
        "sp-telemetry": False,
        "info": False,
    }


def test_minimum_difficulty_extension() -> None:
    proto = new_proto()
    events, result = configure(proto, ["minimum-difficulty"], {"minimum-difficulty.value": 2048})
    assert result == {"minimum-difficulty": True}
    assert events == [DifficultySuggested(2048.0, minimum=True)]
    assert proto.minimum_difficulty == 2048.0
    events, result = configure(new_proto(), ["minimum-difficulty"], {"minimum-difficulty.value": "bad"})
    assert result == {"minimum-difficulty": False}
    assert events == []


def test_subscribe_extranonce_extension() -> None:
    proto = new_proto()
    _, result = configure(proto, ["subscribe-extranonce"], {})
    assert result == {"subscribe-extranonce": True}
    assert proto.extranonce_subscribed


def test_configure_after_authorize() -> None:
    proto = new_proto()
    handshake(proto)
    _, result = configure(proto, ["version-rolling"], {"version-rolling.mask": "00c00000", "version-rolling.min-bit-count": 2})
    assert result["version-rolling"] is True


@pytest.mark.parametrize("params", [[], None, ["version-rolling"], [[1, None, {}], "x"]])
def test_configure_odd_params(params: Any) -> None:
    _, out = drive(new_proto(), req(0, "mining.configure", params))
    assert out[0]["id"] == 0 and out[0]["error"] is None and isinstance(out[0]["result"], dict)


# ---- difficulty hints, extranonce.subscribe, ping (get_transactions: test_protocol_budget.py) ------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1000, 1000.0), ("0.500000", 0.5), (0.00015, 0.00015), ("1e-4", 0.0001), (2.5, 2.5)],
)
def test_suggest_difficulty(value: Any, expected: float) -> None:
    proto = new_proto()  # before subscribe and authorize: accepted any time
    events, out = drive(proto, req(7, "mining.suggest_difficulty", [value]))
    assert out == [{"id": 7, "result": True, "error": None}]
    assert events == [DifficultySuggested(expected)]


@pytest.mark.parametrize("method, value", [("mining.suggest_difficulty", 1000), ("mining.suggest_target", "ff" * 28)])
def test_difficulty_hint_with_null_id_is_a_notification(method: str, value: Any) -> None:
    """bfgminer sends suggest_target with id null before subscribing and reads the next line as its
    subscribe reply: a hint without an id must not be answered, though it still takes effect."""
    events, out = drive(new_proto(), req(None, method, [value]))
    assert out == []
    assert isinstance(events[0], DifficultySuggested)


@pytest.mark.parametrize("value", ["abc", -1, 0, True, "nan", "inf", None, [1]])
def test_suggest_difficulty_invalid(value: Any) -> None:
    events, out = drive(new_proto(), req(3, "mining.suggest_difficulty", [value]))
    assert is_error(out[0], 20) and out[0]["id"] == 3
    assert isinstance(events[0], ProtocolError) and not events[0].fatal


def test_suggest_difficulty_without_params() -> None:
    _, out = drive(new_proto(), req(3, "mining.suggest_difficulty", []))
    assert is_error(out[0], 20)


def test_suggest_target() -> None:
    diff1_hex = f"{DIFF1_TARGET:064x}"
    assert diff1_hex == "00000000ffff0000000000000000000000000000000000000000000000000000"
    events, out = drive(new_proto(), req(5, "mining.suggest_target", [diff1_hex]))
    assert out == [{"id": 5, "result": True, "error": None}]
    assert events == [DifficultySuggested(1.0)]
    events, _ = drive(new_proto(), req(5, "mining.suggest_target", [f"{DIFF1 * 4:064x}"]))
    assert events == [DifficultySuggested(0.25)]


@pytest.mark.parametrize("value", ["", "zz", "0" * 64, "f" * 65, 5, None])
def test_suggest_target_invalid(value: Any) -> None:
    _, out = drive(new_proto(), req(5, "mining.suggest_target", [value]))
    assert is_error(out[0], 20)


def test_extranonce_subscribe() -> None:
    proto = new_proto()
    events, out = drive(proto, req("xnsub", "mining.extranonce.subscribe", []))
    assert out == [{"id": "xnsub", "result": True, "error": None}]
    assert events == []
    assert proto.extranonce_subscribed


def test_ping() -> None:
    _, out = drive(new_proto(), req(8, "mining.ping", []))
    assert out == [{"id": 8, "result": "pong", "error": None}]


# ---- sending work ---------------------------------------------------------------------------------------


def test_send_job_difficulty_only_when_changed() -> None:
    proto = new_proto(start_difficulty=1.0)
    handshake(proto)
    job1, job2, job3 = (build_job(MAINNET_GBT, job_id=i) for i in ("1", "2", "3"))
    proto.send_job(job1, True)
    out = output(proto)
    assert out == [
        {"id": None, "method": "mining.set_difficulty", "params": [1.0]},
        {"id": None, "method": "mining.notify", "params": job1.notify_params(True)},
    ]
    proto.send_job(job2, False)
    assert output(proto) == [{"id": None, "method": "mining.notify", "params": job2.notify_params(False)}]
    proto.set_difficulty(0.001)
    assert output(proto) == []  # takes effect with the next job
    proto.send_job(job3, True)
    assert output(proto) == [
        {"id": None, "method": "mining.set_difficulty", "params": [0.001]},
        {"id": None, "method": "mining.notify", "params": job3.notify_params(True)},
    ]
    assert proto.current_job is job3


def test_difficulty_never_exceeds_the_jobs_network_difficulty() -> None:
    """Miners submit only hashes meeting the share target: a share target harder than the block target
    (regtest, testnet min-difficulty, signet) would hide every block from the pool."""
    proto = new_proto(start_difficulty=1024.0)
    handshake(proto)
    regtest_job = build_job(job_id="r")  # bits 207fffff: network difficulty ~4.66e-10
    proto.send_job(regtest_job, True)
    out = output(proto)
    assert out[0] == {"id": None, "method": "mining.set_difficulty", "params": [regtest_job.network_difficulty]}
    assert regtest_job.network_difficulty < 1e-9
    events, _ = drive(proto, submit(4, USER, "r", *GOOD_SUBMIT[2:]))
    assert [e.difficulty for e in events if isinstance(e, ShareSubmitted)] == [regtest_job.network_difficulty]
    # On an easier-than-pool network the pool's difficulty applies again, and set_difficulty follows.
    mainnet_job = build_job(MAINNET_GBT, job_id="m")
    proto.send_job(mainnet_job, True)
    assert output(proto)[0] == {"id": None, "method": "mining.set_difficulty", "params": [1024.0]}


def test_alias_resend_judges_under_the_book_job_with_its_own_difficulty() -> None:
    proto = new_proto(start_difficulty=16.0)
    handshake(proto)
    job = build_job(MAINNET_GBT, job_id="a")
    proto.send_job(job, True)
    proto.set_difficulty(64.0)
    proto.send_job(job, False, alias="b7")
    notifies = [m for m in output(proto) if m.get("method") == "mining.notify"]
    assert [n["params"][0] for n in notifies] == ["a", "b7"]
    assert notifies[1]["params"][1:8] == notifies[0]["params"][1:8]  # the same work
    events, _ = drive(proto, submit(4, USER, "a", *GOOD_SUBMIT[2:]), submit(5, USER, "b7", *GOOD_SUBMIT[2:]))
    shares = [e for e in events if isinstance(e, ShareSubmitted)]
    assert [(e.submission.job_id, e.difficulty) for e in shares] == [("a", 16.0), ("a", 64.0)]


def test_alias_memory_is_bounded_whatever_the_hint_count() -> None:
    proto = new_proto(start_difficulty=16.0)
    handshake(proto)
    job = build_job(MAINNET_GBT, job_id="a")
    for i in range(5000):
        proto.set_difficulty(16.0 + i)
        proto.send_job(job, False, alias=f"{i + 100:x}")
    output(proto)
    assert len(proto._sent_jobs) == 64  # the bound itself is the behaviour under test


def test_payout_address_cap_per_connection() -> None:
    proto = new_proto(max_payout_addresses=2)
    drive(proto, req(1, "mining.subscribe", []))
    a, b, c = (regtest_address(i) for i in (1, 2, 3))
    _, out = drive(
        proto,
        req(2, "mining.authorize", [f"{a}.w1", "x"]),
        req(3, "mining.authorize", [f"{a}.w2", "x"]),  # same address: no new coinbase needed
        req(4, "mining.authorize", [f"{b}.w1", "x"]),
        req(5, "mining.authorize", [f"{c}.w1", "x"]),
    )
    assert [m["result"] for m in out[-4:-1]] == [True, True, True]
    assert out[-1]["error"][0] == 24 and "payout addresses" in out[-1]["error"][1]


def test_notify_params_are_json_encodable_as_given() -> None:
    proto = new_proto()
    job = build_job(job_id="abc")
    proto.send_job(job, True)
    notify = output(proto)[-1]
    assert notify["params"][0] == "abc"
    assert notify["params"][-1] is True
    assert all(isinstance(p, str) for p in notify["params"][1:4] + notify["params"][5:8])


def test_share_for_older_job_keeps_its_difficulty() -> None:
    proto = new_proto(start_difficulty=16.0)
    handshake(proto)
    proto.send_job(build_job(MAINNET_GBT, job_id="a"), True)
    proto.set_difficulty(4.0)
    proto.send_job(build_job(MAINNET_GBT, job_id="b"), True)
    output(proto)
    events, _ = drive(
        proto,
        submit(4, USER, "a", *GOOD_SUBMIT[2:]),
        submit(4, USER, "b", *GOOD_SUBMIT[2:]),
        submit(4, USER, "zz", *GOOD_SUBMIT[2:]),
    )
    assert [e.difficulty for e in events if isinstance(e, ShareSubmitted)] == [16.0, 4.0, 4.0]


def test_notifications_and_messages() -> None:
    proto = new_proto()
    proto.send_reconnect("pool.example", 3333, 5)
    proto.show_message("hello")
    assert output(proto) == [
        {"id": None, "method": "client.reconnect", "params": ["pool.example", 3333, 5]},
        {"id": None, "method": "client.show_message", "params": ["hello"]},
    ]
    assert proto.data_to_send() == b""


def test_set_extranonce_only_for_subscribed_miners() -> None:
    proto = new_proto()
    handshake(proto)
    assert proto.set_extranonce(bytes.fromhex("0a0b0c0d")) is False
    assert output(proto) == [] and proto.extranonce1 == EN1
    drive(proto, req(3, "mining.extranonce.subscribe", []))
    proto.send_job(build_job(job_id="a"), True)
    output(proto)
    assert proto.set_extranonce(bytes.fromhex("0a0b0c0d")) is True
    assert proto.extranonce1 == bytes.fromhex("0a0b0c0d")
    assert output(proto) == [{"id": None, "method": "mining.set_extranonce", "params": ["0a0b0c0d", 8]}]


def test_set_pool_version_mask_notifies_rolling_miners() -> None:
    proto = new_proto()
    configure(proto, ["version-rolling"], {"version-rolling.mask": "1fffe000"})
    assert proto.set_pool_version_mask(0x00FFE000) == 0x00FFE000
    assert proto.version_mask == 0x00FFE000
    assert output(proto) == [{"id": None, "method": "mining.set_version_mask", "params": ["00ffe000"]}]
    # A miner that never negotiated rolling hears nothing.
    other = new_proto()
    assert other.set_pool_version_mask(0x00FFE000) == 0
    assert output(other) == []


def test_client_get_version_round_trip() -> None:
    proto = new_proto()
    proto.request_client_version()
    (request,) = output(proto)
    assert request["method"] == "client.get_version" and request["params"] == []
    assert isinstance(request["id"], int)
    events, out = drive(proto, line({"id": request["id"], "result": "cpuminer-opt/26.1", "error": None}))
    assert events == [] and out == []
    assert proto.client_version == "cpuminer-opt/26.1"
    # A reply with an id we never used changes nothing.
    drive(proto, line({"id": 12345, "result": "spoofed", "error": None}))
    assert proto.client_version == "cpuminer-opt/26.1"


def test_answer_error() -> None:
    proto = new_proto()
    proto.answer_error(4, 20, "Share not recorded")
    assert output(proto) == [{"id": 4, "result": None, "error": [20, "Share not recorded", None]}]


# ---- ordering with a shared submit id (cpuminer) --------------------------------------------------------


def test_submits_answered_in_order_with_same_id() -> None:
    en2 = "0000000000000001"
    gbt = make_gbt(n_txs=2, bits="1d00ffff")
    job = build_job(gbt, job_id="1", en_total=len(EN1) + 8)
    book = JobBook()
    book.add(job)
    proto = new_proto(start_difficulty=1e-8)
    handshake(proto)
    proto.send_job(job, True)
    output(proto)
    params = job.notify_params(True)
    share_target = int(DIFF1 / 1e-8)
    good = find_nonce(params, EN1, bytes.fromhex(en2), job.ntime, lambda v: v <= share_target)
    low = find_nonce(params, EN1, bytes.fromhex(en2), job.ntime, lambda v: v > share_target * 2)
    ntime = f"{job.ntime:08x}"
    chunk = (
        submit(4, USER, "1", en2, ntime, f"{good:08x}")  # server: accepted
        + submit(4, f"{ADDR}.nobody", "1", en2, ntime, "00000000")  # core: 24
        + submit(4, USER, "1", en2, ntime, f"{good:08x}")  # server: duplicate 22
        + submit(4, USER, "1", en2, ntime)  # core: 20
        + submit(4, USER, "1", en2, ntime, f"{low:08x}")  # server: low difficulty 23
        + req(4, "mining.ping")  # core: pong
        + submit(4, USER, "99", en2, ntime, "00000000")  # server: unknown job 21
    )
    results: list[Any] = []

    def server(p: StratumProtocol, e: Event) -> None:
        if isinstance(e, ShareSubmitted):
            result = check_submission(e.submission, book, p.extranonce1, 8, e.difficulty, e.version_mask, job.ntime)
            results.append(result)
            p.answer_submit(e.request_id, result)

    _, out = drive(proto, chunk, answer=server)
    assert [m["id"] for m in out] == [4] * 7
    summary = [m["result"] if m["error"] is None else m["error"][0] for m in out]
    assert summary == [True, 24, 22, 20, 23, "pong", 21]
    assert isinstance(results[0], Accepted)
    assert [r.reason for r in results[1:]] == [Reject.DUPLICATE, Reject.LOW_DIFFICULTY, Reject.UNKNOWN_JOB]


def test_answer_submit_shapes() -> None:
    proto = new_proto()
    proto.answer_submit(4, Rejected(Reject.STALE))
    proto.answer_submit(4, Rejected(Reject.NOT_SUBSCRIBED))
    out = output(proto)
    assert out[0] == {"id": 4, "result": None, "error": [21, "Stale job", None]}
    assert out[1]["error"][0] == 25


def test_notify_line_is_serialized_once_per_job_and_shared_by_sessions() -> None:
    job = build_job(MAINNET_GBT, job_id="s1")
    sessions = [new_proto(start_difficulty=2.0) for _ in range(3)]
    for proto in sessions:
        handshake(proto)
        output(proto)
        proto.send_job(job, True)
    lines = [proto.data_to_send().splitlines()[-1] + b"\n" for proto in sessions]
    assert lines[0] == lines[1] == lines[2]
    assert json.loads(lines[0]) == {"id": None, "method": "mining.notify", "params": job.notify_params(True)}
    assert job.notify_line(True) is job.notify_line(True)  # built once, reused
    assert json.loads(job.notify_line(False))["params"][8] is False


def test_deferred_replies_leave_in_request_order() -> None:
    """Accepted shares are answered after their ledger commit; replies behind them wait, whatever settles first."""
    from pool.mining.shares import Reject, Rejected

    proto = new_proto()
    handshake(proto)
    output(proto)
    first = proto.defer_reply()
    proto.answer(7, "pong")  # a later request, answered at once
    second = proto.defer_reply()
    assert proto.data_to_send() == b"" and proto.deferred == 2
    proto.settle(second, 9, Rejected(Reject.LEDGER_FAILED))
    assert proto.data_to_send() == b""  # still held behind the first
    proto.settle(first, 8, Rejected(Reject.DUPLICATE))
    assert [(m["id"], m.get("error")) for m in output(proto)] == [
        (8, [22, "Duplicate share", None]),
        (7, None),
        (9, [20, "Share not recorded, please resubmit", None]),
    ]
    assert proto.deferred == 0 and proto.pending_output == 0
    proto.answer(10, "pong")
    assert output(proto) == [{"id": 10, "result": "pong", "error": None}]


@pytest.mark.parametrize("req_id", [0, 7, -3, 2**63, -(2**70), "abc", "é", None, 1.5, True, [1, 2]])
def test_submit_replies_are_the_bytes_the_json_encoder_gives(req_id: Any) -> None:
    """Submit replies for integer ids are spliced from bytes made once; they must equal the encoder's."""
    import json

    from pool.mining.shares import Accepted, Reject, Rejected
    from pool.stratum.protocol import _submit_reply

    def encoded(obj: dict[str, Any]) -> bytes:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode() + b"\n"

    for reason in Reject:
        code, message = Rejected(reason).error
        assert _submit_reply(req_id, Rejected(reason)) == encoded(
            {"id": req_id, "result": None, "error": [code, message, None]})
    accepted = object.__new__(Accepted)  # only its kind matters to the reply
    assert _submit_reply(req_id, accepted) == encoded({"id": req_id, "result": True, "error": None})


@pytest.mark.parametrize("line", [
    b'{"id":1,"method":"mining.submit","params":["a.b","1","00","5b2b2b2b","8a3f0c21"]}',
    b'{"id":123456789012345678901234567890,"method":"mining.ping","params":[]}',
    b'{"id":[-9223372036854775809],"method":"mining.subscribe"}',
    b'{"id":"x","method":"mining.suggest_difficulty","params":[0.5]}',
    b'{"id":2,"method":"mining.suggest_difficulty","params":[1e400]}',
    b'{"id":3,"method":"mining.configure","params":[["version-rolling"],{"version-rolling.mask":"1fffe000"}]}',
    b'{"id":1.0,"method":"mining.ping"}',
    b'{"id":NaN}', b'{"id":"\\ud800"}', b'[1,2]', b'"text"', b'{"id":4,"params":null,"method":"mining.ping"}',
])
def test_request_lines_decode_as_the_standard_decoder_does(line: bytes) -> None:
    """orjson reads request lines first; whatever it could read differently goes to json, so the outcome
    (a value, or an error) is always the standard decoder's."""
    import json

    from pool.stratum.protocol import _finite_float, _loads, _reject_constant

    try:
        expected: Any = json.loads(line, parse_constant=_reject_constant, parse_float=_finite_float)
    except ValueError:
        expected = ValueError
    try:
        got: Any = _loads(line)
    except ValueError:
        got = ValueError
    assert got == expected and type(got) is type(expected)
