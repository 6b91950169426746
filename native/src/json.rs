//! OTLP/JSON to OTLP protobuf: `otlp_json_to_protobuf` reads one OTLP/JSON
//! `ExportTraceServiceRequest` and writes the same request in the protobuf wire format, in one
//! pass over the text, without building a tree of the document.
//!
//! # What it accepts
//! Exactly what `sampler/otlp/json_codec.py::request_from_json` accepts, to the same message:
//! Python's `json.loads` of the bytes (UTF-8 decoded with `surrogatepass`), then json_codec's
//! walk over the ids (hex, objects only on the way to them), then protobuf's
//! `json_format.ParseDict(..., ignore_unknown_fields=True)`, which is plain Python over the
//! decoded dict and so takes some surprising things (a string where a message belongs is an
//! empty message, `"kind": 3.7` is 3, an unknown enum name leaves the field unset, integer
//! strings go through Python's `int()` and `float()` with their whitespace, underscores and
//! non-ASCII digits). Each rule is written next to the code that applies it. The known
//! differences, all of them on the side of rejecting:
//! - a field given twice in one object (the same key twice, or both its camelCase and snake_case
//!   names): Python keeps the last value, or merges, or clears, depending on the type and on
//!   dict order; following that while streaming would mean undoing what was written, so we
//!   reject (no exporter writes a key twice);
//! - a body in UTF-16 or UTF-32 (`json.loads` detects them from zero bytes): rejected, OTLP/JSON
//!   is UTF-8 (RFC 8259 section 8.1);
//! - arrays and objects nested deeper than `MAX_NESTING` (512), counting those inside unknown
//!   fields: Python's `json.loads` fails at about 1000 levels minus the caller's stack depth,
//!   a limit that moves with the caller; we stop at a fixed one below it.
//!
//! # Why a hand-written tokenizer and not jiter
//! Acceptance has to follow Python's `json` module where jiter (like serde_json) differs: lone
//! surrogates, escaped (`"\ud800"`) or raw (UTF-8 `ED A0 80`, which `surrogatepass` lets
//! through), are valid JSON to Python and only fail where ParseDict uses the string; `NaN`,
//! `Infinity` and `-Infinity` are values; an integer literal of more than 4300 digits fails
//! (Python's `int()` limit) wherever it is, even inside an unknown field, while a longer float
//! literal does not. We also need the raw text of numbers, an iterative skip of unknown values
//! and our own nesting limit. That is a small tokenizer (`Lexer`), simpler written than adapted.
//!
//! # Memory and bounds
//! The output is the only buffer that grows with the input: each nested message is written in
//! place after a one-byte length placeholder, and when it closes its content is moved right if
//! the length needs more bytes (a message of 128 bytes or more; the move is of bytes just
//! written, so it costs about as much as a copy into a parent buffer, without the buffer). The
//! output never holds more than `max_output_bytes` (its capacity neither); the `max_spans`+1st
//! span stops the conversion when it starts. Recursion follows message nesting only, which is
//! limited to 100 levels as ParseDict limits it; unknown values are skipped with a loop.
#![forbid(unsafe_code)]

use std::fmt;

use crate::wire::{varint_len, I32, I64, LEN, VARINT};

/// Where a conversion stops with `TooLarge`.
#[derive(Debug, Clone, Copy)]
pub struct JsonLimits {
    /// The protobuf request may not be longer than this.
    pub max_output_bytes: usize,
    /// Nor hold more spans than this.
    pub max_spans: usize,
}

/// Why a body was refused. The message says where (a path into the request and a byte offset)
/// and is at most `MAX_MESSAGE_CHARS` characters of valid UTF-8, fit to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// Not an OTLP/JSON export request that `request_from_json` would accept.
    Invalid(String),
    /// Over `JsonLimits`.
    TooLarge(String),
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Invalid(message) | JsonError::TooLarge(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for JsonError {}

type Result<T> = std::result::Result<T, JsonError>;

/// ParseDict's `max_recursion_depth`: the request is message 1, and message 101 is refused.
const MAX_MESSAGE_DEPTH: u32 = 100;
/// Arrays and objects open at once, anywhere in the document (see the module notes).
const MAX_NESTING: usize = 512;
/// Python's `sys.get_int_max_str_digits()` default: `int()` of a longer digit string fails.
const MAX_INT_DIGITS: usize = 4300;
/// Error messages are clipped to this, keeping both ends.
const MAX_MESSAGE_CHARS: usize = 1000;
/// User text quoted in an error message is cut to this many characters.
const MAX_QUOTE_CHARS: usize = 48;

/// Converts one OTLP/JSON `ExportTraceServiceRequest` into its protobuf encoding.
pub fn otlp_json_to_protobuf(input: &[u8], limits: &JsonLimits) -> Result<Vec<u8>> {
    let body = utf8_body(input)?;
    let mut converter = Converter {
        lex: Lexer::new(body),
        // Output is usually smaller than the text; the pages not written are never touched.
        out: Writer::new(body.len().saturating_add(16), limits.max_output_bytes),
        scratch: Vec::new(),
        decoded: Vec::new(),
        path: Vec::new(),
        spans: 0,
        max_spans: limits.max_spans,
    };
    converter.request()?;
    Ok(converter.out.buf)
}

/// The body as UTF-8, as `json.loads` decodes bytes: a UTF-8 byte order mark is dropped
/// (it picks `utf-8-sig`); what `json.detect_encoding` takes for UTF-16 or UTF-32 is refused
/// (a known difference: Python would decode it).
fn utf8_body(input: &[u8]) -> Result<&[u8]> {
    let wide = || {
        Err(JsonError::Invalid(
            "body is not valid JSON: it is encoded in UTF-16 or UTF-32 (it starts with a zero \
             byte or a UTF-16/32 byte order mark); OTLP/JSON must be UTF-8"
                .to_string(),
        ))
    };
    if input.starts_with(&[0, 0, 0xFE, 0xFF])
        || input.starts_with(&[0xFF, 0xFE, 0, 0])
        || input.starts_with(&[0xFE, 0xFF])
        || input.starts_with(&[0xFF, 0xFE])
    {
        return wide();
    }
    if let Some(rest) = input.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return Ok(rest);
    }
    let has_zero_in_first_two = input.len() >= 2 && (input[0] == 0 || input[1] == 0);
    if has_zero_in_first_two && (input.len() >= 4 || input.len() == 2) {
        return wide();
    }
    Ok(input)
}

// --- the schema ---------------------------------------------------------------------------
//
// The messages of an ExportTraceServiceRequest, with their fields' JSON and proto names,
// numbers and types, as opentelemetry-proto 1.9 (the installed descriptors) defines them.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
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

#[derive(Debug, Clone, Copy)]
enum Type {
    Message(Message),
    String,
    Bytes,
    /// OTLP's ids: hex text of this many bytes, not protobuf's base64.
    HexId(usize),
    Bool,
    Int32,
    Uint32,
    Int64,
    Fixed32,
    Fixed64,
    Double,
    /// An open enum, with its value names.
    Enum(&'static [(&'static str, i32)]),
}

struct Field {
    json_name: &'static str,
    proto_name: &'static str,
    number: u32,
    ty: Type,
    repeated: bool,
    /// A member of AnyValue's `value` oneof: at most one may be non-null, and it is written
    /// even when it holds the default (that is how the oneof says which member is set).
    in_oneof: bool,
    /// json_codec walks these arrays on its way to the ids and requires objects in them
    /// (ParseDict alone would take a string there as an empty message).
    objects_only: bool,
}

const fn field(json_name: &'static str, proto_name: &'static str, number: u32, ty: Type) -> Field {
    Field {
        json_name,
        proto_name,
        number,
        ty,
        repeated: false,
        in_oneof: false,
        objects_only: false,
    }
}

const fn repeated(f: Field) -> Field {
    Field {
        repeated: true,
        ..f
    }
}

const fn objects(f: Field) -> Field {
    Field {
        repeated: true,
        objects_only: true,
        ..f
    }
}

const fn oneof(f: Field) -> Field {
    Field {
        in_oneof: true,
        ..f
    }
}

const SPAN_KIND: &[(&str, i32)] = &[
    ("SPAN_KIND_UNSPECIFIED", 0),
    ("SPAN_KIND_INTERNAL", 1),
    ("SPAN_KIND_SERVER", 2),
    ("SPAN_KIND_CLIENT", 3),
    ("SPAN_KIND_PRODUCER", 4),
    ("SPAN_KIND_CONSUMER", 5),
];

const STATUS_CODE: &[(&str, i32)] = &[
    ("STATUS_CODE_UNSET", 0),
    ("STATUS_CODE_OK", 1),
    ("STATUS_CODE_ERROR", 2),
];

use Message as M;

#[rustfmt::skip]
const REQUEST: &[Field] = &[
    objects(field("resourceSpans", "resource_spans", 1, Type::Message(M::ResourceSpans))),
];

#[rustfmt::skip]
const RESOURCE_SPANS: &[Field] = &[
    field("resource", "resource", 1, Type::Message(M::Resource)),
    objects(field("scopeSpans", "scope_spans", 2, Type::Message(M::ScopeSpans))),
    field("schemaUrl", "schema_url", 3, Type::String),
];

#[rustfmt::skip]
const RESOURCE: &[Field] = &[
    repeated(field("attributes", "attributes", 1, Type::Message(M::KeyValue))),
    field("droppedAttributesCount", "dropped_attributes_count", 2, Type::Uint32),
    repeated(field("entityRefs", "entity_refs", 3, Type::Message(M::EntityRef))),
];

#[rustfmt::skip]
const ENTITY_REF: &[Field] = &[
    field("schemaUrl", "schema_url", 1, Type::String),
    field("type", "type", 2, Type::String),
    repeated(field("idKeys", "id_keys", 3, Type::String)),
    repeated(field("descriptionKeys", "description_keys", 4, Type::String)),
];

#[rustfmt::skip]
const SCOPE_SPANS: &[Field] = &[
    field("scope", "scope", 1, Type::Message(M::Scope)),
    objects(field("spans", "spans", 2, Type::Message(M::Span))),
    field("schemaUrl", "schema_url", 3, Type::String),
];

#[rustfmt::skip]
const SCOPE: &[Field] = &[
    field("name", "name", 1, Type::String),
    field("version", "version", 2, Type::String),
    repeated(field("attributes", "attributes", 3, Type::Message(M::KeyValue))),
    field("droppedAttributesCount", "dropped_attributes_count", 4, Type::Uint32),
];

#[rustfmt::skip]
const SPAN: &[Field] = &[
    field("traceId", "trace_id", 1, Type::HexId(16)),
    field("spanId", "span_id", 2, Type::HexId(8)),
    field("traceState", "trace_state", 3, Type::String),
    field("parentSpanId", "parent_span_id", 4, Type::HexId(8)),
    field("flags", "flags", 16, Type::Fixed32),
    field("name", "name", 5, Type::String),
    field("kind", "kind", 6, Type::Enum(SPAN_KIND)),
    field("startTimeUnixNano", "start_time_unix_nano", 7, Type::Fixed64),
    field("endTimeUnixNano", "end_time_unix_nano", 8, Type::Fixed64),
    repeated(field("attributes", "attributes", 9, Type::Message(M::KeyValue))),
    field("droppedAttributesCount", "dropped_attributes_count", 10, Type::Uint32),
    repeated(field("events", "events", 11, Type::Message(M::Event))),
    field("droppedEventsCount", "dropped_events_count", 12, Type::Uint32),
    objects(field("links", "links", 13, Type::Message(M::Link))),
    field("droppedLinksCount", "dropped_links_count", 14, Type::Uint32),
    field("status", "status", 15, Type::Message(M::Status)),
];

#[rustfmt::skip]
const EVENT: &[Field] = &[
    field("timeUnixNano", "time_unix_nano", 1, Type::Fixed64),
    field("name", "name", 2, Type::String),
    repeated(field("attributes", "attributes", 3, Type::Message(M::KeyValue))),
    field("droppedAttributesCount", "dropped_attributes_count", 4, Type::Uint32),
];

#[rustfmt::skip]
const LINK: &[Field] = &[
    field("traceId", "trace_id", 1, Type::HexId(16)),
    field("spanId", "span_id", 2, Type::HexId(8)),
    field("traceState", "trace_state", 3, Type::String),
    repeated(field("attributes", "attributes", 4, Type::Message(M::KeyValue))),
    field("droppedAttributesCount", "dropped_attributes_count", 5, Type::Uint32),
    field("flags", "flags", 6, Type::Fixed32),
];

