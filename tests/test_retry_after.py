"""Retry-After parsing and the machine's rate-limit behaviour.

``parse_retry_after`` / ``parse_http_date`` are pure functions of the header
value and ``now``.  The machine parks a call answered 429 (or 503 with
``Retry-After``) and answers ``RetryAt``; a ``ClockTick`` at or after that time
sends it again, with credentials, to the same URL.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from cfauth_core import (
    Account,
    AcquireLease,
    Action,
    ApiKey,
    CallCancelled,
    CallRequested,
    ClockTick,
    Config,
    Deliver,
    Fail,
    Machine,
    OAuth2App,
    RateLimited,
    ResponseReceived,
    RetryAt,
    Send,
    TokenSet,
    call_id_of,
    parse_http_date,
    parse_retry_after,
)
from cfauth_core._events import Headers

IMF = "Sun, 06 Nov 1994 08:49:37 GMT"
RFC850 = "Sunday, 06-Nov-94 08:49:37 GMT"
ASCTIME = "Sun Nov  6 08:49:37 1994"
EPOCH_1994 = 784111777.0

NOW = 1_700_000_000.0
URL = "https://acme.checkfront.com/api/3.0/booking/index"
API_KEY = ApiKey("key-0123456789", "apikey-secret-value")
APP = OAuth2App("client-0123456789", "client-secret-value", "https://app.example/callback")


# -- parse_http_date -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [IMF, RFC850, ASCTIME, "  " + IMF + "  ", "sun, 06 nov 1994 08:49:37 GMT"],
    ids=["imf-fixdate", "rfc850", "asctime", "surrounding-space", "lower-case-names"],
)
def test_parse_http_date_forms(value: str) -> None:
    assert parse_http_date(value, NOW) == EPOCH_1994


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
        ("Tue, 14 Nov 2023 22:13:20 GMT", 1_700_000_000.0),
        ("Tue, 29 Feb 2000 12:00:00 GMT", 951_825_600.0),
        ("Fri, 31 Dec 1999 23:59:59 GMT", 946_684_799.0),
        ("Thu Jan  1 00:00:01 1970", 1.0),
        ("Wed Nov 15 10:00:00 2023", 1_700_042_400.0),
    ],
    ids=[
        "epoch",
        "now",
        "leap-day",
        "y2k-eve",
        "asctime-space-padded-day",
        "asctime-two-digit-day",
    ],
)
def test_parse_http_date_values(value: str, expected: float) -> None:
    assert parse_http_date(value, NOW) == expected


@pytest.mark.parametrize(
    ("value", "now", "expected"),
    [
        # Two-digit years: more than 50 years ahead means the previous century.
        ("Sunday, 06-Nov-94 08:49:37 GMT", NOW, EPOCH_1994),
        ("Wednesday, 15-Nov-23 10:00:00 GMT", NOW, 1_700_042_400.0),
        ("Thursday, 01-Jan-70 00:00:00 GMT", NOW, 3_155_760_000.0),
        ("Monday, 01-Jan-73 00:00:00 GMT", NOW, 3_250_454_400.0),
        ("Monday, 01-Jan-74 00:00:00 GMT", NOW, 126_230_400.0),
    ],
    ids=["94-is-1994", "23-is-2023", "70-is-2070", "73-is-2073", "74-is-1974"],
)
def test_parse_http_date_rfc850_century(value: str, now: float, expected: float) -> None:
    assert parse_http_date(value, now) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "soon",
        "2",
        "1994-11-06T08:49:37Z",
        "Sun, 06 Nov 1994 08:49:37 PST",
        "Sun, 06 Nov 1994 08:49:37 gmt",
        "Sun, 06 Nov 1994 08:49:37",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 32 Nov 1994 08:49:37 GMT",
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1994 08:49:61 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sun,  06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT\r\nX: y",
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994",
    ],
    ids=[
        "empty",
        "word",
        "delay-seconds",
        "iso-8601",
        "other-zone",
        "lower-gmt",
        "no-zone",
        "one-digit-day",
        "bad-month",
        "day-32",
        "day-0",
        "hour-24",
        "minute-60",
        "second-61",
        "two-digit-year-imf",
        "double-space",
        "trailing-crlf",
        "rfc850-four-digit-year",
        "asctime-unpadded-day",
    ],
)
def test_parse_http_date_garbage(value: str) -> None:
    assert parse_http_date(value, NOW) is None


@pytest.mark.parametrize(
    "value",
    [
        "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov \uff11\uff19\uff19\uff14 08:49:37 GMT",
        "Sun Nov  6 08:49:37 \u0967\u096f\u096f\u096a",
    ],
    ids=["arabic-indic-day", "fullwidth-year", "devanagari-year-asctime"],
)
def test_parse_http_date_refuses_non_ascii_digits(value: str) -> None:
    assert parse_http_date(value, NOW) is None


# -- parse_retry_after ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("2", 2.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("007", 7.0),
        ("86400", 86400.0),
    ],
    ids=["zero", "two", "minutes", "spaces", "leading-zeros", "a-day"],
)
def test_parse_retry_after_delay_seconds(value: str, expected: float) -> None:
    result = parse_retry_after(value, NOW)
    assert result == expected
    assert isinstance(result, float)


@pytest.mark.parametrize("value", [IMF, RFC850, ASCTIME], ids=["imf", "rfc850", "asctime"])
def test_parse_retry_after_http_date(value: str) -> None:
    assert parse_retry_after(value, EPOCH_1994 - 30) == 30.0
    assert parse_retry_after(value, EPOCH_1994 - 0.5) == 0.5
    assert parse_retry_after(value, EPOCH_1994) == 0.0


@pytest.mark.parametrize("value", [IMF, RFC850, ASCTIME], ids=["imf", "rfc850", "asctime"])
def test_parse_retry_after_past_date_is_zero(value: str) -> None:
    assert parse_retry_after(value, EPOCH_1994 + 1) == 0.0
    assert parse_retry_after(value, NOW) == 0.0


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "soon",
        "-1",
        "+2",
        "1.5",
        "2s",
        "2 3",
        "0x10",
        "1e3",
        "²",
        "١٢",
        "Sun, 06 Nov 1994 08:49:37 PST",
        "Tomorrow, 06 Nov 1994 08:49:37 GMT",
    ],
    ids=[
        "empty",
        "blank",
        "word",
        "negative",
        "plus",
        "fraction",
        "unit",
        "two-numbers",
        "hex",
        "exponent",
        "superscript-digit",
        "arabic-indic-digits",
        "other-zone",
        "long-day-name",
    ],
)
def test_parse_retry_after_garbage(value: str) -> None:
    assert parse_retry_after(value, NOW) is None


# -- the machine ---------------------------------------------------------------------------


def tokens(now: float = NOW) -> TokenSet:
    return TokenSet(
        access_token="access-token-one",
        refresh_token="refresh-token-one",
        expires_at=now + 14000,
        refresh_expires_at=now + 14 * 86400,
        updated_at=now,
    )


def machine_for(kind: str = "apikey", config: Config | None = None) -> Machine:
    account = Account.parse("acme")
    if kind == "apikey":
        return Machine(account, API_KEY, config=config)
    return Machine(account, APP, tokens(), config=config)


def auth_of(kind: str) -> str:
    return API_KEY.authorization if kind == "apikey" else "Bearer access-token-one"


def call(machine: Machine, now: float = NOW) -> tuple[int, Send]:
    actions = machine.handle(CallRequested(now=now, method="GET", path="booking/index"))
    assert len(actions) == 1, actions
    (send,) = actions
    assert isinstance(send, Send)
    return call_id_of(actions), send


def respond(
    machine: Machine, send: Send, status: int, headers: Headers = (), now: float = NOW
) -> list[Action]:
    return machine.handle(
        ResponseReceived(
            now=now, request_id=send.request_id, status=status, headers=headers, body=b"slow"
        )
    )


def only_send(actions: Sequence[Action]) -> Send:
    assert len(actions) == 1, actions
    send = actions[0]
    assert isinstance(send, Send)
    return send


def auth(send: Send) -> str | None:
    values = [v for k, v in send.request.headers if k.lower() == "authorization"]
    return values[0] if len(values) == 1 else None


@pytest.mark.parametrize("kind", ["apikey", "oauth"])
def test_429_retry_at_then_resend(kind: str) -> None:
    machine = machine_for(kind)
    call_id, first = call(machine)
    actions = respond(machine, first, 429, [("Retry-After", "2")])
    assert actions == [RetryAt(call_id, NOW + 2)]
    assert machine.calls_in_progress == 1
    # Too early: nothing is sent.
    assert machine.handle(ClockTick(now=NOW + 1)) == []
    assert machine.handle(ClockTick(now=NOW + 1.999)) == []
    # On time: the same request again, as a new request id.
    again = only_send(machine.handle(ClockTick(now=NOW + 2)))
    assert again.call_id == call_id
    assert again.request_id != first.request_id
    assert again.request.url == URL
    assert again.request.method == "GET"
    assert auth(again) == auth_of(kind)
    # It is sent once only.
    assert machine.handle(ClockTick(now=NOW + 3)) == []
    done = respond(machine, again, 200, now=NOW + 3)
    assert done == [Deliver(call_id, 200, (), b"slow", URL)]
    assert machine.calls_in_progress == 0


def test_tick_after_retry_time_resends() -> None:
    machine = machine_for()
    call_id, first = call(machine)
    assert respond(machine, first, 429, [("Retry-After", "2")]) == [RetryAt(call_id, NOW + 2)]
    again = only_send(machine.handle(ClockTick(now=NOW + 50)))
    assert again.call_id == call_id


def test_retry_after_header_name_any_case() -> None:
    machine = machine_for()
    call_id, first = call(machine)
    assert respond(machine, first, 429, [("RETRY-AFTER", "5")]) == [RetryAt(call_id, NOW + 5)]


def test_post_body_kept_on_retry() -> None:
    machine = machine_for()
    actions = machine.handle(
        CallRequested(now=NOW, method="POST", path="booking/create", data={"a": "b c"})
    )
    (first,) = actions
    assert isinstance(first, Send)
    respond(machine, first, 429, [("Retry-After", "1")])
    again = only_send(machine.handle(ClockTick(now=NOW + 1)))
    assert again.request.method == "POST"
    assert again.request.body == b"a=b+c"
    assert again.request.url == "https://acme.checkfront.com/api/3.0/booking/create"


@pytest.mark.parametrize("kind", ["apikey", "oauth"])
def test_three_retries_then_rate_limited(kind: str) -> None:
    machine = machine_for(kind)
    call_id, send = call(machine)
    now = NOW
    for attempt in range(3):
        actions = respond(machine, send, 429, [("Retry-After", "2")], now=now)
        assert actions == [RetryAt(call_id, now + 2)], attempt
        now += 2
        send = only_send(machine.handle(ClockTick(now=now)))
    actions = respond(machine, send, 429, [("Retry-After", "2")], now=now)
    assert len(actions) == 1
    fail = actions[0]
    assert isinstance(fail, Fail)
    assert fail.call_id == call_id
    error = fail.error
    assert isinstance(error, RateLimited)
    assert error.retry_after == 2.0
    assert error.status == 429
    assert error.retryable is True
    assert "429" in str(error)
    assert machine.calls_in_progress == 0
    assert machine.handle(ClockTick(now=now + 100)) == []


def test_retry_count_from_config() -> None:
    machine = machine_for(config=Config(max_rate_limit_retries=1))
    call_id, send = call(machine)
    assert respond(machine, send, 429, [("Retry-After", "1")]) == [RetryAt(call_id, NOW + 1)]
    send = only_send(machine.handle(ClockTick(now=NOW + 1)))
    fail = respond(machine, send, 429, [("Retry-After", "1")], now=NOW + 1)[0]
    assert isinstance(fail, Fail)
    assert isinstance(fail.error, RateLimited)


def test_no_retries_configured_fails_at_once() -> None:
    machine = machine_for(config=Config(max_rate_limit_retries=0))
    _call_id, send = call(machine)
    actions = respond(machine, send, 429, [("Retry-After", "3")])
    assert len(actions) == 1
    assert isinstance(actions[0], Fail)
    assert isinstance(actions[0].error, RateLimited)
    assert actions[0].error.retry_after == 3.0


def test_each_call_has_its_own_retry_budget() -> None:
    machine = machine_for(config=Config(max_rate_limit_retries=1))
    id_a, a = call(machine)
    id_b, b = call(machine)
    assert respond(machine, a, 429, [("Retry-After", "1")]) == [RetryAt(id_a, NOW + 1)]
    assert respond(machine, b, 429, [("Retry-After", "4")]) == [RetryAt(id_b, NOW + 4)]
    a2 = only_send(machine.handle(ClockTick(now=NOW + 1)))
    assert a2.call_id == id_a
    b2 = only_send(machine.handle(ClockTick(now=NOW + 4)))
    assert b2.call_id == id_b


def test_due_calls_sent_in_retry_time_order() -> None:
    machine = machine_for()
    id_a, a = call(machine)
    id_b, b = call(machine)
    respond(machine, a, 429, [("Retry-After", "5")])
    respond(machine, b, 429, [("Retry-After", "3")])
    actions = machine.handle(ClockTick(now=NOW + 10))
    assert [s.call_id for s in actions if isinstance(s, Send)] == [id_b, id_a]


def test_503_with_retry_after_is_retried() -> None:
    machine = machine_for()
    call_id, first = call(machine)
    assert respond(machine, first, 503, [("Retry-After", "10")]) == [RetryAt(call_id, NOW + 10)]
    assert machine.handle(ClockTick(now=NOW + 9)) == []
    again = only_send(machine.handle(ClockTick(now=NOW + 10)))
    assert again.call_id == call_id


def test_503_retries_exhausted_reports_status_503() -> None:
    machine = machine_for()
    _call_id, send = call(machine)
    now = NOW
    for _ in range(3):
        respond(machine, send, 503, [("Retry-After", "1")], now=now)
        now += 1
        send = only_send(machine.handle(ClockTick(now=now)))
    fail = respond(machine, send, 503, [("Retry-After", "1")], now=now)[0]
    assert isinstance(fail, Fail)
    assert isinstance(fail.error, RateLimited)
    assert fail.error.status == 503
    assert fail.error.retry_after == 1.0


@pytest.mark.parametrize(
    "headers",
    [[], [("Retry-After", "soon")], [("Retry-After", "")]],
    ids=["no-header", "garbage", "empty"],
)
def test_503_without_usable_retry_after_is_delivered(headers: Headers) -> None:
    machine = machine_for()
    call_id, first = call(machine)
    actions = respond(machine, first, 503, headers)
    assert actions == [Deliver(call_id, 503, headers, b"slow", URL)]
    assert machine.calls_in_progress == 0


@pytest.mark.parametrize(
    "headers",
    [[], [("Retry-After", "soon")], [("Retry-After", "-5")]],
    ids=["no-header", "garbage", "negative"],
)
def test_429_without_usable_retry_after_uses_default_wait(headers: Headers) -> None:
    machine = machine_for(config=Config(default_retry_wait=7.0))
    call_id, first = call(machine)
    assert respond(machine, first, 429, headers) == [RetryAt(call_id, NOW + 7.0)]


def test_retry_after_beyond_max_wait_fails_at_once() -> None:
    machine = machine_for()
    call_id, first = call(machine)
    actions = respond(machine, first, 429, [("Retry-After", "301")])
    assert len(actions) == 1
    fail = actions[0]
    assert isinstance(fail, Fail)
    assert fail.call_id == call_id
    assert isinstance(fail.error, RateLimited)
    assert fail.error.retry_after == 301.0
    assert fail.error.status == 429
    assert machine.calls_in_progress == 0
    assert machine.handle(ClockTick(now=NOW + 301)) == []


def test_retry_after_at_max_wait_is_honoured() -> None:
    machine = machine_for()
    call_id, first = call(machine)
    assert respond(machine, first, 429, [("Retry-After", "300")]) == [RetryAt(call_id, NOW + 300)]


def test_max_retry_wait_from_config() -> None:
    machine = machine_for(config=Config(max_retry_wait=10.0))
    _call_id, first = call(machine)
    fail = respond(machine, first, 503, [("Retry-After", "11")])[0]
    assert isinstance(fail, Fail)
    assert isinstance(fail.error, RateLimited)
    assert fail.error.retry_after == 11.0
    assert fail.error.status == 503


def test_http_date_retry_after() -> None:
    now = EPOCH_1994 - 5
    machine = Machine(Account.parse("acme"), API_KEY)
    call_id, first = call(machine, now=now)
    actions = respond(machine, first, 429, [("Retry-After", IMF)], now=now)
    assert actions == [RetryAt(call_id, EPOCH_1994)]
    assert machine.handle(ClockTick(now=EPOCH_1994 - 1)) == []
    again = only_send(machine.handle(ClockTick(now=EPOCH_1994)))
    assert again.call_id == call_id


def test_http_date_in_the_past_retries_now() -> None:
    machine = machine_for()
    call_id, first = call(machine)
    assert respond(machine, first, 429, [("Retry-After", IMF)]) == [RetryAt(call_id, NOW)]
    again = only_send(machine.handle(ClockTick(now=NOW)))
    assert again.call_id == call_id


def test_http_date_too_far_fails() -> None:
    now = EPOCH_1994 - 3600
    machine = Machine(Account.parse("acme"), API_KEY)
    _, first = call(machine, now=now)
    fail = respond(machine, first, 429, [("Retry-After", IMF)], now=now)[0]
    assert isinstance(fail, Fail)
    assert isinstance(fail.error, RateLimited)
    assert fail.error.retry_after == 3600.0


def test_cancelled_parked_call_is_not_resent() -> None:
    machine = machine_for()
    call_id, first = call(machine)
    respond(machine, first, 429, [("Retry-After", "2")])
    assert machine.handle(CallCancelled(now=NOW + 1, call_id=call_id)) == []
    assert machine.handle(ClockTick(now=NOW + 2)) == []
    assert machine.calls_in_progress == 0


def test_retry_after_redirect_goes_to_redirected_url() -> None:
    machine = machine_for()
    _call_id, first = call(machine)
    moved = respond(machine, first, 302, [("Location", "/api/3.0/other")])
    second = only_send(moved)
    respond(machine, second, 429, [("Retry-After", "1")])
    again = only_send(machine.handle(ClockTick(now=NOW + 1)))
    assert again.request.url == "https://acme.checkfront.com/api/3.0/other"
    assert auth(again) == API_KEY.authorization


def test_oauth_retry_waits_for_refresh_when_token_expiring() -> None:
    """A retry that comes due when the token is near expiry goes through the refresh."""
    machine = machine_for("oauth", Config(max_retry_wait=20000.0))
    call_id, first = call(machine)
    late = NOW + 14000 - 100
    assert respond(machine, first, 429, [("Retry-After", "13900")]) == [RetryAt(call_id, late)]
    # No Send with the expiring token: the refresh comes first, the call waits for it.
    assert machine.handle(ClockTick(now=late)) == [AcquireLease("expiring")]
    assert machine.calls_in_progress == 1


def test_oauth_retry_carries_current_token() -> None:
    machine = machine_for("oauth")
    call_id, first = call(machine)
    respond(machine, first, 429, [("Retry-After", "2")])
    again = only_send(machine.handle(ClockTick(now=NOW + 2)))
    assert again.call_id == call_id
    assert auth(again) == "Bearer access-token-one"


@pytest.mark.parametrize("digits", [400, 5000], ids=["overflow", "int-limit"])
def test_huge_retry_after_fails_the_call(digits: int) -> None:
    machine = machine_for()
    _call_id, first = call(machine)
    actions = respond(machine, first, 429, [("Retry-After", "9" * digits)])
    assert len(actions) == 1
    assert isinstance(actions[0], Fail)
    assert isinstance(actions[0].error, RateLimited)
