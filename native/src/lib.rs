//! agent-tail-sampler's native core: everything done once per span.
//!
//! Python sees sessions, never spans (docs/architecture.md). This crate validates OTLP export
//! requests, applies the receiver limits, extracts what grouping, signals and rules need,
//! groups spans into sessions and keeps their bytes until Python decides; kept sessions go back
//! as ready OTLP request bytes. The bindings (`python.rs`, feature `python`) are the only code
//! that touches Python objects; everything else is plain Rust, tested with `cargo test`.
//!
//! Modules, in the order a span meets them:
//! - `wire`: the protobuf wire format; `otlp`: the OTLP messages and their validation;
//! - `attrs`, `span_tests`, `extract`: one span's facts (and the limits applied to it);
//! - `features`, `buffer`: sessions, their features, completion timers, the hold, the cache;
//! - `verdict`, `emit`: what was decided, and kept spans out as requests;
//! - `core`: the above as Python drives it;
//! - `rarity`: the rarity model of recent traffic, which scores a decided session's view.

pub mod attrs;
pub mod buffer;
pub mod core;
pub mod emit;
pub mod extract;
pub mod features;
pub mod json;
pub mod otlp;
pub mod rarity;
pub mod span_tests;
pub mod verdict;
pub mod wire;

#[cfg(feature = "python")]
mod python;
