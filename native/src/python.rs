//! The Python bindings: `sampler._native` (typed in `sampler/_native.pyi`). The only module
//! that touches Python objects; the rest of the crate is plain Rust, tested with `cargo test`.
//!
//! Work on a request runs with the GIL released (`py.detach`); Python objects are built only
//! for what crosses: one `SessionView` per session, kept requests as bytes. A panic is caught
//! here and becomes an exception (`InvalidRequest` for a request, `InternalError` otherwise):
//! it never unwinds into Python.
//!
//! The core's state sits behind a mutex that is never held while the GIL is being acquired,
//! so a thread ingesting without the GIL and the event loop's thread cannot deadlock.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::attrs::Expected;
use crate::buffer::{hex, SessionId, SessionSettings};
use crate::core::{Core, Cursor, HeldView, SessionView};
use crate::emit::{KeptRequest, RequestLimits};
use crate::extract::{Extractor, ExtractorSettings, KeyTable};
use crate::features::Parent;
use crate::otlp::{validate_request, RequestError, RequestSummary};
use crate::rarity::{
    self, BadTime, Model, SessionFacts, SessionOptions, Settings, DIMENSIONS, TAIL_SIGNALS,
};
use crate::span_tests::{compile_regex, AttributeOp, Scope, SpanTest, MAX_SPAN_TESTS};
use crate::verdict::Verdict;

// A request that is not a valid OTLP export request: INVALID_ARGUMENT / HTTP 400.
create_exception!(_native, InvalidRequest, PyValueError);
// A request over a receiver limit (spans, size): RESOURCE_EXHAUSTED without RetryInfo / 413.
create_exception!(_native, RequestTooLarge, PyValueError);
// A bug in the native core (a panic, caught): logged and counted by the caller.
create_exception!(_native, InternalError, PyRuntimeError);

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn request_error(err: RequestError) -> PyErr {
    match err {
        RequestError::Invalid(m) => InvalidRequest::new_err(m),
        RequestError::TooLarge(m) => RequestTooLarge::new_err(m),
    }
}

// --- requests -------------------------------------------------------------------------------

/// A request's bytes: a Python `bytes` object read without the GIL, or bytes made here (the
/// protobuf form of an OTLP/JSON body).
enum Body {
    Python(PyBackedBytes),
    Native(Arc<[u8]>),
}

impl Body {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Python(b) => b,
            Body::Native(b) => b,
        }
    }
}

/// A validated OTLP export request, ingested by `Core.ingest` in chunks.
#[pyclass(module = "sampler._native", name = "Request")]
struct PyRequest {
    body: Arc<Body>,
    summary: RequestSummary,
    cursor: Cursor,
}

#[pymethods]
impl PyRequest {
    /// Spans in the request (valid ids or not).
    #[getter]
    fn spans(&self) -> usize {
        self.summary.spans
    }

    /// The latest span end time (ns since the epoch), 0 without spans.
    #[getter]
    fn max_end_ns(&self) -> u64 {
        self.summary.max_end_ns
    }

    /// The request's serialized size.
    #[getter]
    fn size(&self) -> usize {
        self.body.bytes().len()
    }

    /// Whether `Core.ingest` has taken all of it.
    #[getter]
    fn done(&self) -> bool {
        self.cursor.done
    }

    /// The request's protobuf bytes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.body.bytes())
    }
}

fn validated(py: Python<'_>, body: Body, max_spans: usize) -> PyResult<PyRequest> {
    let body = Arc::new(body);
    let shared = body.clone();
    let summary = py.detach(move || {
        catch_unwind(AssertUnwindSafe(|| {
            validate_request(shared.bytes(), max_spans)
        }))
        .unwrap_or_else(|panic| {
            Err(RequestError::Invalid(format!(
                "cannot decode the request: {}",
                panic_text(panic)
            )))
        })
    });
    Ok(PyRequest {
        body,
        summary: summary.map_err(request_error)?,
        cursor: Cursor::default(),
    })
}

/// Validates a serialized `ExportTraceServiceRequest` as protobuf's parser does (without
/// building anything): raises `InvalidRequest`, or `RequestTooLarge` past `max_spans` spans.
#[pyfunction]
fn validate(py: Python<'_>, body: PyBackedBytes, max_spans: usize) -> PyResult<PyRequest> {
    validated(py, Body::Python(body), max_spans)
}

/// Why a rule's regular expression cannot be used here, or None when it can.
#[pyfunction]
fn check_regex(pattern: &str) -> Option<String> {
    compile_regex(pattern).err()
}

// --- sessions -------------------------------------------------------------------------------

fn parent_bytes(parent: &Parent) -> &[u8] {
    match parent {
        Parent::Root => b"",
        Parent::Id(id) => id,
        Parent::Unmatched => b"\x00", // not empty (not a root), never a span id
    }
}

/// One session being decided: what the scorer and the rules read (a copy: the session itself
/// stays in the core until it is kept, held or released).
#[pyclass(module = "sampler._native", name = "SessionView", frozen)]
struct PySessionView(SessionView);

