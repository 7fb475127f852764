"""Settings for runs under the mutation tool (``mutmut run``); a no-op otherwise.

Under mutmut each mutant runs the tests that cover the mutated function with
``-x``.  Running the fast tests first makes a killed mutant cost the time of
the first test that fails, not of the slow property and sweep tests in front
of it; and Hypothesis does not shrink or save failing examples, since a
failure is all a mutation run needs.
"""

from __future__ import annotations

import json
import os
import sys
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


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not UNDER_MUTMUT or not os.environ.get("MUTANT_UNDER_TEST", "").startswith("cfauth"):
        return
    durations = _durations()  # pragma: no cover - only under the mutation tool
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))  # pragma: no cover
