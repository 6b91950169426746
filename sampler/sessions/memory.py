"""How much memory buffered spans hold, as the buffer's limits and stress relief count it."""

from __future__ import annotations

# Memory a buffered span holds beyond its serialized bytes: the bytes object's header, its slot
# in a block list, its share of the session's features and maps. Measured with the throughput
# benchmark (resident growth per buffered span minus its serialized size: about 350 bytes).
SPAN_OVERHEAD_BYTES = 360


def memory_of(spans: int, span_bytes: int) -> int:
    """Estimated resident memory of ``spans`` buffered spans of ``span_bytes`` serialized bytes."""
    return span_bytes + SPAN_OVERHEAD_BYTES * spans
