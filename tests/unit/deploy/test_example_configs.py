"""Every sampler config shipped as an example (config/sampler-*.yaml) or mounted by the deploy
kit says how its rules relate to the default rules (config/sampler.yaml): a copy that says
"Rules: the default rules" has them exactly; any other must say "Rules: differ from the
default" and how. A user who copies one gets the sampler they read about."""

from __future__ import annotations

from pathlib import Path

import pytest

from sampler.config.load import default_config_path, load_config
from sampler.config.model import SamplerConfig
from tests.deploy_kit import DEPLOY, ROOT

EXAMPLES = sorted([*ROOT.joinpath("config").glob("sampler-*.yaml"), *DEPLOY.rglob("sampler.yaml")])
ENV = {"SAMPLER_DOWNSTREAM": "grpc://backend:4317"}


def rules(config: SamplerConfig) -> list[tuple[object, ...]]:
    """The rules as parsed, without the lines they were read from."""
    return [(rule.name, rule.condition, rule.action) for rule in config.rules]


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_an_example_says_how_its_rules_differ_from_the_defaults(path: Path) -> None:
    header = "".join(line for line in path.read_text().splitlines(True) if line.startswith("#"))
    same = rules(load_config(path, ENV)) == rules(load_config(default_config_path()))
    if same:
        assert "Rules: the default rules" in header, f"{path}: say that it has the defaults"
    else:
        assert "Rules: differ from the default" in header, f"{path}: say how its rules differ"
