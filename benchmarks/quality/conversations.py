"""A third traffic profile, written apart from ``generator.py``: long conversations in which
every turn repeats its agent's workflow.

``generate(TrafficSpec(seed=..., sessions=...))`` returns a :class:`Corpus` (only the spec's
seed and session count are read). It is the shape of issue 12: an on-call engineer's usual
traffic, where a review bot runs diff -> files -> checks -> lint -> review for every message,
a helpdesk agent looks the customer up and searches the help centre for every question, and so
on, for 1 to 12 turns. Nothing in it is a loop unless labelled ``tool_loop``.

How it differs from the other two profiles, on purpose:

* **Five other agents** (``pr-reviewer``, ``helpdesk``, ``analyst``, ``trip-planner``,
  ``oncall``), each with a per-turn workflow of model *decisions*; a decision makes one tool
  call or several (a fan-out in parallel, a poll run by the framework).
* **Legitimate iteration** in ordinary sessions: fan-out over a list (parallel calls in one
  decision, or one decision per item with distinct arguments), pagination (page numbers or
  cursors that advance; without recorded arguments too), polling a job (by the workflow's
  code, several status calls in one decision; or by the model, at most twice, the job done on
  the last), a soft retry (a tool answered "try again" without failing: the same call twice).
  Labelled ``tool_error`` sessions retry the failed call, which then succeeds.
* **Instrumentation** per session: OpenTelemetry GenAI with ``gen_ai.tool.call.arguments``,
  GenAI without arguments (they are opt-in), or OpenInference (LangGraph-like: a graph AGENT
  root, an ``agent`` node span per model step, TOOL spans under a ``tools`` CHAIN, arguments
  in ``input.value``, a bare value for one-argument tools). The session key is on the root
  span only for some frameworks and on every span for others; each turn's root links to the
  previous turn's root.
* **Timing**: 1-12 turns, human think time between them (3-100 s, so most conversations are
  decided and reopened between turns), model and tool latencies of their own.
* **Labelled rare populations** at other rates: errors by status, by exception only, failed
  tool calls (retried), content-filter refusals, loops (the same call with the same arguments,
  the same tool without arguments, A-B ping-pong, agent recursion through a delegate tool, a
  link cycle between two agents' handoff spans, a turn retried three to five times), a rare
  tool path (a tool its agent almost never uses, in one turn), and tail latency (a degraded
  model or a slow dependency: that part of the session 4-10 times slower).
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from benchmarks.quality.generator import (
    ERROR_EXCEPTION_ONLY,
    ERROR_STATUS,
    LLM_REFUSAL,
    ORDINARY,
    RARE_LABELS,
    RARE_PATH,
    TAIL_LATENCY,
    TOOL_ERROR,
    TOOL_LOOP,
    Corpus,
    TrafficSpec,
)

RATES: dict[str, float] = {
    ERROR_STATUS: 0.008,
    ERROR_EXCEPTION_ONLY: 0.006,
    TOOL_ERROR: 0.012,
    LLM_REFUSAL: 0.004,
    TOOL_LOOP: 0.012,
    RARE_PATH: 0.008,
    TAIL_LATENCY: 0.015,
}
# P(n turns), n = 1..12
TURN_WEIGHTS = (0.16, 0.15, 0.13, 0.11, 0.09, 0.08, 0.07, 0.06, 0.05, 0.04, 0.03, 0.03)
THINK_SECONDS = (3.0, 100.0)
SECONDS_PER_SESSION = 0.4
START_UNIX_SECONDS = 1_780_000_000
BATCH_SPANS = 400
BATCH_SECONDS = 1.5
NS = 1_000_000_000

GENAI_ARGS, GENAI_BARE, OPENINFERENCE = "genai+arguments", "genai", "openinference"
LOOP_VARIANTS = ("same_call", "same_tool_no_args", "ping_pong", "recursion", "link_cycle", "turn")

Args = dict[str, Any] | None  # None: a call the model makes without arguments


@dataclass
class Call:
    tool: str
    args: Args
    failed: bool = False  # error.type (and status ERROR on half of them)
    exception: bool = False  # an exception event, status left unset
    seconds: float = 0.0  # set when planned
    delegate: list[Turn] | None = None  # an agent invoked as this tool (agent-as-tool)


@dataclass
class Decision:
    """One model call and the tool calls it made; ``parallel`` calls overlap, the others run
    one after the other (a framework's poll loop) with ``gap`` seconds between them."""

    calls: list[Call]
    parallel: bool = False
    gap: float = 0.0
    llm_status_error: bool = False  # this model call failed with status ERROR (then retried)
    llm_exception: bool = False  # ...or raised with its status left unset (then retried)


@dataclass
class Turn:
    decisions: list[Decision]
    refusal: bool = False
    handoff_cycle: bool = False


@dataclass
class Agent:
    name: str
    weight: float
    model: str
    provider: str
    llm_seconds: tuple[float, float]
    tool_seconds: tuple[float, float]
    tokens: tuple[int, int]
    conventions: tuple[float, float, float]  # P(genai+arguments), P(genai), P(openinference)
    key_on_every_span: float  # share of sessions whose framework puts the key on every span
    workflow: Callable[[Conversation, random.Random], list[Decision]]
    rare_tools: tuple[str, ...]


@dataclass
class Conversation:
    """Per-conversation context the workflows draw from (the same customer, PR, service...)."""

    agent: Agent
    rng: random.Random
    entity: str
    turn: int = 0
    counter: int = 0
    facts: dict[str, Any] = field(default_factory=dict)

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}{self.rng.randrange(100_000):05d}"


