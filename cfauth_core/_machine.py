"""The machine: one grant, events in, actions out.

Theory of operation
-------------------
A :class:`Machine` holds one grant: the :class:`Account`, one credential
(:class:`ApiKey` or :class:`OAuth2App`), the current :class:`TokenSet`, and
every call in progress.  :meth:`Machine.handle` takes one event and returns
the actions the adapter must execute, in order.  It never blocks, never reads
a clock and never does I/O, so one lock around ``handle`` makes it safe for any
number of threads or tasks.

A call's life: ``CallRequested`` -> its ``Send`` at once when credentials are
at hand (or its ``Fail``); otherwise ``CallAccepted`` and a ``Send`` later.
The first action always names the new call.  The answer comes back as
``ResponseReceived``; the machine then delivers it, or follows a redirect
(``Send`` again), or parks the call until a retry time (``RetryAt``; a later
``ClockTick`` sends it), or re-sends it once with a fresher token.  It ends
with exactly one ``Deliver`` or ``Fail`` (or a ``CallCancelled`` from the
adapter).

Refreshing is single-flight.  When the access token is near expiry (or the
refresh token near its 14 days), or a call comes back 401 with the current
token, the machine emits ``AcquireLease`` and enters LEASING: the adapter takes
the store's lease (its cross-process lock), reloads, and answers
``TokensLoaded``.  If the store holds newer tokens, another process refreshed
already: they are adopted and no refresh is sent.  Otherwise one refresh
request goes out (REFRESHING).  Calls that arrive meanwhile wait inside the
machine and are released together, after the ``Store`` of the new tokens, or
failed together with the refresh's error.

Because Checkfront rotates refresh tokens on every refresh, a refresh
response replaces the whole pair, and the old refresh token is never sent
again once the new one is known.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlencode, urlsplit

from ._account import (
    Account,
    RedirectKind,
    RedirectTarget,
    encode_params,
    is_oauth_path,
    refuse_redirect,
    shown,
)
from ._actions import (
    AccountMoved,
    AcquireLease,
    Action,
    AuthorizationFailed,
    AuthorizationLost,
    AuthorizeAt,
    Authorized,
    CallAccepted,
    Deliver,
    Fail,
    Forget,
    RefreshAborted,
    ReleaseLease,
    Request,
    RetryAt,
    Send,
    Store,
)
from ._classify import _grant_lost, _header, _token_rejected
from ._config import Config
from ._credentials import CLIENT_AUTH_FORMS, ApiKey, Credential, OAuth2App
from ._errors import (
    AuthorizationDenied,
    CfauthError,
    ClientCredentialsRejected,
    CodeExpired,
    CredentialsRejected,
    InvalidInput,
    LocalProtocolError,
    NetworkError,
    OAuthError,
    OAuthStateMismatch,
    RateLimited,
    ReauthorizationRequired,
    RefreshFailed,
    RemoteProtocolError,
    UntrustedRedirect,
)
from ._events import (
    AuthorizationRequested,
    CallbackReceived,
    CallCancelled,
    CallRequested,
    ClockTick,
    Event,
    LeaseFailed,
    LogoutRequested,
    ResponseReceived,
    SendFailed,
    StoreFailed,
    TokensLoaded,
)
from ._login import _at_redirect_uri, _callback_params, _s256, _same
from ._retry import parse_retry_after
from ._state import CALLS_WAIT, EVENTS_ALLOWED, TRANSITIONS, State, Trigger, next_state
from ._tokens import TokenSet, parse_token_response, scrub

# ``typing`` costs about 3 ms to import; the core needs it only for the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    _Purpose = Literal["refresh", "exchange"]

__all__ = ["Machine"]


_INF = float("inf")
# The hot path builds its records by calling the constructor itself: the same
# record, without the generic class-call machinery around it.
_new_send = Send.__new__
_new_deliver = Deliver.__new__
_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]+")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PERMANENT = frozenset({301, 308})
_FORM = ("Content-Type", "application/x-www-form-urlencoded")
#: How many used OAuth ``state`` values are remembered to refuse replays by name.
_USED_STATES_KEPT = 32


_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _replayable(method: str, headers: tuple[tuple[str, str], ...]) -> bool:
    """Whether a request may be sent again after a failure that may have left it
    processed: an idempotent method, or one the caller marked with an
    ``Idempotency-Key`` header."""
    return method in _IDEMPOTENT or any(n.lower() == "idempotency-key" for n, _ in headers)


class _Call:
    """One API call in progress (mutable, private to the machine)."""

    __slots__ = (
        "auth_retried",
        "body",
        "call_id",
        "headers",
        "hops",
        "method",
        "path",
        "rate_retries",
        "sent_to",
        "token",
        "url",
        "visited",
    )

    def __init__(
        self,
        call_id: int,
        method: str,
        path: str,
        body: bytes | None,
        headers: tuple[tuple[str, str], ...],
    ) -> None:
        self.call_id = call_id
        self.method = method
        self.path = path  # path and query under the account origin
        self.body = body
        self.headers = headers  # the caller's extra headers (and Content-Type)
        self.url: str | None = None  # set once a redirect gave an absolute URL
        self.hops = 0
        self.visited: set[str] | None = None
        self.rate_retries = 0
        self.auth_retried = False
        self.token: str | None = None  # the Authorization its last Send carried
        self.sent_to = ""  # the URL of its last Send


class _TokenRequest:
    """A request to the token URL in flight (the refresh or the code exchange)."""

    __slots__ = ("deadline", "form", "hops", "purpose", "request", "secrets", "switched", "visited")

    def __init__(
        self,
        purpose: _Purpose,
        request: Request,
        deadline: float | None,
        secrets: tuple[str, ...],
    ) -> None:
        self.purpose = purpose
        self.request = request
        self.deadline = deadline
        self.hops = 0
        self.visited: set[str] = {"POST " + request.url}  # method and URL: see _judge
        self.secrets = secrets  # what the body carries: refresh token, or code and verifier
        self.form = "rfc6749"  # the form of the client credentials it carries
        self.switched = False  # re-sent in the other form after invalid_client


#: What a request in flight belongs to.  A ``Send`` stands for a plain call
#: sent light (see Machine._on_call_requested and Machine._call_of).
_Pending = _Call | _TokenRequest | Send


class _Authorization:
    __slots__ = ("state", "verifier")

    def __init__(self, state: str, verifier: str | None) -> None:
        self.state = state
        self.verifier = verifier


class Machine:
    """The sans-IO state machine for one grant.

    ``Machine(account, ApiKey(key, secret))`` for a token pair;
    ``Machine(account, OAuth2App(...), tokens)`` for OAuth2, with the stored
    tokens if there are any.  Feed events to :meth:`handle` and execute the
    actions it returns, in order.
    """

    def __init__(
        self,
        account: Account,
        credential: Credential,
        tokens: TokenSet | None = None,
        *,
        config: Config | None = None,
        client_auth: str | None = None,
    ) -> None:
        if not isinstance(account, Account):
            raise InvalidInput("account: pass an Account, e.g. Account.parse('acme')")
        if not isinstance(credential, (ApiKey, OAuth2App)):
            raise InvalidInput("credential: pass ApiKey(key, secret) or OAuth2App(...)")
        if tokens is not None and not isinstance(tokens, TokenSet):
            raise InvalidInput("tokens: pass a TokenSet or None")
        if isinstance(credential, ApiKey) and tokens is not None:
            raise InvalidInput("tokens: a token pair (ApiKey) has no OAuth2 tokens")
        if client_auth is not None and client_auth not in CLIENT_AUTH_FORMS:
            raise InvalidInput(
                "client_auth: pass 'rfc6749', 'raw' (the form a store recorded) or None"
            )
        self._config = config if config is not None else Config()
        self._account = account
        self._credential = credential
        self._oauth = isinstance(credential, OAuth2App)
        self._static_headers: tuple[tuple[str, str], ...] = (
            ("Accept", "application/json"),
            ("User-Agent", self._config.user_agent),
        )
        self._tokens: TokenSet | None = None
        # The current pair, when its Store failed (StoreFailed): saved again
        # under the lease (AcquireLease.unsaved) before the store is next read.
        self._unsaved: TokenSet | None = None
        self._quiet_until = _INF
        self._state = State.UNAUTHORIZED  # until _enter below
        self._light_until = -1.0
        self._set_auth("")
        self._set_tokens(tokens)
        self._client_auth = "rfc6749"
        self._client_authorization = ""  # for the token URL; a token pair has none
        self._use_client_auth(client_auth or "rfc6749")
        if isinstance(credential, ApiKey):
            self._set_auth(credential.authorization)
            self._enter(State.READY)
        else:
            self._enter(State.READY if tokens is not None else State.UNAUTHORIZED)
        self._next_call_id = 1
        self._next_request_id = 1
        # Every call not ended; a str is the path of a plain call sent light.
        self._calls: dict[int, _Call | str] = {}
        self._pending: dict[int, _Pending] = {}
        self._waiting: list[_Call] = []  # calls waiting for a refresh or an exchange
        self._parked: dict[int, tuple[float, _Call]] = {}  # calls waiting for a retry time
        self._authorization: _Authorization | None = None
        self._used_states: list[str] = []
        self._refused: str | None = None  # the refresh token of a grant that was lost

    # -- introspection --------------------------------------------------------

    @property
    def state(self) -> State:
        """The grant's state."""
        return self._state

    @property
    def account(self) -> Account:
        """The account, at its current origin (it changes when the account moves)."""
        return self._account

    @property
    def credential(self) -> Credential:
        """The credential the machine authenticates with (its repr hides the secret)."""
        return self._credential

    @property
    def tokens(self) -> TokenSet | None:
        """The current OAuth2 tokens (``None`` for a token pair or before login)."""
        return self._tokens

    @property
    def client_auth(self) -> str:
        """The form of the client credentials sent to the token URL: ``"rfc6749"``
        (percent-encoded) or ``"raw"``.  With ``Config(client_auth="auto")`` it
        changes to the form that worked; stores may persist it (see ``Store``)."""
        return self._client_auth

    @property
    def config(self) -> Config:
        """The :class:`Config` the machine runs with."""
        return self._config

    @property
    def calls_in_progress(self) -> int:
        """How many calls have not ended yet."""
        return len(self._calls)

    def scrub(self, text: str, limit: int = 300) -> str:
        """Server text made fit for a message: every secret this machine knows
        hidden in every form it wrote it (raw, form- and percent-encoded, inside
        the base64 of a Basic header, escaped), control characters dropped, at
        most ``limit`` characters.  Adapters run the text of their own errors
        (such as an API error object) through it."""
        return scrub(text, self._secrets(), limit)

    def __repr__(self) -> str:
        return (
            f"<Machine {self._account.origin} {type(self._credential).__name__} "
            f"state={self._state.value} calls={len(self._calls)}>"
        )

    # -- the entry point ------------------------------------------------------

    def handle(self, event: Event) -> list[Action]:
        """Handle one event; return the actions to execute, in order.

        An event the current state does not accept, or that names an unknown
        request or call, raises :class:`LocalProtocolError` and changes nothing.
        """
        # The hot path is answered here, without a handler: both events are
        # accepted in every state (EVENTS_ALLOWED), and these two cases are
        # most of the traffic.
        if type(event) is CallRequested:
            # A plain call whose request is remembered (see _on_call_requested)
            # while the machine is READY and no refresh can be due: sent at
            # once, and kept light (its entry in _calls is its path, its entry
            # in _pending the Send; _call_of builds a _Call if its answer needs
            # one).
            if (
                event.now < self._light_until
                and event.params is None
                and event.data is None
                and not event.headers
            ):
                known = self._requests.get((event.method, event.path))
                if known is not None:
                    call_id = self._next_call_id
                    self._next_call_id = call_id + 1
                    request_id = self._next_request_id
                    self._next_request_id = request_id + 1
                    send: Send = _new_send(Send, request_id, known[1], call_id)
                    self._calls[call_id] = known[0]
                    self._pending[request_id] = send
                    return [send]
        elif type(event) is ResponseReceived:
            # An answer that ends a plain call sent light.
            request_id = event.request_id
            pending = self._pending.get(request_id)
            if type(pending) is Send:
                status = event.status
                if status < 300 or status not in _SPECIAL_STATUSES:
                    del self._pending[request_id]
                    light_id: int = pending.call_id  # type: ignore[assignment]
                    del self._calls[light_id]
                    url = pending.request.url
                    return [_new_deliver(Deliver, light_id, status, event.headers, event.body, url)]
        handler = self._handlers.get(type(event))
        if handler is None:
            raise LocalProtocolError(
                f"{type(event).__name__} is not accepted in state {self._state.value}"
                + _HINTS.get(type(event), "")
            )
        try:
            return handler(self, event)
        except CfauthError as error:
            # Raised without the frames below this one: their locals hold what
            # the machine knows (the callback's code, the scrubbing secrets),
            # and error reporters upload frame locals.
            raise error.with_traceback(None)  # noqa: B904 - the same error, not a new one

    # -- helpers --------------------------------------------------------------

    def _goto(self, trigger: Trigger) -> None:
        self._enter(next_state(self._state, trigger))

    def _enter(self, state: State) -> None:
        self._state = state
        self._handlers = _DISPATCH[state]
        # Before this time a plain call may go out light (see handle).
        self._light_until = self._quiet_until if state is State.READY else -1.0

    def _set_tokens(self, tokens: TokenSet | None) -> None:
        self._tokens = tokens
        self._unsaved = None  # a failed save concerns the pair it carried only
        if tokens is not None:
            self._set_auth("Bearer " + tokens.access_token)
            # Before this time no refresh can be due (see _refresh_reason):
            # the hot path compares against it instead of working it out.
            config = self._config
            leeway = min(config.refresh_leeway, (tokens.expires_at - tokens.updated_at) / 2)
            keep_alive_from = tokens.refresh_expires_at - config.keep_alive_before
            self._quiet_until = min(
                tokens.expires_at - leeway,
                tokens.refresh_expires_at,
                keep_alive_from if tokens.updated_at < keep_alive_from else _INF,
            )
            if self._state is State.READY:
                self._light_until = self._quiet_until

    def _use_client_auth(self, form: str) -> None:
        pinned = self._config.client_auth
        self._client_auth = form if pinned == "auto" else pinned
        credential = self._credential
        if isinstance(credential, OAuth2App):
            self._client_authorization = credential.token_authorization_in(self._client_auth)

    def _set_auth(self, header: str) -> None:
        self._auth_header = header
        self._base_headers = (("Authorization", header), *self._static_headers)
        # Plain requests by method and path as the caller gave it (see _on_call_requested).
        self._requests: dict[tuple[str, str], tuple[str, Request]] = {}

    def _secrets(self, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
        """Every secret the machine knows (and ``extra``), for scrubbing server text."""
        credential = self._credential
        if isinstance(credential, ApiKey):
            found = [credential.secret, credential.authorization[6:]]  # and its base64
        else:
            found = [
                credential.client_secret,
                credential.token_authorization_in("rfc6749")[6:],
                credential.token_authorization_in("raw")[6:],
            ]
        found += extra
        if self._tokens is not None:
            found += [self._tokens.access_token, self._tokens.refresh_token]
        for pending in self._pending.values():
            if isinstance(pending, _TokenRequest):
                found += pending.secrets
        if self._authorization is not None and self._authorization.verifier:
            found.append(self._authorization.verifier)
        return tuple(found)

    def _request_id(self) -> int:
        request_id = self._next_request_id
        self._next_request_id = request_id + 1
        return request_id

    def _refresh_reason(self, now: float) -> str | None:
        """Why a refresh is due now, ``"lost"`` if the grant cannot be
        refreshed any more, or ``None`` when the tokens are fine."""
        tokens = self._tokens
        config = self._config
        if tokens is None or now >= tokens.refresh_expires_at:
            # Nothing can refresh it any more: use the access token while it lasts.
            return None if tokens is not None and now < tokens.expires_at else "lost"
        # The leeway never exceeds half the token's life, so a server that issues
        # short-lived tokens cannot make every call refresh.
        leeway = min(config.refresh_leeway, (tokens.expires_at - tokens.updated_at) / 2)
        if now >= tokens.expires_at - leeway:
            return "expiring"
        keep_alive_from = tokens.refresh_expires_at - config.keep_alive_before
        # Once per window: if a refresh inside the window did not extend the
        # refresh token (no rotation), refreshing again would not either.
        if now >= keep_alive_from and tokens.updated_at < keep_alive_from:
            return "keep-alive"
        return None

    # -- calls ----------------------------------------------------------------

    def _on_call_requested(self, event: CallRequested) -> list[Action]:
        # Every call handle() did not send light.  A plain call's request is the
        # same every time until the credential or the origin changes (_set_auth
        # and _move forget it): it is remembered here for handle() to reuse.
        method = event.method
        call_id = self._next_call_id
        path = self._account.api_path(event.path, event.params)  # may raise: nothing changed yet
        headers = tuple(event.headers) if event.headers else ()
        body = None
        if event.data is not None:
            body = encode_params(event.data, "data").encode("ascii")
            headers += (_FORM,)
        self._next_call_id = call_id + 1
        call = _Call(call_id, method, path, body, headers)
        self._calls[call_id] = call
        actions: list[Action] = []
        self._dispatch_call(call, event.now, actions)
        # The first action names the call: its Send or its Fail when that comes
        # first, otherwise CallAccepted (it waits, or other actions come first).
        first = actions[0] if actions else None
        if not isinstance(first, (Send, Fail)) or first.call_id != call_id:
            actions.insert(0, CallAccepted(call_id))
        elif (
            isinstance(first, Send)
            and len(actions) == 1
            and event.params is None  # remembered under the path alone: no query
            and body is None
            and not headers
            and len(event.path) <= _MEMO_PATH_LENGTH
        ):
            if len(self._requests) >= _MEMO_REQUESTS:
                self._requests.clear()
            self._requests[(method, event.path)] = (path, first.request)
        return actions

    def _call_of(self, send: Send) -> _Call:
        """The _Call of a plain call sent light (see _on_call_requested), built
        the first time its answer needs one."""
        call_id: int = send.call_id  # type: ignore[assignment]  # a call's Send names it
        request = send.request
        path: str = self._calls[call_id]  # type: ignore[assignment]  # its path while light
        call = _Call(call_id, request.method, path, None, ())
        call.sent_to = request.url
        call.token = request.headers[0][1]  # the Authorization it carried (_base_headers)
        self._calls[call_id] = call
        return call

    def _dispatch_call(self, call: _Call, now: float, actions: list[Action]) -> None:
        """Send ``call`` with the current credential, or make it wait, or fail it."""
        state = self._state
        if state is State.READY:
            if self._oauth and now >= self._quiet_until:
                reason = self._refresh_reason(now)
                if reason == "lost":
                    error = self._lose_grant(_EXPIRED, None, actions)
                    self._fail(call, error, actions)
                    return
                if reason is not None:
                    self._waiting.append(call)
                    self._start_refresh(reason, actions)
                    return
            actions.append(self._send_call(call))
        elif state is State.EXCHANGING and self._tokens is not None:
            # A new login over the grant this machine holds: the old tokens serve
            # until the exchange succeeds (a 401 then waits for the new ones).
            actions.append(self._send_call(call))
        elif state in CALLS_WAIT:
            self._waiting.append(call)
        else:
            self._fail(call, self._lost_error(), actions)

    def _lost_error(self) -> ReauthorizationRequired:
        if self._state is State.REAUTHORIZATION_REQUIRED:
            return ReauthorizationRequired(
                "the OAuth2 grant is gone (refresh token expired, revoked or rotated "
                "away): log in again (a new OAuth2 authorization)"
            )
        return ReauthorizationRequired(
            "there are no OAuth2 tokens for this account yet: log in first "
            "(an OAuth2 authorization)"
        )

    def _send_call(self, call: _Call) -> Send:
        request_id = self._next_request_id
        self._next_request_id = request_id + 1
        call.sent_to = url = call.url or self._account.origin + call.path
        headers = self._base_headers
        if call.headers:
            headers += call.headers
        request = Request(call.method, url, headers, call.body)
        call.token = self._auth_header
        self._pending[request_id] = call
        return Send(request_id, request, call.call_id)

    def _fail(self, call: _Call, error: CfauthError, actions: list[Action]) -> None:
        del self._calls[call.call_id]
        actions.append(Fail(call.call_id, error))

    def _on_response(self, event: ResponseReceived) -> list[Action]:
        pending = self._pending.pop(event.request_id, None)
        if pending is None:
            raise LocalProtocolError(
                f"request {event.request_id} is not in flight: report each Send's answer once"
            )
        status = event.status
        if isinstance(pending, Send):  # a plain call sent light (handle delivered the rest)
            return self._on_special_call_response(self._call_of(pending), event)
        if isinstance(pending, _Call):
            if status < 300 or status not in _SPECIAL_STATUSES:
                del self._calls[pending.call_id]
                return [
                    Deliver(pending.call_id, status, event.headers, event.body, pending.sent_to)
                ]
            return self._on_special_call_response(pending, event)
        return self._on_token_response(pending, event)

    def _on_special_call_response(self, call: _Call, event: ResponseReceived) -> list[Action]:
        actions: list[Action] = []
        status = event.status
        if status in _REDIRECTS:
            self._follow_call_redirect(call, event, actions)
        elif status in {429, 503}:
            self._rate_limited(call, event, actions)
        else:
            self._rejected(call, event, actions)
        return actions

    def _deliver(self, call: _Call, event: ResponseReceived, actions: list[Action]) -> None:
        del self._calls[call.call_id]
        actions.append(Deliver(call.call_id, event.status, event.headers, event.body, call.sent_to))

    # -- redirects ------------------------------------------------------------

    def _follow_call_redirect(
        self, call: _Call, event: ResponseReceived, actions: list[Action]
    ) -> None:
        location = _header(event.headers, "location")
        if location is None:
            self._deliver(call, event, actions)
            return
        current = call.sent_to
        if call.visited is None:
            call.visited = {f"{call.method} {current}"}
        # RFC 9110 section 15.4.4: a 303 is followed with GET (Post/Redirect/Get).
        method = "GET" if event.status == 303 else call.method
        try:
            target = self._judge(current, location, call.hops, call.visited, method)
        except UntrustedRedirect as error:
            self._fail(call, error, actions)
            return
        if is_oauth_path(urlsplit(target.url).path):
            secrets = self._secrets()
            refused = refuse_redirect(
                scrub(shown(location, secrets), secrets, 10_000),
                "API credentials never go to the OAuth endpoints",
            )
            self._fail(call, refused, actions)
            return
        call.hops += 1
        call.visited.add(f"{method} {target.url}")
        if event.status == 303 and call.method != "GET":
            call.method, call.body = "GET", None
            call.headers = tuple(h for h in call.headers if h is not _FORM)
        if target.kind is RedirectKind.MIGRATION:
            self._move(target.origin, event.status, actions)
        call.url = target.url
        self._dispatch_call(call, event.now, actions)

    def _judge(
        self,
        current: str,
        location: str,
        hops: int,
        visited: set[str],
        method: str,
        extra: tuple[str, ...] = (),
    ) -> RedirectTarget:
        """The target of a redirect credentials may follow, or :class:`UntrustedRedirect`.

        ``visited`` holds ``"METHOD URL"`` for every request of this chain: the
        same URL with another method (a POST answered 303 with its own URL) is
        not a loop.
        """
        secrets = self._secrets(extra)
        if hops >= self._config.max_redirects:
            why = f"more than {self._config.max_redirects} redirects"
        else:
            refused: UntrustedRedirect | None = None
            try:
                target = self._account.judge_redirect(current, location, secrets=secrets)
            except UntrustedRedirect as error:
                refused = error
            if refused is not None:
                # Raised here, not inside the except block, so the unscrubbed
                # original is not kept as this error's __context__.
                raise UntrustedRedirect(
                    scrub(refused.message, secrets, 10_000),
                    location=scrub(refused.location, secrets, 10_000),
                )
            if f"{method} {target.url}" not in visited:
                return target
            why = f"it loops back to a URL already requested ({method})"
        # The target was trusted (or never judged): the advice is not to trust a host.
        raise refuse_redirect(
            scrub(shown(location, secrets), secrets, 10_000),
            why,
            hint="The server keeps redirecting: check the account URL and the path, "
            "and try again later",
        )

    def _move(self, origin: str, status: int, actions: list[Action]) -> None:
        """Adopt a migration target as the account's origin (permanent redirects only)."""
        old = self._account.origin
        if status in _PERMANENT and origin != old:
            self._account = self._account.moved_to(origin)
            self._requests = {}  # they name the old origin
            actions.append(AccountMoved(old, origin))

    # -- rate limits ----------------------------------------------------------

    def _rate_limited(self, call: _Call, event: ResponseReceived, actions: list[Action]) -> None:
        status = event.status
        header = _header(event.headers, "retry-after")
        wait = parse_retry_after(header, event.now) if header is not None else None
        if wait is None:
            if status == 503:  # a plain server error: the caller decides
                self._deliver(call, event, actions)
                return
            wait = self._config.default_retry_wait
        config = self._config
        if call.rate_retries >= config.max_rate_limit_retries or wait > config.max_retry_wait:
            self._fail(
                call,
                RateLimited(
                    f"the server answered HTTP {status} (rate limited) and asked to wait "
                    f"{wait:g} s; cfauth gave up after {call.rate_retries} retries: slow down "
                    "and try again later",
                    retry_after=wait,
                    status=status,
                ),
                actions,
            )
            return
        call.rate_retries += 1
        at = event.now + wait
        self._parked[call.call_id] = (at, call)
        actions.append(RetryAt(call.call_id, at))

    # -- authentication failures ----------------------------------------------

    def _rejected(self, call: _Call, event: ResponseReceived, actions: list[Action]) -> None:
        status = event.status
        if not self._oauth:
            if status in {401, 403}:
                self._fail(
                    call,
                    CredentialsRejected(
                        f"the server rejected the API key and secret (HTTP {status}): the "
                        "token pair is wrong or was revoked; check it under Manage > "
                        "Developer. cfauth does not retry a rejected pair",
                        status=status,
                    ),
                    actions,
                )
            else:
                self._deliver(call, event, actions)
            return
        if status != 401 and not _token_rejected(event):
            self._deliver(call, event, actions)
            return
        if call.auth_retried:
            self._fail(
                call,
                CredentialsRejected(
                    f"the server rejected a freshly refreshed access token (HTTP {status}); "
                    "the grant may have been revoked: log in again if this persists",
                    status=status,
                ),
                actions,
            )
            return
        call.auth_retried = True
        state = self._state
        if state in CALLS_WAIT:
            self._waiting.append(call)
        elif state is not State.READY:
            self._fail(call, self._lost_error(), actions)
        elif call.token != self._auth_header:
            # Another refresh already replaced the token this call carried.
            self._dispatch_call(call, event.now, actions)
        else:
            self._waiting.append(call)
            self._start_refresh("rejected", actions)

    # -- refreshing -----------------------------------------------------------

    def _start_refresh(self, reason: str, actions: list[Action]) -> None:
        self._goto(Trigger.REFRESH_DUE)
        actions.append(AcquireLease(reason, self._unsaved))

    def _on_tokens_loaded(self, event: TokensLoaded) -> list[Action]:
        if not self._oauth:
            raise LocalProtocolError("a token pair (ApiKey) has no OAuth2 tokens to load")
        if event.client_auth is not None:
            self._use_client_auth(event.client_auth)
        loaded = event.tokens
        current = self._tokens
        leasing = self._state is State.LEASING
        # Under the lease the store is the truth: a different pair there was
        # stored by whoever refreshed last, whatever its clock said.  Without
        # the lease, only a pair at least as recent as ours is taken.
        adopt = (
            loaded is not None
            and loaded.refresh_token != self._refused
            and (
                current is None
                or (
                    loaded.refresh_token != current.refresh_token
                    and (leasing or loaded.updated_at >= current.updated_at)
                )
            )
        )
        if not leasing:
            if adopt:
                # A pending login stays pending: its callback is accepted in READY.
                self._set_tokens(loaded)
                self._goto(Trigger.TOKENS_ADOPTED)
            return []
        actions: list[Action] = []
        # The adapter saved AcquireLease.unsaved under the lease before loading.
        self._unsaved = None
        if adopt:
            self._set_tokens(loaded)
        tokens = self._tokens
        reason = self._refresh_reason(event.now)
        if reason == "lost" or tokens is None:
            actions.append(ReleaseLease())
            self._lose_grant(_EXPIRED, None, actions)
            return actions
        if adopt and reason is None:
            # Another process refreshed while we waited for the lease.
            actions.append(ReleaseLease())
            self._goto(Trigger.TOKENS_ADOPTED)
            self._release_waiting(event.now, actions)
            return actions
        body = urlencode({"grant_type": "refresh_token", "refresh_token": tokens.refresh_token})
        self._token_request("refresh", body, None, (tokens.refresh_token,), actions)
        self._goto(Trigger.REFRESH_SENT)
        return actions

    def _token_request(
        self,
        purpose: _Purpose,
        body: str,
        deadline: float | None,
        secrets: tuple[str, ...],
        actions: list[Action],
    ) -> _TokenRequest:
        request = Request(
            "POST",
            self._account.token_url,
            (
                ("Authorization", self._client_authorization),
                *self._static_headers,
                _FORM,
            ),
            body.encode("ascii"),
        )
        pending = _TokenRequest(purpose, request, deadline, secrets)
        pending.form = self._client_auth
        request_id = self._request_id()
        self._pending[request_id] = pending
        actions.append(Send(request_id, request, None, purpose, deadline))
        return pending

    def _on_store_failed(self, event: StoreFailed) -> list[Action]:
        if not self._oauth:
            raise LocalProtocolError("a token pair (ApiKey) emits no Store to fail")
        if event.tokens == self._tokens:
            # The pair stays in use (its refresh token may be the only valid one
            # now); the next AcquireLease has it saved under the lease first.
            self._unsaved = event.tokens
        return []

    def _on_lease_failed(self, event: LeaseFailed) -> list[Action]:
        error = RefreshFailed(
            f"the token refresh could not start: {scrub(event.reason, self._secrets())}; "
            "the tokens are unchanged, try again"
        )
        actions: list[Action] = []
        self._goto(Trigger.REFRESH_FAILED)
        actions.append(RefreshAborted(error))
        self._fail_waiting(error, actions)
        return actions

    def _on_token_response(self, pending: _TokenRequest, event: ResponseReceived) -> list[Action]:
        actions: list[Action] = []
        if event.status in _REDIRECTS:
            location = _header(event.headers, "location")
            if location is not None:
                try:
                    self._follow_token_redirect(pending, event, location, actions)
                except CfauthError as error:
                    self._token_request_failed(pending, error, event.now, actions)
                return actions
        try:
            tokens = parse_token_response(
                event.status,
                event.body,
                now=event.now,
                previous=self._tokens if pending.purpose == "refresh" else None,
                secrets=self._secrets(pending.secrets),
            )
        except CfauthError as error:
            if not self._switch_client_auth(pending, error, actions):
                self._token_request_failed(pending, error, event.now, actions)
            return actions
        if pending.form != self._client_auth:
            self._use_client_auth(pending.form)  # the other form worked: keep it
        self._set_tokens(tokens)
        actions.append(Store(tokens, self._client_auth))
        if pending.purpose == "refresh":
            actions.append(ReleaseLease())
            self._goto(Trigger.REFRESH_SUCCEEDED)
        else:
            actions.append(Authorized())
            self._goto(Trigger.EXCHANGE_SUCCEEDED)
        self._release_waiting(event.now, actions)
        return actions

    def _switch_client_auth(
        self, pending: _TokenRequest, error: CfauthError, actions: list[Action]
    ) -> bool:
        """After ``invalid_client``, re-send the token request once with the client
        credentials in the other form, if encoding changes them and no form is pinned.

        Servers disagree on RFC 6749 section 2.3.1: some form-decode the Basic
        credentials, some only percent-decode them, some compare them raw.  The
        percent-encoded form suits every decoding server; the raw one the rest.
        """
        credential = self._credential
        if (
            pending.switched
            or not isinstance(error, OAuthError)
            or error.error != "invalid_client"
            or self._config.client_auth != "auto"
            or not isinstance(credential, OAuth2App)
            or not credential.encoding_changes
        ):
            return False
        pending.switched = True
        pending.form = "raw" if pending.form == "rfc6749" else "rfc6749"
        old = pending.request
        header = ("Authorization", credential.token_authorization_in(pending.form))
        headers = tuple(
            header if name == "Authorization" else (name, value) for name, value in old.headers
        )
        pending.request = Request(old.method, old.url, headers, old.body)
        request_id = self._request_id()
        self._pending[request_id] = pending
        actions.append(Send(request_id, pending.request, None, pending.purpose, pending.deadline))
        return True

    def _follow_token_redirect(
        self, pending: _TokenRequest, event: ResponseReceived, location: str, actions: list[Action]
    ) -> None:
        target = self._judge(
            pending.request.url, location, pending.hops, pending.visited, "POST", pending.secrets
        )
        if urlsplit(target.url)[2:4] != ("/oauth/token/", "") or event.status == 303:
            secrets = self._secrets(pending.secrets)
            raise refuse_redirect(
                scrub(shown(location, secrets), secrets, 10_000),
                "client credentials go to /oauth/token/ only, by POST",
            )
        pending.hops += 1
        pending.visited.add("POST " + target.url)
        # A migration moves the account.  The target can also be the account's own
        # origin: a call's 301 may have moved the account while this request was in
        # flight to the old one.  Then it is simply re-sent there.
        if target.kind is RedirectKind.MIGRATION:
            self._move(target.origin, event.status, actions)
        old = pending.request
        pending.request = Request(old.method, target.url, old.headers, old.body)
        request_id = self._request_id()
        self._pending[request_id] = pending
        actions.append(Send(request_id, pending.request, None, pending.purpose, pending.deadline))

    def _token_request_failed(
        self, pending: _TokenRequest, error: CfauthError, now: float, actions: list[Action]
    ) -> None:
        if isinstance(error, OAuthError) and error.error == "invalid_client":
            both = (
                " in both forms tried (RFC 6749 form-encoded and raw)" if pending.switched else ""
            )
            error = ClientCredentialsRejected(
                f"the token URL refused the OAuth2 client id and secret{both}: the server "
                f"answered 'invalid_client'"
                + (f" ({error.description!r})" if error.description else "")
                + (f" with HTTP {error.status}" if error.status is not None else "")
                + "; check the client id and secret under Manage > Developer in Checkfront "
                "and pass the right ones in OAuth2App"
                + ("; the tokens are kept" if pending.purpose == "refresh" else ", then log in"),
                status=error.status,
                cause=error,
            )
        if pending.purpose == "exchange":
            if (
                pending.deadline is not None
                and now > pending.deadline
                and isinstance(error, NetworkError)
            ):
                error = CodeExpired(
                    "the authorization code could not be exchanged within "
                    f"{self._config.exchange_window:g} s of the redirect: log in again"
                )
            # A new login over a grant the machine holds leaves that grant as it was.
            self._goto(Trigger.EXCHANGE_FAILED if self._tokens is None else Trigger.RELOGIN_FAILED)
            actions.append(AuthorizationFailed(error))
            if self._waiting:
                self._fail_waiting(
                    ReauthorizationRequired(
                        f"the login failed ({error.message}): log in again", cause=error
                    ),
                    actions,
                )
            return
        actions.append(ReleaseLease())
        if _grant_lost(error):
            self._lose_grant("the refresh token was refused", error, actions)
            return
        failure: CfauthError = error
        if not isinstance(error, ClientCredentialsRejected):
            failure = RefreshFailed(
                f"the token refresh failed ({error.message}); the tokens are unchanged and "
                "the next call will try again",
                cause=error,
                status=getattr(error, "status", None),
            )
            if isinstance(error, NetworkError) and not error.retryable:
                failure.retryable = False  # trying again fails the same way until it is fixed
        self._goto(Trigger.REFRESH_FAILED)
        actions.append(RefreshAborted(failure))
        self._fail_waiting(failure, actions)

    def _lose_grant(
        self, why: str, cause: CfauthError | None, actions: list[Action]
    ) -> ReauthorizationRequired:
        self._goto(Trigger.GRANT_LOST)
        # Never adopt this pair again, even if a store still holds it.
        self._refused = self._tokens.refresh_token if self._tokens is not None else self._refused
        self._set_tokens(None)
        self._set_auth("")
        error = ReauthorizationRequired(
            f"{why}: the OAuth2 grant is gone; log in again (a new OAuth2 authorization)",
            cause=cause,
        )
        actions.append(AuthorizationLost(error))
        self._fail_waiting(error, actions)
        return error

    def _release_waiting(self, now: float, actions: list[Action]) -> None:
        waiting, self._waiting = self._waiting, []
        for call in waiting:
            self._dispatch_call(call, now, actions)

    def _fail_waiting(self, error: CfauthError, actions: list[Action]) -> None:
        waiting, self._waiting = self._waiting, []
        for call in waiting:
            self._fail(call, error, actions)

    # -- transport failures, time, cancellation --------------------------------

    def _on_send_failed(self, event: SendFailed) -> list[Action]:
        pending = self._pending.pop(event.request_id, None)
        if pending is None:
            raise LocalProtocolError(
                f"request {event.request_id} is not in flight: report each Send's answer once"
            )
        if isinstance(pending, Send):
            pending = self._call_of(pending)
        extra = pending.secrets if isinstance(pending, _TokenRequest) else ()
        reason = scrub(event.reason, self._secrets(extra))
        actions: list[Action] = []
        retryable = event.retryable
        if isinstance(pending, _TokenRequest):
            error = NetworkError(
                f"the token request could not be completed: {reason}", retryable=retryable
            )
            self._token_request_failed(pending, error, event.now, actions)
        else:
            text = f"{pending.method} {pending.sent_to} could not be completed: {reason}"
            if retryable and (event.unsent or _replayable(pending.method, pending.headers)):
                text += "; the call may be retried"
            elif retryable:
                # a POST the server may have processed: sending it again could
                # book twice, so it is not retryable either
                retryable = False
                text += (
                    "; the server may have processed it: check whether it took effect "
                    "before sending it again"
                )
            self._fail(pending, NetworkError(text, retryable=retryable), actions)
        return actions

    def _on_clock_tick(self, event: ClockTick) -> list[Action]:
        now = event.now
        actions: list[Action] = []
        if self._parked:
            due = sorted((at, call_id) for call_id, (at, _) in self._parked.items() if at <= now)
            for _, call_id in due:
                _, call = self._parked.pop(call_id)
                self._dispatch_call(call, now, actions)
        if self._oauth and (self._state, Trigger.REFRESH_DUE) in TRANSITIONS:
            reason = self._refresh_reason(now)
            if reason == "lost":
                self._lose_grant(
                    "the refresh token has expired (14 days after it was issued)", None, actions
                )
            elif reason is not None:
                self._start_refresh(reason, actions)
        return actions

    def _on_call_cancelled(self, event: CallCancelled) -> list[Action]:
        call = self._calls.pop(event.call_id, None)
        if isinstance(call, str):  # a plain call sent light: only in flight
            for request_id, pending in list(self._pending.items()):
                if isinstance(pending, Send) and pending.call_id == event.call_id:
                    del self._pending[request_id]
        elif call is not None:
            self._parked.pop(call.call_id, None)
            if call in self._waiting:
                self._waiting.remove(call)
            for request_id, pending in list(self._pending.items()):
                if pending is call:
                    del self._pending[request_id]
        return []

    # -- logging in -------------------------------------------------------------

    def _on_authorization_requested(self, event: AuthorizationRequested) -> list[Action]:
        credential = self._credential
        if not isinstance(credential, OAuth2App):
            raise LocalProtocolError(
                "a token pair (ApiKey) has no OAuth2 login: use an OAuth2App machine to log in"
            )
        state, verifier = event.state, event.code_verifier
        if len(state) < 22 or _UNRESERVED.fullmatch(state) is None:
            raise InvalidInput(
                "state: pass at least 16 random bytes as 22 or more URL-safe characters "
                "(secrets.token_urlsafe(16))"
            )
        if state in self._used_states:
            raise InvalidInput("state: this value was used before; pass a fresh random state")
        if self._authorization is not None and _same(state, self._authorization.state):
            raise InvalidInput(
                "state: this is the pending login's state; pass a fresh random state for each login"
            )
        params = {
            "client_id": credential.client_id,
            "response_type": "code",
            "redirect_uri": credential.redirect_uri,
            "state": state,
        }
        if self._config.pkce:
            if (
                verifier is None
                or not 43 <= len(verifier) <= 128
                or _UNRESERVED.fullmatch(verifier) is None
            ):
                raise InvalidInput(
                    "code_verifier: PKCE is on; pass 43 to 128 URL-safe characters "
                    "(secrets.token_urlsafe(64)), or turn PKCE off with Config(pkce=False)"
                )
            params["code_challenge"] = _s256(verifier)
            params["code_challenge_method"] = "S256"
        elif verifier is not None:
            raise InvalidInput("code_verifier: PKCE is off (Config(pkce=False)); pass no verifier")
        if self._authorization is not None:
            self._remember_state(self._authorization.state)
        self._authorization = _Authorization(state, verifier)
        self._goto(Trigger.AUTHORIZE)
        return [AuthorizeAt(self._account.authorize_url + "?" + urlencode(params))]

    def _on_logout(self, event: LogoutRequested) -> list[Action]:
        if not self._oauth:
            raise LocalProtocolError(
                "a token pair (ApiKey) has no OAuth2 grant to forget: revoke the pair under "
                "Manage > Developer instead"
            )
        if self._tokens is not None:
            # Never adopt this pair again, even if a store still holds it.
            self._refused = self._tokens.refresh_token
        if self._authorization is not None:
            self._remember_state(self._authorization.state)
            self._authorization = None
        self._set_tokens(None)
        self._set_auth("")
        self._goto(Trigger.LOGGED_OUT)
        return [Forget()]

    def _remember_state(self, state: str) -> None:
        self._used_states.append(state)
        del self._used_states[:-_USED_STATES_KEPT]

    def _on_callback(self, event: CallbackReceived) -> list[Action]:
        authorization = self._authorization
        if authorization is None or not isinstance(self._credential, OAuth2App):
            raise LocalProtocolError(
                "CallbackReceived is not accepted: no login is pending (the callback was "
                "already used, or AuthorizationRequested was never sent)"
            )
        if not _at_redirect_uri(event.url, self._credential.redirect_uri):
            raise OAuthStateMismatch(
                "the callback URL is not at the redirect URI (its scheme, host, port or path "
                "differ); it was not meant for this login and was ignored"
            )
        params = _callback_params(event.url)
        states = params.get("state", [])
        if len(states) != 1:
            raise OAuthStateMismatch(
                "the callback carries no single state parameter; it was not started by this "
                "login and was ignored"
            )
        if not _same(states[0], authorization.state):
            used = any(_same(states[0], old) for old in self._used_states)
            raise OAuthStateMismatch(
                "the callback's state was already used; it was ignored"
                if used
                else "the callback's state does not match the pending login; it was ignored"
            )
        # The state matches: it is consumed, whatever the callback says.
        self._remember_state(authorization.state)
        self._authorization = None
        issuers = params.get("iss")
        if issuers is not None and issuers != [self._account.origin]:
            # RFC 9207 section 2.4: "If the value does not match the expected
            # issuer identifier, clients MUST reject the authorization response
            # and MUST NOT proceed with the authorization grant."
            named = scrub(issuers[0], self._secrets(), 100) if len(issuers) == 1 else None
            self._goto(Trigger.AUTHORIZATION_DENIED)
            return [
                AuthorizationFailed(
                    RemoteProtocolError(
                        "the callback's issuer (iss) is "
                        + (f"{named!r}" if named is not None else "given more than once")
                        + f", not this account's origin {self._account.origin}: the answer "
                        "may come from another server (a mix-up attack, RFC 9207); nothing "
                        "was exchanged: log in again"
                    )
                )
            ]
        if "error" in params:
            errors, descriptions = params["error"], params.get("error_description", [])
            # The login is consumed: its verifier is hidden as an extra secret.
            secrets = self._secrets((authorization.verifier,) if authorization.verifier else ())
            error: CfauthError = AuthorizationDenied(
                scrub(errors[0], secrets, 100),
                scrub(descriptions[0], secrets) if descriptions else None,
            )
            self._goto(Trigger.AUTHORIZATION_DENIED)
            return [AuthorizationFailed(error)]
        codes = params.get("code", [])
        redirected_at = event.redirected_at if event.redirected_at is not None else event.now
        deadline = redirected_at + self._config.exchange_window
        if len(codes) != 1 or not codes[0] or not codes[0].isascii() or not codes[0].isprintable():
            error = RemoteProtocolError(
                "the callback carries no single, printable authorization code: log in again"
            )
        elif event.now > deadline:
            error = CodeExpired(
                f"the authorization code arrived {event.now - redirected_at:.0f} s after the "
                f"redirect, more than the {self._config.exchange_window:g} s it is valid: "
                "log in again"
            )
        else:
            fields = {
                "grant_type": "authorization_code",
                "code": codes[0],
                "redirect_uri": self._credential.redirect_uri,
            }
            if authorization.verifier is not None:
                fields["code_verifier"] = authorization.verifier
            actions: list[Action] = []
            secrets = (
                (codes[0],)
                if authorization.verifier is None
                else (codes[0], authorization.verifier)
            )
            self._token_request("exchange", urlencode(fields), deadline, secrets, actions)
            self._goto(Trigger.CODE_RECEIVED)
            return actions
        self._goto(Trigger.AUTHORIZATION_DENIED)
        return [AuthorizationFailed(error)]


_EXPIRED = "the refresh token has expired (14 days after it was issued)"
#: The plain requests kept for reuse (see Machine._on_call_requested): paths up to
#: _MEMO_PATH_LENGTH characters, at most _MEMO_REQUESTS of them.
_MEMO_PATH_LENGTH = 256
_MEMO_REQUESTS = 256

_SPECIAL_STATUSES = frozenset({301, 302, 303, 307, 308, 400, 401, 403, 429, 503})


_HINTS: dict[type[Event], str] = {
    CallbackReceived: ": no login is pending (the callback was already used, or "
    "AuthorizationRequested was never sent), or a token refresh or exchange is in flight "
    "(pass the callback again once the refresh has ended)",
    LogoutRequested: ": a token refresh or exchange is in flight; log out once it has ended",
    AuthorizationRequested: ": a login cannot start while a token refresh or exchange is in "
    "flight; start it once that has ended",
    TokensLoaded: ": tokens can be loaded only when no refresh or exchange is in flight",
    LeaseFailed: ": LeaseFailed answers a AcquireLease",
}

_HANDLERS: dict[type[Event], Callable[[Machine, Event], list[Action]]] = {
    CallRequested: Machine._on_call_requested,  # type: ignore[dict-item]
    ResponseReceived: Machine._on_response,  # type: ignore[dict-item]
    SendFailed: Machine._on_send_failed,  # type: ignore[dict-item]
    ClockTick: Machine._on_clock_tick,  # type: ignore[dict-item]
    CallCancelled: Machine._on_call_cancelled,  # type: ignore[dict-item]
    TokensLoaded: Machine._on_tokens_loaded,  # type: ignore[dict-item]
    LeaseFailed: Machine._on_lease_failed,  # type: ignore[dict-item]
    StoreFailed: Machine._on_store_failed,  # type: ignore[dict-item]
    AuthorizationRequested: Machine._on_authorization_requested,  # type: ignore[dict-item]
    CallbackReceived: Machine._on_callback,  # type: ignore[dict-item]
    LogoutRequested: Machine._on_logout,  # type: ignore[dict-item]
}

#: For each state, the handler of each event it accepts (``EVENTS_ALLOWED``).
_DISPATCH: dict[State, dict[type[Event], Callable[[Machine, Event], list[Action]]]] = {
    state: {event: _HANDLERS[event] for event in events} for state, events in EVENTS_ALLOWED.items()
}
