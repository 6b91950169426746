"""A deterministic 56-bit random value per session.

Every replica, and `replay`, must reach the same probabilistic decision for the same session,
so the randomness comes from the session itself. Sessions keyed by trace id use the trace id's
low 56 bits, the randomness OpenTelemetry's consistent probability sampling uses, so a session
kept here is consistent with head samplers upstream; sessions keyed by an attribute hash the key.
"""

from __future__ import annotations

import hashlib

RANDOMNESS_BITS = 56
RANDOMNESS_SPAN = 1 << RANDOMNESS_BITS


def randomness_of_key(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=7).digest(), "big")


def threshold(probability: float) -> int:
    """OpenTelemetry's rejection threshold T for a keep probability: keep when R >= T."""
    return round((1.0 - probability) * RANDOMNESS_SPAN)


def keeps(randomness: int, probability: float) -> bool:
    """True for a fraction ``probability`` of uniformly distributed randomness values, by the
    same rule as OpenTelemetry's consistent probability sampling (R >= T), so a session keyed by
    trace id is kept here exactly when an upstream sampler with the same probability keeps it."""
    return randomness >= threshold(probability)
