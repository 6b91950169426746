"""Samplers sharing their keeps of conversations through a store (Redis or Valkey).

Behind a load balancer that routes by trace id, a conversation's turns land on different
samplers. Each sampler announces the conversations it keeps (session key, rule, adjusted count,
signals) and listens for the others': a part it held after a drop is kept at once, a part still
buffered is kept when decided, a later turn follows the keep. Spans never cross.

- ``shared``: the verdict as it travels, its encoding, the bounded outbox, the backoff and the
  catch-up window: pure, no I/O, time passed in;
- ``store_url``: the store's address, checked without connecting;
- ``link``: the asyncio task that talks to Redis (publish, subscribe, look up), never awaited by
  intake or deciding.
"""
