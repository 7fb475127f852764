"""What a caller of each client is told when a call fails in transport: a
call that may have been processed is never "may be retried"."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from cfauth_core import ApiKey, NetworkError

from .hostile import KINDS, Close, Hostile, Received, Send, Step, answer

pytest.importorskip("urllib3")
pytest.importorskip("trio")

CHECK = "check whether it took effect before sending it again"
RETRY = "the call may be retried"


def drop_writes(request: Received) -> list[Step]:
    """GETs are answered; anything else is read, then dropped unanswered."""
    if request.method == "GET":
        return [Send(answer("ok"))]
    return [Close("notify")]


def call(kind: str, resolve: dict[str, str], ca_file: str, method: str, **kwargs: Any) -> str:
    """Make one call through ``kind``'s client; the message of the NetworkError."""
    options: dict[str, Any] = {"ca_file": ca_file, "resolve": resolve, "connect_timeout": 2.0}
    credential = ApiKey("0123456789abcdef", "a-secret-value")
    if kind == "trio":
        import trio

        from cfauth.trio import client as trio_client

        async def main() -> str:
            async with trio_client("acme", credential, **options) as api:
                await api.get("booking")
                with pytest.raises(NetworkError) as caught:
                    await api.request(method, "booking/create", **kwargs)
                return str(caught.value)

        return trio.run(main)
    if kind == "stdlib":
        from cfauth.stdlib import client
    else:
        from cfauth.urllib3 import client  # type: ignore[assignment]
    with client("acme", credential, **options) as api:
        api.get("booking")
        with pytest.raises(NetworkError) as caught:
            api.request(method, "booking/create", **kwargs)
        return str(caught.value)


@pytest.mark.parametrize("kind", KINDS)
def test_a_post_that_may_have_been_processed_says_check_first(
    kind: str, hostile: Hostile, ca_file: str
) -> None:
    hostile.plan = drop_writes
    message = call(kind, hostile.resolve(), ca_file, "POST", data={"name": "x"})
    assert CHECK in message
    assert "retried" not in message
    assert [r.method for r in hostile.log].count("POST") == 1  # never sent again


@pytest.mark.parametrize("kind", KINDS)
def test_a_put_that_failed_may_be_retried(kind: str, hostile: Hostile, ca_file: str) -> None:
    hostile.plan = drop_writes
    message = call(kind, hostile.resolve(), ca_file, "PUT", data={"name": "x"})
    assert message.endswith(RETRY)
    assert CHECK not in message


@pytest.mark.parametrize("kind", KINDS)
def test_a_post_that_never_left_may_be_retried(kind: str, ca_file: str) -> None:
    with socket.socket() as closed:  # a port nobody listens on: connecting is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    message = call_refused(kind, {"acme.checkfront.com:443": f"127.0.0.1:{port}"}, ca_file)
    assert message.endswith(RETRY)
    assert CHECK not in message


def call_refused(kind: str, resolve: dict[str, str], ca_file: str) -> str:
    """A POST whose connection is refused: nothing of it was written."""
    options: dict[str, Any] = {"ca_file": ca_file, "resolve": resolve, "connect_timeout": 2.0}
    credential = ApiKey("0123456789abcdef", "a-secret-value")
    if kind == "trio":
        import trio

        from cfauth.trio import client as trio_client

        async def main() -> str:
            async with trio_client("acme", credential, **options) as api:
                with pytest.raises(NetworkError) as caught:
                    await api.post("booking/create", data={"name": "x"})
                return str(caught.value)

        return trio.run(main)
    if kind == "stdlib":
        from cfauth.stdlib import client
    else:
        from cfauth.urllib3 import client  # type: ignore[assignment]
    with client("acme", credential, **options) as api:
        with pytest.raises(NetworkError) as caught:
            api.post("booking/create", data={"name": "x"})
        return str(caught.value)
