"""Events: what the adapter tells the machine.

Every event carries ``now``, the wall-clock time in seconds (``time.time()``
in the adapter); the core never reads a clock.  Events are frozen, slotted,
keyword-only records, validated in their constructor: a malformed event
raises :class:`InvalidInput` before it reaches the machine.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from ._account import Params
from ._credentials import CLIENT_AUTH_FORMS
from ._errors import InvalidInput
from ._record import Record, _new
from ._tokens import TokenSet

__all__ = [
    "AuthorizationRequested",
    "CallCancelled",
    "CallRequested",
    "CallbackReceived",
    "ClockTick",
    "Event",
    "Headers",
    "LeaseFailed",
    "LogoutRequested",
    "ResponseReceived",
    "SendFailed",
    "StoreFailed",
    "TokensLoaded",
    "check_header_value",
    "check_headers",
]

#: Header fields as (name, value) pairs of ``str``; names compare case-insensitively.
Headers = Sequence[tuple[str, str]]

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_TOKEN_CHARS = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: Headers the core owns (credentials, framing, the connection): a caller may
#: not set them on a call.  ``Expect``, ``Upgrade``, ``TE``, ``Trailer`` and
#: ``Keep-Alive`` change how the connection or the message is handled, which
#: the transports decide alone.
RESERVED_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "expect",
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
    }
)
#: The one rule for every header value a caller sets (``Config.user_agent``,
#: ``X-On-Behalf``, ``X-Forwarded-For``, any extra header): visible ASCII,
#: with spaces and tabs between visible characters (RFC 9110 section 5.5
#: less obs-text).  Every transport sends such a value unchanged; anything else
#: (CR, LF, NUL, other controls, non-ASCII, leading or trailing whitespace)
#: some transport would refuse, alter or send raw, so the core refuses it.
HEADER_VALUE = re.compile(r"(?:[\x21-\x7e](?:[ \t\x21-\x7e]*[\x21-\x7e])?)?")


def _check_id(value: int) -> None:
    if type(value) is not int or value < 1:
        raise InvalidInput("pass the id from the machine's action (a positive int)")


class Event(Record):
    """Base class of all events."""

    __slots__ = ()


_INF = math.inf


def _check_now(now: float) -> None:
    # type() rather than isinstance(): bool is not a time, and this runs on every event.
    if (type(now) is not float and type(now) is not int) or not 0 <= now < _INF:
        raise InvalidInput("now: pass the wall-clock time in seconds (time.time())")


class CallRequested(Event):
    """The program wants to call the API: ``method`` on ``path`` under the API base.

    ``params`` become the query string; ``data`` a form body (POST/PUT/PATCH).
    ``headers`` are extra request headers (``X-On-Behalf``, ``X-Forwarded-For``);
    the core sets ``Authorization`` itself and refuses one given here.
    """

    __slots__ = ("now", "method", "path", "params", "data", "headers")
    now: float
    method: str
    path: str
    params: Params | None
    data: Params | None
    headers: Headers

    def __new__(
        cls,
        *,
        now: float,
        method: str,
        path: str,
        params: Params | None = None,
        data: Params | None = None,
        headers: Headers = (),
    ) -> CallRequested:
        # The checks of _check_now, inlined: this runs for every call.
        if (type(now) is not float and type(now) is not int) or not 0 <= now < _INF:
            _check_now(now)
        if method not in METHODS:
            raise InvalidInput(
                f"method {method!r}: pass one of {', '.join(sorted(METHODS))} in upper case"
            )
        if data is not None and method == "GET":
            raise InvalidInput("a GET has no body: pass its parameters as params, not data")
        if headers:
            check_headers(headers)
        self: CallRequested = _new(cls._fast)
        self.now = now
        self.method = method
        self.path = path
        self.params = params
        self.data = data
        self.headers = headers
        self.__class__ = cls
        return self


def check_headers(headers: Headers) -> None:
    """Refuse header fields that are malformed, that the core owns, or whose
    value breaks the header value rule, with
    :class:`InvalidInput` naming the header (never quoting the value)."""
    for item in headers:
        if not isinstance(item, tuple) or len(item) != 2:
            raise InvalidInput("headers: pass (name, value) pairs of strings")
        name, value = item
        if not isinstance(name, str) or _TOKEN_CHARS.fullmatch(name) is None:
            raise InvalidInput(f"headers: {name!r} is not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise InvalidInput(
                f"headers: {name} is set by cfauth or its transport; pass credentials as "
                "ApiKey or OAuth2App and data through params or data"
            )
        check_header_value(f"headers: the value of {name}", value)


def check_header_value(what: str, value: object) -> None:
    """Refuse a header value that breaks the rule every header value a caller
    sets must follow (visible ASCII, with spaces and tabs only between visible
    characters), with :class:`InvalidInput`; ``what`` names the value."""
    if not isinstance(value, str) or HEADER_VALUE.fullmatch(value) is None:
        raise InvalidInput(
            f"{what} must be a string of visible ASCII characters, with spaces or tabs only "
            "between them (no CR, LF, NUL or other control characters, no non-ASCII, no "
            "leading or trailing whitespace); percent-encode other text"
        )


class ResponseReceived(Event):
    """The answer to the request sent by ``Send(request_id=...)``.

    ``body`` is the whole body; ``headers`` as received, as (name, value)
    pairs of ``str`` (names in any case).
    """

    __slots__ = ("now", "request_id", "status", "headers", "body")
    _hidden = frozenset({"body"})
    now: float
    request_id: int
    status: int
    headers: Headers
    body: bytes

    def __new__(
        cls, *, now: float, request_id: int, status: int, headers: Headers, body: bytes
    ) -> ResponseReceived:
        # The checks of _check_now and _check_id, inlined: this runs for every call.
        if (type(now) is not float and type(now) is not int) or not 0 <= now < _INF:
            _check_now(now)
        if type(request_id) is not int or request_id < 1:
            _check_id(request_id)
        if type(status) is not int or not 100 <= status <= 999:
            raise InvalidInput("status: pass the HTTP status code as an int")
        if type(body) is not bytes:
            raise InvalidInput("body: pass the response body as bytes")
        self: ResponseReceived = _new(cls._fast)
        self.now = now
        self.request_id = request_id
        self.status = status
        self.headers = headers
        self.body = body
        self.__class__ = cls
        return self


class SendFailed(Event):
    """The request of ``Send(request_id=...)`` failed in transport (connect,
    TLS, timeout, reset, cancelled).  ``reason`` is a short description for
    messages; it must not contain secrets (cfauth scrubs the ones it knows).

    ``retryable=False`` says that sending again cannot help until something
    changes (a server certificate that is not trusted): the error the call
    fails with is then not retryable, and ``reason`` must say what to change.

    ``unsent`` is ``True`` only when the transport knows that nothing of the
    request was written (so the server cannot have processed it); the default
    ``False`` means it may have been, and a call that is not idempotent then
    fails with a message saying to check before sending it again."""

    __slots__ = ("now", "request_id", "reason", "retryable", "unsent")
    now: float
    request_id: int
    reason: str
    retryable: bool
    unsent: bool

    def __new__(
        cls,
        *,
        now: float,
        request_id: int,
        reason: str = "the transport failed",
        retryable: bool = True,
        unsent: bool = False,
    ) -> SendFailed:
        self: SendFailed = _new(cls._fast)
        _check_now(now)
        _check_id(request_id)
        if not isinstance(reason, str):
            raise InvalidInput("reason: pass a short description as a string")
        if not isinstance(retryable, bool):
            raise InvalidInput("retryable: pass True or False")
        if type(unsent) is not bool:
            raise InvalidInput("unsent: pass True or False")
        self.now = now
        self.request_id = request_id
        self.reason = reason
        self.retryable = retryable
        self.unsent = unsent
        self.__class__ = cls
        return self


class ClockTick(Event):
    """Time has passed: retries whose time has come are sent, and a refresh
    that is due (access token near expiry, refresh token near its 14 days)
    is started."""

    __slots__ = ("now",)
    now: float

    def __new__(cls, *, now: float) -> ClockTick:
        self: ClockTick = _new(cls._fast)
        _check_now(now)
        self.now = now
        self.__class__ = cls
        return self


class TokensLoaded(Event):
    """The store's tokens, read under its refresh lease (the answer to
    ``AcquireLease``), or at any other time to pick up tokens another process
    stored.  ``None`` when the store holds none.  ``client_auth`` is the form
    of the client credentials the store recorded (``Store.client_auth``), if any."""

    __slots__ = ("now", "tokens", "client_auth")
    now: float
    tokens: TokenSet | None
    client_auth: str | None

    def __new__(
        cls, *, now: float, tokens: TokenSet | None, client_auth: str | None = None
    ) -> TokensLoaded:
        self: TokensLoaded = _new(cls._fast)
        _check_now(now)
        if tokens is not None and not isinstance(tokens, TokenSet):
            raise InvalidInput("tokens: pass a TokenSet or None")
        if client_auth is not None and client_auth not in CLIENT_AUTH_FORMS:
            raise InvalidInput("client_auth: pass 'rfc6749', 'raw' or None (what Store said)")
        self.now = now
        self.tokens = tokens
        self.client_auth = client_auth
        self.__class__ = cls
        return self


class LeaseFailed(Event):
    """The store's refresh lease could not be taken (the answer to
    ``AcquireLease``); the waiting calls fail with a retryable error."""

    __slots__ = ("now", "reason")
    now: float
    reason: str

    def __new__(
        cls, *, now: float, reason: str = "the token store could not be locked"
    ) -> LeaseFailed:
        self: LeaseFailed = _new(cls._fast)
        _check_now(now)
        if not isinstance(reason, str):
            raise InvalidInput("reason: pass a short description as a string")
        self.now = now
        self.reason = reason
        self.__class__ = cls
        return self


class StoreFailed(Event):
    """Saving the tokens of a ``Store`` failed (the answer to a ``Store`` whose
    save raised, in the spirit of h11's ``send_failed()``).  ``tokens`` are the
    ones the ``Store`` carried; ``reason`` is a short description (no secrets).

    The machine goes on using the tokens (the old refresh token may already be
    rotated away) and has them saved again under the lease before the store is
    next read: the next ``AcquireLease`` carries them in ``unsaved``.  A failure
    for a pair the machine no longer holds changes nothing."""

    __slots__ = ("now", "tokens", "reason")
    now: float
    tokens: TokenSet
    reason: str

    def __new__(
        cls, *, now: float, tokens: TokenSet, reason: str = "the token store failed"
    ) -> StoreFailed:
        self: StoreFailed = _new(cls._fast)
        _check_now(now)
        if not isinstance(tokens, TokenSet):
            raise InvalidInput("tokens: pass the TokenSet of the Store whose save failed")
        if not isinstance(reason, str):
            raise InvalidInput("reason: pass a short description as a string")
        self.now = now
        self.tokens = tokens
        self.reason = reason
        self.__class__ = cls
        return self


class AuthorizationRequested(Event):
    """Start an OAuth2 login.

    ``state`` is a fresh random value of at least 22 characters from the URL
    safe alphabet (``secrets.token_urlsafe(16)``); ``code_verifier`` is the
    PKCE verifier, 43 to 128 such characters (``secrets.token_urlsafe(64)``),
    required unless PKCE was turned off.
    """

    __slots__ = ("now", "state", "code_verifier")
    _hidden = frozenset({"code_verifier"})
    now: float
    state: str
    code_verifier: str | None

    def __new__(
        cls, *, now: float, state: str, code_verifier: str | None = None
    ) -> AuthorizationRequested:
        self: AuthorizationRequested = _new(cls._fast)
        _check_now(now)
        if not isinstance(state, str) or (
            code_verifier is not None and not isinstance(code_verifier, str)
        ):
            raise InvalidInput("state and code_verifier: pass strings")
        self.now = now
        self.state = state
        self.code_verifier = code_verifier
        self.__class__ = cls
        return self


class CallbackReceived(Event):
    """The browser came back to the redirect URI: ``url`` is the full URL or
    just its query string.  ``redirected_at`` is when the redirect happened if
    the receiver knows it (the 60 s code window runs from then); default ``now``."""

    __slots__ = ("now", "url", "redirected_at")
    _hidden = frozenset({"url"})
    now: float
    url: str
    redirected_at: float | None

    def __new__(
        cls, *, now: float, url: str, redirected_at: float | None = None
    ) -> CallbackReceived:
        self: CallbackReceived = _new(cls._fast)
        _check_now(now)
        if not isinstance(url, str):
            raise InvalidInput("url: pass the callback URL or its query string")
        if redirected_at is not None:
            _check_now(redirected_at)
        self.now = now
        self.url = url
        self.redirected_at = redirected_at
        self.__class__ = cls
        return self


class CallCancelled(Event):
    """The program gave up on a call (e.g. its task was cancelled).  If a
    request of the call is in flight, the adapter will not report its answer.
    Cancelling a call that already ended does nothing."""

    __slots__ = ("now", "call_id")
    now: float
    call_id: int

    def __new__(cls, *, now: float, call_id: int) -> CallCancelled:
        self: CallCancelled = _new(cls._fast)
        _check_now(now)
        _check_id(call_id)
        self.now = now
        self.call_id = call_id
        self.__class__ = cls
        return self


class LogoutRequested(Event):
    """Forget the grant: its tokens, and any login in progress.  The machine
    answers ``Forget`` (delete the stored grant) and goes to ``UNAUTHORIZED``;
    calls then fail with ``ReauthorizationRequired`` until a new login.
    Refused while a refresh or a code exchange is in flight."""

    __slots__ = ("now",)
    now: float

    def __new__(cls, *, now: float) -> LogoutRequested:
        self: LogoutRequested = _new(cls._fast)
        _check_now(now)
        self.now = now
        self.__class__ = cls
        return self
