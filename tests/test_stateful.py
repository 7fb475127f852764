"""Stateful property tests: random interleavings of everything an adapter can report.

A Hypothesis ``RuleBasedStateMachine`` plays the adapter (in the manner of
python-hyper/priority's ``test/test_priority.py``): it keeps the requests in
flight, the token store and the refresh lease, answers ``AcquireLease``, logs in
again when the grant is lost, and checks every action list the machine returns
against the guarantees of the design:

(a) credentials only to the account's current origin or a trusted migration
    target, never over http;
(b) the client secret only to ``/oauth/token/``, API credentials never there;
(c) at most one token request (refresh or exchange) in flight;
(d) no bearer token sent before the ``Store`` that introduced it;
(e) a refresh token rotated out is never sent again;
(f) every call ends exactly once, and the open calls are all accounted for;
(g) ``Store`` before ``ReleaseLease`` in one action list;
(h) misuse raises ``LocalProtocolError`` and changes nothing;
(i) ``handle()`` raises nothing else: what the server sends (redirects,
    migrations racing token requests, garbage) never raises;
(j) a lease the machine asked for is released (after the ``Store`` of the
    new tokens, if any) within a bounded number of answers to its refresh,
    and draining every request at the end releases it.

The model's rules about other processes: under the lease, another process's
pair is adopted whatever its ``updated_at`` says (its clock may lag); outside
the lease only a pair at least as recent as the machine's is adopted, and an
older one (a lagging read) is ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from enum import Enum
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from cfauth_core import (
    CALLS_WAIT,
    EVENTS_ALLOWED,
    REFRESH_TOKEN_LIFETIME,
    AccountMoved,
    AcquireLease,
    Action,
    ApiKey,
    AuthorizationDenied,
    AuthorizationFailed,
    AuthorizationLost,
    AuthorizationRequested,
    AuthorizeAt,
    Authorized,
    CallAccepted,
    CallbackReceived,
    CallCancelled,
    CallRequested,
    ClockTick,
    CodeExpired,
    Deliver,
    Event,
    Fail,
    Forget,
    LeaseFailed,
    LocalProtocolError,
    LogoutRequested,
    Machine,
    OAuth2App,
    OAuthStateMismatch,
    RefreshAborted,
    ReleaseLease,
    ResponseReceived,
    RetryAt,
    Send,
    SendFailed,
    State,
    Store,
    StoreFailed,
    TokenSet,
    TokensLoaded,
    call_id_of,
)
from cfauth_core import Account as _Account
from cfauth_core._account import is_oauth_path
from tests.helpers import header

T0 = 1_700_000_000.0
DAY = 86_400.0
ORIGIN = "https://acme.checkfront.com"
NA1 = "https://acme.manage.na1.bookingplatform.app"
EU1 = "https://acme.manage.eu1.bookingplatform.app"
TOKEN_PATH = "/oauth/token/"
CLIENT_SECRET = "SECRET-client-0001"
API_SECRET = "SECRET-api-0001"
APP = OAuth2App("cfauth-test-client", CLIENT_SECRET, "https://app.example/callback")
API_KEY = ApiKey("key-0001", API_SECRET)
CLIENT_B64 = APP.token_authorization.split(" ", 1)[1]
API_B64 = API_KEY.authorization.split(" ", 1)[1]
#: Where an account named ``acme`` may migrate to (https, port 443).
MIGRATION_ORIGIN = re.compile(r"https://acme\.manage\.[a-z]{2}[0-9]{1,2}\.bookingplatform\.app")

SETTINGS = settings(
    max_examples=200,
    stateful_step_count=50,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# -- helpers -------------------------------------------------------------------


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def tokens_at(stamp: float, serial: int, *, life: float = 14_000.0) -> TokenSet:
    return TokenSet(
        access_token=f"ACCESS-{serial:04d}",
        refresh_token=f"REFRESH-{serial:04d}",
        expires_at=stamp + life,
        refresh_expires_at=stamp + REFRESH_TOKEN_LIFETIME,
        updated_at=stamp,
    )


def snapshot(obj: Any, depth: int = 0) -> Any:
    """A structural, comparable copy of ``obj`` (slots and ``__dict__`` walked)."""
    assert depth < 50
    if obj is None or isinstance(obj, (str, bytes, int, float, Enum)):
        return obj
    if isinstance(obj, dict):
        return (
            "dict",
            tuple((snapshot(k, depth + 1), snapshot(v, depth + 1)) for k, v in obj.items()),
        )
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, tuple(snapshot(v, depth + 1) for v in obj))
    if isinstance(obj, (set, frozenset)):
        return ("set", frozenset(snapshot(v, depth + 1) for v in obj))
    if isinstance(obj, type) or (callable(obj) and hasattr(obj, "__code__")):
        return obj
    fields: list[tuple[str, Any]] = []
    for klass in type(obj).__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name != "__weakref__" and hasattr(obj, name):
                fields.append((name, snapshot(getattr(obj, name), depth + 1)))
    if hasattr(obj, "__dict__"):
        fields.extend((k, snapshot(v, depth + 1)) for k, v in sorted(vars(obj).items()))
    return (type(obj).__qualname__, tuple(fields))


def machine_snapshot(machine: Machine) -> Any:
    return (
        machine.state,
        machine.calls_in_progress,
        machine.tokens,
        machine.account,
        repr(machine),
        snapshot(machine),
    )


# -- the replies the fake server gives ------------------------------------------


class Reply(NamedTuple):
    """A canned response; ``{SELF}`` in a header stands for the request's URL and
    ``{CURRENT}`` for the account's current origin."""

    label: str
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


INVALID_TOKEN = json.dumps(
    {"error": "invalid_token", "error_description": "The access token provided is invalid."}
).encode()

LOCATIONS: dict[str, str] = {
    "same-relative": "/api/3.0/booking/index",
    "same-relative-other": "/api/3.0/item?page=2",
    "same-absolute": "{CURRENT}/api/3.0/booking/index",
    "old-origin": ORIGIN + "/api/3.0/booking/index",
    "na1": NA1 + "/api/3.0/booking/index",
    "na1-origin-only": NA1,
    "eu1": EU1 + "/api/3.0/item",
    "evil": "https://evil.example/api/3.0/booking/index",
    "evil-suffix": "https://acme.checkfront.com.evil.example/api/3.0/",
    "other-account": "https://other.manage.na1.bookingplatform.app/api/3.0/",
    "http-same": "http://acme.checkfront.com/api/3.0/booking/index",
    "http-na1": "http://acme.manage.na1.bookingplatform.app/api/3.0/",
    "userinfo": "https://user:pw@acme.checkfront.com/api/3.0/",
    "port": "https://acme.checkfront.com:8443/api/3.0/",
    "ip": "https://127.0.0.1/api/3.0/",
    "scheme": "ftp://acme.checkfront.com/api/3.0/",
    "protocol-relative": "//evil.example/api/3.0/",
    "loop": "{SELF}",
}
LOCATIONS["token-url"] = "/oauth/token/"
LOCATIONS["token-url-encoded"] = "/%6fauth/token/"
LOCATIONS["token-url-dot"] = "/%2e/oauth/token/"
LOCATIONS["token-url-na1"] = NA1 + "//OAUTH/token/"

