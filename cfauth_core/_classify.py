"""Reading responses: what a 400, 401 or 403 says about the bearer token, and
whether a refresh failure ends the grant."""

from __future__ import annotations

from ._errors import CfauthError, OAuthError
from ._events import Headers, ResponseReceived
from ._tokens import load_json, parse_oauth_error

__all__: list[str] = []  # private helpers, imported by name


def _header(headers: Headers, name: str) -> str | None:
    """The first value of header ``name`` (lower case) in ``headers``."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _token_rejected(event: ResponseReceived) -> bool:
    """A 400 or 403 that says the bearer token is invalid (Checkfront's messages
    come from bshaffer/oauth2-server-php as 400 or 401 with
    ``WWW-Authenticate: Bearer ... error="invalid_token"``)."""
    challenge = _header(event.headers, "www-authenticate")
    if challenge is not None and "invalid_token" in challenge:
        return True
    if len(event.body) > 65536:
        return False
    try:
        payload = load_json(event.body)
    except (ValueError, RecursionError):
        return False
    error = parse_oauth_error(payload, event.status, ())
    return error is not None and error.error in ("invalid_token", "invalid_grant")


def _grant_lost(error: CfauthError) -> bool:
    """Whether a refresh failure means the grant is gone for good.

    RFC 6749 section 5.2: ``invalid_grant`` is "The provided authorization
    grant ... or refresh token is invalid, expired, revoked".  Nothing else
    ends a grant: ``invalid_client`` is a configuration error, and an answer
    that is not an OAuth error object (a proxy's HTML page, a 5xx, a
    ``temporarily_unavailable``) is transient.
    """
    return isinstance(error, OAuthError) and error.error == "invalid_grant"
