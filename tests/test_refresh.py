"""Refreshing OAuth2 tokens: proactive, keep-alive, reactive (401), single flight,
rotation, failures, and the cross-process lease."""

from __future__ import annotations

import json
from base64 import b64encode
from collections.abc import Sequence
from typing import TypeVar
from urllib.parse import parse_qs

import pytest

from cfauth_core import (
    Account,
    AcquireLease,
    Action,
    AuthorizationLost,
    CallAccepted,
    CallRequested,
    ClockTick,
    Config,
    CredentialsRejected,
    Deliver,
    Fail,
    LeaseFailed,
    LocalProtocolError,
    Machine,
    NetworkError,
    OAuth2App,
    ReauthorizationRequired,
    RefreshAborted,
    RefreshFailed,
    ReleaseLease,
    Send,
    SendFailed,
    State,
    Store,
    TokenSet,
    TokensLoaded,
    call_id_of,
)
from tests.helpers import one, only, respond

NOW = 1_700_000_000.0
DAY = 24 * 3600.0
FOURTEEN_DAYS = 14 * DAY
ORIGIN = "https://acme.checkfront.com"
TOKEN_URL = ORIGIN + "/oauth/token/"
API = ORIGIN + "/api/3.0/"
APP = OAuth2App("client-id", "s3cr+t", "https://app.example/cb")
CLIENT_BASIC = "Basic " + b64encode(b"client-id:s3cr%2Bt").decode()

A = TypeVar("A", bound=Action)


def index(actions: Sequence[Action], kind: type[Action]) -> int:
    return next(i for i, a in enumerate(actions) if isinstance(a, kind))


def tokens(
    n: int = 0,
    *,
    expires_at: float = NOW + 10_000,
    refresh_expires_at: float | None = None,
    updated_at: float | None = None,
) -> TokenSet:
    """Token set number ``n`` (``AT-n`` / ``RT-n``), consistent by default: issued
    14000 s before ``expires_at``, refresh token valid 14 days from issue."""
    issued = expires_at - 14000 if updated_at is None else updated_at
    return TokenSet(
        access_token=f"AT-{n}",
        refresh_token=f"RT-{n}",
        expires_at=expires_at,
        refresh_expires_at=issued + FOURTEEN_DAYS
        if refresh_expires_at is None
        else refresh_expires_at,
        updated_at=issued,
    )


def keep_alive_due() -> TokenSet:
    """A fresh access token (refreshed 200 s ago without rotation) whose refresh
    token entered its last day 100 s ago."""
    return tokens(0, expires_at=NOW - 200 + 14000, refresh_expires_at=NOW + DAY - 100)


def machine(current: TokenSet | None = None, config: Config | None = None) -> Machine:
    return Machine(
        Account.parse("acme"), APP, tokens() if current is None else current, config=config
    )


def state(m: Machine) -> State:
    """The machine's state (a call, so the type checker does not narrow it)."""
    return m.state


def call(m: Machine, now: float = NOW, path: str = "booking/index") -> list[Action]:
    return m.handle(CallRequested(now=now, method="GET", path=path))


def call_id(actions: Sequence[Action]) -> int:
    return call_id_of(actions)


def auth(send: Send) -> str:
    values = [v for n, v in send.request.headers if n.lower() == "authorization"]
    assert len(values) == 1, send.request.headers
    return values[0]


def form(send: Send) -> dict[str, list[str]]:
    assert send.request.body is not None
    return parse_qs(send.request.body.decode("ascii"), strict_parsing=True)


def token_body(n: int, *, expires_in: int = 14000, rotate: bool = True) -> bytes:
    fields: dict[str, object] = {"access_token": f"AT-{n}", "expires_in": expires_in}
    if rotate:
        fields["refresh_token"] = f"RT-{n}"
    return json.dumps(fields).encode()


def start_refresh(m: Machine, now: float = NOW) -> tuple[int, Send]:
    """Make a call that is due for refresh, answer the lease with the current
    tokens, and return the waiting call's id and the refresh Send."""
    actions = call(m, now)
    assert one(actions, AcquireLease).reason in {"expiring", "keep-alive"}
    assert not only(actions, Send)
    refresh = one(m.handle(TokensLoaded(now=now, tokens=m.tokens)), Send)
    assert refresh.purpose == "refresh"
    return call_id(actions), refresh


