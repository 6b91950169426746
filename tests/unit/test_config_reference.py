"""docs/configuration.md is generated from the config metadata; it must be current."""

from pathlib import Path

from sampler.config_reference import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_reference_is_current() -> None:
    assert DOC.read_text() == render(), (
        "docs/configuration.md is out of date: python -m sampler.config_reference > "
        "docs/configuration.md"
    )


def test_every_key_of_the_default_config_is_documented() -> None:
    text = DOC.read_text()
    for key in (
        "sessions.decision_wait",
        "sessions.root_end_grace",
        "exporter.url",
        "receivers.max_message_size",
        "decision_cache.max_sessions",
    ):
        assert f"`{key}`" in text
