"""Misbehaving servers x transports: never the wrong answer, never a request
processed twice.

Each scenario runs against the stdlib, urllib3 and trio transports, over
real TLS on loopback (:mod:`tests.adapters.hostile`).  It asserts what the
caller gets (its own answer, identified by the id the server echoes, or a
:class:`~cfauth.TransportFailure`), and what the server saw: how many times
each request id arrived.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from cfauth import OutcomeUnknown, Response, TransportFailure

from .hostile import (
    KINDS,
    Caller,
    Close,
    Drip,
    Hostile,
    Outcome,
    Received,
    Send,
    Signal,
    Sleep,
    Step,
    answer,
    body_id,
)

pytest.importorskip("urllib3")
pytest.importorskip("trio")


def delivered(outcome: Outcome, rid: str) -> None:
    """The caller got its own complete answer."""
    assert isinstance(outcome, Response), outcome
    assert outcome.status == 200
    assert body_id(outcome) == rid


def failed(outcome: Outcome) -> TransportFailure:
    """The caller got a transport failure, not a response."""
    assert isinstance(outcome, TransportFailure), outcome
    return outcome


Scenario = Callable[[Caller, Hostile], None]
SCENARIOS: dict[str, tuple[Scenario, dict[str, Any]]] = {}


def scenario(**options: Any) -> Callable[[Scenario], Scenario]:
    def register(function: Scenario) -> Scenario:
        SCENARIOS[function.__name__] = (function, options)
        return function

    return register


def misbehave_on(
    rid: str, steps: Callable[[Received], list[Step]]
) -> Callable[[Received], list[Step]]:
    """A plan: ``steps`` for the request ``rid``, a correct answer for the others."""

    def plan(request: Received) -> list[Step]:
        if request.rid == rid:
            return steps(request)
        return [Send(answer(request.rid))]

    return plan


def fails_between_good_calls(c: Caller, s: Hostile, method: str = "GET") -> TransportFailure:
    """``a`` is answered (the connection is kept), ``b`` misbehaves on it, and
    ``c`` still gets its own answer; each arrived once."""
    delivered(c.call("GET", "a"), "a")
    failure = failed(c.call(method, "b", body=b"x" if method == "POST" else None))
    delivered(c.call("GET", "c"), "c")
    assert (s.processed("a"), s.processed("b"), s.processed("c")) == (1, 1, 1)
    return failure


# -- 1. responses cut short -----------------------------------------------------------

for how in ("notify", "eof", "reset"):

    def headers_cut(c: Caller, s: Hostile, how: str = how) -> None:
        s.plan = misbehave_on(
            "b", lambda r: [Send(b"HTTP/1.1 200 OK\r\nContent-Type: appl"), Close(how)]
        )
        fails_between_good_calls(c, s)

    def body_short(c: Caller, s: Hostile, how: str = how) -> None:
        cut = answer("b")[:-10]  # Content-Length says 10 bytes more
        s.plan = misbehave_on("b", lambda r: [Send(cut), Close(how)])
        fails_between_good_calls(c, s)

    headers_cut.__name__ = f"headers_cut_{how}"
    body_short.__name__ = f"body_short_{how}"
    scenario()(headers_cut)
    scenario()(body_short)


@scenario()
def status_line_cut(c: Caller, s: Hostile) -> None:
    s.plan = misbehave_on("b", lambda r: [Send(b"HTTP/1.1 20"), Close("notify")])
    fails_between_good_calls(c, s)


@scenario()
def chunked_body_cut(c: Caller, s: Hostile) -> None:
    cut = answer("b", framing="chunked")[:-12]
    s.plan = misbehave_on("b", lambda r: [Send(cut), Close("notify")])
    fails_between_good_calls(c, s)


@scenario()
def unframed_body_ended_without_close_notify(c: Caller, s: Hostile) -> None:
    # the whole body, but a TCP close without TLS close_notify: it may be cut
    s.plan = misbehave_on("b", lambda r: [Send(answer("b", framing="close")), Close("eof")])
    fails_between_good_calls(c, s)


@scenario()
def unframed_body_ended_with_close_notify(c: Caller, s: Hostile) -> None:
    s.plan = misbehave_on("b", lambda r: [Send(answer("b", framing="close")), Close("notify")])
    delivered(c.call("GET", "a"), "a")
    delivered(c.call("GET", "b"), "b")
    delivered(c.call("GET", "c"), "c")
    assert (s.processed("a"), s.processed("b"), s.processed("c")) == (1, 1, 1)


# -- 2. interim responses ---------------------------------------------------------------

EARLY = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    b"HTTP/1.1 102 Processing\r\n\r\n"
)


@scenario()
def interim_responses_are_skipped(c: Caller, s: Hostile) -> None:
    s.plan = lambda r: [Send(EARLY + answer(r.rid))]
    for rid in ("a", "b", "c"):
        delivered(c.call("GET", rid), rid)
        assert s.processed(rid) == 1
    assert s.connections == 1


@scenario()
def early_hints_before_a_token_answer(c: Caller, s: Hostile) -> None:
    s.plan = lambda r: [Send(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + answer(r.rid))]
    delivered(c.call("POST", "a", path="/oauth/token/", body=b"grant_type=x"), "a")
    delivered(c.call("GET", "b"), "b")


# -- 3. bytes nobody asked for ------------------------------------------------------------


def surplus_then_good_calls(c: Caller, s: Hostile, first: bytes) -> None:
    s.plan = misbehave_on("a", lambda r: [Send(first)])
    delivered(c.call("GET", "a"), "a")
    delivered(c.call("GET", "b"), "b")
    delivered(c.call("GET", "c"), "c")
    assert (s.processed("a"), s.processed("b"), s.processed("c")) == (1, 1, 1)
    assert s.processed("bogus") == 0


@scenario()
def second_response_appended(c: Caller, s: Hostile) -> None:
    surplus_then_good_calls(c, s, answer("a") + answer("bogus"))


def sized(rid: str, total: int) -> bytes:
    """An answer of exactly ``total`` bytes."""
    pad = total - len(answer(rid))
    while len(answer(rid, pad=pad)) > total:  # the Content-Length grew a digit
        pad -= 1
    data = answer(rid, pad=pad)
    assert len(data) == total
    return data


for size in (8192, 16384, 65536):

    def surplus_after_exact_size(c: Caller, s: Hostile, size: int = size) -> None:
        surplus_then_good_calls(c, s, sized("a", size) + answer("bogus"))

    surplus_after_exact_size.__name__ = f"surplus_after_{size}_bytes"
    scenario()(surplus_after_exact_size)


@scenario()
def body_longer_than_declared(c: Caller, s: Hostile) -> None:
    surplus_then_good_calls(c, s, answer("a") + b"more than the Content-Length said")


def idle_then(c: Caller, s: Hostile, later: list[Step]) -> None:
    done = threading.Event()
    s.plan = misbehave_on("a", lambda r: [Send(answer("a")), Sleep(0.05), *later, Signal(done)])
    delivered(c.call("GET", "a"), "a")
    assert done.wait(5)
    delivered(c.call("GET", "b"), "b")
    delivered(c.call("GET", "c"), "c")
    assert (s.processed("a"), s.processed("b"), s.processed("c")) == (1, 1, 1)


REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 7\r\n\r\ntimeout"
)


@scenario()
def request_timeout_408_then_close_on_an_idle_connection(c: Caller, s: Hostile) -> None:
    idle_then(c, s, [Send(REQUEST_TIMEOUT), Close("notify")])


@scenario()
def unsolicited_response_on_an_idle_connection(c: Caller, s: Hostile) -> None:
    idle_then(c, s, [Send(answer("bogus"))])


@scenario()
def server_speaks_first(c: Caller, s: Hostile) -> None:
    # HTTP/1.1 cannot tell an answer sent before the request from the
    # request's answer: the first call may read it.  What must hold: that
    # connection is not used again, every later call gets its own answer, and
    # nothing is sent twice.
    answered = threading.Event()
    s.greet = lambda number: [Send(answer("bogus"))] if number == 1 else []
    s.plan = lambda r: [Send(answer(r.rid)), Signal(answered)]
    first = c.call("GET", "a")
    assert body_id(first) in ("a", "bogus")
    assert answered.wait(5)
    delivered(c.call("GET", "b"), "b")
    delivered(c.call("GET", "c"), "c")
    assert (s.processed("a"), s.processed("b"), s.processed("c")) == (1, 1, 1)


# -- 4. never re-send what may have been processed -------------------------------------


def drop_first_time(s: Hostile, rid: str, how: str = "notify") -> None:
    s.plan = lambda r: (
        [Close(how)] if r.rid == rid and s.processed(rid) == 1 else [Send(answer(r.rid))]
    )


for how in ("notify", "reset"):

    def post_dropped_unanswered(c: Caller, s: Hostile, how: str = how) -> None:
        drop_first_time(s, "b", how)
        failure = fails_between_good_calls(c, s, "POST")
        assert isinstance(failure, OutcomeUnknown)
        assert failure.fully_written
        assert "check whether it took effect" in str(failure)
        assert "retried" not in str(failure)

    post_dropped_unanswered.__name__ = f"post_dropped_unanswered_{how}"
    scenario()(post_dropped_unanswered)


@scenario()
def post_dropped_on_a_new_connection(c: Caller, s: Hostile) -> None:
    drop_first_time(s, "b")
    failure = failed(c.call("POST", "b", body=b"x"))
    assert isinstance(failure, OutcomeUnknown)
    assert s.processed("b") == 1


@scenario()
def get_dropped_unanswered_is_sent_again(c: Caller, s: Hostile) -> None:
    drop_first_time(s, "b")
    delivered(c.call("GET", "a"), "a")
    delivered(c.call("GET", "b"), "b")
    assert s.processed("b") == 2  # idempotent: sent once more, on a new connection


@scenario()
def post_with_an_idempotency_key_is_sent_again(c: Caller, s: Hostile) -> None:
    drop_first_time(s, "b")
    delivered(c.call("GET", "a"), "a")
    keyed = (("Idempotency-Key", "booking-b"),)
    delivered(c.call("POST", "b", body=b"x", headers=keyed), "b")
    assert s.processed("b") == 2


# -- 5. messages -----------------------------------------------------------------------

for line in (b"Set-Cookie sessionid=SECRET-COOKIE-1", b"Set-Cookie: SECRET-COOKIE-1\x01"):

    def malformed_header_line(c: Caller, s: Hostile, line: bytes = line) -> None:
        bad = b"HTTP/1.1 200 OK\r\n" + line + b"\r\nContent-Length: 2\r\n\r\n{}"
        s.plan = misbehave_on("b", lambda r: [Send(bad)])
        failure = fails_between_good_calls(c, s)
        assert "SECRET-COOKIE" not in str(failure)
        assert "Set-Cookie" not in str(failure)

    malformed_header_line.__name__ = (
        f"malformed_header_line_{'nocolon' if b': ' not in line else 'control'}"
    )
    scenario()(malformed_header_line)


@scenario(connect_timeout=0.3)
def tls_handshake_stalls(c: Caller, s: Hostile) -> None:
    s.handshake = False
    failure = failed(c.call("POST", "a", body=b"x"))
    message = str(failure)
    assert "0.3 s" in message
    assert "connect" in message
    assert "read_timeout" not in message
    assert failure.unsent  # nothing of the request went out
    assert s.processed("a") == 0


# -- 6. the total timeout -------------------------------------------------------------------


@scenario(read_timeout=2.0, total_timeout=0.5)
def dripping_answer_hits_the_total_timeout(c: Caller, s: Hostile) -> None:
    s.plan = misbehave_on("b", lambda r: [Drip(answer("b"), 0.05)])
    delivered(c.call("GET", "a"), "a")
    failure = failed(c.call("GET", "b"))
    assert "total timeout (0.5 s)" in str(failure)
    delivered(c.call("GET", "c"), "c")


@scenario(read_timeout=0.3, total_timeout=None)
def stall_hits_the_read_timeout(c: Caller, s: Hostile) -> None:
    s.plan = misbehave_on("b", lambda r: [Sleep(1.0), Send(answer("b"))])
    failure = failed(c.call("GET", "b"))
    assert "0.3 s" in str(failure)
    assert "total" not in str(failure)


# -- 13.8: bounded responses ---------------------------------------------------------------


@scenario(max_response_size=2000)
def declared_body_over_the_cap(c: Caller, s: Hostile) -> None:
    s.plan = misbehave_on("b", lambda r: [Send(answer("b", pad=5000))])
    assert "larger than" in str(fails_between_good_calls(c, s))


@scenario(max_response_size=2000)
def chunked_body_over_the_cap(c: Caller, s: Hostile) -> None:
    s.plan = misbehave_on("b", lambda r: [Send(answer("b", pad=5000, framing="chunked"))])
    assert "larger than" in str(fails_between_good_calls(c, s))


@scenario()
def token_answers_are_capped_at_64_kib(c: Caller, s: Hostile) -> None:
    s.plan = lambda r: [Send(answer(r.rid, pad=70_000))]
    token = "/oauth/token/"
    assert "larger than 65536" in str(failed(c.call("POST", "t", path=token, body=b"x")))
    delivered(c.call("GET", "api"), "api")  # other answers may be larger
    s.plan = lambda r: [Send(answer(r.rid, pad=60_000))]
    delivered(c.call("POST", "t2", path=token, body=b"x"), "t2")


# -- the matrix ---------------------------------------------------------------------------


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_misbehaving_server(name: str, kind: str, hostile: Hostile, ca_file: str) -> None:
    function, options = SCENARIOS[name]
    caller = Caller(kind, hostile, ca_file, options)
    try:
        function(caller, hostile)
    finally:
        caller.close()