#[rustfmt::skip]
const STATUS: &[Field] = &[
    field("message", "message", 2, Type::String),
    field("code", "code", 3, Type::Enum(STATUS_CODE)),
];

#[rustfmt::skip]
const KEY_VALUE: &[Field] = &[
    field("key", "key", 1, Type::String),
    field("value", "value", 2, Type::Message(M::AnyValue)),
    field("keyStrindex", "key_strindex", 3, Type::Int32),
];

#[rustfmt::skip]
const ANY_VALUE: &[Field] = &[
    oneof(field("stringValue", "string_value", 1, Type::String)),
    oneof(field("boolValue", "bool_value", 2, Type::Bool)),
    oneof(field("intValue", "int_value", 3, Type::Int64)),
    oneof(field("doubleValue", "double_value", 4, Type::Double)),
    oneof(field("arrayValue", "array_value", 5, Type::Message(M::ArrayValue))),
    oneof(field("kvlistValue", "kvlist_value", 6, Type::Message(M::KeyValueList))),
    oneof(field("bytesValue", "bytes_value", 7, Type::Bytes)),
    oneof(field("stringValueStrindex", "string_value_strindex", 8, Type::Int32)),
];

#[rustfmt::skip]
const ARRAY_VALUE: &[Field] = &[
    repeated(field("values", "values", 1, Type::Message(M::AnyValue))),
];

#[rustfmt::skip]
const KEY_VALUE_LIST: &[Field] = &[
    repeated(field("values", "values", 1, Type::Message(M::KeyValue))),
];

impl Message {
    fn fields(self) -> &'static [Field] {
        match self {
            M::Request => REQUEST,
            M::ResourceSpans => RESOURCE_SPANS,
            M::Resource => RESOURCE,
            M::EntityRef => ENTITY_REF,
            M::ScopeSpans => SCOPE_SPANS,
            M::Scope => SCOPE,
            M::Span => SPAN,
            M::Event => EVENT,
            M::Link => LINK,
            M::Status => STATUS,
            M::KeyValue => KEY_VALUE,
            M::AnyValue => ANY_VALUE,
            M::ArrayValue => ARRAY_VALUE,
            M::KeyValueList => KEY_VALUE_LIST,
        }
    }

    fn name(self) -> &'static str {
        match self {
            M::Request => "ExportTraceServiceRequest",
            M::ResourceSpans => "ResourceSpans",
            M::Resource => "Resource",
            M::EntityRef => "EntityRef",
            M::ScopeSpans => "ScopeSpans",
            M::Scope => "InstrumentationScope",
            M::Span => "Span",
            M::Event => "Span.Event",
            M::Link => "Span.Link",
            M::Status => "Status",
            M::KeyValue => "KeyValue",
            M::AnyValue => "AnyValue",
            M::ArrayValue => "ArrayValue",
            M::KeyValueList => "KeyValueList",
        }
    }

    /// The field a key names, as ParseDict looks it up: JSON names first, then proto names.
    fn field_index(self, key: &[u8]) -> Option<usize> {
        let fields = self.fields();
        fields
            .iter()
            .position(|f| f.json_name.as_bytes() == key)
            .or_else(|| fields.iter().position(|f| f.proto_name.as_bytes() == key))
    }
}

/// ParseDict's `_VALID_EXTENSION_NAME` (`\[[a-zA-Z0-9\._]*\]$`, matched from the start, so a
/// final newline may follow): a key like that is taken for an extension, and our messages
/// have none, so it is an error rather than an unknown field.
fn is_extension_name(key: &[u8]) -> bool {
    let key = key.strip_suffix(b"\n").unwrap_or(key);
    key.len() >= 2
        && key[0] == b'['
        && key[key.len() - 1] == b']'
        && key[1..key.len() - 1]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
}

// --- errors -------------------------------------------------------------------------------

/// A step on the way from the request to the value being converted, for error messages.
struct PathPart {
    name: &'static str,
    index: Option<usize>,
}

fn describe_path(path: &[PathPart]) -> String {
    let mut text = String::new();
    for (i, part) in path.iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        text.push_str(part.name);
        if let Some(index) = part.index {
            text.push_str(&format!("[{index}]"));
        }
    }
    text
}

fn invalid_at(path: &[PathPart], offset: usize, why: &str) -> JsonError {
    let message = if path.is_empty() {
        format!("invalid OTLP/JSON: {why} (at byte {offset})")
    } else {
        format!(
            "invalid OTLP/JSON: {}: {why} (at byte {offset})",
            describe_path(path)
        )
    };
    JsonError::Invalid(clip(message))
}

fn syntax_error(offset: usize, why: &str) -> JsonError {
    JsonError::Invalid(clip(format!(
        "body is not valid JSON: {why} (at byte {offset})"
    )))
}

/// A message cut to `MAX_MESSAGE_CHARS` characters keeping both ends (the reason comes last).
fn clip(message: String) -> String {
    let count = message.chars().count();
    if count <= MAX_MESSAGE_CHARS {
        return message;
    }
    let half = (MAX_MESSAGE_CHARS - 5) / 2;
    let head: String = message.chars().take(half).collect();
    let tail: String = message.chars().skip(count - half).collect();
    format!("{head} ... {tail}")
}

/// User text for an error message: quoted, escaped, cut short, valid UTF-8 whatever it held.
fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut quoted: String = text.chars().take(MAX_QUOTE_CHARS).collect();
    if text.chars().nth(MAX_QUOTE_CHARS).is_some() {
        quoted.push_str("...");
    }
    format!("'{}'", quoted.escape_debug())
}

// --- the tokenizer ------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Object,
    Array,
}

/// A JSON string's content with escapes decoded: UTF-8, except that surrogate code points
/// (escaped lone ones, or raw ones that Python's `surrogatepass` lets through) are kept as
/// their 3-byte encodings and flagged. No text ParseDict uses may hold one.
#[derive(Clone, Copy)]
struct Text<'s> {
    bytes: &'s [u8],
    surrogates: bool,
}

/// A scalar value as `json.loads` types it.
enum Scalar<'s> {
    Text(Text<'s>),
    /// An integer literal (a Python `int`): its text, sign included. Not `-0`, which
    /// json_codec's `_parse_int` turns into the float -0.0.
    Integer(&'s [u8]),
    /// A literal with a fraction or an exponent, `-0`, `NaN`, `Infinity` or `-Infinity`.
    Float(f64),
    Bool(bool),
    /// An array or an object (not consumed): no scalar field takes one.
    Container,
}

/// A pull tokenizer over the body, following Python's `json` module (strict mode): the four
/// JSON whitespace characters, no control characters in strings, `NaN` and `Infinity`
/// literals, a high surrogate escape joined with a low one right after it.
struct Lexer<'a> {
    input: &'a [u8],
    pos: usize,
    /// Arrays and objects open now.
    nesting: usize,
    /// The containers `skip_value` is inside, innermost last (reused between calls).
    skip_stack: Vec<Container>,
}

impl<'a> Lexer<'a> {
    fn new(input: &'a [u8]) -> Self {
        Lexer {
            input,
            pos: 0,
            nesting: 0,
            skip_stack: Vec::new(),
        }
    }

    fn error(&self, why: &str) -> JsonError {
        syntax_error(self.pos, why)
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.input.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next byte that is not whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.input.get(self.pos).copied()
    }

    fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    fn expect_byte(&mut self, byte: u8, why: &str) -> Result<()> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(why))
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<()> {
        if self.input[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.error("expecting a value"))
        }
    }

    /// Consumes `{` or `[` (the caller has peeked it).
    fn open(&mut self) -> Result<()> {
        if self.nesting >= MAX_NESTING {
            return Err(self.error(&format!(
                "arrays and objects nested more than {MAX_NESTING} deep"
            )));
        }
        self.nesting += 1;
        self.pos += 1;
        Ok(())
    }

    fn close(&mut self) {
        self.nesting -= 1;
        self.pos += 1;
    }

    /// Inside an object (after `{`): reads the next key and its colon, or the closing `}`
    /// (then None). `first` says that no member was read yet.
    fn next_key<'s>(&mut self, first: bool, scratch: &'s mut Vec<u8>) -> Result<Option<Text<'s>>>
    where
        'a: 's,
    {
        match self.peek() {
            Some(b'}') => {
                self.close();
                return Ok(None);
            }
            Some(b',') if !first => {
                self.pos += 1;
                if self.peek() != Some(b'"') {
                    return Err(self.error("expecting a property name in double quotes"));
                }
            }
            Some(b'"') if first => {}
            _ if first => return Err(self.error("expecting a property name in double quotes")),
            _ => return Err(self.error("expecting ',' or '}' in an object")),
        }
        let key = self.string(scratch)?;
        self.expect_byte(b':', "expecting ':' after a property name")?;
        Ok(Some(key))
    }

    /// Inside an array (after `[`): true if a value follows, false at the closing `]`.
    fn next_item(&mut self, first: bool) -> Result<bool> {
        match self.peek() {
            Some(b']') => {
                self.close();
                Ok(false)
            }
            Some(b',') if !first => {
                self.pos += 1;
                Ok(true)
            }
            _ if first => Ok(true),
            _ => Err(self.error("expecting ',' or ']' in an array")),
        }
    }

    /// Reads a string (at its opening quote) into `Text`: a slice of the input when it has no
    /// escapes, else decoded into `scratch`.
    fn string<'s>(&mut self, scratch: &'s mut Vec<u8>) -> Result<Text<'s>>
    where
        'a: 's,
    {
        let input: &'a [u8] = self.input;
        let start = self.pos + 1;
        let (end, escaped, surrogates) = self.scan_string(Some(scratch))?;
        let bytes: &'s [u8] = if escaped {
            scratch.as_slice()
        } else {
            &input[start..end]
        };
        Ok(Text { bytes, surrogates })
    }

    /// Reads a string (at its opening quote) and checks it, keeping nothing.
    fn skip_string(&mut self) -> Result<()> {
        self.scan_string(None).map(|_| ())
    }

    /// Reads a string from its opening quote past its closing one. With `sink`, an escaped
    /// string's decoded content is left there. Returns where its raw content ends, whether it
    /// had escapes, and whether it holds surrogate code points.
    fn scan_string(&mut self, mut sink: Option<&mut Vec<u8>>) -> Result<(usize, bool, bool)> {
        let input = self.input;
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        let mut surrogates = false;
        loop {
            let rest = &input[self.pos..];
            let Some(stop) = memchr::memchr2(b'"', b'\\', rest) else {
                return Err(syntax_error(start - 1, "unterminated string"));
            };
            let chunk = &rest[..stop];
            if let Some(at) = chunk.iter().position(|&b| b < 0x20) {
                return Err(syntax_error(
                    self.pos + at,
                    "invalid control character in a string",
                ));
            }
            surrogates |= check_utf8(chunk)
                .map_err(|at| syntax_error(self.pos + at, "invalid UTF-8 in a string"))?;
            if escaped {
                if let Some(sink) = sink.as_deref_mut() {
                    sink.extend_from_slice(chunk);
                }
            }
            self.pos += stop;
            if input[self.pos] == b'"' {
                let end = self.pos;
                self.pos += 1;
                return Ok((end, escaped, surrogates));
            }
            if !escaped {
                escaped = true;
                if let Some(sink) = sink.as_deref_mut() {
                    sink.clear();
                    sink.extend_from_slice(&input[start..self.pos]);
                }
            }
            surrogates |= self.escape(sink.as_deref_mut())?;
        }
    }

    /// Decodes the escape at the backslash under `pos`; true if it left a lone surrogate.
    fn escape(&mut self, sink: Option<&mut Vec<u8>>) -> Result<bool> {
        let at = self.pos;
        let Some(&kind) = self.input.get(at + 1) else {
            return Err(syntax_error(at, "unterminated string"));
        };
        self.pos += 2;
        let decoded: u8 = match kind {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => return self.unicode_escape(at, sink),
            _ => return Err(syntax_error(at, "invalid escape in a string")),
        };
        if let Some(sink) = sink {
            sink.push(decoded);
        }
        Ok(false)
    }

    /// `\uXXXX` (its `\u` consumed). Python joins a high surrogate with a `\uXXXX` low
    /// surrogate right after it, and keeps any other surrogate as a lone code point.
    fn unicode_escape(&mut self, at: usize, sink: Option<&mut Vec<u8>>) -> Result<bool> {
        let code = self.hex4(at)?;
        let mut lone = false;
        let code_point = if (0xD800..0xDC00).contains(&code) {
            if self.input[self.pos..].starts_with(b"\\u") {
                let low = self.hex4_at(self.pos + 2, self.pos)?;
                if (0xDC00..0xE000).contains(&low) {
                    self.pos += 6;
                    0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                } else {
                    lone = true;
                    code
                }
            } else {
                lone = true;
                code
            }
        } else {
            lone = (0xDC00..0xE000).contains(&code);
            code
        };
        if let Some(sink) = sink {
            push_code_point(sink, code_point);
        }
        Ok(lone)
    }

    fn hex4(&mut self, escape_at: usize) -> Result<u32> {
        let value = self.hex4_at(self.pos, escape_at)?;
        self.pos += 4;
        Ok(value)
    }

    fn hex4_at(&self, from: usize, escape_at: usize) -> Result<u32> {
        let digits = self
            .input
            .get(from..from + 4)
            .ok_or_else(|| syntax_error(escape_at, "invalid \\uXXXX escape"))?;
        let mut value = 0;
        for &digit in digits {
            let nibble = (digit as char)
                .to_digit(16)
                .ok_or_else(|| syntax_error(escape_at, "invalid \\uXXXX escape"))?;
            value = value * 16 + nibble;
        }
        Ok(value)
    }

    /// Reads a number (at its first character), checked against JSON's grammar. Returns its
    /// text and whether it is an integer literal.
    fn number(&mut self) -> Result<(&'a [u8], bool)> {
        let input = self.input;
        let start = self.pos;
        let mut i = start;
        if input.get(i) == Some(&b'-') {
            i += 1;
        }
        let int_start = i;
        match input.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while input.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
            }
            _ => return Err(syntax_error(start, "expecting a value")),
        }
        let int_digits = i - int_start;
        let mut integer = true;
        // Python matches the longest valid number; a '.' or 'e' left over is then an error
        // wherever the number stands, so a partial match can be refused here.
        if input.get(i) == Some(&b'.') {
            integer = false;
            i += 1;
            let digits_start = i;
            while input.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == digits_start {
                return Err(syntax_error(i, "expecting a digit after '.'"));
            }
        }
        if let Some(b'e' | b'E') = input.get(i) {
            integer = false;
            i += 1;
            if let Some(b'+' | b'-') = input.get(i) {
                i += 1;
            }
            let digits_start = i;
            while input.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == digits_start {
                return Err(syntax_error(i, "expecting a digit in the exponent"));
            }
        }
        if integer && int_digits > MAX_INT_DIGITS {
            return Err(syntax_error(
                start,
                &format!(
                    "an integer of {int_digits} digits: Python reads at most {MAX_INT_DIGITS}"
                ),
            ));
        }
        self.pos = i;
        Ok((&input[start..i], integer))
    }

    /// Reads a scalar value (at its first character). Arrays and objects are left unread.
    fn scalar<'s>(&mut self, scratch: &'s mut Vec<u8>) -> Result<Scalar<'s>>
    where
        'a: 's,
    {
        match self.peek() {
            Some(b'"') => Ok(Scalar::Text(self.string(scratch)?)),
            Some(b'[' | b'{') => Ok(Scalar::Container),
            Some(b't') => self.literal(b"true").map(|()| Scalar::Bool(true)),
            Some(b'f') => self.literal(b"false").map(|()| Scalar::Bool(false)),
            Some(b'N') => self.literal(b"NaN").map(|()| Scalar::Float(f64::NAN)),
            Some(b'I') => self
                .literal(b"Infinity")
                .map(|()| Scalar::Float(f64::INFINITY)),
            Some(b'-') if self.input.get(self.pos + 1) == Some(&b'I') => self
                .literal(b"-Infinity")
                .map(|()| Scalar::Float(f64::NEG_INFINITY)),
            Some(b'-' | b'0'..=b'9') => {
                let (text, integer) = self.number()?;
                if integer && text != b"-0" {
                    Ok(Scalar::Integer(text))
                } else {
                    Ok(Scalar::Float(parse_json_float(text)))
                }
            }
            _ => Err(self.error("expecting a value")),
        }
    }

    /// Reads one value of any kind, checking it as `json.loads` would, keeping nothing. A
    /// loop with an explicit stack, so that no nesting (up to `MAX_NESTING`) can exhaust
    /// the thread's stack.
    fn skip_value(&mut self) -> Result<()> {
        let mut stack = std::mem::take(&mut self.skip_stack);
        stack.clear();
        let result = self.skip_value_with(&mut stack);
        self.skip_stack = stack;
        result
    }

    fn skip_value_with(&mut self, stack: &mut Vec<Container>) -> Result<()> {
        loop {
            // At the start of a value.
            let mut opened_empty = false;
            match self.peek() {
                Some(b'{') => {
                    self.open()?;
                    stack.push(Container::Object);
                    match self.peek() {
                        Some(b'}') => opened_empty = true,
                        Some(b'"') => {
                            self.skip_string()?;
                            self.expect_byte(b':', "expecting ':' after a property name")?;
                            continue;
                        }
                        _ => return Err(self.error("expecting a property name in double quotes")),
                    }
                }
                Some(b'[') => {
                    self.open()?;
                    stack.push(Container::Array);
                    if self.peek() == Some(b']') {
                        opened_empty = true;
                    } else {
                        continue;
                    }
                }
                Some(b'"') => self.skip_string()?,
                Some(b'-' | b'0'..=b'9' | b't' | b'f' | b'N' | b'I') => {
                    self.scalar(&mut Vec::new())?;
                }
                Some(b'n') => self.literal(b"null")?,
                _ => return Err(self.error("expecting a value")),
            }
            if opened_empty {
                self.close();
                stack.pop();
            }
            // After a complete value: close what ends here, then go on to the next value.
            loop {
                let Some(&inside) = stack.last() else {
                    return Ok(());
                };
                match (inside, self.peek()) {
                    (Container::Object, Some(b'}')) | (Container::Array, Some(b']')) => {
                        self.close();
                        stack.pop();
                    }
                    (Container::Object, Some(b',')) => {
                        self.pos += 1;
                        if self.peek() != Some(b'"') {
                            return Err(self.error("expecting a property name in double quotes"));
                        }
                        self.skip_string()?;
                        self.expect_byte(b':', "expecting ':' after a property name")?;
                        break;
                    }
                    (Container::Array, Some(b',')) => {
                        self.pos += 1;
                        break;
                    }
                    (Container::Object, _) => {
                        return Err(self.error("expecting ',' or '}' in an object"))
                    }
                    (Container::Array, _) => {
                        return Err(self.error("expecting ',' or ']' in an array"))
                    }
                }
            }
        }
    }
}

/// Checks UTF-8 as Python decodes it with `surrogatepass`: standard UTF-8, plus the 3-byte
/// encodings of surrogates (`ED A0..BF xx`). Ok(true) when there were such surrogates,
/// Err(offset) at the first invalid byte.
fn check_utf8(bytes: &[u8]) -> std::result::Result<bool, usize> {
    if std::str::from_utf8(bytes).is_ok() {
        return Ok(false);
    }
    let continuation = |i: usize| bytes.get(i).is_some_and(|&b| (0x80..0xC0).contains(&b));
    let mut surrogates = false;
    let mut i = 0;
    while i < bytes.len() {
        let lead = bytes[i];
        let (second, length): (std::ops::RangeInclusive<u8>, usize) = match lead {
            0x00..=0x7F => {
                i += 1;
                continue;
            }
            0xC2..=0xDF => (0x80..=0xBF, 2),
            0xE0 => (0xA0..=0xBF, 3),
            0xE1..=0xEF => (0x80..=0xBF, 3),
            0xF0 => (0x90..=0xBF, 4),
            0xF1..=0xF3 => (0x80..=0xBF, 4),
            0xF4 => (0x80..=0x8F, 4),
            _ => return Err(i),
        };
        if !bytes.get(i + 1).is_some_and(|b| second.contains(b)) {
            return Err(i);
        }
        if (2..length).any(|k| !continuation(i + k)) {
            return Err(i);
        }
        if lead == 0xED && bytes[i + 1] >= 0xA0 {
            surrogates = true;
        }
        i += length;
    }
    Ok(surrogates)
}

/// Appends a code point in UTF-8; a surrogate gets the 3-byte form Python's `surrogatepass`
/// would read back.
fn push_code_point(sink: &mut Vec<u8>, code_point: u32) {
    match char::from_u32(code_point) {
        Some(c) => sink.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        None => sink.extend_from_slice(&[
            0xE0 | (code_point >> 12) as u8,
            0x80 | ((code_point >> 6) & 0x3F) as u8,
            0x80 | (code_point & 0x3F) as u8,
        ]),
    }
}

/// A JSON number literal as Python's `float()` reads it: correctly rounded, as Rust's parser
/// is; JSON's number grammar is a subset of Rust's.
fn parse_json_float(text: &[u8]) -> f64 {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(f64::NAN) // unreachable: the tokenizer checked the grammar
}

// --- the output ---------------------------------------------------------------------------

/// The protobuf being written, never longer (nor with more capacity) than `max`.
struct Writer {
    buf: Vec<u8>,
    max: usize,
}

/// The position of an open length-delimited field's content, just after its one-byte length
/// placeholder.
#[must_use]
struct Open(usize);

impl Writer {
    fn new(expected: usize, max: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(expected.min(max)),
            max,
        }
    }

    fn make_room(&mut self, more: usize) -> Result<()> {
        let needed = self.buf.len().saturating_add(more);
        if needed > self.max {
            return Err(JsonError::TooLarge(format!(
                "the request is more than {} bytes once converted to protobuf",
                self.max
            )));
        }
        if needed > self.buf.capacity() {
            let target = needed
                .max(self.buf.capacity().saturating_mul(2))
                .min(self.max);
            self.buf.reserve_exact(target - self.buf.len());
        }
        Ok(())
    }

    fn put_varint(&mut self, value: u64) {
        crate::wire::put_varint(&mut self.buf, value);
    }

    fn tag(number: u32, wire_type: u8) -> u64 {
        (u64::from(number) << 3) | u64::from(wire_type)
    }

    fn varint_field(&mut self, number: u32, value: u64) -> Result<()> {
        let tag = Self::tag(number, VARINT);
        self.make_room(varint_len(tag) + varint_len(value))?;
        self.put_varint(tag);
        self.put_varint(value);
        Ok(())
    }

    fn fixed32_field(&mut self, number: u32, value: u32) -> Result<()> {
        let tag = Self::tag(number, I32);
        self.make_room(varint_len(tag) + 4)?;
        self.put_varint(tag);
        self.buf.extend_from_slice(&value.to_le_bytes());
        Ok(())
    }

    fn fixed64_field(&mut self, number: u32, value: u64) -> Result<()> {
        let tag = Self::tag(number, I64);
        self.make_room(varint_len(tag) + 8)?;
        self.put_varint(tag);
        self.buf.extend_from_slice(&value.to_le_bytes());
        Ok(())
    }

    fn bytes_field(&mut self, number: u32, payload: &[u8]) -> Result<()> {
        let tag = Self::tag(number, LEN);
        let length = payload.len() as u64;
        self.make_room(varint_len(tag) + varint_len(length) + payload.len())?;
        self.put_varint(tag);
        self.put_varint(length);
        self.buf.extend_from_slice(payload);
        Ok(())
    }

    /// Starts a nested message: its tag and a one-byte length, fixed by `close`.
    fn open(&mut self, number: u32) -> Result<Open> {
        let tag = Self::tag(number, LEN);
        self.make_room(varint_len(tag) + 1)?;
        self.put_varint(tag);
        self.buf.push(0);
        Ok(Open(self.buf.len()))
    }

    /// Ends a nested message: writes its length, moving its content right when the length
    /// takes more than the one byte kept for it.
    fn close(&mut self, open: Open) -> Result<()> {
        let start = open.0;
        let length = self.buf.len() - start;
        let length_bytes = varint_len(length as u64);
        if length_bytes > 1 {
            let end = self.buf.len();
            self.make_room(length_bytes - 1)?;
            self.buf.resize(end + length_bytes - 1, 0);
            self.buf.copy_within(start..end, start + length_bytes - 1);
        }
        let mut at = start - 1;
        let mut rest = length as u64;
        while rest >= 0x80 {
            self.buf[at] = (rest as u8) | 0x80;
            rest >>= 7;
            at += 1;
        }
        self.buf[at] = rest as u8;
        Ok(())
    }
}

