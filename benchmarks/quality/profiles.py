"""Named traffic profiles for the quality benchmark.

``default`` is the generator's own spec. ``varied`` is traffic shaped differently on purpose,
so that the sampler's defaults are checked against more than the corpus they were tuned on:
six other agents (other names, tools and latencies), a steeper and a flatter path mix, rare
populations at half and at twice the default rates, slow sessions only 4-10 times slower (not
8-20), longer conversations, fewer and larger requests, and mostly GenAI instrumentation.
``conversations`` comes from a generator of its own (``conversations.py``): 1 to 12 turns, each
repeating its agent's workflow, with legitimate iteration (issue 12).

Each profile is a traffic spec and the generator that reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from benchmarks.quality import conversations
from benchmarks.quality.generator import (
    ERROR_EXCEPTION_ONLY,
    ERROR_STATUS,
    LLM_REFUSAL,
    RARE_PATH,
    TAIL_LATENCY,
    TOOL_ERROR,
    TOOL_LOOP,
    AgentProfile,
    Corpus,
    TrafficSpec,
    generate,
)

VARIED_AGENTS: tuple[AgentProfile, ...] = (
    AgentProfile(
        name="triage",
        weight=0.3,
        model="gemini-2.5-flash",
        provider="gcp.gemini",
        tools=("classify", "route", "lookup_account", "open_case", "page_oncall"),
        common_paths=(
            ("classify", "route"),
            ("classify",),
            ("lookup_account", "classify", "route"),
        ),
        path_weights=(0.6, 0.3, 0.1),
        rare_paths=(("page_oncall",), ("route", "classify"), ("open_case", "page_oncall")),
        llm_seconds=(0.2, 0.8),
        tool_seconds=(0.02, 0.2),
        input_tokens=(200, 900),
        output_tokens=(10, 120),
    ),
    AgentProfile(
        name="planner",
        weight=0.1,
        model="o3",
        provider="openai",
        tools=("search_docs", "draft_plan", "estimate", "check_calendar", "book_slot", "notify"),
        common_paths=(
            ("search_docs", "draft_plan", "estimate"),
            ("check_calendar", "book_slot", "notify"),
            ("search_docs", "draft_plan"),
            ("draft_plan", "estimate", "notify"),
            ("check_calendar", "notify"),
            ("search_docs", "estimate"),
        ),
        path_weights=(0.2, 0.2, 0.2, 0.15, 0.15, 0.1),
        rare_paths=(("book_slot",), ("notify", "search_docs", "book_slot")),
        llm_seconds=(5.0, 20.0),
        tool_seconds=(0.5, 2.0),
        input_tokens=(6000, 20000),
        output_tokens=(1000, 6000),
    ),
    AgentProfile(
        name="sql-analyst",
        weight=0.2,
        model="claude-haiku-4",
        provider="anthropic",
        tools=("list_tables", "describe_table", "run_query", "plot", "export_csv"),
        common_paths=(
            ("list_tables", "describe_table", "run_query"),
            ("run_query",),
            ("describe_table", "run_query", "plot"),
            ("run_query", "run_query", "plot"),
        ),
        path_weights=(0.35, 0.35, 0.2, 0.1),
        rare_paths=(("export_csv",), ("plot", "list_tables"), ("run_query", "export_csv", "plot")),
        llm_seconds=(0.8, 2.5),
        tool_seconds=(0.2, 6.0),
        input_tokens=(1500, 5000),
        output_tokens=(100, 800),
        tool_hosts=("warehouse.internal",),
    ),
    AgentProfile(
        name="translator",
        weight=0.25,
        model="gpt-4o-mini",
        provider="openai",
        tools=("detect_language", "translate", "glossary_lookup"),
        common_paths=(("translate",), ("detect_language", "translate")),
        path_weights=(0.7, 0.3),
        rare_paths=(("glossary_lookup", "translate"), ("translate", "detect_language")),
        llm_seconds=(0.3, 1.0),
        tool_seconds=(0.01, 0.1),
        input_tokens=(100, 2000),
        output_tokens=(100, 2000),
    ),
    AgentProfile(
        name="devops",
        weight=0.1,
        model="gpt-4.1",
        provider="openai",
        tools=("get_logs", "get_metrics", "restart_service", "scale", "rollback", "open_incident"),
        common_paths=(
            ("get_logs", "get_metrics"),
            ("get_metrics",),
            ("get_logs",),
            ("get_metrics", "scale"),
        ),
        path_weights=(0.4, 0.3, 0.2, 0.1),
        rare_paths=(("rollback",), ("restart_service", "get_logs"), ("open_incident", "scale")),
        llm_seconds=(1.0, 4.0),
        tool_seconds=(0.3, 3.0),
        input_tokens=(2000, 12000),
        output_tokens=(200, 1500),
        tool_hosts=("k8s.internal", "prometheus.internal"),
    ),
    AgentProfile(
        name="onboarding",
        weight=0.05,
        model="mistral-large",
        provider="mistral_ai",
        tools=("create_user", "send_welcome", "assign_buddy", "grant_access"),
        common_paths=(
            ("create_user", "send_welcome"),
            ("create_user", "grant_access", "send_welcome"),
        ),
        path_weights=(0.6, 0.4),
        rare_paths=(("grant_access",), ("assign_buddy", "create_user")),
        llm_seconds=(0.5, 2.0),
        tool_seconds=(0.1, 1.0),
        input_tokens=(500, 2500),
        output_tokens=(50, 400),
    ),
)

VARIED_RATES: dict[str, float] = {
    ERROR_STATUS: 0.005,
    ERROR_EXCEPTION_ONLY: 0.005,
    TOOL_ERROR: 0.02,
    LLM_REFUSAL: 0.005,
    TOOL_LOOP: 0.02,
    RARE_PATH: 0.005,
    TAIL_LATENCY: 0.02,
}


def varied(spec: TrafficSpec) -> TrafficSpec:
    return replace(
        spec,
        agents=VARIED_AGENTS,
        rates=dict(VARIED_RATES),
        turn_weights=(0.2, 0.2, 0.2, 0.2, 0.1, 0.1),
        think_seconds=(1.0, 20.0),
        spans_per_turn=(4, 60),
        genai_fraction=0.8,
        genai_arguments_fraction=0.2,
        tail_latency_factor=(4.0, 10.0),
        batch_spans=1024,
        batch_timeout_seconds=2.0,
    )


Profile = tuple[Callable[[TrafficSpec], TrafficSpec], Callable[[TrafficSpec], Corpus]]

PROFILES: dict[str, Profile] = {
    "default": (lambda spec: spec, generate),
    "varied": (varied, generate),
    "conversations": (lambda spec: spec, conversations.generate),
}