# ------------------------------------------------------------------------------------------------
# Workflows: one turn's decisions, given the conversation so far
# ------------------------------------------------------------------------------------------------

_QUERIES = (
    "reset password", "refund status", "change plan", "invoice copy", "cancel order",
    "shipping delay", "two factor", "export data", "api limits", "delete account",
    "billing address", "seat count", "sso setup", "webhook retries", "late fee",
)  # fmt: skip
_FILES = (
    "src/api/routes.py", "src/api/auth.py", "src/db/models.py", "src/db/migrate.py",
    "src/jobs/worker.py", "src/jobs/queue.py", "tests/test_routes.py", "tests/test_auth.py",
    "README.md", "pyproject.toml", "src/cli.py", "src/config.py",
)  # fmt: skip
_AIRPORTS = ("LHR", "CDG", "JFK", "SFO", "NRT", "SIN", "DXB", "FRA", "AMS", "MAD", "YYZ", "SYD")
_SERVICES = ("payments", "search", "checkout", "auth", "notifications", "ledger")


def _poll(ctx: Conversation, rng: random.Random, tool: str, job: str) -> list[Decision]:
    """Waiting for a job: usually the workflow's code polls (one decision, several status
    calls a few seconds apart); sometimes the model checks, once or twice, and it is done."""
    if rng.random() < 0.7:
        polls = rng.randint(1, 8)
        return [
            Decision([Call(tool, {"job_id": job}) for _ in range(polls)], gap=rng.uniform(1, 4))
        ]
    return [Decision([Call(tool, {"job_id": job})]) for _ in range(rng.randint(1, 2))]


def _pages(
    ctx: Conversation, rng: random.Random, tool: str, base: dict[str, Any], cursor: bool
) -> list[Decision]:
    """Paging through results, one model decision per page, the position advancing."""
    count = min(1 + int(rng.expovariate(1.0)), 8)  # most results fit in a page or two
    decisions = []
    for page in range(1, count + 1):
        where: dict[str, Any] = (
            {"cursor": f"c{page}{rng.getrandbits(24):06x}" if page > 1 else ""}
            if cursor
            else {"page": page}
        )
        decisions.append(Decision([Call(tool, {**base, **where})]))
    return decisions


def _reviewer(ctx: Conversation, rng: random.Random) -> list[Decision]:
    pr = ctx.entity
    files = ctx.facts.setdefault("files", rng.sample(_FILES, rng.randint(2, 7)))
    decisions = [Decision([Call("fetch_diff", {"pr": pr})])]
    reading = rng.sample(files, rng.randint(1, len(files)))
    decisions.append(Decision([Call("read_file", {"path": p}) for p in reading], parallel=True))
    if ctx.turn == 0 or rng.random() < 0.6:
        run = ctx.fresh("run")
        decisions.append(Decision([Call("run_checks", {"pr": pr})]))
        decisions += _poll(ctx, rng, "check_status", run)
    decisions.append(Decision([Call("run_linter", {"pr": pr})]))
    if rng.random() < 0.15:  # a soft retry: the linter said "busy, try again", status OK
        decisions.append(Decision([Call("run_linter", {"pr": pr})]))
    body = f"review {ctx.fresh('note')}"
    decisions.append(Decision([Call("post_review", {"pr": pr, "body": body})]))
    return decisions


