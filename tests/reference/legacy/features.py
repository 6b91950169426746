"""Session features, kept up to date span by span so that deciding costs little per session.

Bounded whatever the session: the tool-call sequence and the agent/tool structure keep their
first ``MAX_TOOL_CALLS`` / ``MAX_STRUCTURE`` entries (a loop shows long before that); counts
and sums keep counting.
"""

from __future__ import annotations

from tests.reference.legacy.spans import KIND_AGENT, KIND_LLM, KIND_TOOL, SpanFacts

MAX_TOOL_CALLS = 1024
MAX_STRUCTURE = 4096

ToolCallRecord = tuple[int, str, str]  # start_ns, tool name, arguments digest
AgentRecord = tuple[bytes, str]  # span id, agent name


class SessionFeatures:
    """Aggregates over every span of a session. Merging two gives the features of the union
    (sequences are kept in arrival order; signals sort them by start time)."""

    __slots__ = (
        "span_count", "error_spans", "error_kinds", "first_start_ns", "last_end_ns",
        "test_bits", "tokens", "tool_call_count", "tool_calls", "agents", "parents", "links",
        "root_agent", "longest_root_ns", "slowest_llm_ns",
    )  # fmt: skip

    def __init__(self) -> None:
        self.span_count = 0
        self.error_spans = 0
        self.error_kinds = 0
        self.first_start_ns = 0  # 0: no span yet
        self.last_end_ns = 0
        self.test_bits = 0
        self.tokens = 0
        self.tool_call_count = 0
        self.tool_calls: list[ToolCallRecord] = []
        self.agents: list[AgentRecord] = []
        # span id -> parent id, for agent and tool spans only: enough to see agents nested in
        # agents (directly or through agent-as-tool calls) without a map entry per span
        self.parents: dict[bytes, bytes] = {}
        self.links: dict[bytes, tuple[bytes, ...]] = {}
        self.root_agent = ""  # the agent of a trace's root span: the session's agent
        # the longest root span: the longest a user waited for one turn (a trace) to finish
        self.longest_root_ns = 0
        self.slowest_llm_ns = 0  # the slowest model call

    def observe(self, span: SpanFacts) -> None:
        self.span_count += 1
        if span.error_kinds:
            self.error_spans += 1
            self.error_kinds |= span.error_kinds
        if span.start_ns and (not self.first_start_ns or span.start_ns < self.first_start_ns):
            self.first_start_ns = span.start_ns
        if span.end_ns > self.last_end_ns:
            self.last_end_ns = span.end_ns
        self.test_bits |= span.test_bits
        self.tokens += span.tokens
        if span.is_root and span.end_ns - span.start_ns > self.longest_root_ns:
            self.longest_root_ns = span.end_ns - span.start_ns
        kind = span.kind
        if kind == KIND_LLM and span.end_ns - span.start_ns > self.slowest_llm_ns:
            self.slowest_llm_ns = span.end_ns - span.start_ns
        if kind == KIND_TOOL:
            self.tool_call_count += 1
            if len(self.tool_calls) < MAX_TOOL_CALLS:
                self.tool_calls.append((span.start_ns, span.tool_name, span.tool_args))
        elif kind == KIND_AGENT:
            if len(self.agents) < MAX_STRUCTURE:
                self.agents.append((span.span_id, span.agent_name))
            if span.is_root or not self.root_agent:
                self.root_agent = span.agent_name
        if (kind == KIND_AGENT or kind == KIND_TOOL) and len(self.parents) < MAX_STRUCTURE:
            self.parents[span.span_id] = span.parent_span_id
        if span.links and len(self.links) < MAX_STRUCTURE:
            self.links[span.span_id] = span.links

    def merge(self, other: SessionFeatures) -> None:
        self.span_count += other.span_count
        self.error_spans += other.error_spans
        self.error_kinds |= other.error_kinds
        if other.first_start_ns and (
            not self.first_start_ns or other.first_start_ns < self.first_start_ns
        ):
            self.first_start_ns = other.first_start_ns
        self.last_end_ns = max(self.last_end_ns, other.last_end_ns)
        self.test_bits |= other.test_bits
        self.tokens += other.tokens
        self.tool_call_count += other.tool_call_count
        self.tool_calls.extend(other.tool_calls[: MAX_TOOL_CALLS - len(self.tool_calls)])
        self.agents.extend(other.agents[: MAX_STRUCTURE - len(self.agents)])
        for span_id, parent in other.parents.items():
            if len(self.parents) >= MAX_STRUCTURE:
                break
            self.parents[span_id] = parent
        for span_id, linked in other.links.items():
            if len(self.links) >= MAX_STRUCTURE:
                break
            self.links[span_id] = linked
        self.root_agent = self.root_agent or other.root_agent
        self.longest_root_ns = max(self.longest_root_ns, other.longest_root_ns)
        self.slowest_llm_ns = max(self.slowest_llm_ns, other.slowest_llm_ns)

    @property
    def duration_s(self) -> float:
        if not self.first_start_ns or self.last_end_ns < self.first_start_ns:
            return 0.0
        return (self.last_end_ns - self.first_start_ns) / 1e9

    @property
    def latency_s(self) -> float:
        """The longest turn: the duration of the session's longest root span (0 without one)."""
        return self.longest_root_ns / 1e9

    @property
    def model_latency_s(self) -> float:
        """The slowest model (LLM) call of the session (0 without one)."""
        return self.slowest_llm_ns / 1e9

    def tool_path(self) -> tuple[str, ...]:
        """Tool names in start order."""
        return tuple(name for _, name, _ in sorted(self.tool_calls))
