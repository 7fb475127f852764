"""pytest plugin: a ``cfauth_sandbox`` fixture (a started :class:`~cfauth.sandbox.Sandbox`).

Enable it in your top-level ``conftest.py``::

    pytest_plugins = ["cfauth.sandbox.pytest_plugin"]

then::

    def test_bookings(cfauth_sandbox):
        pair = cfauth_sandbox.account("acme")
        ...

Each test gets a fresh sandbox (function scope), stopped afterwards. Configure it with the
``cfauth_sandbox`` marker::

    @pytest.mark.cfauth_sandbox(accounts=("acme", "beta"), auto_consent=False)
    def test_two_accounts(cfauth_sandbox): ...
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._sandbox import Sandbox

__all__ = ["cfauth_sandbox"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cfauth_sandbox(accounts=('acme',), auto_consent=True): configure the cfauth_sandbox "
        "fixture for this test",
    )


@pytest.fixture
def cfauth_sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """A started ``Sandbox`` (accounts ``("acme",)`` unless the marker says otherwise)."""
    marker = request.node.get_closest_marker("cfauth_sandbox")
    options = dict(marker.kwargs) if marker is not None else {}
    accounts = options.pop("accounts", ("acme",))
    auto_consent = options.pop("auto_consent", True)
    if options:
        raise pytest.UsageError(f"unknown cfauth_sandbox marker options: {sorted(options)}")
    with Sandbox(accounts=accounts) as sandbox:
        sandbox.auto_consent = bool(auto_consent)
        yield sandbox
