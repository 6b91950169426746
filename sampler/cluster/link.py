"""The cluster's I/O: one asyncio task that keeps a connection to the store and, once a tick,
publishes the keeps waiting in the outbox; a second that listens on the channel. Nothing else
waits on them: the pipeline only appends to the outbox (``kept``), and peers' keeps are handed
to ``Pipeline.adopt`` on the event loop's thread.

A tick with keeps to announce costs one round trip: one script (``PUBLISH_KEEPS``, run by its
digest) that does a ``SET key value EX ttl`` for each keep and one ``PUBLISH`` of the batch; a
tick without costs nothing. One command rather than a pipeline of them: the client's work per
command is what the sampler pays for, and it paid 4% of its rate for a pipeline. After each
(re)connection, once subscribed, the keeps stored while this sampler was not listening are read
(``CatchUp``: a ``SCAN`` step and a ``MGET`` in the same round trips, a batch a tick) and
adopted as if heard; then nothing is read again until the next reconnection.

With the store unreachable or slow, the round trip fails or times out
(``cluster.redis.timeout``): the batch goes back to the outbox (bounded: oldest dropped,
counted), the connection is dropped and made again with backoff, and the samplers decide alone
meanwhile; a write refused (the store is full) is counted, and the announcement still goes.
One warning when an outage begins, one line when it ends; a connection made again within
``OUTAGE_GRACE_S`` is no outage (counted in the errors, logged at debug).
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
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError, ResponseError

from sampler.clock import Clock
from sampler.cluster.shared import (
    Backoff,
    CatchUp,
    ClusterStats,
    Outbox,
    SharedKeep,
    batch_origin,
    decode_batch,
    decode_value,
    encode_batch,
    encode_value,
)
from sampler.config.model import ClusterConfig, SessionsConfig
from sampler.config.store_url import parse_store_url
from sampler.rules.verdict import Verdict

log = logging.getLogger(__name__)

# Most keeps published in one tick's round trip, and most keys read or scanned in one.
MAX_BATCH = 1000
MAX_READ = 1000
LISTEN_POLL_S = 1.0
STOP_FLUSH_S = 1.0  # at shutdown, what is left in the outbox gets this long
OUTAGE_GRACE_S = 1.0  # a connection made again within this long was no outage (not logged)

Adopt = Callable[[Iterable[SharedKeep]], int]

# KEYS: the keeps' keys; ARGV: ttl, channel, message, then the keeps' values. A write refused
# (the store is full) is counted and the rest goes on: the announcement is what matters most.
PUBLISH_KEEPS = """
local refused = 0
for i, key in ipairs(KEYS) do
  local reply = redis.pcall('SET', key, ARGV[i + 3], 'EX', ARGV[1])
  if type(reply) == 'table' and reply.err then refused = refused + 1 end
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return refused
"""


class ClusterLink:
    """Implements ``VerdictSharing`` for the pipeline, and talks to the store."""

    def __init__(
        self,
        config: ClusterConfig,
        sessions: SessionsConfig,
        adopt: Adopt,
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
        self._origin_bytes = self.origin.encode()
        self.stats = ClusterStats()
        self.outbox = Outbox(config.max_pending)
        self.catch_up = CatchUp()
        self.backoff = Backoff()
        self._adopt, self._clock, self._tick_s = adopt, clock, tick_s
        self._rng = rng or random.Random()
        self._registered: tuple[aioredis.Redis, AsyncScript] | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: aioredis.Redis | None = None
        self._first_connection = True
        self._lost_at: float | None = None  # since when the store has not answered
        self._outage_logged = False
        self._dropped_at_loss = 0

    # -- what the pipeline calls: synchronous, O(1) ----------------------------------------------

    def kept(self, key: str, verdict: Verdict) -> None:
        self.outbox.offer(SharedKeep.of(key, verdict, self.origin))

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
                        await self._round_trip(client, catch_up=False)
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
                # subscribed first, then caught up: a keep published in between is heard
                self.catch_up.begin()
                self._connected()
                attempt = 0
                listener = asyncio.create_task(self._listen(pubsub), name="cluster-listen")
                while True:
                    await asyncio.sleep(self._tick_s)
                    if listener.done():
                        listener.result()  # raises what stopped it
                        raise ConnectionError("the channel closed")
                    while await self._round_trip(client, catch_up=True):
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
            wait = self.backoff.wait(attempt, self._rng)
            if self._lost_at is not None and not self._outage_logged:
                # an attempt at the end of the grace, so that an outage is logged when it is one
                grace_left = self._lost_at + OUTAGE_GRACE_S - self._clock.now()
                wait = min(wait, max(grace_left, 0.0) + 0.01)
            await asyncio.sleep(wait)

    async def _round_trip(self, client: aioredis.Redis, *, catch_up: bool) -> bool:
        """Publishes up to a batch of keeps (one command), then takes a step of the catch-up
        if one is under way; True when more keeps are waiting. On failure what was taken goes
        back (the catch-up starts over with the next connection), and the error is raised."""
        batch = self.outbox.take(MAX_BATCH)
        if batch:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self._publish(client, batch)
            except BaseException:
                self.outbox.put_back(batch)
                raise
        if catch_up and not self.catch_up.done:
            await self._catch_up_step(client)
        return bool(self.outbox)

    async def _publish(self, client: aioredis.Redis, batch: list[SharedKeep]) -> None:
        message = encode_batch(self.origin, batch)
        keys = [self.key_prefix + keep.key for keep in batch]
        values = [encode_value(keep) for keep in batch]
        script = self._script(client)
        try:
            refused = await script(keys=keys, args=[self.ttl_s, self.channel, message, *values])
        except ResponseError:  # the script refused as a whole (a full store): announce anyway
            self.stats.errors += 1
            await client.publish(self.channel, message)
        else:
            self.stats.errors += int(refused)
        self.stats.published += len(batch)

    def _script(self, client: aioredis.Redis) -> AsyncScript:
        if self._registered is None or self._registered[0] is not client:
            self._registered = (client, client.register_script(PUBLISH_KEEPS))
        return self._registered[1]

    async def _catch_up_step(self, client: aioredis.Redis) -> None:
        scan = self.catch_up.next_scan()
        reads = self.catch_up.take(MAX_READ)
        pipe = client.pipeline(transaction=False)
        if reads:
            pipe.mget([self.key_prefix + key for key in reads])
        if scan is not None:
            pipe.scan(scan, match=f"{self.key_prefix}*", count=MAX_READ)
        async with asyncio.timeout(self.timeout_s):
            results = await pipe.execute(raise_on_error=False)
        if reads:
            self._found(reads, results[0])
        if scan is not None:
            self._scanned(results[-1])

    def _scanned(self, result: object) -> None:
        if isinstance(result, Exception):
            raise result
        if not isinstance(result, tuple | list) or len(result) != 2:
            raise ValueError(f"SCAN answered {type(result).__name__}")
        cursor, keys = result
        prefix = len(self.key_prefix)
        found = []
        for raw in keys:
            try:
                found.append(raw.decode()[prefix:])
            except UnicodeDecodeError:
                self.stats.errors += 1
        self.catch_up.scanned(int(cursor), found)

    def _found(self, keys: list[str], values: object) -> None:
        if isinstance(values, Exception):
            raise values
        assert isinstance(values, list)
        self.stats.caught_up += len(keys)
        keeps = []
        for key, value in zip(keys, values, strict=True):
            if value is None:
                continue  # expired since it was scanned
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
            data = message["data"]
            if batch_origin(data) == self._origin_bytes:
                continue  # our own, passed over unread
            try:
                keeps = decode_batch(data)
            except (ValueError, TypeError):
                self.stats.errors += 1
                continue
            if keeps:
                self.stats.received += len(keeps)
                self._adopt(keeps)

    # -- outages: logged once each ---------------------------------------------------------------
    # A connection lost and made again within OUTAGE_GRACE_S (a round trip slower than the
    # timeout on a loaded machine, a server restarted at once) is a blip: counted in errors,
    # logged at debug. Longer, it is an outage: one warning, then one line when it ends.

    def _connected(self) -> None:
        now = self._clock.now()
        self.stats.connected = True
        if self._outage_logged:
            log.info(
                "cluster: %s reachable again after %.1fs; %d keep(s) dropped meanwhile",
                self.address.shown,
                now - (self._lost_at or now),
                self.outbox.dropped - self._dropped_at_loss,
            )
        if self._first_connection:
            self._first_connection = False
            log.info("cluster: sharing verdicts through %s", self.address.shown)
        elif not self._outage_logged:
            log.debug("cluster: reconnected to %s", self.address.shown)
        self._lost_at, self._outage_logged = None, False

    def _lost(self, exc: BaseException) -> None:
        now = self._clock.now()
        self.stats.errors += 1
        self.stats.connected = False
        if self._lost_at is None:
            self._lost_at = now
            self._dropped_at_loss = self.outbox.dropped
        if not self._outage_logged and now - self._lost_at >= OUTAGE_GRACE_S:
            self._outage_logged = True
            self.stats.outages += 1
            log.warning(
                "cluster: %s unreachable (%s): deciding alone until it is back",
                self.address.shown,
                type(exc).__name__ if not str(exc) else str(exc)[:200],
            )
        else:
            log.debug("cluster: connection to %s lost (%r)", self.address.shown, exc)
