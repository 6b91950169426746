//! The OTLP trace messages on the wire: their field numbers, and the validation of a whole
//! `ExportTraceServiceRequest` as upb (Python's protobuf) validates it.
//!
//! Validation walks every message of the request in place and allocates nothing, so a request
//! costs no memory beyond its bytes however many spans, attributes or values it holds. What
//! upb rejects is rejected: malformed framing, invalid UTF-8 in a string field, nesting deeper
//! than 100 messages (groups count). A field of a known number but the wrong wire type is an
//! unknown field, as in upb: kept as it is, never read.
#![forbid(unsafe_code)]

use crate::wire::{Reader, Value, WireError, WireErrorKind, WireResult, I64, LEN, VARINT};

/// upb's default nesting limit: the request is depth 0, each message or group inside adds one.
pub const MAX_DEPTH: u32 = 100;

// ExportTraceServiceRequest
pub const REQUEST_RESOURCE_SPANS: u32 = 1;
// ResourceSpans
pub const RS_RESOURCE: u32 = 1;
pub const RS_SCOPE_SPANS: u32 = 2;
pub const RS_SCHEMA_URL: u32 = 3;
// Resource
pub const RESOURCE_ATTRIBUTES: u32 = 1;
// ScopeSpans
pub const SS_SCOPE: u32 = 1;
pub const SS_SPANS: u32 = 2;
pub const SS_SCHEMA_URL: u32 = 3;
// Span
pub const SPAN_TRACE_ID: u32 = 1;
pub const SPAN_SPAN_ID: u32 = 2;
pub const SPAN_TRACE_STATE: u32 = 3;
pub const SPAN_PARENT_SPAN_ID: u32 = 4;
pub const SPAN_NAME: u32 = 5;
pub const SPAN_START: u32 = 7;
pub const SPAN_END: u32 = 8;
pub const SPAN_ATTRIBUTES: u32 = 9;
pub const SPAN_DROPPED_ATTRIBUTES: u32 = 10;
pub const SPAN_EVENTS: u32 = 11;
pub const SPAN_LINKS: u32 = 13;
pub const SPAN_DROPPED_LINKS: u32 = 14;
pub const SPAN_STATUS: u32 = 15;
// Span.Event
pub const EVENT_NAME: u32 = 2;
// Span.Link
pub const LINK_SPAN_ID: u32 = 2;
// Status
pub const STATUS_CODE: u32 = 3;
pub const STATUS_CODE_ERROR: u64 = 2;
// KeyValue
pub const KV_KEY: u32 = 1;
pub const KV_VALUE: u32 = 2;
// AnyValue
pub const ANY_STRING: u32 = 1;
pub const ANY_BOOL: u32 = 2;
pub const ANY_INT: u32 = 3;
pub const ANY_DOUBLE: u32 = 4;
pub const ANY_ARRAY: u32 = 5;
pub const ANY_KVLIST: u32 = 6;
pub const ANY_BYTES: u32 = 7;
pub const ANY_STRING_STRINDEX: u32 = 8;
// ArrayValue, KeyValueList
pub const LIST_VALUES: u32 = 1;

/// The message types of a trace export request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    Request,
    ResourceSpans,
    Resource,
    EntityRef,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

/// What a known field holds, as far as validation cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Str,
    Bytes,
    Varint,
    Fixed32,
    Fixed64,
    Msg(Message),
}

