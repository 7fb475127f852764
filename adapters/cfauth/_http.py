"""What the adapters share: the response type, the transport protocol, API
errors and the ``resolve`` override."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cfauth_core import CfauthError, Request

__all__ = [
    "ApiError",
    "Response",
    "Transport",
    "TransportFailure",
    "call_headers",
    "check_api_response",
    "failure_reason",
    "parse_resolve",
]


class TransportFailure(Exception):
    """A transport could not complete a request (connect, TLS, timeout, reset).

    Transports raise this (or let ``OSError`` through); the drivers report it
    to the machine as ``SendFailed``.  The message must not contain secrets.
    """


class Response:
    """An HTTP response as a transport returns it and a client hands it back."""

    __slots__ = ("body", "headers", "status", "url")

    def __init__(
        self, status: int, headers: Sequence[tuple[str, str]], body: bytes, url: str = ""
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.url = url

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or ``None``."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.url} {len(self.body)} bytes>"


#: A blocking transport: send the request exactly as given (no redirects, no
#: retries) and return the response, or raise ``TransportFailure``/``OSError``.
Transport = Callable[[Request], Response]


def failure_reason(error: BaseException) -> str:
    """A short description of a transport failure, for ``SendFailed``.

    Only the exception's type and message: transports put no secrets there
    (and the machine scrubs the ones it knows anyway).
    """
    text = str(error).strip()
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def call_headers(
    headers: Sequence[tuple[str, str]], on_behalf: str | None, forwarded_for: str | None
) -> list[tuple[str, str]]:
    """A call's extra headers with ``X-On-Behalf`` and ``X-Forwarded-For`` added."""
    extra = list(headers)
    if on_behalf is not None:
        extra.append(("X-On-Behalf", on_behalf))
    if forwarded_for is not None:
        extra.append(("X-Forwarded-For", forwarded_for))
    return extra


class ApiError(CfauthError):
    """Checkfront answered with an error object, or a ``request.status`` other than ``OK``.

    ``status`` is the HTTP status; ``error`` the error object or request
    section from the body (a dict, possibly empty; its text values scrubbed of
    the secrets the client knows, like the message); ``response`` the response
    as received.
    """

    def __init__(self, message: str, *, status: int, error: dict[str, Any], response: Response):
        super().__init__(message)
        self.status = status
        self.error = error
        self.response = response


def _printable(text: str, limit: int = 300) -> str:
    """The default scrub: no secrets known, control characters dropped, bounded."""
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= limit else text[:limit] + "..."


def check_api_response(response: Response, scrub: Callable[[str], str] = _printable) -> Response:
    """Return ``response`` if it is a successful Checkfront answer, else raise :class:`ApiError`.

    Checkfront answers JSON with a ``request`` section whose ``status`` is
    ``"OK"`` on success; on critical errors the envelope is replaced by an
    ``error`` object.  A non-JSON body with a 2xx status is returned as it is.
    ``scrub`` makes the server's text fit for the error's message (the
    clients pass their driver's, which hides every secret the machine knows).
    """
    # Built in a helper: its frame, which holds the raw body, is gone by the
    # time the error is raised (error reporters upload the locals of every
    # frame in a traceback).
    error = _api_error(response, scrub)
    if error is not None:
        raise error
    return response


def _api_error(response: Response, scrub: Callable[[str], str]) -> ApiError | None:
    payload: Any = None
    try:
        payload = response.json()
    except ValueError:
        if 200 <= response.status < 300:
            return None
    details: dict[str, Any] = {}
    if isinstance(payload, dict):
        error = payload.get("error")
        request = payload.get("request")
        if isinstance(error, dict):
            details = error
        elif isinstance(error, str):
            details = {"error": error, "error_description": payload.get("error_description")}
        elif isinstance(request, dict) and request.get("status", "OK") != "OK":
            details = request
        elif 200 <= response.status < 300:
            return None
    elif 200 <= response.status < 300:
        return None
    details = {
        (scrub(key) if isinstance(key, str) else key): scrub(value)
        if isinstance(value, str)
        else value
        for key, value in details.items()
    }
    summary = ", ".join(f"{k}={v!r}" for k, v in details.items() if isinstance(v, (str, int)))
    return ApiError(
        f"Checkfront answered HTTP {response.status} for {response.url}"
        + (f": {summary[:300]}" if summary else "")
        + "; see .error for the details",
        status=response.status,
        error=details,
        response=response,
    )


def parse_resolve(resolve: Mapping[str, str] | None) -> dict[tuple[str, int], tuple[str, int]]:
    """``{"acme.checkfront.com:443": "127.0.0.1:8443"}`` -> ``{(host, port): (addr, port)}``.

    Like curl's ``--resolve``: the connection goes to the address, while the
    host name is kept for SNI, the certificate check and the ``Host`` header.
    """
    result: dict[tuple[str, int], tuple[str, int]] = {}
    for key, value in (resolve or {}).items():
        try:
            host, _, port = key.rpartition(":")
            addr, _, addr_port = value.rpartition(":")
            result[host.lower().strip("[]"), int(port)] = (addr.strip("[]"), int(addr_port))
        except ValueError:
            raise ValueError(
                f"resolve: {key!r}: {value!r} is not 'host:port': 'address:port' "
                "(e.g. {'acme.checkfront.com:443': '127.0.0.1:8443'})"
            ) from None
    return result