def expiring() -> Machine:
    """A machine whose access token has 100 s left (inside the 300 s leeway)."""
    return machine(tokens(0, expires_at=NOW + 100))


# -- a fresh token --------------------------------------------------------------------


def test_fresh_token_is_sent_as_bearer_to_the_api_only() -> None:
    m = machine()
    actions = call(m)
    assert len(actions) == 1
    send = one(actions, Send)
    assert send.purpose == "call"
    assert send.call_id == call_id(actions)
    assert send.request.url == API + "booking/index"
    assert auth(send) == "Bearer AT-0"
    rendered = repr(send.request.headers) + send.request.url
    assert "s3cr" not in rendered
    assert CLIENT_BASIC.split()[1] not in rendered
    assert "RT-0" not in rendered
    assert state(m) is State.READY


def test_fresh_token_response_is_delivered() -> None:
    m = machine()
    send = one(call(m), Send)
    deliver = one(respond(m, send, 200, b'{"request": {"status": "OK"}}'), Deliver)
    assert deliver.call_id == send.call_id
    assert deliver.status == 200
    assert m.calls_in_progress == 0


# -- proactive refresh ----------------------------------------------------------------


def test_outside_the_default_leeway_no_refresh() -> None:
    m = machine(tokens(0, expires_at=NOW + 301))
    assert auth(one(call(m), Send)) == "Bearer AT-0"
    assert state(m) is State.READY


def test_proactive_refresh_within_the_default_leeway() -> None:
    m = machine(tokens(0, expires_at=NOW + 300))
    actions = call(m)
    assert len(actions) == 2
    assert isinstance(actions[0], CallAccepted)
    assert actions[1] == AcquireLease("expiring")
    assert state(m) is State.LEASING

    refresh_actions = m.handle(TokensLoaded(now=NOW, tokens=None))
    assert len(refresh_actions) == 1
    refresh = one(refresh_actions, Send)
    assert refresh.purpose == "refresh"
    assert refresh.call_id is None
    assert refresh.request.method == "POST"
    assert refresh.request.url == TOKEN_URL
    assert form(refresh) == {"grant_type": ["refresh_token"], "refresh_token": ["RT-0"]}
    assert auth(refresh) == CLIENT_BASIC
    assert "Bearer" not in repr(refresh.request.headers)
    assert "AT-0" not in repr(refresh.request.headers) + (refresh.request.body or b"").decode()
    assert state(m) is State.REFRESHING

    done = respond(m, refresh, 200, token_body(1), now=NOW + 1)
    assert [type(a) for a in done] == [Store, ReleaseLease, Send]
    store = done[0]
    assert isinstance(store, Store)
    assert store.tokens.access_token == "AT-1"
    assert store.tokens.refresh_token == "RT-1"
    assert store.tokens.expires_at == NOW + 1 + 14000
    assert store.tokens.refresh_expires_at == NOW + 1 + FOURTEEN_DAYS
    resent = done[2]
    assert isinstance(resent, Send)
    assert resent.call_id == call_id(actions)
    assert resent.purpose == "call"
    assert auth(resent) == "Bearer AT-1"
    assert resent.request.url == API + "booking/index"
    assert m.tokens == store.tokens
    assert state(m) is State.READY


def test_already_expired_access_token_is_refreshed_before_the_call() -> None:
    m = machine(tokens(0, expires_at=NOW - 5))
    actions = call(m)
    assert one(actions, AcquireLease).reason == "expiring"
    assert not only(actions, Send)


@pytest.mark.parametrize(("left", "due"), [(999, True), (1000, True), (1001, False)])
def test_custom_refresh_leeway(left: float, due: bool) -> None:
    m = machine(tokens(0, expires_at=NOW + left), Config(refresh_leeway=1000))
    actions = call(m)
    if due:
        assert one(actions, AcquireLease).reason == "expiring"
        assert not only(actions, Send)
    else:
        assert not only(actions, AcquireLease)
        assert auth(one(actions, Send)) == "Bearer AT-0"


