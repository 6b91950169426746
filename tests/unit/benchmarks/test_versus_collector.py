"""The pieces of the side-by-side benchmark that need no process: the model of the collector's
policies (its hash, its thresholds, the baseline tuned to a volume), the id rewriting that keeps
the collector's decision cache honest, metric parsing and profile summaries."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from benchmarks.loadgen.driver import WindowResult
from benchmarks.loadgen.pool import TRACE_ID_PREFIX_BYTES, PoolSpec, RoundRenderer, build_pools
from benchmarks.quality.generator import ORDINARY, Corpus, TrafficSpec, generate
from benchmarks.versus_collector.harness import (
    TRACE_ID_RIGHT_HALF,
    Window,
    judge,
    mean_recall,
    parse_args,
    rewrite_both_halves,
)
from benchmarks.versus_collector.policies import (
    PolicySet,
    corpus_traces,
    fnv1a64,
    hash_threshold,
    nearest_rank,
    predicted_kept_spans,
    trace_hash,
    tune_percentage,
)
from benchmarks.versus_collector.profile import summarise
from benchmarks.versus_collector.systems import (
    CollectorSettings,
    Counters,
    Snapshot,
    collector_config,
    parse_samples,
)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return generate(TrafficSpec(seed=2, sessions=300))


def test_fnv1a64_matches_the_reference_vectors() -> None:
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"foobar") == 0x85944171F73967E8


def test_the_hash_threshold_keeps_about_the_percentage() -> None:
    # Random ids, as trace ids are: FNV-1a spreads ids differing in their last byte poorly.
    rng = random.Random(1)
    ids = [rng.randbytes(16) for _ in range(20_000)]
    kept = sum(trace_hash(trace_id) <= hash_threshold(10.0) for trace_id in ids)
    assert 0.09 <= kept / len(ids) <= 0.11
    assert hash_threshold(0.0) == 0
    assert hash_threshold(100.0) == (1 << 64) - 1


def test_thresholds_sit_above_99_percent_of_ordinary_traces(corpus: Corpus) -> None:
    traces = corpus_traces(corpus)
    assert sum(t.spans for t in traces) == corpus.span_count
    ordinary = [t for t in traces if corpus.labels[t.session] == {ORDINARY}]
    policies = PolicySet.from_corpus(corpus, traces)
    slower = sum(t.duration_ms > policies.latency_threshold_ms for t in ordinary)
    larger = sum(t.spans >= policies.min_spans for t in ordinary)
    assert slower <= 0.01 * len(ordinary)
    assert larger <= 0.01 * len(ordinary)
    assert nearest_rank([5, 1, 3, 2, 4], 0.5) == 3


def test_every_error_trace_is_kept_without_the_baseline(corpus: Corpus) -> None:
    policies = PolicySet.from_corpus(corpus, corpus_traces(corpus))
    for trace in corpus_traces(corpus):
        if trace.status_error or trace.refusal or trace.error_type or trace.exception_event:
            assert policies.keeps_deterministically(trace)


@pytest.mark.parametrize("share", [0.05, 0.09, 0.2], ids=["5%", "9%", "20%"])
def test_the_tuned_baseline_is_the_smallest_reaching_the_volume(
    corpus: Corpus, share: float
) -> None:
    traces = corpus_traces(corpus)
    base = PolicySet.from_corpus(corpus, traces)
    target = round(share * corpus.span_count)
    percentage = tune_percentage(base, traces, target)
    assert predicted_kept_spans(base.with_percentage(percentage), traces) >= target
    if percentage > 0:
        below = base.with_percentage(max(0.0, percentage - 1e-3))
        assert predicted_kept_spans(below, traces) < target


def test_collector_config_samples_then_batches_then_exports() -> None:
    policies = PolicySet(latency_threshold_ms=42_000, min_spans=29, sampling_percentage=4.5)
    config = collector_config(
        policies, CollectorSettings(), grpc_port=1, metrics_port=2, sink_port=3
    )
    assert config["service"]["pipelines"]["traces"]["processors"] == ["tail_sampling", "batch"]
    tail = config["processors"]["tail_sampling"]
    assert tail["decision_wait"] == "3s" and tail["sample_on_first_match"] is True
    names = [p["name"] for p in tail["policies"]]
    assert names[0] == "errors" and names[-1] == "baseline"
    assert tail["policies"][-1]["probabilistic"]["sampling_percentage"] == 4.5
    assert config["exporters"]["otlp_grpc"]["endpoint"] == "127.0.0.1:3"


def test_rounds_differ_in_both_halves_of_every_trace_id() -> None:
    pools = build_pools(PoolSpec(sessions=20, batch_spans=64))
    (pool,) = rewrite_both_halves(pools).full
    renderer = RoundRenderer(pool)
    halves: list[set[bytes]] = []
    for round_number in (1, 2):
        data = b"".join(renderer.render(round_number))
        ids = {data[o : o + 16] for o in pools.full[0].trace_id_offsets}
        prefix = round_number.to_bytes(TRACE_ID_PREFIX_BYTES, "big")
        right = TRACE_ID_RIGHT_HALF
        assert all(i[:4] == prefix and i[right : right + 4] == prefix for i in ids)
        halves.append({i[right:] for i in ids})
    assert not halves[0] & halves[1]  # the collector's decision cache sees new traces


def test_prometheus_samples_keep_their_labels() -> None:
    text = "\n".join(
        [
            "# TYPE x counter",
            'otelcol_x_count_traces_sampled{decision="sampled",policy="errors"} 45',
            "agent_sampler_spans_accepted_total 3.5e+06",
            'odd{x="a,b",y=""} 1',
        ]
    )
    samples = parse_samples(text)
    assert samples[0][1] == {"decision": "sampled", "policy": "errors"}
    assert samples[1] == ("agent_sampler_spans_accepted_total", {}, 3_500_000.0)
    assert samples[2][1] == {"x": "a,b", "y": ""}


def test_profile_summary_counts_a_function_once_per_stack(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "run (a.py:1);decide (b.py:10);score (c.py:5) 30\n"
        "run (a.py:1);decide (b.py:12);decide (b.py:14) 10\n"
        "run (a.py:1);parse (d.py:3) 60\n"
    )
    summary = summarise(raw)
    inclusive = {row["function"]: row["share"] for row in summary["inclusive"]}
    own = {row["function"]: row["share"] for row in summary["self"]}
    assert summary["samples"] == 100
    assert "run (a.py)" not in inclusive  # the trunk of every sample
    assert inclusive == {"parse (d.py)": 0.6, "decide (b.py)": 0.4, "score (c.py)": 0.3}
    assert own == {"parse (d.py)": 0.6, "score (c.py)": 0.3, "decide (b.py)": 0.1}


def test_quick_changes_the_defaults_and_flags_win() -> None:
    options, json_only = parse_args(["--quick", "--json", "--window", "2"])
    assert json_only and options.sessions == 200 and options.window_s == 2.0
    assert parse_args([])[0].sessions == 3000
    recall: dict[str, float | None] = {
        "error_status": 1.0,
        "error_exception_only": 1.0,
        "tool_error": 1.0,
        "llm_refusal": 1.0,
        "tool_loop": 0.5,
        "rare_path": 0.0,
        "tail_latency": None,  # no such session in a small corpus: left out of the mean
        "ordinary": 0.05,  # not an interesting population
    }
    assert mean_recall({"recall": recall}) == round(4.5 / 6, 4)


def _window(decided: float, arrived: float, held: float, refused: int = 0) -> Window:
    counters = Counters(
        accepted_spans=arrived * 15,
        refused_spans=0,
        lost=0,
        pressure=0,
        decided=decided,
        arrived=arrived,
        held=held,
        exported_spans=0,
        unit="traces",
    )
    before = Snapshot(at=0.0, cpu_seconds=0.0, rss_kib=0, peak_rss_kib=0, samples=[])
    after = Snapshot(at=8.0, cpu_seconds=7.0, rss_kib=0, peak_rss_kib=0, samples=[])
    return Window(WindowResult(seconds=8.0, requests_refused=refused), before, after, counters)


@pytest.mark.parametrize(
    ("decided", "held", "refused", "sustained"),
    [
        (8000, 3500, 0, True),  # 1,000 traces/s arrive, 3.5 s of them undecided: keeping up
        (7000, 4000, 0, True),  # a window with one decision tick fewer than its seconds
        (6000, 4000, 0, False),  # decisions falling behind
        (8000, 5000, 0, False),  # 5 s of traffic undecided: a growing backlog
        (8000, 3500, 2, False),  # refusals
    ],
    ids=["steady", "one-tick-short", "behind", "backlog", "refused"],
)
def test_a_window_is_sustained_when_decisions_keep_pace_without_refusals(
    decided: float, held: float, refused: int, sustained: bool
) -> None:
    options = parse_args([])[0]  # decision_wait 3 s
    reasons = judge(_window(decided, 8000, held, refused), options)
    assert (not reasons) == sustained, reasons
