"""One contract over every registered signal kind (signals/registry.py): built from the default
config, it scores an ordinary session without firing, fires only the names it declares, and no
two kinds declare the same name; the scorer runs them in their order."""

from __future__ import annotations

import random

import pytest

from sampler.config.model import SignalsConfig
from sampler.signals.registry import Scored, Session, signal_kinds
from sampler.signals.scorer import SessionScorer
from tests.unit.signals.test_scorer import random_session, session

KINDS = signal_kinds()


def test_the_kinds_run_in_their_order_and_are_the_documented_ones() -> None:
    assert list(KINDS) == ["errors", "tool_cycles", "rarity"]
    assert list(SessionScorer(SignalsConfig()).kinds) == list(KINDS)


def test_no_two_kinds_fire_the_same_name() -> None:
    names = [name for build in KINDS.values() for name in build(SignalsConfig()).names]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", list(KINDS))
def test_an_ordinary_session_fires_nothing(name: str) -> None:
    kind = KINDS[name](SignalsConfig())
    features = session("search:q1 fetch:q2 answer:q3")
    scored = Scored()
    kind.score(Session(features, 0.0, ["search", "fetch", "answer"]), scored)
    kind.flush()
    assert scored.signals == []


@pytest.mark.parametrize("name", list(KINDS))
def test_a_kind_fires_only_the_names_it_declares(name: str) -> None:
    kind = KINDS[name](SignalsConfig())
    rng = random.Random(7)
    for step in range(200):
        features = random_session(rng)
        scored = Scored()
        path = list(dict.fromkeys(features.tool_path()))
        kind.score(Session(features, float(step), path, running_at_cap=step % 7 == 0), scored)
        assert set(scored.signals) <= set(kind.names), scored.signals
        assert len(scored.signals) == len(set(scored.signals))
        if step % 10 == 9:
            kind.flush()
