"""What every transport refuses before anything goes on the wire, and how.

Each test runs over every transport (``stdlib``, ``urllib3``, ``trio``)
against the loopback TLS server of ``test_stdlib_transport.py``, which trusts
nothing and records every connection and request: a refused option must raise
a :class:`~cfauth_core.CfauthError` naming the value and the fix, and the
server must see nothing.
"""

from __future__ import annotations

import re
import socket
import ssl
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from cfauth import TransportFailure, stdlib
from cfauth import trio as cftrio
from cfauth._http import failure_reason, shorten
from cfauth._tls import CertificateNotTrusted, _ca_file_problem, parse_resolve
from cfauth_core import (
    Account,
    ApiKey,
    CfauthError,
    InsecureTransport,
    InvalidInput,
    NetworkError,
    Request,
)

from .test_stdlib_transport import (
    BASIC,
    HOST,
    KEY,
    SECRET,
    Pki,
    Server,
    pki,
    plain_server,
    server,
)

__all__ = ["pki", "plain_server", "server"]  # fixtures

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


def get_ping(kind: str, api: Any) -> int:
    """``api.get("ping")`` on a client of ``kind``, closing it afterwards."""
    if kind == "trio":

        async def main() -> int:
            async with api:
                return int((await api.get("ping")).status)

        return trio.run(main)
    with api:
        return int(api.get("ping").status)


def make_client(kind: str, account: Account | str = "acme", **options: Any) -> Any:
    """The ``client()`` factory of ``kind``, with a token pair."""
    if kind == "stdlib":
        return stdlib.client(account, ApiKey(KEY, SECRET), **options)
    if kind == "urllib3":
        from cfauth.urllib3 import client

        return client(account, ApiKey(KEY, SECRET), **options)
    return cftrio.client(account, ApiKey(KEY, SECRET), **options)


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
    "TLS 1.0 allowed": (_old_tls(ssl.TLSVersion.TLSv1), "allows TLSv1, older than TLS 1.2"),
    "TLS 1.1 allowed": (_old_tls(ssl.TLSVersion.TLSv1_1), "allows TLSv1_1, older than TLS 1.2"),
    "any TLS version": (
        _old_tls(ssl.TLSVersion.MINIMUM_SUPPORTED),
        "allows every protocol version the TLS library supports, older than TLS 1.2",
    ),
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


# -- options: every mistake is a CfauthError naming the value and the fix -------------


def _bad_ca_files(tmp: Path) -> dict[str, tuple[object, str]]:
    garbage = tmp / "garbage.pem"
    garbage.write_text("this is not a certificate\n")
    empty = tmp / "empty.pem"
    empty.write_text("")
    return {
        "missing": (str(tmp / "missing-ca.pem"), "does not exist"),
        "missing, as a Path": (tmp / "missing-ca.pem", "does not exist"),
        "a directory": (str(tmp), "is a directory"),
        "not PEM": (str(garbage), "holds no usable PEM certificate"),
        "empty": (str(empty), "holds no usable PEM certificate"),
        "not a path": (443, "expected the path of a PEM file, got int"),
    }


CA_FILE_CASES = ["missing", "missing, as a Path", "a directory", "not PEM", "empty", "not a path"]


@pytest.mark.parametrize("case", CA_FILE_CASES)
def test_an_unusable_ca_file_names_the_path_and_the_fix(
    kind: str, case: str, tmp_path: Path, server: Server
) -> None:
    value, why = _bad_ca_files(tmp_path)[case]
    with pytest.raises(InvalidInput) as refused:
        build_and_send(kind, ping(), ca_file=value, resolve=server.resolve())
    message = str(refused.value)
    assert why in message
    if isinstance(value, (str, Path)):
        assert repr(str(value)) in message  # the path, as given
        assert "PEM file" in message  # the fix
    with pytest.raises(InvalidInput, match=re.escape(why)):
        make_client(kind, ca_file=value)
    assert nothing_reached(server)


def test_an_unreadable_ca_file_says_so() -> None:
    # (tests may run as root, for whom a chmod 000 file is readable)
    message = _ca_file_problem("/etc/ca.pem", PermissionError(13, "Permission denied"))
    assert message.startswith("ca_file '/etc/ca.pem' cannot be read (permission denied)")
    assert "make it readable" in message


def test_ssl_context_and_ca_file_together_are_refused(kind: str, pki: Pki) -> None:
    with pytest.raises(InvalidInput, match="not both"):
        build(kind, ssl_context=ssl.create_default_context(), ca_file=pki.ca_file)


BAD_RESOLVES: dict[str, object] = {
    "no port in the key": {HOST: "127.0.0.1:8443"},
    "no port in the address": {f"{HOST}:443": "127.0.0.1"},
    "a port that is not a number": {f"{HOST}:https": "127.0.0.1:8443"},
    "port 0": {f"{HOST}:443": "127.0.0.1:0"},
    "port 70000": {f"{HOST}:443": "127.0.0.1:70000"},
    "a negative port": {f"{HOST}:443": "127.0.0.1:-1"},
    "an unbracketed IPv6 address": {f"{HOST}:443": "::1:8443"},
    "a path in the address": {f"{HOST}:443": "127.0.0.1:8443/x"},
    "an empty host": {":443": "127.0.0.1:8443"},
    "a number as the address": {f"{HOST}:443": 8443},
    "a number as the key": {443: "127.0.0.1:8443"},
    "a list instead of a mapping": [f"{HOST}:443:127.0.0.1:8443"],
    "curl's one-string form": f"{HOST}:443:127.0.0.1",
}