def test_zero_leeway_refreshes_only_once_expired() -> None:
    config = Config(refresh_leeway=0)
    assert only(call(machine(tokens(0, expires_at=NOW + 1), config)), Send)
    assert only(call(machine(tokens(0, expires_at=NOW), config)), AcquireLease)


# -- refresh-token keep-alive -----------------------------------------------------------


def test_keep_alive_within_a_day_of_the_refresh_token_expiry() -> None:
    m = machine(keep_alive_due())
    actions = call(m)
    assert one(actions, AcquireLease).reason == "keep-alive"
    assert not only(actions, Send)
    refresh = one(m.handle(TokensLoaded(now=NOW, tokens=m.tokens)), Send)
    assert form(refresh)["refresh_token"] == ["RT-0"]
    done = respond(m, refresh, 200, token_body(1))
    assert one(done, Store).tokens.refresh_expires_at == NOW + FOURTEEN_DAYS
    assert auth(one(done, Send)) == "Bearer AT-1"


def test_no_keep_alive_before_the_last_day() -> None:
    m = machine(tokens(0, expires_at=NOW - 200 + 14000, refresh_expires_at=NOW + DAY + 1))
    actions = call(m)
    assert not only(actions, AcquireLease)
    assert only(actions, Send)


def test_custom_keep_alive_window() -> None:
    config = Config(keep_alive_before=3 * DAY)
    current = tokens(0, expires_at=NOW - 200 + 14000, refresh_expires_at=NOW + 3 * DAY - 100)
    assert one(call(machine(current, config)), AcquireLease).reason == "keep-alive"
    assert only(call(machine(current)), Send)


# -- ClockTick -------------------------------------------------------------------------


def test_clock_tick_reports_nothing_when_nothing_is_due() -> None:
    m = machine()
    assert m.handle(ClockTick(now=NOW)) == []
    assert state(m) is State.READY


@pytest.mark.parametrize(
    ("current", "reason"),
    [
        (tokens(0, expires_at=NOW + 100), "expiring"),
        (keep_alive_due(), "keep-alive"),
    ],
    ids=["expiring", "keep-alive"],
)
def test_clock_tick_reports_a_due_refresh(current: TokenSet, reason: str) -> None:
    m = machine(current)
    assert m.handle(ClockTick(now=NOW)) == [AcquireLease(reason)]
    assert state(m) is State.LEASING
    # Single flight: a second tick while leasing asks for nothing more.
    assert m.handle(ClockTick(now=NOW + 1)) == []
    refresh = one(m.handle(TokensLoaded(now=NOW + 1, tokens=None)), Send)
    assert m.handle(ClockTick(now=NOW + 2)) == []
    done = respond(m, refresh, 200, token_body(1), now=NOW + 2)
    assert [type(a) for a in done] == [Store, ReleaseLease]
    assert m.handle(ClockTick(now=NOW + 3)) == []


def test_clock_tick_later_reports_the_refresh_when_it_becomes_due() -> None:
    m = machine(tokens(0, expires_at=NOW + 1000))
    assert m.handle(ClockTick(now=NOW)) == []
    assert m.handle(ClockTick(now=NOW + 699)) == []
    assert m.handle(ClockTick(now=NOW + 700)) == [AcquireLease("expiring")]


# -- reactive refresh: 401 ----------------------------------------------------------------


def test_401_with_the_current_token_refreshes_once_and_resends() -> None:
    m = machine()
    send = one(call(m), Send)
    rejected = respond(m, send, 401, b'{"error": "invalid_token"}')
    assert rejected == [AcquireLease("rejected")]
    assert state(m) is State.LEASING
    refresh = one(m.handle(TokensLoaded(now=NOW, tokens=m.tokens)), Send)
    assert form(refresh)["refresh_token"] == ["RT-0"]
    done = respond(m, refresh, 200, token_body(1))
    assert [type(a) for a in done] == [Store, ReleaseLease, Send]
    resent = done[2]
    assert isinstance(resent, Send)
    assert resent.call_id == send.call_id
    assert auth(resent) == "Bearer AT-1"
    deliver = one(respond(m, resent, 200, b"{}"), Deliver)
    assert deliver.call_id == send.call_id


