"""Every test in this folder talks to real services and carries the `integration` mark."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


from tests.integration.stack import stack as stack  # noqa: E402 - the fixture, re-exported
