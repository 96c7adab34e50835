"""The fault tests' private stack (:mod:`tests.faults`): one per module, never the shared one.

They start their own Redis, PostgreSQL, S3 and API processes whatever the test backend is, so
they run once, in the PostgreSQL pass of ``make test`` (the embedded pass skips them).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import BACKEND
from tests.faults import FaultStack, fault_stack


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "test_faults" in item.path.parts:
            item.add_marker(pytest.mark.slow)
            if BACKEND != "postgres":
                item.add_marker(
                    pytest.mark.skip(reason="fault tests run in the PostgreSQL pass of make test")
                )


@pytest.fixture(scope="module")
def stack() -> Iterator[FaultStack]:
    with fault_stack() as s:
        yield s
