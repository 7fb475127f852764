"""A transport failure: whether the call may be sent again depends on what
may have reached the server."""

from __future__ import annotations

import pytest

from cfauth_core import (
    Account,
    ApiKey,
    CallRequested,
    Fail,
    InvalidInput,
    Machine,
    NetworkError,
    Send,
    SendFailed,
)

NOW = 1_700_000_000.0
RETRY = "the call may be retried"
CHECK = "check whether it took effect before sending it again"


def failure(method: str, *, unsent: bool, headers: tuple[tuple[str, str], ...] = ()) -> str:
    return str(error(method, unsent=unsent, headers=headers))


def error(method: str, *, unsent: bool, headers: tuple[tuple[str, str], ...] = ()) -> NetworkError:
    m = Machine(Account.parse("acme"), ApiKey("0123456789abcdef", "a-secret-value"))
    actions = m.handle(CallRequested(now=NOW, method=method, path="booking", headers=headers))
    send = next(a for a in actions if isinstance(a, Send))
    actions = m.handle(
        SendFailed(now=NOW, request_id=send.request_id, reason="reset", unsent=unsent)
    )
    (fail,) = [a for a in actions if isinstance(a, Fail)]
    assert isinstance(fail.error, NetworkError)
    return fail.error


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_idempotent_calls_may_be_retried(method: str) -> None:
    message = failure(method, unsent=False)
    assert message.endswith(RETRY)
    assert CHECK not in message


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_call_that_may_have_been_processed_is_never_said_to_be_retryable(method: str) -> None:
    message = failure(method, unsent=False)
    assert "may have processed it" in message
    assert message.endswith(CHECK)
    assert "may be retried" not in message


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_call_that_never_left_or_carries_an_idempotency_key_may_be_retried(
    method: str,
) -> None:
    assert failure(method, unsent=True).endswith(RETRY)
    keyed = failure(method, unsent=False, headers=(("Idempotency-Key", "k-1"),))
    assert keyed.endswith(RETRY)


def test_unsent_defaults_to_maybe_processed_and_must_be_a_bool() -> None:
    assert SendFailed(now=NOW, request_id=1).unsent is False
    with pytest.raises(InvalidInput, match="unsent"):
        SendFailed(now=NOW, request_id=1, unsent=1)  # type: ignore[arg-type]


def test_only_a_call_that_may_have_been_processed_is_not_retryable() -> None:
    assert error("GET", unsent=False).retryable
    assert error("POST", unsent=True).retryable
    assert not error("POST", unsent=False).retryable
