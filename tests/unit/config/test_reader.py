"""The YAML reader: value parsers (durations, sizes, listen addresses), the Node tree with line
numbers, and how problems are printed."""

from __future__ import annotations

import time

import pytest

from sampler.config import address, reader
from sampler.config.reader import (
    ConfigError,
    ConfigProblem,
    Node,
    did_you_mean,
    parse_duration,
    parse_listen,
    parse_size,
    parse_yaml,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("1.5m", 90.0),
        ("2h", 7200.0),
        ("0s", 0.0),
        ("500us", 0.0005),
        (" 30 s ", 30.0),
    ],
    ids=["millis", "seconds", "fractional-minutes", "hours", "zero", "micros", "spaces"],
)
def test_parse_duration_accepts(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [30, 30.0, "30", "30 sec", "-1s", "", "1d", None, True],
    ids=[
        "bare-int",
        "bare-float",
        "numeric-string",
        "spelt-unit",
        "negative",
        "empty",
        "days",
        "null",
        "bool",
    ],
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="expected a duration such as 250ms"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (4096, 4096),
        ("4096", 4096),
        ("100B", 100),
        ("512KiB", 512 << 10),
        ("16MiB", 16 << 20),
        ("1GiB", 1 << 30),
        ("1MB", 10**6),
        ("1.5KiB", 1536),
        (0, 0),
    ],
    ids=["int", "digits", "bytes", "kib", "mib", "gib", "decimal-mb", "fractional", "zero"],
)
def test_parse_size_accepts(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    "value",
    ["12 parsecs", -1, True, "-1KiB", 1.5, "", "16mib", None],
    ids=[
        "unknown-unit",
        "negative-int",
        "bool",
        "negative-text",
        "yaml-float",
        "empty",
        "lowercase-unit",
        "null",
    ],
)
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="expected a size such as 4096"):
        parse_size(value)


@pytest.mark.parametrize(
    "text",
    ["0.0.0.0:4317", "[::1]:4317", "localhost:0", "127.0.0.1:65535", ""],
    ids=["ipv4-any", "ipv6-bracketed", "name-ephemeral", "max-port", "empty-disables"],
)
def test_parse_listen_accepts(text: str) -> None:
    assert parse_listen(text) == text


@pytest.mark.parametrize(
    "value",
    ["4317", "host:99999", "::1:4317", ":4317", "host:", "host:http", "[::1]", 4317, None],
    ids=[
        "port-only",
        "port-too-big",
        "bare-ipv6",
        "no-host",
        "no-port",
        "named-port",
        "ipv6-no-port",
        "yaml-int",
        "null",
    ],
)
def test_parse_listen_rejects(value: object) -> None:
    with pytest.raises(ValueError, match=r"expected HOST:PORT"):
        parse_listen(value)


@pytest.mark.parametrize(
    "text",
    ["0.0.0.0:4317", "[::1]:4317", "4317", "::1:4317", "host:99999", "[::]:0"],
    ids=["ipv4", "ipv6", "port-only", "bare-ipv6", "port-too-big", "ipv6-any"],
)
def test_config_and_receiver_agree_on_listen_addresses(text: str) -> None:
    """check-config must accept exactly the addresses the receivers can bind."""
    assert _config_accepts(text) == _receiver_accepts(text)


@pytest.mark.parametrize(
    "text",
    ["[]:4317", "[[::1]]:4317", "host:\u0664\u0663\u0661\u0667"],
    ids=["empty-brackets", "double-brackets", "arabic-indic-digits"],
)
def test_config_rejects_listen_addresses_the_receiver_rejects(text: str) -> None:
    assert not _receiver_accepts(text)
    assert not _config_accepts(text)


def _config_accepts(text: str) -> bool:
    try:
        parse_listen(text)
    except ValueError:
        return False
    return True


def _receiver_accepts(text: str) -> bool:
    try:
        address.parse_listen(text)
    except ValueError:
        return False
    return True