#[pymethods]
impl PySessionView {
    #[getter]
    fn handle(&self) -> u64 {
        self.0.id.as_u64()
    }
    #[getter]
    fn key(&self) -> &str {
        &self.0.key
    }
    #[getter]
    fn keyed(&self) -> bool {
        self.0.keyed
    }
    #[getter]
    fn trace_count(&self) -> usize {
        self.0.trace_ids.len()
    }
    /// Its traces, in the order the buffer first saw them.
    #[getter]
    fn trace_ids<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.0.trace_ids.iter().map(|t| PyBytes::new(py, t)))
    }
    #[getter]
    fn randomness(&self) -> u64 {
        self.0.randomness
    }
    #[getter]
    fn span_count(&self) -> u64 {
        self.0.span_count
    }
    #[getter]
    fn span_bytes(&self) -> usize {
        self.0.span_bytes
    }
    #[getter]
    fn memory(&self) -> usize {
        self.0.memory
    }
    #[getter]
    fn error_spans(&self) -> u64 {
        self.0.error_spans
    }
    #[getter]
    fn error_kinds(&self) -> u8 {
        self.0.error_kinds
    }
    #[getter]
    fn first_start_ns(&self) -> u64 {
        self.0.first_start_ns
    }
    #[getter]
    fn last_end_ns(&self) -> u64 {
        self.0.last_end_ns
    }
    /// Last end - first start, in seconds (0 without a start, or when it ends before).
    #[getter]
    fn duration_s(&self) -> f64 {
        let v = &self.0;
        if v.first_start_ns == 0 || v.last_end_ns < v.first_start_ns {
            return 0.0;
        }
        (v.last_end_ns - v.first_start_ns) as f64 / 1e9
    }
    /// The longest turn: the duration of the session's longest root span.
    #[getter]
    fn latency_s(&self) -> f64 {
        self.0.longest_root_ns as f64 / 1e9
    }
    /// The slowest model (LLM) call of the session.
    #[getter]
    fn model_latency_s(&self) -> f64 {
        self.0.slowest_llm_ns as f64 / 1e9
    }
    #[getter]
    fn test_bits(&self) -> u64 {
        self.0.test_bits
    }
    #[getter]
    fn tokens(&self) -> i128 {
        self.0.tokens
    }
    #[getter]
    fn tool_call_count(&self) -> u64 {
        self.0.tool_call_count
    }
    /// (start_ns, tool name, arguments digest ("" when none were recorded), turn (the index of
    /// its trace in `trace_ids`), failed, end_ns), in arrival order.
    #[getter]
    fn tool_calls<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items = self.0.tool_calls.iter().map(|c| {
            let digest = if c.args_digest == 0 {
                String::new()
            } else {
                format!("{:016x}", c.args_digest)
            };
            (c.start_ns, &*c.name, digest, c.turn, c.failed, c.end_ns)
        });
        PyList::new(py, items)
    }
    /// Tool names in start order.
    fn tool_path<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let mut calls: Vec<_> = self.0.tool_calls.iter().collect();
        calls.sort_by(|a, b| {
            (a.start_ns, &a.name, a.args_digest).cmp(&(b.start_ns, &b.name, b.args_digest))
        });
        PyTuple::new(py, calls.into_iter().map(|c| &*c.name))
    }
    /// Start times of its first model (LLM) calls, in arrival order: tool calls with no model
    /// call started between them were made on one model decision.
    #[getter]
    fn model_starts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, &self.0.model_starts)
    }
    /// The duration of each turn (root span) in seconds, in arrival order.
    #[getter]
    fn turn_latencies<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.0.turn_ns.iter().map(|ns| *ns as f64 / 1e9))
    }
    /// How many turns (root spans) have ended.
    #[getter]
    fn turns_ended(&self) -> usize {
        self.0.turn_ns.len()
    }
    /// Its typical (median; the lower middle one of an even count) model call, in seconds.
    #[getter]
    fn model_pace_s(&self) -> f64 {
        self.0.model_pace_ns as f64 / 1e9
    }
    /// The most calls of one tool (by name) within one turn, among `tool_calls`.
    #[getter]
    fn tool_repeats_in_a_turn(&self) -> u32 {
        self.0.tool_repeats.0
    }
    /// How many turns made calls among `tool_calls`.
    #[getter]
    fn turns_with_tool_calls(&self) -> u32 {
        self.0.tool_repeats.1
    }
    /// How many agent spans `agents` holds.
    #[getter]
    fn agent_count(&self) -> usize {
        self.0.agents.len()
    }
    /// Its typical (median) tool call, in seconds.
    #[getter]
    fn tool_pace_s(&self) -> f64 {
        self.0.tool_pace_ns as f64 / 1e9
    }
    /// (span id, agent name) of its agent spans, in arrival order.
    #[getter]
    fn agents<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(
            py,
            self.0
                .agents
                .iter()
                .map(|(id, name)| (PyBytes::new(py, id), &**name)),
        )
    }
    /// span id -> parent span id, for agent and tool spans.
    #[getter]
    fn parents<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (id, parent) in &self.0.parents {
            out.set_item(PyBytes::new(py, id), PyBytes::new(py, parent_bytes(parent)))?;
        }
        Ok(out)
    }
    /// span id -> the span ids it links to.
    #[getter]
    fn links<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (id, linked) in &self.0.links {
            let linked =
                PyTuple::new(py, linked.iter().map(|p| PyBytes::new(py, parent_bytes(p))))?;
            out.set_item(PyBytes::new(py, id), linked)?;
        }
        Ok(out)
    }
    #[getter]
    fn root_agent(&self) -> &str {
        &self.0.root_agent
    }
    #[getter]
    fn decided_before(&self) -> bool {
        self.0.decided_before
    }
    /// A peer sampler's keep of this conversation, received while it was buffered: (rule,
    /// adjusted count, signals), or None.
    #[getter]
    fn kept_elsewhere(&self) -> Option<(&str, f64, Vec<&str>)> {
        self.0.kept_elsewhere.as_deref().map(|v| {
            (
                &*v.rule,
                v.adjusted_count,
                v.signals.iter().map(|s| &**s).collect(),
            )
        })
    }
    #[getter]
    fn awaiting_look(&self) -> bool {
        self.0.awaiting_look
    }
    /// Whether some trace of the session has not delivered its root span.
    #[getter]
    fn rootless(&self) -> bool {
        self.0.rootless
    }
    #[getter]
    fn created(&self) -> f64 {
        self.0.created
    }
    fn __repr__(&self) -> String {
        format!(
            "SessionView(key={:?}, spans={}, traces={})",
            &*self.0.key,
            self.0.span_count,
            self.0.trace_ids.len()
        )
    }
}

