"""Fixtures the hostile-server tests share: one CA per module, its PEM file,
and a fresh misbehaving server per test (:mod:`tests.adapters.hostile`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trustme

from .hostile import Hostile, hostile_server


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("hostile") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def hostile(ca: trustme.CA) -> Iterator[Hostile]:
    with hostile_server(ca) as server:
        yield server
