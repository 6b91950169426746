"""What a reload may change: restart-only keys keep their running values and are named; the
rest take the new file's."""

from __future__ import annotations

from sampler.config.changes import merge_reload, restart_only_keys
from sampler.config.model import SamplerConfig
from sampler.config_file import digest_of, load_config_text

RUNNING = """
receivers:
  grpc: {listen: "127.0.0.1:4317"}
  auth: {bearer_token: s3cret}
sessions:
  decision_wait: 30s
  tick: 100ms
signals:
  rarity: {window: 5m, threshold: 0.5}
rules:
  - {name: errors, when: {error: true}, action: keep}
"""


def load(text: str) -> SamplerConfig:
    return load_config_text(text, "sampler.yaml")


def test_live_keys_change_and_restart_only_keys_keep_their_running_values() -> None:
    running = load(RUNNING)
    new_text = (
        RUNNING.replace("127.0.0.1:4317", "127.0.0.1:5317")
        .replace("s3cret", "other")
        .replace("decision_wait: 30s", "decision_wait: 10s")
        .replace("tick: 100ms", "tick: 50ms")
        .replace("window: 5m, threshold: 0.5", "window: 1m, threshold: 0.7")
        .replace("action: keep", "action: drop")
        + "mode: shadow\nexporter: {url: 'grpc://127.0.0.1:9'}\nlogging: {level: debug}\n"
    )
    loaded = load(new_text)
    merged = merge_reload(running, loaded)
    config = merged.config
    assert config.receivers == running.receivers
    assert config.exporter == running.exporter
    assert (config.sessions.tick, config.sessions.decision_wait) == (0.1, 10.0)
    assert (config.signals.rarity.window, config.signals.rarity.threshold) == (300.0, 0.7)
    assert config.rules == loaded.rules and config.mode == "shadow"
    assert config.logging.level == "debug"
    assert (config.source, config.digest) == (loaded.source, loaded.digest)
    assert merged.need_restart == (
        "receivers.grpc.listen",
        "receivers.auth.bearer_token",  # named, never shown
        "sessions.tick",
        "signals.rarity.window",
        "exporter.url",
    )
    assert merged.changed == (
        "sessions.decision_wait",
        "signals.rarity.threshold",
        "mode",
        "rules",
        "logging.level",
    )


def test_the_same_file_changes_nothing() -> None:
    merged = merge_reload(load(RUNNING), load(RUNNING))
    assert (merged.changed, merged.need_restart) == ((), ())
    assert merged.config == load(RUNNING)


def test_the_restart_only_keys() -> None:
    assert restart_only_keys() == [
        "receivers",
        "sessions.key_attributes",
        "sessions.tick",
        "signals.rarity.window",
        "signals.rarity.windows",
        "signals.rarity.max_groups",
        "exporter",
        "metrics",
        "capture",
        "cluster",
    ]


def test_a_config_knows_the_digest_of_its_file() -> None:
    config = load(RUNNING)
    assert config.digest == digest_of(RUNNING.encode()) and len(config.digest) == 16
    assert load(RUNNING + "\n# a comment\n").digest != config.digest