/// The known fields of each message (opentelemetry-proto 1.8: `Span.flags`, `Link.flags`,
/// `Resource.entity_refs`, the profiles' `*_strindex` included).
const fn field(message: Message, number: u32) -> Option<Field> {
    use Field::*;
    use Message::*;
    Some(match (message, number) {
        (Request, 1) => Msg(ResourceSpans),
        (ResourceSpans, 1) => Msg(Resource),
        (ResourceSpans, 2) => Msg(ScopeSpans),
        (ResourceSpans, 3) => Str,
        (Resource, 1) => Msg(KeyValue),
        (Resource, 2) => Varint,
        (Resource, 3) => Msg(EntityRef),
        (EntityRef, 1..=4) => Str,
        (ScopeSpans, 1) => Msg(Scope),
        (ScopeSpans, 2) => Msg(Span),
        (ScopeSpans, 3) => Str,
        (Scope, 1 | 2) => Str,
        (Scope, 3) => Msg(KeyValue),
        (Scope, 4) => Varint,
        (Span, 1 | 2 | 4) => Bytes,
        (Span, 3 | 5) => Str,
        (Span, 6 | 10 | 12 | 14) => Varint,
        (Span, 7 | 8) => Fixed64,
        (Span, 9) => Msg(KeyValue),
        (Span, 11) => Msg(Event),
        (Span, 13) => Msg(Link),
        (Span, 15) => Msg(Status),
        (Span, 16) => Fixed32,
        (Event, 1) => Fixed64,
        (Event, 2) => Str,
        (Event, 3) => Msg(KeyValue),
        (Event, 4) => Varint,
        (Link, 1 | 2) => Bytes,
        (Link, 3) => Str,
        (Link, 4) => Msg(KeyValue),
        (Link, 5) => Varint,
        (Link, 6) => Fixed32,
        (Status, 2) => Str,
        (Status, 3) => Varint,
        (KeyValue, 1) => Str,
        (KeyValue, 2) => Msg(AnyValue),
        (KeyValue, 3) => Varint,
        (AnyValue, 1) => Str,
        (AnyValue, 2 | 3 | 8) => Varint,
        (AnyValue, 4) => Fixed64,
        (AnyValue, 5) => Msg(ArrayValue),
        (AnyValue, 6) => Msg(KeyValueList),
        (AnyValue, 7) => Bytes,
        (ArrayValue, 1) => Msg(AnyValue),
        (KeyValueList, 1) => Msg(KeyValue),
        _ => return None,
    })
}

/// Every known field number is below this.
const KNOWN_NUMBERS: usize = 17;
const MESSAGES: usize = Message::KeyValueList as usize + 1;
const ALL_MESSAGES: [Message; MESSAGES] = [
    Message::Request,
    Message::ResourceSpans,
    Message::Resource,
    Message::EntityRef,
    Message::ScopeSpans,
    Message::Scope,
    Message::Span,
    Message::Event,
    Message::Link,
    Message::Status,
    Message::KeyValue,
    Message::AnyValue,
    Message::ArrayValue,
    Message::KeyValueList,
];

/// `field` as a table, built at compile time: the match, taken for every field of a request,
/// compiles to a chain of comparisons.
const FIELDS: [[Option<Field>; KNOWN_NUMBERS]; MESSAGES] = {
    let mut table = [[None; KNOWN_NUMBERS]; MESSAGES];
    let mut m = 0;
    while m < MESSAGES {
        assert!(ALL_MESSAGES[m] as usize == m);
        let mut number = 0;
        while number < KNOWN_NUMBERS {
            table[m][number] = field(ALL_MESSAGES[m], number as u32);
            number += 1;
        }
        m += 1;
    }
    table
};

#[inline]
fn known_field(message: Message, number: u32) -> Option<Field> {
    FIELDS[message as usize]
        .get(number as usize)
        .copied()
        .flatten()
}

/// Fields one message may hold, repeated or not. Each costs a few nanoseconds to walk again
/// when the span is ingested, on the event loop: 16 MiB of empty links (8 million) took
/// 130 ms in one step. No instrumentation writes a million events, links or attributes on one
/// span, nor a million values in one array (16 MiB of spans is 200,000 at most, in blocks of
/// spans: under the limit too).
pub const MAX_FIELDS_PER_MESSAGE: usize = 1_000_000;

/// Why a request is refused before anything of it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// Not a valid request: INVALID_ARGUMENT / HTTP 400.
    Invalid(String),
    /// Over a receiver limit: RESOURCE_EXHAUSTED without RetryInfo / HTTP 413.
    TooLarge(String),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Invalid(m) | RequestError::TooLarge(m) => f.write_str(m),
        }
    }
}

impl From<WireError> for RequestError {
    fn from(err: WireError) -> Self {
        RequestError::Invalid(format!("cannot decode ExportTraceServiceRequest: {err}"))
    }
}

