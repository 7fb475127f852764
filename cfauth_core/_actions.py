"""Actions: what the machine asks the adapter to do, in list order.

The adapter executes the actions :meth:`Machine.handle` returns in the order
given.  That order carries guarantees: a ``Store`` comes before every ``Send``
that uses the tokens it stores (persisted before used), and a
``ReleaseLease`` comes after the ``Store`` it protects.
"""

from __future__ import annotations

from ._errors import InvalidInput, detach
from ._record import Record, _new

# ``typing`` costs about 3 ms to import; the core needs it only for the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Literal

    from ._errors import CfauthError
    from ._events import Headers
    from ._tokens import TokenSet

__all__ = [
    "AccountMoved",
    "AcquireLease",
    "Action",
    "AuthorizationFailed",
    "AuthorizationLost",
    "AuthorizeAt",
    "Authorized",
    "CallAccepted",
    "Deliver",
    "Fail",
    "Forget",
    "RefreshAborted",
    "ReleaseLease",
    "Request",
    "RetryAt",
    "Send",
    "Store",
    "call_id_of",
]

_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


class Request(Record):
    """An HTTP request for a transport to send as it is: never follow its
    redirects or retry it; the machine does both.  ``headers`` are
    (name, value) pairs of ``str``; ``body`` is ``None`` or the bytes to send."""

    __slots__ = ("method", "url", "headers", "body")
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None

    def __new__(
        cls,
        method: str,
        url: str,
        headers: tuple[tuple[str, str], ...],
        body: bytes | None = None,
    ) -> Request:
        self: Request = _new(cls._fast)
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.__class__ = cls
        return self

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

    def __new__(cls, call_id: int) -> CallAccepted:
        self: CallAccepted = _new(cls._fast)
        self.call_id = call_id
        self.__class__ = cls
        return self


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

    def __new__(
        cls,
        request_id: int,
        request: Request,
        call_id: int | None = None,
        purpose: Literal["call", "refresh", "exchange"] = "call",
        deadline: float | None = None,
    ) -> Send:
        self: Send = _new(cls._fast)
        self.request_id = request_id
        self.request = request
        self.call_id = call_id
        self.purpose = purpose
        self.deadline = deadline
        self.__class__ = cls
        return self


class Store(Action):
    """Persist these tokens before executing any later action.

    ``client_auth`` is the form of the client credentials the token URL
    accepted (``"rfc6749"`` or ``"raw"``); a store may keep it with the grant
    and give it back in ``TokensLoaded`` (or to the ``Machine``) later.
    """

    __slots__ = ("tokens", "client_auth")
    tokens: TokenSet
    client_auth: str

    def __new__(cls, tokens: TokenSet, client_auth: str = "rfc6749") -> Store:
        self: Store = _new(cls._fast)
        self.tokens = tokens
        self.client_auth = client_auth
        self.__class__ = cls
        return self


class AcquireLease(Action):
    """A refresh is due: take the store's refresh lease (its cross-process
    lock), save ``unsaved`` if it is not ``None`` (tokens whose save failed:
    ``StoreFailed``; under the lease the store must not lag behind the
    machine), then reload the stored tokens, and answer ``TokensLoaded`` (or
    ``LeaseFailed``, after releasing the lease, if any of it failed).
    ``reason`` says why: ``"expiring"``, ``"keep-alive"`` or ``"rejected"``."""

    __slots__ = ("reason", "unsaved")
    reason: str
    unsaved: TokenSet | None

    def __new__(cls, reason: str, unsaved: TokenSet | None = None) -> AcquireLease:
        self: AcquireLease = _new(cls._fast)
        self.reason = reason
        self.unsaved = unsaved
        self.__class__ = cls
        return self


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

    def __new__(cls, call_id: int, status: int, headers: Headers, body: bytes, url: str) -> Deliver:
        self: Deliver = _new(cls._fast)
        self.call_id = call_id
        self.status = status
        self.headers = headers
        self.body = body
        self.url = url
        self.__class__ = cls
        return self


class Fail(Action):
    """The call ended with this error."""

    __slots__ = ("call_id", "error")
    call_id: int
    error: CfauthError

    def __new__(cls, call_id: int, error: CfauthError) -> Fail:
        self: Fail = _new(cls._fast)
        self.call_id = call_id
        self.error = detach(error)
        self.__class__ = cls
        return self


class RetryAt(Action):
    """The server asked to wait: feed a ``ClockTick`` at or after ``at`` and
    the call is sent again."""

    __slots__ = ("call_id", "at")
    call_id: int
    at: float

    def __new__(cls, call_id: int, at: float) -> RetryAt:
        self: RetryAt = _new(cls._fast)
        self.call_id = call_id
        self.at = at
        self.__class__ = cls
        return self


class AccountMoved(Action):
    """The account migrated (a permanent redirect to a trusted host): use and
    persist ``new_origin`` from now on, the token URL included."""

    __slots__ = ("old_origin", "new_origin")
    old_origin: str
    new_origin: str

    def __new__(cls, old_origin: str, new_origin: str) -> AccountMoved:
        self: AccountMoved = _new(cls._fast)
        self.old_origin = old_origin
        self.new_origin = new_origin
        self.__class__ = cls
        return self


class AuthorizeAt(Action):
    """Send the user to ``url`` to grant access; they come back to the
    redirect URI, which the adapter reports as ``CallbackReceived``."""

    __slots__ = ("url",)
    url: str

    def __new__(cls, url: str) -> AuthorizeAt:
        self: AuthorizeAt = _new(cls._fast)
        self.url = url
        self.__class__ = cls
        return self


class Authorized(Action):
    """The login finished: the tokens were stored (the ``Store`` before this)."""

    __slots__ = ()


class AuthorizationFailed(Action):
    """The login failed (denied, expired code, bad token response); start again."""

    __slots__ = ("error",)
    error: CfauthError

    def __new__(cls, error: CfauthError) -> AuthorizationFailed:
        self: AuthorizationFailed = _new(cls._fast)
        self.error = detach(error)
        self.__class__ = cls
        return self


class RefreshAborted(Action):
    """A refresh failed; the tokens are unchanged and the next call may refresh again."""

    __slots__ = ("error",)
    error: CfauthError

    def __new__(cls, error: CfauthError) -> RefreshAborted:
        self: RefreshAborted = _new(cls._fast)
        self.error = detach(error)
        self.__class__ = cls
        return self


class AuthorizationLost(Action):
    """The grant is gone (refresh token expired, revoked or rotated away):
    every call fails with ``error`` until the user logs in again."""

    __slots__ = ("error",)
    error: CfauthError

    def __new__(cls, error: CfauthError) -> AuthorizationLost:
        self: AuthorizationLost = _new(cls._fast)
        self.error = detach(error)
        self.__class__ = cls
        return self


class Forget(Action):
    """The program logged out (``LogoutRequested``): delete the stored grant (its
    tokens) so that no process picks it up again."""

    __slots__ = ()


def call_id_of(actions: Sequence[Action]) -> int:
    """The id of the call a ``CallRequested`` started, from the actions
    :meth:`Machine.handle` returned for it: the first of them always names the
    call (its ``Send`` when it goes out at once, its ``Fail`` when it fails at
    once, otherwise ``CallAccepted``)."""
    first = actions[0] if actions else None
    if isinstance(first, (Send, Fail, CallAccepted)) and first.call_id is not None:
        return first.call_id
    raise InvalidInput(
        "actions: pass the list Machine.handle returned for a CallRequested (its first "
        "action names the call)"
    )
