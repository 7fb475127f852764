"""Validation and corner cases of the core that the scenario tests do not reach."""

from __future__ import annotations

import copy
import pickle
from typing import Any, cast

import pytest

from cfauth_core import (
    Account,
    AcquireLease,
    ApiKey,
    AuthorizationRequested,
    CallAccepted,
    CallbackReceived,
    CallCancelled,
    CallRequested,
    Config,
    Deliver,
    Fail,
    InvalidInput,
    LeaseFailed,
    LocalProtocolError,
    Machine,
    OAuth2App,
    RefreshAborted,
    Request,
    ResponseReceived,
    Send,
    SendFailed,
    State,
    TokenSet,
    TokensLoaded,
    call_id_of,
)
from cfauth_core._account import _PATHS
from cfauth_core._tokens import scrub

NOW = 1_000_000.0
APP = OAuth2App("client-id", "client-secret", "https://app.example/cb")


def fresh() -> TokenSet:
    return TokenSet("AT-0", "RT-0", NOW + 10_000, NOW + 86_400 * 10, NOW - 4_000)


# -- events validate their fields ----------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: CallRequested(now=-1.0, method="GET", path="x"), "wall-clock"),
        (lambda: CallRequested(now=float("nan"), method="GET", path="x"), "wall-clock"),
        (lambda: CallRequested(now=cast(Any, True), method="GET", path="x"), "wall-clock"),
        (lambda: CallRequested(now=NOW, method="get", path="x"), "upper case"),
        (lambda: CallRequested(now=NOW, method="GET", path="x", data={"a": "1"}), "no body"),
        (
            lambda: CallRequested(now=NOW, method="GET", path="x", headers=cast(Any, ["ab"])),
            "pairs",
        ),
        (
            lambda: CallRequested(now=NOW, method="GET", path="x", headers=[("Bad Name", "v")]),
            "header name",
        ),
        (
            lambda: CallRequested(now=NOW, method="GET", path="x", headers=[("X-A", "v\r\nX: y")]),
            "CR, LF",
        ),
        (
            lambda: CallRequested(
                now=NOW, method="GET", path="x", headers=[("authorization", "Bearer x")]
            ),
            "set by cfauth",
        ),
        (
            lambda: ResponseReceived(now=-2.0, request_id=1, status=200, headers=(), body=b""),
            "wall-clock",
        ),
        (
            lambda: ResponseReceived(now=NOW, request_id=0, status=200, headers=(), body=b""),
            "positive int",
        ),
        (
            lambda: ResponseReceived(now=NOW, request_id=1, status=99, headers=(), body=b""),
            "status",
        ),
        (
            lambda: ResponseReceived(
                now=NOW, request_id=1, status=200, headers=(), body=cast(Any, "text")
            ),
            "bytes",
        ),
        (lambda: SendFailed(now=NOW, request_id=1, reason=cast(Any, 3)), "reason"),
        (lambda: SendFailed(now=NOW, request_id=1, retryable=cast(Any, 0)), "True or False"),
        (lambda: TokensLoaded(now=NOW, tokens=cast(Any, {"access_token": "x"})), "TokenSet"),
        (lambda: LeaseFailed(now=NOW, reason=cast(Any, None)), "reason"),
        (lambda: AuthorizationRequested(now=NOW, state=cast(Any, 1)), "strings"),
        (lambda: CallbackReceived(now=NOW, url=cast(Any, b"code=x")), "callback URL"),
        (lambda: CallbackReceived(now=NOW, url="code=x", redirected_at=-5.0), "wall-clock"),
        (lambda: CallCancelled(now=NOW, call_id=cast(Any, "1")), "positive int"),
    ],
)
def test_malformed_events_are_refused(build: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        build()


# -- configuration and construction -----------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"refresh_leeway": -1}, "non-negative number"),
        ({"max_retry_wait": cast(Any, "10")}, "non-negative number"),
        ({"exchange_window": cast(Any, True)}, "non-negative number"),
        ({"max_redirects": 21}, "whole number"),
        ({"max_rate_limit_retries": cast(Any, 1.5)}, "whole number"),
        ({"user_agent": "agent\r\nX-Evil: 1"}, "control characters"),
        ({"pkce": cast(Any, "yes")}, "True or False"),
    ],
)
def test_bad_config_is_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Config(**options)


