"""The two systems under test as processes, behind one interface.

- `SamplerSystem`: `agent-sampler run` with the embedded default config; only the listeners,
  the downstream (the benchmark's sink), the log level and `sessions.decision_wait` change.
- `CollectorSystem`: the collector built by `benchmarks/collector/build.sh`, with an OTLP/gRPC
  receiver, `tail_sampling` (the `PolicySet`), `batch` and an OTLP/gRPC exporter to the same
  sink, its own metrics on a loopback Prometheus endpoint.

Both are pinned with `taskset` (which execs: the child's pid is the system's), listen on
loopback only, and are stopped by the harness that started them. `counters` reads the same
questions from each one's own metrics: spans accepted, anything refused or lost, how much
was decided against how much arrived (spans for the sampler, traces for the collector), what
is still held, and what was exported.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from benchmarks.throughput.processes import (
    LOOPBACK,
    cpu_seconds,
    default_base_config,
    free_port,
    sampler_config,
    status_kib,
    taskset,
)
from benchmarks.versus_collector.policies import PolicySet

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0

Sample = tuple[str, dict[str, str], float]


def scrape_samples(port: int) -> list[Sample]:
    """Every sample of a Prometheus text endpoint on loopback."""
    url = f"http://{LOOPBACK}:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return parse_samples(response.read().decode())


def parse_samples(text: str) -> list[Sample]:
    """(name, labels, value) of every sample of a Prometheus text exposition."""
    samples: list[Sample] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels: dict[str, str] = {}
        for part in rest.rstrip("}").split('",'):
            key, sep, raw = part.partition('="')
            if sep:
                labels[key.strip(",")] = raw.rstrip('"')
        samples.append((name, labels, float(value)))
    return samples


@dataclass(frozen=True)
class Snapshot:
    """One system process at one moment."""

    at: float  # time.monotonic()
    cpu_seconds: float
    rss_kib: int
    peak_rss_kib: int
    samples: list[Sample]

    def total(self, name: str, **labels: str) -> float:
        """Sum of the samples named ``name`` whose labels include ``labels``."""
        return sum(
            value
            for sample_name, sample_labels, value in self.samples
            if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
        )

    def by_label(self, name: str, label: str, **labels: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for sample_name, sample_labels, value in self.samples:
            if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items()):
                key = sample_labels.get(label, "")
                out[key] = out.get(key, 0.0) + value
        return out


@dataclass(frozen=True)
class Counters:
    """The same questions asked of either system (cumulative since it started)."""

    accepted_spans: float
    refused_spans: float  # told the sender to retry (RESOURCE_EXHAUSTED)
    lost: float  # spans or traces gone without a decision, or kept but not delivered
    pressure: float  # decisions forced early by memory pressure (the sampler's stress relief)
    decided: float  # in `unit`s
    arrived: float  # in `unit`s
    held: float  # in `unit`s, waiting for a decision now
    exported_spans: float
    unit: str  # "spans" (sampler) or "traces" (collector)

    def minus(self, before: Counters) -> Counters:
        return Counters(
            accepted_spans=self.accepted_spans - before.accepted_spans,
            refused_spans=self.refused_spans - before.refused_spans,
            lost=self.lost - before.lost,
            pressure=self.pressure - before.pressure,
            decided=self.decided - before.decided,
            arrived=self.arrived - before.arrived,
            held=self.held,
            exported_spans=self.exported_spans - before.exported_spans,
            unit=self.unit,
        )


class System(Protocol):
    name: str

    @property
    def target(self) -> str: ...

    @property
    def pid(self) -> int: ...

    def start(self) -> None: ...

    def snapshot(self) -> Snapshot: ...

    def counters(self, snapshot: Snapshot) -> Counters: ...

    def idle(self, snapshot: Snapshot) -> bool:
        """Everything that arrived has been decided (held sessions aside)."""
        ...

    def terminate(self) -> int:
        """Stop cleanly (SIGTERM: decide what is left, deliver, exit); the exit code."""
        ...

    def kill(self) -> None: ...


@dataclass
class _Process:
    """A pinned child process with a log file, a gRPC port and a metrics port."""

    workdir: Path
    name: str
    cpus: tuple[int, ...]
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def _spawn(self, command: list[str], env: dict[str, str] | None = None) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [*taskset(self.cpus), *command],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )

    def _wait_metrics(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            try:
                scrape_samples(self.metrics_port)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT_S}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def snapshot(self) -> Snapshot:
        pid = self.pid
        return Snapshot(
            at=time.monotonic(),
            cpu_seconds=cpu_seconds(pid),
            rss_kib=status_kib(pid, "VmRSS"),
            peak_rss_kib=status_kib(pid, "VmHWM"),
            samples=scrape_samples(self.metrics_port),
        )

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# ------------------------------------------------------------------------------------------------
# agent-tail-sampler
# ------------------------------------------------------------------------------------------------

S_ACCEPTED = "agent_sampler_spans_accepted_total"
S_REFUSED = "agent_sampler_spans_refused_total"
S_INVALID = "agent_sampler_spans_invalid_total"
S_DECIDED = "agent_sampler_spans_decided_total"
S_RELIEF = "agent_sampler_stress_relief_sessions_total"
S_EXPORT_FAILED = "agent_sampler_exporter_failed_spans_total"
S_SENT = "agent_sampler_exporter_spans_sent_total"
S_BUFFER_SPANS = "agent_sampler_buffer_spans"
S_BUFFER_SESSIONS = "agent_sampler_buffer_sessions"


@dataclass
class SamplerSystem(_Process):
    """`agent-sampler run`: the embedded default config, the benchmark's listeners and sink."""

    sink_port: int = 0
    decision_wait_s: float = 3.0

    def config_text(self) -> str:
        return sampler_config(
            default_base_config(),
            grpc_port=self.grpc_port,
            metrics_port=self.metrics_port,
            sink_port=self.sink_port,
            sessions={"decision_wait": f"{self.decision_wait_s:g}s"},
        )

    def start(self) -> None:
        config = self.workdir / f"{self.name}.yaml"
        config.write_text(self.config_text())
        script = Path(sys.executable).with_name("agent-sampler")
        base = [str(script)] if script.exists() else [sys.executable, "-m", "sampler"]
        self._spawn([*base, "run", "--config", str(config)])
        self._wait_metrics()

    def counters(self, snapshot: Snapshot) -> Counters:
        t = snapshot.total
        return Counters(
            accepted_spans=t(S_ACCEPTED),
            refused_spans=t(S_REFUSED),
            lost=t(S_INVALID) + t(S_EXPORT_FAILED),
            pressure=t(S_RELIEF),
            decided=t(S_DECIDED),
            arrived=t(S_ACCEPTED),
            held=t(S_BUFFER_SPANS),
            exported_spans=t(S_SENT),
            unit="spans",
        )

    def idle(self, snapshot: Snapshot) -> bool:
        return snapshot.total(S_BUFFER_SESSIONS) == 0