/// What validation learned of a request, for admission and for replay's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestSummary {
    pub spans: usize,
    /// The latest span end time (ns since the epoch), 0 without spans.
    pub max_end_ns: u64,
}

/// Validates a serialized `ExportTraceServiceRequest`. A request with more than `max_spans`
/// spans is refused as soon as the walk passes that many (before the rest is read).
pub fn validate_request(buf: &[u8], max_spans: usize) -> Result<RequestSummary, RequestError> {
    let mut walk = Validation {
        summary: RequestSummary::default(),
        max_spans,
    };
    match walk.message(Message::Request, buf, 0, 0) {
        Ok(()) => Ok(walk.summary),
        Err(Stop::Malformed(err)) => Err(err.into()),
        Err(Stop::TooManySpans) => Err(RequestError::TooLarge(too_many_spans(max_spans))),
        Err(Stop::TooManyFields(message)) => Err(RequestError::TooLarge(format!(
            "one {message:?} message holds more than {MAX_FIELDS_PER_MESSAGE} fields (events, links, \
             attributes, array values, blocks...): a limit of the receivers"
        ))),
    }
}

/// Why a validation walk stopped: small, as it is returned through every level.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Malformed(WireError),
    TooManySpans,
    TooManyFields(Message),
}

impl From<WireError> for Stop {
    fn from(err: WireError) -> Self {
        Stop::Malformed(err)
    }
}

struct Validation {
    summary: RequestSummary,
    max_spans: usize,
}

impl Validation {
    fn message(
        &mut self,
        message: Message,
        buf: &[u8],
        base: usize,
        depth: u32,
    ) -> Result<(), Stop> {
        match message {
            Message::AnyValue if simple_any_value(buf) => return Ok(()),
            // its value one level deeper: within the nesting limit only below it
            Message::KeyValue if depth < MAX_DEPTH && simple_key_value(buf) => return Ok(()),
            _ => {}
        }
        let mut reader = Reader::new(buf, base);
        let depth_left = MAX_DEPTH - depth;
        let mut fields = 0usize;
        while !reader.at_end() {
            fields += 1;
            if fields > MAX_FIELDS_PER_MESSAGE {
                return Err(Stop::TooManyFields(message));
            }
            let (number, wire_type) = reader.read_tag()?;
            match known_field(message, number) {
                Some(Field::Str) if wire_type == LEN => {
                    let (payload, at) = reader.read_len(number)?;
                    check_utf8(payload, at)?;
                }
                Some(Field::Msg(inner)) if wire_type == LEN => {
                    let (payload, at) = reader.read_len(number)?;
                    if depth + 1 > MAX_DEPTH {
                        return Err(WireError::new(at, WireErrorKind::TooDeep).into());
                    }
                    if inner == Message::Span {
                        self.summary.spans += 1;
                        if self.summary.spans > self.max_spans {
                            return Err(Stop::TooManySpans);
                        }
                    }
                    self.message(inner, payload, at, depth + 1)?;
                }
                Some(Field::Fixed64)
                    if wire_type == I64 && message == Message::Span && number == SPAN_END =>
                {
                    let end = reader.read_fixed64(number)?;
                    self.summary.max_end_ns = self.summary.max_end_ns.max(end);
                }
                // unknown, or known with another wire type (kept as is, never read), or a
                // scalar with nothing to check
                _ => reader.skip(number, wire_type, depth_left)?,
            }
        }
        Ok(())
    }
}

/// The commonest attribute value, one `string_value` of valid UTF-8, or one `int_value`,
/// `bool_value` or `double_value`, recognised without the general walk: valid as it is.
/// Anything else (including what is invalid) is left to the general walk, which says why.
#[inline(always)] // taken for most attributes: a call costs as much as the check
fn simple_any_value(buf: &[u8]) -> bool {
    let mut reader = Reader::new(buf, 0);
    let simple = match reader.read_tag() {
        Ok((ANY_STRING, LEN)) => reader
            .read_len(ANY_STRING)
            .is_ok_and(|(s, _)| s.is_ascii() || std::str::from_utf8(s).is_ok()),
        Ok((ANY_BOOL | ANY_INT, VARINT)) => reader.read_varint().is_ok(),
        Ok((ANY_DOUBLE, I64)) => reader.read_fixed64(ANY_DOUBLE).is_ok(),
        _ => false,
    };
    simple && reader.at_end()
}

