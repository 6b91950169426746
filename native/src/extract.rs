//! One span, read from the wire: the receiver limits applied to its bytes, and the facts that
//! grouping, signals and rules need, read the same way whichever convention the
//! instrumentation follows (OpenTelemetry GenAI or OpenInference).
//!
//! The span is walked once, in place; only the attributes somebody asked for are decoded
//! (session keys, the conventions' keys, keys named by rules), so the cost per span does not
//! grow with the number of attributes it carries. OpenInference's `input.value` (large on LLM
//! spans: the whole prompt) is decoded only on TOOL spans, where it holds the call's arguments.
#![forbid(unsafe_code)]

use std::borrow::Cow;

use blake2::digest::{Update, VariableOutput};
use hashbrown::HashMap;

use crate::attrs::{key_value, AttrValue, ValueParts, MAX_ARRAY_VALUES};
use crate::features::{Kind, Parent};
use crate::otlp::{
    self, ANY_ARRAY, ANY_BYTES, ANY_STRING, EVENT_NAME, KV_VALUE, LINK_SPAN_ID, LIST_VALUES,
    STATUS_CODE, STATUS_CODE_ERROR,
};
use crate::span_tests::{Picked, SpanTest};
use crate::verdict::ANNOTATION_KEYS;
use crate::wire::{put_len, put_tag, put_varint, Reader, Value, WireResult, I64, LEN, VARINT};

// Error kinds, as bits (sampler/signals/errors.py names them).
pub const ERROR_STATUS: u8 = 1;
pub const ERROR_EXCEPTION: u8 = 2;
pub const ERROR_TYPE: u8 = 4;
pub const ERROR_TOOL: u8 = 8;
pub const ERROR_LLM_REFUSAL: u8 = 16;
pub const ERROR_LLM_TRUNCATED: u8 = 32;
pub const ERROR_HTTP_5XX: u8 = 64;

const EXCEPTION_EVENT: &[u8] = b"exception";
/// Links a span keeps (the rest are removed and counted in its dropped_links_count): each is
/// remembered for the link-cycle signal until the session is decided.
pub const MAX_LINKS_PER_SPAN: usize = 1024;
/// An attribute shorter than this holds no value over the limits: no string or bytes value
/// over `max_value`, no array of more than MAX_ARRAY_VALUES values (each at least 2 bytes).
fn cut_threshold(max_value: usize) -> usize {
    max_value.min(2 * MAX_ARRAY_VALUES)
}
const OI_INPUT_VALUE: &[u8] = b"input.value"; // a TOOL span's arguments (tool.parameters is a schema)

/// The keys the conventions read; their index in the key table is their position here.
pub const CONVENTION_KEYS: [&str; 14] = [
    "gen_ai.operation.name",
    "gen_ai.agent.name",
    "gen_ai.tool.name",
    "gen_ai.tool.call.arguments", // opt-in: often absent
    "gen_ai.response.finish_reasons",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "openinference.span.kind",
    "tool.name",
    "llm.token_count.prompt",
    "llm.token_count.completion",
    "error.type",
    "http.response.status_code",
    "http.status_code",
];
const GEN_AI_OPERATION: usize = 0;
const GEN_AI_AGENT_NAME: usize = 1;
const GEN_AI_TOOL_NAME: usize = 2;
const GEN_AI_TOOL_ARGS: usize = 3;
const GEN_AI_FINISH_REASONS: usize = 4;
const GEN_AI_INPUT_TOKENS: usize = 5;
const GEN_AI_OUTPUT_TOKENS: usize = 6;
const OI_SPAN_KIND: usize = 7;
const OI_TOOL_NAME: usize = 8;
const OI_PROMPT_TOKENS: usize = 9;
const OI_COMPLETION_TOKENS: usize = 10;
const ERROR_TYPE_KEY: usize = 11;
const HTTP_STATUS_KEYS: [usize; 2] = [12, 13];
/// The annotation keys come right after the conventions' keys.
const FIRST_ANNOTATION_KEY: usize = CONVENTION_KEYS.len();

fn kind_of_gen_ai_operation(op: &str) -> Option<Kind> {
    Some(match op {
        "invoke_agent" | "create_agent" | "invoke_workflow" => Kind::Agent,
        "execute_tool" => Kind::Tool,
        "chat" | "text_completion" | "generate_content" | "embeddings" => Kind::Llm,
        _ => return None,
    })
}

fn kind_of_openinference(kind: &str) -> Kind {
    match kind {
        "AGENT" => Kind::Agent,
        "TOOL" => Kind::Tool,
        "LLM" | "EMBEDDING" => Kind::Llm,
        _ => Kind::Other,
    }
}

/// Attribute keys somebody asked for, looked up by the bytes on the wire: first by length (most
/// keys on a span have a length no wanted key has), then by comparing the few candidates.
#[derive(Debug, Clone, Default)]
pub struct KeyTable {
    by_len: Vec<Vec<(Box<[u8]>, usize)>>,
    long: HashMap<Box<[u8]>, usize>,
    count: usize,
}

