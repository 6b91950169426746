"""Labelled, seeded synthetic LLM-agent traffic as OTLP export requests.

``generate(TrafficSpec(...))`` returns a :class:`Corpus`: the requests a collector's batch
processor would send (spans of all concurrently running sessions, interleaved, in the order they
*end*), and per session its ground-truth labels. Everything is drawn from one
``random.Random(spec.seed)``: the same spec gives the same bytes.

What the traffic looks like, and why:

* **Agents** (``support``, ``research``, ``coder``, ``billing`` by default) each have a tool
  vocabulary and a few common tool paths with skewed weights, so the *shape* (agent + tool path)
  of ordinary sessions is concentrated. Latencies and token counts differ per agent on purpose:
  a research agent's normal LLM call is as slow as a support agent's tail.
* **Sessions** are 1-4 turns (traces) with a few seconds of think time between them. The
  session's tool path is split across its turns (follow-up turns are often plain answers), so
  the whole session's tool sequence is one of its agent's paths. Ordinary paths never hold a
  run of more than three calls of one tool nor an A-B-A-B alternation, and arguments never
  repeat within an ordinary session: only the ``tool_loop`` population loops.
* **Conventions** are mixed per session: OpenTelemetry GenAI (``gen_ai.*``; tool call arguments
  are opt-in, so only some sessions record them; some use the deprecated ``gen_ai.system``) or
  OpenInference (``openinference.span.kind``, arguments in ``input.value``, the schema in
  ``tool.parameters``). The session key (``gen_ai.conversation.id`` / ``session.id``) is only
  on each trace's root agent span, which ends (so arrives) last. HTTP client spans under LLM
  and tool calls fill turns up to ``spans_per_turn``.
* **Rare populations** (labels), each a configured fraction of sessions, chosen independently
  (a session can carry several), placed in a random turn:

  - ``error_status``: one failed LLM attempt with status ERROR and nothing else (it is retried);
  - ``error_exception_only``: one LLM attempt with an ``exception`` event, status UNSET;
  - ``tool_error``: a tool call with ``error.type`` set (status ERROR only on half of them:
    frameworks that hand the tool error back to the model often leave the status unset);
  - ``llm_refusal``: a chat span with ``gen_ai.response.finish_reasons = ["content_filter"]``
    (these sessions use the GenAI convention, the one that defines finish reasons);
  - ``tool_loop``: the same tool with the same arguments ``loop_repeats`` times; or the same tool
    ``loop_repeats_no_args`` times in a GenAI session that records no arguments; or an A-B-A-B
    ping-pong of ``loop_pingpong_cycles`` cycles;
  - ``rare_path``: a tool path this agent never takes otherwise (an odd order, a tool of another
    agent's, a tool it almost never needs);
  - ``tail_latency``: every LLM and tool call of the session ``tail_latency_factor`` times slower
    than its agent's normal (think time unchanged).

  A session with none of them is labelled ``ordinary``.

Run ``python -m benchmarks.quality.generator --out traffic.jsonl --labels labels.json`` to write
a corpus to files (for ``agent-sampler replay``).
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span, Status

from sampler.otlp.json_codec import request_to_json

ERROR_STATUS = "error_status"
ERROR_EXCEPTION_ONLY = "error_exception_only"
TOOL_ERROR = "tool_error"
LLM_REFUSAL = "llm_refusal"
TOOL_LOOP = "tool_loop"
RARE_PATH = "rare_path"
TAIL_LATENCY = "tail_latency"
ORDINARY = "ordinary"

RARE_LABELS = (
    ERROR_STATUS,
    ERROR_EXCEPTION_ONLY,
    TOOL_ERROR,
    LLM_REFUSAL,
    TOOL_LOOP,
    RARE_PATH,
    TAIL_LATENCY,
)
ERROR_LABELS = (ERROR_STATUS, ERROR_EXCEPTION_ONLY, TOOL_ERROR, LLM_REFUSAL)
ALL_LABELS = (*RARE_LABELS, ORDINARY)

GENAI = "genai"
OPENINFERENCE = "openinference"
SESSION_KEY_ATTRIBUTES = ("gen_ai.conversation.id", "session.id")
SECONDS_PER_SESSION = 0.3

ToolPath = tuple[str, ...]
Range = tuple[float, float]


@dataclass(frozen=True)
class AgentProfile:
    """One agent: its tools, its usual tool paths, and its normal latencies and token counts."""

    name: str
    weight: float  # share of sessions
    model: str
    provider: str
    tools: tuple[str, ...]
    common_paths: tuple[ToolPath, ...]
    path_weights: tuple[float, ...]
    rare_paths: tuple[ToolPath, ...]  # paths the agent takes only in the rare_path population
    llm_seconds: Range
    tool_seconds: Range
    input_tokens: tuple[int, int]
    output_tokens: tuple[int, int]
    tool_hosts: tuple[str, ...] = ("api.internal",)

    def __post_init__(self) -> None:
        if len(self.common_paths) != len(self.path_weights):
            raise ValueError(f"{self.name}: one weight per common path")
        for path in (*self.common_paths, *self.rare_paths):
            if not path or not set(path) <= set(self.tools):
                raise ValueError(f"{self.name}: path {path} must be non-empty, in its tools")
        if set(self.rare_paths) & set(self.common_paths):
            raise ValueError(f"{self.name}: a rare path is also a common one")


DEFAULT_AGENTS: tuple[AgentProfile, ...] = (
    AgentProfile(
        name="support",
        weight=0.35,
        model="gpt-4o-mini",
        provider="openai",
        tools=(
            "lookup_customer",
            "search_kb",
            "get_order",
            "create_ticket",
            "escalate_to_human",
            "get_invoice",
        ),
        common_paths=(
            ("lookup_customer", "search_kb"),
            ("search_kb",),
            ("lookup_customer", "get_order"),
            ("lookup_customer", "get_order", "create_ticket"),
            ("search_kb", "search_kb", "create_ticket"),
        ),
        path_weights=(0.4, 0.25, 0.18, 0.1, 0.07),
        rare_paths=(
            ("escalate_to_human",),
            ("create_ticket", "lookup_customer", "escalate_to_human"),
            ("lookup_customer", "get_invoice"),
            ("get_order", "create_ticket", "search_kb", "lookup_customer"),
        ),
        llm_seconds=(0.5, 1.5),
        tool_seconds=(0.05, 0.5),
        input_tokens=(400, 1600),
        output_tokens=(40, 300),
        tool_hosts=("crm.internal", "kb.internal", "orders.internal"),
    ),
    AgentProfile(
        name="research",
        weight=0.2,
        model="claude-sonnet-4",
        provider="anthropic",
        tools=("web_search", "fetch_page", "summarize", "cite", "run_python", "read_file"),
        common_paths=(
            ("web_search", "fetch_page", "fetch_page", "summarize"),
            ("web_search", "fetch_page", "summarize"),
            ("web_search", "summarize", "cite"),
            ("web_search", "fetch_page", "fetch_page", "fetch_page", "cite"),
        ),
        path_weights=(0.4, 0.3, 0.2, 0.1),
        rare_paths=(
            ("run_python",),
            ("cite", "web_search"),
            ("read_file", "summarize"),
            ("fetch_page", "run_python", "web_search"),
        ),
        llm_seconds=(3.0, 9.0),
        tool_seconds=(0.8, 4.0),
        input_tokens=(4000, 14000),
        output_tokens=(400, 2200),
        tool_hosts=("search.internal", "fetcher.internal"),
    ),
    AgentProfile(
        name="coder",
        weight=0.25,
        model="gpt-4.1",
        provider="openai",
        tools=(
            "search_code",
            "read_file",
            "edit_file",
            "run_tests",
            "git_push",
            "delete_file",
            "web_search",
        ),
        common_paths=(
            ("search_code", "read_file", "edit_file", "run_tests"),
            ("read_file", "edit_file", "run_tests"),
            ("search_code", "read_file"),
            ("read_file", "read_file", "edit_file", "run_tests"),
        ),
        path_weights=(0.4, 0.3, 0.2, 0.1),
        rare_paths=(
            ("delete_file",),
            ("git_push", "run_tests"),
            ("run_tests", "edit_file", "git_push"),
            ("web_search", "edit_file"),
        ),
        llm_seconds=(2.0, 6.0),
        tool_seconds=(0.1, 3.0),
        input_tokens=(8000, 30000),
        output_tokens=(300, 4000),
        tool_hosts=("git.internal", "ci.internal"),
    ),
    AgentProfile(
        name="billing",
        weight=0.2,
        model="gpt-4o-mini",
        provider="openai",
        tools=("get_balance", "get_invoice", "apply_credit", "issue_refund", "lookup_customer"),
        common_paths=(
            ("get_balance",),
            ("get_invoice", "get_balance"),
            ("get_invoice",),
            ("lookup_customer", "get_invoice"),
        ),
        path_weights=(0.4, 0.3, 0.2, 0.1),
        rare_paths=(
            ("issue_refund",),
            ("apply_credit", "issue_refund"),
            ("get_balance", "apply_credit", "get_invoice"),
            ("issue_refund", "lookup_customer"),
        ),
        llm_seconds=(0.4, 1.2),
        tool_seconds=(0.05, 0.4),
        input_tokens=(300, 1200),
        output_tokens=(30, 250),
        tool_hosts=("billing.internal", "crm.internal"),
    ),
)

DEFAULT_RATES: dict[str, float] = {
    ERROR_STATUS: 0.01,
    ERROR_EXCEPTION_ONLY: 0.01,
    TOOL_ERROR: 0.01,
    LLM_REFUSAL: 0.01,
    TOOL_LOOP: 0.015,
    RARE_PATH: 0.01,
    TAIL_LATENCY: 0.01,
}


@dataclass(frozen=True)
class TrafficSpec:
    """Everything the generator draws from; the same spec always gives the same corpus."""

    seed: int = 1
    sessions: int = 3000
    agents: tuple[AgentProfile, ...] = DEFAULT_AGENTS
    # Fraction of sessions in each rare population; each is drawn independently (exact counts).
    rates: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RATES))
    turn_weights: tuple[float, ...] = (0.45, 0.3, 0.15, 0.1)  # P(1 turn), P(2 turns), ...
    think_seconds: Range = (2.0, 8.0)  # between turns
    spans_per_turn: tuple[int, int] = (8, 28)  # filled up with HTTP client spans
    genai_fraction: float = 0.5  # the rest use OpenInference
    genai_arguments_fraction: float = 0.4  # GenAI sessions recording gen_ai.tool.call.arguments
    genai_deprecated_system_fraction: float = 0.3  # gen_ai.system instead of gen_ai.provider.name
    tool_error_status_fraction: float = 0.5  # failed tool calls that also set status ERROR
    loop_repeats: tuple[int, int] = (4, 8)  # same tool, same arguments
    loop_repeats_no_args: tuple[int, int] = (6, 10)  # same tool, no arguments recorded
    loop_pingpong_cycles: tuple[int, int] = (3, 4)  # A-B repeated
    loop_variant_weights: tuple[float, float, float] = (0.5, 0.25, 0.25)  # same args/no args/AB
    tail_latency_factor: Range = (8.0, 20.0)
    # Session starts are spread over this long; None: 0.3 s per session (3,000 in 15 minutes),
    # so that concurrency, and the traffic per request, do not depend on the corpus size.
    time_span_seconds: float | None = None
    start_unix_seconds: int = 1_767_225_600  # 2026-01-01T00:00:00Z
    batch_spans: int = 256  # a request holds at most this many spans...
    batch_timeout_seconds: float = 1.0  # ...or the spans that ended within this long

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(RARE_LABELS)
        if unknown:
            raise ValueError(f"unknown rare populations {sorted(unknown)}; known: {RARE_LABELS}")
        if any(not 0.0 <= r <= 1.0 for r in self.rates.values()):
            raise ValueError("rates must be in [0, 1]")
        if self.sessions < 1 or self.batch_spans < 1 or not self.agents:
            raise ValueError("need at least one session, one agent and batch_spans >= 1")
        if not self.turn_weights or self.spans_per_turn[0] > self.spans_per_turn[1]:
            raise ValueError("turn_weights must be non-empty and spans_per_turn (low, high)")

    def rate(self, label: str) -> float:
        return self.rates.get(label, 0.0)

    @property
    def time_span(self) -> float:
        if self.time_span_seconds is not None:
            return self.time_span_seconds
        return self.sessions * SECONDS_PER_SESSION


@dataclass(frozen=True)
class Corpus:
    """Generated traffic and its ground truth.

    ``labels`` maps every session key to its labels (``{"ordinary"}`` or a non-empty set of rare
    ones); ``session_spans`` to its span count; ``trace_sessions`` maps every trace id to its
    session key (kept spans carry the key only on root spans); ``session_agents`` names the agent.
    """

    spec: TrafficSpec
    requests: list[ExportTraceServiceRequest]
    labels: dict[str, frozenset[str]]
    session_spans: dict[str, int]
    trace_sessions: dict[bytes, str]
    session_agents: dict[str, str]

    @property
    def span_count(self) -> int:
        return sum(self.session_spans.values())

    def label_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(ALL_LABELS, 0)
        for labels in self.labels.values():
            for label in labels:
                counts[label] += 1
        return counts

    def sessions_with(self, label: str) -> list[str]:
        return [key for key, labels in self.labels.items() if label in labels]

    def write_jsonl(self, path: str | Path) -> None:
        """One OTLP/JSON request per line, as the collector's file exporter writes them."""
        with open(path, "w", encoding="utf-8") as out:
            for request in self.requests:
                out.write(request_to_json(request))
                out.write("\n")

    def labels_json(self) -> str:
        """``{session key: {"agent": ..., "labels": [...], "spans": n}}`` as one JSON text."""
        return json.dumps(
            {
                key: {
                    "agent": self.session_agents[key],
                    "labels": sorted(labels),
                    "spans": self.session_spans[key],
                }
                for key, labels in self.labels.items()
            },
            sort_keys=True,
        )


