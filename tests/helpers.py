"""Helpers shared by the core's tests: picking actions, answering sends, reading headers."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import TypeVar

from cfauth_core import Action, Machine, Request, ResponseReceived, Send

A = TypeVar("A", bound=Action)

#: The clock the core's tests start from.
NOW = 1_700_000_000.0

#: Under the mutation tool the stateful and sweep property tests run a quarter
#: of their examples: a mutant that survives runs every test that covers it,
#: and these few are most of that time.  The score is the lower for it, if at all.
EXAMPLES_DIVISOR = 4 if "mutmut" in sys.modules else 1


def only(actions: Sequence[Action], kind: type[A]) -> list[A]:
    """The actions of type ``kind``, in order."""
    return [a for a in actions if isinstance(a, kind)]


def one(actions: Sequence[Action], kind: type[A]) -> A:
    """The single action of type ``kind``; fails when there are none or several."""
    found = only(actions, kind)
    assert len(found) == 1, actions
    return found[0]


def respond(
    machine: Machine,
    send: Send,
    status: int = 200,
    body: bytes = b"{}",
    now: float = NOW,
    headers: Sequence[tuple[str, str]] = (),
) -> list[Action]:
    """Answer ``send`` with a response."""
    return machine.handle(
        ResponseReceived(
            now=now, request_id=send.request_id, status=status, headers=list(headers), body=body
        )
    )


def header(headers: Request | Iterable[tuple[str, str]], name: str) -> str | None:
    """The value of header ``name`` (any case) in a request or a header list; fails
    when it appears more than once."""
    pairs = headers.headers if isinstance(headers, Request) else headers
    values = [str(v) for k, v in pairs if k.lower() == name.lower()]
    assert len(values) <= 1, f"{name} appears {len(values)} times"
    return values[0] if values else None


def case_id(value: object) -> str:
    """A parametrized test's id for ``value``: its ``repr`` with every backslash,
    bracket and non-ASCII character written ``^``.

    Pytest escapes such characters once more in the test's node id, and then
    cannot find the test by that id (as the mutation tool asks for it).
    """
    return "".join(c if " " <= c <= "~" and c not in "\\[]" else "^" for c in repr(value))
