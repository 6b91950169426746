//! The Python bindings: `sampler._native`. The only module that touches Python objects; the
//! rest of the crate is plain Rust, tested with `cargo test`.
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

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
    Ok(())
}
