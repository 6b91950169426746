//! How fast `otlp_json_to_protobuf` converts, and how much memory it takes.
//!
//!     cargo run --release --example json_bench -- lines FILE.jsonl   # one request per line
//!     cargo run --release --example json_bench -- CASE               # a built-in hostile body
//!
//! CASE is `empty-spans` (1.3M `{}` spans, 3.9 MB), `empty-values` (one attribute array of
//! 1.3M `{}` values), `empty-spans-15mib` (15 MiB of `{}` spans) or `rich-16mib` (16 MiB of
//! spans with ids, times, attributes), or one of the bodies meant to find the slow paths:
//! `deep-string-16mib` (a 16 MiB string under 47 levels of arrays, so that every level's
//! length grows and its content moves), `deep-values-16mib` (many such 47-level attributes),
//! `escapes-16mib` (a string of `\u00e9`), `unknown-nesting-16mib` (an unknown field of
//! arrays 500 deep, again and again), `number-strings-16mib` (numbers as strings that take
//! Python's slow paths: underscores, exponents, non-ASCII digits).
//!
//! Memory is the peak RSS (VmHWM) above what the process held with the bodies loaded. A
//! built-in case is written to a temporary file and measured by a fresh process that reads it
//! (`whole FILE`), so that memory freed while building the body neither hides nor passes for
//! the converter's.
use std::time::Instant;

use _native::json::{otlp_json_to_protobuf, JsonLimits};

const LIMITS: JsonLimits = JsonLimits {
    max_output_bytes: 64 << 20,
    max_spans: usize::MAX,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let body = match args.first().map(String::as_str) {
        Some("lines") => return measure(read_lines(args.get(1).expect("lines FILE"))),
        Some("whole") => {
            let path = args.get(1).expect("whole FILE");
            return measure(vec![std::fs::read(path).expect("readable file")]);
        }
        Some("empty-spans") => spans_body(1_300_000, "{}"),
        Some("empty-values") => values_body(1_300_000),
        Some("empty-spans-15mib") => spans_body(15 * (1 << 20) / 3, "{}"),
        Some("rich-16mib") => spans_body(16 * (1 << 20) / RICH_SPAN.len(), RICH_SPAN),
        Some("deep-string-16mib") => deep_string_body(16 << 20),
        Some("deep-values-16mib") => deep_values_body(16 << 20),
        Some("escapes-16mib") => escapes_body(16 << 20),
        Some("unknown-nesting-16mib") => unknown_nesting_body(16 << 20),
        Some("number-strings-16mib") => number_strings_body(16 << 20),
        _ => {
            eprintln!("usage: json_bench lines FILE | whole FILE | CASE (see json_bench.rs)");
            std::process::exit(2);
        }
    };
    // Measured in a fresh process that holds nothing but the body, so that memory freed
    // while building it does not hide (or pass for) the converter's.
    let path = std::env::temp_dir().join(format!("json_bench-{}.json", std::process::id()));
    std::fs::write(&path, &body).expect("writable temporary file");
    drop(body);
    let status = std::process::Command::new(std::env::current_exe().expect("own path"))
        .arg("whole")
        .arg(&path)
        .status()
        .expect("runnable");
    let _ = std::fs::remove_file(&path);
    std::process::exit(status.code().unwrap_or(1));
}