CALL_REPLIES: list[Reply] = [
    Reply("200", 200, (("Content-Type", "application/json"),), b'{"request":{"status":"OK"}}'),
    Reply("204", 204),
    Reply("404", 404, (), b'{"error":"not found"}'),
    Reply("500", 500),
    Reply("401", 401),
    Reply("401-challenge", 401, (("WWW-Authenticate", 'Bearer error="invalid_token"'),)),
    Reply("400-invalid_token", 400, (), INVALID_TOKEN),
    Reply("400-invalid_request", 400, (), b'{"error":"invalid_request"}'),
    Reply("403", 403, (), b'{"error":"insufficient_scope"}'),
    Reply("403-invalid_token", 403, (("WWW-Authenticate", 'Bearer error="invalid_token"'),)),
    Reply("429", 429, (("Retry-After", "1"),)),
    Reply("429-30", 429, (("Retry-After", "30"),)),
    Reply("429-too-long", 429, (("Retry-After", "3600"),)),
    Reply("429-date-past", 429, (("Retry-After", "Sun, 06 Nov 1994 08:49:37 GMT"),)),
    Reply("429-date-future", 429, (("Retry-After", "Sun, 06 Nov 2033 08:49:37 GMT"),)),
    Reply("429-bare", 429),
    Reply("429-garbage", 429, (("Retry-After", "soon"),)),
    Reply("503", 503),
    Reply("503-retry", 503, (("Retry-After", "2"),)),
    *(
        Reply(f"{status}-{name}", status, (("Location", location),))
        for status in (301, 302, 303, 307, 308)
        for name, location in LOCATIONS.items()
    ),
    *(Reply(f"{status}-no-location", status) for status in (301, 302, 307)),
]
CALL_REPLIES.append(Reply("429-huge", 429, (("Retry-After", "9" * 400),)))

TOKEN_REPLY_LABELS = [
    "ok",
    "ok-no-expires-in",
    "ok-short-lived",
    "ok-no-refresh-token",
    "invalid_grant",
    "invalid_client-401",
    "500",
    "503-retry",
    "not-json",
    "json-list",
    "access-token-with-space",
    "expires-in-text",
    "mac-token",
    "echo-secrets",
    "307-na1",
    "308-na1",
    "302-evil",
    "303-same",
    "307-other-path",
    "307-loop",
    # Migrations of the token request itself, racing a call's migration.
    "301-na1",
    "308-eu1",
    "301-current",
    "307-current",
    "308-current",
    "308-old-origin",
]
#: Answers to a token request that end it, in the lease bound (j): every other
#: answer ends it too, or re-sends it (one more redirect hop, or the one retry
#: with the raw client credentials).
MAX_TOKEN_ANSWERS_UNDER_LEASE = 5 + 1 + 1


# -- the adapter ------------------------------------------------------------------