def test_second_401_after_the_refresh_fails_the_call() -> None:
    m = machine()
    send = one(call(m), Send)
    respond(m, send, 401)
    refresh = one(m.handle(TokensLoaded(now=NOW, tokens=m.tokens)), Send)
    resent = one(respond(m, refresh, 200, token_body(1)), Send)
    final = respond(m, resent, 401)
    assert len(final) == 1
    fail = one(final, Fail)
    assert fail.call_id == send.call_id
    assert isinstance(fail.error, CredentialsRejected)
    assert fail.error.status == 401
    assert state(m) is State.READY
    assert m.calls_in_progress == 0


def test_401_with_an_old_token_resends_with_the_current_one() -> None:
    m = machine()
    first = one(call(m), Send)
    second = one(call(m), Send)
    assert auth(second) == "Bearer AT-0"
    respond(m, first, 401)
    refresh = one(m.handle(TokensLoaded(now=NOW, tokens=m.tokens)), Send)
    respond(m, refresh, 200, token_body(1))
    # The second call was rejected with AT-0, which is no longer current.
    actions = respond(m, second, 401)
    assert len(actions) == 1
    resent = one(actions, Send)
    assert resent.call_id == second.call_id
    assert auth(resent) == "Bearer AT-1"
    assert state(m) is State.READY
    # And a 401 on that retry fails, never a loop.
    assert isinstance(one(respond(m, resent, 401), Fail).error, CredentialsRejected)


def test_401_during_a_refresh_waits_for_it() -> None:
    m = machine()
    first = one(call(m), Send)
    second = one(call(m), Send)
    respond(m, first, 401)
    refresh = one(m.handle(TokensLoaded(now=NOW, tokens=m.tokens)), Send)
    assert respond(m, second, 401) == []
    done = respond(m, refresh, 200, token_body(1))
    assert [type(a) for a in done] == [Store, ReleaseLease, Send, Send]
    assert {s.call_id for s in only(done, Send)} == {first.call_id, second.call_id}
    assert {auth(s) for s in only(done, Send)} == {"Bearer AT-1"}
    assert len([s for s in only(done, Send) if s.purpose == "refresh"]) == 0


def test_400_with_invalid_token_challenge_counts_as_a_rejection() -> None:
    m = machine()
    send = one(call(m), Send)
    challenge = ("WWW-Authenticate", 'Bearer realm="Service", error="invalid_token"')
    assert respond(m, send, 400, b"", headers=[challenge]) == [AcquireLease("rejected")]


def test_400_without_a_token_error_is_delivered() -> None:
    m = machine()
    send = one(call(m), Send)
    body = b'{"request": {"status": "ERROR", "error": {"details": "bad date"}}}'
    deliver = one(respond(m, send, 400, body), Deliver)
    assert deliver.status == 400
    assert state(m) is State.READY


# -- single flight ----------------------------------------------------------------------


def test_calls_during_a_refresh_wait_and_are_released_together() -> None:
    m = expiring()
    first = call(m)
    assert only(first, AcquireLease)
    leasing_calls = [call(m) for _ in range(3)]
    refresh_sends = only(m.handle(TokensLoaded(now=NOW, tokens=None)), Send)
    assert [s.purpose for s in refresh_sends] == ["refresh"]
    refreshing_calls = [call(m) for _ in range(10)]
    for actions in leasing_calls + refreshing_calls:
        assert len(actions) == 1
        assert isinstance(actions[0], CallAccepted)
    assert m.calls_in_progress == 14
    done = respond(m, refresh_sends[0], 200, token_body(1))
    assert isinstance(done[0], Store)
    assert isinstance(done[1], ReleaseLease)
    released = done[2:]
    assert all(isinstance(a, Send) for a in released)
    expected = [call_id(a) for a in [first, *leasing_calls, *refreshing_calls]]
    assert [s.call_id for s in only(released, Send)] == expected
    assert {auth(s) for s in only(released, Send)} == {"Bearer AT-1"}
    assert {s.purpose for s in only(released, Send)} == {"call"}


