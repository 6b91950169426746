"""Reading YAML into typed values while remembering where each value came from.

Every problem found is collected (not raised at the first one) so that `check-config` can report
all of them at once as ``PATH:LINE: key.path: what was expected``.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import yaml

from sampler.receive.address import parse_listen as parse_address


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    path: str
    line: int  # 1-based; 0 for the file as a whole (it cannot be read): no line is shown
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.key}: " if self.key else ""
        line = f":{self.line}" if self.line > 0 else ""
        return f"{self.path}{line}: {where}{self.message}"


class ConfigError(Exception):
    """One or more problems in a config file; ``str()`` lists them one per line."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(slots=True)
class Problems:
    path: str
    found: list[ConfigProblem] = field(default_factory=list)

    def add(self, node: Node | None, key: str, message: str) -> None:
        line = node.line if node is not None else 1
        self.found.append(ConfigProblem(self.path, line, key, message))

    def raise_if_any(self) -> None:
        if self.found:
            raise ConfigError(sorted(self.found, key=lambda p: p.line))


@dataclass(frozen=True, slots=True)
class Node:
    """A YAML value with its 1-based line. Mappings keep their key nodes for line reporting."""

    value: object  # str | int | float | bool | None | list[Node] | dict[str, Node]
    line: int
    key_lines: dict[str, int] = field(default_factory=dict)
    tag: str = ""
    env: tuple[str, ...] = ()  # variables substituted into this string: its content is not shown

    @property
    def is_mapping(self) -> bool:
        return isinstance(self.value, dict)

    @property
    def is_sequence(self) -> bool:
        return isinstance(self.value, list)

    def items(self) -> Iterator[tuple[str, Node]]:
        assert isinstance(self.value, dict)
        yield from self.value.items()

    def describe(self, *, secret: bool = False) -> str:
        """A short description of the value for error messages. A value taken from environment
        variables, or of a ``secret`` key, is described without its content."""
        if self.env:
            return f"the value of {', '.join(f'${{env:{name}}}' for name in self.env)}"
        if (
            secret
            and isinstance(self.value, str | int | float)
            and not isinstance(self.value, bool)
        ):
            return f"a {type(self.value).__name__} (not shown: a secret)"
        if isinstance(self.value, dict):
            return "a mapping"
        if isinstance(self.value, list):
            return "a list"
        if self.value is None:
            return "nothing (null)"
        if isinstance(self.value, bool):
            return f"boolean {self.value!r}"
        return f"{type(self.value).__name__} {self.value!r}"


# Bounds on what a YAML text may expand to. A real config nests about 10 levels and uses few
# aliases, if any; an "alias bomb" (a few lines whose aliases repeat each other nine times over)
# expands to billions of nodes, and nesting a few thousand deep overflows the Python stack.
MAX_DEPTH = 100  # levels of mappings and lists, aliases expanded
MAX_ALIAS_NODES = 10_000  # nodes that aliases add to the document by repeating their anchor


def parse_yaml(text: str, path: str, environ: Mapping[str, str] | None = None) -> Node:
    """Parse YAML text into a Node tree; a syntax error becomes a ConfigError with its line.

    ``${env:NAME}`` in string values is replaced by the variable from ``environ`` (default:
    ``os.environ``), see ``expand_env``. A text nested deeper than MAX_DEPTH, with a recursive
    alias, or whose aliases add more than MAX_ALIAS_NODES nodes is refused before anything is
    built from it (``check_bounds``)."""
    try:
        check_bounds(text, path)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError(
            [ConfigProblem(path, line, "", f"invalid YAML: {exc.problem or exc}")]
        ) from exc
    if root is None:
        return Node({}, 1)
    problems = Problems(path)
    node = _convert(root, problems, os.environ if environ is None else environ)
    problems.raise_if_any()
    return node


