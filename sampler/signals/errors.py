"""The error taxonomy: which kind of error a span shows, as bits, so a session keeps the union
of its spans' kinds in one int and the `error` signal can say which kind fired."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sampler.config.model import SignalsConfig
from sampler.signals.registry import Scored, Session, SignalKind, signal_kind


class ErrorKind(enum.IntFlag):
    STATUS = 1  # span status ERROR
    EXCEPTION = 2  # an `exception` event, whatever the status
    ERROR_TYPE = 4  # `error.type` set
    TOOL = 8  # any of the above on a tool span: a failed tool call
    LLM_REFUSAL = 16  # gen_ai.response.finish_reasons contains content_filter
    LLM_TRUNCATED = 32  # ... contains length (the model ran out of output tokens)
    HTTP_5XX = 64  # an HTTP status >= 500 on any span


GENERIC = ErrorKind.STATUS | ErrorKind.EXCEPTION | ErrorKind.ERROR_TYPE

# Signal names, as written to agent_sampler.signals and used in `error: {kinds: [...]}`.
SIGNAL_NAMES: dict[str, ErrorKind] = {
    "error": GENERIC,
    "tool_error": ErrorKind.TOOL,
    "llm_refusal": ErrorKind.LLM_REFUSAL,
    "llm_truncated": ErrorKind.LLM_TRUNCATED,
    "http_5xx": ErrorKind.HTTP_5XX,
}
# The same as plain ints: IntFlag arithmetic goes through Python-level enum code.
_SIGNAL_BITS = tuple((name, int(bits)) for name, bits in SIGNAL_NAMES.items())


def error_signals(kinds: int) -> tuple[str, ...]:
    """The signal names that a union of error kinds fires, in a stable order."""
    if not kinds:
        return ()
    return tuple(name for name, bits in _SIGNAL_BITS if kinds & bits)


@dataclass(frozen=True, slots=True)
class ErrorSignals:
    """The `error` signals: which kinds of error the session's spans showed."""

    names: tuple[str, ...] = tuple(SIGNAL_NAMES)

    def score(self, session: Session, scored: Scored) -> None:
        scored.signals.extend(error_signals(session.features.error_kinds))

    def flush(self) -> None:
        pass


@signal_kind("errors", order=10)
def _errors(config: SignalsConfig) -> SignalKind:
    return ErrorSignals()
