"""The malloc tuning takes effect where it can and is harmless where it cannot."""

import platform
import sys

from reengage.allocator import retain_freed_memory


def test_takes_effect_on_glibc_and_is_idempotent(monkeypatch):
    monkeypatch.delenv("REENGAGE_MALLOC_TUNING", raising=False)
    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert retain_freed_memory() is expected
    assert retain_freed_memory() is expected


def test_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("REENGAGE_MALLOC_TUNING", "off")
    assert retain_freed_memory() is False