def test_machine_refuses_wrong_arguments() -> None:
    with pytest.raises(InvalidInput, match=r"Account\.parse"):
        Machine(cast(Any, "acme"), ApiKey("k", "secret"))
    with pytest.raises(InvalidInput, match="ApiKey"):
        Machine(Account.parse("acme"), cast(Any, ("k", "s")))
    with pytest.raises(InvalidInput, match="TokenSet or None"):
        Machine(Account.parse("acme"), APP, cast(Any, {"access_token": "x"}))
    with pytest.raises(InvalidInput, match="no OAuth2 tokens"):
        Machine(Account.parse("acme"), ApiKey("k", "secret"), fresh())


def test_machine_exposes_its_config_and_a_secret_free_repr() -> None:
    config = Config(refresh_leeway=60)
    machine = Machine(Account.parse("acme"), APP, fresh(), config=config)
    assert machine.config is config
    assert machine.state is State.READY
    text = repr(machine)
    assert "acme.checkfront.com" in text
    assert "client-secret" not in text
    assert "AT-0" not in text


# -- records ----------------------------------------------------------------------------------


def test_records_are_immutable_comparable_hashable_and_copyable() -> None:
    tokens = fresh()
    with pytest.raises(AttributeError, match="immutable"):
        tokens.access_token = "other"
    with pytest.raises(AttributeError, match="immutable"):
        del tokens.scope
    assert tokens == copy.deepcopy(tokens)
    assert tokens == pickle.loads(pickle.dumps(tokens))  # noqa: S301 - our own bytes
    assert tokens != ("AT-0", "RT-0")
    assert (tokens == object()) is False
    assert hash(tokens) == hash(copy.copy(tokens))
    assert len({tokens, copy.copy(tokens), fresh()}) == 1
    other = TokenSet("AT-1", "RT-0", NOW, NOW, NOW)
    assert other != tokens
    assert len({tokens, other}) == 2
    match tokens:
        case TokenSet(access, refresh):
            assert (access, refresh) == ("AT-0", "RT-0")
        case _:  # pragma: no cover - the match above must succeed
            pytest.fail("positional match failed")


def test_account_copies_keep_their_origin() -> None:
    account = Account.parse("https://acme.checkfront.com:8443")
    clone = pickle.loads(pickle.dumps(account))  # noqa: S301 - our own bytes
    assert clone.origin == "https://acme.checkfront.com:8443"
    assert clone == account


# -- smaller paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("alpha beta gamma", 16, "alpha beta gamma"),  # fits
        ("alpha beta gamma", 12, "alpha beta..."),  # cut inside "gamma": ends after "beta"
        ("alpha beta  gamma", 12, "alpha beta..."),
        ("alpha beta gamma delta", 16, "alpha beta gamma..."),  # the cut falls on a space
        ("alphabetagammadelta", 12, "alphabetagam..."),  # no space to end on
    ],
)
def test_scrub_shortens_after_a_whole_word(text: str, limit: int, expected: str) -> None:
    assert scrub(text, [], limit=limit) == expected


def test_scrub_leaves_very_short_secrets_alone() -> None:
    assert scrub("refused by server", ["s"]) == "refused by server"
    assert scrub("token abcd leaked", ["abcd"]) == "token <hidden> leaked"


def test_path_memo_stays_bounded() -> None:
    account = Account.parse("acme")
    for index in range(1100):
        assert account.api_path(f"item/{index}") == f"/api/3.0/item/{index}"
    assert len(_PATHS) <= 1024


