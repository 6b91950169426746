//! The native core as Python drives it: requests in, sessions out.
//!
//! `ingest` walks a validated request span by span: limits, extraction, grouping, and late
//! spans that follow a decided session's verdict (kept ones come back as requests). Python
//! pops due sessions (one `SessionView` each: the features its scorer and rules read), decides
//! them, and hands each verdict back: `decide` keeps (the spans come back as requests, the
//! session is freed) or records a drop, after which the session is held or released.
//!
//! A large request is ingested in chunks (`max_spans` at a time, resumed from a `Cursor`), so
//! that the event loop answers other calls between them.
//!
//! Shadow mode (`set_shadow`) decides the same and forwards everything: a dropped session's
//! spans go out, annotated as dropped, when live mode would let go of them (`release`: after
//! its hold, so that a later turn that reopens it is still decided with it, as live), and so
//! do late spans following a drop. Each span goes out once, with its session's last verdict.
//!
//! A reload changes the span tests (`set_span_tests`) and the session settings
//! (`set_session_settings`) under the buffered sessions, which keep their spans and features.

#![forbid(unsafe_code)]

use std::sync::Arc;

use blake2::digest::{Update, VariableOutput};
use hashbrown::HashMap;

use crate::attrs::AttrValue;
use crate::buffer::{
    Added, Arrival, BlockKey, Buffer, Held, SessionId, SessionSettings, State, TraceId,
};
use crate::emit::{emit, KeptRequest, RequestLimits};
use crate::extract::{Extractor, KeyTable, Scratch};
use crate::features::{Kind, Parent, SpanFeatures, SpanId, ToolCall};
use crate::otlp::{
    self, REQUEST_RESOURCE_SPANS, RS_RESOURCE, RS_SCHEMA_URL, RS_SCOPE_SPANS, SS_SCHEMA_URL,
    SS_SCOPE, SS_SPANS,
};
use crate::span_tests::SpanTest;
use crate::verdict::{Verdict, Verdicts};
use crate::wire::{Value, WireResult};

/// Where a chunked ingest resumes: byte offsets of the current `ResourceSpans` field in the
/// request, of the current `ScopeSpans` field in its payload, and of the next span field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    rs_field: usize,
    ss_field: usize,
    span_field: usize,
    pub done: bool,
}

/// What one chunk of a request came to.
#[derive(Debug, Default)]
pub struct Ingested {
    /// Spans buffered or following a verdict (valid ids).
    pub accepted: u64,
    /// Spans rejected for invalid trace or span ids (partial success).
    pub invalid: u64,
    /// Spans whose attributes the limits cut.
    pub limited: u64,
    pub late_kept: u64,
    pub late_dropped: u64,
    /// Kept late spans, and provisional sessions that joined a kept conversation.
    pub requests: Vec<KeptRequest>,
}

/// A session as Python sees it when it is decided: plain data, copied out of the buffer.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub id: SessionId,
    pub key: Box<str>,
    pub keyed: bool,
    /// Its traces, in the order the buffer first saw them.
    pub trace_ids: Vec<TraceId>,
    /// 56 bits, deterministic per session: the trace id's low 56 bits for a session without a
    /// key (as OpenTelemetry's consistent sampling uses), a hash of the key otherwise.
    pub randomness: u64,
    pub span_count: u64,
    pub span_bytes: usize,
    pub memory: usize,
    pub error_spans: u64,
    pub error_kinds: u8,
    pub first_start_ns: u64,
    pub last_end_ns: u64,
    pub test_bits: u64,
    pub tokens: i128,
    pub tool_call_count: u64,
    pub tool_calls: Vec<ToolCall>,
    /// Start times of its first model calls, in arrival order.
    pub model_starts: Vec<u64>,
    /// The duration of each of its turns (root spans), in arrival order.
    pub turn_ns: Vec<u64>,
    /// Its typical (median) model call's duration.
    pub model_pace_ns: u64,
    /// Its typical (median) tool call's duration.
    pub tool_pace_ns: u64,
    /// `Features::tool_repeats`.
    pub tool_repeats: (u32, u32),
    pub agents: Vec<(SpanId, Arc<str>)>,
    pub parents: Vec<(SpanId, Parent)>,
    pub links: Vec<(SpanId, Box<[Parent]>)>,
    pub root_agent: Arc<str>,
    pub longest_root_ns: u64,
    pub slowest_llm_ns: u64,
    pub decided_before: bool,
    /// A peer sampler's keep of this conversation, received while it was buffered: it is
    /// kept with that verdict when no local rule keeps it.
    pub kept_elsewhere: Option<Arc<Verdict>>,
    pub awaiting_look: bool,
    pub rootless: bool,
    pub created: f64,
}