class Harness(RuleBasedStateMachine):
    """Plays the adapter around one machine; subclasses pick the credential."""

    OAUTH = True
    APP = APP
    SECRET = CLIENT_SECRET
    RAW_SERVER = False  # the token URL refuses the percent-encoded client credentials

    def client_authorizations(self) -> tuple[str, str]:
        return (
            self.APP.token_authorization_in("rfc6749"),
            self.APP.token_authorization_in("raw"),
        )

    def client_b64s(self) -> list[str]:
        return [value.split(" ", 1)[1] for value in self.client_authorizations()]

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.serial = 0
        self.machine: Machine | None = None
        self.origin = ORIGIN
        self.past_origins = {ORIGIN}
        self.inflight: dict[int, Send] = {}
        self.answered: set[int] = set()
        self.store: TokenSet | None = None
        self.stored_access: set[str] = set()
        self.introduced_access: set[str] = set()
        self.rotated: set[str] = set()
        self.refused: set[str] = set()
        self.open: set[int] = set()
        self.ended: set[int] = set()
        self.endings: dict[int, int] = {}  # Deliver or Fail actions seen per call
        self.parked: dict[int, float] = {}
        self.due_pending = False
        self.lease_held = False
        self.lease_answers = 0  # answers to the refresh since the lease was taken
        # The adapter's store may fail to save: the pair whose save failed (until
        # it is saved again under the lease), and the StoreFailed to report.
        self.saves_fail = False
        self.unsaved: TokenSet | None = None
        self.failed_store: TokenSet | None = None
        self.due_unsaved: TokenSet | None = None
        self.login: tuple[str, str] | None = None
        self.used_states: list[str] = []
        self.codes: set[str] = set()

    # -- plumbing ----------------------------------------------------------------

    def state(self) -> State:
        return self.m.state

    @property
    def m(self) -> Machine:
        assert self.machine is not None
        return self.machine

    def fresh(self) -> int:
        self.serial += 1
        return self.serial

    def remember_store(self, tokens: TokenSet) -> None:
        if self.store is not None and self.store.refresh_token != tokens.refresh_token:
            self.rotated.add(self.store.refresh_token)
        self.store = tokens
        self.stored_access.add(tokens.access_token)

    def feed(self, event: Event) -> list[Action]:
        try:
            actions = self.m.handle(event)
        except Exception as error:
            # (i) an allowed event, whatever the server said, never raises.
            raise AssertionError(f"(i) handle({event!r}) raised {error!r}") from error
        self.check_actions(event, actions)
        failed, self.failed_store = self.failed_store, None
        if failed is not None:
            # The adapter reports the failed save; the machine goes on with the
            # pair (nothing to do now) and has it saved again under the lease.
            assert self.m.handle(StoreFailed(now=self.now, tokens=failed, reason="disk full")) == []
        return actions

    def expect_refused(
        self, event: Event, error: type[Exception] = LocalProtocolError
    ) -> Exception:
        before = machine_snapshot(self.m)
        with pytest.raises(error) as info:
            self.m.handle(event)
        assert machine_snapshot(self.m) == before, f"{event!r} raised but changed the machine"
        return info.value

    def check_actions(self, event: Event, actions: list[Action]) -> None:
        assert isinstance(actions, list)
        origin = self.origin
        stores = [i for i, a in enumerate(actions) if isinstance(a, Store)]
        if isinstance(event, CallRequested):
            # The protocol rule: the first action names the new call.  It is the
            # call's Send when it goes out at once, its Fail when it fails at
            # once, and CallAccepted only when something else comes first.
            new = call_id_of(actions)
            assert new not in self.open | self.ended
            first = actions[0]
            if isinstance(first, Send):
                assert first.purpose == "call"
            elif isinstance(first, CallAccepted):
                following = actions[1] if len(actions) > 1 else None
                assert not (isinstance(following, (Send, Fail)) and following.call_id == new), (
                    f"CallAccepted before the call's own {following!r}"
                )
            else:
                assert isinstance(first, Fail)
            self.open.add(new)
        for index, action in enumerate(actions):
            assert isinstance(action, Action)
            if isinstance(action, CallAccepted):
                assert isinstance(event, CallRequested)
                assert index == 0
            elif isinstance(action, Send):
                if action.purpose == "call":
                    # Every later action for a call uses the id its first action gave.
                    assert action.call_id in self.open, f"{action!r} for a call not open"
                self.check_send(action, origin)
            elif isinstance(action, Store):
                assert self.OAUTH
                # Only a token response (refresh or exchange) produces tokens to store.
                assert isinstance(event, ResponseReceived)
                if self.saves_fail:
                    # The server rotated the stored refresh token all the same.
                    if self.store is not None:
                        self.rotated.add(self.store.refresh_token)
                    self.unsaved = self.failed_store = action.tokens
                    # (d) extended: a Store that failed still introduced its token.
                    self.introduced_access.add(action.tokens.access_token)
                else:
                    self.unsaved = None
                    self.remember_store(action.tokens)
            elif isinstance(action, ReleaseLease):
                assert self.lease_held, "ReleaseLease without a lease"
                self.lease_held = False
                assert all(i < index for i in stores), "(g) Store after ReleaseLease"
            elif isinstance(action, AcquireLease):
                assert self.OAUTH
                assert not self.due_pending
                assert not self.lease_held
                assert action.reason in ("expiring", "keep-alive", "rejected")
                # A pair in use whose save failed is saved under the lease before
                # the store is read; no other pair is ever handed back.
                pending = self.unsaved if self.unsaved == self.m.tokens else None
                assert action.unsaved == pending, f"{action!r}: unsaved should be {pending!r}"
                self.due_unsaved = action.unsaved
                self.due_pending = True
            elif isinstance(action, (Deliver, Fail)):
                self.endings[action.call_id] = self.endings.get(action.call_id, 0) + 1
                assert action.call_id in self.open, f"(f) {action!r} for a call not open"
                self.open.discard(action.call_id)
                self.ended.add(action.call_id)
                self.parked.pop(action.call_id, None)
            elif isinstance(action, RetryAt):
                assert action.call_id in self.open
                assert isinstance(event, ResponseReceived)
                assert action.at >= event.now
                assert action.call_id not in self.parked
                self.parked[action.call_id] = action.at
            elif isinstance(action, AccountMoved):
                assert action.old_origin == origin
                assert MIGRATION_ORIGIN.fullmatch(action.new_origin), action
                origin = action.new_origin
                self.past_origins.add(origin)
            elif isinstance(action, AuthorizeAt):
                assert isinstance(event, AuthorizationRequested)
            elif isinstance(action, Forget):
                assert isinstance(event, LogoutRequested)
                assert actions == [action]
            elif isinstance(action, Authorized):
                assert stores
                assert stores[0] < index
            else:
                assert isinstance(action, (AuthorizationFailed, RefreshAborted, AuthorizationLost))
        self.origin = origin
        assert self.m.account.origin == origin

    def check_send(self, send: Send, origin: str) -> None:
        request = send.request
        assert send.request_id not in self.inflight
        assert send.request_id not in self.answered
        parts = urlsplit(request.url)
        assert parts.scheme == "https", f"(a) {request!r} over plain http"
        target = origin_of(request.url)
        auth = header(request.headers, "authorization")
        body = request.body or b""
        assert auth is not None
        # (a) credentials only to the account or a trusted migration target.  The core
        # also re-sends a call sent before the account moved to the origin it went to
        # when that origin redirects to itself (the account's own former origin).
        trusted = target == origin or MIGRATION_ORIGIN.fullmatch(target) is not None
        assert trusted or target in self.past_origins, f"(a) {request!r}"
        if send.purpose == "call":
            assert send.call_id in self.open
            # (b) API credentials never to the token URL, client secret never on a call.
            assert not is_oauth_path(parts.path), f"(b) {request!r}"
            assert self.SECRET not in request.url
            assert not any(b64 in auth for b64 in self.client_b64s())
            assert self.SECRET.encode() not in body
            if self.OAUTH:
                scheme, _, token = auth.partition(" ")
                assert scheme == "Bearer"
                # (d) never a token before the Store that introduced it (stored,
                # or its save failed and it is saved again under the lease).
                assert token in self.stored_access or token in self.introduced_access, (
                    f"(d) {token} used before it was stored"
                )
            else:
                assert auth == API_KEY.authorization
            self.parked.pop(send.call_id, None)
        else:
            assert self.OAUTH
            assert send.call_id is None
            # (b) the client secret, to the token URL only.
            # Either form of the client credentials (the raw one after invalid_client).
            assert auth in self.client_authorizations()
            assert parts.path == TOKEN_PATH, f"(b) {request!r}"
            assert not parts.query
            # (c) one token request at a time.
            assert not any(s.purpose != "call" for s in self.inflight.values()), "(c)"
            fields = parse_qs(body.decode("ascii"))
            if send.purpose == "refresh":
                assert fields["grant_type"] == ["refresh_token"]
                (refresh_token,) = fields["refresh_token"]
                # (e) a rotated-out refresh token is never sent again.
                assert refresh_token not in self.rotated, f"(e) {refresh_token} was rotated out"
                assert refresh_token not in self.refused, f"{refresh_token} was refused"
                assert self.lease_held
            else:
                assert send.purpose == "exchange"
                assert fields["grant_type"] == ["authorization_code"]
                assert fields["code"][0] in self.codes
                assert send.deadline is not None
        self.inflight[send.request_id] = send

    def take(self, request_id: int) -> Send:
        send = self.inflight.pop(request_id)
        self.answered.add(request_id)
        return send

    # -- setup -----------------------------------------------------------------------

    @initialize(start=st.sampled_from(["tokens", "none", "expiring", "keep-alive"]))
    def start(self, start: str) -> None:
        account = _Account.parse("acme")
        if not self.OAUTH:
            self.machine = Machine(account, API_KEY)
            return
        tokens: TokenSet | None
        if start == "none":
            tokens = None
        elif start == "tokens":
            tokens = tokens_at(self.now, self.fresh())
        elif start == "expiring":
            tokens = tokens_at(self.now - 13_900, self.fresh())
        else:
            serial = self.fresh()
            tokens = TokenSet(
                access_token=f"ACCESS-{serial:04d}",
                refresh_token=f"REFRESH-{serial:04d}",
                expires_at=self.now + 10_000,
                refresh_expires_at=self.now + DAY / 2,
                updated_at=self.now - 13.5 * DAY,
            )
        if tokens is not None:
            self.remember_store(tokens)
        self.machine = Machine(account, self.APP, tokens)
        assert self.m.state is (State.READY if tokens else State.UNAUTHORIZED)

    # -- calls -----------------------------------------------------------------------

    @rule(
        method=st.sampled_from(["GET", "POST"]),
        path=st.sampled_from(["booking/index", "item", "customer/42"]),
    )
    def call(self, method: str, path: str) -> None:
        data = {"status_id": "PAID"} if method == "POST" else None
        params = {"page": "1"} if method == "GET" else None
        event = CallRequested(now=self.now, method=method, path=path, params=params, data=data)
        actions = self.feed(event)
        assert call_id_of(actions) in self.open | self.ended

    def pick(self, purpose: str, index: int) -> int | None:
        ids = sorted(
            r for r, s in self.inflight.items() if (s.purpose == "call") == (purpose == "call")
        )
        return ids[index % len(ids)] if ids else None

    def has_inflight(self, purpose: str) -> bool:
        return self.pick(purpose, 0) is not None

    @precondition(lambda self: self.has_inflight("call"))
    @rule(index=st.integers(0, 63), reply=st.sampled_from(CALL_REPLIES))
    def answer_call(self, index: int, reply: Reply) -> None:
        request_id = self.pick("call", index)
        assert request_id is not None
        send = self.take(request_id)
        headers = tuple(
            (n, v.replace("{SELF}", send.request.url).replace("{CURRENT}", self.origin))
            for n, v in reply.headers
        )
        event = ResponseReceived(
            now=self.now,
            request_id=request_id,
            status=reply.status,
            headers=headers,
            body=reply.body,
        )
        actions = self.feed(event)
        call_id = send.call_id
        assert call_id is not None
        if reply.status < 300 or reply.label in ("404", "500", "503"):
            (deliver,) = actions
            assert isinstance(deliver, Deliver)
            assert deliver.call_id == call_id
            assert (deliver.status, deliver.body) == (reply.status, reply.body)
        if not self.OAUTH and reply.status in (401, 403):
            assert [type(a) for a in actions] == [Fail]

    @precondition(lambda self: self.has_inflight("call"))
    @rule(
        index=st.integers(0, 63),
        status=st.sampled_from([301, 308]),
        where=st.sampled_from([NA1, EU1, ORIGIN]),
    )
    def migrate_call(self, index: int, status: int, where: str) -> None:
        """A call in flight is answered with the account's migration (often while a
        token request is in flight too: the race the token redirects above meet)."""
        request_id = self.pick("call", index)
        assert request_id is not None
        self.take(request_id)
        location = (("Location", where + "/api/3.0/booking/index"),)
        self.feed(
            ResponseReceived(
                now=self.now, request_id=request_id, status=status, headers=location, body=b""
            )
        )

    def set_up_race(self, via: str) -> None:
        """A call goes out; then a token request starts while it is in flight: a
        refresh (a second call answered 401, under the lease), or the code exchange
        of a new login over the held grant."""
        if self.state() is not State.READY or self.m.tokens is None:
            return
        before = set(self.inflight)
        self.call("GET", "booking/index")
        if via == "exchange":
            if self.state() is State.READY:  # the call did not start a refresh
                self.authorize()
                self.callback("code")
            return
        self.call("GET", "item")
        sent = sorted(set(self.inflight) - before)
        if len(sent) != 2:
            return
        self.take(sent[1])
        self.feed(
            ResponseReceived(now=self.now, request_id=sent[1], status=401, headers=(), body=b"")
        )
        if self.due_pending:
            self.answer_refresh_due("store", 0.0)

    @precondition(lambda self: self.OAUTH)
    @rule(
        index=st.integers(0, 63),
        status=st.sampled_from([301, 308]),
        label=st.sampled_from(
            ["301-na1", "308-eu1", "301-current", "307-current", "308-current", "307-na1"]
        ),
        call_first=st.booleans(),
        via=st.sampled_from(["refresh", "exchange"]),
    )
    def race_migration(
        self, index: int, status: int, label: str, call_first: bool, via: str
    ) -> None:
        """A call's migration and a redirect of the token request in flight, in
        either order (the token request may follow the account or lead it)."""
        if not self.has_inflight("token"):
            self.set_up_race(via)
        if not (self.has_inflight("call") and self.has_inflight("token")):
            return
        if call_first:
            self.migrate_call(index, status, NA1)
            if self.has_inflight("token"):
                self.answer_token(label)
        else:
            self.answer_token(label)
            if self.has_inflight("call"):
                self.migrate_call(index, status, NA1)

    def token_reply(self, label: str, send: Send) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
        serial = self.fresh()
        pair = {
            "access_token": f"ACCESS-{serial:04d}",
            "refresh_token": f"REFRESH-{serial:04d}",
            "expires_in": 14000,
            "token_type": "bearer",
        }
        if label == "ok":
            return 200, (), json.dumps(pair).encode()
        if label == "ok-no-expires-in":
            del pair["expires_in"]
            return 200, (), json.dumps(pair).encode()
        if label == "ok-short-lived":
            pair["expires_in"] = 120
            return 200, (), json.dumps(pair).encode()
        if label == "ok-no-refresh-token":
            del pair["refresh_token"]
            return 200, (), json.dumps(pair).encode()
        if label == "invalid_grant":
            error = {"error": "invalid_grant", "error_description": "The grant is invalid."}
            return 400, (), json.dumps(error).encode()
        if label == "invalid_client-401":
            return 401, (), b'{"error":"invalid_client"}'
        if label == "500":
            return 500, (), b"<html>oops</html>"
        if label == "503-retry":
            return 503, (("Retry-After", "5"),), b""
        if label == "not-json":
            return 200, (), b"access_token=abc"
        if label == "json-list":
            return 200, (), b"[1, 2]"
        if label == "access-token-with-space":
            pair["access_token"] = "ACCESS with space"
            return 200, (), json.dumps(pair).encode()
        if label == "expires-in-text":
            return 200, (), json.dumps({**pair, "expires_in": "14000"}).encode()
        if label == "mac-token":
            return 200, (), json.dumps({**pair, "token_type": "mac"}).encode()
        if label == "echo-secrets":
            tokens = self.m.tokens
            echo = f"{self.SECRET} {self.client_b64s()[0]} {tokens.refresh_token if tokens else ''}"
            error = {"error": "invalid_request", "error_description": echo}
            return 400, (), json.dumps(error).encode()
        location = {
            "307-na1": NA1 + TOKEN_PATH,
            "308-na1": NA1 + TOKEN_PATH,
            "302-evil": "https://evil.example/oauth/token/",
            "303-same": TOKEN_PATH,
            "307-other-path": "/api/3.0/oauth/token/",
            "307-loop": send.request.url,
            "301-na1": NA1 + TOKEN_PATH,
            "308-eu1": EU1 + TOKEN_PATH,
            "301-current": self.origin + TOKEN_PATH,
            "307-current": self.origin + TOKEN_PATH,
            "308-current": self.origin + TOKEN_PATH,
            "308-old-origin": ORIGIN + TOKEN_PATH,
        }[label]
        return int(label[:3]), (("Location", location),), b""

    @precondition(lambda self: self.has_inflight("token"))
    @rule(label=st.sampled_from(TOKEN_REPLY_LABELS))
    def answer_token(self, label: str) -> None:
        request_id = self.pick("token", 0)
        assert request_id is not None
        send = self.take(request_id)
        encoded = self.APP.token_authorization_in("rfc6749")
        if (
            self.RAW_SERVER
            and label.startswith("ok")
            and (header(send.request.headers, "authorization") == encoded)
        ):
            label = "invalid_client-401"  # this server compares the credentials raw
        status, headers, body = self.token_reply(label, send)
        if send.purpose == "refresh":
            self.lease_answers += 1
        state = self.m.state
        held_before = self.m.tokens
        event = ResponseReceived(
            now=self.now, request_id=request_id, status=status, headers=headers, body=body
        )
        actions = self.feed(event)
        kinds = [type(a) for a in actions]
        if send.purpose == "refresh":
            assert state is State.REFRESHING
            if AuthorizationLost in kinds:
                # The server refused this refresh token: it is never sent again.
                self.refused.update(parse_qs((send.request.body or b"").decode())["refresh_token"])
            if label == "invalid_grant":
                assert AuthorizationLost in kinds
                assert self.state() is State.REAUTHORIZATION_REQUIRED
            if label in ("500", "not-json", "json-list", "mac-token", "302-evil"):
                assert RefreshAborted in kinds
                assert Store not in kinds
        else:
            assert state is State.EXCHANGING
            if label in ("ok", "ok-no-expires-in", "ok-short-lived"):
                assert Authorized in kinds
            if label in ("invalid_grant", "500", "not-json", "ok-no-refresh-token", "302-evil"):
                assert AuthorizationFailed in kinds
                assert Store not in kinds
                # A failed new login leaves a grant the machine held as it was.
                held = held_before is not None
                assert self.state() is (State.READY if held else State.UNAUTHORIZED)
                assert self.m.tokens == held_before

    @precondition(lambda self: bool(self.inflight))
    @rule(
        index=st.integers(0, 63),
        token=st.booleans(),
        reason=st.sampled_from(["connection reset", "TLS error talking to {SECRET}"]),
    )
    def send_failed(self, index: int, token: bool, reason: str) -> None:
        request_id = self.pick("token" if token else "call", index)
        if request_id is None:
            request_id = self.pick("call" if token else "token", index)
        assert request_id is not None
        send = self.take(request_id)
        if send.purpose == "refresh":
            self.lease_answers += 1
        secret = self.SECRET if self.OAUTH else API_SECRET
        reason = reason.replace("{SECRET}", secret)
        actions = self.feed(SendFailed(now=self.now, request_id=request_id, reason=reason))
        for action in actions:
            error = getattr(action, "error", None)
            if error is not None:
                assert secret not in str(error)
                assert secret not in repr(error)
        if send.purpose == "call":
            assert [type(a) for a in actions] == [Fail]

    # -- time ------------------------------------------------------------------------

    @rule(
        delta=st.sampled_from(
            [
                0.0,
                1.0,
                2.0,
                31.0,
                299.0,
                600.0,
                13_800.0,
                DAY,
                13 * DAY,
                15 * DAY,
                -5.0,
                -3_600.0,
                -DAY,
            ]
        ),
        tick=st.booleans(),
    )
    def time_passes(self, delta: float, tick: bool) -> None:
        self.now = max(0.0, self.now + delta)
        if not tick:
            return
        due = {c for c, at in self.parked.items() if at <= self.now}
        actions = self.feed(ClockTick(now=self.now))
        touched = {getattr(a, "call_id", None) for a in actions}
        waiting = self.m.state in CALLS_WAIT
        for call_id in due:
            # A retry whose time came is sent (or fails, or waits for a refresh).
            assert call_id in touched or waiting, f"parked call {call_id} was not released"
            self.parked.pop(call_id, None)

    # -- the store and its lease ------------------------------------------------------

    @precondition(lambda self: self.OAUTH)
    @rule(fail=st.booleans())
    def store_breaks(self, fail: bool) -> None:
        """The store starts (or stops) failing to save; lease and load still work."""
        self.saves_fail = fail

    def other_process_tokens(self, life: float = 14_000.0, skew: float | None = None) -> TokenSet:
        """Tokens a refresh by another process stored (rotating the stored pair).

        With ``skew`` the other process's clock lags so far that the pair is
        stamped ``skew`` seconds before the latest pair seen; without it, the
        pair is at least as recent as every pair seen.
        """
        current = [t.updated_at for t in (self.store, self.m.tokens) if t is not None]
        latest = max([self.now, *current])
        stamp = latest if skew is None else min([self.now, *current]) - skew
        tokens = tokens_at(stamp, self.fresh(), life=life)
        self.remember_store(tokens)
        return tokens

    @precondition(lambda self: self.due_pending)
    @rule(
        answer=st.sampled_from(["store", "none", "newer", "newer-expiring", "lease-failed"]),
        skew=st.sampled_from([0.0, 5.0, 3_600.0]),  # 0: same stamp
    )
    def answer_refresh_due(self, answer: str, skew: float) -> None:
        assert self.state() is State.LEASING
        self.due_pending = False
        if answer == "lease-failed":
            self.due_unsaved = None  # nothing saved: the next AcquireLease carries it again
            actions = self.feed(LeaseFailed(now=self.now, reason=f"locked ({self.SECRET})"))
            assert isinstance(actions[0], RefreshAborted)
            assert self.SECRET not in repr(actions)
            return
        due_unsaved, self.due_unsaved = self.due_unsaved, None
        if due_unsaved is not None:
            # The adapter saves AcquireLease.unsaved under the lease, then reads.
            self.remember_store(due_unsaved)
            self.unsaved = None
        if self.unsaved is not None and self.unsaved == self.m.tokens:
            raise AssertionError("the store is read under the lease before a failed save is redone")
        tokens: TokenSet | None
        if answer == "store":
            tokens = self.store
        elif answer == "none":
            tokens = None
        elif answer == "newer":
            # Under the lease the store is the truth, however far the clock lags.
            tokens = self.other_process_tokens(skew=skew)
        else:
            tokens = self.other_process_tokens(life=100.0, skew=skew)
        self.lease_held = True
        self.lease_answers = 0
        self.feed(TokensLoaded(now=self.now, tokens=tokens))
        if answer == "newer" and self.state() is State.READY:
            assert self.m.tokens == tokens

    @precondition(lambda self: not self.due_pending)
    @rule(answer=st.sampled_from(["store", "none", "newer", "lagging"]))
    def tokens_loaded_unprompted(self, answer: str) -> None:
        """The adapter reloads the store (e.g. another process logged in or refreshed)."""
        # Another process may refresh, unless this machine holds the lease.
        newer = answer == "newer" and not self.lease_held
        tokens = self.store if answer == "store" else None
        if newer:
            tokens = self.other_process_tokens()
        lagging = answer == "lagging" and self.m.tokens is not None
        if lagging:
            # A read that lags: a pair older than the machine's, never stored by
            # the model, so its tokens count as unstored if they were ever used.
            assert self.m.tokens is not None
            tokens = tokens_at(self.m.tokens.updated_at - 1.0, self.fresh())
        before = self.m.tokens
        event = TokensLoaded(now=self.now, tokens=tokens)
        if TokensLoaded not in EVENTS_ALLOWED[self.m.state]:
            self.expect_refused(event)
            return
        if not self.OAUTH:
            # A token pair has no OAuth2 tokens to load.
            self.expect_refused(event)
            return
        self.feed(event)
        if newer:
            assert self.state() is State.READY
            assert self.m.tokens == tokens
        if lagging:
            assert self.m.tokens == before, "an older pair outside the lease was adopted"

    # -- cancellation -------------------------------------------------------------------

    @rule(index=st.integers(0, 63), which=st.sampled_from(["open", "ended", "unknown"]))
    def cancel(self, index: int, which: str) -> None:
        if which == "open" and self.open:
            call_id = sorted(self.open)[index % len(self.open)]
        elif which == "ended" and self.ended:
            call_id = sorted(self.ended)[index % len(self.ended)]
        else:
            call_id = 10_000 + index
        before = self.m.calls_in_progress
        assert self.feed(CallCancelled(now=self.now, call_id=call_id)) == []
        if call_id in self.open:
            self.open.discard(call_id)
            self.ended.add(call_id)
            self.parked.pop(call_id, None)
            for request_id, send in list(self.inflight.items()):
                if send.call_id == call_id:
                    self.take(request_id)  # the adapter drops its answer
            assert self.m.calls_in_progress == before - 1
        else:
            assert self.m.calls_in_progress == before

    # -- logging in again ------------------------------------------------------------------

    @precondition(
        lambda self: (
            self.OAUTH
            and self.machine is not None
            and self.machine.state
            in (State.UNAUTHORIZED, State.AUTHORIZING, State.REAUTHORIZATION_REQUIRED, State.READY)
        )
    )
    @rule()
    def authorize(self) -> None:
        """A login, also over a grant the machine holds (READY): calls keep the old
        tokens until the exchange succeeds."""
        before = self.state()
        serial = self.fresh()
        state = f"state-{serial:020d}"
        verifier = f"verifier-{serial:040d}"
        actions = self.feed(
            AuthorizationRequested(now=self.now, state=state, code_verifier=verifier)
        )
        assert len(actions) == 1
        assert isinstance(actions[0], AuthorizeAt)
        url = actions[0].url
        assert url.startswith(self.origin + "/oauth/?")
        query = parse_qs(urlsplit(url).query)
        assert query["state"] == [state]
        assert query["code_challenge_method"] == ["S256"]
        assert verifier not in url
        assert self.SECRET not in url
        if self.login is not None:
            self.used_states.append(self.login[0])
        self.login = (state, verifier)
        assert self.state() is (State.READY if before is State.READY else State.AUTHORIZING)

    @precondition(lambda self: self.login is not None)
    @rule(kind=st.sampled_from(["code", "code", "denied", "wrong-state", "replayed", "late"]))
    def callback(self, kind: str) -> None:
        assert self.login is not None
        state, _ = self.login
        code = f"CODE-{self.fresh():04d}"
        base = self.APP.redirect_uri + "?"
        before = self.m.state
        if before in CALLS_WAIT:
            # A token request (or the lease) is outstanding: the callback is refused
            # and the login stays pending, to be finished once it has ended.
            self.expect_refused(
                CallbackReceived(now=self.now, url=f"{base}code={code}&state={state}")
            )
            return
        # Where a login is pending after losing the grant, or over a held grant, it
        # is kept: denying or failing it leaves that state.
        after_failure = State.UNAUTHORIZED if before is State.AUTHORIZING else before
        if kind in ("wrong-state", "replayed"):
            other = self.used_states[-1] if kind == "replayed" and self.used_states else "x" * 22
            url = f"{base}code={code}&state={other}"
            self.expect_refused(CallbackReceived(now=self.now, url=url), OAuthStateMismatch)
            return
        self.used_states.append(state)
        self.login = None
        if kind == "denied":
            url = f"{base}error=access_denied&state={state}"
            actions = self.feed(CallbackReceived(now=self.now, url=url))
            assert len(actions) == 1
            assert isinstance(actions[0], AuthorizationFailed)
            assert isinstance(actions[0].error, AuthorizationDenied)
            assert self.state() is after_failure
            return
        self.codes.add(code)
        url = f"{base}code={code}&state={state}"
        if kind == "late":
            event = CallbackReceived(now=self.now, url=url, redirected_at=max(0.0, self.now - 120))
            if self.now >= 120:
                actions = self.feed(event)
                assert len(actions) == 1
                assert isinstance(actions[0], AuthorizationFailed)
                assert isinstance(actions[0].error, CodeExpired)
                assert self.state() is after_failure
                return
        actions = self.feed(CallbackReceived(now=self.now, url=url))
        assert len(actions) == 1
        assert isinstance(actions[0], Send)
        assert actions[0].purpose == "exchange"
        assert actions[0].deadline == self.now + 60
        assert self.state() is State.EXCHANGING

    # -- logging out ---------------------------------------------------------------------

    @rule()
    def logout(self) -> None:
        event = LogoutRequested(now=self.now)
        if not self.OAUTH or self.state() in CALLS_WAIT:
            self.expect_refused(event)
            return
        if self.m.tokens is not None:
            self.refused.add(self.m.tokens.refresh_token)  # never sent again
        assert self.feed(event) == [Forget()]
        # The adapter deletes the stored grant.
        if self.store is not None:
            self.rotated.add(self.store.refresh_token)
        self.store = None
        if self.login is not None:
            self.used_states.append(self.login[0])
            self.login = None
        assert self.state() is State.UNAUTHORIZED
        assert self.m.tokens is None

    # -- misuse --------------------------------------------------------------------------

    @rule(
        kind=st.sampled_from(["unknown-response", "unknown-send-failed", "not-allowed"]),
        index=st.integers(0, 63),
    )
    def misuse(self, kind: str, index: int) -> None:
        stale = sorted(self.answered)
        request_id = stale[index % len(stale)] if stale and index % 2 else 100_000 + index
        if kind == "unknown-response":
            event: Event = ResponseReceived(
                now=self.now, request_id=request_id, status=200, headers=(), body=b"{}"
            )
            self.expect_refused(event)
            return
        if kind == "unknown-send-failed":
            self.expect_refused(SendFailed(now=self.now, request_id=request_id))
            return
        candidates: list[Callable[[], Event]] = [
            lambda: LeaseFailed(now=self.now),
            lambda: TokensLoaded(now=self.now, tokens=self.store),
            lambda: CallbackReceived(now=self.now, url="?code=abc&state=" + "s" * 22),
            lambda: AuthorizationRequested(
                now=self.now, state="s" * 22 + str(index), code_verifier="v" * 50
            ),
        ]
        refused = [make() for make in candidates]
        refused = [e for e in refused if type(e) not in EVENTS_ALLOWED[self.m.state]]
        for event in refused:
            self.expect_refused(event)

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def lease_released_in_bounded_answers(self) -> None:
        # (j) while the lease is held exactly one refresh is in flight, and it has
        # not been answered more often than redirects and the one retry allow.
        if self.lease_held:
            assert self.lease_answers <= MAX_TOKEN_ANSWERS_UNDER_LEASE, "(j) lease kept"
            assert [s.purpose for s in self.inflight.values()].count("refresh") == 1, "(j)"

    def teardown(self) -> None:
        """(j) Answer what is outstanding (the lease, token requests, calls) with
        success: within a bounded number of events nothing is left held or open."""
        if self.machine is None:
            return
        for _ in range(
            4 * MAX_TOKEN_ANSWERS_UNDER_LEASE + 2 * (len(self.inflight) + len(self.open)) + 10
        ):
            if self.due_pending:
                self.due_pending = False
                self.lease_held = True
                self.lease_answers = 0
                self.feed(TokensLoaded(now=self.now, tokens=self.store))
                continue
            request_id = self.pick("token", 0)
            if request_id is None:
                request_id = self.pick("call", 0)
            if request_id is None:
                break
            send = self.take(request_id)
            status, headers, body = (
                self.token_reply("ok", send) if send.purpose != "call" else (200, (), b"{}")
            )
            self.feed(
                ResponseReceived(
                    now=self.now, request_id=request_id, status=status, headers=headers, body=body
                )
            )
        assert not self.lease_held, "(j) the lease was never released"
        assert not self.due_pending, "(j) a AcquireLease was never answered"
        assert not self.inflight
        assert self.m.state not in CALLS_WAIT

    @invariant()
    def calls_end_once(self) -> None:
        # (f) after every step: a call ended by at most one Deliver or Fail (a
        # cancelled one by none), and an ended call is no longer in progress.
        assert set(self.endings) <= self.ended
        assert all(count == 1 for count in self.endings.values()), self.endings
        assert not self.open & self.ended
        assert not self.ended & set(self.parked)
        assert not self.ended & {s.call_id for s in self.inflight.values()}

    @invariant()
    def consistent(self) -> None:
        if self.machine is None:
            return
        m = self.m
        # (f) the machine and the adapter agree on the open calls.
        assert m.calls_in_progress == len(self.open)
        assert m.account.origin == self.origin
        state = m.state
        refreshes = [s for s in self.inflight.values() if s.purpose == "refresh"]
        exchanges = [s for s in self.inflight.values() if s.purpose == "exchange"]
        assert len(refreshes) == (state is State.REFRESHING)
        assert len(exchanges) == (state is State.EXCHANGING)
        assert self.due_pending == (state is State.LEASING)
        assert self.lease_held == (state is State.REFRESHING)
        if not self.OAUTH:
            assert state is State.READY
            assert m.tokens is None
            return
        if state in (State.READY, State.LEASING, State.REFRESHING):
            assert m.tokens is not None
        elif state is not State.EXCHANGING:  # a new login over a held grant keeps it
            assert m.tokens is None
        if m.tokens is not None:
            token = m.tokens.access_token
            assert token in self.stored_access or token in self.introduced_access
        # Every open call is in flight, parked until a retry time, or waiting.
        busy = {s.call_id for s in self.inflight.values()}
        for call_id in self.open - busy - set(self.parked):
            assert state in CALLS_WAIT, (
                f"call {call_id} is neither in flight, parked nor waiting ({state})"
            )


