"""``error``: some span of the session is in error.

A span is in error when its status is ERROR, when it carries an ``exception`` event (even with
the status unset, as many instrumentations leave it), or when ``error.type`` is set.

    error: true     # sessions with an error
    error: false    # sessions without
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sampler.config.reader import Node
from sampler.rules.conditions.registry import ParseContext, condition_kind
from sampler.rules.facts import DecisionFacts, SpanTest
from sampler.rules.spec import Condition


@dataclass(frozen=True, slots=True)
class HasError:
    expected: bool

    def span_tests(self) -> Iterable[SpanTest]:
        return ()

    def matches(self, facts: DecisionFacts) -> bool:
        return (facts.error_spans > 0) == self.expected


@condition_kind("error")
def parse_error(node: Node, ctx: ParseContext) -> Condition | None:
    expected = ctx.boolean(node)
    return HasError(expected) if expected is not None else None