# ------------------------------------------------------------------------------------------------
# Session plans: what happens in each session, before any span exists
# ------------------------------------------------------------------------------------------------


@dataclass
class _Call:
    tool: str
    args: str
    failed: bool = False
    failed_status: bool = False


@dataclass
class _Turn:
    calls: list[_Call]
    llm_failures: list[str] = field(default_factory=list)  # "status" / "exception" attempts
    refusal: bool = False


@dataclass
class _Session:
    key: str
    agent_index: int
    labels: frozenset[str]
    convention: str
    record_args: bool
    provider_key: str
    slow: float
    start_s: float
    turns: list[_Turn]


_WORDS = (
    "refund",
    "delivery",
    "password",
    "invoice",
    "latency",
    "kubernetes",
    "pricing",
    "contract",
    "renewal",
    "upgrade",
    "timeout",
    "billing",
    "warranty",
    "migration",
    "schema",
    "quota",
)
_ARG_NAMES = {
    "lookup_customer": "customer_id",
    "get_order": "order_id",
    "get_invoice": "invoice_id",
    "get_balance": "account_id",
    "read_file": "path",
    "edit_file": "path",
    "delete_file": "path",
    "fetch_page": "url",
    "run_tests": "target",
}
_TOOL_ERRORS = ("ToolExecutionError", "TimeoutError", "HTTPStatusError", "ValidationError")
_LLM_ERRORS = (
    ("openai.APITimeoutError", "Request timed out."),
    ("anthropic.RateLimitError", "Error code: 429 - rate_limit_error"),
    ("httpx.ReadTimeout", "The read operation timed out"),
    ("openai.InternalServerError", "Error code: 500 - internal server error"),
)


