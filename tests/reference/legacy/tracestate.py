"""The OpenTelemetry `ot` entry of the W3C tracestate: reading and writing the sampling
threshold `th`, so that backends which re-weight by it count kept spans correctly.

A threshold T (56 bits) means "kept when the trace's randomness R >= T", i.e. with probability
1 - T / 2^56. It is written as up to 14 hex digits with trailing zeros removed (`th:0` is
probability 1). Combining our keep probability with a `th` set upstream (a head sampler):
- when our decision used the same randomness as upstream (a session that is one trace, decided
  on the trace id's low 56 bits with no `rv` given), both are threshold tests on one R, and the
  combined threshold is the larger one;
- otherwise the two decisions are independent and the probabilities multiply.
"""

from __future__ import annotations

from sampler.rules.randomness import RANDOMNESS_BITS, RANDOMNESS_SPAN

_HEX_DIGITS = RANDOMNESS_BITS // 4  # 14


def format_threshold(threshold: int) -> str:
    if threshold <= 0:
        return "0"
    return f"{min(threshold, RANDOMNESS_SPAN - 1):014x}".rstrip("0")


def parse_threshold(text: str) -> int | None:
    if not 1 <= len(text) <= _HEX_DIGITS or any(c not in "0123456789abcdef" for c in text):
        return None
    return int(text.ljust(_HEX_DIGITS, "0"), 16)


def threshold_of(probability: float) -> int:
    return round((1.0 - min(1.0, max(0.0, probability))) * RANDOMNESS_SPAN)


def _split_ot(tracestate: str) -> tuple[dict[str, str], list[str]]:
    """The `ot` entry's sub-keys, and the other vendors' entries in order."""
    ot: dict[str, str] = {}
    others: list[str] = []
    for member in (m.strip() for m in tracestate.split(",")):
        if not member:
            continue
        key, _, value = member.partition("=")
        if key == "ot":
            for part in value.split(";"):
                sub, _, sub_value = part.partition(":")
                if sub:
                    ot[sub] = sub_value
        else:
            others.append(member)
    return ot, others


def upstream_threshold(tracestate: str) -> tuple[int, bool]:
    """(threshold set upstream (0 when none: probability 1), whether an explicit rv was given)."""
    ot, _ = _split_ot(tracestate)
    threshold = parse_threshold(ot.get("th", "")) if "th" in ot else 0
    return (threshold or 0), "rv" in ot


def with_probability(tracestate: str, probability: float, same_randomness: bool) -> str:
    """``tracestate`` with `ot=th:...` updated for a further keep with ``probability``; the
    `ot` entry moves to the front, as W3C asks of a modified entry."""
    ot, others = _split_ot(tracestate)
    upstream = parse_threshold(ot.get("th", "")) or 0 if "th" in ot else 0
    if same_randomness and "rv" not in ot:
        combined = max(upstream, threshold_of(probability))
    else:
        upstream_p = 1.0 - upstream / RANDOMNESS_SPAN
        combined = threshold_of(upstream_p * probability)
    ot["th"] = format_threshold(combined)
    entry = "ot=" + ";".join(f"{key}:{value}" for key, value in ot.items())
    return ",".join([entry, *others])
