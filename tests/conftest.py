"""Fixtures for every test."""

import pytest

from reengage.provenance import IMPORTED_PLUGINS


@pytest.fixture(autouse=True)
def _plugins_imported_by_this_test_only():
    """A run records the plugin modules its process imported. The test session is one
    process: a test that imports a plugin (check-config of a config that names one, say)
    must not make a later test's run record it."""
    before = list(IMPORTED_PLUGINS)
    yield
    IMPORTED_PLUGINS[:] = before