class ApiKeyHarness(Harness):
    OAUTH = False


SPECIAL_SECRET = "SECRET+client:0001 %é"


class SpecialSecretHarness(Harness):
    """A client secret that encoding changes: invalid_client answers make the
    machine re-send once with the raw form, inside the same lease."""

    APP = OAuth2App("cfauth-test-client", SPECIAL_SECRET, "https://app.example/callback")
    SECRET = SPECIAL_SECRET
    RAW_SERVER = True


def test_oauth_machine_random_interleavings() -> None:
    run_state_machine_as_test(Harness, settings=SETTINGS)


def test_special_secret_machine_random_interleavings() -> None:
    run_state_machine_as_test(SpecialSecretHarness, settings=settings(SETTINGS, max_examples=100))


def test_api_key_machine_random_interleavings() -> None:
    run_state_machine_as_test(ApiKeyHarness, settings=settings(SETTINGS, max_examples=100))


# -- focused tests: regressions and the known bugs -----------------------------------


def oauth_machine(tokens: TokenSet | None) -> Machine:
    return Machine(_Account.parse("acme"), APP, tokens)


def refresh_send(machine: Machine, now: float, reason: str) -> Send:
    """Drive ``machine`` (READY, refresh due) through AcquireLease to its refresh Send."""
    actions = machine.handle(CallRequested(now=now, method="GET", path="booking/index"))
    assert actions[1:] == [AcquireLease(reason)]
    (send,) = machine.handle(TokensLoaded(now=now, tokens=machine.tokens))
    assert isinstance(send, Send)
    assert send.purpose == "refresh"
    return send


