"""The quality benchmark: which sessions does each method keep, at the same kept volume?

    python -m benchmarks.quality [--json] [--sessions N] [--seed S] [--config PATH]
                                 [--traffic default|varied|conversations]

A labelled corpus (``benchmarks.quality.generator``) is written as OTLP/JSON lines and goes
through three methods, each keeping the same number of sessions:

1. ``sampler``: this sampler, through ``sampler.replay.replay`` (the same Pipeline as live, time
   from span timestamps) with the default config (or ``--config``). Its kept session count sets
   the volume for the two baselines.
2. ``uniform``: uniform probabilistic sampling, ``baselines/uniform.yaml`` with its probability
   set so that it keeps as many sessions, replayed the same way.
3. ``status_probabilistic``: what most OpenTelemetry Collector users run, a tail sampling
   ``status_code: ERROR`` policy plus a probabilistic one. Computed in Python over the corpus,
   not replayed, because no rule can express it: the ``error`` condition is broader (it also
   counts exception events and ``error.type``) and ``attribute`` sees attributes, not the span
   status. A session is kept when any span has status ERROR, else when its session key's
   randomness passes the probability (the sampler's own ``keeps``), chosen to match the volume.
   The collector would decide per *trace*, not per session, so this baseline is generous: its
   kept sessions are always whole.

Kept sessions are read back from the output files: every kept span is mapped to its session by
trace id (the corpus knows every trace's session; kept root spans carry the key and must agree).
A session counts as kept when any of its spans was kept. Per method:

* ``recall``: per label, kept sessions with the label / sessions with the label;
* ``whole_session_rate``: kept sessions whose every span was kept / kept sessions;
* ``ordinary_span_fraction_kept``: spans of ordinary sessions kept / spans of ordinary sessions;
* ``kept_session_fraction`` (and ``kept_span_fraction``).

For the sampler also, per label (``ordinary`` and each rare population), the share of its
sessions on which each signal fired at any decision of the session (``signals_fired``) and the
share each rule kept (``rules_kept``); ``false_alarms`` repeats their ``ordinary`` column: what
each signal and rule costs on sessions that hold nothing worth keeping.

The last line printed is one JSON object: ``sampler``, ``uniform``, ``status_probabilistic``,
``corpus`` and ``targets`` (the sampler's goals and whether they are met).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from benchmarks.quality.generator import (
    ALL_LABELS,
    ERROR_LABELS,
    ORDINARY,
    RARE_PATH,
    SESSION_KEY_ATTRIBUTES,
    TAIL_LATENCY,
    TOOL_LOOP,
    Corpus,
    TrafficSpec,
    generate,
)
from benchmarks.quality.profiles import PROFILES
from sampler.config.load import load_config
from sampler.config.model import SamplerConfig
from sampler.otlp.json_codec import iter_json_lines
from sampler.replay import replay, summary_rows
from sampler.rules.facts import DecisionFacts
from sampler.rules.randomness import keeps, randomness_of_key
from sampler.rules.verdict import Verdict

UNIFORM_BASELINE = Path(__file__).with_name("baselines") / "uniform.yaml"
METHODS = ("sampler", "uniform", "status_probabilistic")


@dataclass(frozen=True)
class Target:
    name: str
    metric: Callable[[dict[str, Any]], float | None]
    bound: float
    at_least: bool  # True: value >= bound; False: value <= bound

    def check(self, result: dict[str, Any]) -> dict[str, Any]:
        value = self.metric(result)
        met = value is not None and (value >= self.bound if self.at_least else value <= self.bound)
        return {"min" if self.at_least else "max": self.bound, "value": value, "met": met}


def _recall(label: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda result: result["recall"][label]


TOOL_CYCLE_SIGNAL = "tool_cycle"


def _false_alarm(signal: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda result: result["false_alarms"]["signals"].get(signal, 0.0)


TARGETS = (
    *(Target(f"{label}_recall", _recall(label), 1.0, True) for label in ERROR_LABELS),
    Target(f"{TOOL_LOOP}_recall", _recall(TOOL_LOOP), 1.0, True),
    Target(f"{RARE_PATH}_recall", _recall(RARE_PATH), 0.95, True),
    Target(f"{TAIL_LATENCY}_recall", _recall(TAIL_LATENCY), 0.95, True),
    Target("ordinary_span_fraction_kept", lambda r: r["ordinary_span_fraction_kept"], 0.05, False),
    Target("whole_session_rate", lambda r: r["whole_session_rate"], 1.0, True),
    Target(f"{TOOL_CYCLE_SIGNAL}_false_alarm_rate", _false_alarm(TOOL_CYCLE_SIGNAL), 0.005, False),
)


# ------------------------------------------------------------------------------------------------
# Which sessions were kept
# ------------------------------------------------------------------------------------------------


def kept_spans_by_session(path: str | Path, corpus: Corpus) -> dict[str, int]:
    """Distinct kept spans per session key, from an OTLP/JSON lines output file."""
    kept: dict[str, set[bytes]] = {}
    for request in iter_json_lines(path):
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    session = corpus.trace_sessions[span.trace_id]
                    if not span.parent_span_id:
                        _check_root_key(span.attributes, session)
                    kept.setdefault(session, set()).add(span.span_id)
    return {session: len(spans) for session, spans in kept.items()}


def _check_root_key(attributes: Any, session: str) -> None:
    for kv in attributes:
        if kv.key in SESSION_KEY_ATTRIBUTES and kv.value.string_value != session:
            raise ValueError(f"kept root span names session {kv.value.string_value!r}, "
                             f"the corpus says {session!r}")  # fmt: skip


class DecisionLog:
    """Per session of the corpus, every signal that fired at any of its decisions (a session
    may be decided more than once: reopened by a later turn, or looked at again) and the rule
    that kept it. A replay decision observer (``sampler.replay.replay(observer=...)``): it sees
    every decision, a second look that keeps a held session included."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus
        self.signals: dict[str, set[str]] = {}
        self.kept_by: dict[str, str] = {}

    def decided(
        self, facts: DecisionFacts, verdict: Verdict, now: float, *, second_look: bool
    ) -> None:
        key = facts.session_key
        if key not in self.corpus.labels:  # a trace without its key: the session of its trace
            key = self.corpus.trace_sessions.get(bytes.fromhex(key), key)
        self.signals.setdefault(key, set()).update(facts.signals)
        if verdict.keep:
            self.kept_by.setdefault(key, verdict.rule)

    def shares(self) -> dict[str, dict[str, dict[str, float | None]]]:
        """``{"signals_fired": {signal: {label: share}}, "rules_kept": {rule: {...}}}``."""
        by_label = {label: self.corpus.sessions_with(label) for label in ALL_LABELS}
        names = sorted({s for signals in self.signals.values() for s in signals})
        rules = sorted(set(self.kept_by.values()))
        return {
            "signals_fired": {
                name: {
                    label: _ratio(sum(name in self.signals.get(k, ()) for k in keys), len(keys))
                    for label, keys in by_label.items()
                }
                for name in names
            },
            "rules_kept": {
                rule: {
                    label: _ratio(sum(self.kept_by.get(k) == rule for k in keys), len(keys))
                    for label, keys in by_label.items()
                }
                for rule in rules
            },
        }


