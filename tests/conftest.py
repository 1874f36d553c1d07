"""Fixtures for every test."""

import pytest

from reengage.provenance import IMPORTED_PLUGINS


@pytest.fixture(autouse=True)
def _plugins_imported_by_this_test_only():
    """A run records the plugin modules its process imported. The test session is one
    process, so each test starts with none recorded: a plugin imported by an earlier test
    or a module-scoped fixture (check-config of a config that names one, say) must not
    appear in this test's runs. The record is put back afterwards."""
    before = list(IMPORTED_PLUGINS)
    IMPORTED_PLUGINS.clear()
    yield
    IMPORTED_PLUGINS[:] = before