def _helpdesk(ctx: Conversation, rng: random.Random) -> list[Decision]:
    customer = ctx.entity
    decisions = [Decision([Call("find_customer", {"email": customer})])]
    query = f"{rng.choice(_QUERIES)} {ctx.fresh('q')}"
    decisions.append(Decision([Call("search_help", {"query": query, "locale": "en"})]))
    if rng.random() < 0.3:  # a second search, reworded
        query = f"{rng.choice(_QUERIES)} {ctx.fresh('q')}"
        decisions.append(Decision([Call("search_help", {"query": query, "locale": "en"})]))
    if rng.random() < 0.5:
        decisions.append(Decision([Call("get_subscription", {"customer": customer})]))
    if rng.random() < 0.2:
        summary = f"case {ctx.fresh('case')}"
        decisions.append(
            Decision([Call("open_ticket", {"customer": customer, "summary": summary})])
        )
    return decisions


def _analyst(ctx: Conversation, rng: random.Random) -> list[Decision]:
    warehouse = ctx.entity
    decisions = []
    if ctx.turn == 0 or rng.random() < 0.3:
        decisions.append(Decision([Call("list_tables", {"warehouse": warehouse})]))
    sql = f"select {ctx.fresh('col')} from t"
    job = ctx.fresh("job")
    decisions.append(Decision([Call("submit_query", {"warehouse": warehouse, "sql": sql})]))
    decisions += _poll(ctx, rng, "query_status", job)
    decisions += _pages(ctx, rng, "fetch_rows", {"job_id": job}, cursor=False)
    if rng.random() < 0.6:
        decisions.append(Decision([Call("render_chart", {"job_id": job, "kind": "bar"})]))
    return decisions


def _trip_planner(ctx: Conversation, rng: random.Random) -> list[Decision]:
    origin, destination = ctx.facts.setdefault("route", rng.sample(_AIRPORTS, 2))
    day = rng.randint(1, 20)
    dates = [f"2026-07-{day + k:02d}" for k in range(rng.randint(1, 4))]
    # one model decision per date: a fan-out the model runs one item at a time
    decisions = [
        Decision([Call("search_flights", {"from": origin, "to": destination, "date": d})])
        for d in dates
    ]
    flight = ctx.fresh("FL")
    decisions.append(Decision([Call("get_fare_rules", {"flight": flight})]))
    if rng.random() < 0.25:  # a sub-agent checks the fares (depth 2: not a recursion)
        sub = Turn([Decision([Call("compare_fares", {"flight": flight})])])
        decisions.append(Decision([Call("ask_fare_checker", {"flight": flight}, delegate=[sub])]))
    if rng.random() < 0.4:
        decisions.append(Decision([Call("hold_seat", {"flight": flight, "seat": "any"})]))
    return decisions


def _oncall(ctx: Conversation, rng: random.Random) -> list[Decision]:
    service = ctx.entity
    decisions = [Decision([Call("get_alerts", {"service": service})])]
    window = f"{rng.choice((15, 30, 60))}m"
    decisions += _pages(ctx, rng, "query_logs", {"service": service, "window": window}, True)
    decisions.append(Decision([Call("get_metrics", {"service": service, "window": window})]))
    if rng.random() < 0.3:
        text = f"update {ctx.fresh('msg')}"
        decisions.append(Decision([Call("post_update", {"channel": "#inc", "text": text})]))
    return decisions


