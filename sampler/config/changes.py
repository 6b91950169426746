"""What a reload may change: the running config merged with a newly loaded one.

A field marked ``restart=True`` in ``model.py`` (on a section: everything in it) cannot change
while the sampler runs: listeners, TLS files and the exporter are set up once, the session
keys group what is buffered, the timer wheel and the rarity windows are built on their
sizes. A reload keeps such a field's running value and names it; every other field takes the
new file's value. The same metadata marks these keys in the generated reference.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from sampler.config.binder import public_fields
from sampler.config.model import SamplerConfig

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Merged:
    """The config to run after a reload, and what the new file asked for that it does not get."""

    config: SamplerConfig
    changed: tuple[str, ...]  # keys that take a new value now (a section's name for `rules`)
    need_restart: tuple[str, ...]  # keys whose new value waits for a restart (running kept)


def merge_reload(running: SamplerConfig, loaded: SamplerConfig) -> Merged:
    """``loaded`` with the restart-only settings of ``running``; also says which keys change
    now and which would need a restart (leaf keys, dotted)."""
    changed: list[str] = []
    need_restart: list[str] = []
    config = _merge(running, loaded, "", False, changed, need_restart)
    config = dataclasses.replace(
        config, source=loaded.source, digest=loaded.digest, origins=loaded.origins
    )
    return Merged(config, tuple(changed), tuple(need_restart))


def restart_only_keys(cls: type = SamplerConfig, prefix: str = "") -> list[str]:
    """The keys a reload cannot change: a section's name stands for all of its keys."""
    keys: list[str] = []
    for spec in public_fields(cls):
        key = f"{prefix}{spec.name}"
        if spec.metadata.get("restart"):
            keys.append(key)
        elif dataclasses.is_dataclass(spec.default):
            keys.extend(restart_only_keys(type(spec.default), f"{key}."))
    return keys


def _merge(
    running: T,
    loaded: T,
    prefix: str,
    restart: bool,
    changed: list[str],
    need_restart: list[str],
) -> T:
    values: dict[str, Any] = {}
    for spec in public_fields(type(running)):
        key = f"{prefix}{spec.name}"
        old, new = getattr(running, spec.name), getattr(loaded, spec.name)
        fixed = restart or bool(spec.metadata.get("restart"))
        if dataclasses.is_dataclass(old) and not isinstance(old, type):
            values[spec.name] = _merge(old, new, f"{key}.", fixed, changed, need_restart)
        elif old == new:
            values[spec.name] = old
        elif fixed:
            values[spec.name] = old
            need_restart.append(key)
        else:
            values[spec.name] = new
            changed.append(key)
    return dataclasses.replace(running, **values)  # type: ignore[type-var]