/// A session leaving the hold: its drop, and (for one decided while the rarity model was
/// cold) its view, for a second look.
pub struct HeldView {
    pub id: SessionId,
    pub verdict: Arc<Verdict>,
    pub cold: bool,
    pub looks: u32,
    pub view: Option<SessionView>,
}

/// Distinct agent and tool names shared as one `Arc<str>` each; beyond this many the table
/// starts over, so a flood of unique names costs nothing lasting.
const MAX_SHARED_NAMES: usize = 4096;
/// Bytes of a span that count as one more unit of ingest work: a large span takes longer.
const BYTES_PER_UNIT: usize = 1024;

pub struct Core {
    pub extractor: Extractor,
    pub buffer: Buffer,
    verdicts: Verdicts,
    names: HashMap<Box<str>, Arc<str>>,
    blocks: HashMap<Arc<BlockKey>, ()>,
    blocks_purge_at: usize,
    limits: RequestLimits,
    shadow: bool,
}

fn randomness_of_key(key: &str) -> u64 {
    let mut hasher = blake2::Blake2bVar::new(7).expect("7 is a valid blake2b size");
    hasher.update(key.as_bytes());
    let mut digest = [0u8; 8];
    hasher
        .finalize_variable(&mut digest[1..])
        .expect("the buffer is 7 bytes");
    u64::from_be_bytes(digest)
}

fn randomness_of_trace_id(trace_id: &TraceId) -> u64 {
    let mut low = [0u8; 8];
    low[1..].copy_from_slice(&trace_id[9..]);
    u64::from_be_bytes(low)
}

impl Core {
    pub fn new(extractor: Extractor, sessions: SessionSettings, limits: RequestLimits) -> Core {
        Core {
            extractor,
            buffer: Buffer::new(sessions),
            verdicts: Verdicts::default(),
            names: HashMap::new(),
            blocks: HashMap::new(),
            blocks_purge_at: 1024,
            limits,
            shadow: false,
        }
    }

    /// Shadow mode: every span is forwarded, annotated with its session's verdict. Verdicts
    /// given from now on are in the new mode; a verdict given before is re-annotated when its
    /// spans go out (`current`).
    pub fn set_shadow(&mut self, shadow: bool) {
        self.shadow = shadow;
    }

    pub fn shadow(&self) -> bool {
        self.shadow
    }

    /// Replaces the span tests (bit i of a session's `test_bits` is test i; `SpanTest::Vacant`
    /// keeps a free position). The bits in `reset` are cleared in every session, buffered or
    /// held: a position given to a new test must not carry what the old one found, so a new
    /// test sees the spans that arrive from now on (a buffered session's earlier spans are not
    /// read again).
    pub fn set_span_tests(&mut self, tests: Vec<SpanTest>, test_keys: KeyTable, reset: u64) {
        self.extractor = self.extractor.with_tests(tests, test_keys);
        if reset != 0 {
            self.buffer.clear_test_bits(reset);
        }
    }

    /// New completion and hold settings (`tick` cannot change: the timer wheel is built on it).
    pub fn set_session_settings(&mut self, settings: SessionSettings) -> Result<(), String> {
        let tick = self.buffer.settings().tick;
        if settings.tick != tick {
            return Err(format!(
                "tick cannot change while running ({tick}s, asked {}s)",
                settings.tick
            ));
        }
        self.buffer.set_settings(settings);
        Ok(())
    }

    /// `verdict` in the current mode: the same one, or its twin (interned) if it was given in
    /// the other mode (a late span of a session decided before a reload switched modes).
    fn current(&mut self, verdict: &Arc<Verdict>) -> Arc<Verdict> {
        if verdict.shadow == self.shadow {
            return verdict.clone();
        }
        let signals: Vec<&str> = verdict.signals.iter().map(|s| &**s).collect();
        self.verdicts.intern(
            verdict.keep,
            &verdict.rule,
            verdict.adjusted_count,
            &signals,
            self.shadow,
        )
    }