// --- the converter ------------------------------------------------------------------------

struct Converter<'a> {
    lex: Lexer<'a>,
    out: Writer,
    /// Decoded strings with escapes (reused).
    scratch: Vec<u8>,
    /// Decoded base64 and hex (reused).
    decoded: Vec<u8>,
    path: Vec<PathPart>,
    spans: usize,
    max_spans: usize,
}

impl Converter<'_> {
    fn invalid(&self, offset: usize, why: &str) -> JsonError {
        invalid_at(&self.path, offset, why)
    }

    fn request(&mut self) -> Result<()> {
        let what = match self.lex.peek() {
            Some(b'{') => None,
            None => Some("body is empty"),
            Some(b'[') => Some("got an array"),
            Some(b'"') => Some("got a string"),
            Some(b'n') => Some("got null"),
            Some(b't' | b'f') => Some("got a boolean"),
            Some(_) => Some("got a number or something that is not JSON"),
        };
        if let Some(what) = what {
            return Err(JsonError::Invalid(format!(
                "body must be a JSON object (an ExportTraceServiceRequest), {what}"
            )));
        }
        self.object(M::Request, 1)?;
        if !self.lex.at_end() {
            return Err(self.lex.error("extra data after the request"));
        }
        Ok(())
    }

    /// A message at a value position that is not null (the caller saw to that), written
    /// into the open field the caller started. `depth` counts as ParseDict does.
    fn message(&mut self, message: Message, depth: u32) -> Result<()> {
        let at = self.lex.pos;
        if depth > MAX_MESSAGE_DEPTH {
            return Err(self.invalid(
                at,
                &format!("messages nested more than {MAX_MESSAGE_DEPTH} deep"),
            ));
        }
        match self.lex.peek() {
            Some(b'{') => self.object(message, depth),
            // ParseDict walks a value where a message belongs as the message's keys: a string
            // gives its characters, an array its items; none of them names a field, so the
            // message is set and empty. What would fail is checked in `non_object_message`.
            Some(b'"' | b'[') => self.non_object_message(message),
            _ => {
                let why = format!(
                    "expected an object (a {}), got {}",
                    message.name(),
                    self.kind_at()
                );
                Err(self.invalid(at, &why))
            }
        }
    }

    /// What the value at the cursor is, for error messages.
    fn kind_at(&mut self) -> &'static str {
        match self.lex.peek() {
            Some(b'{') => "an object",
            Some(b'[') => "an array",
            Some(b'"') => "a string",
            Some(b't' | b'f') => "a boolean",
            Some(b'n') => "null",
            Some(b'-' | b'0'..=b'9' | b'N' | b'I') => "a number",
            _ => "no JSON value",
        }
    }

    /// A string or an array where a message belongs. ParseDict iterates over it as over the
    /// keys of an object: each key is looked up among the message's fields, which fails for a
    /// surrogate (upb's lookup needs UTF-8), for a non-string (TypeError), and for the name
    /// of a field (the value is then indexed by it: TypeError), or an extension-like name.
    fn non_object_message(&mut self, message: Message) -> Result<()> {
        let at = self.lex.pos;
        if self.lex.peek() == Some(b'"') {
            let text = self.lex.string(&mut self.scratch)?;
            if text.surrogates {
                return Err(self.invalid(at, "a string with an unpaired surrogate"));
            }
            return Ok(());
        }
        self.lex.open()?;
        let mut first = true;
        while self.lex.next_item(first)? {
            first = false;
            let item_at = self.lex.pos;
            if self.lex.peek() != Some(b'"') {
                let why = format!(
                    "expected an object (a {}), got an array holding {}",
                    message.name(),
                    self.kind_at()
                );
                return Err(self.invalid(item_at, &why));
            }
            let text = self.lex.string(&mut self.scratch)?;
            let bad = text.surrogates
                || message.field_index(text.bytes).is_some()
                || is_extension_name(text.bytes);
            if bad {
                let why = format!(
                    "expected an object (a {}), got an array holding {}",
                    message.name(),
                    quote(text.bytes)
                );
                return Err(self.invalid(item_at, &why));
            }
        }
        Ok(())
    }

    /// A message's object (at its `{`).
    fn object(&mut self, message: Message, depth: u32) -> Result<()> {
        if message == M::Span {
            self.spans += 1;
            if self.spans > self.max_spans {
                return Err(JsonError::TooLarge(format!(
                    "the request holds more than {} spans",
                    self.max_spans
                )));
            }
        }
        let fields = message.fields();
        self.lex.open()?;
        let mut seen: u32 = 0;
        let mut oneof_taken = false;
        let mut first = true;
        loop {
            let key_at = self.lex.pos;
            let Some(key) = self.lex.next_key(first, &mut self.scratch)? else {
                return Ok(());
            };
            first = false;
            if key.surrogates {
                return Err(self.invalid(key_at, "a key holds an unpaired surrogate"));
            }
            let Some(index) = message.field_index(key.bytes) else {
                if is_extension_name(key.bytes) {
                    let why = format!(
                        "{} has no extensions, got key {}",
                        message.name(),
                        quote(key.bytes)
                    );
                    return Err(self.invalid(key_at, &why));
                }
                // Unknown fields are ignored, as the OTLP specification asks of receivers.
                self.lex.skip_value()?;
                continue;
            };
            let field = &fields[index];
            if seen & (1 << index) != 0 {
                let why = format!(
                    "{} is given twice in one {} (refused: which one counts depends on the \
                     order and the spelling)",
                    field.json_name,
                    message.name()
                );
                return Err(self.invalid(key_at, &why));
            }
            seen |= 1 << index;
            self.field_value(field, depth, &mut oneof_taken)?;
        }
    }

    fn field_value(
        &mut self,
        field: &'static Field,
        depth: u32,
        oneof_taken: &mut bool,
    ) -> Result<()> {
        let at = self.lex.pos;
        if self.lex.peek() == Some(b'n') {
            // null: the field keeps its default (ParseDict clears it), and does not count as
            // the oneof's member.
            return self.lex.literal(b"null");
        }
        self.path.push(PathPart {
            name: field.json_name,
            index: None,
        });
        if field.in_oneof {
            if *oneof_taken {
                return Err(self.invalid(at, "an AnyValue may hold only one value"));
            }
            *oneof_taken = true;
        }
        if field.repeated {
            self.repeated(field, depth)?;
        } else if let Type::Message(message) = field.ty {
            let open = self.out.open(field.number)?;
            self.message(message, depth + 1)?;
            self.out.close(open)?;
        } else {
            self.scalar(field, field.in_oneof)?;
        }
        self.path.pop();
        Ok(())
    }

    fn repeated(&mut self, field: &'static Field, depth: u32) -> Result<()> {
        let at = self.lex.pos;
        if self.lex.peek() != Some(b'[') {
            let why = format!("expected an array, got {}", self.kind_at());
            return Err(self.invalid(at, &why));
        }
        self.lex.open()?;
        let mut index = 0;
        while self.lex.next_item(index == 0)? {
            if let Some(last) = self.path.last_mut() {
                last.index = Some(index);
            }
            let item_at = self.lex.pos;
            if self.lex.peek() == Some(b'n') {
                return Err(self.invalid(item_at, "null is not allowed in an array"));
            }
            match field.ty {
                Type::Message(message) => {
                    if field.objects_only && self.lex.peek() != Some(b'{') {
                        let why = format!("expected an object, got {}", self.kind_at());
                        return Err(self.invalid(item_at, &why));
                    }
                    let open = self.out.open(field.number)?;
                    self.message(message, depth + 1)?;
                    self.out.close(open)?;
                }
                _ => self.scalar(field, true)?,
            }
            index += 1;
        }
        Ok(())
    }

    /// A scalar field's value, converted as ParseDict converts it and written (a field that
    /// is not in a oneof nor repeated is left out when it holds its default).
    fn scalar(&mut self, field: &Field, always: bool) -> Result<()> {
        let at = self.lex.pos;
        let Converter {
            lex,
            out,
            scratch,
            decoded,
            path,
            ..
        } = self;
        let value = lex.scalar(scratch)?;
        let number = field.number;
        let problem = match convert_scalar(field.ty, &value, decoded) {
            Ok(Converted::Nothing) => return Ok(()),
            Ok(Converted::Varint(v)) if always || v != 0 => return out.varint_field(number, v),
            Ok(Converted::Fixed32(v)) if always || v != 0 => return out.fixed32_field(number, v),
            Ok(Converted::Fixed64(v)) if always || v != 0 => return out.fixed64_field(number, v),
            Ok(Converted::Text) => match value {
                Scalar::Text(text) if always || !text.bytes.is_empty() => {
                    return out.bytes_field(number, text.bytes)
                }
                _ => return Ok(()),
            },
            Ok(Converted::Decoded) if always || !decoded.is_empty() => {
                return out.bytes_field(number, decoded)
            }
            Ok(_) => return Ok(()), // a default value
            Err(problem) => problem,
        };
        let why = match &value {
            Scalar::Text(text) => format!("{problem}, got {}", quote(text.bytes)),
            Scalar::Integer(digits) => format!("{problem}, got {}", quote(digits)),
            Scalar::Float(f) => format!("{problem}, got {f}"),
            Scalar::Bool(b) => format!("{problem}, got {b}"),
            Scalar::Container => format!("{problem}, got an array or an object"),
        };
        Err(invalid_at(path, at, &why))
    }
}

// --- scalar conversion, as ParseDict does it -----------------------------------------------

/// What a scalar value becomes on the wire.
enum Converted {
    /// Nothing: an enum name ParseDict does not know (it leaves the field unset).
    Nothing,
    Varint(u64),
    Fixed32(u32),
    Fixed64(u64),
    /// The value's own text (a string field).
    Text,
    /// The bytes left in `decoded` (base64 or hex).
    Decoded,
}

fn convert_scalar(
    ty: Type,
    value: &Scalar<'_>,
    decoded: &mut Vec<u8>,
) -> std::result::Result<Converted, String> {
    if let Scalar::Container = value {
        // int(), float(), the enum lookup, the surrogate check and base64 all refuse a
        // list or a dict (TypeError).
        return Err(format!("expected a {}", type_name(ty)));
    }
    match ty {
        Type::Message(_) => Err("expected an object".to_string()), // not reached: see callers
        Type::String => match value {
            Scalar::Text(text) if !text.surrogates => Ok(Converted::Text),
            Scalar::Text(_) => Err("a string with an unpaired surrogate".to_string()),
            _ => Err("expected a string".to_string()),
        },
        Type::Bytes => match value {
            // text.encode('utf-8') fails on a surrogate
            Scalar::Text(text) if !text.surrogates => {
                lenient_base64(text.bytes, decoded)?;
                Ok(Converted::Decoded)
            }
            _ => Err("expected a base64 string".to_string()),
        },
        Type::HexId(size) => match value {
            Scalar::Text(text) => {
                hex_id(text.bytes, size, decoded)?;
                Ok(Converted::Decoded)
            }
            _ => Err("expected a hex string".to_string()),
        },
        Type::Bool => match value {
            Scalar::Bool(b) => Ok(Converted::Varint(u64::from(*b))),
            _ => Err("expected true or false".to_string()),
        },
        Type::Double => Ok(Converted::Fixed64(to_double(value)?.to_bits())),
        Type::Enum(names) => Ok(match to_enum(value, names)? {
            Some(number) => Converted::Varint(number as i64 as u64),
            None => Converted::Nothing,
        }),
        Type::Int32 => {
            let v = in_range(to_integer(value)?, i32::MIN.into(), i32::MAX.into())?;
            Ok(Converted::Varint(v as i64 as u64))
        }
        Type::Int64 => {
            let v = in_range(to_integer(value)?, i64::MIN.into(), i64::MAX.into())?;
            Ok(Converted::Varint(v as i64 as u64))
        }
        Type::Uint32 => {
            let v = in_range(to_integer(value)?, 0, u32::MAX.into())?;
            Ok(Converted::Varint(v as u64))
        }
        Type::Fixed32 => {
            let v = in_range(to_integer(value)?, 0, u32::MAX.into())?;
            Ok(Converted::Fixed32(v as u32))
        }
        Type::Fixed64 => {
            let v = in_range(to_integer(value)?, 0, u64::MAX.into())?;
            Ok(Converted::Fixed64(v as u64))
        }
    }
}