# ------------------------------------------------------------------------------------------------
# OpenTelemetry Collector with tail_sampling
# ------------------------------------------------------------------------------------------------

TS = "otelcol_processor_tail_sampling_"
C_ACCEPTED = "otelcol_receiver_accepted_spans"
C_REFUSED = "otelcol_receiver_refused_spans"
C_RECEIVER_FAILED = "otelcol_receiver_failed_spans"
C_SENT = "otelcol_exporter_sent_spans"
C_SEND_FAILED = "otelcol_exporter_send_failed_spans"
C_ENQUEUE_FAILED = "otelcol_exporter_enqueue_failed_spans"
C_NEW_TRACES = TS + "new_trace_id_received"
C_DECIDED = TS + "global_count_traces_sampled"
C_POLICY = TS + "count_traces_sampled"
C_DROPPED_EARLY = TS + "sampling_trace_dropped_too_early"
C_TOO_LARGE = TS + "traces_dropped_too_large"
C_ON_MEMORY = TS + "sampling_traces_on_memory"
C_CACHE_RELEASES = TS + "early_releases_from_cache_decision"


def _counter(snapshot: Snapshot, name: str, **labels: str) -> float:
    # The collector's Prometheus names carry no `_total` suffix; accept either.
    return snapshot.total(name, **labels) + snapshot.total(name + "_total", **labels)