    fn shared_name(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.names.get(name) {
            return shared.clone();
        }
        if self.names.len() >= MAX_SHARED_NAMES {
            self.names.clear();
        }
        let shared: Arc<str> = Arc::from(name);
        self.names.insert(name.into(), shared.clone());
        shared
    }

    fn shared_block(&mut self, key: BlockKey) -> Arc<BlockKey> {
        if let Some((block, _)) = self.blocks.get_key_value(&key) {
            return block.clone();
        }
        if self.blocks.len() >= self.blocks_purge_at {
            self.blocks.retain(|block, _| Arc::strong_count(block) > 1);
            self.blocks_purge_at = (2 * self.blocks.len()).max(1024);
        }
        let block = Arc::new(key);
        self.blocks.insert(block.clone(), ());
        block
    }

    /// Ingests a validated request from `cursor` on, for at most `max_spans` units of work: a
    /// span (and one more for each BYTES_PER_UNIT of it), or a field beside the spans (each
    /// resource and scope block, an unknown field),
    /// since a request of millions of empty blocks holds no span and must be taken in steps
    /// too. A step always makes progress: work is counted once done.
    pub fn ingest(
        &mut self,
        body: &[u8],
        cursor: &mut Cursor,
        now: f64,
        max_spans: usize,
    ) -> WireResult<Ingested> {
        let mut out = Ingested::default();
        let mut late: Vec<Late> = Vec::new();
        let mut budget = max_spans.max(1);
        'request: while cursor.rs_field < body.len() {
            if budget == 0 {
                break;
            }
            let (number, value, range) = field_at(body, cursor.rs_field)?;
            let Value::Len(rs, rs_at) = value else {
                cursor.rs_field = range.end;
                continue;
            };
            if number != REQUEST_RESOURCE_SPANS {
                cursor.rs_field = range.end;
                budget -= 1;
                continue;
            }
            let (resource_parts, resource_url) =
                block_parts(rs, rs_at, RS_RESOURCE, RS_SCHEMA_URL)?;
            let resource_attrs = self.extractor.resource_attributes(&resource_parts)?;
            let resource: Box<[u8]> = resource_parts
                .iter()
                .flat_map(|(b, _)| b.iter().copied())
                .collect();
            while cursor.ss_field < rs.len() {
                if budget == 0 {
                    break 'request;
                }
                let (number, value, ss_range) = field_at_base(rs, rs_at, cursor.ss_field)?;
                let (RS_SCOPE_SPANS, Value::Len(ss, ss_at)) = (number, value) else {
                    cursor.ss_field = ss_range.end;
                    budget -= 1;
                    continue;
                };
                let (scope_parts, scope_url) = block_parts(ss, ss_at, SS_SCOPE, SS_SCHEMA_URL)?;
                let block = self.shared_block(BlockKey {
                    resource: resource.clone(),
                    resource_url: resource_url.into(),
                    scope: scope_parts
                        .iter()
                        .flat_map(|(b, _)| b.iter().copied())
                        .collect(),
                    scope_url: scope_url.into(),
                });
                let mut scratch = Scratch::new(&self.extractor);
                while cursor.span_field < ss.len() {
                    if budget == 0 {
                        break 'request;
                    }
                    let (number, value, span_range) = field_at_base(ss, ss_at, cursor.span_field)?;
                    cursor.span_field = span_range.end;
                    budget -= 1;
                    let (SS_SPANS, Value::Len(span, span_at)) = (number, value) else {
                        continue;
                    };
                    budget = budget.saturating_sub(span.len() / BYTES_PER_UNIT);
                    self.ingest_span(
                        span,
                        span_at,
                        &block,
                        &resource_attrs,
                        &mut scratch,
                        now,
                        &mut out,
                        &mut late,
                    )?;
                }
                cursor.ss_field = ss_range.end;
                cursor.span_field = 0;
                budget = budget.saturating_sub(1);
            }
            cursor.rs_field = range.end;
            cursor.ss_field = 0;
            budget = budget.saturating_sub(1);
        }
        cursor.done = cursor.rs_field >= body.len();
        self.buffer.trim_touched();
        self.emit_late(late, &mut out);
        self.emit_followed(&mut out);
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn ingest_span<'a>(
        &mut self,
        span: &'a [u8],
        span_at: usize,
        block: &Arc<BlockKey>,
        resource_attrs: &[Option<AttrValue<'a>>],
        scratch: &mut Scratch<'a>,
        now: f64,
        out: &mut Ingested,
        late: &mut Vec<Late>,
    ) -> WireResult<()> {
        let facts = self
            .extractor
            .extract(span, span_at, resource_attrs, scratch)?;
        if facts.limited {
            out.limited += 1;
        }
        if !facts.valid_ids() {
            out.invalid += 1;
            return Ok(());
        }
        let kind = facts.kind();
        let agent_name = (kind == Kind::Agent).then(|| self.shared_name(facts.agent_name));
        let tool_name = (kind == Kind::Tool).then(|| self.shared_name(facts.tool_name));
        let trace_id: TraceId = facts.trace_id.try_into().unwrap_or_default();
        let bytes = facts.rewritten.as_deref().unwrap_or(span);
        let arrival = Arrival {
            trace_id,
            session_key: facts.session_key.as_deref(),
            trace_state: facts.trace_state,
            block,
            bytes,
            features: SpanFeatures {
                span_id: facts.span_id.try_into().unwrap_or_default(),
                parent: Parent::of(facts.parent),
                start_ns: facts.start_ns,
                end_ns: facts.end_ns,
                error_kinds: facts.error_kinds,
                test_bits: facts.test_bits,
                tokens: facts.tokens,
                kind,
                agent_name,
                tool_name,
                args_digest: facts.args_digest,
                links: &facts.links,
            },
        };
        out.accepted += 1;
        if let Added::Follows(verdict) = self.buffer.add(&arrival, now) {
            late.push(Late {
                verdict,
                block: block.clone(),
                span: bytes.to_vec(),
                trace_id,
                trace_state: facts.trace_state.into(),
            });
        }
        Ok(())
    }