AGENTS: tuple[Agent, ...] = (
    Agent(
        "pr-reviewer", 0.22, "gpt-5-mini", "openai", (1.5, 6.0), (0.2, 3.0), (6000, 40000),
        (0.3, 0.3, 0.4), 0.5, _reviewer, ("merge_pr", "revert_commit", "request_access"),
    ),
    Agent(
        "helpdesk", 0.30, "claude-haiku-4-5", "anthropic", (0.6, 2.0), (0.05, 0.6), (800, 5000),
        (0.4, 0.3, 0.3), 0.3, _helpdesk, ("issue_refund", "escalate_legal", "merge_accounts"),
    ),
    Agent(
        "analyst", 0.18, "gemini-2.5-pro", "gcp.gemini", (2.0, 8.0), (0.3, 4.0), (3000, 25000),
        (0.2, 0.4, 0.4), 0.6, _analyst, ("drop_table", "grant_role", "export_to_s3"),
    ),
    Agent(
        "trip-planner", 0.18, "gpt-4.1-mini", "openai", (0.8, 3.0), (0.3, 2.5), (1500, 9000),
        (0.35, 0.35, 0.3), 0.4, _trip_planner, ("cancel_booking", "request_visa", "book_hotel"),
    ),
    Agent(
        "oncall", 0.12, "mistral-medium", "mistral_ai", (1.0, 4.0), (0.2, 5.0), (2000, 16000),
        (0.3, 0.3, 0.4), 0.5, _oncall, ("rollback_deploy", "page_manager", "scale_down"),
    ),
)  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Plans
# ------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    key: str
    agent: Agent
    labels: frozenset[str]
    convention: str
    key_on_every_span: bool
    slow_llm: float
    slow_tools: float
    start_s: float
    turns: list[Turn]
    thinks: list[float]


def _weighted(rng: random.Random, weights: tuple[float, ...] | list[float]) -> int:
    return rng.choices(range(len(weights)), weights=weights)[0]


def _entity(agent: Agent, rng: random.Random) -> str:
    if agent.name == "pr-reviewer":
        return f"acme/api#{rng.randint(100, 9999)}"
    if agent.name == "helpdesk":
        return f"user{rng.getrandbits(32):08x}@example.com"
    if agent.name == "oncall":
        return rng.choice(_SERVICES)
    return f"wh-{rng.randint(1, 40)}"


def _plan(labels: set[str], rng: random.Random, time_span: float) -> Plan:
    agent = AGENTS[_weighted(rng, [a.weight for a in AGENTS])]
    convention = (GENAI_ARGS, GENAI_BARE, OPENINFERENCE)[_weighted(rng, agent.conventions)]
    loop = rng.choice(LOOP_VARIANTS) if TOOL_LOOP in labels else ""
    if loop == "same_tool_no_args":
        convention = GENAI_BARE
    elif loop in ("same_call", "turn") and convention == GENAI_BARE:
        convention = GENAI_ARGS
    if LLM_REFUSAL in labels and convention == OPENINFERENCE:
        convention = rng.choice((GENAI_ARGS, GENAI_BARE))  # finish reasons are GenAI's
    ctx = Conversation(agent, rng, _entity(agent, rng))
    count = _weighted(rng, TURN_WEIGHTS) + 1
    turns = []
    for number in range(count):
        ctx.turn = number
        turns.append(Turn(agent.workflow(ctx, rng)))
    # most people answer within 40 s; some take longer (up to THINK_SECONDS)
    thinks = [rng.uniform(3, 40) if rng.random() < 0.6 else rng.uniform(*THINK_SECONDS)
              for _ in range(count)]  # fmt: skip

    if loop:
        _add_loop(loop, turns, thinks, agent, ctx, rng)
    if RARE_PATH in labels:
        turn = rng.choice(turns)
        tool = rng.choice(agent.rare_tools)
        at = rng.randint(0, len(turn.decisions))
        turn.decisions.insert(at, Decision([Call(tool, {"target": ctx.fresh("t")})]))
    if TOOL_ERROR in labels:
        turn = rng.choice(turns)
        at = rng.randrange(len(turn.decisions))
        original = rng.choice(turn.decisions[at].calls)
        failed = Call(original.tool, original.args, failed=True)
        # the model sees the error and makes the same call again; this time it works
        turn.decisions.insert(at, Decision([failed]))
    if ERROR_STATUS in labels:  # every workflow makes at least one decision per turn
        rng.choice(rng.choice(turns).decisions).llm_status_error = True
    if ERROR_EXCEPTION_ONLY in labels:
        decision = rng.choice(rng.choice(turns).decisions)
        if rng.random() < 0.5:
            rng.choice(decision.calls).exception = True
        else:
            decision.llm_exception = True
    if LLM_REFUSAL in labels:
        rng.choice(turns).refusal = True
    slow_llm = slow_tools = 1.0
    if TAIL_LATENCY in labels:
        if rng.random() < 0.5:
            slow_llm = rng.uniform(4, 10)  # a degraded model
        else:
            slow_tools = rng.uniform(4, 10)  # a slow dependency
    if convention == OPENINFERENCE:
        u = f"{rng.getrandbits(128):032x}"
        key = f"{u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]}"
    else:
        key = f"thread_{rng.getrandbits(80):020x}"
    return Plan(
        key=key,
        agent=agent,
        labels=frozenset(labels) if labels else frozenset({ORDINARY}),
        convention=convention,
        key_on_every_span=rng.random() < agent.key_on_every_span,
        slow_llm=slow_llm,
        slow_tools=slow_tools,
        start_s=rng.uniform(0, time_span),
        turns=turns,
        thinks=thinks,
    )