def test_refresh_without_rotation_in_keep_alive_window_does_not_loop() -> None:
    """A keep-alive refresh answered without a new refresh token (RFC 6749 s. 6 allows
    it) cannot extend the refresh token: the waiting call must go out, not another
    AcquireLease (the old core refreshed forever and never sent the call)."""
    tokens = TokenSet(
        access_token="ACCESS-0001",
        refresh_token="REFRESH-0001",
        expires_at=T0 + 10_000,
        refresh_expires_at=T0 + DAY / 2,
        updated_at=T0 - 13.5 * DAY,
    )
    machine = oauth_machine(tokens)
    send = refresh_send(machine, T0, "keep-alive")
    body = json.dumps({"access_token": "ACCESS-0002", "expires_in": 14000}).encode()
    actions = machine.handle(
        ResponseReceived(now=T0, request_id=send.request_id, status=200, headers=(), body=body)
    )
    assert [type(a) for a in actions] == [Store, ReleaseLease, Send]
    call = actions[2]
    assert isinstance(call, Send)
    assert call.purpose == "call"
    assert header(call.request.headers, "authorization") == "Bearer ACCESS-0002"
    assert machine.state is State.READY
    # And a tick a minute later does not start the useless refresh again.
    assert machine.handle(ClockTick(now=T0 + 60)) == []


