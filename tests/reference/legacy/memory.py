"""How much memory buffered spans hold, as the buffer's limits and stress relief count it."""

from __future__ import annotations

# Memory a buffered span holds beyond its serialized bytes, as the limits count it: its size
# prefix in the block's run, its share of the session's features, maps and timer entry.
# Measured (resident growth per buffered span minus its serialized size): 140-190 bytes in
# process, keyed conversations and lone traces (docs/architecture.md), about 200 with the
# throughput benchmark. The rest is headroom for what the allocator keeps of freed memory,
# which grows with what passes through (the flood test in docs/operations.md).
SPAN_OVERHEAD_BYTES = 360


def memory_of(spans: int, span_bytes: int) -> int:
    """Estimated resident memory of ``spans`` buffered spans of ``span_bytes`` serialized bytes."""
    return span_bytes + SPAN_OVERHEAD_BYTES * spans
