"""What every transport refuses before anything goes on the wire, and how.

Each test runs over every transport (``stdlib``, ``urllib3``, ``trio``)
against the loopback TLS server of ``test_stdlib_transport.py``, which trusts
nothing and records every connection and request: a refused option must raise
a :class:`~cfauth_core.CfauthError` naming the value and the fix, and the
server must see nothing.
"""

from __future__ import annotations

import ssl
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio

from cfauth import TransportFailure, stdlib
from cfauth import trio as cftrio
from cfauth_core import ApiKey, CfauthError, InsecureTransport, InvalidInput, Request

from .test_stdlib_transport import BASIC, HOST, KEY, SECRET, Pki, Server, pki, server

__all__ = ["pki", "server"]  # fixtures

TRANSPORTS = ["stdlib", "urllib3", "trio"]


#: Transports made by :func:`build`, closed after each test.
_made: list[Any] = []


@pytest.fixture(autouse=True)
def _close_transports() -> Iterator[None]:
    yield
    while _made:
        _made.pop().close()


def build(kind: str, **options: Any) -> Callable[[Request], Any]:
    """A blocking ``send`` over the ``kind`` transport, built with ``options``
    (construction errors surface here, before any connection)."""
    if kind == "stdlib":
        made: Any = stdlib.HttpClientTransport(**options)
        _made.append(made)
        return made  # type: ignore[no-any-return]
    if kind == "urllib3":
        from cfauth.urllib3 import Urllib3Transport

        made = Urllib3Transport(**options)
        _made.append(made)
        return made  # type: ignore[no-any-return]
    transport = cftrio.H11Transport(**options)

    def send(request: Request) -> Any:
        async def main() -> Any:
            async with transport:
                return await transport(request)

        return trio.run(main)

    return send


def build_and_send(kind: str, request: Request, **options: Any) -> Any:
    """Build the transport and, if it was not refused, send ``request``."""
    return build(kind, **options)(request)


def make_client(kind: str, **options: Any) -> Any:
    """The ``client()`` factory of ``kind``, with a token pair."""
    if kind == "stdlib":
        return stdlib.client("acme", ApiKey(KEY, SECRET), **options)
    if kind == "urllib3":
        from cfauth.urllib3 import client

        return client("acme", ApiKey(KEY, SECRET), **options)
    return cftrio.client("acme", ApiKey(KEY, SECRET), **options)


@pytest.fixture(params=TRANSPORTS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def ping() -> Request:
    return Request("GET", f"https://{HOST}/api/3.0/ping", (("Authorization", BASIC),))


def nothing_reached(server: Server) -> bool:
    return server.accepted == 0 and not server.seen


# -- one TLS rule for every transport ------------------------------------------------


def _unverified(ca: Any) -> ssl.SSLContext:
    return ssl._create_unverified_context()  # noqa: S323 - the point of the test


def _no_hostname_check(ca: Any) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.check_hostname = False
    return context


def _no_verification(ca: Any) -> ssl.SSLContext:
    context = _no_hostname_check(ca)
    context.verify_mode = ssl.CERT_NONE
    return context


def _optional_verification(ca: Any) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def _server_context(ca: Any) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.configure_trust(context)
    return context


def _old_tls(version: ssl.TLSVersion) -> Callable[[Any], ssl.SSLContext]:
    def make(ca: Any) -> ssl.SSLContext:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1/TLSv1_1 are deprecated
            context.minimum_version = version
        return context

    return make


BAD_CONTEXTS: dict[str, tuple[Callable[[Any], ssl.SSLContext], str]] = {
    "unverified": (_unverified, "CERT_NONE"),
    "check_hostname=False": (_no_hostname_check, "check_hostname is False"),
    "CERT_NONE": (_no_verification, "CERT_NONE"),
    "CERT_OPTIONAL": (_optional_verification, "CERT_OPTIONAL"),
    "server-side context": (_server_context, "CERT_NONE"),
    "TLS 1.0 allowed": (_old_tls(ssl.TLSVersion.TLSv1), "TLSv1, older than TLS 1.2"),
    "TLS 1.1 allowed": (_old_tls(ssl.TLSVersion.TLSv1_1), "TLSv1_1, older than TLS 1.2"),
    "any TLS version": (_old_tls(ssl.TLSVersion.MINIMUM_SUPPORTED), "older than TLS 1.2"),
}


@pytest.mark.parametrize("shape", list(BAD_CONTEXTS))
def test_a_context_that_could_skip_verification_is_refused(
    kind: str, shape: str, server: Server, pki: Pki
) -> None:
    """Each context trusts the server's CA, so a transport that took it
    would connect and send the Basic header: it must refuse it instead."""
    make_context, why = BAD_CONTEXTS[shape]
    context = make_context(pki.ca)
    with pytest.raises(InsecureTransport) as refused:
        build_and_send(kind, ping(), ssl_context=context, resolve=server.resolve())
    message = str(refused.value)
    assert why in message
    assert "ssl.create_default_context()" in message  # the fix
    assert not refused.value.retryable
    assert nothing_reached(server)


@pytest.mark.parametrize("shape", list(BAD_CONTEXTS))
def test_client_factories_refuse_the_same_contexts(
    kind: str, shape: str, server: Server, pki: Pki
) -> None:
    make_context, why = BAD_CONTEXTS[shape]
    with pytest.raises(InsecureTransport, match=why):
        make_client(kind, ssl_context=make_context(pki.ca), resolve=server.resolve())
    assert nothing_reached(server)


def test_a_verifying_context_is_used_as_given(kind: str, server: Server, pki: Pki) -> None:
    context = ssl.create_default_context()
    pki.ca.configure_trust(context)
    send = build(kind, ssl_context=context, resolve=server.resolve())
    assert send(ping()).status == 200
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert server.accepted == 1


def test_an_ssl_context_that_is_not_one_is_refused(kind: str) -> None:
    with pytest.raises(InvalidInput, match=r"expected an ssl\.SSLContext, got str"):
        build(kind, ssl_context="CERT_NONE")


def test_default_contexts_require_tls_1_2(kind: str) -> None:
    from cfauth._tls import tls_context

    context = tls_context(None, None)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)


def test_errors_are_cfauth_errors_and_value_errors() -> None:
    """Callers who caught ``ValueError`` before still catch these."""
    assert issubclass(InsecureTransport, CfauthError)
    assert issubclass(InsecureTransport, ValueError)
    assert issubclass(InvalidInput, ValueError)
    assert not issubclass(InvalidInput, TransportFailure)