def test_same_host_redirect_of_a_call_sent_before_the_move() -> None:
    """A call in flight to the old host that the old host redirects within itself
    is followed there (it is the origin the request went to)."""
    machine = Machine(Account.parse("acme"), ApiKey("key", "secret"))
    first = machine.handle(CallRequested(now=NOW, method="GET", path="a"))[0]
    second = machine.handle(CallRequested(now=NOW, method="GET", path="b"))[0]
    assert isinstance(first, Send)
    assert isinstance(second, Send)
    moved = machine.handle(
        ResponseReceived(
            now=NOW,
            request_id=first.request_id,
            status=301,
            headers=[("Location", "https://acme.manage.na1.bookingplatform.app/api/3.0/a")],
            body=b"",
        )
    )
    assert machine.account.host == "acme.manage.na1.bookingplatform.app"
    assert isinstance(moved[-1], Send)
    again = machine.handle(
        ResponseReceived(
            now=NOW,
            request_id=second.request_id,
            status=302,
            headers=[("Location", "/api/3.0/b2")],
            body=b"",
        )
    )
    send = again[0]
    assert isinstance(send, Send)
    assert send.request.url == "https://acme.checkfront.com/api/3.0/b2"
    done = machine.handle(
        ResponseReceived(now=NOW, request_id=send.request_id, status=200, headers=(), body=b"")
    )
    assert done == [Deliver(send.call_id or 0, 200, (), b"", send.request.url)]


def test_token_request_redirected_to_itself_is_a_loop() -> None:
    tokens = TokenSet("AT-0", "RT-0", NOW + 10, NOW + 86_400 * 10, NOW - 13_990)
    machine = Machine(Account.parse("acme"), APP, tokens)
    actions = machine.handle(CallRequested(now=NOW, method="GET", path="item"))
    assert isinstance(actions[1], AcquireLease)
    refresh = machine.handle(TokensLoaded(now=NOW, tokens=None))[0]
    assert isinstance(refresh, Send)
    followed = machine.handle(
        ResponseReceived(
            now=NOW,
            request_id=refresh.request_id,
            status=307,
            headers=[("Location", "/oauth/token/")],
            body=b"",
        )
    )
    assert not [a for a in followed if isinstance(a, Send)]
    aborted = [a for a in followed if isinstance(a, RefreshAborted)]
    assert len(aborted) == 1
    assert "loops back" in str(aborted[0].error)
    assert machine.tokens == tokens
    assert machine.account.origin == "https://acme.checkfront.com"


def test_oversized_400_body_is_not_parsed_as_a_token_rejection() -> None:
    machine = Machine(Account.parse("acme"), APP, fresh())
    send = machine.handle(CallRequested(now=NOW, method="GET", path="item"))[0]
    assert isinstance(send, Send)
    body = b'{"error": "invalid_token", "pad": "' + b"x" * 70_000 + b'"}'
    done = machine.handle(
        ResponseReceived(now=NOW, request_id=send.request_id, status=400, headers=(), body=body)
    )
    assert len(done) == 1
    assert isinstance(done[0], Deliver)
    assert done[0].status == 400


def test_the_path_memo_stays_small_whatever_paths_are_sent() -> None:
    """1,024 calls with 100 KB paths once kept 205 MB alive in the memo."""
    account = Account.parse("acme")
    for index in range(1024):
        long_path = f"item/{index}/" + "x" * 100_000
        assert account.api_path(long_path) == "/api/3.0/" + long_path
        held = sum(len(base) + len(path) + len(full) for (base, path), full in _PATHS.items())
        assert held < 1_000_000
    for index in range(2048):
        assert account.api_path(f"item/{index}") == f"/api/3.0/item/{index}"
        assert len(_PATHS) <= 1024
    held = sum(len(base) + len(path) + len(full) for (base, path), full in _PATHS.items())
    assert held < 1_000_000