# -- rotation -----------------------------------------------------------------------------


def test_rotated_refresh_token_replaces_the_old_one() -> None:
    m = expiring()
    sends: list[Send] = []
    _, refresh = start_refresh(m)
    done = respond(m, refresh, 200, token_body(1, expires_in=1000))
    sends += only(done, Send)
    assert m.tokens is not None
    assert m.tokens.refresh_token == "RT-1"
    # Later the new access token nears its expiry: the next refresh uses RT-1.
    later = NOW + 800
    actions = call(m, later)
    assert one(actions, AcquireLease).reason == "expiring"
    refresh2 = one(m.handle(TokensLoaded(now=later, tokens=m.tokens)), Send)
    assert form(refresh2) == {"grant_type": ["refresh_token"], "refresh_token": ["RT-1"]}
    sends += [refresh2, *only(respond(m, refresh2, 200, token_body(2), now=later), Send)]
    sends += only(call(m, later + 1), Send)
    for send in sends:
        seen = repr(send.request.headers) + send.request.url + (send.request.body or b"").decode()
        assert "RT-0" not in seen
        assert "AT-0" not in seen


def test_refresh_without_refresh_token_keeps_the_old_one() -> None:
    m = expiring()
    old = m.tokens
    assert old is not None
    _, refresh = start_refresh(m)
    done = respond(m, refresh, 200, token_body(1, rotate=False))
    stored = one(done, Store).tokens
    assert stored.access_token == "AT-1"
    assert stored.refresh_token == "RT-0"
    assert stored.refresh_expires_at == old.refresh_expires_at
    assert auth(one(done, Send)) == "Bearer AT-1"


# -- the grant is lost ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, b'{"error": "invalid_grant", "error_description": "Invalid refresh token"}'),
        (401, b'{"error": "invalid_grant"}'),
        (200, b'{"error": "invalid_grant"}'),
    ],
    ids=["invalid_grant-400", "invalid_grant-401", "invalid_grant-200"],
)
def test_refused_refresh_token_loses_the_grant(status: int, body: bytes) -> None:
    m = expiring()
    first, refresh = start_refresh(m)
    others = [call_id(call(m)) for _ in range(3)]
    done = respond(m, refresh, status, body)
    assert not only(done, Store)
    assert not only(done, Send)
    assert only(done, ReleaseLease)
    lost = one(done, AuthorizationLost)
    assert isinstance(lost.error, ReauthorizationRequired)
    fails = only(done, Fail)
    assert [f.call_id for f in fails] == [first, *others]
    for fail in fails:
        assert fail.error is lost.error
    assert "RT-0" not in str(lost.error)
    assert state(m) is State.REAUTHORIZATION_REQUIRED
    assert m.calls_in_progress == 0
    # Later calls fail at once.
    later = call(m, NOW + 1)
    assert isinstance(one(later, Fail).error, ReauthorizationRequired)
    assert not only(later, Send)
    assert not only(later, AcquireLease)
    assert m.handle(ClockTick(now=NOW + 2)) == []


def test_refresh_token_past_its_14_days_with_expired_access_token() -> None:
    m = machine(tokens(0, expires_at=NOW - 10, refresh_expires_at=NOW - 1))
    actions = call(m)
    assert not only(actions, Send)
    assert not only(actions, AcquireLease)
    assert isinstance(one(actions, Fail).error, ReauthorizationRequired)
    assert isinstance(one(actions, AuthorizationLost).error, ReauthorizationRequired)
    assert state(m) is State.REAUTHORIZATION_REQUIRED


def test_clock_tick_reports_a_lost_grant() -> None:
    m = machine(tokens(0, expires_at=NOW - 10, refresh_expires_at=NOW - 1))
    actions = m.handle(ClockTick(now=NOW))
    assert isinstance(one(actions, AuthorizationLost).error, ReauthorizationRequired)
    assert not only(actions, AcquireLease)
    assert state(m) is State.REAUTHORIZATION_REQUIRED


# -- a refresh that fails but leaves the grant intact ----------------------------------------


