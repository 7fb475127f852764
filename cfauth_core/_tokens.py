"""Token sets: validating token responses and (de)serialising what is stored.

Checkfront's token endpoint promises ``access_token``, ``expires_in`` (14000)
and ``refresh_token``; nothing else.  It sends neither the issue time nor the
refresh token's lifetime, so :class:`TokenSet` records them itself:
``expires_at`` from ``expires_in``, ``refresh_expires_at`` as 14 days from
issue, and ``updated_at``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from ._errors import InvalidTokenRecord, OAuthError, RemoteProtocolError
from ._record import Record, _new

# ``typing`` costs about 3 ms to import; the core needs it only for the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeGuard

__all__ = [
    "ACCESS_TOKEN_LIFETIME",
    "MAX_TOKEN_BODY",
    "REFRESH_TOKEN_LIFETIME",
    "TokenSet",
    "parse_oauth_error",
    "parse_token_response",
    "scrub",
]

#: Seconds an access token lives when the server does not say (Checkfront: 14000).
ACCESS_TOKEN_LIFETIME = 14000
#: Seconds a refresh token lives from issue (Checkfront: 14 days).
REFRESH_TOKEN_LIFETIME = 14 * 24 * 3600
#: The largest token response accepted, in bytes.
MAX_TOKEN_BODY = 64 * 1024
#: The largest ``expires_in`` accepted: a year.
MAX_EXPIRES_IN = 365 * 24 * 3600
#: The version written by :meth:`TokenSet.to_dict`.
RECORD_VERSION = 1


def _is_token(value: object) -> TypeGuard[str]:
    """A non-empty string of visible ASCII (no spaces, CR, LF or controls)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= 8192
        and value.isascii()
        and value.isprintable()
        and " " not in value
    )