class _TooDeep(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose scanner stops at the MAX_DEPTH-th nested flow collection. PyYAML's
    scanner reads up to 1,024 characters ahead while a ``[`` or ``{`` might start a key, and
    its cost there is quadratic: 1,000 nested ``[`` take it 0.5 s before the first event."""

    def fetch_flow_collection_start(self, TokenClass: type[yaml.Token]) -> None:  # noqa: N803
        if self.flow_level >= MAX_DEPTH:
            raise _TooDeep(self.get_mark().line + 1)
        super().fetch_flow_collection_start(TokenClass)


@dataclass(slots=True)
class _Open:
    """A mapping or list whose end has not come yet, in ``check_bounds``."""

    anchor: str | None
    nodes: int = 1  # in it, aliases expanded
    height: int = 1  # levels of nesting in it, aliases expanded


def check_bounds(text: str, path: str) -> None:
    """Refuse, with a ConfigError at the offending line, a YAML text that nests deeper than
    MAX_DEPTH, holds an alias to a node that contains the alias, or whose aliases add more than
    MAX_ALIAS_NODES nodes. Reads the event stream, which PyYAML parses without recursion, and
    keeps a node count and a height per anchor, so the cost is linear in the text whatever it
    would expand to. (``yaml.compose`` and ``_convert`` recurse, and ``_convert`` expands
    aliases: they run only on a text that passed.) Syntax errors are left to ``compose``."""
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, height) of its node
    stack: list[_Open] = []
    added = 0  # nodes added by aliases

    def refuse(line: int, message: str) -> ConfigError:
        return ConfigError([ConfigProblem(path, line, "", message)])

    def add(nodes: int, height: int) -> None:
        if stack:
            stack[-1].nodes += nodes
            stack[-1].height = max(stack[-1].height, height + 1)

    too_deep = f"YAML nested deeper than {MAX_DEPTH} levels"
    try:
        for event in yaml.parse(text, Loader=_BoundedLoader):
            line = event.start_mark.line + 1 if event.start_mark is not None else 1
            if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                if len(stack) >= MAX_DEPTH:
                    raise refuse(line, too_deep)
                stack.append(_Open(event.anchor))
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                closed = stack.pop()
                if closed.anchor is not None:
                    anchors[closed.anchor] = (closed.nodes, closed.height)
                add(closed.nodes, closed.height)
            elif isinstance(event, yaml.ScalarEvent):
                if event.anchor is not None:
                    anchors[event.anchor] = (1, 0)
                add(1, 0)
            elif isinstance(event, yaml.AliasEvent) and event.anchor is not None:
                name = event.anchor
                if any(item.anchor == name for item in stack):
                    raise refuse(
                        line, f"recursive YAML alias *{name}: it refers to a node holding it"
                    )
                if name not in anchors:
                    continue  # undefined: compose says so
                nodes, height = anchors[name]
                added += nodes
                if added > MAX_ALIAS_NODES:
                    raise refuse(
                        line,
                        f"YAML aliases expand to more than {MAX_ALIAS_NODES} nodes (*{name} "
                        f"adds {nodes}); a config needs far fewer: is this an alias bomb?",
                    )
                if len(stack) + height > MAX_DEPTH:
                    raise refuse(line, f"{too_deep} (through *{name})")
                add(nodes, height)
    except _TooDeep as exc:
        raise refuse(exc.line, too_deep) from None


def _convert(
    node: yaml.Node, problems: Problems, environ: Mapping[str, str], path: str = ""
) -> Node:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        values: dict[str, Node] = {}
        key_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                problems.add(Node(None, key_line), "", "mapping keys must be plain strings")
                continue
            key = str(key_node.value)
            key_path = f"{path}.{key}" if path else key
            if key in values:
                problems.add(Node(None, key_line), key_path, "duplicate key")
                continue
            values[key] = _convert(value_node, problems, environ, key_path)
            key_lines[key] = key_line
        return Node(values, line, key_lines)
    if isinstance(node, yaml.SequenceNode):
        items = [
            _convert(item, problems, environ, f"{path}[{i}]") for i, item in enumerate(node.value)
        ]
        return Node(items, line)
    assert isinstance(node, yaml.ScalarNode)
    constructor = yaml.SafeLoader(" ")
    try:
        value = constructor.construct_object(node, deep=True)
    finally:
        constructor.dispose()
    if isinstance(value, str) and "${" in value:
        try:
            value, names = expand_env(value, environ)
        except ValueError as exc:
            problems.add(Node(None, line), path, str(exc))
            return Node(None, line, tag=node.tag)
        return Node(value, line, tag=node.tag, env=names)
    return Node(value, line, tag=node.tag)


# ${env:NAME} or ${env:NAME:-default}, as the OpenTelemetry Collector writes them; a leading
# "$" escapes one ($${env:NAME} is the text ${env:NAME}).
_ENV_REF_RE = re.compile(r"(\$?)\$\{env:([^}]*)\}")
_ENV_NAME_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$", re.DOTALL)


def expand_env(text: str, environ: Mapping[str, str]) -> tuple[str, tuple[str, ...]]:
    """Replace each ``${env:NAME}`` (or ``${env:NAME:-default}``) in ``text``; return the new
    text and the names substituted. Raises ValueError naming the variable, never its value,
    when one is unset (without a default) or the reference is malformed."""
    names: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        escape, reference = match.group(1), match.group(2)
        if escape:
            return match.group(0)[1:]
        parsed = _ENV_NAME_RE.match(reference)
        if parsed is None:
            raise ValueError(
                f"invalid reference ${{env:{reference}}}: expected ${{env:NAME}} or "
                "${env:NAME:-default}, NAME made of letters, digits and _"
            )
        name, default = parsed.group(1), parsed.group(2)
        found = environ.get(name)
        if found is None:
            if default is None:
                raise ValueError(f"environment variable {name} is not set (from ${{env:{name}}})")
            found = default
        names.append(name)
        return found

    expanded = _ENV_REF_RE.sub(substitute, text)
    return expanded, tuple(dict.fromkeys(names))


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h)\s*$")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """``"250ms"``, ``"30s"``, ``"5m"``, ``"1h"`` -> seconds. Bare numbers are rejected: units
    prevent the classic seconds-versus-milliseconds mistake."""
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ValueError("expected a duration such as 250ms, 30s, 5m or 1h")


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
}


def parse_size(value: object) -> int:
    """``"16MiB"``, ``"512KiB"``, ``4096`` -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    raise ValueError("expected a size such as 4096, 512KiB, 16MiB or 1GiB")


def parse_listen(value: object) -> str:
    """``HOST:PORT`` (IPv6 as ``[::1]:4317``); an empty string disables the listener. The same
    parser the receivers bind with, so what check-config accepts, `run` can bind."""
    if value == "":
        return ""
    if isinstance(value, str):
        try:
            parse_address(value)
        except ValueError:
            pass
        else:
            return value
    raise ValueError("expected HOST:PORT such as 0.0.0.0:4317 or [::1]:4317")