def status_error_sessions(corpus: Corpus) -> set[str]:
    """Sessions with at least one span whose status is ERROR (what a status_code policy sees)."""
    found: set[str] = set()
    for request in corpus.requests:
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    if span.status.code == Status.STATUS_CODE_ERROR:
                        found.add(corpus.trace_sessions[span.trace_id])
    return found


def matching_probability(keys: Sequence[str], count: int) -> float:
    """The keep probability under which exactly ``count`` of ``keys`` are kept by ``keeps``.

    Searched rather than computed so that it follows whatever rule ``keeps`` implements.
    """
    if count >= len(keys):
        return 1.0
    randomness = [randomness_of_key(key) for key in keys]
    low, high = 0.0, 1.0  # kept(low) < count <= kept(high)
    for _ in range(64):
        middle = (low + high) / 2
        if sum(keeps(r, middle) for r in randomness) < count:
            low = middle
        else:
            high = middle
    return high


# ------------------------------------------------------------------------------------------------
# Scores
# ------------------------------------------------------------------------------------------------


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def score(corpus: Corpus, kept: dict[str, int]) -> dict[str, Any]:
    """The per-method metrics for one method's kept spans per session."""
    kept_sessions = {key for key, spans in kept.items() if spans}
    recall = {}
    for label in ALL_LABELS:
        sessions = corpus.sessions_with(label)
        recall[label] = _ratio(sum(key in kept_sessions for key in sessions), len(sessions))
    whole = sum(kept[key] >= corpus.session_spans[key] for key in kept_sessions)
    ordinary = corpus.sessions_with(ORDINARY)
    return {
        "recall": recall,
        "whole_session_rate": _ratio(whole, len(kept_sessions)),
        "ordinary_span_fraction_kept": _ratio(
            sum(kept.get(key, 0) for key in ordinary),
            sum(corpus.session_spans[key] for key in ordinary),
        ),
        "kept_session_fraction": _ratio(len(kept_sessions), len(corpus.labels)),
        "kept_span_fraction": _ratio(sum(kept.values()), corpus.span_count),
        "kept_sessions": len(kept_sessions),
    }