@dataclass(frozen=True)
class CollectorSettings:
    """What the operator sizes besides the policies (all also in `collector_config`)."""

    decision_wait_s: int = 3
    num_traces: int = 1_000_000  # more than (traces per second) x (decision_wait + 1 s) here
    decision_cache_size: int = 200_000  # as the sampler's decision_cache.max_sessions
    batch_spans: int = 8192  # as the sampler's exporter.batch_max_spans...
    batch_timeout: str = "200ms"  # ...and batch_timeout
    queue_spans: int = 200_000  # as the sampler's exporter.queue_max_spans


def collector_config(
    policies: PolicySet,
    settings: CollectorSettings,
    *,
    grpc_port: int,
    metrics_port: int,
    sink_port: int,
) -> dict[str, Any]:
    """receivers [otlp] -> processors [tail_sampling, batch] -> exporters [otlp_grpc]."""
    return {
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {
                        "endpoint": f"{LOOPBACK}:{grpc_port}",
                        "max_recv_msg_size_mib": 64,
                    }
                }
            }
        },
        "processors": {
            "tail_sampling": {
                "decision_wait": f"{settings.decision_wait_s}s",
                "num_traces": settings.num_traces,
                "sample_on_first_match": True,
                "decision_cache": {
                    "sampled_cache_size": settings.decision_cache_size,
                    "non_sampled_cache_size": settings.decision_cache_size,
                },
                "policies": policies.collector_policies(),
            },
            "batch": {
                "send_batch_size": settings.batch_spans,
                "send_batch_max_size": settings.batch_spans,
                "timeout": settings.batch_timeout,
            },
        },
        "exporters": {
            "otlp_grpc": {
                "endpoint": f"{LOOPBACK}:{sink_port}",
                "tls": {"insecure": True},
                "compression": "none",  # as the sampler's exporter: loopback
                "sending_queue": {
                    "enabled": True,
                    "sizer": "items",
                    "queue_size": settings.queue_spans,
                },
            }
        },
        "service": {
            "telemetry": {
                "logs": {"level": "warn"},
                "metrics": {
                    "level": "normal",
                    "readers": [
                        {
                            "pull": {
                                "exporter": {"prometheus": {"host": LOOPBACK, "port": metrics_port}}
                            }
                        }
                    ],
                },
            },
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["tail_sampling", "batch"],
                    "exporters": ["otlp_grpc"],
                }
            },
        },
    }


@dataclass
class CollectorSystem(_Process):
    """The collector binary on `collector_config`."""

    binary: Path = Path()
    policies: PolicySet | None = None
    settings: CollectorSettings = CollectorSettings()
    sink_port: int = 0

    def config(self) -> dict[str, Any]:
        assert self.policies is not None
        return collector_config(
            self.policies,
            self.settings,
            grpc_port=self.grpc_port,
            metrics_port=self.metrics_port,
            sink_port=self.sink_port,
        )

    def start(self) -> None:
        config = self.workdir / f"{self.name}.yaml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        self._spawn([str(self.binary), "--config", str(config)])
        self._wait_metrics()

    def counters(self, snapshot: Snapshot) -> Counters:
        c = _counter
        return Counters(
            accepted_spans=c(snapshot, C_ACCEPTED),
            refused_spans=c(snapshot, C_REFUSED),
            lost=c(snapshot, C_RECEIVER_FAILED)
            + c(snapshot, C_SEND_FAILED)
            + c(snapshot, C_ENQUEUE_FAILED)
            + c(snapshot, C_DROPPED_EARLY)
            + c(snapshot, C_TOO_LARGE),
            pressure=0.0,
            decided=c(snapshot, C_DECIDED),
            arrived=c(snapshot, C_NEW_TRACES),
            held=snapshot.total(C_ON_MEMORY),
            exported_spans=c(snapshot, C_SENT),
            unit="traces",
        )

    def idle(self, snapshot: Snapshot) -> bool:
        counters = self.counters(snapshot)
        return counters.decided >= counters.arrived and counters.held == 0

    @staticmethod
    def policy_keeps(snapshot: Snapshot) -> dict[str, int]:
        """Traces each policy voted to keep (with first-match, the first one that did)."""
        votes = snapshot.by_label(C_POLICY, "policy", decision="sampled")
        votes_total = snapshot.by_label(C_POLICY + "_total", "policy", decision="sampled")
        return {k: int(v) for k, v in sorted({**votes, **votes_total}.items())}
