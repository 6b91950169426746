"""The cluster's I/O: one asyncio task that keeps a connection to the store and, once a tick,
publishes the keeps waiting in the outbox and looks up keys; a second that listens on the
channel. Nothing else waits on them: the pipeline only appends to the outbox (``kept``,
``dropped``), and peers' keeps are handed to ``Pipeline.adopt`` on the event loop's thread.

Each tick costs one round trip, whatever it carries: for each keep a ``SET key value EX ttl``,
then one ``PUBLISH`` of the batch, and (after a (re)connection) one ``MGET`` of the keys
dropped since, pipelined together. With the store unreachable, slow or refusing writes, the
round trip fails or times out (``cluster.redis.timeout``): the batch goes back to the outbox
(bounded: oldest dropped, counted), the connection is dropped and made again with backoff, and
the samplers decide alone meanwhile. One warning when an outage begins, one line when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import uuid
from collections.abc import Callable, Iterable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from sampler.clock import Clock
from sampler.cluster.shared import (
    Backoff,
    CatchUp,
    ClusterStats,
    Outbox,
    SharedKeep,
    decode_batch,
    decode_value,
    encode_batch,
    encode_value,
)
from sampler.cluster.store_url import parse_store_url
from sampler.config.model import ClusterConfig, SessionsConfig
from sampler.rules.verdict import Verdict

log = logging.getLogger(__name__)

# Most keeps published in one tick's round trip, and most keys looked up in one.
MAX_BATCH = 1000
MAX_LOOKUPS = 1000
LISTEN_POLL_S = 1.0
STOP_FLUSH_S = 1.0  # at shutdown, what is left in the outbox gets this long

Adopt = Callable[[Iterable[SharedKeep]], int]
HeldKeys = Callable[[], list[str]]


class ClusterLink:
    """Implements ``VerdictSharing`` for the pipeline, and talks to the store."""

    def __init__(
        self,
        config: ClusterConfig,
        sessions: SessionsConfig,
        adopt: Adopt,
        held_keys: HeldKeys,
        clock: Clock,
        *,
        tick_s: float,
        origin: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.url = config.redis.url
        self.address = parse_store_url(self.url)
        self.timeout_s = config.redis.timeout
        self.ttl_s = max(1, math.ceil(config.ttl(sessions)))
        self.key_prefix = f"{config.key_prefix}verdict:"
        self.channel = f"{config.key_prefix}verdicts"
        self.origin = origin or uuid.uuid4().hex[:16]
        self.stats = ClusterStats()
        self.outbox = Outbox(config.max_pending)
        self.catch_up = CatchUp(self.ttl_s)
        self.backoff = Backoff()
        self._adopt, self._held_keys, self._clock, self._tick_s = adopt, held_keys, clock, tick_s
        self._rng = rng or random.Random()
        self._lookups: dict[str, None] = {}  # keys to look up, in order, without duplicates
        self._task: asyncio.Task[None] | None = None
        self._client: aioredis.Redis | None = None
        self._outage_since: float | None = None
        self._dropped_at_outage = 0

    # -- what the pipeline calls: synchronous, O(1) ----------------------------------------------

    def kept(self, key: str, verdict: Verdict) -> None:
        self.outbox.offer(SharedKeep.of(key, verdict, self.origin))

    def dropped(self, key: str) -> None:
        if self.catch_up.active(self._clock.now()) and len(self._lookups) < MAX_LOOKUPS * 10:
            self._lookups[key] = None

    @property
    def dropped_keeps(self) -> int:
        return self.outbox.dropped

    # -- the task ------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cluster-link")

    async def stop(self) -> None:
        """Publishes what is left (the keeps of the sessions decided at shutdown), for at most
        ``STOP_FLUSH_S``, then closes."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.outbox:
            client = self._new_client()
            try:
                async with asyncio.timeout(STOP_FLUSH_S):
                    while self.outbox:
                        await self._round_trip(client, lookups=False)
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning(
                    "cluster: %d keep(s) not published at shutdown (%s)", len(self.outbox), exc
                )
            finally:
                await client.aclose()

    def _new_client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(
            self.url,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            retry=Retry(NoBackoff(), 0),  # reconnecting is ours, with backoff
        )

    async def _run(self) -> None:
        attempt = 0
        while True:
            client = self._new_client()
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            listener: asyncio.Task[None] | None = None
            try:
                async with asyncio.timeout(self.timeout_s):
                    await pubsub.subscribe(self.channel)
                    # subscribed first, then looked up: a keep published in between is heard
                    held = self._held_keys()
                    for key in held:
                        self._lookups[key] = None
                self._connected()
                attempt = 0
                listener = asyncio.create_task(self._listen(pubsub), name="cluster-listen")
                while True:
                    await asyncio.sleep(self._tick_s)
                    if listener.done():
                        listener.result()  # raises what stopped it
                        raise ConnectionError("the channel closed")
                    while await self._round_trip(client, lookups=True):
                        pass
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError, ValueError) as exc:
                self._lost(exc)
            finally:
                if listener is not None:
                    listener.cancel()
                    with contextlib.suppress(BaseException):
                        await listener
                with contextlib.suppress(BaseException):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # (redis-py)
                with contextlib.suppress(BaseException):
                    await client.aclose()
            attempt += 1
            await asyncio.sleep(self.backoff.wait(attempt, self._rng))

    async def _round_trip(self, client: aioredis.Redis, *, lookups: bool) -> bool:
        """Publishes up to a batch of keeps and looks up keys, in one round trip; True when
        more keeps are waiting. On failure what was taken goes back, and the error is raised."""
        batch = self.outbox.take(MAX_BATCH)
        keys = list(self._lookups)[:MAX_LOOKUPS] if lookups else []
        if not batch and not keys:
            return False
        for key in keys:
            del self._lookups[key]
        pipe = client.pipeline(transaction=False)
        for keep in batch:
            pipe.set(self.key_prefix + keep.key, encode_value(keep), ex=self.ttl_s)
        if batch:
            pipe.publish(self.channel, encode_batch(batch))
        if keys:
            pipe.mget([self.key_prefix + key for key in keys])
        try:
            async with asyncio.timeout(self.timeout_s):
                results = await pipe.execute(raise_on_error=False)
        except BaseException:
            self.outbox.put_back(batch)
            for key in keys:
                self._lookups[key] = None
            raise
        # a refused write (the store is full: OOM) is counted; the announcement still went
        self.stats.errors += sum(1 for r in results[: len(batch)] if isinstance(r, Exception))
        if batch:
            if isinstance(results[len(batch)], Exception):
                self.stats.errors += 1
            else:
                self.stats.published += len(batch)
        if keys:
            found = results[-1]
            if isinstance(found, Exception):
                self.stats.errors += 1
            else:
                self.stats.looked_up += len(keys)
                self._found(keys, found)
        return bool(self.outbox)

    def _found(self, keys: list[str], values: list[bytes | None]) -> None:
        keeps = []
        for key, value in zip(keys, values, strict=True):
            if value is None:
                continue
            try:
                keep = decode_value(key, value)
            except ValueError:
                self.stats.errors += 1
                continue
            if keep.origin != self.origin:
                keeps.append(keep)
        if keeps:
            self.stats.received += len(keeps)
            self._adopt(keeps)

    async def _listen(self, pubsub: aioredis.client.PubSub) -> None:
        while True:
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=LISTEN_POLL_S
            )
            if message is None or message.get("type") != "message":
                continue
            try:
                keeps = [k for k in decode_batch(message["data"]) if k.origin != self.origin]
            except (ValueError, TypeError):
                self.stats.errors += 1
                continue
            if keeps:
                self.stats.received += len(keeps)
                self._adopt(keeps)

    # -- outages: logged once each ---------------------------------------------------------------

    def _connected(self) -> None:
        now = self._clock.now()
        self.stats.connected = True
        self.catch_up.connected(now)
        if self._outage_since is None:
            log.info("cluster: sharing verdicts through %s", self.address.shown)
        else:
            log.info(
                "cluster: %s reachable again after %.1fs; %d keep(s) dropped meanwhile",
                self.address.shown,
                now - self._outage_since,
                self.outbox.dropped - self._dropped_at_outage,
            )
            self._outage_since = None

    def _lost(self, exc: BaseException) -> None:
        self.stats.errors += 1
        self.stats.connected = False
        if self._outage_since is None:
            self._outage_since = self._clock.now()
            self._dropped_at_outage = self.outbox.dropped
            self.stats.outages += 1
            log.warning(
                "cluster: %s unreachable (%s): deciding alone until it is back",
                self.address.shown,
                type(exc).__name__ if not str(exc) else str(exc)[:200],
            )
