"""The decisions on a fixed corpus stay exactly what they were: the guard for hot-path work.

Optimising extraction, buffering or scoring must not change which spans are kept, nor how they
are annotated. A labelled corpus (the quality generator, fixed seed) is replayed with the
default config; a digest of every kept span (ids, rule, adjusted count, signals) is compared
with the one recorded in ``tests/testdata/decisions_golden.json``.

When a change *means* to alter decisions (a new signal, a retuned default), regenerate the file
and say so in the commit: ``python -m tests.unit.test_decisions_golden --write``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.quality.generator import TrafficSpec, generate
from sampler.config_file import load_config
from sampler.otlp.json_codec import iter_json_lines
from sampler.replay import replay
from sampler.rules.verdict import ADJUSTED_COUNT_ATTRIBUTE, RULE_ATTRIBUTE, SIGNALS_ATTRIBUTE

GOLDEN = Path(__file__).parents[1] / "testdata" / "decisions_golden.json"
SPEC = TrafficSpec(seed=11, sessions=600)


def decisions(workdir: Path) -> dict[str, Any]:
    corpus = generate(SPEC)
    traffic, kept = workdir / "traffic.jsonl", workdir / "kept.jsonl"
    corpus.write_jsonl(traffic)
    replay(load_config(), [str(traffic)], str(kept))
    rows = []
    rules: Counter[str] = Counter()
    for request in iter_json_lines(kept):
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    annotations = {
                        kv.key: kv.value
                        for kv in span.attributes
                        if kv.key in (RULE_ATTRIBUTE, ADJUSTED_COUNT_ATTRIBUTE, SIGNALS_ATTRIBUTE)
                    }
                    rule = annotations[RULE_ATTRIBUTE].string_value
                    rules[rule] += 1
                    signals = [
                        v.string_value for v in annotations[SIGNALS_ATTRIBUTE].array_value.values
                    ]
                    rows.append(
                        f"{span.trace_id.hex()}/{span.span_id.hex()} {rule} "
                        f"{annotations[ADJUSTED_COUNT_ATTRIBUTE].double_value!r} "
                        f"{','.join(signals)} {span.trace_state}"
                    )
    rows.sort()
    digest = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    return {"kept_spans": len(rows), "spans_by_rule": dict(sorted(rules.items())), "sha256": digest}


def test_decisions_on_the_fixed_corpus_are_unchanged(tmp_path: Path) -> None:
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert decisions(tmp_path) == expected


if __name__ == "__main__":  # python -m tests.unit.test_decisions_golden --write
    import tempfile

    with tempfile.TemporaryDirectory() as workdir:
        result = decisions(Path(workdir))
    print(json.dumps(result, indent=2))
    if "--write" in sys.argv:
        GOLDEN.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
