"""Reloading the config file: a good file runs from the next decision on, a bad one changes
nothing and says why (each problem as check-config prints it), settings that need a restart
keep their running values and are named; the file watcher waits for a change to hold still."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sampler.clock import ManualClock
from sampler.config.load import digest_of, load_config
from sampler.config.reader import ConfigError
from sampler.export.base import ExporterStats
from sampler.metrics import Sources, build_registry
from sampler.pipeline import Pipeline
from sampler.reload import ConfigSource, ConfigWatcher, Reloader
from tests.unit.sessions.builders import RecordingSink, consume, simple_request
from tests.unit.test_pipeline import conversation, settle

GOOD = """\
receivers:
  grpc: {listen: "127.0.0.1:4317"}
sessions:
  decision_wait: 30s
rules:
  - name: errors
    when: {error: true}
    action: keep
  - name: rest
    action: drop
"""
KEEP_EVERYTHING = GOOD.replace("    action: drop", "    action: keep")
BAD = GOOD.replace("when: {error: true}", "when: {eror: true}").replace(
    "action: drop", "action: dropp"
)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "sampler.yaml"
    path.write_text(GOOD)
    return path


def started(path: Path, **source: Any) -> tuple[Reloader, RecordingSink, ManualClock]:
    sink, clock = RecordingSink(), ManualClock()
    pipeline = Pipeline(load_config(path), sink, clock)
    return Reloader(pipeline, ConfigSource(str(path), **source)), sink, clock


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sampler.reload"]


def test_a_good_file_decides_the_buffered_sessions_from_then_on(config_file: Path) -> None:
    reloader, sink, clock = started(config_file)
    pipeline = reloader.pipeline
    consume(pipeline, simple_request(*conversation("t1", "c1")))
    config_file.write_text(KEEP_EVERYTHING)

    assert reloader.reload("SIGHUP") == "success"
    assert settle(pipeline, clock) == 1
    assert len(sink.spans()) == 3  # kept by the new `rest`
    state = reloader.state
    assert (state.generation, state.reloads["success"], state.last_reload_ok) == (2, 1, True)
    assert state.digest == digest_of(KEEP_EVERYTHING.encode()) != digest_of(GOOD.encode())


def test_a_bad_file_changes_nothing_and_logs_every_problem_as_check_config_does(
    config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reloader, sink, clock = started(config_file)
    pipeline = reloader.pipeline
    running = pipeline.config
    config_file.write_text(BAD)
    with pytest.raises(ConfigError) as caught:
        load_config(config_file)
    expected = str(caught.value).splitlines()  # what `check-config` prints
    assert len(expected) == 2 and all(line.startswith(f"{config_file}:") for line in expected)

    with caplog.at_level(logging.INFO, logger="sampler.reload"):
        assert reloader.reload("SIGHUP") == "failure"
    logged = messages(caplog)
    assert "failed with 2 problem(s); still running generation 1" in logged[0]
    assert logged[1:] == expected
    assert all(r.levelno == logging.ERROR for r in caplog.records)
    assert pipeline.config is running
    state = reloader.state
    assert (state.generation, state.reloads["failure"], state.last_reload_ok) == (1, 1, False)

    consume(pipeline, simple_request(*conversation("t1", "c1")))
    settle(pipeline, clock)
    assert sink.spans() == []  # the old rules still drop it
    config_file.write_text(GOOD)  # put back: the running file again
    assert reloader.reload("SIGHUP") == "unchanged"
    assert (state.generation, state.last_reload_ok) == (1, True)


def test_settings_that_need_a_restart_are_named_and_keep_their_values(
    config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reloader, _, _ = started(config_file)
    new = KEEP_EVERYTHING.replace("127.0.0.1:4317", "127.0.0.1:4999").replace(
        "decision_wait: 30s", "decision_wait: 10s\n  tick: 50ms"
    )
    config_file.write_text(new + "exporter: {url: 'grpc://127.0.0.1:9'}\n")
    with caplog.at_level(logging.INFO, logger="sampler.reload"):
        assert reloader.reload("SIGHUP") == "success"
    running = reloader.pipeline.config
    assert running.receivers.grpc.listen == "127.0.0.1:4317"
    assert (running.sessions.tick, running.sessions.decision_wait) == (0.1, 10.0)
    assert running.exporter.url == "file://agent-sampler-kept.jsonl"
    assert reloader.state.need_restart == ("receivers.grpc.listen", "sessions.tick", "exporter.url")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "config reload: receivers.grpc.listen, sessions.tick, exporter.url cannot change "
        "without a restart and keep their running values"
    ]
    assert "changed: sessions.decision_wait, rules" in messages(caplog)[0]


def test_command_line_flags_still_win_after_a_reload(config_file: Path) -> None:
    def flags(config: Any) -> Any:
        return dataclasses.replace(
            config, sessions=dataclasses.replace(config.sessions, decision_wait=5.0)
        )

    reloader, _, _ = started(config_file, overrides=flags)
    reloader.pipeline.reconfigure(flags(reloader.pipeline.config))  # as the CLI starts it
    config_file.write_text(KEEP_EVERYTHING.replace("30s", "60s"))
    assert reloader.reload("SIGHUP") == "success"
    assert reloader.pipeline.config.sessions.decision_wait == 5.0


def test_an_unreadable_file_is_a_failure(config_file: Path) -> None:
    reloader, _, _ = started(config_file)
    config_file.unlink()
    assert reloader.reload("SIGHUP") == "failure"
    assert reloader.state.reloads == {"success": 0, "failure": 1, "unchanged": 0}


def test_the_reload_metrics(config_file: Path) -> None:
    reloader, _, _ = started(config_file)
    exporter: Any = SimpleNamespace(queued_spans=lambda: 0, stats=ExporterStats())
    registry = build_registry(Sources(reloader.pipeline, exporter, {}, config=reloader.state))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    digest = reloader.state.digest
    assert value("agent_sampler_config_info", hash=digest) == 1.0
    assert value("agent_sampler_config_generation") == 1.0
    config_file.write_text(BAD)
    reloader.reload("SIGHUP")
    assert value("agent_sampler_config_reloads_total", outcome="failure") == 1.0
    assert value("agent_sampler_config_reloads_total", outcome="success") == 0.0
    assert value("agent_sampler_config_last_reload_successful") == 0.0
    config_file.write_text(GOOD.replace("127.0.0.1:4317", "127.0.0.1:5000"))
    reloader.reload("SIGHUP")
    assert value("agent_sampler_config_info", hash=digest) is None
    assert value("agent_sampler_config_info", hash=reloader.state.digest) == 1.0
    assert value("agent_sampler_config_generation") == 2.0
    assert value("agent_sampler_config_last_reload_successful") == 1.0
    assert value("agent_sampler_config_restart_pending") == 1.0


class FakeStat:
    """os.stat over a script of signatures (None: no such file)."""

    def __init__(self) -> None:
        self.signature: tuple[int, int, int, int] | None = (1, 1, 10, 100)

    def __call__(self, path: str) -> os.stat_result:
        if self.signature is None:
            raise FileNotFoundError(path)
        dev, ino, size, mtime = self.signature
        return os.stat_result((0o644, ino, dev, 1, 0, 0, size, 0, 0, 0, 0, 0, 0, 0, 0, mtime))


def test_the_watcher_waits_for_a_change_to_hold_still() -> None:
    stat = FakeStat()
    watcher = ConfigWatcher("sampler.yaml", stat)
    assert not watcher.due()
    stat.signature = (1, 1, 5, 200)  # being written
    assert not watcher.due()
    stat.signature = (1, 1, 12, 300)  # still being written
    assert not watcher.due()
    assert watcher.due()  # held still for one poll
    assert not watcher.due()
    stat.signature = (1, 2, 12, 300)  # the path leads to another file (a ConfigMap swap)
    assert [watcher.due(), watcher.due(), watcher.due()] == [False, True, False]
    stat.signature = None  # gone: one reload, which fails; no more until it is back
    assert [watcher.due(), watcher.due(), watcher.due()] == [False, True, False]
    stat.signature = (1, 3, 12, 400)
    watcher.mark_loaded()  # read on SIGHUP meanwhile
    assert not watcher.due()
