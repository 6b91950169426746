//! Verdicts as the native side holds them: what a decided session's late spans follow, and the
//! annotation every kept span carries. Python decides; it hands each verdict over by value, and
//! equal verdicts are shared (thousands of sessions share a few).
//!
//! In shadow mode every span is forwarded, and a verdict's annotation says which way it went:
//! `agent_sampler.verdict` (`keep` or `drop`) next to the rule and signals, on dropped spans
//! too. Live output is unchanged by it (no `agent_sampler.verdict`: what is sent was kept).
#![forbid(unsafe_code)]

use std::sync::Arc;

use hashbrown::HashMap;

use crate::wire::{put_len, put_tag, put_varint, I64, LEN};

pub const RULE_ATTRIBUTE: &str = "agent_sampler.rule";
pub const ADJUSTED_COUNT_ATTRIBUTE: &str = "agent_sampler.adjusted_count";
pub const SIGNALS_ATTRIBUTE: &str = "agent_sampler.signals";
/// Shadow mode only: `keep` or `drop`, the verdict the span's session would have had.
pub const VERDICT_ATTRIBUTE: &str = "agent_sampler.verdict";
/// Our attributes: stripped from incoming spans (ours replace them).
pub const ANNOTATION_KEYS: [&str; 4] = [
    RULE_ATTRIBUTE,
    ADJUSTED_COUNT_ATTRIBUTE,
    SIGNALS_ATTRIBUTE,
    VERDICT_ATTRIBUTE,
];

#[derive(Debug, PartialEq)]
pub struct Verdict {
    pub keep: bool,
    pub rule: Box<str>,
    pub adjusted_count: f64,
    pub signals: Box<[Box<str>]>,
    /// Given in shadow mode: its spans are forwarded whatever it says.
    pub shadow: bool,
    /// The `agent_sampler.*` attributes, encoded as `Span.attributes` entries: appended to a
    /// span's bytes they add the attributes (a repeated field may occur anywhere). Live: the
    /// rule, adjusted count and signals of a keep (a drop sends nothing). Shadow: the rule,
    /// signals and `agent_sampler.verdict`, and for a keep its adjusted count (a dropped
    /// session stands for no other: summing adjusted counts over would-keep spans estimates
    /// what live mode would count).
    pub annotation: Box<[u8]>,
}

impl Verdict {
    pub fn new(
        keep: bool,
        rule: &str,
        adjusted_count: f64,
        signals: &[&str],
        shadow: bool,
    ) -> Verdict {
        let signals: Box<[Box<str>]> = signals.iter().map(|s| Box::from(*s)).collect();
        let annotation = if shadow || keep {
            annotation(
                rule,
                keep.then_some(adjusted_count),
                &signals,
                shadow.then_some(keep),
            )
        } else {
            Box::default()
        };
        Verdict {
            keep,
            rule: rule.into(),
            adjusted_count,
            signals,
            shadow,
            annotation,
        }
    }

    /// The keep probability the adjusted count stands for.
    pub fn probability(&self) -> f64 {
        1.0 / self.adjusted_count
    }

    /// Whether its spans get the OpenTelemetry threshold (`ot=th:`) in their tracestate: a keep
    /// with probability below 1, in live mode. Never in shadow mode, where nothing is sampled:
    /// every span goes out, so a threshold would make a backend that re-weights by it (span
    /// metrics from adjusted counts, a further consistent sampler) count each span 1/p times,
    /// and a would-drop span was not kept with any probability at all. The would-be adjusted
    /// count is still in `agent_sampler.adjusted_count`, for queries that ask for it.
    pub fn thins(&self) -> bool {
        self.keep && !self.shadow && self.probability() < 1.0
    }
}

const SPAN_ATTRIBUTES: u32 = 9;

fn span_attribute(out: &mut Vec<u8>, key: &str, any_value: &[u8]) {
    let mut kv = Vec::with_capacity(key.len() + any_value.len() + 8);
    put_len(&mut kv, 1, key.as_bytes()); // KeyValue.key
    put_len(&mut kv, 2, any_value); // KeyValue.value
    put_len(out, SPAN_ATTRIBUTES, &kv);
}