    /// Late spans follow their session's verdict: kept ones (in shadow mode, all) go out as
    /// requests, grouped by verdict and block as they arrived.
    fn emit_late(&mut self, late: Vec<Late>, out: &mut Ingested) {
        let mut groups: Vec<(Arc<Verdict>, Vec<BlockSpans>)> = Vec::new();
        let mut states: HashMap<TraceId, Box<str>> = HashMap::new();
        for mut span in late {
            if span.verdict.keep {
                out.late_kept += 1;
            } else {
                out.late_dropped += 1;
                if !self.shadow {
                    continue;
                }
            }
            span.verdict = self.current(&span.verdict);
            if !span.trace_state.is_empty() {
                states.entry(span.trace_id).or_insert(span.trace_state);
            }
            let group = match groups
                .iter_mut()
                .position(|(v, _)| Arc::ptr_eq(v, &span.verdict))
            {
                Some(i) => &mut groups[i].1,
                None => {
                    groups.push((span.verdict.clone(), Vec::new()));
                    &mut groups.last_mut().expect("just pushed").1
                }
            };
            match group.iter_mut().find(|(b, _)| Arc::ptr_eq(b, &span.block)) {
                Some((_, spans)) => spans.push(span.span),
                None => group.push((span.block, vec![span.span])),
            }
        }
        let lookup = |t: &TraceId| states.get(t).map(|s| &**s);
        for (verdict, blocks) in &groups {
            let blocks = blocks
                .iter()
                .map(|(b, spans)| (b, spans.iter().map(Vec::as_slice)));
            out.requests
                .extend(emit(blocks, verdict, &lookup, false, self.limits));
        }
    }

    /// Provisional sessions that joined a kept conversation follow its verdict.
    fn emit_followed(&mut self, out: &mut Ingested) {
        for (id, verdict) in std::mem::take(&mut self.buffer.followed) {
            let verdict = self.current(&verdict);
            if let Some(session) = self.buffer.get(id) {
                if verdict.keep {
                    out.late_kept += session.span_count();
                } else {
                    out.late_dropped += session.span_count();
                }
                if verdict.keep || self.shadow {
                    out.requests
                        .extend(self.emit_session(session, &verdict, false));
                }
            }
            self.buffer.free(id);
        }
    }

