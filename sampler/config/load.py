"""Loading a config file (or the embedded default) into a validated SamplerConfig."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path

from sampler.config.binder import bind
from sampler.config.model import SamplerConfig
from sampler.config.reader import ConfigError, ConfigProblem, Node, Problems, parse_yaml

DEFAULT_CONFIG_NAME = "sampler.yaml"


def default_config_path() -> Path:
    """The embedded default, packaged in sampler.config (config/sampler.yaml in the repo)."""
    return Path(str(resources.files("sampler.config").joinpath(DEFAULT_CONFIG_NAME)))


def load_config_text(
    text: str, path: str, environ: Mapping[str, str] | None = None, *, embedded: bool = False
) -> SamplerConfig:
    """``environ`` resolves ``${env:NAME}`` references (default: the process environment).

    The keys the file sets are recorded as set by ``config file PATH``, unless it is the
    ``embedded`` default: its values are the defaults, below the environment's
    (``export.otel_env``)."""
    problems = Problems(path)
    root = parse_yaml(text, path, environ)
    config = bind(SamplerConfig, root, problems)
    if not config.rules and not problems.found:
        problems.add(
            Node(None, root.key_lines.get("rules", 1)),
            "rules",
            "no rules: every session would be dropped; add at least one "
            "rule (see config/sampler.yaml)",
        )
    problems.raise_if_any()
    config = dataclasses.replace(config, source=path)
    return config if embedded else config.set_by(f"config file {path}", *keys_set(root))


def keys_set(node: Node, prefix: str = "") -> Iterator[str]:
    """The key paths a YAML mapping sets, nested ones too (``exporter``, ``exporter.url``)."""
    if node.is_mapping:
        for name, child in node.items():
            yield prefix + name
            yield from keys_set(child, f"{prefix}{name}.")


def load_config(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> SamplerConfig:
    target = Path(path) if path is not None else default_config_path()
    try:
        text = target.read_text(encoding="utf-8")
    except OSError as exc:
        # a relative path is read from the working directory, which in a container is often
        # not the one the user thinks of: say which it was
        where = "" if target.is_absolute() else f" (in {Path.cwd()})"
        raise ConfigError(
            [ConfigProblem(str(target), 0, "", f"cannot read: {exc.strerror}{where}")]
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(str(target), 0, "", "not UTF-8 text")]) from exc
    return load_config_text(text, str(target), environ, embedded=path is None)
