"""What the adapters share: the response type, the transport protocol, API
errors and the ``resolve`` override."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cfauth_core import CfauthError, Request

__all__ = [
    "DEFAULT_MAX_RESPONSE_SIZE",
    "DEFAULT_TOTAL_TIMEOUT",
    "TOKEN_RESPONSE_CAP",
    "ApiError",
    "OutcomeUnknown",
    "Response",
    "Transport",
    "TransportFailure",
    "call_headers",
    "check_api_response",
    "failure_reason",
    "parse_resolve",
    "replayable",
    "request_failure",
    "response_cap",
]

#: The largest response body a transport accepts by default (Checkfront's
#: answers are far smaller); ``max_response_size`` changes it.
DEFAULT_MAX_RESPONSE_SIZE = 64 * 1024 * 1024
#: The token endpoint's answers are refused beyond this many bytes (the core's
#: limit), before they are buffered.
TOKEN_RESPONSE_CAP = 64 * 1024
#: The default ``total_timeout``: the longest a request may take once connected.
DEFAULT_TOTAL_TIMEOUT = 60.0
#: Methods whose request may be sent again without changing the outcome
#: (RFC 9110 9.2.2); any other request only with an ``Idempotency-Key`` header.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class TransportFailure(Exception):
    """A transport could not complete a request (connect, TLS, timeout, reset).

    Transports raise this (or let ``OSError`` through); the drivers report it
    to the machine as ``SendFailed``.  The message must not contain secrets.
    ``unsent`` is ``True`` when nothing of the request was written, so the
    server cannot have processed it.
    """

    def __init__(self, message: str, *, unsent: bool = False) -> None:
        super().__init__(message)
        self.unsent = unsent


class OutcomeUnknown(TransportFailure):
    """A request that is not safe to repeat (a ``POST`` or ``PATCH`` without an
    ``Idempotency-Key`` header) failed after some or all of it was written:
    the server may have processed it.  ``fully_written`` says whether the
    whole request went out.  It is never sent again automatically: check
    whether it took effect before sending it again.
    """

    def __init__(self, message: str, *, fully_written: bool) -> None:
        written = "fully" if fully_written else "partly"
        super().__init__(
            f"{message}; the request was {written} written, so the server may have "
            "processed it: check whether it took effect before sending it again"
        )
        self.fully_written = fully_written


def replayable(request: Request) -> bool:
    """Whether ``request`` may be sent again after a failure that may have let
    the server process it: an idempotent method, or an ``Idempotency-Key``."""
    return request.method in _IDEMPOTENT or any(
        name.lower() == "idempotency-key" for name, _ in request.headers
    )


def request_failure(
    message: str, request: Request, *, written: int, complete: bool
) -> TransportFailure:
    """The failure to raise after ``written`` bytes of ``request`` went out
    (``complete``: all of them): unsent, plain, or :class:`OutcomeUnknown`."""
    if written == 0:
        return TransportFailure(message, unsent=True)
    if replayable(request):
        return TransportFailure(message)
    return OutcomeUnknown(message, fully_written=complete)


def response_cap(path: str, max_response_size: int) -> int:
    """The largest body accepted for a request to ``path``: the token
    endpoint's answers are held to :data:`TOKEN_RESPONSE_CAP`."""
    if path.startswith("/oauth/token/"):
        return min(max_response_size, TOKEN_RESPONSE_CAP)
    return max_response_size


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
    section from the body (a dict, possibly empty); ``response`` the response.
    """

    def __init__(self, message: str, *, status: int, error: dict[str, Any], response: Response):
        super().__init__(message)
        self.status = status
        self.error = error
        self.response = response


def check_api_response(response: Response) -> Response:
    """Return ``response`` if it is a successful Checkfront answer, else raise :class:`ApiError`.

    Checkfront answers JSON with a ``request`` section whose ``status`` is
    ``"OK"`` on success; on critical errors the envelope is replaced by an
    ``error`` object.  A non-JSON body with a 2xx status is returned as it is.
    """
    payload: Any = None
    try:
        payload = response.json()
    except ValueError:
        if 200 <= response.status < 300:
            return response
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
            return response
    elif 200 <= response.status < 300:
        return response
    summary = ", ".join(f"{k}={v!r}" for k, v in details.items() if isinstance(v, (str, int)))
    raise ApiError(
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
