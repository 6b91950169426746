"""Some span of the session is in error: its status is ERROR, or it carries an `exception`
event (even with the status unset, as many instrumentations leave it), or `error.type` is set.

```yaml
error: true     # sessions with an error
error: false    # sessions without
```
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