def _fail_refresh(m: Machine, refresh: Send, how: str) -> list[Action]:
    if how == "500":
        return respond(m, refresh, 500, b"<html>Internal Server Error</html>")
    if how == "503":
        return respond(m, refresh, 503, b'{"message": "maintenance"}')
    if how == "malformed":
        return respond(m, refresh, 200, b'{"access_token": "AT 1", "refresh_token": "RT-1"}')
    if how == "not-json":
        return respond(m, refresh, 200, b"<html>ok</html>")
    assert how == "send-failed"
    return m.handle(SendFailed(now=NOW, request_id=refresh.request_id, reason="connection reset"))


@pytest.mark.parametrize("how", ["500", "503", "malformed", "not-json", "send-failed"])
def test_failed_refresh_keeps_the_tokens_and_fails_the_waiters(how: str) -> None:
    m = expiring()
    old = m.tokens
    first, refresh = start_refresh(m)
    others = [call_id(call(m)) for _ in range(4)]
    done = _fail_refresh(m, refresh, how)
    assert not only(done, Store)
    assert not only(done, Send)
    assert only(done, ReleaseLease)
    assert not only(done, AuthorizationLost)
    fails = only(done, Fail)
    assert [f.call_id for f in fails] == [first, *others]
    error = fails[0].error
    assert isinstance(error, RefreshFailed)
    assert error.retryable
    for fail in fails:
        assert fail.error is error
    aborted = one(done, RefreshAborted)
    assert aborted.error is error
    assert m.tokens == old
    assert state(m) is State.READY
    assert m.calls_in_progress == 0
    # The next call refreshes again, with the same refresh token.
    again = call(m, NOW + 1)
    assert one(again, AcquireLease).reason == "expiring"
    retry = one(m.handle(TokensLoaded(now=NOW + 1, tokens=m.tokens)), Send)
    assert form(retry)["refresh_token"] == ["RT-0"]


def test_failed_refresh_after_a_401_fails_the_call_with_the_refresh_error() -> None:
    m = machine()
    send = one(call(m), Send)
    respond(m, send, 401)
    refresh = one(m.handle(TokensLoaded(now=NOW, tokens=m.tokens)), Send)
    done = respond(m, refresh, 502, b"Bad Gateway")
    fail = one(done, Fail)
    assert fail.call_id == send.call_id
    assert isinstance(fail.error, RefreshFailed)
    assert m.tokens == tokens()
    assert state(m) is State.READY


# -- the cross-process lease ------------------------------------------------------------------


def test_newer_tokens_from_the_store_are_adopted_without_refreshing() -> None:
    m = expiring()
    actions = call(m)
    assert only(actions, AcquireLease)
    waiting = [call_id(actions), call_id(call(m))]
    newer = tokens(7, expires_at=NOW + 13_000, updated_at=NOW - 5)
    done = m.handle(TokensLoaded(now=NOW, tokens=newer))
    assert not [s for s in only(done, Send) if s.purpose == "refresh"]
    assert not only(done, Store)
    assert isinstance(done[0], ReleaseLease)
    sends = only(done, Send)
    assert [s.call_id for s in sends] == waiting
    assert {auth(s) for s in sends} == {"Bearer AT-7"}
    assert m.tokens == newer
    assert state(m) is State.READY


def test_newer_tokens_after_a_401_are_used_for_the_retry() -> None:
    m = machine()
    send = one(call(m), Send)
    assert respond(m, send, 401) == [AcquireLease("rejected")]
    newer = tokens(7, updated_at=NOW - 5)
    done = m.handle(TokensLoaded(now=NOW, tokens=newer))
    assert [type(a) for a in done] == [ReleaseLease, Send]
    assert auth(one(done, Send)) == "Bearer AT-7"


def test_same_tokens_from_the_store_are_refreshed() -> None:
    m = expiring()
    call(m)
    refresh = one(m.handle(TokensLoaded(now=NOW, tokens=m.tokens)), Send)
    assert refresh.purpose == "refresh"
    assert form(refresh)["refresh_token"] == ["RT-0"]
    assert state(m) is State.REFRESHING


