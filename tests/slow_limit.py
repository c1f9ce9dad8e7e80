"""The fast lane's guard (a pytest plugin of tests/conftest.py): a test without `@pytest.mark.slow` whose body runs
past `SLOW_LIMIT` seconds fails, saying so. Every test over about 10 s on the 2-core machine is marked slow, so
`pytest -m "not slow"` stays under 3 minutes there."""

from __future__ import annotations

import os
from typing import Any

import pytest

SLOW_LIMIT = float(os.environ.get("DIFFLAB_SLOW_LIMIT", "15"))  # s; a machine busier than CI alone may raise it


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """A test without `@pytest.mark.slow` whose body runs past SLOW_LIMIT seconds fails, saying so."""
    outcome = yield
    report = outcome.get_result()
    if call.when == "call" and report.passed and "slow" not in item.keywords and call.duration > SLOW_LIMIT:
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} took {call.duration:.1f} s, more than {SLOW_LIMIT:.0f} s, and is not marked "
                           "slow: mark it @pytest.mark.slow (or make it faster), so that the fast lane "
                           "`pytest -m \"not slow\"` stays under 3 minutes.")
