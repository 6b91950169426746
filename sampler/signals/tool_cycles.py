"""Tool-cycle detectors: is this agent session stuck in a loop?

Pure functions of a session's collected features (no I/O, no clock, no globals), run at decision
time. Four shapes of loop are recognised:
- the same tool called with the same arguments again and again (``repeated_call``), or, when
  the instrumentation recorded no arguments, the same tool many times in a row
  (``repeated_tool``);
- a short block of tool calls repeated back to back, A-B-A-B-A-B (``tool_pattern``);
- agents nested deeper than a bound (``agent_recursion``);
- a directed cycle among span links (``link_cycle``).

Arguments are opt-in in the GenAI conventions and often absent, so two calls are treated as the
same call when their names match and their argument digests do not contradict each other: a
digest only tells calls apart when *both* have one. This keeps "search with three different
queries" from looking like a loop, while a loop of argument-less calls is still found.

Every detector is bounded: tool calls by ``max_calls_examined``, the ancestor walks and the link
search by the size of their input (each span is visited at most once), so corrupt data (a span
that is its own ancestor) cannot make them loop.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Literal

CycleKind = Literal[
    "repeated_call", "repeated_tool", "tool_pattern", "agent_recursion", "link_cycle"
]

_DESCRIBE_MAX_NAMES = 8


@dataclass(frozen=True, slots=True)
class ToolCall:
    start_ns: int
    name: str
    args_digest: str  # "" when no arguments were recorded


@dataclass(frozen=True, slots=True)
class AgentSpan:
    span_id: bytes
    parent_span_id: bytes  # b"" for a root
    name: str  # "" if unknown


@dataclass(frozen=True, slots=True)
class CycleThresholds:
    same_call_repeats: int = 3
    same_tool_repeats: int = 6
    pattern_max_period: int = 4  # 1 disables tool_pattern (period 1 is repeated_tool)
    pattern_min_repeats: int = 3
    max_agent_depth: int = 4
    max_calls_examined: int = 512

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be at least {low}, got {value}"
            for name, value, low in (
                ("same_call_repeats", self.same_call_repeats, 2),
                ("same_tool_repeats", self.same_tool_repeats, 2),
                ("pattern_max_period", self.pattern_max_period, 1),
                ("pattern_min_repeats", self.pattern_min_repeats, 2),
                ("max_agent_depth", self.max_agent_depth, 1),
                ("max_calls_examined", self.max_calls_examined, 1),
            )
            if value < low
        ]
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True, slots=True)
class CycleFinding:
    """One loop found in a session.

    ``tools`` holds tool names (agent names, outermost first, for ``agent_recursion``; hex span
    ids in cycle order for ``link_cycle``). ``period`` is the length of the repeated block (1 for
    repeated calls and tools, and for agent recursion; the cycle length for a link cycle);
    ``repeats`` how many times it repeated (the nesting depth for agent recursion).
    """

    kind: CycleKind
    tools: tuple[str, ...]
    period: int
    repeats: int

    def describe(self) -> str:
        if self.kind == "repeated_call":
            return f"{_names(self.tools)} x{self.repeats} (same arguments)"
        if self.kind == "repeated_tool":
            return f"{_names(self.tools)} x{self.repeats} in a row"
        if self.kind == "tool_pattern":
            return f"{_names(self.tools)} x{self.repeats} (period {self.period})"
        if self.kind == "agent_recursion":
            return f"agent depth {self.repeats}: {_names(self.tools, '>')}"
        return f"span link cycle: {_names(self.tools + self.tools[:1], '->')}"


def _names(names: tuple[str, ...], sep: str = ",") -> str:
    shown = [name or "?" for name in names[:_DESCRIBE_MAX_NAMES]]
    if len(names) > _DESCRIBE_MAX_NAMES:
        shown.append("...")
    return sep.join(shown)


# --- tool calls ---------------------------------------------------------------------------------


def _same_call(a: ToolCall, b: ToolCall) -> bool:
    """Same tool, and the arguments do not contradict: digests differ only when both exist."""
    if a.name != b.name:
        return False
    return not a.args_digest or not b.args_digest or a.args_digest == b.args_digest


def find_tool_cycles(calls: Sequence[ToolCall], t: CycleThresholds) -> list[CycleFinding]:
    """Repeated calls, then repeated tools, then tool patterns; each in order of first occurrence.

    Only the first ``t.max_calls_examined`` calls by start time are looked at (ties keep input
    order). The work after that is O(n * pattern_max_period).
    """
    ordered = heapq.nsmallest(t.max_calls_examined, calls, key=attrgetter("start_ns"))
    return [
        *_repeated_calls(ordered, t.same_call_repeats),
        *_repeated_tools(ordered, t.same_tool_repeats),
        *_tool_patterns(ordered, t.pattern_max_period, t.pattern_min_repeats),
    ]


def _repeated_calls(calls: Sequence[ToolCall], min_repeats: int) -> list[CycleFinding]:
    counts: dict[tuple[str, str], int] = {}  # insertion order = first occurrence
    for call in calls:
        if call.args_digest:
            key = (call.name, call.args_digest)
            counts[key] = counts.get(key, 0) + 1
    return [
        CycleFinding("repeated_call", (name,), 1, count)
        for (name, _), count in counts.items()
        if count >= min_repeats
    ]


def _repeated_tools(calls: Sequence[ToolCall], min_repeats: int) -> list[CycleFinding]:
    longest: dict[str, int] = {}  # tool -> its longest run, insertion order = first such run
    start = 0
    for end in range(1, len(calls) + 1):
        if end == len(calls) or calls[end].name != calls[start].name:
            run = end - start
            name = calls[start].name
            if run >= min_repeats:
                longest[name] = max(run, longest.get(name, 0))
            start = end
    return [CycleFinding("repeated_tool", (name,), 1, run) for name, run in longest.items()]


def _tool_patterns(
    calls: Sequence[ToolCall], max_period: int, min_repeats: int
) -> list[CycleFinding]:
    # A run of positions i with calls[i] == calls[i + p] means the window from the run's start
    # to its end + p repeats a block of p calls. Scanning each period once keeps this linear
    # in len(calls) per period.
    found: dict[tuple[tuple[str, str], ...], tuple[int, CycleFinding]] = {}
    n = len(calls)
    for period in range(2, min(max_period, n // min_repeats) + 1):
        i = 0
        while i + period < n:
            if not _same_call(calls[i], calls[i + period]):
                i += 1
                continue
            start = i
            while i + period < n and _same_call(calls[i], calls[i + period]):
                i += 1
            repeats = (i - start + period) // period
            block = calls[start : start + period]
            if repeats >= min_repeats and _is_primitive(block):
                _keep_longest(found, block, start, repeats)
    ranked = sorted(found.values(), key=lambda item: (item[0], item[1].period))
    return [finding for _, finding in ranked]


def _is_primitive(block: Sequence[ToolCall]) -> bool:
    """False when the block is itself a repetition of a shorter block (A-B-A-B, A-A)."""
    size = len(block)
    for sub in range(1, size // 2 + 1):
        if size % sub == 0 and all(_same_call(block[k], block[k + sub]) for k in range(size - sub)):
            return False
    return True


def _keep_longest(
    found: dict[tuple[tuple[str, str], ...], tuple[int, CycleFinding]],
    block: Sequence[ToolCall],
    start: int,
    repeats: int,
) -> None:
    keys = [(call.name, call.args_digest) for call in block]
    # A-B-A-B and B-A-B-A are the same loop entered at a different point.
    canonical = min(tuple(keys[k:] + keys[:k]) for k in range(len(keys)))
    previous = found.get(canonical)
    if previous is None:
        tools = tuple(call.name for call in block)
        found[canonical] = (start, CycleFinding("tool_pattern", tools, len(block), repeats))
    elif repeats > previous[1].repeats:
        first, finding = previous
        found[canonical] = (first, CycleFinding("tool_pattern", finding.tools, len(block), repeats))


# --- agent nesting ------------------------------------------------------------------------------


def agent_depth(
    agents: Sequence[AgentSpan], parents: Mapping[bytes, bytes]
) -> tuple[int, tuple[str, ...]]:
    """The longest chain of nested agents: its depth and agent names, outermost first.

    An agent's parent agent is its nearest ancestor that is itself an agent span; the spans in
    between (LLM calls, tools) are found through ``parents`` (span id -> parent id, b"" or absent
    for a root). A level is an agent reached through a call (a tool or model span in between)
    or a root agent: an agent span directly inside another agent span (LangGraph's node span
    inside its graph span, both OpenInference AGENT; a framework's wrapper span) is the same
    level, so one real agent is not counted twice. Each span is walked through at most once
    overall, and a cycle in corrupt data ends the walk where it closes. Ties go to the agent
    listed first.
    """
    by_id = {agent.span_id: agent for agent in agents}
    up = _agent_parents(by_id, parents)

    depth: dict[bytes, int] = {}
    for span_id in by_id:
        path: list[bytes] = []
        on_path: set[bytes] = set()
        cur: bytes | None = span_id
        while cur is not None and cur not in depth and cur not in on_path:
            path.append(cur)
            on_path.add(cur)
            cur = up[cur]
        level = depth[cur] if cur is not None and cur in depth else 0  # a cycle restarts at 0
        for node in reversed(path):
            if not _directly_inside_an_agent(by_id[node], by_id):
                level += 1
            depth[node] = level

    if not depth:
        return 0, ()
    deepest = max(depth, key=lambda span_id: depth[span_id])  # first of the deepest
    chain: list[str] = []
    link: bytes | None = deepest
    for _ in range(len(by_id)):  # bounded: corrupt data may loop
        if link is None or len(chain) == depth[deepest]:
            break
        if not _directly_inside_an_agent(by_id[link], by_id):
            chain.append(by_id[link].name)
        link = up[link]
    chain.reverse()
    return depth[deepest], tuple(chain)


def _directly_inside_an_agent(agent: AgentSpan, by_id: Mapping[bytes, AgentSpan]) -> bool:
    return agent.parent_span_id in by_id and agent.parent_span_id != agent.span_id


def _agent_parents(
    by_id: Mapping[bytes, AgentSpan], parents: Mapping[bytes, bytes]
) -> dict[bytes, bytes | None]:
    """Each agent's nearest agent ancestor, or None. Shares walks: O(agents + spans)."""
    nearest: dict[bytes, bytes | None] = {}  # non-agent span id -> its nearest agent ancestor
    up: dict[bytes, bytes | None] = {}
    for span_id, agent in by_id.items():
        walked: list[bytes] = []
        seen = {span_id}
        found: bytes | None = None
        cur = agent.parent_span_id
        while cur and cur not in seen:
            if cur in by_id:
                found = cur
                break
            if cur in nearest:
                found = nearest[cur]
                break
            seen.add(cur)
            walked.append(cur)
            cur = parents.get(cur, b"")
        if found == span_id:  # the agent is its own ancestor: corrupt data
            found = None
        for node in walked:
            nearest[node] = found
        up[span_id] = found
    return up


def find_agent_recursion(
    agents: Sequence[AgentSpan], parents: Mapping[bytes, bytes], t: CycleThresholds
) -> CycleFinding | None:
    depth, chain = agent_depth(agents, parents)
    if depth <= t.max_agent_depth:
        return None
    return CycleFinding("agent_recursion", chain, 1, depth)


# --- span links ---------------------------------------------------------------------------------

_GREY, _BLACK = 1, 2


def find_link_cycle(
    links: Mapping[bytes, Sequence[bytes]], *, max_edges: int = 65_536
) -> CycleFinding | None:
    """A directed cycle in the span-link graph (span id -> ids it links to), or None.

    Iterative depth-first search, so long chains cannot hit the recursion limit; it follows at
    most ``max_edges`` links and then gives up (None). Links to spans outside ``links`` are
    dead ends. The cycle is reported from its smallest span id, for stable output.
    """
    colour: dict[bytes, int] = {}
    budget = max_edges
    for root in links:
        if root in colour:
            continue
        path = [root]
        where = {root: 0}  # position of each grey span on the path
        colour[root] = _GREY
        stack = [iter(links[root])]
        while stack:
            target = next(stack[-1], None)
            if target is None:
                stack.pop()
                done = path.pop()
                del where[done]
                colour[done] = _BLACK
                continue
            budget -= 1
            if budget < 0:
                return None
            state = colour.get(target)
            if state == _GREY:
                return _link_finding(path[where[target] :])
            if state is None:
                colour[target] = _GREY
                where[target] = len(path)
                path.append(target)
                stack.append(iter(links.get(target, ())))
    return None


def _link_finding(cycle: list[bytes]) -> CycleFinding:
    first = cycle.index(min(cycle))
    ordered = cycle[first:] + cycle[:first]
    return CycleFinding("link_cycle", tuple(span_id.hex() for span_id in ordered), len(cycle), 1)


# --- all together -------------------------------------------------------------------------------


def detect_cycles(
    calls: Sequence[ToolCall],
    agents: Sequence[AgentSpan],
    parents: Mapping[bytes, bytes],
    links: Mapping[bytes, Sequence[bytes]],
    t: CycleThresholds,
) -> list[CycleFinding]:
    findings = find_tool_cycles(calls, t)
    recursion = find_agent_recursion(agents, parents, t)
    if recursion is not None:
        findings.append(recursion)
    link_cycle = find_link_cycle(links)
    if link_cycle is not None:
        findings.append(link_cycle)
    return findings