def _is_time(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


class TokenSet(Record):
    """An OAuth2 grant's current tokens and their timestamps (wall-clock seconds)."""

    __slots__ = (
        "access_token",
        "refresh_token",
        "expires_at",
        "refresh_expires_at",
        "updated_at",
        "scope",
    )
    _hidden = frozenset({"access_token", "refresh_token"})
    access_token: str
    refresh_token: str
    expires_at: float
    refresh_expires_at: float
    updated_at: float
    scope: str | None

    def __new__(
        cls,
        access_token: str,
        refresh_token: str,
        expires_at: float,
        refresh_expires_at: float,
        updated_at: float,
        scope: str | None = None,
    ) -> TokenSet:
        self: TokenSet = _new(cls._fast)
        self.access_token = access_token
        self.refresh_token = refresh_token
        self.expires_at = expires_at
        self.refresh_expires_at = refresh_expires_at
        self.updated_at = updated_at
        self.scope = scope
        self.__class__ = cls
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, versioned so later formats can read it back."""
        return {
            "version": RECORD_VERSION,
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": self.expires_at,
            "refresh_expires_at": self.refresh_expires_at,
            "updated_at": self.updated_at,
            "scope": self.scope,
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> TokenSet:
        """Read a dict written by :meth:`to_dict`; anything else raises
        :class:`InvalidTokenRecord` (whose message never quotes a token)."""
        if not isinstance(record, Mapping):
            raise InvalidTokenRecord(
                f"token record: expected a JSON object, got {type(record).__name__}; "
                "the store is corrupt: log in again to replace it"
            )
        version = record.get("version")
        if version is None:
            raise InvalidTokenRecord(
                "token record: this is not a cfauth token record (it has no 'version'); pass "
                "a dict written by TokenSet.to_dict, or log in again to make one"
            )
        if type(version) is not int or version != RECORD_VERSION:
            raise InvalidTokenRecord(
                f"token record: unknown version {version!r} (this cfauth reads version "
                f"{RECORD_VERSION}); upgrade cfauth or log in again"
            )
        for key in ("access_token", "refresh_token"):
            if not _is_token(record.get(key)):
                raise InvalidTokenRecord(
                    f"token record: {key} is missing or not a printable ASCII string; "
                    "the store is corrupt: log in again to replace it"
                )
        for key in ("expires_at", "refresh_expires_at", "updated_at"):
            if not _is_time(record.get(key)):
                raise InvalidTokenRecord(
                    f"token record: {key} is missing or not a finite, non-negative number; "
                    "the store is corrupt: log in again to replace it"
                )
        scope = record.get("scope")
        if scope is not None and not isinstance(scope, str):
            raise InvalidTokenRecord("token record: scope must be a string or null")
        unknown = set(record) - _RECORD_KEYS
        if unknown:
            raise InvalidTokenRecord(
                f"token record: unexpected fields {sorted(unknown)!r}; "
                "it was not written by this version of cfauth"
            )
        return cls(
            access_token=record["access_token"],
            refresh_token=record["refresh_token"],
            expires_at=record["expires_at"],
            refresh_expires_at=record["refresh_expires_at"],
            updated_at=record["updated_at"],
            scope=scope,
        )


_RECORD_KEYS = frozenset(
    {
        "version",
        "access_token",
        "refresh_token",
        "expires_at",
        "refresh_expires_at",
        "updated_at",
        "scope",
    }
)


def scrub(text: str, secrets: Iterable[str], limit: int = 300) -> str:
    """Server-supplied text made fit for a message: every known secret
    replaced, control characters dropped, length bounded."""
    for secret in secrets:
        if len(secret) >= 4:  # shorter ones would blank out ordinary words, and guard nothing
            text = text.replace(secret, "<hidden>")
    text = "".join(c if c.isprintable() else " " for c in text)
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")  # end on a whole word when there is one
    return (cut[:space].rstrip() if space > 0 and text[limit] != " " else cut) + "..."


def load_json(body: bytes) -> object:
    """``json.loads``, imported on first use: most processes never parse a token."""
    import json  # noqa: PLC0415

    return json.loads(body)


def _load_json(body: bytes, status: int) -> object:
    if len(body) > MAX_TOKEN_BODY:
        raise RemoteProtocolError(
            f"the token endpoint sent {len(body)} bytes (more than {MAX_TOKEN_BODY}); "
            "this is not a token response: check the account URL",
            status=status,
        )
    try:
        return load_json(body)
    except (ValueError, RecursionError):
        raise RemoteProtocolError(
            f"the token endpoint answered HTTP {status} with a body that is not JSON; "
            "check the account URL and try again later",
            status=status,
        ) from None


def parse_oauth_error(payload: object, status: int, secrets: Iterable[str]) -> OAuthError | None:
    """The :class:`OAuthError` in a decoded JSON body, if it is an OAuth error body."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if not isinstance(error, str) or not error:
        return None
    description = payload.get("error_description")
    secrets = tuple(secrets)
    return OAuthError(
        scrub(error, secrets, 100),
        scrub(description, secrets) if isinstance(description, str) else None,
        status=status,
    )


def parse_token_response(
    status: int,
    body: bytes,
    *,
    now: float,
    previous: TokenSet | None,
    secrets: Iterable[str] = (),
) -> TokenSet:
    """Validate a token endpoint response and build the new :class:`TokenSet`.

    ``previous`` is the set being refreshed (``None`` for a code exchange): if
    a refresh response has no ``refresh_token``, the old one is kept (RFC 6749
    section 6), with its old expiry.  Raises :class:`OAuthError` for an OAuth
    error body (any status) and :class:`RemoteProtocolError` for anything else
    that is not a valid token response.
    """
    payload = _load_json(body, status)
    oauth_error = parse_oauth_error(payload, status, secrets)
    if oauth_error is not None:
        raise oauth_error
    if status != 200:
        raise RemoteProtocolError(
            f"the token endpoint answered HTTP {status} without an OAuth error; try again later",
            status=status,
        )
    if not isinstance(payload, dict):
        raise RemoteProtocolError(
            f"the token endpoint sent JSON {type(payload).__name__}, not an object", status=status
        )
    access_token = payload.get("access_token")
    if not _is_token(access_token):
        raise RemoteProtocolError(
            "the token response has no usable access_token (missing, empty, or with "
            "characters other than visible ASCII)",
            status=status,
        )
    refresh_token = payload.get("refresh_token")
    if refresh_token is None and previous is not None:
        refresh_token = previous.refresh_token
        refresh_expires_at = previous.refresh_expires_at
    elif _is_token(refresh_token):
        refresh_expires_at = now + REFRESH_TOKEN_LIFETIME
    else:
        raise RemoteProtocolError(
            "the token response has no usable refresh_token (missing, empty, or with "
            "characters other than visible ASCII)",
            status=status,
        )
    expires_in = payload.get("expires_in", ACCESS_TOKEN_LIFETIME)
    if (
        not isinstance(expires_in, int)
        or isinstance(expires_in, bool)
        or not 0 < expires_in <= MAX_EXPIRES_IN
    ):
        raise RemoteProtocolError(
            "the token response has an expires_in that is not a whole number of seconds "
            f"between 1 and {MAX_EXPIRES_IN}",
            status=status,
        )
    token_type = payload.get("token_type", "bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise RemoteProtocolError(
            "the token response is not for a bearer token; cfauth only uses bearer tokens",
            status=status,
        )
    scope = payload.get("scope")
    return TokenSet(
        access_token=access_token,
        refresh_token=refresh_token,
        expires_at=now + expires_in,
        refresh_expires_at=refresh_expires_at,
        updated_at=now,
        scope=scope if isinstance(scope, str) else None,
    )
