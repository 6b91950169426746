"""Binds a YAML Node tree onto the frozen dataclasses of ``model.py``, driven by field metadata.

Unknown keys, wrong types, bad durations and sizes are all collected, each with its line and
key path, so one run of ``check-config`` shows every problem.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

from sampler.config.reader import Node, Problems, did_you_mean, parse_duration, parse_listen
from sampler.config.reader import parse_size as parse_size_value
from sampler.export.url import ACCEPTED_FORMS, parse_downstream

T = TypeVar("T")


def public_fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


def bind(cls: type[T], node: Node, problems: Problems, key: str = "") -> T:
    if not node.is_mapping:
        problems.add(node, key, f"expected a mapping, got {node.describe()}")
        return cls()
    fields = {f.name: f for f in public_fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, child in node.items():
        path = f"{key}.{name}" if key else name
        spec = fields.get(name)
        if spec is None:
            line_node = Node(None, node.key_lines.get(name, node.line))
            problems.add(
                line_node,
                path,
                f"unknown key{did_you_mean(name, list(fields))}; "
                f"expected one of {', '.join(fields)}",
            )
            continue
        value = _bind_value(hints[name], spec, child, problems, path)
        if value is not _INVALID:
            values[name] = value
    return cls(**values)


_INVALID = object()


def _bind_value(
    hint: Any, spec: dataclasses.Field[Any], node: Node, problems: Problems, path: str
) -> Any:
    kind = spec.metadata.get("kind", "")
    value = node.value

    def fail(expected: str) -> object:
        problems.add(node, path, f"{expected}, got {node.describe()}")
        return _INVALID

    if dataclasses.is_dataclass(hint):
        return bind(hint, node, problems, path)  # type: ignore[arg-type]
    if kind == "rules":
        from sampler.rules.parse import parse_rules

        return parse_rules(node, problems, path)
    try:
        if kind == "duration":
            seconds = parse_duration(value)
            if seconds == 0 and not spec.metadata.get("zero_allowed"):
                return fail("expected a duration above 0s")
            return seconds
        if kind == "size":
            return parse_size_value(value)
        if kind == "listen":
            return parse_listen(value)
    except ValueError as exc:
        return fail(str(exc))
    if kind == "url":
        if not isinstance(value, str):
            return fail(f"expected a URL: {ACCEPTED_FORMS}")
        try:
            parse_downstream(value)
        except ValueError as exc:
            problems.add(node, path, str(exc))
            return _INVALID
        return value
    if kind == "fraction":
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            return fail("expected a number from 0 to 1")
        return float(value)
    if kind == "strata":
        from sampler.config.model import STRATA

        items = value if isinstance(value, list) else None
        if not items or not all(item.value in STRATA for item in items):
            return fail(f"expected a non-empty list of: {', '.join(STRATA)}")
        return tuple(str(item.value) for item in items)
    if kind == "choice":
        choices = spec.metadata["choices"]
        if value not in choices:
            hint_text = did_you_mean(str(value), choices) if isinstance(value, str) else ""
            return fail(f"expected one of {', '.join(choices)}{hint_text}")
        return value
    if kind == "headers":
        if not node.is_mapping or not all(isinstance(v.value, str) for _, v in node.items()):
            return fail("expected a mapping of header names to string values")
        return tuple((k, str(v.value)) for k, v in node.items())
    if hint is bool:
        return value if isinstance(value, bool) else fail("expected true or false")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            return fail("expected a positive whole number")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return fail("expected a number")
        return float(value)
    if hint is str:
        return value if isinstance(value, str) else fail("expected a string")
    if typing.get_origin(hint) is tuple and typing.get_args(hint)[0] is str:
        items = value if isinstance(value, list) else None
        if not items or not all(isinstance(item.value, str) and item.value for item in items):
            return fail("expected a non-empty list of strings")
        return tuple(str(item.value) for item in items)
    raise TypeError(f"config field {path} has a type the binder does not know: {hint}")
