"""Signal kinds: one module each (errors, tool_cycles, rarity), registered by name as condition
kinds are (``rules/conditions/registry.py``). A kind is built from the ``signals`` config and
scores one session being decided into what the scorer returns; the scorer runs the kinds by
their ``order``, which is the order their names are written to ``agent_sampler.signals``.
Adding a signal: one module and its test, and its import in ``signals/__init__.py``;
``tests/unit/signals/test_signal_contract.py`` runs over every kind."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from sampler._native import SessionView as SessionFeatures
from sampler.config.model import SignalsConfig


class Session(NamedTuple):
    """One session being decided, as every signal kind sees it (SessionScorer.score says what
    ``fragment``, ``running_at_cap`` and ``learn`` mean). A NamedTuple, as ``DecisionFacts``:
    immutable, and built once per session decided in half the time of a frozen dataclass."""

    features: SessionFeatures
    now: float
    path: list[str]  # the tool path, repeats collapsed as the shape collapses them
    fragment: bool = False
    running_at_cap: bool = False
    learn: bool = True


@dataclass(slots=True)
class Scored:
    """What the kinds found so far; each adds to it (SessionScorer makes it SessionSignals)."""

    signals: list[str] = field(default_factory=list)
    cycle_kinds: frozenset[str] = frozenset()
    cycle_details: tuple[str, ...] = ()
    rarity: dict[str, float] = field(default_factory=dict)
    cold: bool = False


class SignalKind(Protocol):
    """One signal kind, built from the config: pure but for what it learns of recent traffic."""

    @property
    def names(self) -> tuple[str, ...]:
        """Every signal name it may fire (written to agent_sampler.signals)."""
        ...

    def score(self, session: Session, scored: Scored) -> None:
        """Add what this kind finds in ``session`` to ``scored``."""
        ...

    def flush(self) -> None:
        """What it learned since the last flush counts from now on (once a tick)."""
        ...


SignalFactory = Callable[[SignalsConfig], SignalKind]
_KINDS: dict[str, tuple[int, SignalFactory]] = {}


def signal_kind(name: str, *, order: int) -> Callable[[SignalFactory], SignalFactory]:
    """Registers a signal kind's factory under ``name`` (one module a kind); kinds run by
    ``order``, lowest first."""

    def register(factory: SignalFactory) -> SignalFactory:
        if name in _KINDS:
            raise ValueError(f"signal kind {name!r} registered twice")
        _KINDS[name] = (order, factory)
        return factory

    return register


def signal_kinds() -> dict[str, SignalFactory]:
    """The registered kinds, in the order they run."""
    ranked = sorted(_KINDS.items(), key=lambda item: item[1][0])
    return {name: factory for name, (_, factory) in ranked}
