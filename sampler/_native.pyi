"""The native per-span core (Rust, `native/`): typed for mypy. See docs/architecture.md."""

from typing import Final, Protocol

__version__: Final[str]
MAX_SPAN_TESTS: Final[int]
RARITY_DIMENSIONS: Final[tuple[str, ...]]
RARITY_TAIL_SIGNALS: Final[tuple[str, ...]]  # the signal of each of RARITY_DIMENSIONS
RARITY_RARE_SHAPE: Final[str]
RARITY_LG_MAX_K: Final[tuple[int, int]]  # a frequent-items sketch's lg_max_k, least and most

class InvalidRequest(ValueError):
    """Not a valid OTLP export request: INVALID_ARGUMENT / HTTP 400."""

class RequestTooLarge(ValueError):
    """Over a receiver limit: RESOURCE_EXHAUSTED without RetryInfo / HTTP 413."""

class InternalError(RuntimeError):
    """A bug in the native core (a panic, caught there)."""

class Request:
    """A validated OTLP export request, ingested by `Core.ingest` in chunks."""

    @property
    def spans(self) -> int: ...
    @property
    def max_end_ns(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def done(self) -> bool: ...
    def to_bytes(self) -> bytes: ...

def validate(body: bytes, max_spans: int) -> Request: ...
def validate_json(body: bytes, max_output_bytes: int, max_spans: int) -> Request:
    """An OTLP/JSON ``ExportTraceServiceRequest`` converted to protobuf and validated, without
    the GIL (``Request.to_bytes`` gives the protobuf).

    Accepts and rejects what ``sampler.otlp.json_codec.request_from_json`` does (except a field
    given twice in one object, a UTF-16/32 body, or arrays and objects nested over 512 deep,
    which it refuses). Raises ``InvalidRequest`` for a body that is not valid, and
    ``RequestTooLarge`` as soon as the output would exceed ``max_output_bytes`` or the spans
    ``max_spans``.
    """

def check_regex(pattern: str) -> str | None: ...

class SessionView:
    """One session being decided: what the scorer and the rules read."""

    @property
    def handle(self) -> int: ...
    @property
    def key(self) -> str: ...
    @property
    def keyed(self) -> bool: ...
    @property
    def trace_count(self) -> int: ...
    @property
    def trace_ids(self) -> list[bytes]: ...
    @property
    def randomness(self) -> int: ...
    @property
    def span_count(self) -> int: ...
    @property
    def span_bytes(self) -> int: ...
    @property
    def memory(self) -> int: ...
    @property
    def error_spans(self) -> int: ...
    @property
    def error_kinds(self) -> int: ...
    @property
    def first_start_ns(self) -> int: ...
    @property
    def last_end_ns(self) -> int: ...
    @property
    def duration_s(self) -> float: ...
    @property
    def latency_s(self) -> float: ...
    @property
    def model_latency_s(self) -> float: ...
    @property
    def test_bits(self) -> int: ...
    @property
    def tokens(self) -> int: ...
    @property
    def tool_call_count(self) -> int: ...
    @property
    def tool_calls(self) -> list[tuple[int, str, str, int, bool, int]]:
        """(start_ns, tool name, arguments digest ("" when none were recorded), turn (the index
        of the call's trace in ``trace_ids``), failed (the span carried an error), end_ns), in
        arrival order; the first 1,024."""
    def tool_path(self) -> tuple[str, ...]: ...
    @property
    def model_starts(self) -> list[int]:
        """Start times of the first 1,024 model (LLM) calls, in arrival order."""
    @property
    def turn_latencies(self) -> list[float]:
        """Each turn's (root span's) duration in seconds, in arrival order; the first 1,024."""
    @property
    def turns_ended(self) -> int:
        """How many turns (root spans) have arrived: ``len(turn_latencies)``."""
    @property
    def tool_repeats_in_a_turn(self) -> int:
        """The most calls of one tool (by name) within one turn, among ``tool_calls``."""
    @property
    def turns_with_tool_calls(self) -> int:
        """How many turns made calls among ``tool_calls``."""
    @property
    def agent_count(self) -> int:
        """``len(agents)``."""
    @property
    def model_pace_s(self) -> float:
        """The typical (median; of an even count the lower middle) model call, 0 without one."""
    @property
    def tool_pace_s(self) -> float:
        """The typical (median) tool call among ``tool_calls``, 0 without one."""
    @property
    def agents(self) -> list[tuple[bytes, str]]: ...
    @property
    def parents(self) -> dict[bytes, bytes]: ...
    @property
    def links(self) -> dict[bytes, tuple[bytes, ...]]: ...
    @property
    def root_agent(self) -> str: ...
    @property
    def decided_before(self) -> bool: ...
    @property
    def kept_elsewhere(self) -> tuple[str, float, list[str]] | None:
        """A peer sampler's keep of this conversation (rule, adjusted count, signals),
        received while it was buffered (cluster), or None."""
    @property
    def awaiting_look(self) -> bool: ...
    @property
    def rootless(self) -> bool: ...
    @property
    def created(self) -> float: ...

class RaritySettingsLike(Protocol):
    """What `RarityModel` reads of its settings (sampler.signals.rarity.RaritySettings)."""

    @property
    def window_s(self) -> float: ...
    @property
    def windows(self) -> int: ...
    @property
    def decay(self) -> float: ...
    @property
    def warmup_sessions(self) -> int: ...
    @property
    def shape_lg_max_k(self) -> int: ...
    @property
    def group_shape_lg_max_k(self) -> int: ...
    @property
    def quantile_k(self) -> int: ...
    @property
    def max_groups(self) -> int: ...
    @property
    def min_group_values(self) -> int: ...
    @property
    def rare_shape_share(self) -> float: ...
    @property
    def tail_quantile(self) -> float: ...

class RarityModel:
    """The rarity model of recent traffic (native/src/rarity.rs; wrapped by
    sampler.signals.rarity.RarityModel). Dimensions are passed by their index in
    sampler.signals.rarity.DIMENSIONS. ValueError for invalid settings or a `now` that is not
    finite; InternalError for a bug (a panic, caught)."""

    def __init__(self, settings: RaritySettingsLike) -> None: ...
    def reconfigure(self, settings: RaritySettingsLike) -> None: ...
    def score(
        self,
        parts: list[str],
        group: str,
        numbers: list[tuple[int, float]],
        now: float,
        units: list[tuple[int, int]],
    ) -> tuple[float, list[float], bool]:
        """(shape score, the scores of the dimensions in order, cold)."""
    def observe(
        self, parts: list[str], group: str, numbers: list[tuple[int, list[float]]], now: float
    ) -> None: ...
    def flush(self) -> None: ...
    def sessions_seen(self, now: float) -> int: ...
    def shape_resolution(self, now: float) -> float: ...
    @property
    def groups(self) -> tuple[str, ...]: ...
    def approx_bytes(self) -> int: ...
    def score_session(
        self,
        view: SessionView,
        now: float,
        fragment: bool,
        learn: bool,
        running_at_cap: bool,
        collapse_repeats: bool,
        threshold: float,
    ) -> tuple[dict[str, float], list[str], bool]:
        """Scores a session, then (with `learn`) teaches it: (its rarity scores by name,
        "shape" and the dimensions scored; the rarity signals fired; cold)."""

class HeldSession:
    """A dropped session leaving the hold."""

    @property
    def handle(self) -> int: ...
    @property
    def cold(self) -> bool: ...
    @property
    def looks(self) -> int: ...
    @property
    def view(self) -> SessionView | None: ...
    @property
    def verdict(self) -> tuple[bool, str, float, list[str]]: ...

KeptRequests = list[tuple[bytes, int]]

class Core:
    def __init__(
        self,
        *,
        session_keys: list[str],
        span_tests: list[tuple[object, ...] | None],
        max_attributes_per_span: int,
        max_attribute_value_size: int,
        decision_wait: float,
        root_end_grace: float,
        open_trace_wait: float,
        max_session_duration: float,
        max_session_spans: int,
        tick: float,
        dropped_hold: float,
        dropped_hold_max_spans: int,
        decision_cache_max: int,
        batch_max_spans: int,
        batch_max_bytes: int,
        shadow: bool = False,
    ) -> None: ...
    @property
    def shadow(self) -> bool:
        """Shadow mode: every span is forwarded, annotated with the verdict it would have had
        (a dropped session's spans by ``release``, late spans whatever verdict they follow)."""
    @shadow.setter
    def shadow(self, shadow: bool) -> None: ...
    def set_span_tests(self, span_tests: list[tuple[object, ...] | None], reset: int) -> None:
        """Replaces the span tests (a reload): position i is bit i of ``test_bits``, None a
        free position; the bits of ``reset`` are cleared in every session. Raises ValueError,
        changing nothing, for tests that cannot be used."""
    def set_session_settings(
        self,
        *,
        decision_wait: float,
        root_end_grace: float,
        open_trace_wait: float,
        max_session_duration: float,
        max_session_spans: int,
        tick: float,
        dropped_hold: float,
        dropped_hold_max_spans: int,
        decision_cache_max: int,
    ) -> None:
        """New completion and hold settings (a reload); raises ValueError if ``tick`` differs
        from the running one. Buffered sessions whose deadline moves earlier are due earlier."""
    def ingest(
        self, request: Request, now: float, max_spans: int
    ) -> tuple[int, int, int, int, int, KeptRequests]: ...
    def pop_due(self, now: float, limit: int = ...) -> list[SessionView]: ...
    def pop_oldest(self, spans: int, memory: int) -> list[SessionView]: ...
    def pop_all(self) -> list[SessionView]: ...
    def decide(
        self,
        handle: int,
        keep: bool,
        rule: str,
        adjusted_count: float,
        signals: list[str] | tuple[str, ...],
        same_randomness: bool,
    ) -> KeptRequests: ...
    def hold(self, handle: int, cold: bool, now: float, looks: int) -> bool: ...
    def adopt_keep(
        self, key: str, rule: str, adjusted_count: float, signals: list[str] | tuple[str, ...]
    ) -> tuple[KeptRequests, int]:
        """A peer sampler kept the conversation ``key``: later turns follow this keep (as the
        decision cache's), and the part held here after a drop is kept now: its requests and
        span count come back (none when nothing was held)."""
    def release(self, handle: int) -> KeptRequests:
        """Lets go of a decided session; in shadow mode a dropped one's spans come back as
        requests, annotated as dropped (live: an empty list)."""
    def hold_pop_expired(self, now: float) -> list[HeldSession]: ...
    def hold_release_oldest(self) -> HeldSession | None: ...
    def hold_pop_all(self) -> list[HeldSession]: ...
    def next_deadline(self) -> float | None:
        """A time by which ``pop_due`` or ``hold_pop_expired`` has something to do (or at
        least a stale timer to drop): the middle of the first tick holding timers, or the end
        of the oldest hold. None when nothing is buffered or held."""
    @property
    def hold_over_cap(self) -> bool: ...
    def stats(self) -> dict[str, int]: ...
    @property
    def span_count(self) -> int: ...
    @property
    def memory(self) -> int: ...
    @property
    def held_spans(self) -> int: ...
    @property
    def held_memory(self) -> int: ...
    @property
    def span_tests(self) -> int: ...
    @staticmethod
    def trace_key(trace_id: bytes) -> str: ...