/// `adjusted_count`: written when given (keeps); `verdict`: shadow mode's keep (true) or drop.
fn annotation(
    rule: &str,
    adjusted_count: Option<f64>,
    signals: &[Box<str>],
    verdict: Option<bool>,
) -> Box<[u8]> {
    let mut out = Vec::new();
    let mut value = Vec::new();
    put_len(&mut value, 1, rule.as_bytes()); // AnyValue.string_value
    span_attribute(&mut out, RULE_ATTRIBUTE, &value);
    if let Some(adjusted_count) = adjusted_count {
        value.clear();
        put_tag(&mut value, 4, I64); // AnyValue.double_value
        value.extend_from_slice(&adjusted_count.to_le_bytes());
        span_attribute(&mut out, ADJUSTED_COUNT_ATTRIBUTE, &value);
    }
    let mut array = Vec::new();
    for signal in signals {
        let mut item = Vec::new();
        put_len(&mut item, 1, signal.as_bytes());
        put_len(&mut array, 1, &item); // ArrayValue.values
    }
    value.clear();
    put_len(&mut value, 5, &array); // AnyValue.array_value
    span_attribute(&mut out, SIGNALS_ATTRIBUTE, &value);
    if let Some(keep) = verdict {
        value.clear();
        put_len(&mut value, 1, if keep { b"keep" } else { b"drop" });
        span_attribute(&mut out, VERDICT_ATTRIBUTE, &value);
    }
    out.into_boxed_slice()
}

/// An encoded `Span.trace_state`: appended to a span's bytes it replaces the span's own (the
/// last occurrence of a singular field wins).
pub fn trace_state_field(out: &mut Vec<u8>, value: &str) {
    put_tag(out, 3, LEN);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value.as_bytes());
}

/// keep, rule, adjusted count (its bits), signals, shadow
type VerdictKey = (bool, Box<str>, u64, Box<[Box<str>]>, bool);

/// Equal verdicts shared as one `Arc`. Bounded: past `MAX_VERDICTS` the ones nobody refers to
/// any more are forgotten (adjusted counts of budget keeps vary with time).
#[derive(Default)]
pub struct Verdicts {
    table: HashMap<VerdictKey, Arc<Verdict>>,
    purge_at: usize,
}

const MAX_VERDICTS: usize = 4096;

