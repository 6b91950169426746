//! Kept spans out: annotated, their tracestate threshold set, assembled into
//! `ExportTraceServiceRequest` bytes within the exporter's size limits, without re-encoding a
//! span. Three facts of the protobuf wire format make this a matter of concatenation:
//! - occurrences of a repeated field may come anywhere and are concatenated, so appending an
//!   encoded `Span.attributes` entry to a span's bytes adds an attribute;
//! - for a singular field the last occurrence wins, so appending `Span.trace_state` replaces it;
//! - a request is `resource_spans*`: requests concatenate into one.
#![forbid(unsafe_code)]

use std::sync::Arc;

use hashbrown::HashMap;

use crate::buffer::{BlockKey, TraceId};
use crate::otlp::{
    self, REQUEST_RESOURCE_SPANS, RS_RESOURCE, RS_SCHEMA_URL, RS_SCOPE_SPANS, SS_SCHEMA_URL,
    SS_SCOPE, SS_SPANS,
};
use crate::verdict::{trace_state_field, Verdict};
use crate::wire::{len_header_size, put_len, put_len_header, Value};

/// Bytes a length-delimited field adds around its payload at most: a tag and a 5-byte length.
const FIELD_FRAMING: usize = 6;
/// A block adds six framed fields: ResourceSpans, resource, its schema_url, ScopeSpans, scope,
/// its schema_url.
const BLOCK_FRAMING: usize = 6 * FIELD_FRAMING;
/// Room for a tracestate rewritten with `ot=th:...` when checking request sizes.
const TRACE_STATE_ALLOWANCE: usize = 512;

/// The exporter's limits on one outgoing request.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_spans: usize,
    pub max_bytes: usize,
}

/// One kept request: its bytes and how many spans it holds.
pub type KeptRequest = (Vec<u8>, usize);

/// Assembles the spans of `blocks` (in order) into requests, each annotated with `verdict`.
/// A live keep with probability below 1 (`Verdict::thins`) also gives each span the
/// OpenTelemetry threshold in its tracestate, combined with one set upstream (`trace_states`,
/// by trace); `same_randomness` says whether the decision used the trace id's randomness, as
/// upstream samplers do (a session that is one trace). Shadow verdicts leave it as received.
pub fn emit<'a, B, S>(
    blocks: B,
    verdict: &Verdict,
    trace_states: &dyn Fn(&TraceId) -> Option<&'a str>,
    same_randomness: bool,
    limits: RequestLimits,
) -> Vec<KeptRequest>
where
    B: IntoIterator<Item = (&'a Arc<BlockKey>, S)>,
    S: IntoIterator<Item = &'a [u8]>,
{
    let suffix = &verdict.annotation;
    let probability = verdict.probability();
    let thinned = verdict.thins();
    let span_extra = suffix.len() + FIELD_FRAMING + if thinned { TRACE_STATE_ALLOWANCE } else { 0 };
    // each trace's tracestate field, written once, and the index of it for each trace
    let mut states: Vec<Vec<u8>> = Vec::new();
    let mut per_trace: HashMap<Option<TraceId>, usize> = HashMap::new();
    let mut out = Vec::new();
    let mut request = Request::default();
    for (block, spans) in blocks {
        let block_cost = block.resource.len()
            + block.resource_url.len()
            + block.scope.len()
            + block.scope_url.len()
            + BLOCK_FRAMING;
        let mut in_request = false;
        for span in spans {
            let mut cost = span.len() + span_extra + if in_request { 0 } else { block_cost };
            if request.count > 0
                && (request.count >= limits.max_spans || request.size + cost > limits.max_bytes)
            {
                out.push(std::mem::take(&mut request).encode(suffix, &states));
                cost = span.len() + span_extra + block_cost; // the block starts the new request
            }
            let state = thinned.then(|| {
                let trace_id = trace_id_of(span);
                *per_trace.entry(trace_id).or_insert_with(|| {
                    let upstream = trace_id.as_ref().and_then(trace_states).unwrap_or("");
                    let mut field = Vec::new();
                    trace_state_field(
                        &mut field,
                        &with_probability(upstream, probability, same_randomness),
                    );
                    states.push(field);
                    states.len() - 1
                })
            });
            request.add(block, OutSpan { bytes: span, state });
            in_request = true;
            request.size += cost;
        }
    }
    if request.count > 0 {
        out.push(request.encode(suffix, &states));
    }
    out
}

/// A kept span as it goes out: its bytes, then the verdict's annotation, then (when the keep
/// thins) its trace's tracestate field, by index. Written once, into the request itself.
struct OutSpan<'a> {
    bytes: &'a [u8],
    state: Option<usize>,
}

