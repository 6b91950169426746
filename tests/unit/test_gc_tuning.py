"""The sampler's garbage-collector and allocator settings (sampler/runtime.py). Their effect on
latency and memory is measured by the throughput benchmark and the flood test; here, that
they do what they say."""

from __future__ import annotations

import gc
import platform
from collections.abc import Iterator

import pytest

from sampler.runtime import YoungCollections, tune_allocator


@pytest.fixture
def young_collections() -> Iterator[list[int]]:
    """Generations collected while the test runs, automatic collections off."""
    collected: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collected.append(info["generation"])

    gc.callbacks.append(record)
    gc.disable()
    try:
        yield collected
    finally:
        gc.enable()
        gc.callbacks.remove(record)


def test_a_young_collection_runs_once_a_period_whatever_the_tick(
    young_collections: list[int],
) -> None:
    young = YoungCollections(period_s=0.5)
    for now in (0.1, 0.4, 0.6, 0.7, 1.0, 1.2, 1.25):
        young.tick(now)
    assert young_collections == [0, 0]  # at 0.6 and 1.2: young only, never a full collection


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_accepts_the_allocator_settings() -> None:
    assert tune_allocator() is True
