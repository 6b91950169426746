"""YAML `rules:` -> RuleSpec tuple, with every problem reported (line, key path, hint).

rules:
  - name: errors
    when: {error: true}
    action: keep
  - name: baseline
    action: {probability: 0.05}
"""

from __future__ import annotations

from sampler.config.reader import Node, Problems, did_you_mean
from sampler.rules.conditions import ParseContext
from sampler.rules.spec import (
    Action,
    Drop,
    KeepAlways,
    KeepProbability,
    KeepWithinBudget,
    RateLimit,
    RuleSpec,
)

_NAMED_ACTIONS = ("keep", "drop", "budget")
_ACTION_KINDS = ("probability", "rate_limit")
_ACTION_HELP = (
    "expected keep, drop, budget, {probability: P} or "
    "{rate_limit: {sessions_per_second: N}} / {rate_limit: {spans_per_second: N}}"
)


def parse_rules(node: Node, problems: Problems, key: str = "rules") -> tuple[RuleSpec, ...]:
    ctx = ParseContext(problems, key)
    if not node.is_sequence:
        ctx.problem(node, f"expected a list of rules, got {node.describe()}")
        return ()
    assert isinstance(node.value, list)
    rules: list[RuleSpec] = []
    names: set[str] = set()
    for index, item in enumerate(node.value):
        rule_ctx = ctx.at(f"[{index}]")
        fields = rule_ctx.mapping(item, ("name", "when", "action"), required=("name", "action"))
        if fields is None:
            continue
        name = rule_ctx.at("name").string(fields["name"])
        if name is not None and name in names:
            rule_ctx.at("name").problem(fields["name"], f"duplicate rule name {name!r}")
        condition = None
        condition_ok = True
        if "when" in fields:
            condition = rule_ctx.at("when").condition(fields["when"])
            condition_ok = condition is not None
        action = parse_action(fields["action"], rule_ctx.at("action"))
        if name is None or action is None or not condition_ok:
            continue
        names.add(name)
        rules.append(RuleSpec(name, condition, action, item.line))
    return tuple(rules)


def parse_action(node: Node, ctx: ParseContext) -> Action | None:
    if node.value == "keep":
        return KeepAlways()
    if node.value == "drop":
        return Drop()
    if node.value == "budget":
        return KeepWithinBudget()
    if not node.is_mapping or len(node.value) != 1:  # type: ignore[arg-type]
        hint = did_you_mean(node.value, _NAMED_ACTIONS) if isinstance(node.value, str) else ""
        ctx.problem(node, f"{_ACTION_HELP}, got {node.describe()}{hint}")
        return None
    ((kind, value),) = node.items()
    if kind == "probability":
        p = ctx.at(kind).number(value)
        if p is None:
            return None
        if not 0 < p <= 1:
            ctx.at(kind).problem(value, f"expected a probability in (0, 1], got {p}")
            return None
        return KeepProbability(p)
    if kind == "rate_limit":
        sub = ctx.at(kind)
        fields = sub.mapping(value, ("sessions_per_second", "spans_per_second"))
        if fields is None:
            return None
        if len(fields) != 1:
            sub.problem(value, "expected exactly one of sessions_per_second, spans_per_second")
            return None
        ((unit_key, rate_node),) = fields.items()
        rate = sub.at(unit_key).number(rate_node)
        if rate is None:
            return None
        if rate <= 0:
            sub.at(unit_key).problem(rate_node, f"expected a rate > 0, got {rate}")
            return None
        return RateLimit(rate, unit_key.removesuffix("_per_second"))
    ctx.problem(node, f"unknown action {kind!r}{did_you_mean(kind, _ACTION_KINDS)}; {_ACTION_HELP}")
    return None