/// A dropped session leaving the hold: its drop verdict, and for one decided while the rarity
/// model was cold, its view for a second look.
#[pyclass(module = "sampler._native", name = "HeldSession", frozen)]
struct PyHeldSession {
    #[pyo3(get)]
    handle: u64,
    #[pyo3(get)]
    cold: bool,
    #[pyo3(get)]
    looks: u32,
    #[pyo3(get)]
    view: Option<Py<PySessionView>>,
    verdict: Arc<Verdict>,
}

#[pymethods]
impl PyHeldSession {
    /// The drop: (keep, rule, adjusted count, signals).
    #[getter]
    fn verdict(&self) -> (bool, &str, f64, Vec<&str>) {
        let v = &self.verdict;
        (
            v.keep,
            &v.rule,
            v.adjusted_count,
            v.signals.iter().map(|s| &**s).collect(),
        )
    }
}

// --- the core -------------------------------------------------------------------------------

/// The per-span core: sessions buffered natively, Python deciding them.
#[pyclass(module = "sampler._native", name = "Core", frozen)]
struct PyCore {
    inner: Mutex<Core>,
}

/// A span test from its spec (`SpanTest.native_spec()`); None is a free position.
fn parse_test(spec: &Option<Bound<'_, PyTuple>>, keys: &mut KeyTable) -> PyResult<SpanTest> {
    let Some(spec) = spec else {
        return Ok(SpanTest::Vacant);
    };
    let kind: String = spec.get_item(0)?.extract()?;
    match kind.as_str() {
        "span_name" => Ok(SpanTest::SpanName(spec.get_item(1)?.extract()?)),
        "span_name_regex" => {
            let pattern: String = spec.get_item(1)?.extract()?;
            compile_regex(&pattern)
                .map(SpanTest::SpanNameRegex)
                .map_err(PyValueError::new_err)
        }
        "attribute" => {
            let key: String = spec.get_item(1)?.extract()?;
            let scope = match spec.get_item(2)?.extract::<String>()?.as_str() {
                "span" => Scope::Span,
                "resource" => Scope::Resource,
                _ => Scope::Any,
            };
            let op_kind: String = spec.get_item(3)?.extract()?;
            let op = match op_kind.as_str() {
                "exists" => AttributeOp::Exists,
                "in" => {
                    let values: Vec<(String, Bound<'_, PyAny>)> = spec.get_item(4)?.extract()?;
                    let mut expected = Vec::with_capacity(values.len());
                    for (kind, value) in values {
                        expected.push(match kind.as_str() {
                            "bool" => Expected::Bool(value.extract()?),
                            "number" => Expected::Number(value.extract()?),
                            _ => Expected::Str(value.extract()?),
                        });
                    }
                    AttributeOp::In(expected)
                }
                "regex" => {
                    let pattern: String = spec.get_item(4)?.extract()?;
                    AttributeOp::Regex(compile_regex(&pattern).map_err(PyValueError::new_err)?)
                }
                _ => {
                    let (low, high): (Option<f64>, Option<f64>) = spec.get_item(4)?.extract()?;
                    AttributeOp::Range(low, high)
                }
            };
            Ok(SpanTest::Attribute {
                key: keys.add(&key),
                scope,
                op,
            })
        }
        other => Err(PyValueError::new_err(format!(
            "unknown span test kind {other:?}"
        ))),
    }
}

/// The span tests of `specs` and the keys they read, or why they cannot be used.
fn parse_tests(specs: &[Option<Bound<'_, PyTuple>>]) -> PyResult<(Vec<SpanTest>, KeyTable)> {
    if specs.len() > MAX_SPAN_TESTS {
        return Err(PyValueError::new_err(format!(
            "rules use {} distinct span tests (attribute and span_name conditions); at most {MAX_SPAN_TESTS} are supported",
            specs.len()
        )));
    }
    let mut keys = KeyTable::default();
    let tests = specs
        .iter()
        .map(|spec| parse_test(spec, &mut keys))
        .collect::<PyResult<Vec<_>>>()?;
    Ok((tests, keys))
}

fn requests_to_python<'py>(
    py: Python<'py>,
    requests: Vec<KeptRequest>,
) -> PyResult<Bound<'py, PyList>> {
    PyList::new(
        py,
        requests
            .into_iter()
            .map(|(body, count)| (PyBytes::new(py, &body), count)),
    )
}

