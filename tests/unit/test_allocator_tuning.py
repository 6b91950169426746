"""runtime.tune_allocator: on glibc (this project's machines and its Debian-based image) the
two mallopt calls are accepted; their effect on memory is measured by the flood test
(tests/e2e/test_memory_flood.py)."""

from __future__ import annotations

import platform

import pytest

from sampler.runtime import tune_allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_accepts_the_allocator_settings() -> None:
    assert tune_allocator() is True