fn type_name(ty: Type) -> &'static str {
    match ty {
        Type::Message(_) => "message",
        Type::String => "string",
        Type::Bytes => "base64 string",
        Type::HexId(_) => "hex string",
        Type::Bool => "boolean",
        Type::Double => "number",
        Type::Enum(_) => "enum name or number",
        Type::Int32 | Type::Int64 | Type::Uint32 | Type::Fixed32 | Type::Fixed64 => "integer",
    }
}

fn in_range(value: i128, min: i128, max: i128) -> std::result::Result<i128, String> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(format!("value out of range [{min}, {max}]"))
    }
}

const OUT_OF_RANGE: &str = "integer out of range";

/// ParseDict's `_ConvertInteger`, for every integer type: an integer literal as it is; a float
/// when it is integral; a string without U+0020 through Python's `int()`, and when that fails
/// through `float()` if the result is integral (so "1e3" is 1000). Not a boolean.
fn to_integer(value: &Scalar<'_>) -> std::result::Result<i128, String> {
    match value {
        Scalar::Integer(text) => decimal_integer(text).ok_or_else(|| OUT_OF_RANGE.to_string()),
        Scalar::Float(f) => integral(*f),
        Scalar::Bool(_) => Err("a boolean is not an integer".to_string()),
        Scalar::Text(text) => {
            if text.bytes.contains(&b' ') {
                return Err("an integer string may not hold a space".to_string());
            }
            let mut ascii = Vec::new();
            let Some(ascii) = python_number_text(*text, &mut ascii) else {
                return Err("not an integer".to_string());
            };
            match python_int(ascii) {
                Some(Some(v)) => Ok(v),
                Some(None) => Err(OUT_OF_RANGE.to_string()),
                None => match python_float(ascii) {
                    Some(f) => integral(f),
                    None => Err("not an integer".to_string()),
                },
            }
        }
        Scalar::Container => Err("expected an integer".to_string()),
    }
}

/// `int(f)` of a float that `is_integer()`.
fn integral(f: f64) -> std::result::Result<i128, String> {
    if !f.is_finite() || f.fract() != 0.0 {
        return Err("not an integer".to_string());
    }
    if f.abs() >= 2f64.powi(127) {
        return Err(OUT_OF_RANGE.to_string());
    }
    Ok(f as i128)
}

/// An integer literal's value (the tokenizer checked its digits), None beyond i128.
fn decimal_integer(text: &[u8]) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let mut value: i128 = 0;
    for &d in digits {
        value = value.checked_mul(10)?.checked_add(i128::from(d - b'0'))?;
    }
    Some(if negative { -value } else { value })
}

/// ParseDict's `_ConvertFloat` for a double: a float literal unless NaN or infinite (those are
/// written quoted); an integer literal converted (beyond a double, Python raises
/// OverflowError); a boolean is 1.0 or 0.0 (`float(True)`); a string through Python's
/// `float()`, which takes "NaN", "-Infinity", "1e400" (inf), " 1.5 ", but not exactly "nan".
fn to_double(value: &Scalar<'_>) -> std::result::Result<f64, String> {
    match value {
        Scalar::Float(f) if f.is_nan() => {
            Err("a bare NaN is not a double (quote it: \"NaN\")".to_string())
        }
        Scalar::Float(f) if f.is_infinite() => Err(
            "a bare infinity or a number too large is not a double (quote it: \"Infinity\")"
                .to_string(),
        ),
        Scalar::Float(f) => Ok(*f),
        Scalar::Integer(text) => {
            let f = parse_json_float(text);
            if f.is_infinite() {
                Err("an integer too large for a double".to_string())
            } else {
                Ok(f)
            }
        }
        Scalar::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        Scalar::Text(text) => {
            if text.bytes == b"nan" {
                return Err("use \"NaN\", not \"nan\"".to_string());
            }
            let mut ascii = Vec::new();
            python_number_text(*text, &mut ascii)
                .and_then(python_float)
                .ok_or_else(|| "not a number".to_string())
        }
        Scalar::Container => Err("expected a number".to_string()),
    }
}

/// ParseDict's enum conversion. A name is looked up (upb needs UTF-8: a surrogate fails);
/// anything else goes through Python's `int()`: a float is truncated (3.7 is 3), a boolean
/// is 0 or 1, a string is parsed, and when `int()` raises ValueError (an unknown name, NaN)
/// the field is left unset (None), because unknown fields are ignored. Numbers without a
/// name are kept: the enums are open. `int()` of an infinity raises OverflowError, which
/// escapes ParseDict: refused.
fn to_enum(value: &Scalar<'_>, names: &[(&str, i32)]) -> std::result::Result<Option<i32>, String> {
    let number: i128 = match value {
        Scalar::Text(text) => {
            if text.surrogates {
                return Err("an enum name with an unpaired surrogate".to_string());
            }
            if let Some(&(_, number)) = names.iter().find(|(name, _)| name.as_bytes() == text.bytes)
            {
                return Ok(Some(number));
            }
            let mut ascii = Vec::new();
            match python_number_text(*text, &mut ascii).and_then(python_int) {
                Some(Some(v)) => v,
                Some(None) => return Err(OUT_OF_RANGE.to_string()),
                None => return Ok(None),
            }
        }
        Scalar::Integer(text) => decimal_integer(text).ok_or_else(|| OUT_OF_RANGE.to_string())?,
        Scalar::Float(f) if f.is_nan() => return Ok(None),
        Scalar::Float(f) if f.is_infinite() => {
            return Err("an infinity is not an enum value".to_string())
        }
        Scalar::Float(f) if f.abs() >= 2f64.powi(127) => return Err(OUT_OF_RANGE.to_string()),
        Scalar::Float(f) => f.trunc() as i128,
        Scalar::Bool(b) => i128::from(*b),
        Scalar::Container => return Err("expected an enum name or number".to_string()),
    };
    let number = in_range(number, i32::MIN.into(), i32::MAX.into())?;
    Ok(Some(number as i32))
}

/// OTLP's hex ids, as json_codec checks them: "" is absent (nothing is written: empty bytes
/// are the default), else exactly `2 * size` ASCII hex digits, either case.
fn hex_id(text: &[u8], size: usize, decoded: &mut Vec<u8>) -> std::result::Result<(), String> {
    decoded.clear();
    if text.is_empty() {
        return Ok(());
    }
    let digit = |b: u8| (b as char).to_digit(16);
    if text.len() != 2 * size || !text.iter().all(|&b| digit(b).is_some()) {
        return Err(format!("expected {} hex characters", 2 * size));
    }
    for pair in text.chunks_exact(2) {
        let high = digit(pair[0]).unwrap_or(0);
        let low = digit(pair[1]).unwrap_or(0);
        decoded.push((high * 16 + low) as u8);
    }
    Ok(())
}

/// ParseDict's bytes: `base64.urlsafe_b64decode(text + '=' * (4 - len(text) % 4))`, which maps
/// `-` and `_` to `+` and `/` (so both alphabets work) and then decodes as
/// `binascii.a2b_base64` does when not strict: characters outside the alphabet are skipped,
/// `=` counts only after two data characters of a quad and ends the input once the quad is
/// complete; a quad left with one data character, or unfinished, is an error.
fn lenient_base64(text: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), String> {
    out.clear();
    let padding = 4 - text.len() % 4;
    let mut quad_position = 0;
    let mut pads = 0;
    let mut left: u32 = 0;
    for &c in text.iter().chain(std::iter::repeat_n(&b'=', padding)) {
        if c == b'=' {
            if quad_position >= 2 {
                pads += 1;
                if quad_position + pads >= 4 {
                    return Ok(());
                }
            }
            continue;
        }
        let Some(sextet) = base64_value(c) else {
            continue;
        };
        pads = 0;
        match quad_position {
            0 => {
                left = sextet;
                quad_position = 1;
            }
            1 => {
                out.push(((left << 2) | (sextet >> 4)) as u8);
                left = sextet & 0x0f;
                quad_position = 2;
            }
            2 => {
                out.push(((left << 4) | (sextet >> 2)) as u8);
                left = sextet & 0x03;
                quad_position = 3;
            }
            _ => {
                out.push(((left << 6) | sextet) as u8);
                quad_position = 0;
            }
        }
    }
    match quad_position {
        0 => Ok(()),
        1 => Err("invalid base64: one character more than a multiple of 4".to_string()),
        _ => Err("invalid base64: incorrect padding".to_string()),
    }
}

fn base64_value(c: u8) -> Option<u32> {
    let value = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' | b'-' => 62,
        b'/' | b'_' => 63,
        _ => return None,
    };
    Some(u32::from(value))
}

// --- Python's int() and float() of a string -------------------------------------------------

/// Python's whitespace for `int()` and `float()` once the text is ASCII (`Py_ISSPACE`).
fn is_python_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The text `int()` and `float()` parse, as `_PyUnicode_TransformDecimalAndSpaceToASCII`
/// makes it: ASCII stays, other whitespace becomes a space, other decimal digits (Unicode
/// category Nd) become ASCII digits; any other character makes the parse fail (None), as do
/// surrogates.
fn python_number_text<'t>(text: Text<'t>, buf: &'t mut Vec<u8>) -> Option<&'t [u8]> {
    if text.surrogates {
        return None;
    }
    if text.bytes.is_ascii() {
        return Some(text.bytes);
    }
    let text = std::str::from_utf8(text.bytes).ok()?;
    buf.clear();
    for c in text.chars() {
        let code = u32::from(c);
        if code < 127 {
            buf.push(code as u8);
        } else if UNICODE_SPACES.contains(&code) {
            buf.push(b' ');
        } else {
            let digit = unicode_decimal(code)?;
            buf.push(b'0' + digit);
        }
    }
    Some(buf.as_slice())
}

/// Python's `int(text)` in base 10 (`PyLong_FromString`): whitespace around, a sign, digits
/// with single underscores between them, at most 4300 digits. None when it raises
/// ValueError; Some(None) for a valid integer beyond i128 (out of range for every field).
fn python_int(text: &[u8]) -> Option<Option<i128>> {
    let mut i = 0;
    while i < text.len() && is_python_space(text[i]) {
        i += 1;
    }
    let negative = match text.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut digits = 0;
    let mut value: Option<i128> = Some(0);
    let mut previous_underscore = false;
    if text.get(i) == Some(&b'_') {
        return None;
    }
    while let Some(&c) = text.get(i) {
        if c == b'_' {
            if previous_underscore {
                return None;
            }
            previous_underscore = true;
        } else if c.is_ascii_digit() {
            previous_underscore = false;
            digits += 1;
            value = value
                .and_then(|v| v.checked_mul(10))
                .and_then(|v| v.checked_add(i128::from(c - b'0')));
        } else {
            break;
        }
        i += 1;
    }
    if previous_underscore || digits == 0 || digits > MAX_INT_DIGITS {
        return None;
    }
    while i < text.len() && is_python_space(text[i]) {
        i += 1;
    }
    if i != text.len() {
        return None;
    }
    Some(value.map(|v| if negative { -v } else { v }))
}