fn read_lines(path: &str) -> Vec<Vec<u8>> {
    let text = std::fs::read(path).expect("readable file");
    text.split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn measure(bodies: Vec<Vec<u8>>) {
    let input_bytes: usize = bodies.iter().map(Vec::len).sum();
    let largest = bodies.iter().map(Vec::len).max().unwrap_or(0);
    // Peak RSS counted from here (the file read before is gone): "5" resets VmHWM.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = resident_bytes("VmRSS:");
    let started = Instant::now();
    let mut output_bytes = 0;
    let mut refused = 0;
    for body in &bodies {
        match otlp_json_to_protobuf(body, &LIMITS) {
            Ok(out) => output_bytes += out.len(),
            Err(_) => refused += 1,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let extra = resident_bytes("VmHWM:").saturating_sub(before);
    let mib = |bytes: usize| bytes as f64 / f64::from(1 << 20);
    println!(
        "{} bodies ({refused} refused), {:.1} MiB in (largest {:.1} MiB), {:.1} MiB out: \
         {:.3} s, {:.0} MiB/s; peak memory above the loaded input: {:.1} MiB ({:.2}x the largest body)",
        bodies.len(),
        mib(input_bytes),
        mib(largest),
        mib(output_bytes),
        seconds,
        mib(input_bytes) / seconds,
        mib(extra),
        extra as f64 / largest.max(1) as f64,
    );
}

const RICH_SPAN: &str = r#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"eee19b7ec3c1b173","flags":1,"name":"execute_tool search","kind":3,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000250000000","attributes":[{"key":"gen_ai.operation.name","value":{"stringValue":"execute_tool"}},{"key":"gen_ai.tool.name","value":{"stringValue":"search"}},{"key":"gen_ai.usage.input_tokens","value":{"intValue":"42"}},{"key":"gen_ai.tool.call.arguments","value":{"stringValue":"{\"query\": \"weather in \\\"Paris\\\"\", \"limit\": 5}"}}],"status":{"code":2,"message":"tool failed"}}"#;

fn spans_body(count: usize, span: &str) -> Vec<u8> {
    let mut body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":["#.to_vec();
    for i in 0..count {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(span.as_bytes());
    }
    body.extend_from_slice(b"]}]}]}");
    body
}

fn values_body(count: usize) -> Vec<u8> {
    let mut body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":{"arrayValue":{"values":["#.to_vec();
    for i in 0..count {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{}");
    }
    body.extend_from_slice(b"]}}}]}]}]}]}");
    body
}

/// A figure of /proc/self/status: VmRSS, resident memory now, or VmHWM, its peak.
fn resident_bytes(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|kb| {
            kb.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<usize>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// An attribute value nested `levels` arrays deep around `innermost`.
fn nested_value(levels: usize, innermost: &str) -> String {
    let mut value = innermost.to_string();
    for _ in 0..levels {
        value = format!(r#"{{"arrayValue":{{"values":[{value}]}}}}"#);
    }
    value
}

fn attributes_body(attributes: &[String]) -> Vec<u8> {
    let attributes: Vec<String> = attributes
        .iter()
        .map(|value| format!(r#"{{"key":"k","value":{value}}}"#))
        .collect();
    format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"attributes":[{}]}}]}}]}}]}}"#,
        attributes.join(",")
    )
    .into_bytes()
}

fn deep_string_body(size: usize) -> Vec<u8> {
    let innermost = format!(r#"{{"stringValue":"{}"}}"#, "x".repeat(size));
    attributes_body(&[nested_value(47, &innermost)])
}

fn deep_values_body(size: usize) -> Vec<u8> {
    let one = nested_value(47, &format!(r#"{{"stringValue":"{}"}}"#, "x".repeat(200)));
    attributes_body(&vec![one.clone(); size / one.len()])
}

fn escapes_body(size: usize) -> Vec<u8> {
    let value = format!(r#"{{"stringValue":"{}"}}"#, r"\u00e9".repeat(size / 6));
    attributes_body(&[value])
}

fn unknown_nesting_body(size: usize) -> Vec<u8> {
    let one = format!("{}{}", "[".repeat(500), "]".repeat(500));
    let many = vec![one; size / 1001].join(",");
    format!(r#"{{"unknown":[{many}]}}"#).into_bytes()
}

fn number_strings_body(size: usize) -> Vec<u8> {
    let values = [
        r#"{"doubleValue":" 1_234.5e-3 "}"#,
        r#"{"intValue":"\u0661\u0662\u0663"}"#,
        r#"{"intValue":"1e18"}"#,
        r#"{"doubleValue":"-Infinity"}"#,
    ];
    let per: usize = values.iter().map(|v| v.len() + 20).sum();
    let many: Vec<String> = (0..size / per)
        .flat_map(|_| values.iter().map(|v| v.to_string()))
        .collect();
    attributes_body(&many)
}