impl Verdicts {
    pub fn intern(
        &mut self,
        keep: bool,
        rule: &str,
        adjusted_count: f64,
        signals: &[&str],
        shadow: bool,
    ) -> Arc<Verdict> {
        let key = (
            keep,
            Box::<str>::from(rule),
            adjusted_count.to_bits(),
            signals
                .iter()
                .map(|s| Box::<str>::from(*s))
                .collect::<Box<[_]>>(),
            shadow,
        );
        if let Some(found) = self.table.get(&key) {
            return found.clone();
        }
        if self.table.len() >= self.purge_at.max(MAX_VERDICTS) {
            self.table.retain(|_, v| Arc::strong_count(v) > 1);
            self.purge_at = 2 * self.table.len();
        }
        let verdict = Arc::new(Verdict::new(keep, rule, adjusted_count, signals, shadow));
        self.table.insert(key, verdict.clone());
        verdict
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_verdicts_are_one() {
        let mut verdicts = Verdicts::default();
        let a = verdicts.intern(true, "errors", 1.0, &["error"], false);
        let b = verdicts.intern(true, "errors", 1.0, &["error"], false);
        let c = verdicts.intern(true, "errors", 2.0, &["error"], false);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(verdicts.len(), 2);
    }

    #[test]
    fn a_drop_carries_no_annotation() {
        assert!(Verdict::new(false, "baseline", 1.0, &[], false)
            .annotation
            .is_empty());
        assert!(!Verdict::new(true, "baseline", 20.0, &[], false)
            .annotation
            .is_empty());
    }

    /// The annotation's attributes: key -> (AnyValue field number, payload).
    fn attributes(annotation: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        use crate::otlp::fields;
        use crate::wire::Value;
        let mut out = Vec::new();
        for field in fields(annotation, 0) {
            let (number, value, _) = field.unwrap();
            assert_eq!(number, SPAN_ATTRIBUTES);
            let Value::Len(kv, _) = value else { panic!() };
            let mut key = String::new();
            let mut any = (0, Vec::new());
            for part in fields(kv, 0) {
                match part.unwrap() {
                    (1, Value::Len(k, _), _) => key = String::from_utf8(k.to_vec()).unwrap(),
                    (2, Value::Len(v, _), _) => {
                        let (n, inner, range) = fields(v, 0).next().unwrap().unwrap();
                        any = match inner {
                            Value::Len(payload, _) => (n, payload.to_vec()),
                            _ => (n, v[range].to_vec()),
                        };
                    }
                    _ => panic!(),
                }
            }
            out.push((key, any.0, any.1));
        }
        out
    }

    #[test]
    fn shadow_verdicts_say_which_way_they_went() {
        let keys = |v: &Verdict| -> Vec<String> {
            attributes(&v.annotation)
                .into_iter()
                .map(|(k, _, _)| k)
                .collect()
        };
        let live_keep = Verdict::new(true, "sampled", 4.0, &["error"], false);
        assert_eq!(
            keys(&live_keep),
            [RULE_ATTRIBUTE, ADJUSTED_COUNT_ATTRIBUTE, SIGNALS_ATTRIBUTE]
        );
        let keep = Verdict::new(true, "sampled", 4.0, &["error"], true);
        assert_eq!(keys(&keep), ANNOTATION_KEYS);
        let verdict = |v: &Verdict| {
            attributes(&v.annotation)
                .into_iter()
                .find(|(k, _, _)| k == VERDICT_ATTRIBUTE)
                .map(|(_, n, payload)| (n, String::from_utf8(payload).unwrap()))
        };
        assert_eq!(verdict(&keep), Some((1, "keep".to_string())));
        // a would-drop says so, with its rule and signals, and stands for no other session
        let drop = Verdict::new(false, "rest", 1.0, &["rare_shape"], true);
        assert_eq!(
            keys(&drop),
            [RULE_ATTRIBUTE, SIGNALS_ATTRIBUTE, VERDICT_ATTRIBUTE]
        );
        assert_eq!(verdict(&drop), Some((1, "drop".to_string())));
        assert_eq!(verdict(&live_keep), None);
    }

    #[test]
    fn only_live_keeps_below_one_write_a_threshold() {
        assert!(Verdict::new(true, "p", 4.0, &[], false).thins());
        assert!(!Verdict::new(true, "p", 1.0, &[], false).thins());
        assert!(!Verdict::new(true, "p", 4.0, &[], true).thins());
        assert!(!Verdict::new(false, "p", 4.0, &[], true).thins());
        assert!(!Verdict::new(false, "p", 4.0, &[], false).thins());
    }

    #[test]
    fn modes_are_interned_apart() {
        let mut verdicts = Verdicts::default();
        let live = verdicts.intern(true, "errors", 1.0, &[], false);
        let shadow = verdicts.intern(true, "errors", 1.0, &[], true);
        assert!(!Arc::ptr_eq(&live, &shadow));
        assert!(shadow.shadow && !live.shadow);
    }

    #[test]
    fn forgets_what_nobody_holds() {
        let mut verdicts = Verdicts::default();
        let kept = verdicts.intern(true, "budget", 0.5, &[], false);
        for i in 0..(2 * MAX_VERDICTS) {
            verdicts.intern(true, "budget", i as f64, &[], false);
        }
        assert!(verdicts.len() <= MAX_VERDICTS + 1);
        assert!(Arc::ptr_eq(
            &kept,
            &verdicts.intern(true, "budget", 0.5, &[], false)
        ));
    }
}