    fn emit_session(
        &self,
        session: &crate::buffer::Session,
        verdict: &Verdict,
        same_randomness: bool,
    ) -> Vec<KeptRequest> {
        let states = &session.trace_states;
        let lookup = |t: &TraceId| states.iter().find(|(id, _)| id == t).map(|(_, s)| &**s);
        emit(
            session.spans(),
            verdict,
            &lookup,
            same_randomness,
            self.limits,
        )
    }

    // -- deciding ---------------------------------------------------------------------------

    pub fn view(&self, id: SessionId) -> Option<SessionView> {
        let s = self.buffer.get(id)?;
        let f = &s.features;
        let first_trace = s.trace_ids.first().copied().unwrap_or_default();
        Some(SessionView {
            id,
            key: s.key().into(),
            keyed: s.keyed,
            trace_ids: s.trace_ids.to_vec(),
            randomness: if s.keyed {
                randomness_of_key(&s.key())
            } else {
                randomness_of_trace_id(&first_trace)
            },
            span_count: f.span_count,
            span_bytes: s.span_bytes,
            memory: s.memory(),
            error_spans: f.error_spans,
            error_kinds: f.error_kinds,
            first_start_ns: f.first_start_ns,
            last_end_ns: f.last_end_ns,
            test_bits: f.test_bits,
            tokens: f.tokens,
            tool_call_count: f.tool_call_count,
            tool_calls: f.tool_calls.to_vec(),
            model_starts: f.model_calls.iter().map(|(start, _)| *start).collect(),
            turn_ns: f.turn_ns.to_vec(),
            model_pace_ns: f.model_pace_ns(),
            tool_pace_ns: f.tool_pace_ns(),
            tool_repeats: f.tool_repeats(),
            agents: f.agents.to_vec(),
            parents: f.parents.iter().copied().collect(),
            links: f.links.iter().cloned().collect(),
            root_agent: f.root_agent.clone().unwrap_or_else(|| Arc::from("")),
            longest_root_ns: f.longest_root_ns,
            slowest_llm_ns: f.slowest_llm_ns,
            decided_before: s.decided_before,
            kept_elsewhere: self.buffer.kept_elsewhere(s).cloned(),
            awaiting_look: s.awaiting_look,
            rootless: !s.rootless.is_empty(),
            created: s.created,
        })
    }

    pub fn views(&self, ids: &[SessionId]) -> Vec<SessionView> {
        ids.iter().filter_map(|id| self.view(*id)).collect()
    }

    pub fn verdict(
        &mut self,
        keep: bool,
        rule: &str,
        adjusted_count: f64,
        signals: &[&str],
    ) -> Arc<Verdict> {
        self.verdicts
            .intern(keep, rule, adjusted_count, signals, self.shadow)
    }

    /// Records the verdict of a popped (or released) session, so that its late spans follow
    /// it. A keep sends the spans out as requests and frees the session; a drop leaves it to
    /// be held or released.
    pub fn decide(
        &mut self,
        id: SessionId,
        verdict: Arc<Verdict>,
        same_randomness: bool,
    ) -> Vec<KeptRequest> {
        let Some(session) = self.buffer.get(id) else {
            return Vec::new();
        };
        if session.state != State::Out {
            return Vec::new();
        }
        self.buffer.record(id, &verdict);
        if !verdict.keep {
            self.buffer.set_verdict(id, verdict);
            return Vec::new();
        }
        let requests = self
            .buffer
            .get(id)
            .map(|s| self.emit_session(s, &verdict, same_randomness))
            .unwrap_or_default();
        // freed, not released: a kept second look still carries its drop, which must not go
        // out as well in shadow mode
        self.buffer.free(id);
        requests
    }

    /// Holds a dropped session; false (nothing held) when holding is off or it is too big.
    pub fn hold(&mut self, id: SessionId, cold: bool, now: f64, looks: u32) -> bool {
        let Some(verdict) = self.buffer.get(id).and_then(|s| s.verdict.clone()) else {
            return false;
        };
        self.buffer.hold(id, verdict, cold, now, looks)
    }

