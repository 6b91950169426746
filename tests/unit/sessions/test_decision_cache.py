"""DecisionCache: bounded FIFO memory of verdicts, by session key and by trace id."""

from __future__ import annotations

import pytest

from sampler.rules.verdict import Verdict
from sampler.sessions.decision_cache import DecisionCache

KEEP = Verdict(True, "keep")
DROP = Verdict(False, "drop")


@pytest.mark.parametrize(
    ("size", "keys", "expected_remembered"),
    [
        pytest.param(2, ["a", "b", "c"], ["b", "c"], id="oldest-forgotten"),
        pytest.param(3, ["a", "b", "c"], ["a", "b", "c"], id="within-bound"),
        pytest.param(2, ["a", "b", "a", "c"], ["a", "c"], id="re-remembering-makes-young"),
        pytest.param(1, ["a", "b"], ["b"], id="size-one"),
    ],
)
def test_by_key_forgets_the_oldest(
    size: int, keys: list[str], expected_remembered: list[str]
) -> None:
    cache = DecisionCache(size)
    for key in keys:
        cache.remember(key, (), KEEP)

    assert [k for k in sorted(set(keys)) if cache.for_key(k) is not None] == expected_remembered


@pytest.mark.parametrize(
    ("size", "traces", "expected_remembered"),
    [
        pytest.param(2, [b"1", b"2", b"3"], [b"2", b"3"], id="oldest-forgotten"),
        pytest.param(2, [b"1", b"2", b"1", b"3"], [b"1", b"3"], id="re-remembering-makes-young"),
    ],
)
def test_by_trace_forgets_the_oldest(
    size: int, traces: list[bytes], expected_remembered: list[bytes]
) -> None:
    cache = DecisionCache(size)
    for trace in traces:
        cache.remember(None, (trace,), KEEP)

    assert [t for t in sorted(set(traces)) if cache.for_trace(t) is not None] == (
        expected_remembered
    )


@pytest.mark.parametrize(
    ("key", "traces", "expected_len"),
    [
        pytest.param("k", [b"1", b"2"], 3, id="key-and-traces"),
        pytest.param(None, [b"1"], 1, id="trace-only"),
        pytest.param("k", [], 1, id="key-only"),
    ],
)
def test_remember_stores_key_and_every_trace(
    key: str | None, traces: list[bytes], expected_len: int
) -> None:
    cache = DecisionCache(10)
    cache.remember(key, traces, DROP)

    assert len(cache) == expected_len
    assert all(cache.for_trace(t) == DROP for t in traces)
    assert cache.for_key("k") == (DROP if key else None)


def test_later_verdict_replaces_earlier() -> None:
    cache = DecisionCache(10)
    cache.remember("k", (b"1",), KEEP)
    cache.remember("k", (b"1",), DROP)

    assert (cache.for_key("k"), cache.for_trace(b"1")) == (DROP, DROP)


@pytest.mark.parametrize("size", [0, -1], ids=["zero", "negative"])
def test_size_must_be_positive(size: int) -> None:
    with pytest.raises(ValueError, match="max_sessions must be positive"):
        DecisionCache(size)
