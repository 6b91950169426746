"""Binds a YAML Node tree onto the frozen dataclasses of ``model.py``, driven by field metadata.

Unknown keys, wrong types, bad durations and sizes are all collected, each with its line and
key path, so one run of ``check-config`` shows every problem.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from sampler.config.model import STRATA
from sampler.config.reader import Node, Problems, did_you_mean, parse_duration, parse_listen
from sampler.config.reader import parse_size as parse_size_value
from sampler.config.store_url import REDIS_URL_FORMS, parse_store_url
from sampler.config.url import ACCEPTED_FORMS, parse_downstream

T = TypeVar("T")

# Parses a value of a kind that a package above config owns (``rules``: sampler.rules.parse),
# reporting its problems; passed to ``bind`` by whoever loads a whole file (sampler.config_file).
KindParser = Callable[[Node, Problems, str], Any]


def public_fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


def bind(
    cls: type[T],
    node: Node,
    problems: Problems,
    key: str = "",
    parsers: Mapping[str, KindParser] | None = None,
) -> T:
    if not node.is_mapping:
        problems.add(node, key, f"expected a mapping, got {node.describe()}")
        return cls()
    fields = {f.name: f for f in public_fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    found_before = len(problems.found)
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
        value = _bind_value(hints[name], spec, child, problems, path, parsers or {})
        if value is not _INVALID:
            values[name] = value
    section = cls(**values)
    check: Callable[[], Iterator[tuple[str, str]]] | None = getattr(section, "check", None)
    if check is not None and len(problems.found) == found_before:
        for name, message in check():
            line_node = Node(None, node.key_lines.get(name, node.line))
            problems.add(line_node, f"{key}.{name}" if key else name, message)
    return section


_INVALID = object()


def _bind_value(
    hint: Any,
    spec: dataclasses.Field[Any],
    node: Node,
    problems: Problems,
    path: str,
    parsers: Mapping[str, KindParser],
) -> Any:
    kind = spec.metadata.get("kind", "")
    value = node.value
    secret = bool(spec.metadata.get("secret"))

    def fail(expected: str) -> object:
        problems.add(node, path, f"{expected}, got {node.describe(secret=secret)}")
        return _INVALID

    if dataclasses.is_dataclass(hint):
        return bind(hint, node, problems, path, parsers)  # type: ignore[arg-type]
    if kind in parsers:
        return parsers[kind](node, problems, path)
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
            # The message quotes the URL: not when it came from the environment.
            return fail(f"expected a URL: {ACCEPTED_FORMS}") if node.env else fail(str(exc))
        return value
    if kind == "redis_url":
        if not isinstance(value, str):
            return fail(f"expected a URL: {REDIS_URL_FORMS}")
        if value:
            try:
                parse_store_url(value)
            except ValueError as exc:
                return fail(f"expected a URL ({exc})")
        return value
    if kind == "fraction":
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            return fail("expected a number from 0 to 1")
        return float(value)
    if kind == "strata":
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
    if kind == "file":
        if not isinstance(value, str):
            return fail(f"expected the path of a PEM {spec.metadata['pem']} file")
        problem = pem_file_problem(value, spec.metadata["pem"])
        if problem:
            shown = node.describe() if node.env else repr(value)
            problems.add(node, path, f"{shown}: {problem}")
            return _INVALID
        return value
    if kind == "token":
        if not isinstance(value, str) or (value and not _TOKEN_RE.match(value)):
            return fail("expected a bearer token: letters, digits and -._~+/ (RFC 6750)")
        return value
    if kind == "headers":
        if not node.is_mapping or not all(isinstance(v.value, str) for _, v in node.items()):
            return fail("expected a mapping of header names to string values")
        return tuple((k, str(v.value)) for k, v in node.items())
    if hint is bool:
        return value if isinstance(value, bool) else fail("expected true or false")
    if hint is int:
        if spec.metadata.get("zero_allowed"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return fail("expected a whole number, 0 or more")
            return value
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


# RFC 6750 b64token; a stray newline from a secret file would otherwise never match.
_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
_PEM_MARKERS = {
    "certificate": ("-----BEGIN CERTIFICATE-----",),
    "key": (
        "-----BEGIN PRIVATE KEY-----",
        "-----BEGIN RSA PRIVATE KEY-----",
        "-----BEGIN EC PRIVATE KEY-----",
    ),
}
_MAX_PEM_BYTES = 1 << 20


def pem_file_problem(path: str, pem: str) -> str:
    """Why ``path`` cannot serve as a PEM ``pem`` (``certificate`` or ``key``) file, or ""."""
    if not path:
        return ""
    expected = f"expected a readable PEM {pem} file"
    try:
        with open(path, "rb") as handle:
            head = handle.read(_MAX_PEM_BYTES + 1)
    except IsADirectoryError:
        return f"is a directory; {expected}"
    except OSError as exc:
        return f"cannot read ({exc.strerror}); {expected}"
    if len(head) > _MAX_PEM_BYTES:
        return f"larger than {_MAX_PEM_BYTES} bytes; {expected}"
    text = head.decode("ascii", errors="replace")
    if pem == "key" and ("ENCRYPTED" in text):
        return "holds an encrypted private key; expected an unencrypted PEM private key"
    if not any(marker in text for marker in _PEM_MARKERS[pem]):
        return f"holds no {_PEM_MARKERS[pem][0]} block; {expected}"
    return ""
