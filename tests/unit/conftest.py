"""Unit tests: pure logic in this process. No root, no container, no installed launcher."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def _require_root() -> None:
    """Overrides the harness's check for the tests below: they need neither root nor the
    installed runtime."""
