//! Times the native per-span path on recorded requests (no Python):
//!
//!     cargo run --release --example ingest -- BODIES_FILE [rounds]
//!
//! BODIES_FILE holds serialized `ExportTraceServiceRequest`s, each after its length as a
//! 4-byte little-endian integer (`benchmarks/ingest.py --dump` writes one). Prints the
//! validation and ingest rates, in spans per second, one line each.
use std::time::Instant;

use _native::buffer::SessionSettings;
use _native::core::{Core, Cursor};
use _native::emit::RequestLimits;
use _native::extract::{Extractor, ExtractorSettings, KeyTable};
use _native::otlp::validate_request;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("a file of length-prefixed request bodies");
    let rounds: usize = args
        .next()
        .map_or(5, |r| r.parse().expect("a number of rounds"));
    let data = std::fs::read(path).expect("readable");
    let mut bodies = Vec::new();
    let mut pos = 0;
    while pos + 4 <= data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        if pos + 4 + len > data.len() {
            break; // a file cut short: the last body is incomplete
        }
        bodies.push(&data[pos + 4..pos + 4 + len]);
        pos += 4 + len;
    }
    for _ in 0..rounds {
        let start = Instant::now();
        let mut spans = 0;
        for body in &bodies {
            spans += validate_request(body, 1_000_000).expect("valid").spans;
        }
        let validate_s = start.elapsed().as_secs_f64();

        let extractor = Extractor::new(
            &ExtractorSettings::default(),
            Vec::new(),
            KeyTable::default(),
        );
        let mut core = Core::new(
            extractor,
            SessionSettings::default(),
            RequestLimits {
                max_spans: 8192,
                max_bytes: 4 << 20,
            },
        );
        let start = Instant::now();
        let mut now = 0.0;
        for body in &bodies {
            let mut cursor = Cursor::default();
            while !cursor.done {
                core.ingest(body, &mut cursor, now, 4096).expect("ingests");
            }
            now += 0.01;
            for id in core.buffer.pop_due(now) {
                let verdict = core.verdict(false, "drop", 1.0, &[]);
                core.decide(id, verdict, true);
                core.release(id);
            }
        }
        let ingest_s = start.elapsed().as_secs_f64();
        println!(
            "spans {spans}: validate {:.0} spans/s ({:.3} us/span), ingest {:.0} spans/s ({:.3} us/span)",
            spans as f64 / validate_s,
            validate_s / spans as f64 * 1e6,
            spans as f64 / ingest_s,
            ingest_s / spans as f64 * 1e6
        );
    }
}
