"""The pure parts of the cluster: the keep's encoding (round trips, and what is refused), the
bounded outbox, the backoff, the catch-up window, the store's URL."""

from __future__ import annotations

import random

import pytest

from sampler.cluster.shared import (
    SHARED_KEEP_SIGNAL,
    Backoff,
    CatchUp,
    Outbox,
    SharedKeep,
    batch_origin,
    decode_batch,
    decode_value,
    encode_batch,
    encode_value,
)
from sampler.config.store_url import StoreAddress, parse_store_url
from sampler.rules.verdict import Verdict

KEEP = SharedKeep("conv-ü/1", "errors", 4.0, ("error", "tool_cycle"), "a1")


def keep(n: int) -> SharedKeep:
    return SharedKeep(f"k{n}", "errors", 1.0, (), "a1")


def test_a_keep_survives_the_store_and_the_channel() -> None:
    assert decode_value(KEEP.key, encode_value(KEEP)) == KEEP
    assert decode_batch(encode_batch("a1", [KEEP, keep(1)])) == [KEEP, keep(1)]
    assert decode_batch(encode_batch("a1", [])) == []
    assert batch_origin(encode_batch("a1", [KEEP])) == b"a1"
    # what one verdict costs on the wire: a few dozen bytes besides the key
    assert len(encode_value(keep(1))) < 40


def test_a_keep_is_built_from_a_verdict_and_says_it_was_shared() -> None:
    shared = SharedKeep.of("c", Verdict(True, "rare", ("rare_shape",), 2.0), "b")
    assert shared == SharedKeep("c", "rare", 2.0, ("rare_shape",), "b")
    assert shared.annotated() == ("rare_shape", SHARED_KEEP_SIGNAL)
    again = SharedKeep("c", "rare", 2.0, shared.annotated(), "b")
    assert again.annotated() == shared.annotated(), "said once"


@pytest.mark.parametrize(
    "data",
    [
        b'[["k", "r", 1.0, []]]',
        b"o not json",
        b"o {}",
        b"o [[1, 2]]",
        b'o [["k", "r", 1.0, [], "extra"]]',
        b'o [["", "r", 1.0, []]]',
        b'o [["k", 7, 1.0, []]]',
        b'o [["k", "r", 0.5, []]]',
        b'o [["k", "r", true, []]]',
        b'o [["k", "r", "NaN", []]]',
        b'o [["k", "r", Infinity, []]]',
        b'o [["k", "r", 1.0, [1]]]',
        b'o [["k", "r", 1.0, "error"]]',
    ],
    ids=[
        "no-origin",
        "not-json",
        "not-a-list",
        "short-row",
        "long-row",
        "empty-key",
        "rule-not-text",
        "count-below-one",
        "count-boolean",
        "count-text",
        "count-infinite",
        "signal-not-text",
        "signals-not-a-list",
    ],
)
def test_what_is_not_a_keep_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_batch(data)


def test_the_outbox_is_bounded_dropping_the_oldest() -> None:
    box = Outbox(limit=3)
    for n in range(5):
        box.offer(keep(n))
    assert (len(box), box.dropped) == (3, 2)
    taken = box.take(2)
    assert [k.key for k in taken] == ["k2", "k3"]
    box.offer(keep(5))
    box.offer(keep(6))  # full again: k4, k5, k6
    box.put_back(taken)  # the failed batch is older than all of them: dropped
    assert [k.key for k in box.take(10)] == ["k4", "k5", "k6"]
    assert box.dropped == 4


def test_a_failed_batch_goes_back_in_front_in_order() -> None:
    box = Outbox(limit=10)
    for n in range(4):
        box.offer(keep(n))
    taken = box.take(3)
    box.offer(keep(9))
    box.put_back(taken)
    assert [k.key for k in box.take(10)] == ["k0", "k1", "k2", "k3", "k9"]
    assert box.dropped == 0


def test_the_backoff_grows_to_its_cap_with_jitter() -> None:
    backoff, rng = Backoff(initial_s=0.1, max_s=2.0), random.Random(7)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (5, 1.6), (6, 2.0), (50, 2.0)]:
        waits = [backoff.wait(attempt, rng) for _ in range(200)]
        assert ceiling / 2 <= min(waits) and max(waits) <= ceiling
        assert max(waits) - min(waits) > ceiling / 4, "jittered"


def test_the_catch_up_scans_once_then_reads_what_it_found() -> None:
    catch_up = CatchUp()
    assert catch_up.done and catch_up.next_scan() is None  # nothing before a connection
    catch_up.begin()
    assert catch_up.next_scan() == 0 and not catch_up.done
    catch_up.scanned(17, ["a", "b", "c"])
    assert catch_up.next_scan() == 17
    assert catch_up.take(2) == ["a", "b"]
    catch_up.scanned(0, ["d"])  # the scan went round: over
    assert catch_up.next_scan() is None and not catch_up.done
    assert catch_up.take(10) == ["c", "d"]
    assert catch_up.done
    catch_up.begin()  # a reconnection starts it over
    assert catch_up.next_scan() == 0 and catch_up.take(10) == []


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://cache", StoreAddress("cache", 6379, False, 0)),
        ("redis://:pw@cache:6380/2", StoreAddress("cache", 6380, False, 2)),
        ("rediss://user:pw@[::1]:7000", StoreAddress("::1", 7000, True, 0)),
        ("REDIS://cache/", StoreAddress("cache", 6379, False, 0)),
    ],
    ids=["bare", "password-db", "tls-ipv6", "upper-case"],
)
def test_store_urls(url: str, address: StoreAddress) -> None:
    assert parse_store_url(url) == address
    assert "pw" not in address.shown


@pytest.mark.parametrize(
    "url",
    [
        "http://:secret@cache",
        "redis://:secret@",
        "redis://:secret@cache:99999",
        "redis://:secret@cache/db",
        "redis://:secret@cache?x=1",
        "unix:///secret.sock",
    ],
    ids=["scheme", "no-host", "bad-port", "db-not-a-number", "query", "unix"],
)
def test_bad_store_urls_are_refused_without_quoting_them(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_store_url(url)
    assert "secret" not in str(caught.value)