impl OutSpan<'_> {
    fn len(&self, suffix: &[u8], states: &[Vec<u8>]) -> usize {
        self.bytes.len() + suffix.len() + self.state.map_or(0, |i| states[i].len())
    }
}

/// One request being filled: spans by resource, then by scope, in order of first appearance.
#[derive(Default)]
struct Request<'a> {
    resources: Vec<Resource<'a>>,
    count: usize,
    size: usize,
}

struct Resource<'a> {
    block: Arc<BlockKey>, // its resource and resource_url are the ones used
    scopes: Vec<(Arc<BlockKey>, Vec<OutSpan<'a>>)>,
}

impl<'a> Request<'a> {
    fn add(&mut self, block: &Arc<BlockKey>, span: OutSpan<'a>) {
        self.count += 1;
        // blocks are shared (`Core::shared_block`): the same block is the same resource and
        // scope, found without comparing their bytes, as it is for most spans
        let resource = match self.resources.iter_mut().position(|r| {
            Arc::ptr_eq(&r.block, block)
                || (r.block.resource == block.resource
                    && r.block.resource_url == block.resource_url)
        }) {
            Some(i) => &mut self.resources[i],
            None => {
                self.resources.push(Resource {
                    block: block.clone(),
                    scopes: Vec::new(),
                });
                self.resources.last_mut().expect("just pushed")
            }
        };
        match resource.scopes.iter_mut().find(|(b, _)| {
            Arc::ptr_eq(b, block) || (b.scope == block.scope && b.scope_url == block.scope_url)
        }) {
            Some((_, spans)) => spans.push(span),
            None => resource.scopes.push((block.clone(), vec![span])),
        }
    }

    fn encode(self, suffix: &[u8], states: &[Vec<u8>]) -> KeptRequest {
        // sizes first, so that the request is written into one allocation of its exact size
        let sizes: Vec<(usize, Vec<usize>)> = self
            .resources
            .iter()
            .map(|resource| {
                let scope_sizes: Vec<usize> = resource
                    .scopes
                    .iter()
                    .map(|(block, spans)| scope_spans_size(block, spans, suffix, states))
                    .collect();
                let mut rs_size: usize = scope_sizes
                    .iter()
                    .map(|&s| len_header_size(RS_SCOPE_SPANS, s) + s)
                    .sum();
                if !resource.block.resource.is_empty() {
                    rs_size += len_header_size(RS_RESOURCE, resource.block.resource.len())
                        + resource.block.resource.len();
                }
                if !resource.block.resource_url.is_empty() {
                    rs_size += len_header_size(RS_SCHEMA_URL, resource.block.resource_url.len())
                        + resource.block.resource_url.len();
                }
                (rs_size, scope_sizes)
            })
            .collect();
        let total = sizes
            .iter()
            .map(|&(rs_size, _)| len_header_size(REQUEST_RESOURCE_SPANS, rs_size) + rs_size)
            .sum();
        let mut out = Vec::with_capacity(total);
        for (resource, (rs_size, scope_sizes)) in self.resources.iter().zip(sizes) {
            put_len_header(&mut out, REQUEST_RESOURCE_SPANS, rs_size);
            if !resource.block.resource.is_empty() {
                put_len(&mut out, RS_RESOURCE, &resource.block.resource);
            }
            for ((block, spans), size) in resource.scopes.iter().zip(scope_sizes) {
                put_len_header(&mut out, RS_SCOPE_SPANS, size);
                if !block.scope.is_empty() {
                    put_len(&mut out, SS_SCOPE, &block.scope);
                }
                for span in spans {
                    put_len_header(&mut out, SS_SPANS, span.len(suffix, states));
                    out.extend_from_slice(span.bytes);
                    out.extend_from_slice(suffix);
                    if let Some(i) = span.state {
                        out.extend_from_slice(&states[i]);
                    }
                }
                if !block.scope_url.is_empty() {
                    put_len(&mut out, SS_SCHEMA_URL, block.scope_url.as_bytes());
                }
            }
            if !resource.block.resource_url.is_empty() {
                put_len(
                    &mut out,
                    RS_SCHEMA_URL,
                    resource.block.resource_url.as_bytes(),
                );
            }
        }
        debug_assert_eq!(out.len(), total);
        (out, self.count)
    }
}