def write_uniform_config(probability: float, path: Path) -> None:
    document = yaml.safe_load(UNIFORM_BASELINE.read_text(encoding="utf-8"))
    (rule,) = document["rules"]
    rule["action"] = {"probability": probability}
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def run(
    spec: TrafficSpec,
    workdir: Path,
    config: SamplerConfig | None = None,
    generator: Callable[[TrafficSpec], Corpus] = generate,
) -> dict[str, Any]:
    """Generate (with ``generator``), replay, score; returns the benchmark's JSON object."""
    started = time.perf_counter()
    corpus = generator(spec)
    traffic = workdir / "traffic.jsonl"
    corpus.write_jsonl(traffic)
    keys = list(corpus.labels)

    sampler_out = workdir / "sampler-kept.jsonl"
    config = config if config is not None else load_config()
    log = DecisionLog(corpus)
    sampler_replay = replay(config, [str(traffic)], str(sampler_out), observer=log)
    sampler_kept = kept_spans_by_session(sampler_out, corpus)
    volume = sum(1 for spans in sampler_kept.values() if spans)

    probability = matching_probability(keys, volume)
    uniform_config = workdir / "uniform.yaml"
    write_uniform_config(probability, uniform_config)
    uniform_out = workdir / "uniform-kept.jsonl"
    replay(load_config(uniform_config), [str(traffic)], str(uniform_out))
    uniform_kept = kept_spans_by_session(uniform_out, corpus)

    errors = status_error_sessions(corpus)
    others = [key for key in keys if key not in errors]
    status_probability = matching_probability(others, max(0, volume - len(errors)))
    status_kept = {
        key: corpus.session_spans[key]
        for key in keys
        if key in errors or keeps(randomness_of_key(key), status_probability)
    }

    sampler = score(corpus, sampler_kept)
    sampler["rules"] = {
        str(row["rule"]): row["sessions_kept"] for row in summary_rows(sampler_replay.stats)
    }
    sampler.update(log.shares())
    sampler["false_alarms"] = {
        kind: {name: shares[ORDINARY] for name, shares in table.items()}
        for kind, table in (("signals", sampler["signals_fired"]), ("rules", sampler["rules_kept"]))
    }
    sampler["config"] = config.source
    uniform = score(corpus, uniform_kept) | {"probability": round(probability, 6)}
    status = score(corpus, status_kept) | {
        "probability": round(status_probability, 6),
        "status_error_sessions": len(errors),
    }
    targets: dict[str, Any] = {target.name: target.check(sampler) for target in TARGETS}
    targets["all_met"] = all(targets[target.name]["met"] for target in TARGETS)
    return {
        "sampler": sampler,
        "uniform": uniform,
        "status_probabilistic": status,
        "corpus": {
            "sessions": len(corpus.labels),
            "spans": corpus.span_count,
            "requests": len(corpus.requests),
            "seed": spec.seed,
            "agents": sorted(set(corpus.session_agents.values())),
            "labels": corpus.label_counts(),
        },
        "targets": targets,
        "elapsed_s": round(time.perf_counter() - started, 2),
    }


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_table(result: dict[str, Any]) -> str:
    """A readable table: one row per metric, one column per method, and the sampler's target."""
    rows: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = []
    for label in ALL_LABELS:
        count = result["corpus"]["labels"][label]
        rows.append((f"recall {label} ({count})", _recall(label), f"{label}_recall"))
    for metric in (
        "whole_session_rate",
        "ordinary_span_fraction_kept",
        "kept_session_fraction",
        "kept_span_fraction",
    ):
        rows.append((metric, lambda r, m=metric: r[m], metric))
    targets = result["targets"]
    header = ["metric", *METHODS, "target"]
    body = [header]
    for name, metric, target_name in rows:
        target = targets.get(target_name)
        goal = ""
        if target is not None:
            bound = target.get("min", target.get("max"))
            goal = (
                f"{'>=' if 'min' in target else '<='} {bound} {'ok' if target['met'] else 'MISS'}"
            )
        body.append([name, *(_cell(metric(result[m])) for m in METHODS), goal])
    widths = [max(len(row[i]) for row in body) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) if i in (0, len(header) - 1) else cell.rjust(w)
                  for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
        for row in body
    ]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.extend(format_fired(result["sampler"]))
    corpus = result["corpus"]
    lines.append("")
    lines.append(
        f"{corpus['sessions']} sessions, {corpus['spans']} spans, seed {corpus['seed']}; "
        f"uniform p={result['uniform']['probability']}, "
        f"status+probabilistic p={result['status_probabilistic']['probability']}; "
        f"sampler rules kept {result['sampler']['rules']}; {result['elapsed_s']} s"
    )
    return "\n".join(lines)


