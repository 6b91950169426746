"""A decision about one session. Apart from lifecycle on purpose: a session's lifecycle
(buffering, decided, flushed) lives in the buffer, its verdict here."""

from __future__ import annotations

from dataclasses import dataclass

NO_RULE = "(no rule matched)"

# Attributes written to every kept span (DESIGN.md contract).
RULE_ATTRIBUTE = "agent_sampler.rule"
ADJUSTED_COUNT_ATTRIBUTE = "agent_sampler.adjusted_count"
SIGNALS_ATTRIBUTE = "agent_sampler.signals"
# Shadow mode only, on every span (dropped ones too): "keep" or "drop"; a would-drop carries
# no adjusted count (native/src/verdict.rs).
VERDICT_ATTRIBUTE = "agent_sampler.verdict"
ANNOTATION_KEYS = frozenset(
    {RULE_ATTRIBUTE, ADJUSTED_COUNT_ATTRIBUTE, SIGNALS_ATTRIBUTE, VERDICT_ATTRIBUTE}
)


@dataclass(frozen=True, slots=True)
class Verdict:
    keep: bool
    rule: str
    signals: tuple[str, ...] = ()
    adjusted_count: float = 1.0  # 1/p: how many sessions this kept one stands for