const SHORT_KEY: usize = 96;

impl KeyTable {
    /// The index of `key`, adding it if new.
    pub fn add(&mut self, key: &str) -> usize {
        if let Some(index) = self.get(key.as_bytes()) {
            return index;
        }
        let index = self.count;
        self.count += 1;
        let bytes: Box<[u8]> = key.as_bytes().into();
        if bytes.len() < SHORT_KEY {
            if self.by_len.len() <= bytes.len() {
                self.by_len.resize(bytes.len() + 1, Vec::new());
            }
            self.by_len[bytes.len()].push((bytes, index));
        } else {
            self.long.insert(bytes, index);
        }
        index
    }

    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<usize> {
        if key.len() < SHORT_KEY {
            let candidates = self.by_len.get(key.len())?;
            // keys share prefixes (`gen_ai.`, `http.`) more than endings: the last byte rules
            // most candidates out before a call to memcmp
            let last = key.last();
            candidates
                .iter()
                .find(|(k, _)| k.last() == last && **k == *key)
                .map(|(_, i)| *i)
        } else {
            self.long.get(key).copied()
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// What the extractor is told by the config.
#[derive(Debug, Clone)]
pub struct ExtractorSettings {
    /// Attributes naming a span's session, in precedence order.
    pub session_keys: Vec<String>,
    /// Attributes kept per span (the rest are removed, counted in dropped_attributes_count).
    pub max_attributes_per_span: usize,
    /// Longest string or bytes attribute value kept (longer ones are cut).
    pub max_attribute_value_size: usize,
}

impl Default for ExtractorSettings {
    fn default() -> Self {
        ExtractorSettings {
            session_keys: [
                "gen_ai.conversation.id",
                "session.id",
                "langfuse.session.id",
                "traceloop.association.properties.session_id",
            ]
            .map(String::from)
            .to_vec(),
            max_attributes_per_span: 1024,
            max_attribute_value_size: 256 << 10,
        }
    }
}

pub struct Extractor {
    settings: ExtractorSettings,
    pub keys: KeyTable,
    session_keys: Vec<usize>,
    tests: Vec<SpanTest>,
    max_attributes: usize,
    max_value: usize,
}

/// What the limits remove from a span, and the counts it had of them.
struct Cuts {
    attributes: usize,
    dropped_attributes: u32,
    links: usize,
    dropped_links: u32,
}

/// The facts of one span.
#[derive(Debug, Clone, Default)]
pub struct SpanFacts<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent: &'a [u8],
    pub trace_state: &'a str,
    pub name: &'a str,
    pub start_ns: u64,
    pub end_ns: u64,
    pub session_key: Option<Cow<'a, str>>,
    /// bit i set when span test i matched
    pub test_bits: u64,
    pub error_kinds: u8,
    /// carries agent_sampler.* attributes already (they were stripped: ours replace them)
    pub annotated: bool,
    pub kind: Option<Kind>,
    pub agent_name: &'a str,
    pub tool_name: &'a str,
    /// digest of the tool call's arguments, 0 when none were recorded
    pub args_digest: u64,
    pub tokens: i128,
    /// span ids this span links to
    pub links: Vec<Parent>,
    /// attributes removed or values cut by the limits
    pub limited: bool,
    /// the span's bytes after limits and stripping, when they differ from the wire's
    pub rewritten: Option<Vec<u8>>,
}

impl SpanFacts<'_> {
    pub fn kind(&self) -> Kind {
        self.kind.unwrap_or(Kind::Other)
    }

    /// Ids as OTLP wants them: a 16-byte trace id and an 8-byte span id, neither all zero.
    pub fn valid_ids(&self) -> bool {
        self.trace_id.len() == 16
            && self.span_id.len() == 8
            && self.trace_id.iter().any(|b| *b != 0)
            && self.span_id.iter().any(|b| *b != 0)
    }
}

/// Scratch space reused from span to span: the values of the wanted attributes.
pub struct Scratch<'a> {
    attrs: Vec<Option<AttrValue<'a>>>,
    /// The slots of `attrs` the current span filled: most spans fill none or one of the
    /// dozens of wanted keys, so only these are cleared for the next span.
    filled: Vec<usize>,
}

impl<'a> Scratch<'a> {
    pub fn new(extractor: &Extractor) -> Self {
        Scratch {
            attrs: vec![None; extractor.keys.len()],
            filled: Vec::new(),
        }
    }

    fn clear(&mut self) {
        for index in self.filled.drain(..) {
            self.attrs[index] = None;
        }
    }

    fn set(&mut self, index: usize, value: AttrValue<'a>) {
        if self.attrs[index].replace(value).is_none() {
            self.filled.push(index);
        }
    }
}