class _Args:
    """Distinct call arguments within a session (so only loops repeat them)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.counter = 0

    def __call__(self, tool: str) -> str:
        self.counter += 1
        name = _ARG_NAMES.get(tool, "query")
        words = " ".join(self.rng.sample(_WORDS, 2))
        value = f"{words} #{self.counter}{self.rng.randrange(10_000)}"
        return json.dumps({name: value}, separators=(",", ":"))


def _weighted(rng: random.Random, weights: Sequence[float]) -> int:
    cumulative = list(accumulate(weights))
    return bisect.bisect(cumulative, rng.random() * cumulative[-1])


def _split(path: ToolPath, turns: int, rng: random.Random) -> list[list[str]]:
    """Contiguous chunks, one per turn; the first is never empty."""
    cuts = sorted(rng.randint(1, len(path)) for _ in range(turns - 1))
    bounds = [0, *cuts, len(path)]
    return [list(path[bounds[i] : bounds[i + 1]]) for i in range(turns)]


def _choose_labels(spec: TrafficSpec, rng: random.Random) -> list[set[str]]:
    labels: list[set[str]] = [set() for _ in range(spec.sessions)]
    for label in RARE_LABELS:
        count = round(spec.rate(label) * spec.sessions)
        for index in rng.sample(range(spec.sessions), count):
            labels[index].add(label)
    return labels


def _plan(spec: TrafficSpec, labels: set[str], rng: random.Random) -> _Session:
    agent_index = _weighted(rng, [a.weight for a in spec.agents])
    agent = spec.agents[agent_index]
    loop_variant = _weighted(rng, spec.loop_variant_weights) if TOOL_LOOP in labels else -1
    convention = GENAI if rng.random() < spec.genai_fraction else OPENINFERENCE
    if LLM_REFUSAL in labels or loop_variant == 1:
        convention = GENAI
    record_args = convention == OPENINFERENCE or rng.random() < spec.genai_arguments_fraction
    if loop_variant == 1:
        record_args = False
    elif loop_variant == 0 and convention == GENAI:
        record_args = True  # the with-arguments variant; variant 1 is the one without
    provider_key = (
        "gen_ai.system"
        if rng.random() < spec.genai_deprecated_system_fraction
        else "gen_ai.provider.name"
    )
    if RARE_PATH in labels:
        path = rng.choice(agent.rare_paths)
    else:
        path = agent.common_paths[_weighted(rng, agent.path_weights)]
    turn_count = _weighted(rng, spec.turn_weights) + 1
    args = _Args(rng)
    turns = [
        _Turn([_Call(tool, args(tool)) for tool in chunk])
        for chunk in _split(path, turn_count, rng)
    ]

    if loop_variant >= 0:
        turn = rng.choice(turns)
        position = rng.randint(0, len(turn.calls))
        if loop_variant == 2:
            first, second = rng.sample(agent.tools, 2)
            pair = (_Call(first, args(first)), _Call(second, args(second)))
            cycles = rng.randint(*spec.loop_pingpong_cycles)
            loop = [_Call(c.tool, c.args) for _ in range(cycles) for c in pair]
        else:
            tool = rng.choice(agent.tools)
            repeats = rng.randint(
                *(spec.loop_repeats_no_args if loop_variant else spec.loop_repeats)
            )
            same = args(tool)
            loop = [_Call(tool, same) for _ in range(repeats)]
        turn.calls[position:position] = loop
    if TOOL_ERROR in labels:
        turn = rng.choice([t for t in turns if t.calls])
        call = rng.choice(turn.calls)
        call.failed = True
        call.failed_status = rng.random() < spec.tool_error_status_fraction
    if ERROR_STATUS in labels:
        rng.choice(turns).llm_failures.append("status")
    if ERROR_EXCEPTION_ONLY in labels:
        rng.choice(turns).llm_failures.append("exception")
    if LLM_REFUSAL in labels:
        rng.choice(turns).refusal = True

    slow = rng.uniform(*spec.tail_latency_factor) if TAIL_LATENCY in labels else 1.0
    if convention == GENAI:
        key = f"conv_{rng.getrandbits(96):024x}"
    else:
        u = f"{rng.getrandbits(128):032x}"
        key = f"{u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]}"
    return _Session(
        key=key,
        agent_index=agent_index,
        labels=frozenset(labels) if labels else frozenset({ORDINARY}),
        convention=convention,
        record_args=record_args,
        provider_key=provider_key,
        slow=slow,
        start_s=rng.uniform(0.0, spec.time_span),
        turns=turns,
    )


# ------------------------------------------------------------------------------------------------
# Spans
# ------------------------------------------------------------------------------------------------

Attr = tuple[str, Any]
_SCOPES = (
    ("opentelemetry.instrumentation.openai_agents", "0.3.0"),
    ("openinference.instrumentation.langchain", "0.1.52"),
    ("opentelemetry.instrumentation.httpx", "0.55b0"),
)
_SCOPE_GENAI, _SCOPE_OI, _SCOPE_HTTP = range(3)
_INTERNAL, _CLIENT = Span.SPAN_KIND_INTERNAL, Span.SPAN_KIND_CLIENT
_MAX_FILLERS_PER_PARENT = 6
_NS = 1_000_000_000


@dataclass(slots=True)
class _SpanRecord:
    end_ns: int
    seq: int
    agent_index: int
    scope_index: int
    trace_id: bytes
    span_id: bytes
    parent_id: bytes
    name: str
    kind: int
    start_ns: int
    attrs: list[Attr]
    status: int = Status.STATUS_CODE_UNSET
    status_message: str = ""
    exception: tuple[str, str] | None = None


class _Emitter:
    """Turns session plans into span records with timestamps."""

    def __init__(self, spec: TrafficSpec, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        self.records: list[_SpanRecord] = []
        self.trace_sessions: dict[bytes, str] = {}
        self.session_spans: dict[str, int] = {}

    def _id(self, bits: int) -> bytes:
        return (self.rng.getrandbits(bits) | 1).to_bytes(bits // 8, "big")

    def _add(self, record: _SpanRecord) -> _SpanRecord:
        record.seq = len(self.records)
        self.records.append(record)
        return record

    def session(self, plan: _Session) -> None:
        rng, spec = self.rng, self.spec
        start_ns = int((spec.start_unix_seconds + plan.start_s) * _NS)
        before = len(self.records)
        for number, turn in enumerate(plan.turns):
            if number:
                start_ns += int(rng.uniform(*spec.think_seconds) * _NS)
            start_ns = self._turn(plan, turn, start_ns, number == 0)
        self.session_spans[plan.key] = len(self.records) - before

    def _turn(self, plan: _Session, turn: _Turn, start_ns: int, first: bool) -> int:
        rng, spec = self.rng, self.spec
        agent = spec.agents[plan.agent_index]
        genai = plan.convention == GENAI
        trace_id = self._id(128)
        self.trace_sessions[trace_id] = plan.key
        root = _SpanRecord(
            0, 0, plan.agent_index, _SCOPE_GENAI if genai else _SCOPE_OI, trace_id,
            self._id(64), b"", "", _INTERNAL, start_ns, [],
        )  # fmt: skip
        if genai:
            root.name = f"invoke_agent {agent.name}"
            root.attrs = [
                ("gen_ai.operation.name", "invoke_agent"),
                ("gen_ai.agent.name", agent.name),
                ("gen_ai.conversation.id", plan.key),
                (plan.provider_key, agent.provider),
                ("gen_ai.request.model", agent.model),
            ]
        else:
            root.name = f"{agent.name.capitalize()}Agent"
            root.attrs = [
                ("openinference.span.kind", "AGENT"),
                ("agent.name", agent.name),
                ("session.id", plan.key),
                ("input.value", "user turn" if first else "follow-up turn"),
            ]
        parent = root.span_id
        chain: _SpanRecord | None = None
        cursor = start_ns + self._ms(2, 20)
        if not genai:
            chain = _SpanRecord(
                0, 0, plan.agent_index, _SCOPE_OI, trace_id, self._id(64), parent,
                "AgentExecutor", _INTERNAL, cursor, [("openinference.span.kind", "CHAIN")],
            )  # fmt: skip
            parent = chain.span_id
            cursor += self._ms(1, 5)

        spans: list[_SpanRecord] = []
        fillable: list[_SpanRecord] = []
        steps = len(turn.calls) + 1
        failure_steps: dict[int, list[str]] = {}
        for kind in turn.llm_failures:
            failure_steps.setdefault(rng.randrange(steps), []).append(kind)
        for step in range(steps):
            for kind in failure_steps.get(step, ()):
                attempt = self._llm(plan, trace_id, parent, cursor, "tool_calls", failed=True)
                if kind == "status":
                    attempt.status = Status.STATUS_CODE_ERROR
                    attempt.status_message = rng.choice(_LLM_ERRORS)[1]
                else:
                    attempt.exception = rng.choice(_LLM_ERRORS)
                spans.append(attempt)
                cursor = attempt.end_ns + self._ms(200, 1200)  # backoff before the retry
            last = step == len(turn.calls)
            reason = ("content_filter" if turn.refusal else "stop") if last else "tool_calls"
            llm = self._llm(plan, trace_id, parent, cursor, reason)
            spans.append(llm)
            fillable.append(llm)
            cursor = llm.end_ns + self._ms(1, 15)
            if last:
                break
            tool = self._tool(plan, turn.calls[step], trace_id, parent, cursor)
            spans.append(tool)
            fillable.append(tool)
            cursor = tool.end_ns + self._ms(1, 15)

        structural = len(spans) + 1 + (chain is not None)
        fillers = rng.randint(*spec.spans_per_turn) - structural
        fillers = min(max(0, fillers), _MAX_FILLERS_PER_PARENT * len(fillable))
        per_parent = [0] * len(fillable)
        for _ in range(fillers):
            choices = [i for i, n in enumerate(per_parent) if n < _MAX_FILLERS_PER_PARENT]
            per_parent[rng.choice(choices)] += 1
        for owner, count in zip(fillable, per_parent, strict=True):
            spans.extend(self._fillers(plan, owner, count))

        if chain is not None:
            chain.end_ns = cursor
            spans.append(chain)
            cursor += self._ms(1, 5)
        root.end_ns = cursor
        spans.append(root)
        for record in spans:
            self._add(record)
        return root.end_ns

    def _ms(self, low: float, high: float) -> int:
        return int(self.rng.uniform(low, high) * 1_000_000)

    def _seconds(self, bounds: Range, slow: float) -> int:
        return int(self.rng.uniform(*bounds) * slow * _NS)

    def _llm(
        self,
        plan: _Session,
        trace_id: bytes,
        parent: bytes,
        start: int,
        finish: str,
        failed: bool = False,
    ) -> _SpanRecord:
        rng = self.rng
        agent = self.spec.agents[plan.agent_index]
        duration = self._seconds(agent.llm_seconds, plan.slow)
        if failed:
            duration //= 3
        input_tokens = rng.randint(*agent.input_tokens)
        output_tokens = 0 if failed else rng.randint(*agent.output_tokens)
        if finish == "content_filter":
            output_tokens = rng.randint(1, 20)
        if plan.convention == GENAI:
            name = f"chat {agent.model}"
            attrs: list[Attr] = [
                ("gen_ai.operation.name", "chat"),
                (plan.provider_key, agent.provider),
                ("gen_ai.request.model", agent.model),
            ]
            if not failed:
                attrs += [
                    ("gen_ai.response.model", agent.model),
                    ("gen_ai.response.id", f"resp_{rng.getrandbits(64):016x}"),
                    ("gen_ai.usage.input_tokens", input_tokens),
                    ("gen_ai.usage.output_tokens", output_tokens),
                    ("gen_ai.response.finish_reasons", (finish,)),
                ]
            kind = _CLIENT
        else:
            name = "ChatCompletion"
            attrs = [
                ("openinference.span.kind", "LLM"),
                ("llm.model_name", agent.model),
                ("llm.provider", agent.provider),
            ]
            if not failed:
                attrs += [
                    ("llm.token_count.prompt", input_tokens),
                    ("llm.token_count.completion", output_tokens),
                    ("llm.token_count.total", input_tokens + output_tokens),
                ]
            kind = _INTERNAL
        return _SpanRecord(
            start + duration, 0, plan.agent_index,
            _SCOPE_GENAI if plan.convention == GENAI else _SCOPE_OI,
            trace_id, self._id(64), parent, name, kind, start, attrs,
        )  # fmt: skip

    def _tool(
        self, plan: _Session, call: _Call, trace_id: bytes, parent: bytes, start: int
    ) -> _SpanRecord:
        agent = self.spec.agents[plan.agent_index]
        duration = self._seconds(agent.tool_seconds, plan.slow)
        if plan.convention == GENAI:
            name = f"execute_tool {call.tool}"
            attrs: list[Attr] = [
                ("gen_ai.operation.name", "execute_tool"),
                ("gen_ai.tool.name", call.tool),
                ("gen_ai.tool.type", "function"),
                ("gen_ai.tool.call.id", f"call_{self.rng.getrandbits(72):018x}"),
            ]
            if plan.record_args:
                attrs.append(("gen_ai.tool.call.arguments", call.args))
            scope = _SCOPE_GENAI
        else:
            name = call.tool
            arg = json.loads(call.args)
            schema = {
                "type": "object",
                "properties": {key: {"type": "string"} for key in arg},
                "required": list(arg),
            }
            attrs = [
                ("openinference.span.kind", "TOOL"),
                ("tool.name", call.tool),
                ("tool.parameters", json.dumps(schema, separators=(",", ":"))),
                ("input.value", call.args),
                ("input.mime_type", "application/json"),
            ]
            scope = _SCOPE_OI
        record = _SpanRecord(
            start + duration, 0, plan.agent_index, scope, trace_id, self._id(64), parent,
            name, _INTERNAL, start, attrs,
        )  # fmt: skip
        if call.failed:
            record.attrs.append(("error.type", self.rng.choice(_TOOL_ERRORS)))
            if call.failed_status:
                record.status = Status.STATUS_CODE_ERROR
                record.status_message = "tool call failed"
        return record

    def _fillers(self, plan: _Session, owner: _SpanRecord, count: int) -> Iterator[_SpanRecord]:
        """HTTP client spans inside ``owner``, one after the other."""
        if not count:
            return
        agent = self.spec.agents[plan.agent_index]
        is_llm = owner.kind == _CLIENT or owner.name == "ChatCompletion"
        host = f"api.{agent.provider}.com" if is_llm else self.rng.choice(agent.tool_hosts)
        method = "POST" if is_llm else self.rng.choice(("GET", "GET", "POST"))
        slot = max(1, (owner.end_ns - owner.start_ns) // count)
        for index in range(count):
            start = owner.start_ns + index * slot + self.rng.randrange(max(1, slot // 10))
            end = min(owner.end_ns, start + max(1, int(slot * self.rng.uniform(0.3, 0.85))))
            yield _SpanRecord(
                end, 0, plan.agent_index, _SCOPE_HTTP, owner.trace_id, self._id(64),
                owner.span_id, method, _CLIENT, start,
                [
                    ("http.request.method", method),
                    ("server.address", host),
                    ("url.path", "/v1/messages" if is_llm else f"/{method.lower()}"),
                    ("http.response.status_code", 200),
                ],
            )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Requests
# ------------------------------------------------------------------------------------------------


def _put(attributes: Any, key: str, value: Any) -> None:
    kv: KeyValue = attributes.add(key=key)
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    elif isinstance(value, str):
        kv.value.string_value = value
    else:
        values = kv.value.array_value.values
        for item in value:
            values.add(string_value=item)


def _batches(records: list[_SpanRecord], spec: TrafficSpec) -> Iterator[list[_SpanRecord]]:
    """Split end-ordered spans as a collector's batch processor would: by size or by time."""
    timeout = int(spec.batch_timeout_seconds * _NS)
    batch: list[_SpanRecord] = []
    for record in records:
        if batch and (len(batch) >= spec.batch_spans or record.end_ns - batch[0].end_ns > timeout):
            yield batch
            batch = []
        batch.append(record)
    if batch:
        yield batch