fn views_to_python(py: Python<'_>, views: Vec<SessionView>) -> PyResult<Vec<Py<PySessionView>>> {
    views
        .into_iter()
        .map(|v| Py::new(py, PySessionView(v)))
        .collect()
}

fn held_to_python(py: Python<'_>, held: HeldView) -> PyResult<PyHeldSession> {
    Ok(PyHeldSession {
        handle: held.id.as_u64(),
        cold: held.cold,
        looks: held.looks,
        view: held
            .view
            .map(|v| Py::new(py, PySessionView(v)))
            .transpose()?,
        verdict: held.verdict,
    })
}

impl PyCore {
    fn core(&self) -> MutexGuard<'_, Core> {
        // a panic while the lock was held (caught, reported) must not stop the sampler
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `work` on the core, turning a panic into `InternalError`.
    fn with<T>(&self, work: impl FnOnce(&mut Core) -> T) -> PyResult<T> {
        catch_unwind(AssertUnwindSafe(|| work(&mut self.core())))
            .map_err(|panic| InternalError::new_err(format!("native core: {}", panic_text(panic))))
    }
}

#[pymethods]
impl PyCore {
    #[new]
    #[pyo3(signature = (
        *, session_keys, span_tests, max_attributes_per_span, max_attribute_value_size,
        decision_wait, root_end_grace, open_trace_wait, max_session_duration, max_session_spans,
        tick, dropped_hold, dropped_hold_max_spans, decision_cache_max, batch_max_spans,
        batch_max_bytes, shadow = false,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        session_keys: Vec<String>,
        span_tests: Vec<Option<Bound<'_, PyTuple>>>,
        max_attributes_per_span: usize,
        max_attribute_value_size: usize,
        decision_wait: f64,
        root_end_grace: f64,
        open_trace_wait: f64,
        max_session_duration: f64,
        max_session_spans: u64,
        tick: f64,
        dropped_hold: f64,
        dropped_hold_max_spans: u64,
        decision_cache_max: usize,
        batch_max_spans: usize,
        batch_max_bytes: usize,
        shadow: bool,
    ) -> PyResult<Self> {
        if tick <= 0.0 {
            return Err(PyValueError::new_err("tick must be positive"));
        }
        let (tests, keys) = parse_tests(&span_tests)?;
        let extractor = Extractor::new(
            &ExtractorSettings {
                session_keys,
                max_attributes_per_span,
                max_attribute_value_size,
            },
            tests,
            keys,
        );
        let sessions = SessionSettings {
            decision_wait,
            root_end_grace,
            open_trace_wait,
            max_session_duration,
            max_session_spans,
            tick,
            dropped_hold,
            dropped_hold_max_spans,
            decision_cache_max,
        };
        let limits = RequestLimits {
            max_spans: batch_max_spans.max(1),
            max_bytes: batch_max_bytes,
        };
        let mut core = Core::new(extractor, sessions, limits);
        core.set_shadow(shadow);
        Ok(PyCore {
            inner: Mutex::new(core),
        })
    }

    /// Replaces the span tests (a reload): position i of `span_tests` is bit i of
    /// `SessionView.test_bits`, None a free position. The bits of `reset` are cleared in every
    /// session (positions given to new tests). Raises ValueError, changing nothing, for tests
    /// that cannot be used.
    fn set_span_tests(
        &self,
        span_tests: Vec<Option<Bound<'_, PyTuple>>>,
        reset: u64,
    ) -> PyResult<()> {
        let (tests, keys) = parse_tests(&span_tests)?;
        self.with(|core| core.set_span_tests(tests, keys, reset))
    }

    /// New completion and hold settings, and the decision cache's size (a reload). Raises
    /// ValueError, changing nothing, if `tick` differs from the running one.
    #[pyo3(signature = (
        *, decision_wait, root_end_grace, open_trace_wait, max_session_duration,
        max_session_spans, tick, dropped_hold, dropped_hold_max_spans, decision_cache_max,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn set_session_settings(
        &self,
        decision_wait: f64,
        root_end_grace: f64,
        open_trace_wait: f64,
        max_session_duration: f64,
        max_session_spans: u64,
        tick: f64,
        dropped_hold: f64,
        dropped_hold_max_spans: u64,
        decision_cache_max: usize,
    ) -> PyResult<()> {
        let settings = SessionSettings {
            decision_wait,
            root_end_grace,
            open_trace_wait,
            max_session_duration,
            max_session_spans,
            tick,
            dropped_hold,
            dropped_hold_max_spans,
            decision_cache_max,
        };
        self.with(|core| core.set_session_settings(settings))?
            .map_err(PyValueError::new_err)
    }

    /// Shadow mode: every span is forwarded, annotated with the verdict it would have had.
    #[getter]
    fn shadow(&self) -> PyResult<bool> {
        self.with(|core| core.shadow())
    }

    #[setter]
    fn set_shadow(&self, shadow: bool) -> PyResult<()> {
        self.with(|core| core.set_shadow(shadow))
    }

    /// Ingests up to `max_spans` spans of `request` (resumes where the last call stopped):
    /// (accepted, invalid, limited, late kept, late dropped, kept requests).
    #[allow(clippy::type_complexity)]
    fn ingest<'py>(
        &self,
        py: Python<'py>,
        request: &Bound<'py, PyRequest>,
        now: f64,
        max_spans: usize,
    ) -> PyResult<(u64, u64, u64, u64, u64, Bound<'py, PyList>)> {
        let (body, mut cursor) = {
            let r = request.borrow();
            (r.body.clone(), r.cursor)
        };
        let result = py.detach(|| {
            catch_unwind(AssertUnwindSafe(|| {
                self.core()
                    .ingest(body.bytes(), &mut cursor, now, max_spans)
            }))
        });
        let ingested = match result {
            Ok(Ok(ingested)) => ingested,
            Ok(Err(err)) => {
                cursor.done = true;
                request.borrow_mut().cursor = cursor;
                return Err(InvalidRequest::new_err(format!(
                    "cannot decode ExportTraceServiceRequest: {err}"
                )));
            }
            Err(panic) => {
                cursor.done = true;
                request.borrow_mut().cursor = cursor;
                return Err(InvalidRequest::new_err(format!(
                    "the request could not be read: {}",
                    panic_text(panic)
                )));
            }
        };
        request.borrow_mut().cursor = cursor;
        let requests = requests_to_python(py, ingested.requests)?;
        Ok((
            ingested.accepted,
            ingested.invalid,
            ingested.limited,
            ingested.late_kept,
            ingested.late_dropped,
            requests,
        ))
    }

    /// Removes and returns the sessions whose completion deadline has passed, at most
    /// `limit` (the others stay due for the next call).
    #[pyo3(signature = (now, limit = usize::MAX))]
    fn pop_due(&self, py: Python<'_>, now: f64, limit: usize) -> PyResult<Vec<Py<PySessionView>>> {
        let views = self.with(|core| {
            let ids = core.buffer.pop_due_at_most(now, limit);
            core.views(&ids)
        })?;
        views_to_python(py, views)
    }

    /// Removes and returns the oldest sessions until `spans` spans and `memory` bytes are freed.
    fn pop_oldest(
        &self,
        py: Python<'_>,
        spans: i64,
        memory: i64,
    ) -> PyResult<Vec<Py<PySessionView>>> {
        let views = self.with(|core| {
            let ids = core.buffer.pop_oldest(spans, memory);
            core.views(&ids)
        })?;
        views_to_python(py, views)
    }

    /// Removes and returns every buffered session, oldest first.
    fn pop_all(&self, py: Python<'_>) -> PyResult<Vec<Py<PySessionView>>> {
        let views = self.with(|core| {
            let ids = core.buffer.pop_all();
            core.views(&ids)
        })?;
        views_to_python(py, views)
    }

    /// Records a popped (or released) session's verdict for its late spans. A keep returns its
    /// spans as requests (annotated; `same_randomness`: the decision used the trace id's
    /// randomness) and frees it; a drop leaves it to `hold` or `release`.
    #[pyo3(signature = (handle, keep, rule, adjusted_count, signals, same_randomness))]
    #[allow(clippy::too_many_arguments)]
    fn decide<'py>(
        &self,
        py: Python<'py>,
        handle: u64,
        keep: bool,
        rule: &str,
        adjusted_count: f64,
        signals: Vec<String>,
        same_randomness: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let requests = self.with(|core| {
            let signals: Vec<&str> = signals.iter().map(String::as_str).collect();
            let verdict = core.verdict(keep, rule, adjusted_count, &signals);
            core.decide(SessionId::from_u64(handle), verdict, same_randomness)
        })?;
        requests_to_python(py, requests)
    }

    /// A peer sampler kept the conversation `key`: later turns follow this keep, and the part
    /// held here after a drop is kept now. Returns that part's requests and span count.
    fn adopt_keep<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        rule: &str,
        adjusted_count: f64,
        signals: Vec<String>,
    ) -> PyResult<(Bound<'py, PyList>, u64)> {
        let (requests, spans) = self.with(|core| {
            let signals: Vec<&str> = signals.iter().map(String::as_str).collect();
            let verdict = core.verdict(true, rule, adjusted_count, &signals);
            core.adopt_keep(key, verdict)
        })?;
        Ok((requests_to_python(py, requests)?, spans))
    }

    /// Holds a dropped session; False (nothing held) when holding is off or it is too big.
    fn hold(&self, handle: u64, cold: bool, now: f64, looks: u32) -> PyResult<bool> {
        self.with(|core| core.hold(SessionId::from_u64(handle), cold, now, looks))
    }

    /// Lets go of a decided session's spans; in shadow mode a dropped session's spans are
    /// returned as requests, annotated with the drop (live: an empty list).
    fn release<'py>(&self, py: Python<'py>, handle: u64) -> PyResult<Bound<'py, PyList>> {
        let requests = self.with(|core| core.release(SessionId::from_u64(handle)))?;
        requests_to_python(py, requests)
    }

    /// Held sessions whose hold is over, oldest first.
    fn hold_pop_expired(&self, py: Python<'_>, now: f64) -> PyResult<Vec<PyHeldSession>> {
        let held = self.with(|core| {
            let held = core.buffer.hold_pop_expired(now);
            core.held_views(held)
        })?;
        held.into_iter().map(|h| held_to_python(py, h)).collect()
    }

    /// The oldest held session, released early for room.
    fn hold_release_oldest(&self, py: Python<'_>) -> PyResult<Option<PyHeldSession>> {
        let held = self.with(|core| {
            let held = core.buffer.hold_release_oldest().into_iter().collect();
            core.held_views(held)
        })?;
        held.into_iter()
            .next()
            .map(|h| held_to_python(py, h))
            .transpose()
    }

    /// Every held session (shutdown, end of replay).
    fn hold_pop_all(&self, py: Python<'_>) -> PyResult<Vec<PyHeldSession>> {
        let held = self.with(|core| {
            let held = core.buffer.hold_pop_all();
            core.held_views(held)
        })?;
        held.into_iter().map(|h| held_to_python(py, h)).collect()
    }

    /// When popping due sessions or ended holds next has something to do (see
    /// `Buffer::next_deadline`); None when nothing is buffered or held.
    fn next_deadline(&self) -> PyResult<Option<f64>> {
        self.with(|core| core.buffer.next_deadline())
    }

    /// The hold holds more spans than `dropped_hold_max_spans`.
    #[getter]
    fn hold_over_cap(&self) -> PyResult<bool> {
        self.with(|core| core.buffer.hold_over_cap())
    }

    /// Counters and gauges, read at once: a dict of ints.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let values = self.with(|core| {
            let b = &core.buffer;
            [
                ("span_count", b.span_count as usize),
                ("span_bytes", b.span_bytes),
                ("memory", b.memory),
                ("session_count", b.session_count as usize),
                ("held_spans", b.held_spans() as usize),
                ("held_bytes", b.held_bytes()),
                ("held_memory", b.held_memory()),
                ("held_sessions", b.held_sessions()),
                ("reopened", b.reopened as usize),
                ("released_early", b.released_early() as usize),
                ("cache_entries", b.cache.len()),
                ("undecided", core.undecided()),
            ]
        })?;
        let out = PyDict::new(py);
        for (name, value) in values {
            out.set_item(name, value)?;
        }
        Ok(out)
    }

    /// Buffered spans (held ones not included).
    #[getter]
    fn span_count(&self) -> PyResult<u64> {
        self.with(|core| core.buffer.span_count)
    }

    /// Memory of the buffered sessions, in bytes (held ones not included).
    #[getter]
    fn memory(&self) -> PyResult<usize> {
        self.with(|core| core.buffer.memory)
    }

    #[getter]
    fn held_spans(&self) -> PyResult<u64> {
        self.with(|core| core.buffer.held_spans())
    }

    #[getter]
    fn held_memory(&self) -> PyResult<usize> {
        self.with(|core| core.buffer.held_memory())
    }

    /// Positions of span tests the core evaluates (bit i of `SessionView.test_bits` is test i;
    /// free positions included).
    #[getter]
    fn span_tests(&self) -> PyResult<usize> {
        self.with(|core| core.extractor.span_tests())
    }

    /// The trace id of a session without a key, as its key: lowercase hex.
    #[staticmethod]
    fn trace_key(trace_id: &[u8]) -> String {
        hex(trace_id)
    }
}

