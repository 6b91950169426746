"""The collector's policy set: what a skilled operator writes for this traffic, and its model.

The `tail_sampling` processor decides per *trace* with OR-ed policies. The set mirrors what the
sampler's default rules look for, as far as the processor's policy types can express it:

- `errors`: `status_code: [ERROR]`, a span with status ERROR;
- `llm-refusal`: `string_attribute` `gen_ai.response.finish_reasons` = `content_filter`, as
  briefed. It never matches: the attribute is a string *array* and the policy reads the value
  with `Value.Str()`, which is empty for arrays;
- `llm-refusal-ottl`: `ottl_condition` `ContainsValue(...finish_reasons, "content_filter")`,
  what an operator who tested the line above writes instead;
- `tool-errors`: `string_attribute` `error.type` matching `.+` (regex): any `error.type`;
- `http-5xx`: `numeric_attribute` `http.response.status_code` in [500, 599];
- `exception-events`: `ottl_condition` on span events, `spanevent.name == "exception"`: a
  recorded exception whose span status was left unset;
- `slow`: `latency`, `threshold_ms` the p99 of ordinary traces (the policy keeps longer ones);
- `many-spans`: `span_count`, `min_spans` the p99 of ordinary traces + 1 (it is inclusive);
- `baseline`: `probabilistic`, a share of the rest, its percentage tuned to the sampler's
  kept volume.

The two `ottl_condition` policies go beyond the brief (`status_code`, `latency`, `span_count`,
string and numeric attributes, probabilistic): they are what a careful operator adds, and both
favour the collector. `sample_on_first_match` is on (the sampler's rules are first-match too),
with the probabilistic baseline last.

The p99 thresholds come from the labelled *ordinary* traces of the corpus, which an operator
would not have (they would measure all traffic): that favours the collector too.

`PolicySet.keeps` is a Python model of the same set over whole traces. It predicts which traces
the collector keeps, so that the baseline's percentage can be chosen before the collector runs
(`tune_percentage`); the run then measures what the collector really kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Status

from benchmarks.quality.generator import ORDINARY, Corpus

HASH_SALT = "default-hash-seed"  # the processor's default, written out
MAX_UINT64 = (1 << 64) - 1
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3

FINISH_REASONS = "gen_ai.response.finish_reasons"
ERROR_TYPE = "error.type"
HTTP_STATUS = "http.response.status_code"
CONTENT_FILTER = "content_filter"


@dataclass(frozen=True, slots=True)
class TraceFacts:
    """What the collector's policies can see of one whole trace."""

    trace_id: bytes
    session: str
    spans: int
    duration_ms: int  # latest end minus earliest start, truncated as Go's Milliseconds()
    status_error: bool
    refusal: bool  # content_filter among gen_ai.response.finish_reasons (an array)
    error_type: bool
    http_5xx: bool
    exception_event: bool


def corpus_traces(corpus: Corpus) -> list[TraceFacts]:
    """Every trace of the corpus, in order of first appearance."""
    acc: dict[bytes, dict[str, Any]] = {}
    for request in corpus.requests:
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    t = acc.get(span.trace_id)
                    if t is None:
                        t = acc[span.trace_id] = {
                            "spans": 0,
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                            "status_error": False,
                            "refusal": False,
                            "error_type": False,
                            "http_5xx": False,
                            "exception_event": False,
                        }
                    t["spans"] += 1
                    t["start"] = min(t["start"], span.start_time_unix_nano)
                    t["end"] = max(t["end"], span.end_time_unix_nano)
                    t["status_error"] |= span.status.code == Status.STATUS_CODE_ERROR
                    t["exception_event"] |= any(e.name == "exception" for e in span.events)
                    for kv in span.attributes:
                        if kv.key == FINISH_REASONS:
                            values = kv.value.array_value.values
                            t["refusal"] |= any(v.string_value == CONTENT_FILTER for v in values)
                        elif kv.key == ERROR_TYPE:
                            t["error_type"] |= bool(kv.value.string_value)
                        elif kv.key == HTTP_STATUS:
                            t["http_5xx"] |= 500 <= kv.value.int_value <= 599
    return [
        TraceFacts(
            trace_id=trace_id,
            session=corpus.trace_sessions[trace_id],
            spans=t["spans"],
            duration_ms=(t["end"] - t["start"]) // 1_000_000,
            status_error=t["status_error"],
            refusal=t["refusal"],
            error_type=t["error_type"],
            http_5xx=t["http_5xx"],
            exception_event=t["exception_event"],
        )
        for trace_id, t in acc.items()
    ]


def nearest_rank(values: Sequence[int], q: float) -> int:
    """The ``q`` quantile of ``values`` by the nearest-rank method."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def fnv1a64(data: bytes) -> int:
    value = _FNV_OFFSET
    for byte in data:
        value = ((value ^ byte) * _FNV_PRIME) & MAX_UINT64
    return value


def trace_hash(trace_id: bytes, salt: str = HASH_SALT) -> int:
    """The probabilistic policy's hash: FNV-1a 64 over the salt, then the trace id."""
    return fnv1a64(salt.encode() + trace_id)


