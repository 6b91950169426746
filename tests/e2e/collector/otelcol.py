"""A real OpenTelemetry Collector (built by benchmarks/collector/build.sh) as a subprocess, the
shipped deployment configs adapted for a test, and an agent application on the real SDK."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from tests.e2e.harness import LOOPBACK, READY_TIMEOUT_S, Received, free_port, wait_until

ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = ROOT / "config"
BUILD_SCRIPT = ROOT / "benchmarks" / "collector" / "build.sh"

# The short timings every test sampler runs with, so that sessions are decided in about a
# second. Retries are fast too, and the collector flushes its batches every 50 ms.
SAMPLER_SESSIONS = {
    "decision_wait": "1s",
    "root_end_grace": "300ms",
    "open_trace_wait": "3s",
    "tick": "50ms",
}
SAMPLER_EXPORTER = {
    "batch_timeout": "20ms",
    "retry": {"initial_interval": "100ms", "max_interval": "500ms", "max_elapsed_time": "30s"},
}
RULES = [
    {"name": "keep-errors", "when": {"error": True}, "action": "keep"},
    {"name": "drop-rest", "action": "drop"},
]
COLLECTOR_RETRY = {
    "enabled": True,
    "initial_interval": "200ms",
    "max_interval": "1s",
    "max_elapsed_time": "60s",
}
SPANS_PER_TURN = 4  # invoke_agent root, two execute_tool, one chat


def adapt(name: str, target: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """Writes a copy of config/NAME changed by ``edit`` (``${env:...}`` references are kept)."""
    document = yaml.safe_load((CONFIG_DIR / name).read_text())
    edit(document)
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    return target


def sampler_config(
    name: str, target: Path, rules: list[dict[str, Any]] = RULES, **sessions: object
) -> Path:
    """config/NAME with the test timings, ``rules`` and ``sessions``."""

    def edit(document: dict[str, Any]) -> None:
        document["sessions"] = {**document.get("sessions", {}), **SAMPLER_SESSIONS, **sessions}
        document["rules"] = rules
        exporter = document.setdefault("exporter", {})
        exporter.update(SAMPLER_EXPORTER)
        exporter["url"] = "file://unused.jsonl"  # the harness passes --downstream

    return adapt(name, target, edit)


@dataclass
class Collector:
    """The collector binary on one config, or several that it merges (``extra_configs``, as
    ``--config A --config B``); ``env`` fills the configs' ``${env:...}``."""

    binary: Path
    config_path: Path
    workdir: Path
    env: dict[str, str]
    extra_configs: tuple[Path, ...] = ()
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self) -> Collector:
        self.log_path = self.workdir / f"collector-{self.metrics_port}.log"
        env = {
            **os.environ,
            **self.env,
            "COLLECTOR_METRICS_HOST": LOOPBACK,
            "COLLECTOR_METRICS_PORT": str(self.metrics_port),
        }
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    *(f"--config={path}" for path in (self.config_path, *self.extra_configs)),
                ],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        wait_until(self._ready, READY_TIMEOUT_S, f"collector ready\n{self.logs()}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"collector exited with {self.proc.returncode}:\n{self.logs()}")
        return "Everything is ready" in self.logs()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of one of the collector's own metrics whose labels include
        ``labels`` (0 when it has no sample yet)."""
        url = f"http://{LOOPBACK}:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            if head.split("{", 1)[0] in (name, f"{name}_total") and all(
                f'{k}="{v}"' in head for k, v in labels.items()
            ):
                total += float(value)
        return total

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@dataclass(frozen=True)
class Turn:
    """One agent turn as the application sent it: one trace, SPANS_PER_TURN spans."""

    conversation: str | None
    trace_id: str
    span_ids: frozenset[str]
    error: bool


class AgentApp:
    """The instrumented application: the real SDK exporting OTLP/gRPC to a collector. Each turn
    goes out in one Export request (a flush after each), so a turn is never split between two
    requests and the tests stay deterministic."""

    def __init__(self, port: int, *, key_on_every_span: bool = False) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": "agent-app"}))
        self.processor = BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"{LOOPBACK}:{port}", insecure=True),
            schedule_delay_millis=60_000,
        )
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("tests.e2e.collector")
        self.key_on_every_span = key_on_every_span
        self.turns: list[Turn] = []

    def turn(self, conversation: str | None, *, error: bool = False) -> Turn:
        """One turn of ``conversation`` (None: a lone trace without a session key). The key is
        on the root span only, as most GenAI instrumentations put it, unless
        ``key_on_every_span``; the error, if any, is a failed tool call."""
        key = {"gen_ai.conversation.id": conversation} if conversation else {}
        child_key = key if self.key_on_every_span else {}
        span_ids = []
        with self.tracer.start_as_current_span(
            "invoke_agent planner",
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "planner",
                **key,
            },
        ) as root:
            for tool in ("search", "fetch"):
                with self.tracer.start_as_current_span(
                    f"execute_tool {tool}",
                    attributes={
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": tool,
                        **child_key,
                    },
                ) as tool_span:
                    span_ids.append(tool_span.get_span_context().span_id)
                    if error and tool == "fetch":
                        tool_span.set_status(Status(StatusCode.ERROR, "fetch failed"))
            with self.tracer.start_as_current_span(
                "chat", attributes={"gen_ai.operation.name": "chat", **child_key}
            ) as chat:
                span_ids.append(chat.get_span_context().span_id)
            span_ids.append(root.get_span_context().span_id)
            trace_id = format(root.get_span_context().trace_id, "032x")
        assert self.processor.force_flush(10_000), "the SDK could not export a turn"
        turn = Turn(conversation, trace_id, frozenset(format(s, "016x") for s in span_ids), error)
        self.turns.append(turn)
        return turn

    def close(self) -> None:
        self.provider.shutdown()


def span_ids(turns: Iterable[Turn]) -> set[str]:
    return {span_id for turn in turns for span_id in turn.span_ids}


def by_conversation(turns: Iterable[Turn]) -> dict[str, list[Turn]]:
    out: dict[str, list[Turn]] = {}
    for turn in turns:
        out.setdefault(turn.conversation or turn.trace_id, []).append(turn)
    return out


def assert_annotated(spans: Iterable[Received], rule: str = "keep-errors") -> None:
    """Every kept span says why (our three attributes) and with what weight."""
    for received in spans:
        assert received.attributes["agent_sampler.rule"] == rule, received
        assert received.attributes["agent_sampler.adjusted_count"] == 1.0, received
        assert {"error", "tool_error"} <= set(received.attributes["agent_sampler.signals"])
