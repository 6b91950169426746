"""Condition kinds. Importing this package registers every kind (one module each)."""

from sampler.rules.conditions import (  # noqa: F401  (imported for registration)
    attribute,
    combinators,
    error,
    rare,
    session_metrics,
    span_name,
    tool_cycle,
)
from sampler.rules.conditions.registry import ParseContext, condition_kind, kinds

__all__ = ["ParseContext", "condition_kind", "kinds"]