/// Python's `float(text)` (`PyFloat_FromString`): underscores only between digits, then
/// whitespace around, then a decimal number with an optional exponent, or "inf",
/// "infinity", "nan" in any case, each with a sign (a "-nan" has its sign bit set).
fn python_float(text: &[u8]) -> Option<f64> {
    let mut plain = Vec::new();
    let text = if text.contains(&b'_') {
        let mut previous = 0u8;
        for &c in text {
            if c == b'_' {
                if !previous.is_ascii_digit() {
                    return None;
                }
            } else {
                if previous == b'_' && !c.is_ascii_digit() {
                    return None;
                }
                plain.push(c);
            }
            previous = c;
        }
        if previous == b'_' {
            return None;
        }
        plain.as_slice()
    } else {
        text
    };
    let start = text.iter().position(|&b| !is_python_space(b))?;
    let end = text.iter().rposition(|&b| !is_python_space(b))? + 1;
    let text = &text[start..end];
    let (negative, unsigned) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let sign = if negative { -1.0 } else { 1.0 };
    if unsigned.eq_ignore_ascii_case(b"inf") || unsigned.eq_ignore_ascii_case(b"infinity") {
        return Some(sign * f64::INFINITY);
    }
    if unsigned.eq_ignore_ascii_case(b"nan") {
        return Some(if negative { -f64::NAN } else { f64::NAN });
    }
    // digits [. digits] [e [sign] digits], at least one digit before the exponent
    let digits = |from: usize| {
        unsigned[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let int_digits = digits(0);
    let mut i = int_digits;
    let mut frac_digits = 0;
    if unsigned.get(i) == Some(&b'.') {
        frac_digits = digits(i + 1);
        i += 1 + frac_digits;
    }
    if int_digits + frac_digits == 0 {
        return None;
    }
    let mantissa_end = i;
    if let Some(b'e' | b'E') = unsigned.get(i) {
        let mut j = i + 1;
        if let Some(b'+' | b'-') = unsigned.get(j) {
            j += 1;
        }
        let exponent_digits = digits(j);
        if exponent_digits == 0 {
            return None;
        }
        i = j + exponent_digits;
    }
    if i != unsigned.len() {
        return None;
    }
    // Rust's parser is correctly rounded, as Python's dtoa is; give it a form it surely takes.
    let mut canonical = String::with_capacity(unsigned.len() + 4);
    if negative {
        canonical.push('-');
    }
    let int_part = &unsigned[..int_digits];
    canonical.push_str(if int_part.is_empty() {
        "0"
    } else {
        std::str::from_utf8(int_part).ok()?
    });
    if frac_digits > 0 {
        canonical.push('.');
        canonical.push_str(std::str::from_utf8(&unsigned[int_digits + 1..mantissa_end]).ok()?);
    }
    if mantissa_end < unsigned.len() {
        canonical.push_str(std::str::from_utf8(&unsigned[mantissa_end..]).ok()?);
    }
    canonical.parse().ok()
}

/// Code points above ASCII that Python counts as whitespace (`str.isspace`, Unicode 14 as in
/// Python 3.11), generated with `[c for c in range(128, 0x110000) if chr(c).isspace()]`.
#[rustfmt::skip]
const UNICODE_SPACES: &[u32] = &[
    0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008,
    0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
];

/// The first code point (the zero) of each run of Unicode decimal digits (category Nd) above
/// ASCII, and the run's length, as Python 3.11 knows them (Unicode 14); each run holds whole
/// sets of ten. Generated from `chr(c).isdecimal()` over all code points above 127.
#[rustfmt::skip]
const UNICODE_DIGIT_RUNS: &[(u32, u32)] = &[
    (0x660, 10), (0x6f0, 10), (0x7c0, 10), (0x966, 10), (0x9e6, 10), (0xa66, 10), (0xae6, 10),
    (0xb66, 10), (0xbe6, 10), (0xc66, 10), (0xce6, 10), (0xd66, 10), (0xde6, 10), (0xe50, 10),
    (0xed0, 10), (0xf20, 10), (0x1040, 10), (0x1090, 10), (0x17e0, 10), (0x1810, 10), (0x1946, 10),
    (0x19d0, 10), (0x1a80, 10), (0x1a90, 10), (0x1b50, 10), (0x1bb0, 10), (0x1c40, 10),
    (0x1c50, 10), (0xa620, 10), (0xa8d0, 10), (0xa900, 10), (0xa9d0, 10), (0xa9f0, 10),
    (0xaa50, 10), (0xabf0, 10), (0xff10, 10), (0x104a0, 10), (0x10d30, 10), (0x11066, 10),
    (0x110f0, 10), (0x11136, 10), (0x111d0, 10), (0x112f0, 10), (0x11450, 10), (0x114d0, 10),
    (0x11650, 10), (0x116c0, 10), (0x11730, 10), (0x118e0, 10), (0x11950, 10), (0x11c50, 10),
    (0x11d50, 10), (0x11da0, 10), (0x16a60, 10), (0x16ac0, 10), (0x16b50, 10), (0x1d7ce, 50),
    (0x1e140, 10), (0x1e2f0, 10), (0x1e950, 10), (0x1fbf0, 10),
];

/// The decimal value of a non-ASCII Unicode digit.
fn unicode_decimal(code: u32) -> Option<u8> {
    UNICODE_DIGIT_RUNS
        .iter()
        .find(|&&(zero, length)| (zero..zero + length).contains(&code))
        .map(|&(zero, _)| ((code - zero) % 10) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UNLIMITED: JsonLimits = JsonLimits {
        max_output_bytes: usize::MAX,
        max_spans: usize::MAX,
    };

    fn convert(body: &[u8]) -> Result<Vec<u8>> {
        otlp_json_to_protobuf(body, &UNLIMITED)
    }

    /// Where a row's JSON goes.
    enum Body {
        /// The whole body.
        Whole(&'static str),
        /// The members of the one span of a request.
        Span(&'static str),
        /// The value of the one attribute (key "k") of that span.
        Value(&'static str),
    }
    use Body::{Span, Value, Whole};

    enum Expected {
        /// The protobuf of what the row's JSON stands for (the request, the span, the
        /// AnyValue), in hex, as Python's protobuf serializes what request_from_json returns.
        Ok(&'static str),
        Invalid,
    }
    use Expected::{Invalid, Ok};

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn length_delimited(number: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2];
        crate::wire::put_varint(&mut out, payload.len() as u64);
        out.extend_from_slice(payload);
        out
    }

    /// A request holding one span with these members, and its protobuf.
    fn in_a_span(members: &str, span: &[u8]) -> (String, Vec<u8>) {
        let body =
            format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{{members}}}]}}]}}]}}"#);
        let span = length_delimited(2, span);
        let scope_spans = length_delimited(2, &span);
        (body, length_delimited(1, &scope_spans))
    }

    fn attribute_value(value: &str, any_value: &[u8]) -> (String, Vec<u8>) {
        let mut key_value = length_delimited(1, b"k");
        key_value.extend(length_delimited(2, any_value));
        in_a_span(
            &format!(r#""attributes":[{{"key":"k","value":{value}}}]"#),
            &length_delimited(9, &key_value),
        )
    }

    // Each row: what request_from_json does with it. Generated once from Python (expected
    // bytes included) and checked by hand; tests/unit/otlp/test_native_json.py keeps the two
    // in step over many more inputs.
    #[rustfmt::skip]
    const ROWS: &[(&str, Body, Expected)] = &[
        ("an empty span", Span(r#""#), Ok("")),
        ("a lowercase hex trace id", Span(r#""traceId": "5b8efff798038103d269b633813fc60c""#), Ok("0a105b8efff798038103d269b633813fc60c")),
        ("an uppercase hex span id", Span(r#""spanId": "EEE19B7EC3C1B174""#), Ok("1208eee19b7ec3c1b174")),
        ("an empty id is absent", Span(r#""traceId": "", "spanId": null"#), Ok("")),
        ("an id with escaped digits", Span(r#""spanId": "\u0065ee19b7ec3c1b174""#), Ok("1208eee19b7ec3c1b174")),
        ("a trace id of 31 digits", Span(r#""traceId": "5b8efff798038103d269b633813fc60""#), Invalid),
        ("a base64 trace id", Span(r#""traceId": "W47/95gDgQPSabYzgT/GDA==""#), Invalid),
        ("a span id with a non-hex digit", Span(r#""spanId": "eee19b7ec3c1b17g""#), Invalid),
        ("a span id as a number", Span(r#""spanId": 12345"#), Invalid),
        ("snake_case names", Span(r#""trace_id": "5b8efff798038103d269b633813fc60c", "parent_span_id": "eee19b7ec3c1b173", "start_time_unix_nano": "1700000000000000000""#), Ok("0a105b8efff798038103d269b633813fc60c2208eee19b7ec3c1b1733900002a36fe9c9717")),
        ("a kind by name", Span(r#""kind": "SPAN_KIND_CLIENT""#), Ok("3003")),
        ("an unknown kind name leaves the kind unset", Span(r#""kind": "SPAN_KIND_BOGUS""#), Ok("")),
        ("a kind as a float is truncated", Span(r#""kind": 3.7"#), Ok("3003")),
        ("a kind as a boolean", Span(r#""kind": true"#), Ok("3001")),
        ("a kind without a name is kept", Span(r#""kind": 99"#), Ok("3063")),
        ("a negative kind", Span(r#""kind": -1"#), Ok("30ffffffffffffffffff01")),
        ("a kind string with whitespace", Span(r#""kind": "  3 ""#), Ok("3003")),
        ("a kind in fullwidth digits", Span(r#""kind": "\uff13""#), Ok("3003")),
        ("a kind NaN leaves the kind unset", Span(r#""kind": NaN"#), Ok("")),
        ("a kind Infinity", Span(r#""kind": Infinity"#), Invalid),
        ("a kind beyond int32", Span(r#""kind": 2147483648"#), Invalid),
        ("a kind string int() refuses is unset", Span(r#""kind": "1e3""#), Ok("")),
        ("a kind with a surrogate", Span(r#""kind": "\ud800""#), Invalid),
        ("a kind as an array", Span(r#""kind": []"#), Invalid),
        ("flags as an integral float", Span(r#""flags": 1.0"#), Ok("850101000000")),
        ("flags as an exponent string", Span(r#""flags": "1e1""#), Ok("85010a000000")),
        ("flags with an underscore", Span(r#""flags": "1_0""#), Ok("85010a000000")),
        ("flags with two underscores", Span(r#""flags": "1__0""#), Invalid),
        ("flags with a space", Span(r#""flags": " 5""#), Invalid),
        ("flags with a tab", Span(r#""flags": "\t5""#), Ok("850105000000")),
        ("flags with an ideographic space", Span(r#""flags": "\u30005""#), Ok("850105000000")),
        ("flags with a file separator", Span(r#""flags": "\u001c5""#), Invalid),
        ("flags beyond uint32", Span(r#""flags": 4294967296"#), Invalid),
        ("negative flags", Span(r#""flags": -1"#), Invalid),
        ("flags as a boolean", Span(r#""flags": true"#), Invalid),
        ("flags as a fraction", Span(r#""flags": "2.5""#), Invalid),
        ("flags as a string NaN", Span(r#""flags": "NaN""#), Invalid),
        ("the largest fixed64", Span(r#""startTimeUnixNano": 18446744073709551615"#), Ok("39ffffffffffffffff")),
        ("a fixed64 of 2**64", Span(r#""startTimeUnixNano": "18446744073709551616""#), Invalid),
        ("minus zero as an integer", Span(r#""startTimeUnixNano": -0"#), Ok("")),
        ("an exponent in an integer field", Span(r#""startTimeUnixNano": 1e19"#), Ok("390000e8890423c78a")),
        ("a fraction in an integer field", Span(r#""endTimeUnixNano": 1.5"#), Invalid),
        ("a negative string in an unsigned field", Span(r#""endTimeUnixNano": "-1""#), Invalid),
        ("a uint32 beyond its range", Span(r#""droppedAttributesCount": 4294967296"#), Invalid),
        ("a name", Span(r#""name": "invoke_agent planner""#), Ok("2a14696e766f6b655f6167656e7420706c616e6e6572")),
        ("a name as a number", Span(r#""name": 5"#), Invalid),
        ("a name with a lone surrogate", Span(r#""name": "\ud800""#), Invalid),
        ("a name with a surrogate pair", Span(r#""name": "\ud83d\ude00 \u00e9\n\"\\\/\b\f\r\t""#), Ok("2a0ff09f988020c3a90a225c2f080c0d09")),
        ("a high surrogate before another escape", Span(r#""name": "\ud83d\u0041""#), Invalid),
        ("an empty status is set", Span(r#""status": {}"#), Ok("7a00")),
        ("a null status is absent", Span(r#""status": null"#), Ok("")),
        ("a status as a string is set and empty", Span(r#""status": "text""#), Ok("7a00")),
        ("a status as an array of strings", Span(r#""status": ["x", "y"]"#), Ok("7a00")),
        ("a status as an array naming a field", Span(r#""status": ["code"]"#), Invalid),
        ("a status as an array naming an extension", Span(r#""status": ["[a.b]"]"#), Invalid),
        ("a status as an array of numbers", Span(r#""status": [1]"#), Invalid),
        ("a status as a number", Span(r#""status": 5"#), Invalid),
        ("a status code by name", Span(r#""status": {"message": "tool failed", "code": "STATUS_CODE_ERROR"}"#), Ok("7a0f120b746f6f6c206661696c65641802")),
        ("an empty link", Span(r#""links": [{}]"#), Ok("6a00")),
        ("a link as a string", Span(r#""links": ["x"]"#), Invalid),
        ("links as an object", Span(r#""links": {}"#), Invalid),
        ("an event as a string", Span(r#""events": ["x"]"#), Ok("5a00")),
        ("a null attribute", Span(r#""attributes": [null]"#), Invalid),
        ("an attribute as a string", Span(r#""attributes": ["k"]"#), Ok("4a00")),
        ("an extension-like key", Span(r#""[ext.name]": 1"#), Invalid),
        ("an extension-like key with a newline", Span(r#""[ext]\n": 1"#), Invalid),
        ("an unknown field holding anything", Span(r#""future": {"a": [1, NaN, -Infinity, "\ud800", {"b": null}], "c": true}"#), Ok("")),
        ("a key with a lone surrogate", Span(r#""\ud800": 1"#), Invalid),
        // Python keeps the last value; refused on purpose (see the module notes).
        ("a field given twice", Span(r#""name": "a", "name": "b""#), Invalid),
        ("a field given in both spellings", Span(r#""traceId": "", "trace_id": """#), Invalid),
        ("an unknown key given twice", Span(r#""x": 1, "x": 2"#), Ok("")),
        ("a link with flags", Span(r#""links": [{"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708", "traceState": "k=v", "droppedAttributesCount": 2, "flags": 1}]"#), Ok("6a280a100102030405060708090a0b0c0d0e0f10120801020304050607081a036b3d7628023501000000")),
        ("a key string index", Span(r#""attributes": [{"value": {"stringValueStrindex": 0}, "keyStrindex": 5}]"#), Ok("4a06120240001805")),
        ("an event", Span(r#""events": [{"timeUnixNano": "1700000000500000000", "name": "exception", "attributes": [{"key": "exception.type", "value": {"stringValue": "ValueError"}}], "droppedAttributesCount": 1}]"#), Ok("5a36090065f753fe9c97171209657863657074696f6e1a1e0a0e657863657074696f6e2e74797065120c0a0a56616c75654572726f722001")),
        ("an empty string value is set", Value(r#"{"stringValue": ""}"#), Ok("0a00")),
        ("a false boolean value is set", Value(r#"{"boolValue": false}"#), Ok("1000")),
        ("the smallest int64", Value(r#"{"intValue": "-9223372036854775808"}"#), Ok("1880808080808080808001")),
        ("an int64 of 2**63", Value(r#"{"intValue": 9223372036854775808}"#), Invalid),
        ("a hex int64 string", Value(r#"{"intValue": "0x10"}"#), Invalid),
        ("a zero double is set", Value(r#"{"doubleValue": 0}"#), Ok("210000000000000000")),
        ("minus zero as a double", Value(r#"{"doubleValue": -0}"#), Ok("210000000000000080")),
        ("true as a double", Value(r#"{"doubleValue": true}"#), Ok("21000000000000f03f")),
        ("a quoted NaN", Value(r#"{"doubleValue": "NaN"}"#), Ok("21000000000000f87f")),
        ("a quoted minus nan", Value(r#"{"doubleValue": "-nan"}"#), Ok("21000000000000f8ff")),
        ("a lowercase quoted nan", Value(r#"{"doubleValue": "nan"}"#), Invalid),
        ("a bare NaN double", Value(r#"{"doubleValue": NaN}"#), Invalid),
        ("a bare Infinity double", Value(r#"{"doubleValue": -Infinity}"#), Invalid),
        ("a double literal too large", Value(r#"{"doubleValue": 1e400}"#), Invalid),
        ("a quoted double too large is infinite", Value(r#"{"doubleValue": "1e400"}"#), Ok("21000000000000f07f")),
        ("a quoted +Inf", Value(r#"{"doubleValue": "+Inf"}"#), Ok("21000000000000f07f")),
        ("a quoted double with underscores and spaces", Value(r#"{"doubleValue": " 1_0.5 "}"#), Ok("210000000000002540")),
        ("a quoted double with a misplaced underscore", Value(r#"{"doubleValue": "1_.5"}"#), Invalid),
        ("a double that underflows", Value(r#"{"doubleValue": 1e-400}"#), Ok("210000000000000000")),
        ("an integer too large for a double", Value(r#"{"doubleValue": 10000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000}"#), Invalid),
        ("a large integer double", Value(r#"{"doubleValue": 123456789012345678901234567890}"#), Ok("213e376cff90eef845")),
        ("base64 bytes", Value(r#"{"bytesValue": "QUJD"}"#), Ok("3a03414243")),
        ("url-safe base64 bytes", Value(r#"{"bytesValue": "-_-_"}"#), Ok("3a03fbffbf")),
        ("base64 ends at its padding", Value(r#"{"bytesValue": "QQ==QUJD"}"#), Ok("3a0141")),
        ("base64 skips what is not in its alphabet", Value(r#"{"bytesValue": "Q U\u00e9J!D"}"#), Ok("3a03414243")),
        ("base64 of one character", Value(r#"{"bytesValue": "Q"}"#), Invalid),
        ("base64 unpadded", Value(r#"{"bytesValue": "QUI"}"#), Ok("3a024142")),
        ("bytes as a number", Value(r#"{"bytesValue": 5}"#), Invalid),
        ("bytes with a surrogate", Value(r#"{"bytesValue": "\udc00"}"#), Invalid),
        ("an empty array value is set", Value(r#"{"arrayValue": {}}"#), Ok("2a00")),
        ("an array value", Value(r#"{"arrayValue": {"values": [{"intValue": 1}, {}]}}"#), Ok("2a060a0218010a00")),
        ("a key-value list", Value(r#"{"kvlistValue": {"values": [{"key": "a"}]}}"#), Ok("32050a030a0161")),
        ("two members of the oneof", Value(r#"{"stringValue": "a", "intValue": 1}"#), Invalid),
        ("a null member and a set one", Value(r#"{"stringValue": null, "intValue": 1}"#), Ok("1801")),
        ("a zero string index is set", Value(r#"{"stringValueStrindex": 0}"#), Ok("4000")),
        ("an empty value", Value(r#"{}"#), Ok("")),
        ("a value as a string", Value(r#""abc""#), Ok("")),
        ("a value as an array of strings", Value(r#"["abc", ""]"#), Ok("")),
        ("a value as an array naming a field", Value(r#"["stringValue"]"#), Invalid),
        ("a value as an array naming a field by its proto name", Value(r#"["int_value"]"#), Invalid),
        ("a value as a number", Value(r#"5"#), Invalid),
        ("a value as null is absent", Span(r#""attributes": [{"key": "k", "value": null}]"#), Ok("4a030a016b")),
        ("an empty body", Whole(r#""#), Invalid),
        ("a top-level array", Whole(r#"[]"#), Invalid),
        ("a top-level null", Whole(r#"null"#), Invalid),
        ("an empty request", Whole(r#"{}"#), Ok("")),
        ("whitespace around", Whole(r#" 	
{} 
"#), Ok("")),
        ("extra data after the request", Whole(r#"{} x"#), Invalid),
        ("two requests", Whole(r#"{}{}"#), Invalid),
        ("a null resourceSpans", Whole(r#"{"resourceSpans": null}"#), Ok("")),
        ("a null ResourceSpans", Whole(r#"{"resourceSpans": [null]}"#), Invalid),
        ("a string ResourceSpans", Whole(r#"{"resourceSpans": ["x"]}"#), Invalid),
        ("a resource as a string", Whole(r#"{"resourceSpans": [{"resource": "x"}]}"#), Ok("0a020a00")),
        ("a schema url", Whole(r#"{"resourceSpans": [{"resource": {"droppedAttributesCount": 1}, "scopeSpans": [{"scope": {"name": "n", "version": "v", "droppedAttributesCount": 2}, "schemaUrl": "s"}], "schemaUrl": "r"}]}"#), Ok("0a160a021001120d0a080a016e12017620021a01731a0172")),
        ("entity refs", Whole(r#"{"resourceSpans": [{"resource": {"entityRefs": [{"schemaUrl": "s", "type": "t", "idKeys": ["a", ""], "descriptionKeys": ["d"]}]}}]}"#), Ok("0a120a101a0e0a01731201741a01611a00220164")),
        ("a null entity ref key", Whole(r#"{"resourceSpans": [{"resource": {"entityRefs": [{"idKeys": [null]}]}}]}"#), Invalid),
        ("an entity ref key as a number", Whole(r#"{"resourceSpans": [{"resource": {"entityRefs": [{"idKeys": [1]}]}}]}"#), Invalid),
        ("a bare NaN, Infinity, -Infinity in an unknown field", Whole(r#"{"x": [NaN, Infinity, -Infinity]}"#), Ok("")),
        ("a number with a leading zero", Whole(r#"{"x": 01}"#), Invalid),
        ("a number ending in a dot", Whole(r#"{"x": 1.}"#), Invalid),
        ("a number starting with a dot", Whole(r#"{"x": .5}"#), Invalid),
        ("a lone minus", Whole(r#"{"x": -}"#), Invalid),
        ("a plus sign", Whole(r#"{"x": +1}"#), Invalid),
        ("an exponent without digits", Whole(r#"{"x": 1e}"#), Invalid),
        ("numbers JSON allows", Whole(r#"{"x": [0, -0, 0.5, -1.5e+3, 1E-2, 12345678901234567890123]}"#), Ok("")),
        ("a trailing comma in an array", Whole(r#"{"x": [1,]}"#), Invalid),
        ("a trailing comma in an object", Whole(r#"{"x": {"a": 1,}}"#), Invalid),
        ("a trailing comma in a message", Whole(r#"{"resourceSpans": [],}"#), Invalid),
        ("a missing colon", Whole(r#"{"x" 1}"#), Invalid),
        ("a key that is not a string", Whole(r#"{1: 1}"#), Invalid),
        ("single quotes", Whole(r#"{'x': 1}"#), Invalid),
        ("an invalid escape", Whole(r#"{"x": "\a"}"#), Invalid),
        ("a short unicode escape", Whole(r#"{"x": "\u12"}"#), Invalid),
        ("a raw tab in a string", Whole(r#"{"x": "a	b"}"#), Invalid),
        ("an unterminated string", Whole(r#"{"x": "abc"#), Invalid),
        ("an unterminated object", Whole(r#"{"x": 1"#), Invalid),
        ("a misspelled literal", Whole(r#"{"x": tru}"#), Invalid),
        ("a misspelled -Infinity", Whole(r#"{"x": -Inf}"#), Invalid),
        ("a lowercase nan", Whole(r#"{"x": nan}"#), Invalid),
        ("a lone surrogate in an unknown field", Whole(r#"{"x": "\ud800\u0041"}"#), Ok("")),
        ("comments", Whole(r#"{/* no */}"#), Invalid),
    ];

    #[test]
    fn rows() {
        let mut failures = Vec::new();
        for (name, body, expected) in ROWS {
            let (text, want) = match (body, expected) {
                (Whole(text), Ok(bytes)) => (text.to_string(), Some(hex(bytes))),
                (Span(members), Ok(bytes)) => {
                    let (text, want) = in_a_span(members, &hex(bytes));
                    (text, Some(want))
                }
                (Value(value), Ok(bytes)) => {
                    let (text, want) = attribute_value(value, &hex(bytes));
                    (text, Some(want))
                }
                (Whole(text), Invalid) => (text.to_string(), None),
                (Span(members), Invalid) => (in_a_span(members, b"").0, None),
                (Value(value), Invalid) => (attribute_value(value, b"").0, None),
            };
            let got = convert(text.as_bytes());
            let agrees = match (&got, &want) {
                (std::result::Result::Ok(bytes), Some(want)) => bytes == want,
                (Err(JsonError::Invalid(_)), None) => true,
                _ => false,
            };
            if !agrees {
                failures.push(format!(
                    "{name}: {text}\n    got {got:?}\n    want {want:?}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    fn nested_arrays(levels: usize, innermost: &str) -> String {
        let mut value = innermost.to_string();
        for _ in 0..levels {
            value = format!(r#"{{"arrayValue":{{"values":[{value}]}}}}"#);
        }
        attribute_value(&value, b"").0
    }

    #[test]
    fn messages_nest_100_deep_counting_the_request_as_1() {
        // request 1, ResourceSpans 2, ScopeSpans 3, Span 4, KeyValue 5, AnyValue 6, and
        // each array level an ArrayValue and an AnyValue: 47 levels put an AnyValue at 100.
        let innermost = r#"{"stringValue":"x"}"#;
        assert!(convert(nested_arrays(47, innermost).as_bytes()).is_ok());
        assert!(matches!(
            convert(nested_arrays(48, innermost).as_bytes()),
            Err(JsonError::Invalid(m)) if m.contains("nested more than 100")
        ));
        // A message at 101 is too deep even when empty, or given as a string.
        assert!(convert(nested_arrays(47, r#"{"arrayValue":{}}"#).as_bytes()).is_err());
        assert!(convert(nested_arrays(47, r#"{"arrayValue":"x"}"#).as_bytes()).is_err());
        // null at 101 is no message.
        assert!(convert(nested_arrays(47, r#"{"arrayValue":null}"#).as_bytes()).is_ok());
    }

    #[test]
    fn unknown_values_nest_up_to_512_containers() {
        let body = |levels: usize| {
            // the request's object is one level
            format!(
                r#"{{"x":{}{}}}"#,
                "[".repeat(levels - 1),
                "]".repeat(levels - 1)
            )
        };
        assert!(convert(body(MAX_NESTING).as_bytes()).is_ok());
        assert!(matches!(
            convert(body(MAX_NESTING + 1).as_bytes()),
            Err(JsonError::Invalid(m)) if m.contains("nested more than 512")
        ));
        // Far deeper input is refused at the limit, without exhausting the stack.
        let deep = format!(r#"{{"x":{}"#, r#"{"a":["#.repeat(1_000_000));
        assert!(convert(deep.as_bytes()).is_err());
    }

    #[test]
    fn integer_literals_have_python_s_4300_digit_limit() {
        let unknown = |number: String| format!(r#"{{"x":{number}}}"#);
        assert!(convert(unknown("9".repeat(4300)).as_bytes()).is_ok());
        assert!(convert(unknown(format!("-{}", "9".repeat(4300))).as_bytes()).is_ok());
        assert!(convert(unknown("9".repeat(4301)).as_bytes()).is_err());
        // a float literal has no such limit
        assert!(convert(unknown(format!("{}.0", "9".repeat(5000))).as_bytes()).is_ok());
        // a string goes through int(), which fails, then float(), which does not
        let (flags, want) = in_a_span(
            &format!(r#""flags":"{}1""#, "0".repeat(4300)),
            &hex("850101000000"),
        );
        assert_eq!(convert(flags.as_bytes()), std::result::Result::Ok(want));
    }

    #[test]
    fn raw_surrogates_pass_where_python_never_looks() {
        // UTF-8 of U+D83D U+DE00 one by one, as `surrogatepass` decodes them
        let pair = b"\xed\xa0\xbd\xed\xb8\x80";
        let with = |members: &[u8]| {
            let mut body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"#.to_vec();
            body.extend_from_slice(members);
            body.extend_from_slice(b"}]}]}]}");
            body
        };
        let unknown = [br#""x":""#.as_slice(), pair, b"\""].concat();
        assert!(convert(&with(&unknown)).is_ok());
        let name = [br#""name":""#.as_slice(), pair, b"\""].concat();
        assert!(convert(&with(&name)).is_err());
        let escaped_high_raw_low = [br#""name":"\ud83d"#.as_slice(), &pair[3..], b"\""].concat();
        assert!(convert(&with(&escaped_high_raw_low)).is_err());
        // not UTF-8 at all, even where nobody looks
        for bad in [
            &b"\xff"[..],
            b"\xc0\x80",
            b"\xed\xa0",
            b"\xf4\x90\x80\x80",
            b"\xe0\x80\x80",
        ] {
            let unknown = [br#""x":""#.as_slice(), bad, b"\""].concat();
            assert!(convert(&with(&unknown)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_utf8_byte_order_mark_is_skipped_and_utf16_refused() {
        assert_eq!(convert(b"\xef\xbb\xbf{}"), std::result::Result::Ok(vec![]));
        for wide in [
            &b"{\x00}\x00"[..],
            b"\xff\xfe{\x00}\x00",
            b"\x00{\x00}",
            b"{\x00",
        ] {
            assert!(matches!(convert(wide), Err(JsonError::Invalid(m)) if m.contains("UTF-16")));
        }
    }

    #[test]
    fn long_messages_get_longer_lengths() {
        for length in [127, 128, 16_383, 16_384, 2_097_152] {
            let name = "n".repeat(length);
            let mut span = vec![0x2a];
            crate::wire::put_varint(&mut span, length as u64);
            span.extend_from_slice(name.as_bytes());
            let (body, want) = in_a_span(&format!(r#""name":"{name}""#), &span);
            assert_eq!(
                convert(body.as_bytes()),
                std::result::Result::Ok(want),
                "{length}"
            );
        }
    }

    #[test]
    fn the_output_limit_is_exact() {
        let (body, want) = in_a_span(r#""name":"a span""#, &hex("2a0661207370616e"));
        let limits = |max_output_bytes| JsonLimits {
            max_output_bytes,
            max_spans: 10,
        };
        assert_eq!(
            otlp_json_to_protobuf(body.as_bytes(), &limits(want.len())),
            std::result::Result::Ok(want.clone())
        );
        for max in [0, 1, 5, want.len() - 1] {
            assert!(matches!(
                otlp_json_to_protobuf(body.as_bytes(), &limits(max)),
                Err(JsonError::TooLarge(_))
            ));
        }
    }

    #[test]
    fn spans_are_counted_as_they_come() {
        // n spans in a first ResourceSpans, one more in a second
        let spans = |n: usize| {
            let first = vec!["{}"; n].join(",");
            format!(
                r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{first}]}}]}},{{"scopeSpans":[{{"spans":[{{}}]}}]}}]}}"#
            )
        };
        let limits = JsonLimits {
            max_output_bytes: 1 << 20,
            max_spans: 3,
        };
        assert!(otlp_json_to_protobuf(spans(2).as_bytes(), &limits).is_ok());
        let too_many = spans(3);
        assert!(matches!(
            otlp_json_to_protobuf(too_many.as_bytes(), &limits),
            Err(JsonError::TooLarge(m)) if m.contains("more than 3 spans")
        ));
        // The fourth span stops it, before the body is read to its (broken) end.
        let broken = &too_many[..too_many.len() - 1];
        assert!(matches!(
            otlp_json_to_protobuf(broken.as_bytes(), &limits),
            Err(JsonError::TooLarge(_))
        ));
    }

    #[test]
    fn error_messages_are_short_and_say_where() {
        let body = format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{}},{{}},{{"name":"ok"}},{{"spanId":"{}"}}]}}]}}]}}"#,
            "x".repeat(100_000)
        );
        let Err(JsonError::Invalid(message)) = convert(body.as_bytes()) else {
            panic!("accepted");
        };
        assert!(message.chars().count() <= MAX_MESSAGE_CHARS, "{message}");
        assert!(
            message.contains("resourceSpans[0].scopeSpans[0].spans[3].spanId: expected 16 hex"),
            "{message}"
        );
        let long_key = format!(r#"{{"[{}]":1}}"#, "k".repeat(5000));
        let Err(error) = convert(long_key.as_bytes()) else {
            panic!("accepted");
        };
        assert!(
            error.to_string().chars().count() <= MAX_MESSAGE_CHARS,
            "{error}"
        );
    }

    #[test]
    fn python_int_and_float_of_strings() {
        assert_eq!(python_int(b" -1_000 \t"), Some(Some(-1000)));
        assert_eq!(python_int(b"007"), Some(Some(7)));
        for refused in [
            &b""[..],
            b"_1",
            b"1_",
            b"1__0",
            b"- 1",
            b"1 2",
            b"0x1",
            b"+-1",
            b"1\x00",
        ] {
            assert_eq!(python_int(refused), None, "{refused:?}");
        }
        assert_eq!(python_int(&[b'1'; 50]), Some(None)); // valid, beyond i128
        assert_eq!(python_float(b" 1_0.5e1_0 "), Some(10.5e10));
        assert_eq!(python_float(b"-iNfInItY"), Some(f64::NEG_INFINITY));
        assert_eq!(
            python_float(b"-nan").map(f64::to_bits),
            Some(0xfff8_0000_0000_0000)
        );
        assert_eq!(python_float(b".5"), Some(0.5));
        assert_eq!(python_float(b"5."), Some(5.0));
        assert_eq!(python_float(b"1e99999"), Some(f64::INFINITY));
        assert_eq!(python_float(b"0e99999999999999999999"), Some(0.0));
        for refused in [
            &b"."[..],
            b"e5",
            b"1e",
            b"1_e5",
            b"1e_5",
            b"_1",
            b"in",
            b"infinit",
            b"1.5.",
            b" ",
        ] {
            assert_eq!(python_float(refused), None, "{refused:?}");
        }
        let text = |s: &'static str| Text {
            bytes: s.as_bytes(),
            surrogates: false,
        };
        let mut buf = Vec::new();
        // Arabic-Indic and Mathematical digits, an ideographic space
        assert_eq!(
            python_number_text(text("\u{663}\u{1d7d9}\u{3000}"), &mut buf),
            Some(&b"31 "[..])
        );
        assert_eq!(python_number_text(text("\u{b2}"), &mut buf), None); // superscript two
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let limits = JsonLimits { max_output_bytes: 256, max_spans: 4 };
            match otlp_json_to_protobuf(&body, &limits) {
                std::result::Result::Ok(out) => prop_assert!(out.len() <= 256),
                Err(JsonError::Invalid(m) | JsonError::TooLarge(m)) => {
                    prop_assert!(m.chars().count() <= MAX_MESSAGE_CHARS)
                }
            }
        }

        #[test]
        fn mutated_requests_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..8),
            max_output_bytes in 0usize..2048,
            max_spans in 0usize..6,
        ) {
            let mut body = RICH.as_bytes().to_vec();
            // JSON's own bytes are likelier to make something interesting than any byte
            const JSONISH: &[u8] = b"{}[]\",:0123456789-.eE+\\u nulltruefalseNaNInfinity \xed\xa0\x80";
            for (at, op, byte) in edits {
                let i = at.index(body.len() + 1);
                let b = JSONISH[usize::from(byte) % JSONISH.len()];
                match op {
                    0 => body.insert(i, b),
                    1 if i < body.len() => { body.remove(i); }
                    2 if i < body.len() => body[i] = b,
                    _ => { let copy = body[i..].to_vec(); body.truncate(i); body.extend(copy.iter().take(16)); body.extend(copy); }
                }
            }
            let limits = JsonLimits { max_output_bytes, max_spans };
            if let std::result::Result::Ok(out) = otlp_json_to_protobuf(&body, &limits) {
                prop_assert!(out.len() <= max_output_bytes);
            }
        }
    }

    const RICH: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"agent"}}],"droppedAttributesCount":2},"scopeSpans":[{"scope":{"name":"lib","version":"1"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"eee19b7ec3c1b173","flags":1,"name":"chat","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000250000000","attributes":[{"key":"n","value":{"intValue":"42"}},{"key":"d","value":{"doubleValue":1.5}},{"key":"a","value":{"arrayValue":{"values":[{"stringValue":"e"},{"boolValue":true}]}}},{"key":"b","value":{"bytesValue":"QUJD"}},{"key":"l","value":{"kvlistValue":{"values":[{"key":"x","value":{"doubleValue":"NaN"}}]}}}],"events":[{"timeUnixNano":"1","name":"exception"}],"links":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","flags":1}],"status":{"message":"m","code":2}}],"schemaUrl":"s"}]}]}"#;

    #[test]
    fn the_rich_request_converts() {
        let out = convert(RICH.as_bytes()).unwrap();
        // the span's trace id, and the last field written (the schema URL of ScopeSpans)
        assert!(out
            .windows(16)
            .any(|w| w == hex("5b8efff798038103d269b633813fc60c")));
        assert!(out.ends_with(&hex("1a0173")));
    }
}
