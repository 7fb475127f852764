"""Actions: what the machine asks the adapter to do, in list order.

The adapter executes the actions :meth:`Machine.handle` returns in the order
given.  That order carries guarantees: a ``Store`` comes before every ``Send``
that uses the tokens it stores (persisted before used), and a
``ReleaseLease`` comes after the ``Store`` it protects.
"""

from __future__ import annotations

from ._record import Record

# ``typing`` costs about 3 ms to import; the core needs it only for the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    from ._errors import CfauthError
    from ._events import Headers
    from ._tokens import TokenSet

__all__ = [
    "AccountMoved",
    "Action",
    "AuthorizationFailed",
    "AuthorizationLost",
    "AuthorizeAt",
    "Authorized",
    "CallAccepted",
    "Deliver",
    "Fail",
    "RefreshAborted",
    "RefreshDue",
    "ReleaseLease",
    "Request",
    "RetryAt",
    "Send",
    "Store",
]

_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_set = object.__setattr__


class Request(Record):
    """An HTTP request for a transport to send as it is: never follow its
    redirects or retry it; the machine does both.  ``headers`` are
    (name, value) pairs of ``str``; ``body`` is ``None`` or the bytes to send."""

    __slots__ = ("method", "url", "headers", "body")
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None

    def __init__(
        self,
        method: str,
        url: str,
        headers: tuple[tuple[str, str], ...],
        body: bytes | None = None,
    ) -> None:
        _set(self, "method", method)
        _set(self, "url", url)
        _set(self, "headers", headers)
        _set(self, "body", body)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{n}: <hidden>" if n.lower() in _SECRET_HEADERS else f"{n}: {v}"
            for n, v in self.headers
        )
        size = "no body" if self.body is None else f"{len(self.body)}-byte body"
        return f"<Request {self.method} {self.url} [{shown}] {size}>"


class Action(Record):
    """Base class of all actions."""

    __slots__ = ()


class CallAccepted(Action):
    """The machine took the call and named it ``call_id``; the call ends with
    exactly one ``Deliver`` or ``Fail`` for that id (or when it is cancelled)."""

    __slots__ = ("call_id",)
    call_id: int

    def __init__(self, call_id: int) -> None:
        _set(self, "call_id", call_id)


class Send(Action):
    """Send ``request`` and report its answer as ``ResponseReceived`` (or
    ``SendFailed``) with this ``request_id``.

    ``purpose`` is ``"call"`` for API calls (``call_id`` names the call),
    ``"refresh"`` or ``"exchange"`` for the token URL.  ``deadline`` is the
    wall-clock time after which sending is pointless (the 60 s window of an
    authorization code); ``None`` when there is none.
    """

    __slots__ = ("request_id", "request", "call_id", "purpose", "deadline")
    request_id: int
    request: Request
    call_id: int | None
    purpose: Literal["call", "refresh", "exchange"]
    deadline: float | None

    def __init__(
        self,
        request_id: int,
        request: Request,
        call_id: int | None = None,
        purpose: Literal["call", "refresh", "exchange"] = "call",
        deadline: float | None = None,
    ) -> None:
        _set(self, "request_id", request_id)
        _set(self, "request", request)
        _set(self, "call_id", call_id)
        _set(self, "purpose", purpose)
        _set(self, "deadline", deadline)


class Store(Action):
    """Persist these tokens before executing any later action."""

    __slots__ = ("tokens",)
    tokens: TokenSet

    def __init__(self, tokens: TokenSet) -> None:
        _set(self, "tokens", tokens)


class RefreshDue(Action):
    """A refresh is due: take the store's refresh lease (its cross-process
    lock), reload the stored tokens, and answer ``TokensLoaded`` (or
    ``LeaseFailed``).  ``reason`` says why: ``"expiring"``, ``"keep-alive"``
    or ``"rejected"``."""

    __slots__ = ("reason",)
    reason: str

    def __init__(self, reason: str) -> None:
        _set(self, "reason", reason)


class ReleaseLease(Action):
    """Release the store's refresh lease."""

    __slots__ = ()


class Deliver(Action):
    """The call ended with this response."""

    __slots__ = ("call_id", "status", "headers", "body", "url")
    _hidden = frozenset({"body"})
    call_id: int
    status: int
    headers: Headers
    body: bytes
    url: str

    def __init__(self, call_id: int, status: int, headers: Headers, body: bytes, url: str) -> None:
        _set(self, "call_id", call_id)
        _set(self, "status", status)
        _set(self, "headers", headers)
        _set(self, "body", body)
        _set(self, "url", url)


class Fail(Action):
    """The call ended with this error."""

    __slots__ = ("call_id", "error")
    call_id: int
    error: CfauthError

    def __init__(self, call_id: int, error: CfauthError) -> None:
        _set(self, "call_id", call_id)
        _set(self, "error", error)


class RetryAt(Action):
    """The server asked to wait: feed a ``ClockTick`` at or after ``at`` and
    the call is sent again."""

    __slots__ = ("call_id", "at")
    call_id: int
    at: float

    def __init__(self, call_id: int, at: float) -> None:
        _set(self, "call_id", call_id)
        _set(self, "at", at)


class AccountMoved(Action):
    """The account migrated (a permanent redirect to a trusted host): use and
    persist ``new_origin`` from now on, the token URL included."""

    __slots__ = ("old_origin", "new_origin")
    old_origin: str
    new_origin: str

    def __init__(self, old_origin: str, new_origin: str) -> None:
        _set(self, "old_origin", old_origin)
        _set(self, "new_origin", new_origin)


class AuthorizeAt(Action):
    """Send the user to ``url`` to grant access; they come back to the
    redirect URI, which the adapter reports as ``CallbackReceived``."""

    __slots__ = ("url",)
    url: str

    def __init__(self, url: str) -> None:
        _set(self, "url", url)


class Authorized(Action):
    """The login finished: the tokens were stored (the ``Store`` before this)."""

    __slots__ = ()


class AuthorizationFailed(Action):
    """The login failed (denied, expired code, bad token response); start again."""

    __slots__ = ("error",)
    error: CfauthError

    def __init__(self, error: CfauthError) -> None:
        _set(self, "error", error)


class RefreshAborted(Action):
    """A refresh failed; the tokens are unchanged and the next call may refresh again."""

    __slots__ = ("error",)
    error: CfauthError

    def __init__(self, error: CfauthError) -> None:
        _set(self, "error", error)


class AuthorizationLost(Action):
    """The grant is gone (refresh token expired, revoked or rotated away):
    every call fails with ``error`` until the user logs in again."""

    __slots__ = ("error",)
    error: CfauthError

    def __init__(self, error: CfauthError) -> None:
        _set(self, "error", error)