def hash_threshold(percentage: float) -> int:
    """The policy keeps a trace when its hash is at most this (``calculateThreshold``)."""
    return int(MAX_UINT64 * Fraction(percentage / 100.0))


@dataclass(frozen=True)
class PolicySet:
    """The collector's policies with their thresholds (see the module docstring)."""

    latency_threshold_ms: int
    min_spans: int
    sampling_percentage: float = 0.0
    hash_salt: str = HASH_SALT

    @staticmethod
    def from_corpus(
        corpus: Corpus, traces: Iterable[TraceFacts], quantile: float = 0.99
    ) -> PolicySet:
        ordinary = [t for t in traces if corpus.labels[t.session] == {ORDINARY}]
        return PolicySet(
            latency_threshold_ms=nearest_rank([t.duration_ms for t in ordinary], quantile),
            min_spans=nearest_rank([t.spans for t in ordinary], quantile) + 1,
        )

    def with_percentage(self, percentage: float) -> PolicySet:
        return replace(self, sampling_percentage=percentage)

    def collector_policies(self) -> list[dict[str, Any]]:
        """The `policies` list of the processor's config, in evaluation order."""
        refusal = f'ContainsValue(span.attributes["{FINISH_REASONS}"], "{CONTENT_FILTER}")'
        return [
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {
                "name": "llm-refusal",
                "type": "string_attribute",
                "string_attribute": {"key": FINISH_REASONS, "values": [CONTENT_FILTER]},
            },
            {
                "name": "llm-refusal-ottl",
                "type": "ottl_condition",
                "ottl_condition": {"error_mode": "ignore", "span": [refusal]},
            },
            {
                "name": "tool-errors",
                "type": "string_attribute",
                "string_attribute": {
                    "key": ERROR_TYPE,
                    "values": [".+"],
                    "enabled_regex_matching": True,
                },
            },
            {
                "name": "http-5xx",
                "type": "numeric_attribute",
                "numeric_attribute": {"key": HTTP_STATUS, "min_value": 500, "max_value": 599},
            },
            {
                "name": "exception-events",
                "type": "ottl_condition",
                "ottl_condition": {
                    "error_mode": "ignore",
                    "spanevent": ['spanevent.name == "exception"'],
                },
            },
            {
                "name": "slow",
                "type": "latency",
                "latency": {"threshold_ms": self.latency_threshold_ms},
            },
            {
                "name": "many-spans",
                "type": "span_count",
                "span_count": {"min_spans": self.min_spans},
            },
            {
                "name": "baseline",
                "type": "probabilistic",
                "probabilistic": {
                    "sampling_percentage": self.sampling_percentage,
                    "hash_salt": self.hash_salt,
                },
            },
        ]

    def keeps_deterministically(self, trace: TraceFacts) -> bool:
        """Whether a policy other than the baseline keeps the whole trace. The string_attribute
        refusal policy never does (an array attribute); its OTTL twin does."""
        return (
            trace.status_error
            or trace.refusal
            or trace.error_type
            or trace.http_5xx
            or trace.exception_event
            or trace.duration_ms > self.latency_threshold_ms
            or trace.spans >= self.min_spans
        )

    def keeps(self, trace: TraceFacts) -> bool:
        if self.keeps_deterministically(trace):
            return True
        threshold = hash_threshold(self.sampling_percentage)
        return trace_hash(trace.trace_id, self.hash_salt) <= threshold


def tune_percentage(policies: PolicySet, traces: Sequence[TraceFacts], target_spans: int) -> float:
    """The smallest baseline percentage (to 1e-4) under which the model keeps at least
    ``target_spans`` spans: the collector's volume is then at least the sampler's."""
    fixed = sum(t.spans for t in traces if policies.keeps_deterministically(t))
    missing = target_spans - fixed
    if missing <= 0:
        return 0.0
    rest = sorted(
        (trace_hash(t.trace_id, policies.hash_salt), t.spans)
        for t in traces
        if not policies.keeps_deterministically(t)
    )
    needed = None
    running = 0
    for value, spans in rest:
        running += spans
        if running >= missing:
            needed = value
            break
    if needed is None:
        return 100.0
    percentage = math.ceil(needed / MAX_UINT64 * 100.0 * 1e4) / 1e4
    while hash_threshold(percentage) < needed:  # float rounding: step up until it is kept
        percentage = round(percentage + 1e-4, 4)
    return min(100.0, percentage)


def predicted_kept_spans(policies: PolicySet, traces: Iterable[TraceFacts]) -> int:
    return sum(t.spans for t in traces if policies.keeps(t))
