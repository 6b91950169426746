"""A small demo agent application for the deploy kit, instrumented with the real OpenTelemetry
SDK. It calls no model and no tool: it emits the spans an instrumented agent would, following
the OpenTelemetry GenAI conventions, and exports them over OTLP/gRPC.

- A *conversation* has 1 to --max-turns turns; each turn is one trace whose root span is
  `invoke_agent <agent>` and carries `gen_ai.conversation.id` (on the root only, as most GenAI
  instrumentations put it). Under it, `chat <model>` spans (model calls, with token usage) and
  `execute_tool <tool>` spans (tool calls, with their arguments).
- Conversations overlap: a new one starts every 1/--rate seconds, and each waits
  --think-time between its turns.
- Now and then (--failure-rate) a tool call fails (status ERROR, `error.type`, an `exception`
  event); now and then (--loop-rate) the model has the agent call the same tool with the same
  arguments over and over, a model call before each (a tool loop); rarely (--rare-rate) it
  takes an unusual tool path.

Span times are set explicitly, each turn ending when it is emitted, so the app needs no sleeps
beyond the pacing. With --manifest it writes one JSON line per conversation: its id, trace ids,
span count and what was done to it (`failure`, `loop`, `rare`), for whoever checks what the
sampler kept (deploy/local/run.sh).

    pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-grpc
    python agent_app.py --endpoint http://127.0.0.1:4317 --conversations 50
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

MODEL = "demo-model"  # nothing is called: the spans say what a real agent's would
PROVIDER = "demo"
MS = 1_000_000  # nanoseconds


@dataclass(frozen=True)
class Agent:
    name: str
    tools: tuple[str, ...]  # its usual tool path, in order
    rare_tool: str  # a tool it seldom needs


AGENTS = (
    Agent("travel-planner", ("search_flights", "search_hotels", "book_trip"), "escalate_to_human"),
    Agent("support-bot", ("lookup_order", "check_policy", "issue_refund"), "open_legal_case"),
)


@dataclass
class Conversation:
    id: str
    agent: Agent
    turns_left: int
    failure_turn: int | None  # the turn (0-based) whose tool call fails, if any
    loop_turn: int | None  # the turn that loops on one tool, if any
    rare_turn: int | None  # the turn that takes the unusual path, if any
    turns_done: int = 0
    trace_ids: list[str] = field(default_factory=list)
    spans: int = 0

    def record(self) -> dict[str, object]:
        return {
            "conversation": self.id,
            "agent": self.agent.name,
            "turns": self.turns_done,
            "trace_ids": self.trace_ids,
            "spans": self.spans,
            "failure": self.failure_turn is not None,
            "loop": self.loop_turn is not None,
            "rare": self.rare_turn is not None,
        }


@dataclass
class Step:
    """One child span of a turn: a model call or a tool call."""

    kind: str  # "chat" | "tool"
    duration_ms: int
    tool: str = ""
    arguments: str = ""
    fails: bool = False


class AgentApp:
    def __init__(self, exporter: OTLPSpanExporter, seed: int | None, service: str) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}))
        # Exports every few seconds, or when 512 spans are waiting (OTEL_BSP_* override these).
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("agent-tail-sampler.demo")
        self.random = random.Random(seed)

    def plan(self, conversation: Conversation) -> list[Step]:
        turn, rnd = conversation.turns_done, self.random
        agent = conversation.agent
        tools = list(agent.tools[: rnd.randint(1, len(agent.tools))])
        if turn == conversation.rare_turn:
            tools.insert(rnd.randint(0, len(tools)), agent.rare_tool)
        steps: list[Step] = []
        for position, tool in enumerate(tools):
            steps.append(Step("chat", rnd.randint(300, 1500)))
            arguments = json.dumps({"query": f"{tool} #{rnd.randint(1, 9999)}"})
            calls = 4 if turn == conversation.loop_turn and position == 0 else 1
            for call in range(calls):  # a loop: the model asks for the same call again
                if call:
                    steps.append(Step("chat", rnd.randint(300, 1500)))
                steps.append(Step("tool", rnd.randint(50, 800), tool, arguments))
        if turn == conversation.failure_turn:
            failing = [s for s in steps if s.kind == "tool"]
            rnd.choice(failing).fails = True
        steps.append(Step("chat", rnd.randint(300, 1500)))  # the answer
        return steps

    def turn(self, conversation: Conversation) -> None:
        """Emits one turn, its spans laid out back to back and ending now."""
        steps = self.plan(conversation)
        overhead_ms = 5
        total_ms = sum(s.duration_ms + overhead_ms for s in steps) + overhead_ms
        start = time.time_ns() - total_ms * MS
        agent = conversation.agent.name
        root = self.tracer.start_span(
            f"invoke_agent {agent}",
            kind=SpanKind.INTERNAL,
            start_time=start,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": agent,
                "gen_ai.provider.name": PROVIDER,
                "gen_ai.conversation.id": conversation.id,
            },
        )
        context = trace.set_span_in_context(root)
        now = start + overhead_ms * MS
        for step in steps:
            end = now + step.duration_ms * MS
            if step.kind == "chat":
                span = self.tracer.start_span(
                    f"chat {MODEL}",
                    context=context,
                    kind=SpanKind.CLIENT,
                    start_time=now,
                    attributes={
                        "gen_ai.operation.name": "chat",
                        "gen_ai.provider.name": PROVIDER,
                        "gen_ai.request.model": MODEL,
                        "gen_ai.usage.input_tokens": self.random.randint(200, 4000),
                        "gen_ai.usage.output_tokens": self.random.randint(20, 600),
                        "gen_ai.response.finish_reasons": ["stop"],
                    },
                )
            else:
                span = self.tracer.start_span(
                    f"execute_tool {step.tool}",
                    context=context,
                    kind=SpanKind.INTERNAL,
                    start_time=now,
                    attributes={
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": step.tool,
                        "gen_ai.tool.call.id": f"call_{self.random.getrandbits(48):012x}",
                        "gen_ai.tool.call.arguments": step.arguments,
                    },
                )
                if step.fails:
                    span.record_exception(
                        TimeoutError(f"{step.tool} did not answer in time"), timestamp=end
                    )
                    span.set_attribute("error.type", "TimeoutError")
                    span.set_status(Status(StatusCode.ERROR, f"{step.tool} timed out"))
            span.end(end_time=end)
            now = end + overhead_ms * MS
        root.end(end_time=now)
        conversation.trace_ids.append(format(root.get_span_context().trace_id, "032x"))
        conversation.spans += len(steps) + 1
        conversation.turns_done += 1
        conversation.turns_left -= 1

    def close(self) -> None:
        self.provider.shutdown()  # exports what is still waiting


def new_conversation(number: int, rnd: random.Random, args: argparse.Namespace) -> Conversation:
    turns = rnd.randint(1, args.max_turns)

    def maybe(rate: float) -> int | None:
        return rnd.randrange(turns) if rnd.random() < rate else None

    return Conversation(
        id=f"conv-{number:05d}-{rnd.getrandbits(32):08x}",
        agent=rnd.choice(AGENTS),
        turns_left=turns,
        failure_turn=maybe(args.failure_rate),
        loop_turn=maybe(args.loop_rate),
        rare_turn=maybe(args.rare_rate),
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--endpoint",
        default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
        help="OTLP/gRPC endpoint (default: $OTEL_EXPORTER_OTLP_ENDPOINT, else %(default)s); "
        "http:// is plaintext",
    )
    parser.add_argument(
        "--conversations", type=int, default=0, help="how many, then stop (0: until SIGTERM)"
    )
    parser.add_argument("--rate", type=float, default=1.0, help="new conversations per second")
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--think-time", type=float, default=2.0, help="seconds between turns")
    parser.add_argument("--failure-rate", type=float, default=0.1)
    parser.add_argument("--loop-rate", type=float, default=0.05)
    parser.add_argument("--rare-rate", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--service-name", default="demo-agent-app")
    parser.add_argument("--manifest", help="write one JSON line per conversation here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    exporter = OTLPSpanExporter(endpoint=args.endpoint, insecure=args.endpoint.startswith("http:"))
    app = AgentApp(exporter, args.seed, args.service_name)
    rnd = random.Random(None if args.seed is None else args.seed + 1)
    manifest: IO[str] | None = open(args.manifest, "w") if args.manifest else None
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    # Due turns in time order: (when, tie-breaker, conversation).
    due: list[tuple[float, int, Conversation]] = []
    started = finished = turns = 0
    next_start = time.monotonic()
    try:
        while not stopping:
            now = time.monotonic()
            more = args.conversations == 0 or started < args.conversations
            if more and now >= next_start:
                conversation = new_conversation(started, rnd, args)
                heapq.heappush(due, (now, started, conversation))
                started += 1
                next_start += 1.0 / args.rate
            if due and due[0][0] <= now:
                _, number, conversation = heapq.heappop(due)
                app.turn(conversation)
                turns += 1
                if conversation.turns_left:
                    heapq.heappush(due, (now + args.think_time, number, conversation))
                else:
                    finished += 1
                    if manifest:
                        manifest.write(json.dumps(conversation.record()) + "\n")
                        manifest.flush()
                continue
            if not more and not due:
                break
            wakes = ([next_start] if more else []) + ([due[0][0]] if due else [])
            time.sleep(max(0.0, min(min(wakes) - time.monotonic(), 0.5)))
    finally:
        app.close()
        if manifest:
            manifest.close()
    print(
        f"demo agent app: {finished} conversations ({turns} turns) sent to {args.endpoint}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
