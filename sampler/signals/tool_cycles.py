"""Tool-cycle detectors: is this agent session stuck in a loop?

Pure functions of a session's collected features (no I/O, no clock, no globals), run at decision
time. These shapes of loop are recognised:
- the same tool called with the same arguments again and again (``repeated_call``), or, when
  the instrumentation recorded no arguments, the same tool many times in a row
  (``repeated_tool``);
- a short block of tool calls repeated back to back, A-B-A-B-A-B (``tool_pattern``);
- whole turns repeated: the same calls with the same arguments in several turns in a row, so
  that the turns are retries of one another (``repeated_turn``);
- agents nested deeper than a bound (``agent_recursion``);
- a directed cycle among span links (``link_cycle``).

What is *not* a loop, and why the detectors look the way they do:
- **A turn is a trace**, one answer to one user message. A conversation whose every turn runs
  its agent's workflow (lookup, search, reply; then again for the next message) repeats calls
  across turns, and that is no loop: the first three detectors look within one turn at a time.
  Across turns only ``repeated_turn`` looks, and it needs turns that nothing tells apart: every
  call with recorded arguments, the same calls with the same arguments, ``same_turn_repeats``
  turns in a row. A turn whose calls differ in any argument, or that recorded no arguments,
  never makes a cross-turn loop.
- **A loop is the model deciding the same thing again.** Tool calls with no model call started
  between them were made on one decision: a fan-out over a list (parallel or one after the
  other), a framework's retry, polling done by the tool's code. They are one *step*, and steps,
  not calls, are what repeat (identical calls within one step count once). A session with no
  model call at all (instrumentation without model spans) has a step per call.
- **Arguments that advance are progress**: pagination and fan-out call one tool with different
  arguments. Two calls are the same call when their names match and their argument digests do
  not contradict each other (a digest only tells calls apart when *both* have one), so a run of
  one tool (``repeated_tool``) ends where recorded arguments change; a loop of argument-less
  calls is still found.
- **A retry that succeeds is not a repeat**: a failed call counts towards ``repeated_call`` only
  if no later attempt of the same call in the turn succeeded (a call retried until it fails for
  good still counts every attempt).

Every detector is bounded: tool calls by ``max_calls_examined``, the ancestor walks and the link
search by the size of their input (each span is visited at most once), so corrupt data (a span
that is its own ancestor) cannot make them loop.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Literal

from sampler.config.model import SignalsConfig, ToolCyclesConfig
from sampler.signals.registry import Scored, Session, SignalKind, signal_kind

CycleKind = Literal[
    "repeated_call",
    "repeated_tool",
    "tool_pattern",
    "repeated_turn",
    "agent_recursion",
    "link_cycle",
]

_DESCRIBE_MAX_NAMES = 8


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call (``SessionView.tool_calls`` in ``sampler/_native.pyi`` defines the fields)."""

    start_ns: int
    name: str
    args_digest: str  # "" when no arguments were recorded
    turn: int = 0  # which trace of the session it was made in
    failed: bool = False  # the tool span carried an error


@dataclass(frozen=True, slots=True)
class AgentSpan:
    span_id: bytes
    parent_span_id: bytes  # b"" for a root
    name: str  # "" if unknown


_CONFIG = ToolCyclesConfig()  # the defaults are the config's: one source of truth


