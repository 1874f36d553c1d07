"""The malloc tuning takes effect where it can and is harmless where it cannot."""

import platform
import sys

from reengage.allocator import retain_freed_memory


def test_takes_effect_on_glibc_and_is_idempotent():
    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert retain_freed_memory() is expected
    assert retain_freed_memory() is expected