def _add_loop(
    variant: str,
    turns: list[Turn],
    thinks: list[float],
    agent: Agent,
    ctx: Conversation,
    rng: random.Random,
) -> None:
    turn = rng.choice(turns)
    at = rng.randint(0, len(turn.decisions))
    calls = [call for decision in turn.decisions for call in decision.calls]
    tool = rng.choice(calls).tool if calls else "search_help"
    if variant == "same_call":
        args = {"id": ctx.fresh("x")}
        loop = [Decision([Call(tool, args)]) for _ in range(rng.randint(4, 9))]
    elif variant == "same_tool_no_args":
        loop = [Decision([Call(tool, None)]) for _ in range(rng.randint(6, 12))]
    elif variant == "ping_pong":
        other = rng.choice([c.tool for c in calls if c.tool != tool] or ["lookup"])
        a, b = {"id": ctx.fresh("a")}, {"id": ctx.fresh("b")}
        cycles = rng.randint(3, 5)
        loop = [Decision([Call(name, args)]) for _ in range(cycles) for name, args in
                ((tool, a), (other, b))]  # fmt: skip
    elif variant == "recursion":
        depth = rng.randint(5, 7)  # the agent delegates to itself, deeper and deeper
        inner = Turn([Decision([Call(tool, {"id": ctx.fresh("r")})])])
        for level in range(depth - 1):  # each level hands a narrower sub-task down
            task = {"task": f"subtask {level} {ctx.fresh('t')}"}
            inner = Turn([Decision([Call("delegate", task, delegate=[inner])])])
        loop = inner.decisions
    elif variant == "link_cycle":
        turn.handoff_cycle = True
        return
    else:  # "turn": the same turn, retried at once by the client three to five more times
        index = turns.index(turn)
        for _ in range(rng.randint(3, 5)):
            turns.insert(index + 1, copy.deepcopy(turn))
            thinks.insert(index + 1, rng.uniform(0.5, 3))
        return
    turn.decisions[at:at] = loop


def _choose_labels(sessions: int, rng: random.Random) -> list[set[str]]:
    labels: list[set[str]] = [set() for _ in range(sessions)]
    for label in RARE_LABELS:
        for index in rng.sample(range(sessions), round(RATES[label] * sessions)):
            labels[index].add(label)
    return labels


# ------------------------------------------------------------------------------------------------
# Spans
# ------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Record:
    end: int
    seq: int
    service: int
    scope: str
    trace_id: bytes
    span_id: bytes
    parent: bytes
    name: str
    kind: int
    start: int
    attrs: list[tuple[str, Any]]
    status: int = 0
    message: str = ""
    exception: tuple[str, str] | None = None
    links: list[tuple[bytes, bytes]] = field(default_factory=list)  # (trace id, span id)


SCOPES = {
    GENAI_ARGS: "opentelemetry.instrumentation.openai_agents",
    GENAI_BARE: "pydantic-ai",
    OPENINFERENCE: "openinference.instrumentation.langchain",
    "http": "opentelemetry.instrumentation.aiohttp_client",
}


