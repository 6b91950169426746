"""The processes of the throughput benchmark, and what is read from them.

The sampler runs as `agent-sampler run` (pinned with `taskset -c`), the sink and the load
generator workers as Python modules of this repository. CPU time and memory come from
/proc/PID/stat and /proc/PID/status, the sampler's counters from its Prometheus endpoint.
Everything listens on loopback only; every process is ended by the harness that started it.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from benchmarks.loadgen.driver import Command, WindowResult
from sampler.config.load import default_config_path

LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

ACCEPTED = "agent_sampler_spans_accepted_total"
REFUSED = "agent_sampler_spans_refused_total"
BUFFER_SPANS = "agent_sampler_buffer_spans"
BUFFER_BYTES = "agent_sampler_buffer_bytes"
HELD_SPANS = "agent_sampler_held_spans"  # dropped sessions held for a second look
SENT = "agent_sampler_exporter_spans_sent_total"
QUEUED = "agent_sampler_exporter_queue_spans"
CACHE = "agent_sampler_decision_cache_entries"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Pinning:
    """Which CPUs each process is pinned to (sampler i on ``sampler_cpus[i % len]``)."""

    sampler_cpus: tuple[int, ...]
    loadgen_cpus: tuple[int, ...]
    enabled: bool

    @staticmethod
    def choose(
        processes: int,
        sampler_cpus: Sequence[int] | None = None,
        loadgen_cpus: Sequence[int] | None = None,
        enabled: bool = True,
    ) -> Pinning:
        """By default the samplers take the first allowed CPUs, one each, and the generator
        the rest; with too few CPUs the generator shares the last one."""
        allowed = sorted(os.sched_getaffinity(0))
        if not enabled or shutil.which("taskset") is None or len(allowed) < 2:
            return Pinning((), (), False)
        samplers = tuple(sampler_cpus or allowed[: min(processes, len(allowed))])
        loadgen = tuple(loadgen_cpus or (allowed[processes:] or allowed[-1:]))
        if not set(samplers) | set(loadgen) <= set(allowed):
            raise ValueError(f"CPUs {samplers} / {loadgen} are not all in {allowed}")
        return Pinning(samplers, loadgen, True)

    def sampler_cpu(self, index: int) -> tuple[int, ...]:
        return (self.sampler_cpus[index % len(self.sampler_cpus)],) if self.enabled else ()

    @property
    def shared(self) -> bool:
        """Whether the generator shares a CPU with a sampler (too few CPUs)."""
        return bool(set(self.sampler_cpus) & set(self.loadgen_cpus))

    def describe(self) -> dict[str, Any]:
        if not self.enabled:
            return {"enabled": False}
        return {
            "enabled": True,
            "sampler_cpus": list(self.sampler_cpus),
            "loadgen_cpus": list(self.loadgen_cpus),
            "loadgen_shares_a_sampler_cpu": self.shared,
        }


def taskset(cpus: Sequence[int]) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, cpus))] if cpus else []


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    # fields[0] is the state (field 3 of proc(5)); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/PID/status, such as VmRSS or VmHWM (the peak RSS)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name == key:
                return int(value.split()[0])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def scrape(port: int) -> dict[str, float]:
    """Prometheus samples summed over their labels, by metric name."""
    url = f"http://{LOOPBACK}:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name = head.split("{", 1)[0]
        totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def wait_until_ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sampler exited with {proc.returncode}:\n{_tail(log)}")
        try:
            url = f"http://{LOOPBACK}:{port}/readyz"
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"sampler not ready after {READY_TIMEOUT_S}s:\n{_tail(log)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def sampler_config(
    base_text: str,
    *,
    grpc_port: int,
    metrics_port: int,
    sink_port: int,
    sessions: dict[str, Any],
) -> str:
    """The base config (the embedded default unless told) with the benchmark's listeners, its
    sink as the downstream (uncompressed: loopback, and the collector compared with sends
    uncompressed too), quiet logs, and the given `sessions` keys overridden."""
    doc = yaml.safe_load(base_text) or {}
    doc["receivers"] = {
        "grpc": {"listen": f"{LOOPBACK}:{grpc_port}"},
        "http": {"listen": ""},
        "max_message_size": "64MiB",
    }
    doc["sessions"] = {**(doc.get("sessions") or {}), **sessions}
    doc["exporter"] = {
        **(doc.get("exporter") or {}),
        "url": f"grpc://{LOOPBACK}:{sink_port}",
        "compression": "none",
    }
    doc["metrics"] = {"listen": f"{LOOPBACK}:{metrics_port}"}
    doc["logging"] = {"level": "warning", "format": "text"}
    return yaml.safe_dump(doc, sort_keys=False)


def default_base_config() -> str:
    return default_config_path().read_text(encoding="utf-8")


@dataclass(frozen=True)
class Snapshot:
    """One sampler process at one moment."""

    at: float  # time.monotonic()
    cpu_seconds: float
    rss_kib: int
    peak_rss_kib: int
    metrics: dict[str, float]

    def metric(self, name: str) -> float:
        return self.metrics.get(name, 0.0)


@dataclass
class SamplerProcess:
    """`agent-sampler run` on loopback, pinned to `cpus`."""

    workdir: Path
    name: str
    config_text_for: Callable[[int, int], str]  # (grpc port, metrics port) -> config text
    cpus: tuple[int, ...]
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> SamplerProcess:
        config = self.workdir / f"{self.name}.yaml"
        config.write_text(self.config_text_for(self.grpc_port, self.metrics_port))
        script = Path(sys.executable).with_name("agent-sampler")
        base = [str(script)] if script.exists() else [sys.executable, "-m", "sampler"]
        with self.log_path.open("wb") as log:
            # taskset execs the sampler: the child's pid is the sampler's.
            self.proc = subprocess.Popen(
                [*taskset(self.cpus), *base, "run", "--config", str(config)],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def wait_ready(self) -> None:
        assert self.proc is not None
        wait_until_ready(self.metrics_port, self.proc, self.log_path)

    def snapshot(self) -> Snapshot:
        pid = self.pid
        return Snapshot(
            at=time.monotonic(),
            cpu_seconds=cpu_seconds(pid),
            rss_kib=status_kib(pid, "VmRSS"),
            peak_rss_kib=status_kib(pid, "VmHWM"),
            metrics=scrape(self.metrics_port),
        )

    def stop(self) -> None:
        """Killed, not stopped cleanly: a clean stop would decide every buffered session."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class _Lines:
    """Lines from a child's stdout, with a timeout (no threads)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.fd = stream.fileno()
        self.buffer = b""

    def read(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer after {timeout_s:.0f}s")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                chunk = os.read(self.fd, 1 << 16)
                if not chunk:
                    raise EOFError("the process closed its output")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message


@dataclass
class Child:
    """A Python child of this repository talking JSON lines over stdin/stdout."""

    proc: subprocess.Popen[bytes]
    lines: _Lines
    log_path: Path

    @staticmethod
    def start(module: str, args: Sequence[str], cpus: Sequence[int], log_path: Path) -> Child:
        repo = Path(__file__).resolve().parents[2]  # `python -m` finds benchmarks/ from here
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [*taskset(cpus), sys.executable, "-m", module, *args],
                cwd=repo,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert proc.stdout is not None
        return Child(proc, _Lines(proc.stdout), log_path)

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def expect(self, event: str, timeout_s: float) -> dict[str, Any]:
        try:
            message = self.lines.read(timeout_s)
        except (TimeoutError, EOFError) as exc:
            raise RuntimeError(f"{self.log_path.stem}: {exc}\n{_tail(self.log_path)}") from exc
        if message.get("event") != event:
            raise RuntimeError(f"{self.log_path.stem}: expected {event}, got {message}")
        return message

    def stop(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.close()  # the sink and the workers exit at end of input
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(5)
        finally:
            self.proc.stdout.close()


class Workers:
    """The load generator's worker processes, driven together."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children

    @staticmethod
    def start(pools_path: Path, count: int, cpus: Sequence[int], workdir: Path) -> Workers:
        children = [
            Child.start(
                "benchmarks.loadgen",
                ["--pools", str(pools_path), "--worker-index", str(i), "--workers", str(count)],
                cpus,
                workdir / f"loadgen-{i}.log",
            )
            for i in range(count)
        ]
        return Workers(children)

    def wait_ready(self) -> None:
        for child in self.children:
            child.expect("ready", READY_TIMEOUT_S)

    @property
    def pids(self) -> list[int]:
        return [child.proc.pid for child in self.children]

    def start_run(self, command: Command) -> None:
        """Each worker gets an even share of the rate and of `stop_after_spans`."""
        count = len(self.children)
        share = Command(
            **{
                **command.to_json(),
                "targets": command.targets,
                "rate": None if command.rate is None else command.rate / count,
                "stop_after_spans": None
                if command.stop_after_spans is None
                else -(-command.stop_after_spans // count),
            }
        )
        for child in self.children:
            child.send({"op": "run", "command": share.to_json()})

    def expect_all(self, event: str, timeout_s: float) -> None:
        for child in self.children:
            child.expect(event, timeout_s)

    def results(self, timeout_s: float) -> WindowResult:
        return WindowResult.merge(
            [
                WindowResult.from_json(child.expect("result", timeout_s)["result"])
                for child in self.children
            ]
        )

    def stop(self) -> None:
        for child in self.children:
            child.stop()


def start_sink(cpus: Sequence[int], workdir: Path) -> tuple[Child, int]:
    sink = Child.start("benchmarks.throughput.sink", [], cpus, workdir / "sink.log")
    port = int(sink.expect("listening", READY_TIMEOUT_S)["port"])
    return sink, port