@dataclass(frozen=True, slots=True)
class CycleThresholds:
    same_call_repeats: int = _CONFIG.same_call_repeats
    same_tool_repeats: int = _CONFIG.same_tool_repeats
    # 1 disables tool_pattern (period 1 is repeated_tool)
    pattern_max_period: int = _CONFIG.pattern_max_period
    pattern_min_repeats: int = _CONFIG.pattern_min_repeats
    same_turn_repeats: int = _CONFIG.same_turn_repeats
    max_agent_depth: int = _CONFIG.max_agent_depth
    max_calls_examined: int = 512

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be at least {low}, got {value}"
            for name, value, low in (
                ("same_call_repeats", self.same_call_repeats, 2),
                ("same_tool_repeats", self.same_tool_repeats, 2),
                ("pattern_max_period", self.pattern_max_period, 1),
                ("pattern_min_repeats", self.pattern_min_repeats, 2),
                ("same_turn_repeats", self.same_turn_repeats, 2),
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

    ``tools`` holds tool names (for ``repeated_turn``, the calls of the repeated turn; agent
    names, outermost first, for ``agent_recursion``; hex span ids in cycle order for
    ``link_cycle``). ``period`` is the length of the repeated block (1 for repeated calls and
    tools, and for agent recursion; the steps of the turn for a repeated turn; the cycle length
    for a link cycle); ``repeats`` how many times it repeated (the nesting depth for agent
    recursion).
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
        if self.kind == "repeated_turn":
            return f"{_names(self.tools)}: the same calls in {self.repeats} turns in a row"
        if self.kind == "agent_recursion":
            return f"agent depth {self.repeats}: {_names(self.tools, '>')}"
        return f"span link cycle: {_names(self.tools + self.tools[:1], '->')}"


def _names(names: tuple[str, ...], sep: str = ",") -> str:
    shown = [name or "?" for name in names[:_DESCRIBE_MAX_NAMES]]
    if len(names) > _DESCRIBE_MAX_NAMES:
        shown.append("...")
    return sep.join(shown)


# --- tool calls ---------------------------------------------------------------------------------

CallKey = tuple[str, str]  # tool name, arguments digest


def _same_call(a: ToolCall, b: ToolCall) -> bool:
    """Same tool, and the arguments do not contradict: digests differ only when both exist."""
    if a.name != b.name:
        return False
    return not a.args_digest or not b.args_digest or a.args_digest == b.args_digest


@dataclass(frozen=True, slots=True)
class _Step:
    """The tool calls of one model decision within a turn: ``calls`` holds each distinct call
    (name, digest) once, in order of first start, with ``failed`` when every attempt of it in
    the step failed. ``decision`` stands for the whole step where steps are compared: the call
    itself when the step made one distinct call, else a composite of its calls."""

    calls: tuple[ToolCall, ...]
    decision: ToolCall


def _steps(calls: Sequence[ToolCall], model_starts: Sequence[int]) -> list[_Step]:
    """``calls`` (one turn, in start order) grouped by the number of model calls started
    before each; with no model calls known, every call is a step of its own."""
    groups: list[list[ToolCall]] = []
    previous = -1
    for call in calls:
        step = bisect.bisect_right(model_starts, call.start_ns) if model_starts else len(groups)
        if step != previous or not groups:
            groups.append([])
            previous = step
        groups[-1].append(call)
    return [_step(group) for group in groups]


def _step(group: Sequence[ToolCall]) -> _Step:
    if len(group) == 1:  # most steps: one call on one model decision
        return _Step((group[0],), group[0])
    distinct: dict[CallKey, ToolCall] = {}
    for call in group:
        key = (call.name, call.args_digest)
        seen = distinct.get(key)
        if seen is None or (seen.failed and not call.failed):  # one success makes it succeed
            distinct[key] = call
    calls = tuple(distinct.values())
    if len(calls) == 1:
        return _Step(calls, calls[0])
    keys = sorted(distinct)
    digest = "|".join(d for _, d in keys) if all(d for _, d in keys) else ""
    composite = ToolCall(calls[0].start_ns, "+".join(n for n, _ in keys), digest, calls[0].turn)
    return _Step(calls, composite)


def find_tool_cycles(
    calls: Sequence[ToolCall], t: CycleThresholds, model_starts: Iterable[int] = ()
) -> list[CycleFinding]:
    """Repeated calls, then repeated tools, then tool patterns (each within a turn), then
    repeated turns; each in order of first occurrence, a loop found in several turns once
    (with its most repeats).

    Only the first ``t.max_calls_examined`` calls by start time are looked at (ties keep input
    order). ``model_starts``: the start times of the session's model calls, which divide a
    turn's calls into steps. The work after that is O(n * pattern_max_period + n log m).
    """
    ordered = heapq.nsmallest(t.max_calls_examined, calls, key=attrgetter("start_ns"))
    starts = sorted(model_starts)
    turns: dict[int, list[ToolCall]] = {}  # insertion order: by each turn's first call
    for call in ordered:
        turns.setdefault(call.turn, []).append(call)
    by_turn = [_steps(turn_calls, starts) for turn_calls in turns.values()]
    found: dict[tuple[object, ...], CycleFinding] = {}
    for steps in by_turn:
        for key, finding in _repeated_calls(steps, t.same_call_repeats):
            _keep_most(found, ("call", *key), finding)
    for steps in by_turn:
        decisions = [step.decision for step in steps]
        for name, finding in _repeated_tools(decisions, t.same_tool_repeats):
            _keep_most(found, ("tool", name), finding)
    for steps in by_turn:
        decisions = [step.decision for step in steps]
        for canonical, finding in _tool_patterns(
            decisions, t.pattern_max_period, t.pattern_min_repeats
        ):
            _keep_most(found, ("pattern", canonical), finding)
    findings = list(found.values())
    findings.extend(_repeated_turns(by_turn, t.same_turn_repeats))
    return findings


def _keep_most(
    found: dict[tuple[object, ...], CycleFinding], key: tuple[object, ...], finding: CycleFinding
) -> None:
    """The first occurrence keeps its place; the most repeats found anywhere are reported."""
    previous = found.get(key)
    if previous is None:
        found[key] = finding
    elif finding.repeats > previous.repeats:
        found[key] = CycleFinding(previous.kind, previous.tools, previous.period, finding.repeats)


def _repeated_calls(steps: Sequence[_Step], min_repeats: int) -> list[tuple[CallKey, CycleFinding]]:
    # per call, in order of first occurrence: how many steps made it, and which of them failed
    attempts: dict[CallKey, list[bool]] = {}
    for step in steps:
        for call in step.calls:
            if call.args_digest:
                attempts.setdefault((call.name, call.args_digest), []).append(call.failed)
    found = []
    for key, failed in attempts.items():
        # a failed attempt followed by a success of the same call was retried: it does not count
        last_success = max((i for i, f in enumerate(failed) if not f), default=-1)
        count = failed.count(False) + sum(failed[last_success + 1 :])
        if count >= min_repeats:
            found.append((key, CycleFinding("repeated_call", (key[0],), 1, count)))
    return found


def _repeated_tools(
    decisions: Sequence[ToolCall], min_repeats: int
) -> list[tuple[str, CycleFinding]]:
    longest: dict[str, int] = {}  # tool -> its longest run, insertion order = first such run
    start, digest = 0, ""
    for end in range(1, len(decisions) + 1):
        current = decisions[end - 1]
        digest = digest or current.args_digest
        following = decisions[end] if end < len(decisions) else None
        if (
            following is not None
            and following.name == current.name
            and (not digest or not following.args_digest or following.args_digest == digest)
        ):
            continue  # the run goes on: same tool, arguments not contradicting the run's
        run = end - start
        if run >= min_repeats:
            longest[current.name] = max(run, longest.get(current.name, 0))
        start, digest = end, ""
    return [(name, CycleFinding("repeated_tool", (name,), 1, run)) for name, run in longest.items()]


def _tool_patterns(
    calls: Sequence[ToolCall], max_period: int, min_repeats: int
) -> list[tuple[tuple[CallKey, ...], CycleFinding]]:
    # A run of positions i with calls[i] == calls[i + p] means the window from the run's start
    # to its end + p repeats a block of p calls. Scanning each period once keeps this linear
    # in len(calls) per period.
    found: dict[tuple[CallKey, ...], tuple[int, CycleFinding]] = {}
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
    ranked = sorted(found.items(), key=lambda item: (item[1][0], item[1][1].period))
    return [(canonical, finding) for canonical, (_, finding) in ranked]


def _is_primitive(block: Sequence[ToolCall]) -> bool:
    """False when the block is itself a repetition of a shorter block (A-B-A-B, A-A)."""
    size = len(block)
    for sub in range(1, size // 2 + 1):
        if size % sub == 0 and all(_same_call(block[k], block[k + sub]) for k in range(size - sub)):
            return False
    return True


def _keep_longest(
    found: dict[tuple[CallKey, ...], tuple[int, CycleFinding]],
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


def _keys(calls: Sequence[ToolCall]) -> list[CallKey]:
    return [(call.name, call.args_digest) for call in calls]


def _repeated_turns(by_turn: Sequence[Sequence[_Step]], min_repeats: int) -> list[CycleFinding]:
    """Runs of consecutive turns (those that called tools, in order of their first call) whose
    steps are the same calls with the same recorded arguments; every call must have some."""
    found: dict[tuple[object, ...], CycleFinding] = {}
    previous: tuple[CallKey, ...] | None = None
    run = 0
    for steps in [*by_turn, ()]:
        calls = [call for step in steps for call in step.calls]
        # a step's calls in any order (a parallel fan-out starts them in no set order)
        signature = (
            tuple(call for step in steps for call in sorted(_keys(step.calls)))
            if calls and all(call.args_digest for call in calls)
            else None
        )
        if signature is not None and signature == previous:
            run += 1
            continue
        if previous is not None and run >= min_repeats:
            tools = tuple(name for name, _ in previous)
            finding = CycleFinding("repeated_turn", tools, len(previous), run)
            _keep_most(found, previous, finding)
        previous, run = signature, 1
    return list(found.values())


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
    model_starts: Iterable[int] = (),
) -> list[CycleFinding]:
    findings = find_tool_cycles(calls, t, model_starts)
    recursion = find_agent_recursion(agents, parents, t)
    if recursion is not None:
        findings.append(recursion)
    link_cycle = find_link_cycle(links)
    if link_cycle is not None:
        findings.append(link_cycle)
    return findings


# --- the signal kind ----------------------------------------------------------------------------

TOOL_CYCLE = "tool_cycle"


class ToolCycleSignal:
    """The `tool_cycle` signal: the session's agent loops (its findings' kinds and details go
    to the rules and the logs)."""

    names = (TOOL_CYCLE,)

    def __init__(self, thresholds: CycleThresholds) -> None:
        self.thresholds = t = thresholds
        # the fewest calls of one tool in one turn that a tool detector can fire on: a
        # repeated call or tool is that many calls of it, a repeating pattern that many of each
        # of its tools (find_tool_cycles)
        self._fewest_repeats = min(
            t.same_call_repeats,
            t.same_tool_repeats,
            t.pattern_min_repeats if t.pattern_max_period >= 2 else t.same_tool_repeats,
        )

    def score(self, session: Session, scored: Scored) -> None:
        findings = self.findings(session)
        if not findings:  # most sessions: Scored's empty defaults stand
            return
        scored.signals.append(TOOL_CYCLE)
        scored.cycle_kinds = frozenset(f.kind for f in findings)
        scored.cycle_details = tuple(f.describe() for f in findings)

    def flush(self) -> None:
        pass

    def findings(self, session: Session) -> list[CycleFinding]:
        """``detect_cycles``, skipping what the native aggregates say cannot fire: a session
        whose turns call no tool as often as the fewest repeats any tool detector needs, in
        fewer turns than a repeated turn needs, has no tool loop; one with no more agent spans
        than ``max_agent_depth`` no recursion (most sessions: their calls are then not copied
        into Python objects at all)."""
        t, features = self.thresholds, session.features
        findings: list[CycleFinding] = []
        if (
            features.tool_repeats_in_a_turn >= self._fewest_repeats
            or features.turns_with_tool_calls >= t.same_turn_repeats
        ):
            calls = [
                ToolCall(start, name, digest, turn, failed)
                for start, name, digest, turn, failed, _ in features.tool_calls
            ]
            findings.extend(find_tool_cycles(calls, t, features.model_starts))
        if features.agent_count > t.max_agent_depth:
            parents = features.parents
            agents = [
                AgentSpan(span_id, parents.get(span_id, b""), name)
                for span_id, name in features.agents
            ]
            recursion = find_agent_recursion(agents, parents, t)
            if recursion is not None:
                findings.append(recursion)
        links = features.links
        link_cycle = find_link_cycle(links) if links else None  # most sessions link nothing
        if link_cycle is not None:
            findings.append(link_cycle)
        return findings


@signal_kind("tool_cycles", order=20)
def _tool_cycles(config: SignalsConfig) -> SignalKind:
    # each key of signals.tool_cycles is the threshold of the same name
    c = config.tool_cycles
    return ToolCycleSignal(
        CycleThresholds(**{f.name: getattr(c, f.name) for f in dataclasses.fields(c)})
    )
