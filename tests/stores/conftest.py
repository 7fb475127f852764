"""Fixtures for the store tests: a real PostgreSQL server for the session,
and a factory opening each kind of store in a private temporary folder."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cfauth.stores import FileStore, GrantStore, MemoryStore, PostgresStore, SqliteStore

from .postgres import PostgresUnavailable, running_postgres

KINDS = ("memory", "file", "sqlite", "postgres")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server started for this session.  Under CI (``CI=true``, or
    ``CFAUTH_REQUIRE_POSTGRES=1`` as ``.ci/run`` sets) it must start: no skipping."""
    try:
        with running_postgres() as url:
            yield url
    except PostgresUnavailable as error:
        required = os.environ.get("CI", "").lower() in ("1", "true", "yes")
        if required or os.environ.get("CFAUTH_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL could not be started under CI: {error}", pytrace=False)
        pytest.skip(f"PostgreSQL is not available: {error}")


_tables = iter(range(1, 10**6))


@pytest.fixture
def pg_table() -> str:
    """A table name no other test uses."""
    return f"grants_{os.getpid()}_{next(_tables)}"


@pytest.fixture
def private_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("store")
    os.chmod(folder, 0o700)
    return str(folder)


OpenStore = Callable[..., GrantStore]


@pytest.fixture
def open_kind(
    request: pytest.FixtureRequest, private_dir: str, pg_table: str
) -> Iterator[Callable[[str], GrantStore]]:
    """``open_kind(kind, **options)``: a store of that kind (the same one on every
    call with the same kind: each call opens it again, like another process)."""
    opened: list[GrantStore] = []
    memory = MemoryStore()

    def open_(kind: str, **options: Any) -> GrantStore:
        store: GrantStore
        if kind == "memory":
            store = memory
        elif kind == "file":
            store = FileStore(os.path.join(private_dir, "grants.json"), **options)
        elif kind == "sqlite":
            store = SqliteStore(os.path.join(private_dir, "grants.sqlite3"), **options)
        else:
            url = request.getfixturevalue("postgres_url")
            store = PostgresStore(url, table=pg_table, **options)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()
