"""What the sampler kept, from its file of OTLP/JSON lines (the `file://` downstream): sessions
and spans by the rule that kept them (`agent_sampler.rule` on every kept span), with the signals
that fired. With --sent (the demo app's --manifest), also what was sent, and whether every
conversation with a failed tool call or a tool loop was kept, whole.

    python deploy/local/summarize.py KEPT.jsonl [--sent SENT.jsonl] [--check]

Standard library only. --check exits 1 when a conversation that had to be kept was not, or a
kept one arrived incomplete.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SESSION_KEY = "gen_ai.conversation.id"


@dataclass
class KeptSession:
    rule: str = ""
    signals: set[str] = field(default_factory=set)
    trace_ids: set[str] = field(default_factory=set)
    span_ids: set[str] = field(default_factory=set)


def value(any_value: dict[str, object]) -> object:
    """An OTLP/JSON AnyValue as a Python value (arrays as lists)."""
    for kind, inner in any_value.items():
        if kind == "arrayValue":
            assert isinstance(inner, dict)
            return [value(v) for v in inner.get("values", [])]
        return inner
    return None


def spans(path: Path) -> Iterator[dict[str, object]]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            for resource_spans in json.loads(line).get("resourceSpans", []):
                for scope_spans in resource_spans.get("scopeSpans", []):
                    yield from scope_spans.get("spans", [])


def kept_sessions(path: Path) -> dict[str, KeptSession]:
    """Kept spans grouped by session: the conversation id of their trace's root, else the trace."""
    by_trace: dict[str, list[dict[str, object]]] = defaultdict(list)
    conversation_of: dict[str, str] = {}
    for span in spans(path):
        trace_id = str(span["traceId"])
        by_trace[trace_id].append(span)
        attributes = {a["key"]: value(a["value"]) for a in span.get("attributes", [])}  # type: ignore[attr-defined]
        if SESSION_KEY in attributes:
            conversation_of[trace_id] = str(attributes[SESSION_KEY])
        span["_attributes"] = attributes
    sessions: dict[str, KeptSession] = defaultdict(KeptSession)
    for trace_id, trace_spans in by_trace.items():
        session = sessions[conversation_of.get(trace_id, trace_id)]
        session.trace_ids.add(trace_id)
        for span in trace_spans:
            attributes = span["_attributes"]
            assert isinstance(attributes, dict)
            session.rule = str(attributes.get("agent_sampler.rule", "?"))
            session.signals.update(attributes.get("agent_sampler.signals") or [])
            session.span_ids.add(str(span["spanId"]))
    return dict(sessions)


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("kept", type=Path, help="the sampler's file:// output")
    parser.add_argument("--sent", type=Path, help="the demo app's --manifest")
    parser.add_argument("--check", action="store_true", help="exit 1 if a must-keep was lost")
    args = parser.parse_args(argv)

    kept = kept_sessions(args.kept) if args.kept.exists() else {}
    sent = []
    if args.sent:
        sent = [json.loads(line) for line in args.sent.read_text().splitlines() if line.strip()]
    kept_spans = sum(len(s.span_ids) for s in kept.values())
    if sent:
        total_spans = sum(c["spans"] for c in sent)
        print(
            f"sent: {len(sent)} conversations, {sum(c['turns'] for c in sent)} turns, "
            f"{total_spans} spans ({sum(c['failure'] for c in sent)} with a failed tool call, "
            f"{sum(c['loop'] for c in sent)} with a tool loop, "
            f"{sum(c['rare'] for c in sent)} with an unusual tool path)"
        )
        print(
            f"kept: {len(kept)} of {len(sent)} sessions ({percent(len(kept), len(sent))}), "
            f"{kept_spans} of {total_spans} spans, in {args.kept}"
        )
    else:
        print(f"kept: {len(kept)} sessions, {kept_spans} spans, in {args.kept}")

    by_rule: dict[str, list[KeptSession]] = defaultdict(list)
    for session in kept.values():
        by_rule[session.rule].append(session)
    print(f"  {'rule':<14}{'sessions':>9}{'spans':>8}  signals")
    for rule, sessions in sorted(by_rule.items(), key=lambda item: -len(item[1])):
        signals = sorted(set().union(*(s.signals for s in sessions))) or ["-"]
        spans_kept = sum(len(s.span_ids) for s in sessions)
        print(f"  {rule:<14}{len(sessions):>9}{spans_kept:>8}  {', '.join(signals)}")

    if not sent:
        return 0
    problems = []
    must_keep = {"failure": "a failed tool call", "loop": "a tool loop"}
    checks = []
    for flag, what in must_keep.items():
        due = [c for c in sent if c[flag]]
        lost = [c["conversation"] for c in due if c["conversation"] not in kept]
        checks.append(f"with {what} kept {len(due) - len(lost)}/{len(due)}")
        problems += [f"{conversation}: had {what}, not kept" for conversation in lost]
    by_id = {c["conversation"]: c for c in sent}
    whole = 0
    for key, session in kept.items():
        conversation = by_id.get(key)
        if conversation is None:
            problems.append(f"{key}: kept, but the app did not send it")
        elif set(conversation["trace_ids"]) != session.trace_ids:
            problems.append(f"{key}: kept {len(session.trace_ids)} of its turns only")
        elif len(session.span_ids) != conversation["spans"]:
            problems.append(f"{key}: kept {len(session.span_ids)} of {conversation['spans']} spans")
        else:
            whole += 1
    checks.append(f"kept conversations whole {whole}/{len(kept)}")
    print("checks: conversations " + "; ".join(checks))
    for problem in problems:
        print(f"  PROBLEM {problem}")
    return 1 if problems and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
