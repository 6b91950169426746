//! Verdicts as the native side holds them: what a decided session's late spans follow, and the
//! annotation every kept span carries. Python decides; it hands each verdict over by value, and
//! equal verdicts are shared (thousands of sessions share a few).
#![forbid(unsafe_code)]

use std::sync::Arc;

use hashbrown::HashMap;

use crate::wire::{put_len, put_tag, put_varint, I64, LEN};

pub const RULE_ATTRIBUTE: &str = "agent_sampler.rule";
pub const ADJUSTED_COUNT_ATTRIBUTE: &str = "agent_sampler.adjusted_count";
pub const SIGNALS_ATTRIBUTE: &str = "agent_sampler.signals";
pub const ANNOTATION_KEYS: [&str; 3] =
    [RULE_ATTRIBUTE, ADJUSTED_COUNT_ATTRIBUTE, SIGNALS_ATTRIBUTE];

#[derive(Debug, PartialEq)]
pub struct Verdict {
    pub keep: bool,
    pub rule: Box<str>,
    pub adjusted_count: f64,
    pub signals: Box<[Box<str>]>,
    /// The three `agent_sampler.*` attributes, encoded as `Span.attributes` entries: appended to
    /// a span's bytes they add the attributes (a repeated field may occur anywhere).
    pub annotation: Box<[u8]>,
}

impl Verdict {
    pub fn new(keep: bool, rule: &str, adjusted_count: f64, signals: &[&str]) -> Verdict {
        let signals: Box<[Box<str>]> = signals.iter().map(|s| Box::from(*s)).collect();
        let annotation = if keep {
            annotation(rule, adjusted_count, &signals)
        } else {
            Box::default()
        };
        Verdict {
            keep,
            rule: rule.into(),
            adjusted_count,
            signals,
            annotation,
        }
    }

    /// The keep probability the adjusted count stands for.
    pub fn probability(&self) -> f64 {
        1.0 / self.adjusted_count
    }
}

const SPAN_ATTRIBUTES: u32 = 9;

fn span_attribute(out: &mut Vec<u8>, key: &str, any_value: &[u8]) {
    let mut kv = Vec::with_capacity(key.len() + any_value.len() + 8);
    put_len(&mut kv, 1, key.as_bytes()); // KeyValue.key
    put_len(&mut kv, 2, any_value); // KeyValue.value
    put_len(out, SPAN_ATTRIBUTES, &kv);
}

fn annotation(rule: &str, adjusted_count: f64, signals: &[Box<str>]) -> Box<[u8]> {
    let mut out = Vec::new();
    let mut value = Vec::new();
    put_len(&mut value, 1, rule.as_bytes()); // AnyValue.string_value
    span_attribute(&mut out, RULE_ATTRIBUTE, &value);
    value.clear();
    put_tag(&mut value, 4, I64); // AnyValue.double_value
    value.extend_from_slice(&adjusted_count.to_le_bytes());
    span_attribute(&mut out, ADJUSTED_COUNT_ATTRIBUTE, &value);
    let mut array = Vec::new();
    for signal in signals {
        let mut item = Vec::new();
        put_len(&mut item, 1, signal.as_bytes());
        put_len(&mut array, 1, &item); // ArrayValue.values
    }
    value.clear();
    put_len(&mut value, 5, &array); // AnyValue.array_value
    span_attribute(&mut out, SIGNALS_ATTRIBUTE, &value);
    out.into_boxed_slice()
}

/// An encoded `Span.trace_state`: appended to a span's bytes it replaces the span's own (the
/// last occurrence of a singular field wins).
pub fn trace_state_field(out: &mut Vec<u8>, value: &str) {
    put_tag(out, 3, LEN);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value.as_bytes());
}

/// keep, rule, adjusted count (its bits), signals
type VerdictKey = (bool, Box<str>, u64, Box<[Box<str>]>);

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
    ) -> Arc<Verdict> {
        let key = (
            keep,
            Box::<str>::from(rule),
            adjusted_count.to_bits(),
            signals
                .iter()
                .map(|s| Box::<str>::from(*s))
                .collect::<Box<[_]>>(),
        );
        if let Some(found) = self.table.get(&key) {
            return found.clone();
        }
        if self.table.len() >= self.purge_at.max(MAX_VERDICTS) {
            self.table.retain(|_, v| Arc::strong_count(v) > 1);
            self.purge_at = 2 * self.table.len();
        }
        let verdict = Arc::new(Verdict::new(keep, rule, adjusted_count, signals));
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
        let a = verdicts.intern(true, "errors", 1.0, &["error"]);
        let b = verdicts.intern(true, "errors", 1.0, &["error"]);
        let c = verdicts.intern(true, "errors", 2.0, &["error"]);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(verdicts.len(), 2);
    }

    #[test]
    fn a_drop_carries_no_annotation() {
        assert!(Verdict::new(false, "baseline", 1.0, &[])
            .annotation
            .is_empty());
        assert!(!Verdict::new(true, "baseline", 20.0, &[])
            .annotation
            .is_empty());
    }

    #[test]
    fn forgets_what_nobody_holds() {
        let mut verdicts = Verdicts::default();
        let kept = verdicts.intern(true, "budget", 0.5, &[]);
        for i in 0..(2 * MAX_VERDICTS) {
            verdicts.intern(true, "budget", i as f64, &[]);
        }
        assert!(verdicts.len() <= MAX_VERDICTS + 1);
        assert!(Arc::ptr_eq(
            &kept,
            &verdicts.intern(true, "budget", 0.5, &[])
        ));
    }
}
