//! Attribute values as the rules and the conventions read them, borrowed from the request.
//!
//! Only the attributes somebody asked for are decoded (session keys, convention keys, keys
//! named by rules). The semantics are those the Python code had, since configs and tests rely
//! on them: an `AnyValue` holding a key-value list, nothing, or a profiles string index reads as
//! `None`; a string, bool, int, double, bytes or an array of those as themselves.
#![forbid(unsafe_code)]

use std::cmp::Ordering;

use crate::otlp::{
    self, ANY_ARRAY, ANY_BOOL, ANY_BYTES, ANY_DOUBLE, ANY_INT, ANY_KVLIST, ANY_STRING,
    ANY_STRING_STRINDEX,
};
use crate::wire::{Reader, Value, WireResult, LEN, VARINT};

/// Values an array attribute keeps (the rest are removed, on the forwarded span too). An
/// array of 8 million empty values is 16 MiB on the wire but hundreds of MiB decoded; no
/// instrumentation records more than a few thousand (an embedding vector: 3,072 floats).
pub const MAX_ARRAY_VALUES: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue<'a> {
    None,
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    Array(Vec<AttrValue<'a>>),
}

impl<'a> AttrValue<'a> {
    /// Decodes a validated `AnyValue`.
    pub fn decode(buf: &'a [u8], base: usize) -> WireResult<AttrValue<'a>> {
        Self::decode_parts(&[(buf, base)])
    }

    /// Decodes an `AnyValue` given as the occurrences of a singular message field, which
    /// protobuf merges (as if their payloads were one). A oneof takes the last member set,
    /// and repeated occurrences of `array_value` merge (their values concatenate) until another
    /// member comes.
    pub fn decode_parts(parts: &[(&'a [u8], usize)]) -> WireResult<AttrValue<'a>> {
        if let [(buf, _)] = parts {
            if let Some(value) = Self::decode_single(buf) {
                return Ok(value);
            }
        }
        let mut value = AttrValue::None;
        let mut array: Vec<(&'a [u8], usize)> = Vec::new(); // the current array member's parts
        for &(buf, base) in parts {
            for field in otlp::fields(buf, base) {
                let (number, raw, _) = field?;
                let member = match (number, raw) {
                    (ANY_STRING, Value::Len(s, _)) => {
                        AttrValue::Str(std::str::from_utf8(s).unwrap_or_default())
                    }
                    (ANY_BOOL, Value::Varint(v)) => AttrValue::Bool(v != 0),
                    (ANY_INT, Value::Varint(v)) => AttrValue::Int(v as i64),
                    (ANY_DOUBLE, Value::Fixed64(v)) => AttrValue::Double(f64::from_bits(v)),
                    (ANY_BYTES, Value::Len(b, _)) => AttrValue::Bytes(b),
                    (ANY_ARRAY, Value::Len(b, at)) => {
                        if !matches!(value, AttrValue::Array(_)) {
                            array.clear();
                        }
                        array.push((b, at));
                        AttrValue::Array(Vec::new()) // filled in below, once the last member is known
                    }
                    (ANY_KVLIST, Value::Len(..)) | (ANY_STRING_STRINDEX, Value::Varint(_)) => {
                        AttrValue::None
                    }
                    _ => continue, // unknown, or a known number with another wire type
                };
                value = member;
            }
        }
        if let AttrValue::Array(items) = &mut value {
            // one value past the limit is decoded, so that the caller sees the array is over it
            'parts: for (part, at) in array {
                for field in otlp::fields(part, at) {
                    if let (otlp::LIST_VALUES, Value::Len(item, item_at), _) = field? {
                        if items.len() > MAX_ARRAY_VALUES {
                            break 'parts;
                        }
                        items.push(AttrValue::decode(item, item_at)?);
                    }
                }
            }
        }
        Ok(value)
    }

    /// The commonest value, one `string_value`, `int_value` or `bool_value` field, read as
    /// the general loop of `decode_parts` reads it but without its setup; None for anything
    /// else.
    #[inline]
    fn decode_single(buf: &'a [u8]) -> Option<AttrValue<'a>> {
        let mut reader = Reader::new(buf, 0);
        let value = match reader.read_tag().ok()? {
            (ANY_STRING, LEN) => {
                AttrValue::Str(std::str::from_utf8(reader.read_len(ANY_STRING).ok()?.0).ok()?)
            }
            (ANY_BOOL, VARINT) => AttrValue::Bool(reader.read_varint().ok()? != 0),
            (ANY_INT, VARINT) => AttrValue::Int(reader.read_varint().ok()? as i64),
            _ => return None,
        };
        reader.at_end().then_some(value)
    }

    /// Python's truth value of the value.
    pub fn truthy(&self) -> bool {
        match self {
            AttrValue::None => false,
            AttrValue::Str(s) => !s.is_empty(),
            AttrValue::Bool(b) => *b,
            AttrValue::Int(i) => *i != 0,
            AttrValue::Double(d) => *d != 0.0, // NaN is true, as in Python
            AttrValue::Bytes(b) => !b.is_empty(),
            AttrValue::Array(items) => !items.is_empty(),
        }
    }

    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            AttrValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A count read from an attribute (tokens, an HTTP status): 0 unless it is an int64, a
    /// finite double (truncated) or ASCII digits, within (-2^63, 2^63). A NaN, "²" or 5,000
    /// digits must not raise nor overflow later.
    pub fn number(&self) -> i64 {
        const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
        match self {
            AttrValue::Int(i) if *i != i64::MIN => *i,
            AttrValue::Double(d) if d.is_finite() => {
                let t = d.trunc();
                if t > -LIMIT && t < LIMIT {
                    t as i64
                } else {
                    0
                }
            }
            AttrValue::Str(s)
                if !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()) =>
            {
                s.parse::<i64>().unwrap_or(0)
            }
            _ => 0,
        }
    }
}

/// The occurrences of a `KeyValue`'s `value` field: one, almost always (no allocation then).
#[derive(Debug, Clone, Default)]
pub enum ValueParts<'a> {
    #[default]
    Absent,
    One(&'a [u8], usize),
    Many(Vec<(&'a [u8], usize)>),
}

impl<'a> ValueParts<'a> {
    fn push(&mut self, part: (&'a [u8], usize)) {
        *self = match std::mem::take(self) {
            ValueParts::Absent => ValueParts::One(part.0, part.1),
            ValueParts::One(b, at) => ValueParts::Many(vec![(b, at), part]),
            ValueParts::Many(mut parts) => {
                parts.push(part);
                ValueParts::Many(parts)
            }
        };
    }

    pub fn decode(&self) -> WireResult<AttrValue<'a>> {
        match self {
            ValueParts::Absent => Ok(AttrValue::None),
            ValueParts::One(b, at) => AttrValue::decode(b, *at),
            ValueParts::Many(parts) => AttrValue::decode_parts(parts),
        }
    }

    /// The single occurrence, when there is exactly one.
    pub fn single(&self) -> Option<(&'a [u8], usize)> {
        match self {
            ValueParts::One(b, at) => Some((b, *at)),
            _ => None,
        }
    }
}

/// The key of a validated `KeyValue` (the last occurrence wins; UTF-8, as validated: compared
/// as bytes) and its value's occurrences.
#[inline]
pub fn key_value(buf: &[u8], base: usize) -> WireResult<(&[u8], ValueParts<'_>)> {
    if let Some(simple) = simple_key_value(buf, base) {
        return Ok(simple);
    }
    let mut key: &[u8] = b"";
    let mut parts = ValueParts::Absent;
    for field in otlp::fields(buf, base) {
        match field? {
            (otlp::KV_KEY, Value::Len(k, _), _) => key = k,
            (otlp::KV_VALUE, Value::Len(v, at), _) => parts.push((v, at)),
            _ => {}
        }
    }
    Ok((key, parts))
}

/// The commonest layout, read without the general walk: the key (field 1, a one-byte length)
/// then the value (field 2), once each, nothing else.
#[inline]
fn simple_key_value(buf: &[u8], base: usize) -> Option<(&[u8], ValueParts<'_>)> {
    let [0x0a, key_len, rest @ ..] = buf else {
        return None;
    };
    let key_len = usize::from(*key_len);
    if key_len >= 0x80 || rest.len() < key_len {
        return None;
    }
    let (key, rest) = rest.split_at(key_len);
    let value = match rest {
        [] => ValueParts::Absent,
        [0x12, value_len, value @ ..]
            if usize::from(*value_len) == value.len() && *value_len < 0x80 =>
        {
            ValueParts::One(value, base + 2 + key_len + 2)
        }
        _ => return None,
    };
    Some((key, value))
}

/// An expected value of a rule, tagged with its kind: numbers compare by value (1 == 1.0),
/// booleans only with booleans, strings only with strings.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    Bool(bool),
    Number(f64),
    Str(String),
}

/// An attribute value against a typed scalar; an array matches when any element does.
pub fn scalar_equal(value: &AttrValue<'_>, expected: &Expected) -> bool {
    match (value, expected) {
        (AttrValue::Array(items), _) => items.iter().any(|item| scalar_equal(item, expected)),
        (AttrValue::Bool(b), Expected::Bool(e)) => b == e,
        (AttrValue::Int(i), Expected::Number(e)) => cmp_int_float(*i, *e) == Some(Ordering::Equal),
        (AttrValue::Double(d), Expected::Number(e)) => d == e,
        (AttrValue::Str(s), Expected::Str(e)) => s == e,
        _ => false,
    }
}

/// Whether the value lies in [low, high] (either bound optional); numeric strings count.
pub fn in_range(value: &AttrValue<'_>, low: Option<f64>, high: Option<f64>) -> bool {
    let within_f = |v: f64| low.is_none_or(|l| v >= l) && high.is_none_or(|h| v <= h);
    match value {
        AttrValue::Array(items) => items.iter().any(|item| in_range(item, low, high)),
        AttrValue::Int(i) => {
            low.is_none_or(|l| {
                matches!(
                    cmp_int_float(*i, l),
                    Some(Ordering::Greater | Ordering::Equal)
                )
            }) && high.is_none_or(|h| {
                matches!(cmp_int_float(*i, h), Some(Ordering::Less | Ordering::Equal))
            })
        }
        AttrValue::Double(d) => within_f(*d),
        AttrValue::Str(s) => python_float(s).is_some_and(within_f),
        _ => false,
    }
}

/// An int64 against a double, exactly (as Python compares them: 2^63 - 1 < 2^63).
pub fn cmp_int_float(i: i64, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    if f >= 9_223_372_036_854_775_808.0 {
        return Some(Ordering::Less);
    }
    if f < -9_223_372_036_854_775_808.0 {
        return Some(Ordering::Greater);
    }
    let floor = f.floor();
    let whole = floor as i128;
    Some(match i128::from(i).cmp(&whole) {
        Ordering::Equal if f > floor => Ordering::Less,
        other => other,
    })
}

/// Python's `float(text)` for the strings attributes hold: surrounding whitespace, a sign,
/// digits with single underscores between them, a fraction and exponent, inf/infinity/nan in
/// any case. (Python also reads non-ASCII digits; they are not numbers here.)
pub fn python_float(text: &str) -> Option<f64> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return None;
    }
    let cleaned: std::borrow::Cow<'_, str> = if trimmed.contains('_') {
        let bytes = trimmed.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'_' {
                let digit_before = i > 0 && bytes[i - 1].is_ascii_digit();
                let digit_after = bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
                if !digit_before || !digit_after {
                    return None;
                }
            }
        }
        trimmed.replace('_', "").into()
    } else {
        trimmed.into()
    };
    let unsigned = cleaned.trim_start_matches(['+', '-']);
    if cleaned.len() - unsigned.len() > 1 {
        return None;
    }
    let lower = unsigned.to_ascii_lowercase();
    if matches!(lower.as_str(), "inf" | "infinity" | "nan") {
        return cleaned.parse::<f64>().ok().or_else(|| {
            let sign = if cleaned.starts_with('-') { -1.0 } else { 1.0 };
            Some(if lower == "nan" {
                f64::NAN
            } else {
                sign * f64::INFINITY
            })
        });
    }
    if !unsigned
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    cleaned.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{put_len, put_tag, put_varint, I64, VARINT};

    fn ld(number: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_len(&mut out, number, payload);
        out
    }

    #[test]
    fn decodes_each_member_and_the_last_one_wins() {
        assert_eq!(
            AttrValue::decode(&ld(ANY_STRING, b"hi"), 0).unwrap(),
            AttrValue::Str("hi")
        );
        let mut two = ld(ANY_STRING, b"hi");
        put_tag(&mut two, ANY_INT, VARINT);
        put_varint(&mut two, (-5i64) as u64);
        assert_eq!(AttrValue::decode(&two, 0).unwrap(), AttrValue::Int(-5));
        let mut double = Vec::new();
        put_tag(&mut double, ANY_DOUBLE, I64);
        double.extend_from_slice(&1.5f64.to_bits().to_le_bytes());
        assert_eq!(
            AttrValue::decode(&double, 0).unwrap(),
            AttrValue::Double(1.5)
        );
        assert_eq!(
            AttrValue::decode(&ld(ANY_KVLIST, b""), 0).unwrap(),
            AttrValue::None
        );
        assert_eq!(AttrValue::decode(b"", 0).unwrap(), AttrValue::None);
    }

    #[test]
    fn arrays_merge_their_occurrences_until_another_member_comes() {
        let item = |s: &[u8]| ld(otlp::LIST_VALUES, &ld(ANY_STRING, s));
        let body = [ld(ANY_ARRAY, &item(b"a")), ld(ANY_ARRAY, &item(b"b"))].concat();
        assert_eq!(
            AttrValue::decode(&body, 0).unwrap(),
            AttrValue::Array(vec![AttrValue::Str("a"), AttrValue::Str("b")])
        );
        let body = [
            ld(ANY_ARRAY, &item(b"a")),
            ld(ANY_STRING, b"x"),
            ld(ANY_ARRAY, &item(b"c")),
        ]
        .concat();
        assert_eq!(
            AttrValue::decode(&body, 0).unwrap(),
            AttrValue::Array(vec![AttrValue::Str("c")])
        );
    }

    #[test]
    fn numbers_as_the_extractor_reads_them() {
        let rows: [(AttrValue<'_>, i64); 9] = [
            (AttrValue::Int(42), 42),
            (AttrValue::Int(i64::MIN), 0),
            (AttrValue::Double(41.9), 41),
            (AttrValue::Double(-1.5), -1),
            (AttrValue::Double(f64::NAN), 0),
            (AttrValue::Double(1e300), 0),
            (AttrValue::Str("123"), 123),
            (AttrValue::Str("²"), 0),
            (AttrValue::Bool(true), 0),
        ];
        for (value, expected) in rows {
            assert_eq!(value.number(), expected, "{value:?}");
        }
        assert_eq!(AttrValue::Str(&"9".repeat(20)).number(), 0);
    }

    #[test]
    fn comparisons_as_python_makes_them() {
        assert!(scalar_equal(&AttrValue::Int(1), &Expected::Number(1.0)));
        assert!(!scalar_equal(
            &AttrValue::Bool(true),
            &Expected::Number(1.0)
        ));
        assert!(scalar_equal(
            &AttrValue::Array(vec![AttrValue::Str("a"), AttrValue::Str("b")]),
            &Expected::Str("b".into())
        ));
        assert!(!in_range(
            &AttrValue::Int(i64::MAX),
            Some(9_223_372_036_854_775_807.0),
            None
        ));
        assert!(in_range(
            &AttrValue::Str(" 1_000 "),
            Some(999.5),
            Some(1000.0)
        ));
        assert!(!in_range(&AttrValue::Str("1__0"), None, Some(1e9)));
        assert!(in_range(&AttrValue::Str("-Infinity"), None, Some(0.0)));
        assert!(!in_range(&AttrValue::Bool(true), None, Some(5.0)));
        assert_eq!(cmp_int_float(3, 3.5), Some(Ordering::Less));
        assert_eq!(cmp_int_float(-3, -3.5), Some(Ordering::Greater));
    }
}