def test_parse_yaml_keeps_value_and_key_lines() -> None:
    root = parse_yaml("a: 1\nb:\n  c: [x, y]\n  d: text\n", "f.yaml")
    assert root.is_mapping and root.key_lines == {"a": 1, "b": 2}
    b = dict(root.items())["b"]
    assert b.line == 3 and b.key_lines == {"c": 3, "d": 4}
    c = dict(b.items())["c"]
    assert c.is_sequence and [item.value for item in c.value] == ["x", "y"]  # type: ignore[union-attr]
    assert dict(b.items())["d"] == Node("text", 4, tag="tag:yaml.org,2002:str")


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("a: 1\nb: 2: 3\n", 2, "mapping values are not allowed here"),
        ("a:\n  - x\n  y: 1\n", 3, "expected <block end>, but found"),
        ("a: [1, 2\nb: 3\n", 2, "expected ',' or ']'"),
        ("a: 1\n\tb: 2\n", 2, "found character '\\t' that cannot start any token"),
        ("a: 1\n---\nb: 2\n", 2, "found another document"),
    ],
    ids=["mapping-in-scalar", "bad-indent", "unclosed-flow", "tab", "two-documents"],
)
def test_yaml_syntax_error_reports_its_line(text: str, line: int, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, "f.yaml")
    (found,) = caught.value.problems
    assert (found.path, found.line, found.key) == ("f.yaml", line, "")
    assert found.message.startswith("invalid YAML: ") and problem in found.message


def test_duplicate_keys_are_all_reported_with_their_lines() -> None:
    text = "a: 1\nb:\n  c: 1\n  c: 2\na: 3\n"
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, "f.yaml")
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (4, "duplicate key"),
        (5, "duplicate key"),
    ]


def test_duplicate_key_is_reported_with_its_key_path() -> None:
    with pytest.raises(ConfigError, match=r"^f\.yaml:4: b\.c: duplicate key$"):
        parse_yaml("a: 1\nb:\n  c: 1\n  c: 2\n", "f.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", {}), ("# only a comment\n", {}), ("a: null\n", {"a": None})],
    ids=["empty", "comment-only", "null-value"],
)
def test_empty_documents_are_empty_mappings(text: str, expected: dict[str, object]) -> None:
    root = parse_yaml(text, "f.yaml")
    assert {key: node.value for key, node in root.items()} == expected


@pytest.mark.parametrize(
    ("value", "description"),
    [
        ({}, "a mapping"),
        ([], "a list"),
        (None, "nothing (null)"),
        (True, "boolean True"),
        (30, "int 30"),
        (1.5, "float 1.5"),
        ("x", "str 'x'"),
    ],
    ids=["mapping", "list", "null", "bool", "int", "float", "str"],
)
def test_node_describe(value: object, description: str) -> None:
    assert Node(value, 1).describe() == description


@pytest.mark.parametrize(
    ("problem", "text"),
    [
        (ConfigProblem("c.yaml", 4, "sessions.tick", "bad"), "c.yaml:4: sessions.tick: bad"),
        (ConfigProblem("c.yaml", 2, "", "invalid YAML: x"), "c.yaml:2: invalid YAML: x"),
    ],
    ids=["with-key", "without-key"],
)
def test_problem_prints_path_line_key_message(problem: ConfigProblem, text: str) -> None:
    assert str(problem) == text


def test_config_error_lists_one_problem_per_line_sorted_by_line() -> None:
    problems = reader.Problems("c.yaml")
    problems.add(Node(None, 9), "b", "second")
    problems.add(None, "", "first")  # no node: line 1
    problems.add(Node(None, 9), "c", "third")  # same line: keeps the order found
    with pytest.raises(ConfigError) as caught:
        problems.raise_if_any()
    assert str(caught.value).splitlines() == [
        "c.yaml:1: first",
        "c.yaml:9: b: second",
        "c.yaml:9: c: third",
    ]