def _request(batch: list[_SpanRecord], spec: TrafficSpec) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    blocks: dict[tuple[int, int], ScopeSpans] = {}
    resources: dict[int, Any] = {}
    for record in batch:
        block = blocks.get((record.agent_index, record.scope_index))
        if block is None:
            resource_spans = resources.get(record.agent_index)
            if resource_spans is None:
                resource_spans = resources[record.agent_index] = request.resource_spans.add()
                attributes = resource_spans.resource.attributes
                _put(attributes, "service.name", f"{spec.agents[record.agent_index].name}-agent")
                _put(attributes, "service.version", "1.4.2")
                _put(attributes, "deployment.environment.name", "prod")
                _put(attributes, "telemetry.sdk.language", "python")
            block = blocks[(record.agent_index, record.scope_index)] = (
                resource_spans.scope_spans.add()
            )
            block.scope.name, block.scope.version = _SCOPES[record.scope_index]
        span = block.spans.add(
            trace_id=record.trace_id,
            span_id=record.span_id,
            parent_span_id=record.parent_id,
            name=record.name,
            kind=record.kind,
            start_time_unix_nano=record.start_ns,
            end_time_unix_nano=record.end_ns,
        )
        for key, value in record.attrs:
            _put(span.attributes, key, value)
        if record.status:
            span.status.code = record.status
            span.status.message = record.status_message
        if record.exception is not None:
            event = span.events.add(name="exception", time_unix_nano=record.end_ns)
            exc_type, message = record.exception
            _put(event.attributes, "exception.type", exc_type)
            _put(event.attributes, "exception.message", message)
            _put(
                event.attributes,
                "exception.stacktrace",
                f"Traceback (most recent call last):\n  ...\n{exc_type}: {message}",
            )
    return request


