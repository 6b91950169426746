"""Some span of the session is in error. Kinds, each also a signal name written to
`agent_sampler.signals`:

- `error`: a span with status ERROR, or an `exception` event (even with the status unset, as many
  instrumentations leave it), or `error.type` set;
- `tool_error`: that, on a tool span (`execute_tool`, OpenInference `TOOL`): a failed tool call;
- `llm_refusal`: `gen_ai.response.finish_reasons` contains `content_filter`;
- `llm_truncated`: it contains `length` (the model ran out of output tokens);
- `http_5xx`: an HTTP status of 500 or more on any span.

```yaml
error: true                           # any kind
error: false                          # none
error: {kinds: [tool_error, llm_refusal]}
```
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sampler.config.reader import Node
from sampler.rules.conditions.registry import ParseContext, condition_kind, hint_parts
from sampler.rules.facts import DecisionFacts, SpanTest
from sampler.rules.spec import Condition
from sampler.signals.errors import SIGNAL_NAMES


@dataclass(frozen=True, slots=True)
class HasError:
    kinds: int  # ErrorKind bits that count
    expected: bool = True

    def span_tests(self) -> Iterable[SpanTest]:
        return ()

    def matches(self, facts: DecisionFacts) -> bool:
        return bool(facts.error_kinds & self.kinds) == self.expected


ANY_ERROR = sum(SIGNAL_NAMES.values())
hint_parts(SIGNAL_NAMES, lambda kind: f"{{error: {{kinds: [{kind}]}}}}")


@condition_kind("error")
def parse_error(node: Node, ctx: ParseContext) -> Condition | None:
    if isinstance(node.value, bool):
        return HasError(ANY_ERROR, node.value)
    fields = ctx.mapping(node, ("kinds",), required=("kinds",))
    if fields is None:
        return None
    names = ctx.at("kinds").names(fields["kinds"], tuple(SIGNAL_NAMES), "error kind")
    if names is None:
        return None
    bits = 0
    for name in names:
        bits |= SIGNAL_NAMES[name]
    return HasError(bits)