@pytest.mark.parametrize(
    ("word", "hint"),
    [
        ("sesions", " (did you mean 'sessions'?)"),
        ("eror", " (did you mean 'error'?)"),
        ("warn", " (did you mean 'warning'?)"),
        ("zzz", ""),
    ],
    ids=["missing-letter", "short-word", "prefix", "nothing-close"],
)
def test_did_you_mean(word: str, hint: str) -> None:
    choices = ["receivers", "sessions", "error", "warning", "info"]
    assert did_you_mean(word, choices) == hint


# -- bounds: what a YAML text may expand to ----------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "x" + "]" * depth


def test_nesting_up_to_the_bound_is_read_and_one_more_level_is_refused() -> None:
    node = parse_yaml(f"a: {nested(reader.MAX_DEPTH - 1)}\n", "c.yaml")  # the mapping is one
    assert node.is_mapping
    with pytest.raises(ConfigError) as caught:
        parse_yaml(f"a: {nested(reader.MAX_DEPTH)}\n", "c.yaml")
    assert str(caught.value) == f"c.yaml:1: YAML nested deeper than {reader.MAX_DEPTH} levels"


def test_block_nesting_is_refused_at_the_line_that_goes_too_deep() -> None:
    text = "".join("  " * i + f"k{i}:\n" for i in range(reader.MAX_DEPTH + 5))
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, "c.yaml")
    assert [p.line for p in caught.value.problems] == [reader.MAX_DEPTH + 1]


def test_deep_flow_nesting_is_refused_without_the_scanners_quadratic_look_ahead() -> None:
    """PyYAML reads 1,024 characters ahead while ``[`` may start a key, quadratically: 0.5 s
    for the first event of 20,000 nested lists, before any depth check could run."""
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="nested deeper"):
        parse_yaml(f"a: {nested(20_000)}\n", "c.yaml")
    assert time.perf_counter() - started < 0.1


def test_aliases_may_add_up_to_the_bound_and_not_one_node_more() -> None:
    # an anchored list of 99 strings is 100 nodes; each alias to it adds 100
    anchor = "a: &a [" + ", ".join(["v"] * 99) + "]\n"
    uses = reader.MAX_ALIAS_NODES // 100
    text = anchor + "b: [" + ", ".join(["*a"] * uses) + "]\n"
    node = parse_yaml(text, "c.yaml")
    assert node.is_mapping and len(node.value["b"].value) == uses
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text + "c: *a\n", "c.yaml")
    (problem,) = caught.value.problems
    assert problem.line == 3
    assert problem.message.startswith(f"YAML aliases expand to more than {reader.MAX_ALIAS_NODES}")


def test_an_alias_bomb_is_refused_at_once() -> None:
    levels = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 30):  # 9**30 strings if expanded
        levels.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="alias bomb"):
        parse_yaml("\n".join(levels), "c.yaml")
    assert time.perf_counter() - started < 0.1


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a: &a [*a]\n", 1),
        ("a: &a\n  b:\n    c: *a\n", 3),
        ("a: &a {b: [1, {c: *a}]}\n", 1),
    ],
    ids=["list", "mapping", "nested"],
)
def test_a_recursive_alias_is_refused_at_its_line(text: str, line: int) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, "c.yaml")
    (problem,) = caught.value.problems
    assert (problem.line, problem.message) == (
        line,
        "recursive YAML alias *a: it refers to a node holding it",
    )


def test_ordinary_aliases_still_share_a_value() -> None:
    text = "base: &wait 10s\nsessions: {decision_wait: *wait}\ndefaults: &d {x: 1}\nother: *d\n"
    node = parse_yaml(text, "c.yaml")
    assert node.value["sessions"].value["decision_wait"].value == "10s"
    assert node.value["other"].value["x"].value == 1