#[pymodule]
#[pyo3(name = "_native")]
fn native_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("InvalidRequest", py.get_type::<InvalidRequest>())?;
    m.add("RequestTooLarge", py.get_type::<RequestTooLarge>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    m.add("MAX_SPAN_TESTS", MAX_SPAN_TESTS)?;
    // the rarity model's names, defined once (rarity.rs) and read by sampler/signals/rarity.py
    m.add(
        "RARITY_DIMENSIONS",
        PyTuple::new(py, crate::rarity::DIMENSIONS)?,
    )?;
    m.add(
        "RARITY_TAIL_SIGNALS",
        PyTuple::new(py, crate::rarity::TAIL_SIGNALS)?,
    )?;
    m.add("RARITY_RARE_SHAPE", crate::rarity::RARE_SHAPE)?;
    m.add(
        "RARITY_LG_MAX_K",
        (crate::rarity::MIN_LG_MAX_K, crate::rarity::MAX_LG_MAX_K),
    )?;
    m.add_class::<PyRequest>()?;
    m.add_class::<PyCore>()?;
    m.add_class::<PySessionView>()?;
    m.add_class::<PyHeldSession>()?;
    m.add_class::<PyRarityModel>()?;
    m.add_function(wrap_pyfunction!(validate, m)?)?;
    m.add_function(wrap_pyfunction!(check_regex, m)?)?;
    m.add_function(wrap_pyfunction!(validate_json, m)?)?;
    Ok(())
}

