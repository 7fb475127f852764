"""Settings for runs under the mutation tool (``mutmut run``); a no-op otherwise.

Under mutmut each mutant runs the tests that cover the mutated function with
``-x``.  Running first the tests of the mutated module, then the pinned tests,
each group fastest first, makes a killed mutant cost the time of the first test
that fails, not of the slow property and sweep tests in front of it; and
Hypothesis does not shrink or save failing examples, since a failure is all a
mutation run needs.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

UNDER_MUTMUT = "mutmut" in sys.modules

if UNDER_MUTMUT:  # pragma: no cover - only under the mutation tool
    from hypothesis import Phase, settings

    settings.register_profile(
        "mutation",
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        database=None,
        deadline=None,
        print_blob=False,
    )
    settings.load_profile("mutation")


def _durations() -> dict[str, float]:
    # mutmut runs the tests from its mutants/ directory, next to its stats.
    path = Path("mutmut-stats.json")
    if not path.is_file():
        return {}
    durations = json.loads(path.read_text()).get("duration_by_test", {})
    return durations if isinstance(durations, dict) else {}


def _order(mutant: str, durations: dict[str, float]) -> Callable[[pytest.Item], tuple[int, float]]:
    # "cfauth_core._tokens.x_scrub__mutmut_3" -> "tokens": the tests of that
    # module, then the pinned tests (short, and broad), then the rest; each
    # group fastest first.
    module = mutant.split(".")[1].lstrip("_") if "." in mutant else ""

    def key(item: pytest.Item) -> tuple[int, float]:
        path = item.nodeid.split("::")[0]
        group = 0 if module and module in path else 1 if "test_pinned_" in path else 2
        return group, durations.get(item.nodeid, 0.0)

    return key


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    if not UNDER_MUTMUT or not mutant.startswith("cfauth"):
        return
    items.sort(key=_order(mutant, _durations()))  # pragma: no cover - only under mutmut