/// The commonest attribute, a key of valid UTF-8 and a simple value (`simple_any_value`) or
/// none, recognised without walking into its value: one call per attribute instead of two.
#[inline]
fn simple_key_value(buf: &[u8]) -> bool {
    let mut reader = Reader::new(buf, 0);
    let key_ok = match reader.read_tag() {
        Ok((KV_KEY, LEN)) => reader
            .read_len(KV_KEY)
            .is_ok_and(|(key, _)| key.is_ascii() || std::str::from_utf8(key).is_ok()),
        _ => false,
    };
    if !key_ok || reader.at_end() {
        return key_ok;
    }
    let value_ok = match reader.read_tag() {
        Ok((KV_VALUE, LEN)) => reader
            .read_len(KV_VALUE)
            .is_ok_and(|(value, _)| simple_any_value(value)),
        _ => false,
    };
    value_ok && reader.at_end()
}

/// The reason given for a request refused at `max_spans_per_request`.
pub fn too_many_spans(limit: usize) -> String {
    format!("request holds more than {limit} spans (receivers.max_spans_per_request)")
}

#[inline]
pub fn check_utf8(payload: &[u8], at: usize) -> WireResult<()> {
    if payload.is_ascii() {
        return Ok(());
    }
    std::str::from_utf8(payload)
        .map(|_| ())
        .map_err(|e| WireError::new(at + e.valid_up_to(), WireErrorKind::Utf8))
}

/// The fields of one message, in wire order, with each field's byte range (tag included).
/// Used on messages validated already, where an error cannot happen; it is reported anyway.
pub fn fields(buf: &[u8], base: usize) -> FieldIter<'_> {
    FieldIter {
        reader: Reader::new(buf, base),
    }
}

pub struct FieldIter<'a> {
    reader: Reader<'a>,
}