// --- OTLP/JSON (json.rs) ---------------------------------------------------------------------

/// Converts an OTLP/JSON `ExportTraceServiceRequest` to protobuf (bounded: at most
/// `max_output_bytes` of it and `max_spans` spans), then validates it, without the GIL.
/// Raises `InvalidRequest` for what `request_from_json` would refuse, `RequestTooLarge` past a
/// limit.
#[pyfunction]
fn validate_json(
    py: Python<'_>,
    body: &[u8],
    max_output_bytes: usize,
    max_spans: usize,
) -> PyResult<PyRequest> {
    use crate::json::{otlp_json_to_protobuf, JsonError, JsonLimits};
    let limits = JsonLimits {
        max_output_bytes,
        max_spans,
    };
    // `body` borrows the caller's immutable bytes object, which the call keeps alive.
    let converted = py.detach(|| {
        catch_unwind(|| {
            let protobuf = otlp_json_to_protobuf(body, &limits).map_err(|err| match err {
                JsonError::Invalid(message) => RequestError::Invalid(message),
                JsonError::TooLarge(message) => RequestError::TooLarge(message),
            })?;
            let summary = validate_request(&protobuf, max_spans)?;
            Ok((protobuf, summary))
        })
    });
    match converted {
        Ok(Ok((protobuf, summary))) => Ok(PyRequest {
            body: Arc::new(Body::Native(protobuf.into())),
            summary,
            cursor: Cursor::default(),
        }),
        Ok(Err(err)) => Err(request_error(err)),
        // A bug, not the client's fault; still no panic may reach Python.
        Err(panic) => Err(InvalidRequest::new_err(format!(
            "cannot read the OTLP/JSON body: {}",
            panic_text(panic)
        ))),
    }
}