impl Extractor {
    pub fn new(
        settings: &ExtractorSettings,
        tests: Vec<SpanTest>,
        test_keys: KeyTable,
    ) -> Extractor {
        let mut keys = KeyTable::default();
        for key in CONVENTION_KEYS.iter().chain(ANNOTATION_KEYS.iter()) {
            keys.add(key);
        }
        let session_keys = settings.session_keys.iter().map(|k| keys.add(k)).collect();
        // the tests' keys were numbered in their own table: renumber them in ours
        let mut remap = vec![0; test_keys.len()];
        for (len, candidates) in test_keys.by_len.iter().enumerate() {
            let _ = len;
            for (key, index) in candidates {
                remap[*index] = keys.add(std::str::from_utf8(key).unwrap_or_default());
            }
        }
        for (key, index) in &test_keys.long {
            remap[*index] = keys.add(std::str::from_utf8(key).unwrap_or_default());
        }
        let tests = tests
            .into_iter()
            .map(|test| match test {
                SpanTest::Attribute { key, scope, op } => SpanTest::Attribute {
                    key: remap[key],
                    scope,
                    op,
                },
                other => other,
            })
            .collect();
        Extractor {
            settings: settings.clone(),
            keys,
            session_keys,
            tests,
            max_attributes: settings.max_attributes_per_span,
            max_value: settings.max_attribute_value_size,
        }
    }

    /// The same extractor with other span tests (their keys numbered in `test_keys`): the key
    /// table is built again, so keys no test reads any more are no longer decoded.
    pub fn with_tests(&self, tests: Vec<SpanTest>, test_keys: KeyTable) -> Extractor {
        Extractor::new(&self.settings, tests, test_keys)
    }

    pub fn span_tests(&self) -> usize {
        self.tests.len()
    }

    /// The wanted attributes of a (merged) resource or scope: `parts` are the occurrences of
    /// its message. Limits do not apply to resources.
    pub fn resource_attributes<'a>(
        &self,
        parts: &[(&'a [u8], usize)],
    ) -> WireResult<Vec<Option<AttrValue<'a>>>> {
        let mut picked = vec![None; self.keys.len()];
        for &(buf, base) in parts {
            for field in otlp::fields(buf, base) {
                if let (otlp::RESOURCE_ATTRIBUTES, Value::Len(kv, at), _) = field? {
                    let (key, value) = key_value(kv, at)?;
                    if let Some(index) = self.keys.get(key) {
                        picked[index] = Some(value.decode()?);
                    }
                }
            }
        }
        Ok(picked)
    }

