"""load_config: the embedded default, the valid examples, and one fixture per invalid case.

Each file in tests/testdata/config/invalid/ starts with one ``# expect: FRAGMENT`` line per
problem it must produce; a fragment is ``:LINE: key.path: message start`` (line and key path
optional). Add a case by adding a file: the tests below pick it up.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from sampler.config.model import (
    BudgetConfig,
    ClusterConfig,
    DecisionCacheConfig,
    ExporterConfig,
    FileRotationConfig,
    LoggingConfig,
    MetricsConfig,
    ReceiversConfig,
    SamplerConfig,
    SessionsConfig,
    SignalsConfig,
)
from sampler.config.reader import ConfigError, ConfigProblem
from sampler.config_file import default_config_path, load_config, load_config_text
from sampler.export.base import ExporterSettings
from sampler.export.factory import exporter_from_url
from sampler.export.retry import SendResult
from sampler.rules.conditions.error import ANY_ERROR, HasError
from sampler.rules.conditions.rare import DIMENSIONS, IsRare
from sampler.rules.conditions.tool_cycle import CYCLE_KINDS, HasToolCycle
from sampler.rules.spec import KeepAlways, KeepWithinBudget

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO / "tests" / "testdata" / "config"
VALID = sorted((TESTDATA / "valid").glob("*.yaml"))
INVALID = sorted((TESTDATA / "invalid").glob("*.yaml"))

# ":12: rules[0].when: message" -> line 12, key "rules[0].when", message "message"
_FRAGMENT_RE = re.compile(r"^(?::(?P<line>\d+): )?(?:(?P<key>[\w.\[\]]+): )?(?P<message>.*)$")


def expectations(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [
        line.removeprefix("# expect:").strip() for line in lines if line.startswith("# expect:")
    ]


def problems_of(path: Path) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_embedded_default_loads_with_its_rules() -> None:
    config = load_config()
    assert config.source == str(default_config_path())
    assert [(rule.name, rule.action) for rule in config.rules] == [
        ("errors", KeepAlways()),
        ("tool-loops", KeepAlways()),
        ("rare", KeepAlways()),
        ("slow-calls", KeepAlways()),
        ("outliers", KeepAlways()),
        ("baseline", KeepWithinBudget()),
    ]
    assert config.rules[0].condition == HasError(ANY_ERROR, True)
    assert config.rules[1].condition == HasToolCycle(frozenset(CYCLE_KINDS), True)
    # a rare tool path or a slow turn fires at the signal threshold; the other numbers only
    # far out in the tail
    assert config.rules[2].condition == IsRare(("shape", "latency"), None)
    # a typical model or tool call beyond the agent's p99.5 (or far out)
    assert config.rules[3].condition == IsRare(("model_latency", "tool_latency"), 0.75)
    # sizes per turn; not the conversation's duration, which is mostly its user's think time
    assert config.rules[4].condition == IsRare(("tokens", "span_count", "tool_calls"), 0.9)
    assert set(DIMENSIONS) == {
        "shape", "latency", "model_latency", "tool_latency", "duration", "tokens", "span_count",
        "tool_calls",
    }  # fmt: skip
    assert config.rules[5].condition is None
    assert [rule.line for rule in config.rules] == sorted(rule.line for rule in config.rules)


def test_embedded_default_is_the_repository_file() -> None:
    assert default_config_path().read_bytes() == (REPO / "config" / "sampler.yaml").read_bytes()


def test_embedded_default_spells_out_the_model_defaults() -> None:
    """The commented default file and the dataclass defaults must not drift apart."""
    config = load_config()
    assert (
        config.receivers,
        config.sessions,
        config.decision_cache,
        config.exporter,
        config.metrics,
        config.logging,
        config.signals,
        config.budget,
        config.cluster,
    ) == (
        ReceiversConfig(),
        SessionsConfig(),
        DecisionCacheConfig(),
        ExporterConfig(),
        MetricsConfig(),
        LoggingConfig(),
        SignalsConfig(),
        BudgetConfig(),
        ClusterConfig(),
    )


def test_embedded_default_holds_dropped_sessions_and_samples_the_p99() -> None:
    config = load_config()
    rarity = config.signals.rarity
    assert (rarity.rare_shape_share, rarity.tail_quantile) == (0.02, 0.99)
    assert (config.sessions.dropped_hold, config.sessions.dropped_hold_max_spans) == (
        300.0,
        200_000,
    )


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_valid_example_loads(path: Path) -> None:
    config = load_config(path)
    assert config.rules
    assert config.source == str(path)


def test_absent_keys_keep_their_defaults() -> None:
    config = load_config(TESTDATA / "valid" / "minimal.yaml")
    assert dataclasses.replace(config, rules=(), source="") == SamplerConfig(source="")


def test_every_section_binds_to_typed_values() -> None:
    config = load_config(TESTDATA / "valid" / "every_section.yaml")
    assert config.receivers == ReceiversConfig(
        grpc=dataclasses.replace(ReceiversConfig().grpc, listen="[::1]:14317"),
        http=dataclasses.replace(ReceiversConfig().http, listen=""),
        max_message_size=4 << 20,
    )
    assert config.sessions == SessionsConfig(
        key_attributes=("session.id",),
        decision_wait=90.0,
        root_end_grace=0.0,
        max_session_duration=3600.0,
        max_session_spans=500,
        max_buffered_spans=2000,
        tick=0.05,
    )
    exporter = config.exporter
    assert (exporter.url, exporter.timeout, exporter.compression) == (
        "https://api.example.com/otlp",
        2.5,
        "gzip",
    )
    assert exporter.headers == (("x-api-key", "secret"), ("x-team", "agents"))
    assert (exporter.batch_max_size, exporter.batch_timeout) == (512 << 10, 1.0)
    assert (exporter.queue_dir, exporter.queue_max_bytes) == (
        "/var/lib/agent-sampler/queue",
        256 << 20,
    )
    assert (exporter.retry.initial_interval, exporter.retry.max_elapsed_time) == (0.1, 60.0)
    assert exporter.file.rotation == FileRotationConfig(
        max_megabytes=0, max_backups=3, max_days=7, localtime=True, compression="gzip"
    )
    assert (config.logging.level, config.logging.format) == ("debug", "json")
    assert config.mode == "shadow"
    cluster = config.cluster
    assert cluster.enabled
    assert (cluster.redis.url, cluster.redis.timeout) == (
        "rediss://:s3cret@redis.example.com:6380/2",
        0.5,
    )
    assert (cluster.key_prefix, cluster.verdict_ttl, cluster.max_pending) == ("prod:", 600.0, 500)
    assert "s3cret" not in repr(config)


def test_there_is_one_invalid_fixture_per_case() -> None:
    assert len(INVALID) >= 15
    for path in INVALID:
        assert expectations(path), f"{path.name} has no `# expect:` line"


@pytest.mark.parametrize(
    "path",
    [p for p in INVALID],
    ids=[p.stem for p in INVALID],
)
def test_invalid_config_reports_each_expected_problem(path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    lines = str(caught.value).splitlines()
    assert len(lines) == len(expectations(path)), lines
    for fragment in expectations(path):
        assert any(line.startswith(str(path)) and fragment in line for line in lines), (
            fragment,
            lines,
        )


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_config_reports_line_and_message(path: Path) -> None:
    """The same fixtures, checking line and message only (passes despite the key path bug)."""
    problems = problems_of(path)
    assert len(problems) == len(expectations(path))
    for fragment in expectations(path):
        match = _FRAGMENT_RE.match(fragment)
        assert match is not None
        line = int(match["line"]) if match["line"] else None
        assert any(
            (line is None or p.line == line) and p.message.startswith(match["message"])
            for p in problems
        ), (fragment, problems)


def test_all_problems_are_reported_at_once_sorted_by_line() -> None:
    problems = problems_of(TESTDATA / "invalid" / "three_problems.yaml")
    # The rule's `when` is checked before its `action`, yet the action (line 10) comes first.
    # (Only the last key segment here: full key paths are checked by the fixture test above.)
    assert [(p.line, p.key.rsplit(".", 1)[-1]) for p in problems] == [
        (7, "decision_wait"),
        (10, "probability"),
        (11, "eror"),
    ]


def test_empty_rules_list_is_reported_at_its_line() -> None:
    (problem,) = problems_of(TESTDATA / "invalid" / "rules_empty.yaml")
    assert problem.line == 5


def test_zero_tick_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"sessions\.tick"):
        load_config_text("sessions: {tick: 0s}\nrules: [{name: a, action: keep}]\n", "c.yaml")


@pytest.mark.parametrize(
    "url",
    ["grpc://", "grpc://collector", "http://collector", "file://"],
    ids=["grpc-empty", "grpc-no-port", "http-no-port", "file-empty"],
)
def test_exporter_url_the_exporter_cannot_use_is_a_config_error(url: str) -> None:
    with pytest.raises(ValueError, match="downstream URL"):
        exporter_from_url(url, ExporterSettings())
    with pytest.raises(ConfigError, match=r"exporter\.url"):
        load_config_text(f"exporter: {{url: '{url}'}}\nrules: [{{name: a, action: keep}}]\n", "c")


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read: No such file or directory"), (b"rules: \xff\n", "not UTF-8 text")],
    ids=["missing", "not-utf8"],
)
def test_unreadable_file_is_a_config_error(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "sampler.yaml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert (problem.path, problem.message) == (str(path), message)


def test_retry_max_elapsed_time_zero_means_never_give_up() -> None:
    """Documented as "0s: never give up": the config must accept it and hand the exporter a
    policy that retries a batch through an outage far longer than the 5m default."""
    from sampler.runtime import exporter_settings
    from tests.unit.export.support import (
        FakeClock,
        ScriptedExporter,
        expected_names,
        make_request,
        run,
        span_names,
    )

    config = load_config_text(
        "exporter:\n  retry: {max_elapsed_time: 0s}\nrules: [{name: a, action: keep}]\n", "c.yaml"
    )
    assert config.exporter.retry.max_elapsed_time == 0.0
    settings = exporter_settings(config)
    assert settings.retry.max_elapsed_s == 0.0

    clock = FakeClock()
    outage = [SendResult.retryable("UNAVAILABLE")] * 500  # hours at 30 s between retries

    async def scenario() -> ScriptedExporter:
        exporter = ScriptedExporter(settings, outage, clock=clock)
        exporter.try_submit(make_request("a", 3), 3)
        await exporter.start()
        assert await exporter.flush(2.0)
        await exporter.stop(1.0)
        return exporter

    exporter = run(scenario())
    assert sum(clock.sleeps) > 3600.0
    assert exporter.stats.failed_spans == 0
    assert span_names(exporter.delivered) == expected_names(("a", 3))


@pytest.mark.parametrize(
    "key",
    ["initial_interval", "max_interval"],
    ids=["initial-interval", "max-interval"],
)
def test_other_retry_durations_still_refuse_zero(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"exporter\.retry\.{key}: expected a duration above 0s"):
        load_config_text(
            f"exporter:\n  retry: {{{key}: 0s}}\nrules: [{{name: a, action: keep}}]\n", "c.yaml"
        )