@pytest.mark.parametrize("case", list(BAD_RESOLVES))
def test_a_malformed_resolve_names_the_entry_and_the_form(
    kind: str, case: str, server: Server
) -> None:
    value = BAD_RESOLVES[case]
    with pytest.raises(InvalidInput) as refused:
        build_and_send(kind, ping(), resolve=value)
    message = str(refused.value)
    assert message.startswith("resolve: ")
    assert "'acme.checkfront.com:443': '127.0.0.1:8443'" in message  # the form to use
    with pytest.raises(InvalidInput, match=r"^resolve: "):
        make_client(kind, resolve=value)
    assert nothing_reached(server)


@given(
    st.one_of(
        st.dictionaries(st.text(max_size=30), st.text(max_size=30), max_size=3),
        st.dictionaries(
            st.from_regex(r"[a-z0-9.\[\]:-]{0,20}:[0-9]{0,6}", fullmatch=True),
            st.from_regex(r"[a-z0-9.\[\]:-]{0,20}:[0-9]{0,6}", fullmatch=True),
            max_size=3,
        ),
    )
)
@settings(max_examples=300, derandomize=True)
def test_resolve_parses_or_raises_invalid_input(resolve: dict[str, str]) -> None:
    """Whatever the mapping holds, the outcome is a parsed table or a CfauthError."""
    error: Exception | None = None
    try:
        parsed = parse_resolve(resolve)
    except (InvalidInput, InsecureTransport) as refused:
        error, parsed = refused, {}
    assert error is None or str(error).startswith("resolve: ")
    for (host, port), (addr, addr_port) in parsed.items():
        assert host
        assert addr
        assert 0 < port < 65536
        assert 0 < addr_port < 65536


