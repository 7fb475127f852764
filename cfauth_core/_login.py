"""The OAuth2 login's pieces that are not state: where a callback points, its
parameters, the PKCE challenge and a constant-time comparison."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

__all__: list[str] = []  # private helpers, imported by name


def _at_redirect_uri(url: str, redirect_uri: str) -> bool:
    """Whether a callback given as a full URL (or as a request target, ``/path?...``)
    is at ``redirect_uri``: same scheme, host, port and path.  A bare query
    string names no place, and passes."""
    target = url.split("#", 1)[0]
    if "?" in target:
        target = target.split("?", 1)[0]
    elif "://" not in target and not target.startswith("/"):
        return True  # a bare query string
    if not target:
        return True
    expected = urlsplit(redirect_uri)
    if target.startswith("/") and not target.startswith("//"):
        return target == (expected.path or "/")
    try:
        parts = urlsplit(target)
        port = parts.port
    except ValueError:
        return False
    scheme = parts.scheme.lower()
    if scheme != expected.scheme.lower() or "@" in parts.netloc:
        return False
    default = 443 if scheme == "https" else 80
    return (
        parts.hostname == expected.hostname
        and (port or default) == (expected.port or default)
        and (parts.path or "/") == (expected.path or "/")
    )


def _callback_params(url: str) -> dict[str, list[str]]:
    query = url.split("#", 1)[0]
    if "?" in query:
        query = query.split("?", 1)[1]
    params: dict[str, list[str]] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(key, []).append(value)
    return params


def _same(a: str, b: str) -> bool:
    """Constant-time comparison of two strings."""
    from hmac import compare_digest  # noqa: PLC0415  (imported when used: import time)

    return compare_digest(a.encode(), b.encode())


def _s256(verifier: str) -> str:
    """The PKCE S256 challenge: BASE64URL(SHA256(ASCII(verifier))), unpadded (RFC 7636 4.2)."""
    from base64 import urlsafe_b64encode  # noqa: PLC0415  (imported when used: import time)
    from hashlib import sha256  # noqa: PLC0415

    return urlsafe_b64encode(sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode("ascii")
