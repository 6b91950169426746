//! The Python bindings: `sampler._native`. The only module that touches Python objects; the
//! rest of the crate is plain Rust, tested with `cargo test`.
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

// A request that is not a valid OTLP export request: INVALID_ARGUMENT / HTTP 400.
create_exception!(_native, InvalidRequest, PyValueError);
// A request over a receiver limit (spans, size): RESOURCE_EXHAUSTED without RetryInfo / 413.
create_exception!(_native, RequestTooLarge, PyValueError);

#[pymodule]
#[pyo3(name = "_native")]
fn native_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("InvalidRequest", py.get_type::<InvalidRequest>())?;
    m.add("RequestTooLarge", py.get_type::<RequestTooLarge>())?;
    m.add_function(wrap_pyfunction!(otlp_json_to_protobuf, m)?)?;
    Ok(())
}

// --- OTLP/JSON to protobuf (json.rs) ------------------------------------------------------

/// Converts an OTLP/JSON `ExportTraceServiceRequest` into its protobuf encoding, without the
/// GIL. Raises `InvalidRequest` for what `request_from_json` would refuse and
/// `RequestTooLarge` past `max_output_bytes` of protobuf or `max_spans` spans.
#[pyfunction]
fn otlp_json_to_protobuf<'py>(
    py: Python<'py>,
    body: &[u8],
    max_output_bytes: usize,
    max_spans: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    use crate::json::{JsonError, JsonLimits};
    let limits = JsonLimits {
        max_output_bytes,
        max_spans,
    };
    // `body` borrows the caller's immutable bytes object, which the call keeps alive.
    let converted = py
        .detach(|| std::panic::catch_unwind(|| crate::json::otlp_json_to_protobuf(body, &limits)));
    match converted {
        Ok(Ok(protobuf)) => Ok(PyBytes::new(py, &protobuf)),
        Ok(Err(JsonError::Invalid(message))) => Err(InvalidRequest::new_err(message)),
        Ok(Err(JsonError::TooLarge(message))) => Err(RequestTooLarge::new_err(message)),
        // A bug, not the client's fault; still no panic may reach Python.
        Err(_) => Err(InvalidRequest::new_err(
            "internal error while converting OTLP/JSON (a bug in sampler._native)",
        )),
    }
}