def format_fired(sampler: dict[str, Any]) -> list[str]:
    """Per signal (fired) and per rule (kept): the share of each label's sessions; the
    ``ordinary`` column is the false-alarm rate."""
    labels = [ORDINARY, *(label for label in ALL_LABELS if label != ORDINARY)]
    header = ["sampler: share of sessions", *labels]
    body = [header]
    for kind, table in (("signal", sampler["signals_fired"]), ("kept by", sampler["rules_kept"])):
        for name, shares in table.items():
            body.append([f"{kind} {name}", *(_cell(shares[label]) for label in labels)])
    widths = [max(len(row[i]) for row in body) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                  for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
        for row in body
    ]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality",
        description="Recall of rare agent sessions at equal kept volume: this sampler vs uniform "
        "and status-code + probabilistic sampling, on labelled synthetic traffic.",
    )
    parser.add_argument("--sessions", type=int, default=TrafficSpec.sessions)
    parser.add_argument("--seed", type=int, default=TrafficSpec.seed)
    parser.add_argument("--config", help="sampler config (default: the embedded one)")
    parser.add_argument(
        "--traffic",
        choices=sorted(PROFILES),
        default="default",
        help="traffic profile (benchmarks/quality/profiles.py): the generator's default; "
        "'varied', shaped differently to check that the defaults are not fitted to one corpus; "
        "'conversations', from a generator of its own: long conversations whose every turn "
        "repeats its agent's workflow, with legitimate iteration",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    shape, generator = PROFILES[args.traffic]
    spec = shape(TrafficSpec(seed=args.seed, sessions=args.sessions))
    config = load_config(args.config) if args.config else None
    with tempfile.TemporaryDirectory(prefix="quality-bench-") as workdir:
        result = run(spec, Path(workdir), config, generator)
    result["corpus"]["traffic"] = args.traffic
    if not args.json:
        print(format_table(result))
    print(json.dumps(result))
    sys.stdout.flush()
    return 0