def test_under_the_lease_a_different_stored_pair_wins_whatever_its_clock() -> None:
    # Another machine refreshed with a clock 100 s behind: the store is the truth.
    m = expiring()
    current = m.tokens
    assert current is not None
    call(m)
    skewed = tokens(9, updated_at=current.updated_at - 100, expires_at=NOW + 10_000)
    done = m.handle(TokensLoaded(now=NOW, tokens=skewed))
    assert auth(one(done, Send)) == "Bearer AT-9"
    assert only(done, ReleaseLease)
    assert m.tokens == skewed


def test_without_the_lease_older_stored_tokens_are_not_adopted() -> None:
    m = expiring()
    current = m.tokens
    assert current is not None
    older = tokens(9, updated_at=current.updated_at - 100, expires_at=NOW + 10_000)
    assert m.handle(TokensLoaded(now=NOW, tokens=older)) == []
    assert m.tokens == current


def test_newer_but_expiring_tokens_from_the_store_are_refreshed() -> None:
    m = expiring()
    call(m)
    current = m.tokens
    assert current is not None
    newer = tokens(7, expires_at=NOW + 150, updated_at=current.updated_at + 50)
    refresh = one(m.handle(TokensLoaded(now=NOW, tokens=newer)), Send)
    assert form(refresh)["refresh_token"] == ["RT-7"]
    done = respond(m, refresh, 200, token_body(8))
    assert auth(one(done, Send)) == "Bearer AT-8"


def test_stored_tokens_past_their_14_days_lose_the_grant() -> None:
    m = expiring()
    first = call_id(call(m))
    dead = tokens(7, expires_at=NOW - 1, refresh_expires_at=NOW - 1, updated_at=NOW - 2)
    done = m.handle(TokensLoaded(now=NOW, tokens=dead))
    assert not only(done, Send)
    assert only(done, ReleaseLease)
    assert isinstance(one(done, AuthorizationLost).error, ReauthorizationRequired)
    assert one(done, Fail).call_id == first
    assert state(m) is State.REAUTHORIZATION_REQUIRED


def test_lease_failed_fails_the_waiters_with_a_retryable_error() -> None:
    m = expiring()
    first = call_id(call(m))
    second = call_id(call(m))
    done = m.handle(LeaseFailed(now=NOW, reason="database is locked"))
    assert not only(done, Send)
    assert not only(done, Store)
    fails = only(done, Fail)
    assert [f.call_id for f in fails] == [first, second]
    assert fails[0].error.retryable
    assert fails[1].error is fails[0].error
    assert state(m) is State.READY
    assert m.tokens == tokens(0, expires_at=NOW + 100)
    assert one(call(m, NOW + 1), AcquireLease).reason == "expiring"


def test_lease_failed_outside_leasing_is_refused() -> None:
    m = machine()
    with pytest.raises(LocalProtocolError):
        m.handle(LeaseFailed(now=NOW))
    assert state(m) is State.READY


# -- TokensLoaded outside a lease ------------------------------------------------------------


def test_tokens_loaded_after_the_grant_was_lost_makes_the_machine_ready() -> None:
    m = machine(tokens(0, expires_at=NOW - 10, refresh_expires_at=NOW - 1))
    call(m)
    assert state(m) is State.REAUTHORIZATION_REQUIRED
    fresh = tokens(5, expires_at=NOW + 10_000, updated_at=NOW)
    assert m.handle(TokensLoaded(now=NOW, tokens=fresh)) == []
    assert state(m) is State.READY
    assert m.tokens == fresh
    assert auth(one(call(m), Send)) == "Bearer AT-5"


def test_tokens_loaded_when_ready_adopts_only_newer_tokens() -> None:
    m = machine()
    older = tokens(9, updated_at=NOW - 9000)
    assert m.handle(TokensLoaded(now=NOW, tokens=older)) == []
    assert auth(one(call(m), Send)) == "Bearer AT-0"
    assert m.handle(TokensLoaded(now=NOW, tokens=None)) == []
    assert m.tokens == tokens()
    newer = tokens(5, updated_at=NOW)
    assert m.handle(TokensLoaded(now=NOW, tokens=newer)) == []
    assert state(m) is State.READY
    assert auth(one(call(m), Send)) == "Bearer AT-5"