    /// Lets go of a decided session's spans. In shadow mode a dropped session's spans go out
    /// now, annotated with its drop (as requests); live, nothing is returned.
    pub fn release(&mut self, id: SessionId) -> Vec<KeptRequest> {
        let Some(session) = self.buffer.get(id).filter(|s| s.state == State::Out) else {
            return Vec::new();
        };
        let dropped = session.verdict.clone().filter(|v| !v.keep);
        let requests = match dropped {
            Some(verdict) if self.shadow => {
                let verdict = self.current(&verdict);
                self.buffer
                    .get(id)
                    .map(|s| self.emit_session(s, &verdict, false))
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        self.buffer.free(id);
        requests
    }

    /// A peer kept the conversation `key` (`verdict`, a keep): later turns follow it, and the
    /// part held here after a drop goes out now, kept with it. Returns that part's spans as
    /// requests and their count (none when nothing was held).
    pub fn adopt_keep(&mut self, key: &str, verdict: Arc<Verdict>) -> (Vec<KeptRequest>, u64) {
        let Some(id) = self.buffer.adopt_keep(key, &verdict) else {
            return (Vec::new(), 0);
        };
        self.buffer.record(id, &verdict);
        let (requests, spans) = match self.buffer.get(id) {
            Some(session) => (
                self.emit_session(session, &verdict, false),
                session.span_count(),
            ),
            None => (Vec::new(), 0),
        };
        // freed, not released: its drop must not go out as well in shadow mode
        self.buffer.free(id);
        (requests, spans)
    }

    pub fn held_views(&self, held: Vec<Held>) -> Vec<HeldView> {
        held.into_iter()
            .map(|h| HeldView {
                view: if h.cold { self.view(h.id) } else { None },
                id: h.id,
                verdict: h.verdict,
                cold: h.cold,
                looks: h.looks,
            })
            .collect()
    }

    /// Sessions popped and not yet kept, held or released (a leak, if it grows).
    pub fn undecided(&self) -> usize {
        self.buffer.live_sessions()
            - self.buffer.session_count as usize
            - self.buffer.held_sessions()
    }
}

/// A block's spans, owned.
type BlockSpans = (Arc<BlockKey>, Vec<Vec<u8>>);

/// The occurrences of a singular message field (each payload and its offset).
type Parts<'a> = Vec<(&'a [u8], usize)>;

struct Late {
    verdict: Arc<Verdict>,
    block: Arc<BlockKey>,
    span: Vec<u8>,
    trace_id: TraceId,
    trace_state: Box<str>,
}

fn field_at(buf: &[u8], pos: usize) -> WireResult<(u32, Value<'_>, std::ops::Range<usize>)> {
    field_at_base(buf, 0, pos)
}

/// The field starting at `pos` of a message (`base`: the message's offset in the request),
/// with its range in the message.
fn field_at_base(
    buf: &[u8],
    base: usize,
    pos: usize,
) -> WireResult<(u32, Value<'_>, std::ops::Range<usize>)> {
    let rest = buf.get(pos..).unwrap_or_default();
    match otlp::fields(rest, base + pos).next() {
        Some(Ok((number, value, range))) => Ok((number, value, pos + range.start..pos + range.end)),
        Some(Err(err)) => Err(err),
        None => Err(crate::wire::WireError::new(
            base + pos,
            crate::wire::WireErrorKind::NoField,
        )),
    }
}

/// A `ResourceSpans` or `ScopeSpans` message's resource (or scope) occurrences and schema URL
/// (the last one wins).
fn block_parts(
    buf: &[u8],
    base: usize,
    message_field: u32,
    url_field: u32,
) -> WireResult<(Parts<'_>, &str)> {
    let mut parts = Vec::new();
    let mut url = "";
    for field in otlp::fields(buf, base) {
        match field? {
            (n, Value::Len(payload, at), _) if n == message_field => parts.push((payload, at)),
            (n, Value::Len(payload, _), _) if n == url_field => {
                url = std::str::from_utf8(payload).unwrap_or_default()
            }
            _ => {}
        }
    }
    Ok((parts, url))
}

#[cfg(test)]
mod tests;
