"""Condition kinds, registered by name.

A condition kind is one module in this package that decorates a parse function with
``@condition_kind("name")``. Adding one touches that file and its test; the YAML key of a
condition is the kind's name, e.g. ``{error: true}`` or ``{attribute: {key: k, equals: v}}``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType

from sampler.config.reader import Node, Problems, did_you_mean, parse_duration
from sampler.rules.spec import Condition

ConditionParser = Callable[[Node, "ParseContext"], Condition | None]
_KINDS: dict[str, ConditionParser] = {}
# Words that are not kinds but name a part of one (a dimension of `rare`, an error kind), with
# the condition they belong in: written as a kind, they get it as the hint rather than a kind
# that merely looks alike (`latency` is not `any`).
_PART_HINTS: dict[str, str] = {}


def condition_kind(name: str) -> Callable[[ConditionParser], ConditionParser]:
    def register(parser: ConditionParser) -> ConditionParser:
        if name in _KINDS:
            raise ValueError(f"condition kind {name!r} registered twice")
        _KINDS[name] = parser
        return parser

    return register


def hint_parts(words: Iterable[str], condition: Callable[[str], str]) -> None:
    """Declare ``words`` as parts of a kind: ``condition(word)`` is the condition to suggest
    when one is written as a kind of its own."""
    for word in words:
        _PART_HINTS.setdefault(word, condition(word))


def kinds() -> tuple[str, ...]:
    return tuple(sorted(_KINDS))


def condition_modules() -> list[tuple[str, ModuleType]]:
    """Each kind with the module that defines it (its docstring documents the kind)."""
    return [(name, sys.modules[_KINDS[name].__module__]) for name in kinds()]


@dataclass(slots=True)
class ParseContext:
    """Parsing helpers that record problems (with line and key path) instead of raising."""

    problems: Problems
    key: str  # dotted path of the node being parsed, e.g. rules[2].when.any[0]

    def at(self, key: str) -> ParseContext:
        """The context of a child: ``at("when")`` or ``at("[2]")`` (no dot before an index)."""
        if not self.key:
            return ParseContext(self.problems, key)
        return ParseContext(self.problems, f"{self.key}{'' if key.startswith('[') else '.'}{key}")

    def problem(self, node: Node, message: str) -> None:
        self.problems.add(node, self.key, message)

    def condition(self, node: Node) -> Condition | None:
        """Parse a condition: a mapping whose keys are kinds; several keys mean all of them."""
        from sampler.rules.conditions.combinators import AllOf

        if not node.is_mapping or not node.value:
            self.problem(
                node,
                f"expected a condition such as {{error: true}}, got {node.describe()}"
                f"; kinds: {', '.join(kinds())}",
            )
            return None
        parts: list[Condition] = []
        for kind, child in node.items():
            parser = _KINDS.get(kind)
            child_ctx = self.at(kind)
            if parser is None:
                line_node = Node(None, node.key_lines.get(kind, node.line))
                part = _PART_HINTS.get(kind)
                hint = f" (did you mean {part}?)" if part else did_you_mean(kind, kinds())
                child_ctx.problem(
                    line_node, f"unknown condition kind{hint}; kinds: {', '.join(kinds())}"
                )
                continue
            parsed = parser(child, child_ctx)
            if parsed is not None:
                parts.append(parsed)
        if len(parts) != len(node.key_lines):
            return None
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))

    def mapping(
        self, node: Node, allowed: Collection[str], required: Collection[str] = ()
    ) -> dict[str, Node] | None:
        """The known keys of a mapping. Unknown keys are reported but do not stop parsing, so
        the problems of the known ones are found in the same run."""
        if not node.is_mapping:
            self.problem(
                node,
                f"expected a mapping with keys {', '.join(sorted(allowed))}, got {node.describe()}",
            )
            return None
        values: dict[str, Node] = {}
        ok = True
        for key, value in node.items():
            if key in allowed:
                values[key] = value
            else:
                line_node = Node(None, node.key_lines.get(key, node.line))
                self.at(key).problem(
                    line_node,
                    f"unknown key{did_you_mean(key, sorted(allowed))}"
                    f"; expected one of {', '.join(sorted(allowed))}",
                )
        for key in required:
            if key not in values:
                self.problem(node, f"missing required key {key!r}")
                ok = False
        return values if ok else None

    def number(self, node: Node, *, minimum: float | None = None) -> float | None:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(node, f"expected a number, got {node.describe()}")
            return None
        if minimum is not None and value < minimum:
            self.problem(node, f"expected a number >= {minimum}, got {value}")
            return None
        return float(value)

    def duration(self, node: Node) -> float | None:
        try:
            return parse_duration(node.value)
        except ValueError as exc:
            self.problem(node, f"{exc}, got {node.describe()}")
            return None

    def string(self, node: Node) -> str | None:
        if not isinstance(node.value, str) or not node.value:
            self.problem(node, f"expected a non-empty string, got {node.describe()}")
            return None
        return node.value

    def boolean(self, node: Node) -> bool | None:
        if not isinstance(node.value, bool):
            self.problem(node, f"expected true or false, got {node.describe()}")
            return None
        return node.value

    def names(self, node: Node, allowed: Sequence[str], what: str) -> tuple[str, ...] | None:
        """A non-empty list of names from ``allowed`` (e.g. error kinds), with a hint for typos.
        ``what`` names one item in messages: "error kind", "dimension"."""
        items = self.sequence(node)
        if items is None:
            return None
        for index, item in enumerate(items):
            if item.value not in allowed:
                hint = did_you_mean(str(item.value), allowed)
                self.at(f"[{index}]").problem(
                    item, f"unknown {what}{hint}; expected one of {', '.join(allowed)}"
                )
                return None
        return tuple(str(item.value) for item in items)

    def sequence(self, node: Node) -> list[Node] | None:
        if not isinstance(node.value, list) or not node.value:
            self.problem(node, f"expected a non-empty list, got {node.describe()}")
            return None
        return node.value
