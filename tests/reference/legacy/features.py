"""Session features, kept up to date span by span so that deciding costs little per session.

Bounded whatever the session: the tool-call sequence and the agent/tool structure keep their
first ``MAX_TOOL_CALLS`` / ``MAX_STRUCTURE`` entries (a loop shows long before that); counts
and sums keep counting.
"""

from __future__ import annotations

from collections import Counter

from tests.reference.legacy.spans import KIND_AGENT, KIND_LLM, KIND_TOOL, SpanFacts

MAX_TOOL_CALLS = 1024
MAX_STRUCTURE = 4096

# One tool call: (start_ns, tool name, arguments digest, turn, failed, end_ns).
# - turn: the index of the call's trace in its session's ``Session.trace_ids`` (the traces in
#   the order the buffer first saw a span of them; a provisional session joining a keyed one
#   appends its traces after the keyed session's). A trace is a turn: detectors compare calls
#   within a turn, and whole turns with one another.
# - failed: the tool span carried an error kind (``SpanFacts.error_kinds`` non-zero).
# - end_ns: the tool span's end time as received (a duration is end_ns - start_ns, 0 if less).
ToolCallRecord = tuple[int, str, str, int, bool, int]
AgentRecord = tuple[bytes, str]  # span id, agent name


class SessionFeatures:
    """Aggregates over every span of a session. Merging two gives the features of the union
    (sequences are kept in arrival order; signals sort them by start time)."""

    __slots__ = (
        "span_count", "error_spans", "error_kinds", "first_start_ns", "last_end_ns",
        "test_bits", "tokens", "tool_call_count", "tool_calls", "agents", "parents", "links",
        "root_agent", "longest_root_ns", "slowest_llm_ns", "model_starts", "model_ns", "turn_ns",
        "linking",
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
        # span id -> parent id, for agent and tool spans, and for any other span that is the
        # parent of one already there (a span ends, so arrives, after its children): enough to
        # see agents nested in agents, directly, through agent-as-tool calls, or through the
        # spans a framework puts between an agent and its tools (LangGraph's `tools` CHAIN),
        # without a map entry per span
        self.parents: dict[bytes, bytes] = {}
        self.linking: set[bytes] = set()  # the parent ids in ``parents``
        self.links: dict[bytes, tuple[bytes, ...]] = {}
        self.root_agent = ""  # the agent of a trace's root span: the session's agent
        # the longest root span: the longest a user waited for one turn (a trace) to finish
        self.longest_root_ns = 0
        self.slowest_llm_ns = 0  # the slowest model call
        # start times of the first MAX_TOOL_CALLS model (LLM) calls, in arrival order: tool calls
        # with no model call started between them were made on one model decision
        self.model_starts: list[int] = []
        # their durations (end - start, 0 if negative), index for index with model_starts
        self.model_ns: list[int] = []
        # the duration (end - start, 0 if negative) of each root span, i.e. of each turn, in
        # arrival order (the first MAX_TOOL_CALLS): rarity learns what one turn takes
        self.turn_ns: list[int] = []

    def observe(self, span: SpanFacts, turn: int = 0) -> None:
        """``turn``: for a tool span, the index of its trace in the session (ToolCallRecord)."""
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
        if span.is_root:
            if span.end_ns - span.start_ns > self.longest_root_ns:
                self.longest_root_ns = span.end_ns - span.start_ns
            if len(self.turn_ns) < MAX_TOOL_CALLS:
                self.turn_ns.append(max(0, span.end_ns - span.start_ns))
        kind = span.kind
        if kind == KIND_LLM:
            if span.end_ns - span.start_ns > self.slowest_llm_ns:
                self.slowest_llm_ns = span.end_ns - span.start_ns
            if len(self.model_starts) < MAX_TOOL_CALLS:
                self.model_starts.append(span.start_ns)
                self.model_ns.append(max(0, span.end_ns - span.start_ns))
        if kind == KIND_TOOL:
            self.tool_call_count += 1
            if len(self.tool_calls) < MAX_TOOL_CALLS:
                self.tool_calls.append(
                    (
                        span.start_ns,
                        span.tool_name,
                        span.tool_args,
                        turn,
                        bool(span.error_kinds),
                        span.end_ns,
                    )
                )
        elif kind == KIND_AGENT:
            if len(self.agents) < MAX_STRUCTURE:
                self.agents.append((span.span_id, span.agent_name))
            if span.is_root or not self.root_agent:
                self.root_agent = span.agent_name
        if len(self.parents) < MAX_STRUCTURE and (
            kind == KIND_AGENT or kind == KIND_TOOL or span.span_id in self.linking
        ):
            self.parents[span.span_id] = span.parent_span_id
            self.linking.add(span.parent_span_id)
        if span.links and len(self.links) < MAX_STRUCTURE:
            self.links[span.span_id] = span.links

    def merge(self, other: SessionFeatures, turn_offset: int = 0) -> None:
        """``turn_offset``: how many traces this session held before ``other``'s were appended
        (``other``'s tool calls count their turns from 0)."""
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
        self.tool_calls.extend(
            (start, name, digest, turn + turn_offset, failed, end)
            for start, name, digest, turn, failed, end in other.tool_calls[
                : MAX_TOOL_CALLS - len(self.tool_calls)
            ]
        )
        room = MAX_TOOL_CALLS - len(self.model_starts)
        self.model_starts.extend(other.model_starts[:room])
        self.model_ns.extend(other.model_ns[:room])
        self.turn_ns.extend(other.turn_ns[: MAX_TOOL_CALLS - len(self.turn_ns)])
        self.agents.extend(other.agents[: MAX_STRUCTURE - len(self.agents)])
        for span_id, parent in other.parents.items():
            if len(self.parents) >= MAX_STRUCTURE:
                break
            self.parents[span_id] = parent
            self.linking.add(parent)
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
        return tuple(call[1] for call in sorted(self.tool_calls))

    # What the native SessionView computes from these (sampler/_native.pyi).

    @property
    def turn_latencies(self) -> list[float]:
        return [ns / 1e9 for ns in self.turn_ns]

    @property
    def turns_ended(self) -> int:
        return len(self.turn_ns)

    @property
    def tool_repeats_in_a_turn(self) -> int:
        counts = Counter((call[3], call[1]) for call in self.tool_calls)
        return max(counts.values(), default=0)

    @property
    def turns_with_tool_calls(self) -> int:
        return len({call[3] for call in self.tool_calls})

    @property
    def agent_count(self) -> int:
        return len(self.agents)

    @property
    def model_pace_s(self) -> float:
        return _lower_median(self.model_ns) / 1e9

    @property
    def tool_pace_s(self) -> float:
        return _lower_median([max(0, call[5] - call[0]) for call in self.tool_calls]) / 1e9


def _lower_median(values: list[int]) -> int:
    """The median, the lower middle one of an even count; 0 for none."""
    return sorted(values)[(len(values) - 1) // 2] if values else 0
