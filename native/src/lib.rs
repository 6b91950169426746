//! agent-tail-sampler's native core: everything done once per span.
//!
//! Python sees sessions, never spans (docs/architecture.md). This crate validates OTLP export
//! requests, applies the receiver limits, extracts what grouping, signals and rules need,
//! groups spans into sessions and keeps their bytes until Python decides; kept sessions go back
//! as ready OTLP request bytes. The bindings (`python.rs`, feature `python`) are the only code
//! that touches Python objects.

pub mod json;
pub mod wire;

#[cfg(feature = "python")]
mod python;