BAD_OPTIONS: dict[str, tuple[dict[str, Any], str]] = {
    "connect_timeout=0": ({"connect_timeout": 0}, "connect_timeout=0 is not a positive"),
    "read_timeout=-1": ({"read_timeout": -1}, "read_timeout=-1 is not a positive"),
    "read_timeout as text": ({"read_timeout": "30"}, "read_timeout='30' is not a positive"),
    "connect_timeout=nan": ({"connect_timeout": float("nan")}, "connect_timeout=nan"),
    "read_timeout=inf": ({"read_timeout": float("inf")}, "pass a finite number"),
    "read_timeout=True": ({"read_timeout": True}, "read_timeout=True is not a positive"),
    "read_timeout=None": ({"read_timeout": None}, "read_timeout=None is not a positive"),
}
POOL_OPTION = {
    "stdlib": ("max_idle_per_origin", 0),
    "urllib3": ("pool_maxsize", 0),
    "trio": ("max_connections_per_origin", 1),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_timeouts_are_refused_naming_the_value(kind: str, case: str) -> None:
    options, expected = BAD_OPTIONS[case]
    with pytest.raises(InvalidInput, match=re.escape(expected)):
        build(kind, **options)
    with pytest.raises(InvalidInput, match=re.escape(expected)):
        make_client(kind, **options)


@pytest.mark.parametrize("offset", [-1, "text", 1.5, True])
def test_bad_pool_sizes_are_refused_naming_the_option(kind: str, offset: object) -> None:
    name, least = POOL_OPTION[kind]
    value = least - 1 if offset == -1 else offset
    with pytest.raises(InvalidInput, match=rf"^{name}={re.escape(repr(value))}: pass a whole"):
        build(kind, **{name: value})
    build(kind, **{name: least})  # the smallest allowed is accepted


# -- resolve and plain http: loopback hosts stay on loopback ----------------------------

LEAVING_LOOPBACK = [
    {"127.0.0.1:8080": "10.0.0.5:8080"},
    {"localhost:80": "192.0.2.1:80"},
    {"LOCALHOST:80": "acme.checkfront.com:80"},
    {"[::1]:8080": "[2001:db8::1]:8080"},
    {"127.0.0.1:443": "203.0.113.7:443"},
    {"acme.checkfront.com:443": "127.0.0.1:8443", "127.0.0.1:80": "198.51.100.1:80"},
]
STAYING_ON_LOOPBACK = [
    {"127.0.0.1:8080": "127.0.0.1:50123"},
    {"localhost:80": "127.0.0.2:8080"},
    {"[::1]:8080": "[::1]:50123"},
    {"127.0.0.1:8080": "localhost:50123"},
    {"acme.checkfront.com:443": "10.0.0.5:443"},  # https, verified for the real name
]


@pytest.mark.parametrize("resolve", LEAVING_LOOPBACK)
def test_a_loopback_host_is_never_resolved_off_the_machine(
    kind: str, resolve: dict[str, str]
) -> None:
    with pytest.raises(InsecureTransport) as refused:
        build(kind, resolve=resolve)
    message = str(refused.value)
    assert message.startswith("resolve: ")
    assert "may only be mapped to a loopback address" in message
    assert "real https name" in message  # the fix
    with pytest.raises(InsecureTransport, match="loopback address"):
        make_client(kind, resolve=resolve)


@pytest.mark.parametrize("resolve", STAYING_ON_LOOPBACK)
def test_loopback_targets_and_https_names_are_accepted(kind: str, resolve: dict[str, str]) -> None:
    build(kind, resolve=resolve)


def test_plain_http_on_loopback_goes_through_a_loopback_resolve(
    kind: str, plain_server: Server
) -> None:
    """The insecure_loopback case end to end: the Basic header reaches the
    loopback server the mapping names, over plain http."""
    account = Account.parse("http://127.0.0.1:8080", insecure_loopback=True)
    options: dict[str, Any] = {"resolve": {"127.0.0.1:8080": f"127.0.0.1:{plain_server.port}"}}
    assert get_ping(kind, make_client(kind, account=account, **options)) == 200
    [seen] = plain_server.seen
    assert dict(seen.headers)["Authorization"] == BASIC


# -- a certificate that is not trusted: named, explained, not retryable --------------------

UNTRUSTED = {
    "unknown CA": (HOST, False),  # the system's CAs do not know the test CA
    "another host's certificate": ("other.example", True),  # trusted CA, wrong name
}


def _untrusted_setup(case: str, server: Server, pki: Pki) -> tuple[str, dict[str, Any]]:
    host, trust = UNTRUSTED[case]
    options: dict[str, Any] = {"resolve": server.resolve(host)}
    if trust:
        options["ca_file"] = pki.ca_file
    return host, options


def _check_untrusted_message(message: str, host: str) -> None:
    assert f"the TLS certificate of {host}:443 (via 127.0.0.1:" in message
    assert "was not trusted, so nothing was sent" in message
    assert "pass ca_file= (the PEM file of the CA that issued it) or an ssl_context=" in message
    assert "trusts it (" in message
    # the verification detail, whole, or shortened after a whole word
    assert message.endswith(")") or re.search(r"\w\.\.\.$", message), message
    assert "may be retried" not in message


@pytest.mark.parametrize("case", list(UNTRUSTED))
def test_an_untrusted_certificate_fails_the_transport_naming_the_host(
    kind: str, case: str, server: Server, pki: Pki
) -> None:
    host, options = _untrusted_setup(case, server, pki)
    request = Request("GET", f"https://{host}/api/3.0/ping", (("Authorization", BASIC),))
    with pytest.raises(CertificateNotTrusted) as failed:
        build_and_send(kind, request, **options)
    assert isinstance(failed.value, TransportFailure)
    assert failed.value.retryable is False
    _check_untrusted_message(str(failed.value), host)
    assert not server.seen


@pytest.mark.parametrize("case", list(UNTRUSTED))
def test_a_call_over_an_untrusted_certificate_is_not_retryable(
    kind: str, case: str, server: Server, pki: Pki
) -> None:
    host, options = _untrusted_setup(case, server, pki)
    account = Account.parse(f"https://{host}")
    api = make_client(kind, account=account, **options)
    with pytest.raises(NetworkError) as failed:
        get_ping(kind, api)
    error = failed.value
    assert error.retryable is False
    message = str(error)
    assert message.startswith(f"GET https://{host}/api/3.0/ping could not be completed: ")
    _check_untrusted_message(message, host)
    assert not server.seen


def test_other_transport_failures_stay_retryable(kind: str, server: Server, pki: Pki) -> None:
    """A refused connection is worth retrying: only trust problems are not."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    api = make_client(
        kind, ca_file=pki.ca_file, resolve={f"{HOST}:443": f"127.0.0.1:{closed_port}"}
    )
    with pytest.raises(NetworkError) as failed:
        get_ping(kind, api)
    assert failed.value.retryable is True
    assert str(failed.value).endswith("the call may be retried")


@given(st.text(alphabet=st.sampled_from("ab cd,.;\u00e9"), max_size=80), st.integers(8, 60))
@settings(max_examples=500, derandomize=True)
def test_shorten_never_cuts_a_word_and_says_so(text: str, limit: int) -> None:
    short = shorten(text, limit)
    assert len(short) <= limit
    if short == text:
        return
    assert short.endswith("...")
    kept = short[:-3]
    assert text.startswith(kept)
    rest = text[len(kept) :]
    # the cut falls between words (or no space was there to cut at)
    assert rest[:1] in (" ", ",", ";", ":") or " " not in text[1 : limit - 3]


def test_failure_reason_keeps_long_messages_whole_up_to_its_limit() -> None:
    words = " ".join(f"word{i}" for i in range(200))
    reason = failure_reason(TransportFailure(words))
    assert reason.endswith("...")
    assert reason[:-3].split()[-1] in words.split()  # the last word kept is whole
