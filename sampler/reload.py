"""Reloading the config while the sampler runs: on SIGHUP, and with ``run --watch-config`` when
the file changes.

A reload reads the file again, applies the same command-line flags (they still win over the
file), and if it is valid runs with it from now on: ``Pipeline.reconfigure`` swaps rules,
budget, signal thresholds, session settings and mode under what is buffered, held and learned.
Settings that cannot change without a restart (``restart=True`` in ``config/model.py``) keep
their running values and are named in one log line. A file with problems changes nothing: each
problem is logged as ``check-config`` prints it (``PATH:LINE: key: message``) and the failure
is counted (``agent_sampler_config_reloads_total{outcome="failure"}``).

Runs on the event loop's thread, like everything that touches the pipeline, between two turns
of deciding or two chunks of intake: nothing is half-done then.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from sampler.config.changes import merge_reload
from sampler.config.load import load_config
from sampler.config.model import SamplerConfig
from sampler.config.reader import ConfigError
from sampler.logs import configure_logging
from sampler.pipeline import Pipeline

log = logging.getLogger(__name__)

OUTCOMES: Final = ("success", "failure", "unchanged")
Overrides = Callable[[SamplerConfig], SamplerConfig]


def _as_loaded(config: SamplerConfig) -> SamplerConfig:
    return config


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """Where the running config came from, to read it again: its file (None: the embedded
    default), the command line's overrides, and whether to watch the file for changes."""

    path: str | None = None
    overrides: Overrides = _as_loaded
    watch: bool = False


@dataclass(slots=True)
class ConfigState:
    """The running config as the metrics show it (``agent_sampler_config_*``)."""

    source: str
    digest: str  # of the file last loaded (config.load.digest_of)
    generation: int = 1  # 1 at start, one more for each reload that changed something
    reloads: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    last_reload_ok: bool = True
    # keys the file sets that keep their running values until a restart
    need_restart: tuple[str, ...] = ()

    @classmethod
    def of(cls, config: SamplerConfig) -> ConfigState:
        return cls(config.source, config.digest)


class Reloader:
    """Reads the config again and applies it to the pipeline; see the module's docs."""

    def __init__(self, pipeline: Pipeline, source: ConfigSource) -> None:
        self.pipeline = pipeline
        self.source = source
        self.state = ConfigState.of(pipeline.config)

    def reload(self, why: str) -> str:
        """One reload (``why``: what asked for it, for the log); returns its outcome."""
        state, running = self.state, self.pipeline.config
        try:
            loaded = self.source.overrides(load_config(self.source.path))
        except ConfigError as exc:
            return self._failed(why, [str(problem) for problem in exc.problems])
        if loaded.digest == state.digest:
            state.reloads["unchanged"] += 1
            state.last_reload_ok = True
            log.info(
                "config reload (%s): %s is unchanged (hash %s, generation %d)",
                why,
                loaded.source,
                loaded.digest,
                state.generation,
            )
            return "unchanged"
        merged = merge_reload(running, loaded)
        try:
            self.pipeline.reconfigure(merged.config)
        except ValueError as exc:  # e.g. thresholds the signal detectors refuse
            return self._failed(why, [f"{loaded.source}: {exc}"])
        if merged.config.logging != running.logging:
            configure_logging(merged.config.logging.level, merged.config.logging.format)
        state.generation += 1
        state.digest, state.source = loaded.digest, loaded.source
        state.need_restart = merged.need_restart
        state.last_reload_ok = True
        state.reloads["success"] += 1
        rules = merged.config.rules
        log.info(
            "config reloaded (%s) from %s: generation %d, hash %s, %d rules; changed: %s",
            why,
            loaded.source,
            state.generation,
            loaded.digest,
            len(rules),
            ", ".join(merged.changed) or "nothing the sampler reads",
        )
        if merged.need_restart:
            log.warning(
                "config reload: %s cannot change without a restart and keep their running values",
                ", ".join(merged.need_restart),
            )
        return "success"

    def _failed(self, why: str, problems: list[str]) -> str:
        state = self.state
        state.reloads["failure"] += 1
        state.last_reload_ok = False
        log.error(
            "config reload (%s) failed with %d problem(s); still running generation %d "
            "(hash %s) from %s",
            why,
            len(problems),
            state.generation,
            state.digest,
            state.source,
        )
        for problem in problems:
            log.error("%s", problem)
        return "failure"


# (device, inode, size, modification time in ns) of the file a path leads to; None: none
FileSignature = tuple[int, int, int, int] | None
_NOTHING: Final = object()


@dataclass(slots=True)
class ConfigWatcher:
    """Says when the config file changed and then held still for one poll, so that a file
    being written is not read half-way. A path that leads to another file counts as a change
    (``os.stat`` follows links: Kubernetes updates a mounted ConfigMap by swapping a link);
    a file that disappears counts once (the reload then fails, and is not retried until the
    file changes again)."""

    path: str
    stat: Callable[[str], os.stat_result] = os.stat
    loaded: FileSignature = None
    _pending: object = _NOTHING

    def __post_init__(self) -> None:
        self.loaded = self.signature()

    def signature(self) -> FileSignature:
        try:
            st = self.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def due(self) -> bool:
        current = self.signature()
        if current == self.loaded:
            self._pending = _NOTHING
            return False
        if current != self._pending:
            self._pending = current  # changed: wait one poll for it to hold still
            return False
        self.loaded, self._pending = current, _NOTHING
        return True

    def mark_loaded(self) -> None:
        """The file as it is now was read (by a reload on SIGHUP)."""
        self.loaded, self._pending = self.signature(), _NOTHING
