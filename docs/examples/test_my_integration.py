"""Testing your own integration with the sandbox's pytest fixture.

In your top-level conftest.py: ``pytest_plugins = ["cfauth.sandbox.pytest_plugin"]``
(or run ``pytest -p cfauth.sandbox.pytest_plugin``).

Run it: python -m pytest -p cfauth.sandbox.pytest_plugin docs/examples/test_my_integration.py
"""

import pytest

from cfauth.sandbox import Sandbox
from cfauth.stdlib import Client, client
from cfauth_core import ApiKey


def count_paid_bookings(api: Client) -> int:  # the code under test: yours
    return len(api.get("booking/index", params={"status_id": "PAID"}).json()["booking/index"])


@pytest.fixture
def api(cfauth_sandbox: Sandbox) -> Client:
    acme = cfauth_sandbox.account("acme")
    return client(
        "acme",
        ApiKey(acme.api_key, acme.api_secret),
        ca_file=cfauth_sandbox.ca_file,
        resolve=cfauth_sandbox.resolve,
    )


def test_counts_paid_bookings(api: Client) -> None:
    with api:
        assert count_paid_bookings(api) >= 1


def test_survives_the_migration(api: Client, cfauth_sandbox: Sandbox) -> None:
    with api:
        cfauth_sandbox.migrate("acme")
        assert count_paid_bookings(api) >= 1
        assert api.account == "https://acme.manage.na1.bookingplatform.app"


def test_rate_limit_is_waited_out(api: Client, cfauth_sandbox: Sandbox) -> None:
    with api:
        cfauth_sandbox.fail_next(1, status=429, retry_after="1")
        assert count_paid_bookings(api) >= 1