    /// Reads one validated span.
    pub fn extract<'a>(
        &self,
        span: &'a [u8],
        base: usize,
        resource: &Picked<'a>,
        scratch: &mut Scratch<'a>,
    ) -> WireResult<SpanFacts<'a>> {
        scratch.clear();
        let mut facts = SpanFacts::default();
        let mut attribute_count = 0usize;
        let mut needs_cut = false;
        let mut dropped_attributes: u32 = 0;
        let mut link_count = 0usize;
        let mut dropped_links: u32 = 0;
        let mut status_code: u64 = 0;
        let mut exception = false;
        let mut input_value: Option<ValueParts<'a>> = None;
        let mut reader = Reader::new(span, base);
        while !reader.at_end() {
            let (number, wire_type) = reader.read_tag()?;
            match (number, wire_type) {
                (otlp::SPAN_TRACE_ID, LEN) => facts.trace_id = reader.read_len(number)?.0,
                (otlp::SPAN_SPAN_ID, LEN) => facts.span_id = reader.read_len(number)?.0,
                (otlp::SPAN_PARENT_SPAN_ID, LEN) => facts.parent = reader.read_len(number)?.0,
                (otlp::SPAN_TRACE_STATE, LEN) => {
                    facts.trace_state = utf8(reader.read_len(number)?.0)
                }
                (otlp::SPAN_NAME, LEN) => facts.name = utf8(reader.read_len(number)?.0),
                (otlp::SPAN_START, I64) => facts.start_ns = reader.read_fixed64(number)?,
                (otlp::SPAN_END, I64) => facts.end_ns = reader.read_fixed64(number)?,
                (otlp::SPAN_DROPPED_ATTRIBUTES, VARINT) => {
                    dropped_attributes = reader.read_varint()? as u32
                }
                (otlp::SPAN_ATTRIBUTES, LEN) => {
                    let (kv, at) = reader.read_len(number)?;
                    attribute_count += 1;
                    if attribute_count > self.max_attributes {
                        continue; // removed by the limit
                    }
                    let (key, parts) = key_value(kv, at)?;
                    let wanted = self.keys.get(key);
                    let is_input = key == OI_INPUT_VALUE;
                    // only an attribute this large can hold a value over the limits
                    let may_cut = kv.len() > cut_threshold(self.max_value);
                    if wanted.is_none() && !may_cut {
                        if is_input && input_value.is_none() {
                            input_value = Some(parts);
                        }
                        continue;
                    }
                    let mut decoded = parts.decode()?;
                    if may_cut && over_limit(&decoded, self.max_value) {
                        needs_cut = true;
                        decoded = cut(decoded, self.max_value);
                    }
                    if is_input && input_value.is_none() {
                        input_value = Some(parts);
                    }
                    if let Some(index) = wanted {
                        scratch.set(index, decoded);
                    }
                }
                (otlp::SPAN_DROPPED_LINKS, VARINT) => dropped_links = reader.read_varint()? as u32,
                (otlp::SPAN_EVENTS, LEN) => {
                    let (event, at) = reader.read_len(number)?;
                    if !exception {
                        exception = last_len_field(event, at, EVENT_NAME)? == Some(EXCEPTION_EVENT);
                    }
                }
                (otlp::SPAN_LINKS, LEN) => {
                    let (link, at) = reader.read_len(number)?;
                    link_count += 1;
                    if link_count > MAX_LINKS_PER_SPAN {
                        continue; // removed by the limit
                    }
                    facts.links.push(Parent::of(
                        last_len_field(link, at, LINK_SPAN_ID)?.unwrap_or_default(),
                    ));
                }
                (otlp::SPAN_STATUS, LEN) => {
                    let (status, at) = reader.read_len(number)?;
                    for field in otlp::fields(status, at) {
                        if let (STATUS_CODE, Value::Varint(code), _) = field? {
                            status_code = code;
                        }
                    }
                }
                _ => reader.skip(number, wire_type, otlp::MAX_DEPTH)?,
            }
        }
        let over = attribute_count.saturating_sub(self.max_attributes);
        let over_links = link_count.saturating_sub(MAX_LINKS_PER_SPAN);

        let attrs: &Picked<'a> = &scratch.attrs;
        for (i, test) in self.tests.iter().enumerate() {
            if test.evaluate(facts.name, attrs, resource) {
                facts.test_bits |= 1 << i;
            }
        }
        let mut errors = if (status_code as i32) == STATUS_CODE_ERROR as i32 {
            ERROR_STATUS
        } else {
            0
        };
        if exception {
            errors |= ERROR_EXCEPTION;
        }
        if !scratch.filled.is_empty() {
            // most spans of a trace hold none of the attributes read here
            errors = self.read_conventions(&mut facts, attrs, input_value, errors)?;
            facts.annotated = (FIRST_ANNOTATION_KEY..FIRST_ANNOTATION_KEY + ANNOTATION_KEYS.len())
                .any(|i| attrs[i].is_some());
        }
        facts.error_kinds = errors;
        facts.session_key = self.session_key(attrs, resource);
        facts.limited = over > 0 || over_links > 0 || needs_cut;
        if facts.limited || facts.annotated {
            let cuts = Cuts {
                attributes: over,
                dropped_attributes,
                links: over_links,
                dropped_links,
            };
            facts.rewritten = Some(self.rewrite(span, base, &cuts, facts.annotated)?);
        }
        Ok(facts)
    }

    fn read_conventions<'a>(
        &self,
        facts: &mut SpanFacts<'a>,
        attrs: &Picked<'a>,
        input_value: Option<ValueParts<'a>>,
        mut errors: u8,
    ) -> WireResult<u8> {
        let get = |i: usize| attrs[i].as_ref();
        let kind = get(GEN_AI_OPERATION)
            .and_then(AttrValue::as_str)
            .and_then(kind_of_gen_ai_operation)
            .unwrap_or_else(|| {
                get(OI_SPAN_KIND)
                    .and_then(AttrValue::as_str)
                    .map_or(Kind::Other, kind_of_openinference)
            });
        facts.kind = Some(kind);
        match kind {
            Kind::Agent => {
                facts.agent_name = get(GEN_AI_AGENT_NAME)
                    .and_then(AttrValue::as_str)
                    .filter(|s| !s.is_empty())
                    .unwrap_or(facts.name);
            }
            Kind::Tool => {
                // Python's `a or b`: the first one that is truthy, else the second
                let tool = match get(GEN_AI_TOOL_NAME) {
                    Some(v) if v.truthy() => Some(v),
                    _ => get(OI_TOOL_NAME),
                };
                facts.tool_name = tool
                    .and_then(AttrValue::as_str)
                    .filter(|s| !s.is_empty())
                    .unwrap_or(facts.name);
                let mut arguments = get(GEN_AI_TOOL_ARGS)
                    .filter(|v| **v != AttrValue::None)
                    .cloned();
                if arguments.is_none() && get(OI_SPAN_KIND).is_some() {
                    if let Some(parts) = input_value {
                        arguments = Some(cut(parts.decode()?, self.max_value));
                    }
                }
                facts.args_digest = arguments.as_ref().map_or(0, args_digest);
            }
            Kind::Llm | Kind::Other => {}
        }
        if get(ERROR_TYPE_KEY).is_some_and(AttrValue::truthy) {
            errors |= ERROR_TYPE;
        }
        if errors != 0 && kind == Kind::Tool {
            errors |= ERROR_TOOL;
        }
        if let Some(reasons) = get(GEN_AI_FINISH_REASONS).filter(|v| v.truthy()) {
            let has = |wanted: &str| match reasons {
                AttrValue::Array(items) => items.iter().any(|item| item.as_str() == Some(wanted)),
                single => single.as_str() == Some(wanted),
            };
            if has("content_filter") {
                errors |= ERROR_LLM_REFUSAL;
            }
            if has("length") {
                errors |= ERROR_LLM_TRUNCATED;
            }
        }
        if HTTP_STATUS_KEYS
            .iter()
            .any(|&k| get(k).is_some_and(|v| v.number() >= 500))
        {
            errors |= ERROR_HTTP_5XX;
        }
        if kind == Kind::Llm {
            let number = |i: usize| i128::from(get(i).map_or(0, AttrValue::number));
            facts.tokens = number(GEN_AI_INPUT_TOKENS) + number(GEN_AI_OUTPUT_TOKENS);
            if facts.tokens == 0 {
                facts.tokens = number(OI_PROMPT_TOKENS) + number(OI_COMPLETION_TOKENS);
            }
        }
        Ok(errors)
    }

    /// The first configured key found on the span, then on its resource; a string or an int
    /// (as its decimal text), empty values don't count.
    fn session_key<'a>(&self, attrs: &Picked<'a>, resource: &Picked<'a>) -> Option<Cow<'a, str>> {
        for source in [attrs, resource] {
            for &index in &self.session_keys {
                match source.get(index) {
                    Some(Some(AttrValue::Str(s))) if !s.is_empty() => {
                        return Some(Cow::Borrowed(s))
                    }
                    Some(Some(AttrValue::Int(i))) => return Some(Cow::Owned(i.to_string())),
                    _ => {}
                }
            }
        }
        None
    }

    /// The span's bytes with the limits applied and our annotations stripped: attributes past
    /// `max_attributes` removed (and counted in `dropped_attributes_count`, written last: the
    /// last occurrence of a singular field wins), values over `max_value` cut.
    fn rewrite(&self, span: &[u8], base: usize, cuts: &Cuts, strip: bool) -> WireResult<Vec<u8>> {
        let mut out = Vec::with_capacity(span.len());
        let mut attribute_count = 0usize;
        let mut link_count = 0usize;
        let over = cuts.attributes;
        for field in otlp::fields(span, base) {
            let (number, value, range) = field?;
            match (number, value) {
                (otlp::SPAN_LINKS, Value::Len(..)) => {
                    link_count += 1;
                    if link_count > MAX_LINKS_PER_SPAN {
                        continue;
                    }
                }
                (otlp::SPAN_DROPPED_LINKS, Value::Varint(_)) if cuts.links > 0 => continue,
                (otlp::SPAN_ATTRIBUTES, Value::Len(kv, at)) => {
                    attribute_count += 1;
                    if attribute_count > self.max_attributes {
                        continue;
                    }
                    if strip {
                        let (key, _) = key_value(kv, at)?;
                        if ANNOTATION_KEYS.iter().any(|k| k.as_bytes() == key) {
                            continue;
                        }
                    }
                    if kv.len() > cut_threshold(self.max_value) {
                        let cut = self.cut_key_value(kv, at)?;
                        put_len(&mut out, otlp::SPAN_ATTRIBUTES, &cut);
                        continue;
                    }
                }
                (otlp::SPAN_DROPPED_ATTRIBUTES, Value::Varint(_)) if over > 0 => continue,
                _ => {}
            }
            out.extend_from_slice(&span[range]);
        }
        // counts are written last: the last occurrence of a singular field wins
        for (number, over, dropped) in [
            (otlp::SPAN_DROPPED_ATTRIBUTES, over, cuts.dropped_attributes),
            (otlp::SPAN_DROPPED_LINKS, cuts.links, cuts.dropped_links),
        ] {
            if over > 0 {
                put_tag(&mut out, number, VARINT);
                let total = u64::from(dropped)
                    .saturating_add(over as u64)
                    .min(u64::from(u32::MAX));
                put_varint(&mut out, total);
            }
        }
        Ok(out)
    }

    fn cut_key_value(&self, kv: &[u8], at: usize) -> WireResult<Vec<u8>> {
        let mut out = Vec::with_capacity(kv.len().min(2 * self.max_value));
        for field in otlp::fields(kv, at) {
            let (number, value, range) = field?;
            match (number, value) {
                (KV_VALUE, Value::Len(any, any_at)) => {
                    put_len(&mut out, KV_VALUE, &self.cut_any_value(any, any_at)?)
                }
                _ => out.extend_from_slice(&kv[range]),
            }
        }
        Ok(out)
    }

    /// An `AnyValue` with its string and bytes values cut to the limit, in arrays too (maps are
    /// left whole: no rule reads inside them, and nesting is bounded by the parser).
    fn cut_any_value(&self, any: &[u8], at: usize) -> WireResult<Vec<u8>> {
        let mut out = Vec::with_capacity(any.len().min(2 * self.max_value));
        for field in otlp::fields(any, at) {
            let (number, value, range) = field?;
            match (number, value) {
                (ANY_STRING, Value::Len(s, _)) if s.len() > self.max_value => put_len(
                    &mut out,
                    ANY_STRING,
                    utf8_prefix(utf8(s), self.max_value).as_bytes(),
                ),
                (ANY_BYTES, Value::Len(b, _)) if b.len() > self.max_value => {
                    put_len(&mut out, ANY_BYTES, &b[..self.max_value])
                }
                (ANY_ARRAY, Value::Len(array, array_at))
                    if array.len() > cut_threshold(self.max_value) =>
                {
                    let mut items = Vec::with_capacity(array.len().min(2 * self.max_value));
                    let mut values = 0usize;
                    for item in otlp::fields(array, array_at) {
                        let (item_number, item_value, item_range) = item?;
                        match (item_number, item_value) {
                            (LIST_VALUES, Value::Len(v, v_at)) => {
                                values += 1;
                                if values > MAX_ARRAY_VALUES {
                                    continue;
                                }
                                put_len(&mut items, LIST_VALUES, &self.cut_any_value(v, v_at)?)
                            }
                            _ => items.extend_from_slice(&array[item_range]),
                        }
                    }
                    put_len(&mut out, ANY_ARRAY, &items);
                }
                _ => out.extend_from_slice(&any[range]),
            }
        }
        Ok(out)
    }
}