fn scope_spans_size(
    block: &BlockKey,
    spans: &[OutSpan<'_>],
    suffix: &[u8],
    states: &[Vec<u8>],
) -> usize {
    let mut size: usize = spans
        .iter()
        .map(|s| s.len(suffix, states))
        .map(|len| len_header_size(SS_SPANS, len) + len)
        .sum();
    if !block.scope.is_empty() {
        size += len_header_size(SS_SCOPE, block.scope.len()) + block.scope.len();
    }
    if !block.scope_url.is_empty() {
        size += len_header_size(SS_SCHEMA_URL, block.scope_url.len()) + block.scope_url.len();
    }
    size
}

/// The span's trace id (the last occurrence of field 1), if it has a 16-byte one.
fn trace_id_of(span: &[u8]) -> Option<TraceId> {
    let mut found = None;
    for (number, value, _) in otlp::fields(span, 0).map_while(Result::ok) {
        if let (otlp::SPAN_TRACE_ID, Value::Len(id, _)) = (number, value) {
            found = id.try_into().ok();
        }
    }
    found
}

// --- the `ot` entry of the W3C tracestate ----------------------------------------------------

const RANDOMNESS_BITS: u32 = 56;
const RANDOMNESS_SPAN: f64 = (1u64 << RANDOMNESS_BITS) as f64;

/// The rejection threshold T of a keep probability (keep when R >= T), 56 bits.
pub fn threshold_of(probability: f64) -> u64 {
    ((1.0 - probability.clamp(0.0, 1.0)) * RANDOMNESS_SPAN).round_ties_even() as u64
}

fn format_threshold(threshold: u64) -> String {
    if threshold == 0 {
        return "0".into();
    }
    let text = format!("{:014x}", threshold.min((1 << RANDOMNESS_BITS) - 1));
    text.trim_end_matches('0').to_string()
}

fn parse_threshold(text: &str) -> Option<u64> {
    if text.is_empty()
        || text.len() > 14
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u64::from_str_radix(&format!("{text:0<14}"), 16).ok()
}

/// `tracestate` with `ot=th:...` updated for a further keep with `probability`. A threshold set
/// upstream on the same randomness (a one-trace session, no explicit `rv`) combines as the
/// larger threshold; otherwise the two decisions are independent and probabilities multiply.
/// The `ot` entry moves to the front, as W3C asks of a modified entry.
pub fn with_probability(tracestate: &str, probability: f64, same_randomness: bool) -> String {
    let mut ot: Vec<(String, String)> = Vec::new(); // sub-keys in order of first appearance
    let mut others: Vec<&str> = Vec::new();
    for member in tracestate
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        let (key, value) = member.split_once('=').unwrap_or((member, ""));
        if key == "ot" {
            for part in value.split(';') {
                let (sub, sub_value) = part.split_once(':').unwrap_or((part, ""));
                if sub.is_empty() {
                    continue;
                }
                match ot.iter_mut().find(|(k, _)| k == sub) {
                    Some(entry) => entry.1 = sub_value.to_string(),
                    None => ot.push((sub.to_string(), sub_value.to_string())),
                }
            }
        } else {
            others.push(member);
        }
    }
    let get = |key: &str| ot.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let upstream = get("th").and_then(parse_threshold).unwrap_or(0);
    let combined = if same_randomness && get("rv").is_none() {
        upstream.max(threshold_of(probability))
    } else {
        let upstream_p = 1.0 - upstream as f64 / RANDOMNESS_SPAN;
        threshold_of(upstream_p * probability)
    };
    let formatted = format_threshold(combined);
    match ot.iter_mut().find(|(k, _)| k == "th") {
        Some(entry) => entry.1 = formatted,
        None => ot.push(("th".into(), formatted)),
    }
    let entry = format!(
        "ot={}",
        ot.iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(";")
    );
    std::iter::once(entry.as_str())
        .chain(others)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::put_len;

    #[test]
    fn thresholds_as_the_specification_writes_them() {
        let rows = [
            (1.0, "0"),
            (0.5, "8"),
            (0.25, "c"),
            (0.1, "e666666666666"),
            (1.0 / 3.0, "aaaaaaaaaaaa"),
        ];
        for (probability, th) in rows {
            let written = format_threshold(threshold_of(probability));
            assert!(written.starts_with(th), "{probability}: {written}");
            let parsed = parse_threshold(&written).unwrap() as f64;
            assert!((1.0 - parsed / RANDOMNESS_SPAN - probability).abs() < 1e-12);
        }
        for bad in ["", "g", "123456789012345", "8F"] {
            assert_eq!(parse_threshold(bad), None, "{bad}");
        }
    }

    #[test]
    fn combining_with_an_upstream_threshold() {
        let rows = [
            ("", 0.5, false, "ot=th:8"),
            ("vendor=x", 0.25, false, "ot=th:c,vendor=x"),
            ("ot=th:8", 0.5, false, "ot=th:c"), // independent: 0.5 x 0.5
            ("ot=th:8", 0.5, true, "ot=th:8"),  // same randomness: the larger
            ("ot=th:c", 0.5, true, "ot=th:c"),  // upstream stricter
            (
                "ot=th:8;rv:0123456789abcd",
                0.5,
                true,
                "ot=th:c;rv:0123456789abcd",
            ), // rv: independent
            ("a=1,ot=th:8,b=2", 1.0, false, "ot=th:8,a=1,b=2"), // moved to the front
        ];
        for (tracestate, probability, same, expected) in rows {
            assert_eq!(
                with_probability(tracestate, probability, same),
                expected,
                "{tracestate}"
            );
        }
    }

    #[test]
    fn tracestate_thresholds_as_opentelemetry_writes_them() {
        assert_eq!(with_probability("", 0.5, true), "ot=th:8");
        assert_eq!(with_probability("", 1.0, true), "ot=th:0");
        assert_eq!(
            with_probability("vendor=x", 0.25, false),
            "ot=th:c,vendor=x"
        );
        // the same randomness: the larger threshold
        assert_eq!(with_probability("ot=th:c", 0.5, true), "ot=th:c");
        // independent: probabilities multiply (0.25 * 0.5)
        assert_eq!(
            with_probability("ot=th:c;rv:abc", 0.5, true),
            "ot=th:e;rv:abc"
        );
        assert_eq!(parse_threshold("g"), None);
        assert_eq!(format_threshold(threshold_of(0.0)), "ffffffffffffff");
    }

    fn block(resource: &[u8], scope: &[u8]) -> Arc<BlockKey> {
        Arc::new(BlockKey {
            resource: resource.into(),
            resource_url: "".into(),
            scope: scope.into(),
            scope_url: "".into(),
        })
    }

    #[test]
    fn requests_group_by_resource_and_split_at_the_limits() {
        let verdict = Verdict::new(true, "r", 1.0, &[], false);
        let (a, b) = (block(b"R1", b"S1"), block(b"R1", b"S2"));
        let spans_a: Vec<&[u8]> = vec![b"x", b"y"];
        let spans_b: Vec<&[u8]> = vec![b"z"];
        let none = |_: &TraceId| None;
        let out = emit(
            [(&a, spans_a.clone()), (&b, spans_b.clone())],
            &verdict,
            &none,
            false,
            RequestLimits {
                max_spans: 10,
                max_bytes: 1 << 20,
            },
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, 3);
        // one ResourceSpans holding both scopes
        let rs: Vec<_> = otlp::fields(&out[0].0, 0).map(|f| f.unwrap().0).collect();
        assert_eq!(rs, vec![REQUEST_RESOURCE_SPANS]);
        let out = emit(
            [(&a, spans_a), (&b, spans_b)],
            &verdict,
            &none,
            false,
            RequestLimits {
                max_spans: 2,
                max_bytes: 1 << 20,
            },
        );
        assert_eq!(out.iter().map(|r| r.1).collect::<Vec<_>>(), vec![2, 1]);
        let mut expected = Vec::new();
        let mut ss = Vec::new();
        put_len(&mut ss, SS_SCOPE, b"S2");
        let mut span = b"z".to_vec();
        span.extend_from_slice(&verdict.annotation);
        put_len(&mut ss, SS_SPANS, &span);
        let mut rs = Vec::new();
        put_len(&mut rs, RS_RESOURCE, b"R1");
        put_len(&mut rs, RS_SCOPE_SPANS, &ss);
        put_len(&mut expected, REQUEST_RESOURCE_SPANS, &rs);
        assert_eq!(out[1].0, expected);
    }
}