class Emitter:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.records: list[Record] = []
        self.trace_sessions: dict[bytes, str] = {}
        self.session_spans: dict[str, int] = {}

    def _id(self, bits: int) -> bytes:
        return (self.rng.getrandbits(bits) | 1).to_bytes(bits // 8, "big")

    def _add(self, record: Record) -> Record:
        record.seq = len(self.records)
        self.records.append(record)
        return record

    def session(self, plan: Plan) -> None:
        before = len(self.records)
        clock = int((START_UNIX_SECONDS + plan.start_s) * NS)
        previous_root: tuple[bytes, bytes] | None = None
        handoff: list[Record] = []
        for number, turn in enumerate(plan.turns):
            if number:
                clock += int(plan.thinks[number] * NS)
            root, clock = self._turn(plan, turn, clock, previous_root, handoff)
            previous_root = (root.trace_id, root.span_id)
        if len(handoff) >= 2:  # two agents' handoff spans, each linking to the other
            first, second = handoff[:2]
            first.links.append((second.trace_id, second.span_id))
            second.links.append((first.trace_id, first.span_id))
        self.session_spans[plan.key] = len(self.records) - before

    def _turn(
        self,
        plan: Plan,
        turn: Turn,
        start: int,
        previous_root: tuple[bytes, bytes] | None,
        handoff: list[Record],
    ) -> tuple[Record, int]:
        trace_id = self._id(128)
        self.trace_sessions[trace_id] = plan.key
        root = self._agent_span(plan, trace_id, b"", start, plan.agent.name, root=True)
        if previous_root is not None:  # each turn links to the one before
            root.links.append(previous_root)
        end = self._run(plan, turn, trace_id, root, start + self._ms(3, 30), handoff)
        root.end = end + self._ms(2, 20)
        self._add(root)
        return root, root.end

    def _run(
        self,
        plan: Plan,
        turn: Turn,
        trace_id: bytes,
        agent: Record,
        clock: int,
        handoff: list[Record],
    ) -> int:
        """The decisions of one turn (or of a delegated agent's run) under ``agent``."""
        oi = plan.convention == OPENINFERENCE
        for decision in [*turn.decisions, None]:  # None: the final answer
            step_parent = agent.span_id
            node: Record | None = None
            if oi:
                node = self._span(plan, trace_id, agent.span_id, "agent", clock,
                                  [("openinference.span.kind", "AGENT")])  # fmt: skip
                step_parent = node.span_id
                clock += self._ms(1, 5)
            if decision is not None:
                for failure, flagged in (
                    ("status", decision.llm_status_error),
                    ("exception", decision.llm_exception),
                ):
                    if flagged:  # a failed model call, retried after a backoff
                        bad = self._llm(plan, trace_id, step_parent, clock, "tool_calls", failure)
                        clock = bad.end + self._ms(300, 1500)
            reason = "tool_calls"
            if decision is None:
                reason = "content_filter" if turn.refusal else "stop"
            llm = self._llm(plan, trace_id, step_parent, clock, reason, "")
            clock = llm.end + self._ms(1, 10)
            if node is not None:
                node.end = clock
                self._add(node)
            if decision is None:
                break
            tools_parent = agent.span_id
            chain: Record | None = None
            if oi:
                chain = self._span(plan, trace_id, agent.span_id, "tools", clock,
                                   [("openinference.span.kind", "CHAIN")])  # fmt: skip
                tools_parent = chain.span_id
                clock += self._ms(1, 4)
            ends = [clock]
            cursor = clock
            for call in decision.calls:
                began = cursor + (self._ms(0, 3) if decision.parallel else 0)
                tool = self._tool(plan, call, trace_id, tools_parent, began)
                if call.delegate is not None:
                    sub = self._agent_span(plan, trace_id, tool.span_id, began + self._ms(1, 5),
                                           plan.agent.name if call.tool == "delegate"
                                           else "fare-checker")  # fmt: skip
                    sub_end = began
                    for inner in call.delegate:
                        sub_end = self._run(plan, inner, trace_id, sub, sub.start, handoff)
                    sub.end = sub_end + self._ms(1, 5)
                    self._add(sub)
                    tool.end = max(tool.end, sub.end + self._ms(1, 5))
                self._add(tool)
                ends.append(tool.end)
                if not decision.parallel:
                    cursor = tool.end + int(decision.gap * NS)
            clock = max(ends) + self._ms(1, 10)
            if chain is not None:
                chain.end = clock
                self._add(chain)
                clock += self._ms(1, 4)
        if turn.handoff_cycle and len(handoff) < 2:
            for name in ("triage-router", plan.agent.name):
                span = self._span(plan, trace_id, agent.span_id, f"handoff {name}", clock,
                                  [("gen_ai.operation.name", "invoke_agent"),
                                   ("gen_ai.agent.name", name)])  # fmt: skip
                span.end = clock + self._ms(5, 40)
                clock = span.end
                handoff.append(self._add(span))
        return clock

    # -- spans -------------------------------------------------------------------------------

    def _ms(self, low: float, high: float) -> int:
        return int(self.rng.uniform(low, high) * 1_000_000)

    def _span(
        self,
        plan: Plan,
        trace_id: bytes,
        parent: bytes,
        name: str,
        start: int,
        attrs: list[tuple[str, Any]],
        kind: int = Span.SPAN_KIND_INTERNAL,
    ) -> Record:
        if plan.key_on_every_span:
            attrs.append(self._key_attr(plan))
        return Record(start, 0, AGENTS.index(plan.agent), plan.convention, trace_id,
                      self._id(64), parent, name, kind, start, attrs)  # fmt: skip

    def _key_attr(self, plan: Plan) -> tuple[str, str]:
        key = "session.id" if plan.convention == OPENINFERENCE else "gen_ai.conversation.id"
        return key, plan.key

    def _agent_span(
        self,
        plan: Plan,
        trace_id: bytes,
        parent: bytes,
        start: int,
        name: str,
        *,
        root: bool = False,
    ) -> Record:
        if plan.convention == OPENINFERENCE:
            attrs: list[tuple[str, Any]] = [("openinference.span.kind", "AGENT")]
            span_name = name.replace("-", "_")
        else:
            attrs = [("gen_ai.operation.name", "invoke_agent"), ("gen_ai.agent.name", name),
                     ("gen_ai.provider.name", plan.agent.provider)]  # fmt: skip
            span_name = f"invoke_agent {name}"
        record = self._span(plan, trace_id, parent, span_name, start, attrs)
        if root and not plan.key_on_every_span:
            record.attrs.append(self._key_attr(plan))
        return record

    def _llm(
        self, plan: Plan, trace_id: bytes, parent: bytes, start: int, reason: str, failure: str
    ) -> Record:
        rng, agent = self.rng, plan.agent
        seconds = rng.uniform(*agent.llm_seconds) * plan.slow_llm
        if failure:
            seconds /= 4
        tokens_in = rng.randint(*agent.tokens)
        tokens_out = rng.randint(20, max(21, tokens_in // 10))
        if plan.convention == OPENINFERENCE:
            attrs: list[tuple[str, Any]] = [("openinference.span.kind", "LLM"),
                                            ("llm.model_name", agent.model)]  # fmt: skip
            if not failure:
                attrs += [("llm.token_count.prompt", tokens_in),
                          ("llm.token_count.completion", tokens_out)]  # fmt: skip
            name = "ChatModel"
        else:
            attrs = [("gen_ai.operation.name", "chat"), ("gen_ai.request.model", agent.model),
                     ("gen_ai.provider.name", agent.provider)]  # fmt: skip
            if not failure:
                attrs += [("gen_ai.usage.input_tokens", tokens_in),
                          ("gen_ai.usage.output_tokens", tokens_out),
                          ("gen_ai.response.finish_reasons", (reason,))]  # fmt: skip
            name = f"chat {agent.model}"
        record = self._span(plan, trace_id, parent, name, start, attrs, Span.SPAN_KIND_CLIENT)
        record.end = start + int(seconds * NS)
        if failure == "status":
            record.status, record.message = Status.STATUS_CODE_ERROR, "upstream 529 overloaded"
        elif failure == "exception":
            record.exception = ("httpx.ReadTimeout", "timed out reading the response")
        self._add(record)
        self._http(plan, record, is_model=True)
        return record

    def _tool(self, plan: Plan, call: Call, trace_id: bytes, parent: bytes, start: int) -> Record:
        seconds = self.rng.uniform(*plan.agent.tool_seconds) * plan.slow_tools
        arguments = json.dumps(call.args, separators=(",", ":")) if call.args else ""
        if plan.convention == OPENINFERENCE:
            attrs: list[tuple[str, Any]] = [("openinference.span.kind", "TOOL"),
                                            ("tool.name", call.tool)]  # fmt: skip
            if call.args is not None:
                single = len(call.args) == 1
                value = str(next(iter(call.args.values()))) if single else arguments
                attrs.append(("input.value", value))
            name = call.tool
        else:
            attrs = [("gen_ai.operation.name", "execute_tool"), ("gen_ai.tool.name", call.tool),
                     ("gen_ai.tool.call.id", f"call_{self.rng.getrandbits(64):016x}")]  # fmt: skip
            if plan.convention == GENAI_ARGS and call.args is not None:
                attrs.append(("gen_ai.tool.call.arguments", arguments))
            name = f"execute_tool {call.tool}"
        record = self._span(plan, trace_id, parent, name, start, attrs)
        record.end = start + int(seconds * NS)
        if call.failed:
            record.attrs.append(("error.type", self.rng.choice(("TimeoutError", "HTTP 503"))))
            if self.rng.random() < 0.5:
                record.status, record.message = Status.STATUS_CODE_ERROR, "tool failed"
        if call.exception:
            record.exception = ("ValueError", "could not parse the tool's answer")
        self._http(plan, record, is_model=False)
        return record

    def _http(self, plan: Plan, owner: Record, *, is_model: bool) -> None:
        count = self.rng.randint(0, 2 if is_model else 3)
        if not count:
            return
        slot = max(1, (owner.end - owner.start) // count)
        for index in range(count):
            start = owner.start + index * slot
            attrs: list[tuple[str, Any]] = [
                ("http.request.method", "POST"),
                ("http.response.status_code", 200),
            ]
            record = Record(
                start + max(1, slot * 3 // 4), 0, AGENTS.index(plan.agent), "http",
                owner.trace_id, self._id(64), owner.span_id, "POST", Span.SPAN_KIND_CLIENT,
                start, attrs,
            )  # fmt: skip
            self._add(record)


# ------------------------------------------------------------------------------------------------
# Requests
# ------------------------------------------------------------------------------------------------


def _put(attributes: Any, key: str, value: Any) -> None:
    kv: KeyValue = attributes.add(key=key)
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, str):
        kv.value.string_value = value
    else:
        for item in value:
            kv.value.array_value.values.add(string_value=item)


def _requests(records: list[Record]) -> Iterator[ExportTraceServiceRequest]:
    batch: list[Record] = []
    for record in records:
        if batch and (len(batch) >= BATCH_SPANS or record.end - batch[0].end > BATCH_SECONDS * NS):
            yield _request(batch)
            batch = []
        batch.append(record)
    if batch:
        yield _request(batch)


def _request(batch: list[Record]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resources: dict[int, Any] = {}
    scopes: dict[tuple[int, str], Any] = {}
    for record in batch:
        scope = scopes.get((record.service, record.scope))
        if scope is None:
            resource = resources.get(record.service)
            if resource is None:
                resource = resources[record.service] = request.resource_spans.add()
                _put(resource.resource.attributes, "service.name", AGENTS[record.service].name)
                _put(resource.resource.attributes, "deployment.environment.name", "production")
            scope = scopes[(record.service, record.scope)] = resource.scope_spans.add()
            scope.scope.name = SCOPES[record.scope]
        span = scope.spans.add(
            trace_id=record.trace_id,
            span_id=record.span_id,
            parent_span_id=record.parent,
            name=record.name,
            kind=record.kind,
            start_time_unix_nano=record.start,
            end_time_unix_nano=record.end,
        )
        for key, value in record.attrs:
            _put(span.attributes, key, value)
        if record.status:
            span.status.code = record.status
            span.status.message = record.message
        if record.exception is not None:
            event = span.events.add(name="exception", time_unix_nano=record.end)
            _put(event.attributes, "exception.type", record.exception[0])
            _put(event.attributes, "exception.message", record.exception[1])
        for linked_trace, linked_span in record.links:
            span.links.add(trace_id=linked_trace, span_id=linked_span)
    return request


def generate(spec: TrafficSpec) -> Corpus:
    """``spec.sessions`` conversations drawn from ``spec.seed`` (the spec's other fields
    describe the default generator's traffic and are not read)."""
    rng = random.Random(f"conversations/{spec.seed}")
    emitter = Emitter(rng)
    labels: dict[str, frozenset[str]] = {}
    agents: dict[str, str] = {}
    time_span = spec.sessions * SECONDS_PER_SESSION
    for chosen in _choose_labels(spec.sessions, rng):
        plan = _plan(chosen, rng, time_span)
        labels[plan.key] = plan.labels
        agents[plan.key] = plan.agent.name
        emitter.session(plan)
    records = sorted(emitter.records, key=lambda r: (r.end, r.seq))
    return Corpus(
        spec=spec,
        requests=list(_requests(records)),
        labels=labels,
        session_spans=emitter.session_spans,
        trace_sessions=emitter.trace_sessions,
        session_agents=agents,
    )