impl<'a> Iterator for FieldIter<'a> {
    type Item = WireResult<(u32, Value<'a>, std::ops::Range<usize>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.reader.position();
        match self.reader.next_field(MAX_DEPTH) {
            Ok(Some((number, value))) => Some(Ok((number, value, start..self.reader.position()))),
            Ok(None) => None,
            Err(err) => {
                self.reader = Reader::new(&[], 0); // stop after the error
                Some(Err(err))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{put_len, put_tag, put_varint, VARINT};

    fn ld(number: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_len(&mut out, number, payload);
        out
    }

    fn request_with_span(span: &[u8]) -> Vec<u8> {
        ld(1, &ld(2, &ld(2, span)))
    }

    fn valid(buf: &[u8]) -> bool {
        validate_request(buf, 1000).is_ok()
    }

    #[test]
    fn the_field_table_is_the_match() {
        for message in ALL_MESSAGES {
            for number in 0..200 {
                assert_eq!(known_field(message, number), field(message, number));
            }
        }
    }

    #[test]
    fn counts_spans_and_the_latest_end() {
        let mut span = ld(SPAN_TRACE_ID, &[1; 16]);
        put_tag(&mut span, SPAN_END, I64);
        span.extend_from_slice(&7u64.to_le_bytes());
        let mut body = request_with_span(&span);
        body.extend(request_with_span(&[]));
        assert_eq!(
            validate_request(&body, 10),
            Ok(RequestSummary {
                spans: 2,
                max_end_ns: 7
            })
        );
        assert!(matches!(
            validate_request(&body, 1),
            Err(RequestError::TooLarge(_))
        ));
    }

    #[test]
    fn invalid_utf8_in_known_string_fields_only() {
        assert!(!valid(&request_with_span(&ld(SPAN_NAME, &[0xff, 0xfe]))));
        assert!(!valid(&request_with_span(&ld(
            SPAN_NAME,
            &[0xed, 0xa0, 0x80]
        )))); // a surrogate
        assert!(valid(&request_with_span(&ld(SPAN_TRACE_ID, &[0xff; 16])))); // bytes
        assert!(valid(&request_with_span(&ld(100, &[0xff])))); // unknown: not read
        let kv = [ld(KV_KEY, b"k"), ld(KV_VALUE, &ld(ANY_STRING, &[0xff]))].concat();
        assert!(!valid(&request_with_span(&ld(SPAN_ATTRIBUTES, &kv))));
    }

    #[test]
    fn a_known_field_with_another_wire_type_is_an_unknown_field() {
        let mut span = Vec::new();
        put_tag(&mut span, SPAN_NAME, VARINT);
        put_varint(&mut span, 5);
        put_tag(&mut span, SPAN_ATTRIBUTES, VARINT); // a message as a varint
        put_varint(&mut span, 1);
        assert!(valid(&request_with_span(&span)));
    }

    #[test]
    fn a_message_holds_at_most_a_million_fields() {
        let links = |n: usize| ld(SPAN_LINKS, &[]).repeat(n);
        assert!(valid(&request_with_span(&links(MAX_FIELDS_PER_MESSAGE))));
        let refused = validate_request(&request_with_span(&links(MAX_FIELDS_PER_MESSAGE + 1)), 10);
        assert!(
            matches!(&refused, Err(RequestError::TooLarge(m)) if m.starts_with("one Span message")),
            "{refused:?}"
        );
        // blocks count too: a request of empty resource blocks
        let blocks = |n: usize| ld(1, &[]).repeat(n);
        assert!(valid(&blocks(MAX_FIELDS_PER_MESSAGE)));
        assert!(matches!(
            validate_request(&blocks(MAX_FIELDS_PER_MESSAGE + 1), 10),
            Err(RequestError::TooLarge(_))
        ));
    }

    #[test]
    fn nesting_limit_is_upbs() {
        // groups inside a span: the span is depth 3, so 97 levels of groups fit
        let groups = |n: usize| [[0xa3u8, 0x01].repeat(n), [0xa4u8, 0x01].repeat(n)].concat();
        assert!(valid(&request_with_span(&groups(97))));
        assert!(!valid(&request_with_span(&groups(98))));
        assert!(valid(&groups(100)));
        assert!(!valid(&groups(101)));
        // arrays in an attribute value: KeyValue 4, AnyValue 5, two more per array level
        let nested = |n: usize| {
            let mut value = ld(ANY_STRING, b"x");
            for _ in 0..n {
                value = ld(ANY_ARRAY, &ld(LIST_VALUES, &value));
            }
            request_with_span(&ld(
                SPAN_ATTRIBUTES,
                &[ld(KV_KEY, b"k"), ld(KV_VALUE, &value)].concat(),
            ))
        };
        assert!(valid(&nested(47)));
        assert!(!valid(&nested(48)));
    }

    #[test]
    fn a_simple_attribute_at_the_nesting_limit_is_too_deep_for_its_value() {
        // key-value lists: the span's KeyValue is depth 4, each level adds three (AnyValue,
        // KeyValueList, KeyValue), so the innermost KeyValue of 32 levels is depth 100
        let nested = |n: usize, inner: &[u8]| {
            let mut kv = inner.to_vec();
            for _ in 0..n {
                let list = ld(ANY_KVLIST, &ld(LIST_VALUES, &kv));
                kv = [ld(KV_KEY, b"k"), ld(KV_VALUE, &list)].concat();
            }
            request_with_span(&ld(SPAN_ATTRIBUTES, &kv))
        };
        let with_value = [ld(KV_KEY, b"k"), ld(KV_VALUE, &ld(ANY_STRING, b"v"))].concat();
        assert!(valid(&nested(31, &with_value)));
        assert!(!valid(&nested(32, &with_value)));
        assert!(valid(&nested(32, &ld(KV_KEY, b"k")))); // no value: nothing deeper
        assert!(!valid(&nested(33, &ld(KV_KEY, b"k"))));
    }
}
