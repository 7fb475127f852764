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
from ._errors import InvalidInput
from ._record import Record
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
    "ResponseReceived",
    "SendFailed",
    "TokensLoaded",
]

#: Header fields as (name, value) pairs of ``str``; names compare case-insensitively.
Headers = Sequence[tuple[str, str]]

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_TOKEN_CHARS = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: Headers the core owns: a caller may not set them on a call.
RESERVED_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
    }
)


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


_set = object.__setattr__


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

    def __init__(
        self,
        *,
        now: float,
        method: str,
        path: str,
        params: Params | None = None,
        data: Params | None = None,
        headers: Headers = (),
    ) -> None:
        _check_now(now)
        if method not in METHODS:
            raise InvalidInput(
                f"method {method!r}: pass one of {', '.join(sorted(METHODS))} in upper case"
            )
        if data is not None and method == "GET":
            raise InvalidInput("a GET has no body: pass its parameters as params, not data")
        if headers:
            check_headers(headers)
        _set(self, "now", now)
        _set(self, "method", method)
        _set(self, "path", path)
        _set(self, "params", params)
        _set(self, "data", data)
        _set(self, "headers", headers)


def check_headers(headers: Headers) -> None:
    """Refuse header fields that are malformed or that the core owns."""
    for item in headers:
        if not isinstance(item, tuple) or len(item) != 2:
            raise InvalidInput("headers: pass (name, value) pairs of strings")
        name, value = item
        if not isinstance(name, str) or _TOKEN_CHARS.fullmatch(name) is None:
            raise InvalidInput(f"headers: {name!r} is not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise InvalidInput(
                f"headers: {name} is set by cfauth itself; pass credentials as ApiKey or "
                "OAuth2App and data through params or data"
            )
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise InvalidInput(
                f"headers: the value of {name} must be a string without CR, LF or NUL"
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

    def __init__(
        self, *, now: float, request_id: int, status: int, headers: Headers, body: bytes
    ) -> None:
        _check_now(now)
        _check_id(request_id)
        if type(status) is not int or not 100 <= status <= 999:
            raise InvalidInput("status: pass the HTTP status code as an int")
        if type(body) is not bytes:
            raise InvalidInput("body: pass the response body as bytes")
        _set(self, "now", now)
        _set(self, "request_id", request_id)
        _set(self, "status", status)
        _set(self, "headers", headers)
        _set(self, "body", body)


class SendFailed(Event):
    """The request of ``Send(request_id=...)`` failed in transport (connect,
    TLS, timeout, reset, cancelled).  ``reason`` is a short description for
    messages; it must not contain secrets (cfauth scrubs the ones it knows)."""

    __slots__ = ("now", "request_id", "reason")
    now: float
    request_id: int
    reason: str

    def __init__(
        self, *, now: float, request_id: int, reason: str = "the transport failed"
    ) -> None:
        _check_now(now)
        _check_id(request_id)
        if not isinstance(reason, str):
            raise InvalidInput("reason: pass a short description as a string")
        _set(self, "now", now)
        _set(self, "request_id", request_id)
        _set(self, "reason", reason)


class ClockTick(Event):
    """Time has passed: retries whose time has come are sent, and a refresh
    that is due (access token near expiry, refresh token near its 14 days)
    is started."""

    __slots__ = ("now",)
    now: float

    def __init__(self, *, now: float) -> None:
        _check_now(now)
        _set(self, "now", now)


class TokensLoaded(Event):
    """The store's tokens, read under its refresh lease (the answer to
    ``RefreshDue``), or at any other time to pick up tokens another process
    stored.  ``None`` when the store holds none."""

    __slots__ = ("now", "tokens")
    now: float
    tokens: TokenSet | None

    def __init__(self, *, now: float, tokens: TokenSet | None) -> None:
        _check_now(now)
        if tokens is not None and not isinstance(tokens, TokenSet):
            raise InvalidInput("tokens: pass a TokenSet or None")
        _set(self, "now", now)
        _set(self, "tokens", tokens)


class LeaseFailed(Event):
    """The store's refresh lease could not be taken (the answer to
    ``RefreshDue``); the waiting calls fail with a retryable error."""

    __slots__ = ("now", "reason")
    now: float
    reason: str

    def __init__(self, *, now: float, reason: str = "the token store could not be locked") -> None:
        _check_now(now)
        if not isinstance(reason, str):
            raise InvalidInput("reason: pass a short description as a string")
        _set(self, "now", now)
        _set(self, "reason", reason)


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

    def __init__(self, *, now: float, state: str, code_verifier: str | None = None) -> None:
        _check_now(now)
        if not isinstance(state, str) or (
            code_verifier is not None and not isinstance(code_verifier, str)
        ):
            raise InvalidInput("state and code_verifier: pass strings")
        _set(self, "now", now)
        _set(self, "state", state)
        _set(self, "code_verifier", code_verifier)


class CallbackReceived(Event):
    """The browser came back to the redirect URI: ``url`` is the full URL or
    just its query string.  ``redirected_at`` is when the redirect happened if
    the receiver knows it (the 60 s code window runs from then); default ``now``."""

    __slots__ = ("now", "url", "redirected_at")
    _hidden = frozenset({"url"})
    now: float
    url: str
    redirected_at: float | None

    def __init__(self, *, now: float, url: str, redirected_at: float | None = None) -> None:
        _check_now(now)
        if not isinstance(url, str):
            raise InvalidInput("url: pass the callback URL or its query string")
        if redirected_at is not None:
            _check_now(redirected_at)
        _set(self, "now", now)
        _set(self, "url", url)
        _set(self, "redirected_at", redirected_at)


class CallCancelled(Event):
    """The program gave up on a call (e.g. its task was cancelled).  If a
    request of the call is in flight, the adapter will not report its answer.
    Cancelling a call that already ended does nothing."""

    __slots__ = ("now", "call_id")
    now: float
    call_id: int

    def __init__(self, *, now: float, call_id: int) -> None:
        _check_now(now)
        _check_id(call_id)
        _set(self, "now", now)
        _set(self, "call_id", call_id)