def test_short_lived_tokens_do_not_starve_waiting_calls() -> None:
    """A server issuing tokens shorter-lived than the refresh leeway must not make
    every call refresh forever: the fresh token is used while it is valid."""
    machine = oauth_machine(tokens_at(T0 - 13_900, 1))
    send = refresh_send(machine, T0, "expiring")
    body = json.dumps(
        {"access_token": "ACCESS-0002", "refresh_token": "REFRESH-0002", "expires_in": 120}
    ).encode()
    actions = machine.handle(
        ResponseReceived(now=T0, request_id=send.request_id, status=200, headers=(), body=body)
    )
    assert [type(a) for a in actions] == [Store, ReleaseLease, Send]
    assert machine.state is State.READY


def test_token_request_redirect_to_another_path_is_refused() -> None:
    """Client credentials go to /oauth/token/ only, not to any path ending in it."""
    machine = oauth_machine(tokens_at(T0 - 13_900, 1))
    send = refresh_send(machine, T0, "expiring")
    location = ("Location", "/api/3.0/oauth/token/")
    actions = machine.handle(
        ResponseReceived(
            now=T0, request_id=send.request_id, status=307, headers=(location,), body=b""
        )
    )
    assert not any(isinstance(a, Send) for a in actions)
    assert [type(a) for a in actions][:2] == [ReleaseLease, RefreshAborted]