def test_tokens_loaded_while_refreshing_is_refused() -> None:
    m = expiring()
    old = m.tokens
    _, refresh = start_refresh(m)
    with pytest.raises(LocalProtocolError):
        m.handle(TokensLoaded(now=NOW, tokens=tokens(5, updated_at=NOW)))
    assert state(m) is State.REFRESHING
    assert m.tokens == old
    done = respond(m, refresh, 200, token_body(1))
    assert one(done, Store).tokens.access_token == "AT-1"
    assert auth(one(done, Send)) == "Bearer AT-1"


# -- refreshed tokens that are themselves inside the leeway ------------------------------------


def test_waiting_call_is_sent_even_if_the_new_token_is_short_lived() -> None:
    m = machine(tokens(0, expires_at=NOW + 100), Config(refresh_leeway=20_000))
    _, refresh = start_refresh(m)
    done = respond(m, refresh, 200, token_body(1))
    assert not only(done, AcquireLease)
    assert auth(one(done, Send)) == "Bearer AT-1"


def test_short_lived_tokens_from_the_server_do_not_refresh_on_every_call() -> None:
    m = expiring()
    _, refresh = start_refresh(m)
    done = respond(m, refresh, 200, token_body(1, expires_in=120))
    assert not only(done, AcquireLease)
    assert auth(one(done, Send)) == "Bearer AT-1"
    assert only(call(m, NOW + 1), Send)


def test_keep_alive_refresh_without_rotation_is_not_repeated() -> None:
    m = machine(keep_alive_due())
    old = m.tokens
    assert old is not None
    _, refresh = start_refresh(m)
    done = respond(m, refresh, 200, token_body(1, rotate=False))
    stored = one(done, Store).tokens
    assert stored.refresh_expires_at == old.refresh_expires_at
    assert auth(one(done, Send)) == "Bearer AT-1"
    # Refreshing again would not extend the refresh token either: calls go out.
    later = call(m, NOW + 60)
    assert not only(later, AcquireLease)
    assert auth(one(later, Send)) == "Bearer AT-1"
    assert m.handle(ClockTick(now=NOW + 120)) == []


def test_the_refused_tokens_are_not_adopted_again() -> None:
    m = expiring()
    dead = m.tokens
    _, refresh = start_refresh(m)
    respond(m, refresh, 400, b'{"error": "invalid_grant"}')
    assert state(m) is State.REAUTHORIZATION_REQUIRED
    m.handle(TokensLoaded(now=NOW + 1, tokens=dead))
    assert state(m) is State.REAUTHORIZATION_REQUIRED


def test_refresh_errors_never_show_the_tokens_or_the_client_secret() -> None:
    m = expiring()
    _, refresh = start_refresh(m)
    body = json.dumps(
        {"error": "invalid_grant", "error_description": "RT-0 / AT-0 / s3cr+t refused"}
    ).encode()
    done = respond(m, refresh, 400, body)
    lost = one(done, AuthorizationLost).error
    assert isinstance(lost, ReauthorizationRequired)
    assert lost.cause is not None
    for error in (lost, lost.cause):
        for secret in ("RT-0", "AT-0", "s3cr+t"):
            assert secret not in str(error)
            assert secret not in repr(error)
    assert "refused" in str(lost.cause)


@pytest.mark.parametrize("retryable", [True, False])
def test_a_refresh_that_cannot_succeed_as_it_is_is_not_retryable(retryable: bool) -> None:
    """A transport failure that only a change can fix (an untrusted server
    certificate) makes the refresh failure and its waiters non-retryable."""
    m = expiring()
    first, refresh = start_refresh(m)
    reason = "the TLS certificate of acme.checkfront.com was not trusted; pass ca_file="
    done = m.handle(
        SendFailed(now=NOW, request_id=refresh.request_id, reason=reason, retryable=retryable)
    )
    [fail] = only(done, Fail)
    assert fail.call_id == first
    error = fail.error
    assert isinstance(error, RefreshFailed)
    assert isinstance(error.cause, NetworkError)
    assert (error.retryable, error.cause.retryable) == (retryable, retryable)
    assert reason in str(error)
    assert state(m) is State.READY