// --- the rarity model (rarity.rs) -------------------------------------------------------------

/// Runs `work` on the rarity model, turning a panic into `InternalError` and a bad `now` into
/// `ValueError`.
fn rarity_call<T>(work: impl FnOnce() -> Result<T, BadTime>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(PyValueError::new_err(err.to_string())),
        Err(panic) => Err(InternalError::new_err(format!(
            "rarity model: {}",
            panic_text(panic)
        ))),
    }
}

/// A model built or reconfigured from settings: refused settings are a ValueError, a panic
/// (a bug) an `InternalError`, never a panic crossing into Python.
fn settings_call<T>(work: impl FnOnce() -> Result<T, String>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(problems)) => Err(PyValueError::new_err(problems)),
        Err(panic) => Err(InternalError::new_err(format!(
            "rarity model: {}",
            panic_text(panic)
        ))),
    }
}

/// `RaritySettings` (a Python dataclass) read by attribute name; a value out of the native
/// type's range becomes one the validation refuses, with the same message.
fn rarity_settings(settings: &Bound<'_, PyAny>) -> PyResult<Settings> {
    let int = |name: &str| -> PyResult<i64> { settings.getattr(name)?.extract() };
    let float = |name: &str| -> PyResult<f64> { settings.getattr(name)?.extract() };
    let parsed = Settings {
        window_s: float("window_s")?,
        windows: usize::try_from(int("windows")?).unwrap_or(0),
        decay: float("decay")?,
        warmup_sessions: u64::try_from(int("warmup_sessions")?).unwrap_or(u64::MAX),
        shape_lg_max_k: u8::try_from(int("shape_lg_max_k")?).unwrap_or(0),
        group_shape_lg_max_k: u8::try_from(int("group_shape_lg_max_k")?).unwrap_or(0),
        quantile_k: u16::try_from(int("quantile_k")?).unwrap_or(0),
        max_groups: usize::try_from(int("max_groups")?).unwrap_or(0),
        min_group_values: u64::try_from(int("min_group_values")?).unwrap_or(0),
        rare_shape_share: float("rare_shape_share")?,
        tail_quantile: float("tail_quantile")?,
    };
    if int("warmup_sessions")? < 0 {
        return Err(PyValueError::new_err(
            "invalid rarity settings: warmup_sessions must be >= 0",
        ));
    }
    parsed.validate().map_err(PyValueError::new_err)?;
    Ok(parsed)
}

/// The rarity model of recent traffic (`sampler/signals/rarity.py` wraps it): sketches of
/// shapes and numbers, native, read and taught once per session by `score_session`.
#[pyclass(module = "sampler._native", name = "RarityModel")]
struct PyRarityModel {
    model: Model,
    /// "shape", then the dimensions' names, then their signals' names, then rare_shape:
    /// interned once, as the keys and values `score_session` returns.
    names: Vec<Py<PyString>>,
}

fn dimension(index: usize) -> PyResult<usize> {
    if index < DIMENSIONS.len() {
        Ok(index)
    } else {
        Err(PyValueError::new_err(format!(
            "unknown dimension index {index}"
        )))
    }
}

#[pymethods]
impl PyRarityModel {
    #[new]
    fn new(py: Python<'_>, settings: &Bound<'_, PyAny>) -> PyResult<Self> {
        let settings = rarity_settings(settings)?;
        let model = settings_call(|| Model::new(settings))?;
        let names = std::iter::once("shape")
            .chain(DIMENSIONS)
            .chain(TAIL_SIGNALS)
            .chain([rarity::RARE_SHAPE])
            .map(|name| PyString::intern(py, name).unbind())
            .collect();
        Ok(PyRarityModel { model, names })
    }