def generate(spec: TrafficSpec | None = None) -> Corpus:
    """Generate ``spec.sessions`` labelled sessions as batched OTLP export requests."""
    spec = spec or TrafficSpec()
    rng = random.Random(spec.seed)
    emitter = _Emitter(spec, rng)
    labels: dict[str, frozenset[str]] = {}
    agents: dict[str, str] = {}
    for session_labels in _choose_labels(spec, rng):
        plan = _plan(spec, session_labels, rng)
        labels[plan.key] = plan.labels
        agents[plan.key] = spec.agents[plan.agent_index].name
        emitter.session(plan)
    records = emitter.records
    records.sort(key=lambda r: (r.end_ns, r.seq))
    requests = [_request(batch, spec) for batch in _batches(records, spec)]
    return Corpus(
        spec=spec,
        requests=requests,
        labels=labels,
        session_spans=emitter.session_spans,
        trace_sessions=emitter.trace_sessions,
        session_agents=agents,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write labelled synthetic agent traffic.")
    parser.add_argument("--sessions", type=int, default=TrafficSpec.sessions)
    parser.add_argument("--seed", type=int, default=TrafficSpec.seed)
    parser.add_argument("--out", required=True, help="OTLP/JSON lines file to write")
    parser.add_argument("--labels", help="JSON file for the labels (session key -> labels)")
    args = parser.parse_args(argv)
    corpus = generate(TrafficSpec(seed=args.seed, sessions=args.sessions))
    corpus.write_jsonl(args.out)
    if args.labels:
        Path(args.labels).write_text(corpus.labels_json() + "\n", encoding="utf-8")
    counts = corpus.label_counts()
    print(json.dumps({"sessions": len(corpus.labels), "spans": corpus.span_count, **counts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