def test_a_long_path_is_still_checked_every_time() -> None:
    account = Account.parse("acme")
    long_path = "item/" + "x" * 1000
    assert account.api_path(long_path) == "/api/3.0/" + long_path
    with pytest.raises(InvalidInput):
        account.api_path(long_path + "/../secret")


def _leaf_records() -> list[type]:
    import cfauth_core
    from cfauth_core._record import Record

    found = []
    for name in cfauth_core.__all__:
        value = getattr(cfauth_core, name)
        is_record = isinstance(value, type) and issubclass(value, Record)
        if is_record and value.__dict__.get("__slots__"):
            found.append(value)
    return found


@pytest.mark.parametrize("record", _leaf_records(), ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("own_slots", [(), ("extra",)], ids=["no-slots", "slots"])
def test_records_are_final(record: type, own_slots: tuple[str, ...]) -> None:
    """Subclassing a record fails at once with a TypeError saying what to do,
    not later with a misleading "is immutable"."""
    with pytest.raises(TypeError, match=f"{record.__name__} cannot be subclassed.*wrap"):
        type("Sub", (record,), {"__slots__": own_slots})


def test_record_bases_stay_open() -> None:
    """Event and Action (no fields of their own) are the bases records derive from."""
    from cfauth_core import Action, Event

    assert type("MyEvent", (Event,), {"__slots__": ("now",)})
    assert type("MyAction", (Action,), {"__slots__": ()})


def test_call_id_of_names_the_call_of_any_first_action() -> None:
    """The first action for a CallRequested names the call: a ready call's Send, a
    failed call's Fail, a waiting call's CallAccepted; anything else is refused."""
    ready = Machine(Account.parse("acme"), ApiKey("key", "secret"))
    sent = ready.handle(CallRequested(now=NOW, method="GET", path="item"))
    assert [type(a) for a in sent] == [Send]
    assert call_id_of(sent) == 1
    unauthorized = Machine(Account.parse("acme"), OAuth2App("id", "s", "https://app/cb"))
    failed = unauthorized.handle(CallRequested(now=NOW, method="GET", path="item"))
    assert [type(a) for a in failed] == [Fail]
    assert call_id_of(failed) == 1
    assert call_id_of([CallAccepted(7), AcquireLease("expiring")]) == 7
    request = Request("POST", "https://acme.checkfront.com/oauth/token/", ())
    for wrong in ([], [AcquireLease("expiring")], [Send(1, request, None, "refresh")]):
        with pytest.raises(InvalidInput, match="first action names the call"):
            call_id_of(wrong)


@pytest.mark.parametrize("params", [None, {"page": "1"}])
def test_cancelling_a_call_in_flight_forgets_it(params: dict[str, str] | None) -> None:
    """A call cancelled while its request is in flight (a plain one sent straight
    from the remembered requests, or one with parameters) is gone: its answer is
    refused as not in flight, and other calls go on."""
    machine = Machine(Account.parse("acme"), ApiKey("key", "secret"))
    machine.handle(CallRequested(now=NOW, method="GET", path="item"))  # remembered
    other = machine.handle(CallRequested(now=NOW, method="GET", path="other"))[0]
    (send,) = machine.handle(CallRequested(now=NOW, method="GET", path="item", params=params))
    assert isinstance(send, Send)
    assert isinstance(other, Send)
    assert machine.handle(CallCancelled(now=NOW, call_id=call_id_of([send]))) == []
    assert machine.calls_in_progress == 2
    with pytest.raises(LocalProtocolError, match="not in flight"):
        machine.handle(
            ResponseReceived(now=NOW, request_id=send.request_id, status=200, headers=[], body=b"")
        )
    delivered = machine.handle(
        ResponseReceived(now=NOW, request_id=other.request_id, status=200, headers=[], body=b"")
    )
    assert [type(a) for a in delivered] == [Deliver]