    /// New thresholds and weights, the same sketches (ValueError when the geometry differs).
    fn reconfigure(&mut self, settings: &Bound<'_, PyAny>) -> PyResult<()> {
        let settings = rarity_settings(settings)?;
        settings_call(|| self.model.reconfigure(settings))
    }

    /// (shape score, the 7 numeric scores in DIMENSIONS order, cold). `numbers` and `units`
    /// are (dimension index, value) pairs.
    fn score(
        &mut self,
        parts: Vec<String>,
        group: &str,
        numbers: Vec<(usize, f64)>,
        now: f64,
        units: Vec<(usize, u32)>,
    ) -> PyResult<(f64, [f64; 7], bool)> {
        let mut values = [None; 7];
        for (index, value) in numbers {
            values[dimension(index)?] = Some(value);
        }
        let mut counts = [1u32; 7];
        for (index, count) in units {
            counts[dimension(index)?] = count;
        }
        let scores = rarity_call(|| self.model.score(&parts, group, &values, now, &counts))?;
        Ok((scores.shape, scores.numeric, scores.cold))
    }

    /// Adds a session: its shape's parts and, per (dimension index, values), each value.
    fn observe(
        &mut self,
        parts: Vec<String>,
        group: &str,
        numbers: Vec<(usize, Vec<f64>)>,
        now: f64,
    ) -> PyResult<()> {
        let mut values: [Vec<f64>; 7] = Default::default();
        let mut learned = [false; 7];
        for (index, list) in numbers {
            let index = dimension(index)?;
            values[index].extend(list);
            learned[index] = true;
        }
        let slices: [&[f64]; 7] = std::array::from_fn(|i| values[i].as_slice());
        rarity_call(|| self.model.observe(&parts, group, &slices, &learned, now))
    }

    fn flush(&mut self) -> PyResult<()> {
        rarity_call(|| {
            self.model.flush();
            Ok(())
        })
    }

    fn sessions_seen(&self, now: f64) -> PyResult<u64> {
        rarity_call(|| self.model.sessions_seen(now))
    }

    fn shape_resolution(&self, now: f64) -> PyResult<f64> {
        rarity_call(|| self.model.shape_resolution(now))
    }

    #[getter]
    fn groups<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.model.groups())
    }

    fn approx_bytes(&self) -> PyResult<usize> {
        rarity_call(|| Ok(self.model.approx_bytes()))
    }

    /// Scores a session being decided, then (with `learn`) teaches the model it, in one call
    /// (`RaritySignal.score`): returns its rarity scores by name ("shape" and the dimensions
    /// scored), the rarity signals fired, and whether it was scored cold. `view` is a
    /// `SessionView`, read natively, or any object with its attributes (the reference
    /// implementation's features in the tests).
    #[allow(clippy::too_many_arguments)]
    fn score_session<'py>(
        &mut self,
        py: Python<'py>,
        view: &Bound<'py, PyAny>,
        now: f64,
        fragment: bool,
        learn: bool,
        running_at_cap: bool,
        collapse_repeats: bool,
        threshold: f64,
    ) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyList>, bool)> {
        let options = SessionOptions {
            fragment,
            learn,
            running_at_cap,
            collapse_repeats,
        };
        let model = &mut self.model;
        let scored = if let Ok(native) = view.cast::<PySessionView>() {
            let facts = SessionFacts::of(&native.get().0);
            rarity_call(|| rarity::score_session(model, &facts, now, options, threshold))?
        } else {
            let tools: Vec<String> = view.call_method0("tool_path")?.extract()?;
            let group: String = view.getattr("root_agent")?.extract()?;
            let float = |name: &str| -> PyResult<f64> { view.getattr(name)?.extract() };
            let facts = SessionFacts {
                tools: tools.iter().map(String::as_str).collect(),
                group: &group,
                latency_s: float("latency_s")?,
                model_pace_s: float("model_pace_s")?,
                tool_pace_s: float("tool_pace_s")?,
                duration_s: float("duration_s")?,
                tokens: float("tokens")?,
                span_count: float("span_count")?,
                tool_call_count: float("tool_call_count")?,
                turn_latencies: view.getattr("turn_latencies")?.extract()?,
            };
            rarity_call(|| rarity::score_session(model, &facts, now, options, threshold))?
        };
        let names = &self.names;
        let rarity = PyDict::new(py);
        rarity.set_item(names[0].bind(py), scored.shape)?;
        for &index in scored.dimensions {
            rarity.set_item(names[1 + index].bind(py), scored.numeric[index])?;
        }
        let fired = PyList::empty(py);
        for name in &scored.fired {
            let at = if *name == rarity::RARE_SHAPE {
                names.len() - 1
            } else {
                1 + DIMENSIONS.len() + TAIL_SIGNALS.iter().position(|s| s == name).unwrap_or(0)
            };
            fired.append(names[at].bind(py))?;
        }
        Ok((rarity, fired, scored.cold))
    }
}