fn utf8(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default() // validated before: cannot fail
}

/// The longest prefix of `s` within `max` bytes that ends at a character boundary.
fn utf8_prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn over_limit(value: &AttrValue<'_>, max: usize) -> bool {
    match value {
        AttrValue::Str(s) => s.len() > max,
        AttrValue::Bytes(b) => b.len() > max,
        AttrValue::Array(items) => {
            items.len() > MAX_ARRAY_VALUES || items.iter().any(|item| over_limit(item, max))
        }
        _ => false,
    }
}

fn cut(value: AttrValue<'_>, max: usize) -> AttrValue<'_> {
    match value {
        AttrValue::Str(s) => AttrValue::Str(utf8_prefix(s, max)),
        AttrValue::Bytes(b) => AttrValue::Bytes(&b[..b.len().min(max)]),
        AttrValue::Array(items) => AttrValue::Array(
            items
                .into_iter()
                .take(MAX_ARRAY_VALUES)
                .map(|item| cut(item, max))
                .collect(),
        ),
        other => other,
    }
}

/// The payload of the last occurrence of length-delimited field `number` in a message.
fn last_len_field(buf: &[u8], base: usize, number: u32) -> WireResult<Option<&[u8]>> {
    let mut found = None;
    for field in otlp::fields(buf, base) {
        if let (n, Value::Len(payload, _), _) = field? {
            if n == number {
                found = Some(payload);
            }
        }
    }
    Ok(found)
}

/// A short digest of a tool call's arguments; JSON is normalised (key order, spacing) so the
/// same call made twice digests alike. 0 when no arguments were recorded.
pub fn args_digest(arguments: &AttrValue<'_>) -> u64 {
    let text: Cow<'_, str> = match arguments {
        AttrValue::None | AttrValue::Str("") => return 0,
        AttrValue::Str(s) => Cow::Borrowed(s),
        other => Cow::Owned(format!("{other:?}")),
    };
    let normalised = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|json| serde_json::to_string(&json).ok());
    let text = normalised.as_deref().unwrap_or(&text);
    let mut hasher = blake2::Blake2bVar::new(8).expect("8 is a valid blake2b size");
    hasher.update(text.as_bytes());
    let mut digest = [0u8; 8];
    hasher
        .finalize_variable(&mut digest)
        .expect("the buffer is 8 bytes");
    u64::from_be_bytes(digest).max(1) // 0 means "no arguments"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::Expected;
    use crate::otlp::KV_KEY;
    use crate::span_tests::{AttributeOp, Scope};

    fn ld(number: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_len(&mut out, number, payload);
        out
    }

    fn attr(key: &str, any: Vec<u8>) -> Vec<u8> {
        ld(
            otlp::SPAN_ATTRIBUTES,
            &[ld(KV_KEY, key.as_bytes()), ld(KV_VALUE, &any)].concat(),
        )
    }

    fn string(value: &str) -> Vec<u8> {
        ld(ANY_STRING, value.as_bytes())
    }

    fn int(value: i64) -> Vec<u8> {
        let mut out = Vec::new();
        put_tag(&mut out, otlp::ANY_INT, VARINT);
        put_varint(&mut out, value as u64);
        out
    }

    fn span(parts: &[Vec<u8>]) -> Vec<u8> {
        let mut out = [
            ld(otlp::SPAN_TRACE_ID, &[7; 16]),
            ld(otlp::SPAN_SPAN_ID, &[1; 8]),
            ld(otlp::SPAN_NAME, b"span"),
        ]
        .concat();
        for part in parts {
            out.extend_from_slice(part);
        }
        out
    }

    fn extractor(max_attributes: usize, max_value: usize) -> Extractor {
        let settings = ExtractorSettings {
            max_attributes_per_span: max_attributes,
            max_attribute_value_size: max_value,
            ..Default::default()
        };
        let mut test_keys = KeyTable::default();
        let key = test_keys.add("gen_ai.agent.name");
        let tests = vec![SpanTest::Attribute {
            key,
            scope: Scope::Any,
            op: AttributeOp::In(vec![Expected::Str("billing".into())]),
        }];
        Extractor::new(&settings, tests, test_keys)
    }

    fn facts<'a>(extractor: &Extractor, bytes: &'a [u8]) -> SpanFacts<'a> {
        let mut scratch = Scratch::new(extractor);
        let resource = vec![None; extractor.keys.len()];
        extractor
            .extract(bytes, 0, &resource, &mut scratch)
            .unwrap()
    }

    #[test]
    fn reads_both_conventions() {
        let e = extractor(100, 1000);
        let agent = span(&[
            attr("gen_ai.operation.name", string("invoke_agent")),
            attr("gen_ai.agent.name", string("billing")),
        ]);
        let f = facts(&e, &agent);
        assert_eq!(
            (f.kind(), f.agent_name, f.test_bits),
            (Kind::Agent, "billing", 1)
        );
        let tool = span(&[
            attr("openinference.span.kind", string("TOOL")),
            attr("tool.name", string("search")),
            attr("input.value", string("{\"q\": 1}")),
        ]);
        let f = facts(&e, &tool);
        assert_eq!((f.kind(), f.tool_name), (Kind::Tool, "search"));
        let spaced = span(&[
            attr("openinference.span.kind", string("TOOL")),
            attr("input.value", string("{ \"q\":1 }")),
        ]);
        assert_eq!(f.args_digest, facts(&e, &spaced).args_digest);
        let llm = span(&[
            attr("gen_ai.operation.name", string("chat")),
            attr("gen_ai.usage.input_tokens", int(10)),
            attr("gen_ai.usage.output_tokens", string("5")),
        ]);
        assert_eq!(facts(&e, &llm).tokens, 15);
    }

    #[test]
    fn errors_by_kind() {
        let e = extractor(100, 1000);
        let mut status = Vec::new();
        put_tag(&mut status, STATUS_CODE, VARINT);
        put_varint(&mut status, 2);
        let failed_tool = span(&[
            attr("gen_ai.operation.name", string("execute_tool")),
            ld(otlp::SPAN_STATUS, &status),
        ]);
        assert_eq!(
            facts(&e, &failed_tool).error_kinds,
            ERROR_STATUS | ERROR_TOOL
        );
        let exception = span(&[ld(otlp::SPAN_EVENTS, &ld(EVENT_NAME, b"exception"))]);
        assert_eq!(facts(&e, &exception).error_kinds, ERROR_EXCEPTION);
        let http = span(&[attr("http.response.status_code", int(503))]);
        assert_eq!(facts(&e, &http).error_kinds, ERROR_HTTP_5XX);
        let refused = span(&[attr(
            "gen_ai.response.finish_reasons",
            ld(ANY_ARRAY, &ld(LIST_VALUES, &string("content_filter"))),
        )]);
        assert_eq!(facts(&e, &refused).error_kinds, ERROR_LLM_REFUSAL);
    }

    #[test]
    fn session_keys_from_the_span_then_its_resource() {
        let e = extractor(100, 1000);
        let keyed = span(&[
            attr("session.id", string("s1")),
            attr("gen_ai.conversation.id", int(42)),
        ]);
        assert_eq!(facts(&e, &keyed).session_key.as_deref(), Some("42"));
        let mut scratch = Scratch::new(&e);
        // a Resource's attributes are its field 1, not a span's 9: this resource has none
        let not_a_resource = attr("session.id", string("r"));
        let resource = e.resource_attributes(&[(&not_a_resource[..], 0)]).unwrap();
        let plain = span(&[]);
        assert_eq!(
            e.extract(&plain, 0, &resource, &mut scratch)
                .unwrap()
                .session_key,
            None
        );
        let resource_bytes = ld(
            otlp::RESOURCE_ATTRIBUTES,
            &[ld(KV_KEY, b"session.id"), ld(KV_VALUE, &string("r"))].concat(),
        );
        let resource = e.resource_attributes(&[(&resource_bytes[..], 0)]).unwrap();
        assert_eq!(
            e.extract(&plain, 0, &resource, &mut scratch)
                .unwrap()
                .session_key
                .as_deref(),
            Some("r")
        );
    }

    #[test]
    fn limits_rewrite_the_span() {
        let e = extractor(2, 4);
        let bytes = span(&[
            attr("a", string("123456")),
            attr("gen_ai.agent.name", string("billing")),
            attr("c", string("x")),
        ]);
        let f = facts(&e, &bytes);
        assert!(f.limited);
        let rewritten = f.rewritten.clone().unwrap();
        let mut values = Vec::new();
        let mut dropped = None;
        for field in otlp::fields(&rewritten, 0) {
            match field.unwrap() {
                (otlp::SPAN_ATTRIBUTES, Value::Len(kv, at), _) => {
                    let (key, value) = key_value(kv, at).unwrap();
                    values.push((
                        String::from_utf8_lossy(key).into_owned(),
                        value.decode().unwrap().as_str().map(String::from),
                    ));
                }
                (otlp::SPAN_DROPPED_ATTRIBUTES, Value::Varint(v), _) => dropped = Some(v),
                _ => {}
            }
        }
        assert_eq!(
            values,
            vec![
                ("a".into(), Some("1234".into())),
                ("gen_ai.agent.name".into(), Some("bill".into()))
            ]
        );
        assert_eq!(dropped, Some(1));
        // the test saw the value as cut
        assert_eq!(f.test_bits, 0);
    }

    #[test]
    fn annotations_are_stripped() {
        let e = extractor(100, 1000);
        let bytes = span(&[
            attr("agent_sampler.rule", string("errors")),
            attr("x", string("y")),
        ]);
        let f = facts(&e, &bytes);
        assert!(f.annotated && !f.limited);
        let rewritten = f.rewritten.unwrap();
        assert_eq!(rewritten, span(&[attr("x", string("y"))]));
    }

    /// (links, dropped_links_count) of a rewritten span.
    fn links_of(bytes: &[u8]) -> (usize, Option<u64>) {
        let mut links = 0;
        let mut dropped = None;
        for field in otlp::fields(bytes, 0) {
            match field.unwrap() {
                (otlp::SPAN_LINKS, Value::Len(..), _) => links += 1,
                (otlp::SPAN_DROPPED_LINKS, Value::Varint(v), _) => dropped = Some(v),
                _ => {}
            }
        }
        (links, dropped)
    }

    #[test]
    fn links_past_the_limit_are_removed_and_counted() {
        let e = extractor(100, 1000);
        let link = ld(otlp::SPAN_LINKS, &ld(LINK_SPAN_ID, &[9; 8]));
        let mut dropped_before = Vec::new();
        put_tag(&mut dropped_before, otlp::SPAN_DROPPED_LINKS, VARINT);
        put_varint(&mut dropped_before, 5);
        let mut parts = vec![dropped_before];
        parts.extend(std::iter::repeat_n(link.clone(), MAX_LINKS_PER_SPAN + 10));
        let bytes = span(&parts);
        let f = facts(&e, &bytes);
        assert!(f.limited);
        assert_eq!(f.links.len(), MAX_LINKS_PER_SPAN);
        assert_eq!(
            links_of(f.rewritten.as_deref().unwrap()),
            (MAX_LINKS_PER_SPAN, Some(15))
        );
        // at the limit, nothing changes
        let at_limit = span(&vec![link; MAX_LINKS_PER_SPAN]);
        let f = facts(&e, &at_limit);
        assert!(!f.limited && f.rewritten.is_none());
    }

    /// Values of the array attribute `key` in a rewritten span.
    fn array_len(bytes: &[u8], key: &[u8]) -> usize {
        for field in otlp::fields(bytes, 0) {
            if let (otlp::SPAN_ATTRIBUTES, Value::Len(kv, at), _) = field.unwrap() {
                let (k, value) = key_value(kv, at).unwrap();
                if k == key {
                    return match value.decode().unwrap() {
                        AttrValue::Array(items) => items.len(),
                        _ => 0,
                    };
                }
            }
        }
        0
    }

    #[test]
    fn arrays_keep_at_most_their_limit_of_values_read_or_not() {
        let e = extractor(100, 1 << 20);
        let values = |n: usize| ld(ANY_ARRAY, &ld(LIST_VALUES, &string("a")).repeat(n));
        let bytes = span(&[
            attr("gen_ai.agent.name", values(MAX_ARRAY_VALUES + 1)), // a test reads it
            attr("unread", values(3 * MAX_ARRAY_VALUES)),
            attr("small", values(MAX_ARRAY_VALUES)),
        ]);
        let f = facts(&e, &bytes);
        assert!(f.limited);
        let rewritten = f.rewritten.as_deref().unwrap();
        assert_eq!(array_len(rewritten, b"gen_ai.agent.name"), MAX_ARRAY_VALUES);
        assert_eq!(array_len(rewritten, b"unread"), MAX_ARRAY_VALUES);
        assert_eq!(array_len(rewritten, b"small"), MAX_ARRAY_VALUES);
        let within = span(&[attr("small", values(MAX_ARRAY_VALUES))]);
        assert!(!facts(&e, &within).limited);
    }

    #[test]
    fn cuts_at_a_character_boundary() {
        assert_eq!(utf8_prefix("héllo", 2), "h");
        assert_eq!(utf8_prefix("héllo", 3), "hé");
    }
}