@pytest.mark.parametrize("oauth", [True, False], ids=["bearer", "api-key"])
def test_call_redirected_to_token_url_does_not_carry_credentials_there(oauth: bool) -> None:
    account = _Account.parse("acme")
    machine = oauth_machine(tokens_at(T0, 1)) if oauth else Machine(account, API_KEY)
    (send,) = machine.handle(CallRequested(now=T0, method="GET", path="booking/index"))
    assert isinstance(send, Send)
    actions = machine.handle(
        ResponseReceived(
            now=T0,
            request_id=send.request_id,
            status=302,
            headers=(("Location", "/oauth/token/"),),
            body=b"",
        )
    )
    # The call fails (the redirect is refused); nothing goes to the token URL.
    assert [type(a) for a in actions] == [Fail]
    fail = actions[0]
    assert isinstance(fail, Fail)
    assert fail.call_id == send.call_id


def test_lease_adopts_rotated_store_tokens_despite_clock_skew() -> None:
    """Another process (its clock 5 s behind) refreshed and stored REFRESH-0002; the
    server has invalidated REFRESH-0001.  Under the lease the store is the truth."""
    machine = oauth_machine(tokens_at(T0 - 13_900, 1))
    machine.handle(ClockTick(now=T0))
    assert machine.state is State.LEASING
    stored = tokens_at(T0 - 13_900 - 5, 2, life=14_000 + 13_900)
    actions = machine.handle(TokensLoaded(now=T0, tokens=stored))
    for action in actions:
        if isinstance(action, Send):
            assert b"REFRESH-0001" not in (action.request.body or b"")
    assert machine.tokens == stored


def test_api_key_machine_refuses_tokens_loaded() -> None:
    machine = Machine(_Account.parse("acme"), API_KEY)
    with pytest.raises(LocalProtocolError):
        machine.handle(TokensLoaded(now=T0, tokens=tokens_at(T0, 1)))
    (send,) = machine.handle(CallRequested(now=T0, method="GET", path="booking/index"))
    assert isinstance(send, Send)
    assert header(send.request.headers, "authorization") == API_KEY.authorization


def test_huge_retry_after_fails_the_call_cleanly() -> None:
    machine = Machine(_Account.parse("acme"), API_KEY)
    (send,) = machine.handle(CallRequested(now=T0, method="GET", path="booking/index"))
    assert isinstance(send, Send)
    event = ResponseReceived(
        now=T0,
        request_id=send.request_id,
        status=429,
        headers=(("Retry-After", "9" * 400),),
        body=b"",
    )
    actions = machine.handle(event)
    assert [type(a) for a in actions] == [Fail]
    assert machine.calls_in_progress == 0
