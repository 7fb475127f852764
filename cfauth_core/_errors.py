"""The error hierarchy.

Four families, told apart by who has to do something about them:

* :class:`LocalProtocolError`: the caller misused the machine (an event that is
  not allowed in the current state, bad configuration).  Raised by
  :meth:`Machine.handle`; the machine is left exactly as it was.
* :class:`RemoteProtocolError`: the server sent something invalid (a token
  response that is not JSON, a token with a newline in it, ...).
* :class:`OAuthError`: the server answered with an OAuth error body
  (``error`` / ``error_description``).
* :class:`ActionRequired`: an outcome a person or the program must act on
  (reauthorization required, an untrusted redirect, rate limiting, ...).

Remote errors, OAuth errors and most outcomes reach the adapter inside
``Fail`` actions rather than being raised.  No message, ``repr`` or ``str`` of
any error contains a secret: messages are built from fixed text, status codes
and server text that has been scrubbed of every secret the machine knows.
"""

from __future__ import annotations

__all__ = [
    "ActionRequired",
    "AuthorizationDenied",
    "CfauthError",
    "ClientCredentialsRejected",
    "CodeExpired",
    "CredentialsRejected",
    "InsecureTransport",
    "InvalidInput",
    "InvalidTokenRecord",
    "LocalProtocolError",
    "NetworkError",
    "OAuthError",
    "OAuthStateMismatch",
    "RateLimited",
    "ReauthorizationRequired",
    "RefreshFailed",
    "RemoteProtocolError",
    "UntrustedRedirect",
    "detach",
]


class CfauthError(Exception):
    """Base class of every error cfauth raises or reports.

    ``retryable`` tells whether the same call may succeed if simply tried again
    later (a transport failure, a 5xx on the refresh) or whether something has
    to change first (credentials, configuration, a new login).
    """

    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class LocalProtocolError(CfauthError):
    """The caller misused the machine; nothing was changed."""


class InvalidInput(LocalProtocolError, ValueError):
    """An account, credential, option or call argument that cannot be used as given."""


class InvalidTokenRecord(LocalProtocolError, ValueError):
    """A stored token record that cannot be read back (corrupt or unknown version)."""


class RemoteProtocolError(CfauthError):
    """The server sent something that is not a valid answer."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


#: What to do next, for the OAuth error codes of RFC 6749 and RFC 6750.
_OAUTH_NEXT_STEPS = {
    "invalid_grant": "log in again (a new OAuth2 authorization)",
    "invalid_client": "check the client id and secret under Manage > Developer in Checkfront",
    "unauthorized_client": "check the OAuth2 application's settings under Manage > Developer",
    "invalid_token": "log in again if a refresh does not help",
    "insufficient_scope": "check that the account's user may access this resource",
    "temporarily_unavailable": "try again later",
    "server_error": "try again later",
}
_OAUTH_DEFAULT_STEP = "check the request against the description, then try again"


class OAuthError(CfauthError):
    """An OAuth error response: ``error`` and ``error_description`` from the server."""

    def __init__(
        self, error: str, description: str | None = None, *, status: int | None = None
    ) -> None:
        self.error = error
        self.description = description
        self.status = status
        text = f"{self._what()} {error!r}"
        if description:
            text += f" ({description!r})"
        if status is not None:
            text += f" with HTTP {status}"
        super().__init__(f"{text}: {self._next_step(error)}")

    def _what(self) -> str:
        return "the server answered OAuth error"

    def _next_step(self, error: str) -> str:
        return _OAUTH_NEXT_STEPS.get(error, _OAUTH_DEFAULT_STEP)


class NetworkError(CfauthError):
    """The request could not be sent or its answer not received.

    Usually worth trying again later (``retryable``); not when the transport
    said that only a change can help (a server certificate that is not
    trusted), which the message then names, nor when a call that is not
    idempotent (a ``POST`` without an ``Idempotency-Key``) may have been
    processed: the message then says to check whether it took effect before
    sending it again.
    """

    retryable = True

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class RefreshFailed(CfauthError):
    """The token refresh did not succeed, but the grant is intact.

    The next call may refresh again.  ``status`` is the token URL's HTTP status,
    if it answered at all.
    """

    retryable = True

    def __init__(
        self, message: str, *, cause: CfauthError | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.cause = cause
        self.status = status


class ActionRequired(CfauthError):
    """An outcome that a person or the program has to act on."""


class ReauthorizationRequired(ActionRequired):
    """The grant is gone (refresh token expired, revoked or rotated away): log in again."""

    def __init__(self, message: str, *, cause: CfauthError | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class CredentialsRejected(ActionRequired):
    """The server refused the credentials the call carried."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class ClientCredentialsRejected(ActionRequired):
    """The token URL refused the OAuth2 client id and secret (``invalid_client``).

    A configuration error: the grant and its tokens are intact.  ``status`` is
    the HTTP status; ``cause`` the server's :class:`OAuthError`.
    """

    def __init__(self, message: str, *, status: int | None, cause: CfauthError) -> None:
        super().__init__(message)
        self.status = status
        self.cause = cause


class UntrustedRedirect(ActionRequired):
    """A redirect to somewhere credentials may not go; nothing was sent there."""

    def __init__(self, message: str, *, location: str) -> None:
        super().__init__(message)
        self.location = location


class InsecureTransport(ActionRequired, ValueError):
    """Plain http where https is required."""


class OAuthStateMismatch(ActionRequired):
    """An authorization callback whose ``state`` is not the one pending (or was already used)."""


class AuthorizationDenied(OAuthError, ActionRequired):
    """The authorization server sent the user back with an error (e.g. ``access_denied``)."""

    def _what(self) -> str:
        return "the login was not authorized: the authorization server sent back error"

    def _next_step(self, error: str) -> str:
        if error == "access_denied":
            return "start the login again if the user wants to allow access"
        return (
            "check the OAuth2 application's settings under Manage > Developer, "
            "then start the login again"
        )


class CodeExpired(ActionRequired):
    """The authorization code was not exchanged within its window: log in again."""


class RateLimited(ActionRequired):
    """The server kept asking to slow down.

    ``retry_after`` is its last requested wait, in seconds.
    """

    retryable = True

    def __init__(self, message: str, *, retry_after: float, status: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


def detach(error: CfauthError) -> CfauthError:
    """``error`` cut loose from the frames that built it, ready to leave the core.

    A raised exception keeps its traceback, and with it every local variable of
    the frames it passed through: the secrets tuple used for scrubbing, the
    token response body, the Basic header.  Error reporters read those locals
    (Sentry does by default), so an error handed to the adapter in an action
    carries no traceback, and neither does its ``cause`` or a context it was
    raised in.  A context that was suppressed (``raise ... from None``) is
    dropped altogether: nothing shows it, and it may hold the raw server text.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = None
        if current.__suppress_context__:
            current.__context__ = None
        for linked in (current.__cause__, current.__context__, getattr(current, "cause", None)):
            if isinstance(linked, BaseException):
                pending.append(linked)
    return error
