"""What only the urllib3 transport does: its non-blocking pools.

The behaviours it shares with the stdlib transport (what is sent, TLS, SNI,
``resolve``, no redirects, keep-alive, the one retry, timeouts, threads,
secrets kept out of failures, ``client()``) run over both transports in
``test_stdlib_transport.py``, whose server these tests reuse.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

pytest.importorskip("urllib3")

from cfauth import TransportFailure
from cfauth.urllib3 import Urllib3Transport, client
from cfauth_core import ApiKey

from .test_stdlib_transport import (
    BASIC,
    HOST,
    KEY,
    SECRET,
    Pki,
    Server,
    get,
    hold_idle,
    pki,
    server,
)

__all__ = ["pki", "server"]  # fixtures


@pytest.fixture
def send(server: Server, pki: Pki) -> Iterator[Urllib3Transport]:
    with Urllib3Transport(ca_file=pki.ca_file, resolve=server.resolve(), pool_maxsize=2) as send:
        yield send


def test_more_threads_than_the_pool_holds_do_not_block(
    send: Urllib3Transport, server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="urllib3"):
        hold_idle(send, server, 6)  # six at once through a pool of two: none waits
    assert any("Connection pool is full" in record.getMessage() for record in caplog.records)
    for _ in range(4):
        assert send(get("/")).status == 200
    assert server.accepted == 6  # two were kept and are reused


def test_negative_pool_maxsize_is_refused() -> None:
    with pytest.raises(ValueError, match="pool_maxsize=-1"):
        Urllib3Transport(pool_maxsize=-1)


def test_client_takes_the_pool_size(server: Server, pki: Pki) -> None:
    with client(
        f"https://{HOST}",
        ApiKey(KEY, SECRET),
        ca_file=pki.ca_file,
        resolve=server.resolve(),
        pool_maxsize=1,
        forwarded_for="203.0.113.9",
    ) as api:
        assert api.get("ping").json()["pong"] is True
        assert api.get("ping").json()["pong"] is True
    assert server.accepted == 1
    headers = dict(server.seen[0].headers)
    assert (headers["Authorization"], headers["X-Forwarded-For"]) == (BASIC, "203.0.113.9")


def test_failure_names_the_tls_error_under_urllib3s(server: Server) -> None:
    with (
        Urllib3Transport(resolve=server.resolve()) as send,
        pytest.raises(TransportFailure) as failure,
    ):
        send(get("/"))
    message = str(failure.value)
    assert "was not trusted" in message
    assert "unable to get local issuer certificate" in message  # the TLS error underneath
    assert "HTTPSConnectionPool" not in message


def test_pools_are_looked_up_once_and_closed_with_the_transport(
    send: Urllib3Transport, server: Server
) -> None:
    assert send(get("/")).status == 200
    send._pools.clear()  # as when the transport's map is full: the manager still has it
    assert send(get("/")).status == 200
    assert server.accepted == 1
    send.close()
    assert server.ended.acquire(timeout=5)  # the idle connection was closed
    with pytest.raises(TransportFailure, match="closed"):
        send(get("/"))


def test_pools_are_kept_per_host(send: Urllib3Transport, server: Server) -> None:
    assert send(get("/")).status == 200
    with pytest.raises(TransportFailure, match=r"other\.example"):
        send(get("/", host="other.example"))  # not resolved: never our server's pool
    assert len(send._pools) == 2
    assert server.accepted == 1
