"""`agent-sampler run` flags override the config file's values."""

from __future__ import annotations

from sampler.cli import apply_overrides, build_parser
from sampler.config.model import SamplerConfig
from sampler.runtime import exporter_settings


def test_queue_dir_flag_sets_the_durable_queue() -> None:
    args = build_parser().parse_args(["run", "--queue-dir", "/var/lib/queue"])
    config = apply_overrides(SamplerConfig(), args)
    assert config.exporter.queue_dir == "/var/lib/queue"
    settings = exporter_settings(config)
    assert (settings.queue_dir, settings.queue_max_bytes) == ("/var/lib/queue", 1 << 30)


def test_without_the_flag_the_queue_stays_in_memory() -> None:
    config = apply_overrides(SamplerConfig(), build_parser().parse_args(["run"]))
    assert config.exporter.queue_dir == ""


def test_mode_flag_overrides_the_file() -> None:
    shadow = SamplerConfig(mode="shadow")
    assert apply_overrides(shadow, build_parser().parse_args(["run"])).mode == "shadow"
    args = build_parser().parse_args(["run", "--mode", "live"])
    assert apply_overrides(shadow, args).mode == "live"
    args = build_parser().parse_args(["run", "--mode", "shadow"])
    assert apply_overrides(SamplerConfig(), args).mode == "shadow"


def test_watch_config_is_off_unless_asked_for() -> None:
    assert not build_parser().parse_args(["run"]).watch_config
    assert build_parser().parse_args(["run", "--watch-config"]).watch_config


def test_capture_flag_records_traffic_with_the_default_cap() -> None:
    args = build_parser().parse_args(["run", "--capture", "/var/tmp/traffic.jsonl"])
    config = apply_overrides(SamplerConfig(), args)
    assert (config.capture.path, config.capture.max_size) == ("/var/tmp/traffic.jsonl", 1 << 30)
    assert apply_overrides(SamplerConfig(), build_parser().parse_args(["run"])).capture.path == ""
