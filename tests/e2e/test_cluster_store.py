"""The cluster's link to a real redis-server on loopback (tests/redis_server.py): keeps
announced by one sampler reach the others, are stored with their lifetime, are read back by a
sampler that (re)connects later; with the store down, slow to come back or full, nothing waits
on it, keeps wait in the bounded outbox, and the outage is logged once."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import pytest

from sampler.clock import MonotonicClock
from sampler.cluster.link import ClusterLink
from sampler.cluster.shared import SharedKeep
from sampler.config.model import ClusterConfig, ClusterRedisConfig, SessionsConfig
from sampler.rules.verdict import Verdict
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

TICK_S = 0.05
ERRORS = Verdict(True, "errors", ("error",), 1.0)


@dataclasses.dataclass
class Peer:
    """A link and what reached its pipeline's ``adopt``."""

    link: ClusterLink
    adopted: list[SharedKeep]

    def keys(self) -> list[str]:
        return sorted({k.key for k in self.adopted})


def peer(url: str, origin: str, **config: object) -> Peer:
    adopted: list[SharedKeep] = []

    def adopt(keeps: Iterable[SharedKeep]) -> int:
        adopted.extend(keeps)
        return 0

    cluster = dataclasses.replace(
        ClusterConfig(redis=ClusterRedisConfig(url=url, timeout=0.5)), **config
    )
    link = ClusterLink(
        cluster,
        SessionsConfig(),
        adopt,
        MonotonicClock(),
        tick_s=TICK_S,
        origin=origin,
    )
    return Peer(link, adopted)


async def until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)
    assert predicate(), what


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


def test_a_keep_reaches_the_other_samplers_and_is_stored_for_its_lifetime(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        a, b, c = (peer(redis_server.url, name) for name in "abc")
        for p in (a, b, c):
            p.link.start()
        await until(lambda: all(p.link.stats.connected for p in (a, b, c)), 5, "connected")
        a.link.kept("conv-1", ERRORS)
        a.link.kept("conv-2", ERRORS._replace(rule="rare", adjusted_count=3.0))
        await until(lambda: len(b.adopted) == len(c.adopted) == 2, 5, "heard")
        assert b.adopted[0] == SharedKeep("conv-1", "errors", 1.0, ("error",), "a")
        assert b.adopted[1].adjusted_count == 3.0
        assert not a.adopted, "its own keeps are not adopted back"
        assert (a.link.stats.published, b.link.stats.received) == (2, 2)
        for p in (a, b, c):
            await p.link.stop()

    run(scenario)
    ttl = int(redis_server.command("TTL", "agent-sampler:verdict:conv-1").split(b"\r\n")[0][1:])
    default = SessionsConfig().dropped_hold + SessionsConfig().max_session_duration
    assert default - 20 < ttl <= default  # dropped_hold + max_session_duration, by default


def test_keeps_published_before_a_sampler_listened_are_read_once_it_connects(
    redis_server: RedisServer,
) -> None:
    redis_server.command("SET", "other:data", "not ours")  # another user of the store

    async def scenario() -> None:
        a = peer(redis_server.url, "a")
        a.link.start()
        await until(lambda: a.link.stats.connected, 5, "a connected")
        for n in range(2500):  # several batches of the catch-up
            a.link.kept(f"conv-{n}", ERRORS)
        await until(lambda: a.link.stats.published == 2500, 10, "published")
        # b starts afterwards: it reads them all, once, and then nothing more
        b = peer(redis_server.url, "b")
        b.link.start()
        await until(lambda: len(b.keys()) == 2500, 10, "read on connecting")
        assert b.link.catch_up.done and b.link.stats.caught_up == 2500
        a.link.kept("later", ERRORS)  # heard, not read
        await until(lambda: "later" in b.keys(), 5, "heard")
        assert b.link.stats.caught_up == 2500
        # a reads back only its own keeps, which it does not adopt
        assert not a.adopted
        await a.link.stop()
        await b.link.stop()

    run(scenario)


def test_an_outage_is_logged_once_keeps_wait_bounded_and_go_out_after(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path)  # not started: the store is down when the samplers start

    async def scenario() -> None:
        a = peer(server.url, "a", max_pending=3)
        # whether a publishes before b listens again or after, b learns of them (heard, or
        # read back on reconnecting)
        b = peer(server.url, "b")

        a.link.start()
        b.link.start()
        await asyncio.sleep(1.5)  # several reconnection attempts each
        assert not a.link.stats.connected and a.link.stats.errors >= 3
        for n in range(5):  # never waits: the outbox takes them, the oldest beyond 3 dropped
            a.link.kept(f"conv-{n}", ERRORS)
        assert a.link.dropped_keeps == 2
        server.start()
        await until(lambda: len(b.keys()) == 3, 10, "the outbox went out after the outage")
        assert b.keys() == ["conv-2", "conv-3", "conv-4"]
        server.stop()  # a second outage, while connected
        await until(lambda: not a.link.stats.connected, 5, "the loss seen")
        a.link.kept("conv-9", ERRORS)
        await asyncio.sleep(2.0)  # longer than a blip (link.OUTAGE_GRACE_S): an outage
        server.start()
        await until(lambda: len(b.keys()) == 4, 10, "after the second outage")
        await a.link.stop()
        await b.link.stop()

    caplog.set_level(logging.INFO, logger="sampler.cluster.link")
    try:
        run(scenario)
    finally:
        server.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "sampler.cluster.link"]
    # one line as each outage begins and one as it ends, per sampler: 2 outages x 2 samplers
    assert sum("unreachable" in line for line in lines) == 4, lines
    assert sum("reachable again" in line for line in lines) == 4, lines
    assert any("2 keep(s) dropped meanwhile" in line for line in lines), lines


def test_a_full_store_refuses_writes_but_keeps_still_reach_the_peers(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start("--maxmemory", "1", "--maxmemory-policy", "noeviction")

    async def scenario() -> None:
        a, b = peer(server.url, "a"), peer(server.url, "b")
        a.link.start()
        b.link.start()
        await until(lambda: a.link.stats.connected and b.link.stats.connected, 5, "connected")
        a.link.kept("conv", ERRORS)
        await until(lambda: len(b.adopted) == 1, 5, "announced despite the refused write")
        assert a.link.stats.errors == 1 and a.link.stats.connected
        await a.link.stop()
        await b.link.stop()

    try:
        run(scenario)
    finally:
        server.stop()


def test_a_blip_is_no_outage(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The store restarted at once: the connection is made again within the grace, counted
    as an error, not logged as an outage."""
    server = RedisServer(tmp_path).start()

    async def scenario() -> None:
        a = peer(server.url, "a")
        a.link.start()
        await until(lambda: a.link.stats.connected, 5, "connected")
        server.stop()
        server.start()
        await until(lambda: a.link.stats.errors >= 1 and a.link.stats.connected, 5, "back")
        assert a.link.stats.outages == 0
        await a.link.stop()

    caplog.set_level(logging.INFO, logger="sampler.cluster.link")
    try:
        run(scenario)
    finally:
        server.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "sampler.cluster.link"]
    assert not any("reachable" in line for line in lines), lines
