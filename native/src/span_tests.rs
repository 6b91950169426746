//! Span tests: predicates over one span evaluated once as it arrives, remembered as one bit of
//! its session, so that a rule about spans costs a bit test at decision time. Built from the
//! rules' `attribute` and `span_name` conditions (the specs come from Python's config).
#![forbid(unsafe_code)]

use regex::Regex;

use crate::attrs::{in_range, scalar_equal, AttrValue, Expected};

/// Where an attribute test looks: the span, its resource, or either (the span first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Span,
    Resource,
    Any,
}

#[derive(Debug, Clone)]
pub enum AttributeOp {
    Exists,
    /// `equals: v` is `in: [v]`
    In(Vec<Expected>),
    Regex(Regex),
    Range(Option<f64>, Option<f64>),
}

#[derive(Debug, Clone)]
pub enum SpanTest {
    /// `key` is the index of the attribute key in the extractor's table of wanted keys.
    Attribute {
        key: usize,
        scope: Scope,
        op: AttributeOp,
    },
    SpanName(Vec<String>),
    SpanNameRegex(Regex),
    /// A free position (its test left the rules at a reload): never matches.
    Vacant,
}

/// The most span tests a config may use (one bit each in a session's record).
pub const MAX_SPAN_TESTS: usize = 64;

/// The values of the wanted attributes of one span or resource, by key index.
pub type Picked<'a> = [Option<AttrValue<'a>>];

impl AttributeOp {
    fn matches(&self, value: &AttrValue<'_>) -> bool {
        match self {
            AttributeOp::Exists => true,
            AttributeOp::In(expected) => expected.iter().any(|e| scalar_equal(value, e)),
            AttributeOp::Regex(pattern) => regex_search(value, pattern),
            AttributeOp::Range(low, high) => in_range(value, *low, *high),
        }
    }
}

fn regex_search(value: &AttrValue<'_>, pattern: &Regex) -> bool {
    match value {
        AttrValue::Array(items) => items.iter().any(|item| regex_search(item, pattern)),
        AttrValue::Str(s) => pattern.is_match(s),
        _ => false,
    }
}

impl SpanTest {
    pub fn evaluate(&self, name: &str, attrs: &Picked<'_>, resource: &Picked<'_>) -> bool {
        match self {
            SpanTest::Attribute { key, scope, op } => {
                if *scope != Scope::Resource {
                    if let Some(Some(value)) = attrs.get(*key) {
                        if op.matches(value) {
                            return true;
                        }
                    }
                }
                if *scope != Scope::Span {
                    if let Some(Some(value)) = resource.get(*key) {
                        return op.matches(value);
                    }
                }
                false
            }
            SpanTest::SpanName(names) => names.iter().any(|n| n == name),
            SpanTest::SpanNameRegex(pattern) => pattern.is_match(name),
            SpanTest::Vacant => false,
        }
    }
}

/// Compiles a rule's regular expression, or says why it cannot be used. Python's `re.search`
/// semantics for the patterns rules use (anchors, classes, alternation, repetition); look-around
/// and backreferences are not supported, and `$` matches only at the very end.
pub fn compile_regex(pattern: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|err| match err {
            // the last line says what is wrong ("error: unclosed group"), the others where
            regex::Error::Syntax(text) => {
                let last = text.lines().last().unwrap_or("invalid pattern").trim();
                last.strip_prefix("error: ").unwrap_or(last).to_string()
            }
            regex::Error::CompiledTooBig(_) => "pattern too large".to_string(),
            other => other.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_tests_look_where_their_scope_says() {
        let equals = |scope| SpanTest::Attribute {
            key: 0,
            scope,
            op: AttributeOp::In(vec![Expected::Str("billing".into())]),
        };
        let span = [Some(AttrValue::Str("support"))];
        let resource = [Some(AttrValue::Str("billing"))];
        assert!(!equals(Scope::Span).evaluate("", &span, &resource));
        assert!(equals(Scope::Resource).evaluate("", &span, &resource));
        assert!(equals(Scope::Any).evaluate("", &span, &resource));
        assert!(!equals(Scope::Any).evaluate("", &[None], &[None]));
        let exists = SpanTest::Attribute {
            key: 0,
            scope: Scope::Span,
            op: AttributeOp::Exists,
        };
        assert!(exists.evaluate("", &[Some(AttrValue::None)], &[None]));
    }

    #[test]
    fn span_names_and_patterns() {
        assert!(SpanTest::SpanName(vec!["a".into(), "b".into()]).evaluate("b", &[], &[]));
        let pattern = SpanTest::SpanNameRegex(compile_regex("^execute_tool ").unwrap());
        assert!(pattern.evaluate("execute_tool search", &[], &[]));
        assert!(!pattern.evaluate("chat", &[], &[]));
        assert!(compile_regex("(?<=a)b").is_err());
        assert!(compile_regex("(a").is_err());
    }
}
