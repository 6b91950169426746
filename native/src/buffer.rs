//! The session buffer: spans wait here, grouped into sessions, until their session is complete.
//!
//! Grouping rules (why they are this way):
//! - Spans are held by trace id first. In real instrumentation the session key is often only
//!   on the agent's root span, and the root ends (so arrives) last; a trace without a known
//!   key waits in a *provisional* session of its own, and joins its keyed session as soon as
//!   any of its spans reveals the key.
//! - A trace's session never changes once keyed: a conflicting key on a later span is ignored.
//! - A session holding several traces (a multi-turn conversation) is decided once, as a whole.
//!   Late spans of a decided trace follow its decision (`DecisionCache`). A *new* trace of a
//!   decided conversation follows it if it was kept; if it was dropped, the conversation is
//!   *reopened* while its spans are still held (`Hold`): taken back into the buffer and decided
//!   again as a whole, so an error in turn five keeps turns one to four with it. Once the hold
//!   is over, new traces form a continuation session, decided on its own.
//!
//! Completion: a session is due
//! - while one of its traces has not delivered its root span (the agent is still running),
//!   after `open_trace_wait` without spans;
//! - once every trace's root arrived: a session without a key (a lone trace) `root_end_grace`
//!   later; a keyed session (a conversation) after `decision_wait` without spans;
//! - at the latest `max_session_duration` after it began, and at once at `max_session_spans`.
//!
//! Deadlines live in a `TimerWheel`, so finding due sessions never scans the buffer.
//!
//! Sessions live in a slab and are named by a `SessionId` (index and generation): a stale id
//! (a timer entry of a session decided since) finds nothing. A session leaves the buffer
//! exactly once (popped: due, oldest or all; merged into another; or followed a decision); a
//! popped or held session is Python's to resolve (keep, hold, or release).
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use hashbrown::HashMap;
use hashlink::LinkedHashMap;
use smallvec::SmallVec;

use crate::features::{Features, Kind, SpanFeatures};
use crate::verdict::Verdict;
use crate::wire::{put_varint, Reader};

pub type TraceId = [u8; 16];

/// A session's trace ids: one, almost always, kept inline (no allocation).
pub type TraceIds = SmallVec<[TraceId; 1]>;

/// A (resource, scope) block: spans are kept, and written out, grouped by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlockKey {
    /// The serialized `Resource` (its occurrences back to back), empty when absent.
    pub resource: Box<[u8]>,
    pub resource_url: Box<str>,
    pub scope: Box<[u8]>,
    pub scope_url: Box<str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl SessionId {
    pub fn as_u64(self) -> u64 {
        self.0
    }

    pub fn from_u64(raw: u64) -> SessionId {
        SessionId(raw)
    }

    fn index(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Buffering,
    /// Left the buffer to be decided: Python keeps it, holds it or releases it.
    Out,
    Held,
}

/// Timer tick meaning "no timer entry"; `DUE_NOW` means "in `due_now`, at its span cap".
const NO_TICK: i64 = i64::MAX;
const DUE_NOW: i64 = -1;

#[derive(Debug)]
pub struct Session {
    /// The session key; empty for a session without one (`key()` names it by its trace).
    keyed_key: Box<str>,
    pub keyed: bool,
    pub trace_ids: TraceIds,
    /// Traces whose root span has not arrived.
    pub rootless: TraceIds,
    /// The (resource, scope) blocks of its spans, in order of first arrival; two or fewer,
    /// almost always (an agent's own spans and its HTTP or model client's), kept inline.
    pub blocks: SmallVec<[Arc<BlockKey>; 2]>,
    /// Its serialized spans in arrival order, back to back, each after its block's index in
    /// `blocks` and its size (varints): one allocation for all its blocks, which grows less
    /// often than one per block would (each growth may move it, and a large allocation is
    /// slow to find).
    run: Vec<u8>,
    pub features: Features,
    pub span_bytes: usize,
    pub created: f64,
    pub last_seen: f64,
    pub roots_done_at: f64,
    timer_tick: i64,
    pub state: State,
    /// Non-empty upstream tracestates, by trace.
    pub trace_states: Vec<(TraceId, Box<str>)>,
    /// A conversation decided (and dropped) before: its later traces (a continuation), or the
    /// whole of it reopened; its rarity was judged, and learned, the first time.
    pub decided_before: bool,
    /// Dropped while the rarity model was cold, then reopened: its second look is still due.
    pub awaiting_look: bool,
    /// The verdict it was last given (a held session's drop).
    pub verdict: Option<Arc<Verdict>>,
    age: u64,
    /// Memory accounted to this session (`memory()` when last measured: when it was opened,
    /// merged, and at the end of each ingest step in which it took spans).
    accounted: usize,
    /// Listed in `Buffer::touched`: spans were added since the buffer last trimmed.
    touched: bool,
}

/// Memory a session holds besides its heap parts: the struct, its slab slot, map entries.
const SESSION_FIXED_BYTES: usize = std::mem::size_of::<Session>() + 64;
/// A trace id in the buffer's map and the session's lists.
const TRACE_ENTRY_BYTES: usize = 64;
/// A span run smaller than this doubles when it grows (`Session::push_span`).
const DOUBLING_BELOW: usize = 4096;
/// Slack below this is left in a span run (`Buffer::trim_touched`): not worth a reallocation.
const TRIM_MIN_SLACK: usize = 64;

impl Session {
    fn new(key: Box<str>, keyed: bool, now: f64, age: u64) -> Session {
        Session {
            keyed_key: key,
            keyed,
            trace_ids: TraceIds::new(),
            rootless: TraceIds::new(),
            blocks: SmallVec::new(),
            run: Vec::new(),
            features: Features::default(),
            span_bytes: 0,
            created: now,
            last_seen: now,
            roots_done_at: f64::INFINITY,
            timer_tick: NO_TICK,
            state: State::Buffering,
            trace_states: Vec::new(),
            decided_before: false,
            awaiting_look: false,
            verdict: None,
            age,
            accounted: 0,
            touched: false,
        }
    }

    pub fn span_count(&self) -> u64 {
        self.features.span_count
    }

    /// The session key, or the (first) trace id in hex for a session without one.
    pub fn key(&self) -> Cow<'_, str> {
        if self.keyed {
            Cow::Borrowed(&self.keyed_key)
        } else {
            Cow::Owned(hex(self.trace_ids.first().map_or(&[][..], |t| &t[..])))
        }
    }

    fn add_trace(&mut self, trace_id: TraceId) {
        self.trace_ids.push(trace_id);
        self.rootless.push(trace_id);
        self.roots_done_at = f64::INFINITY;
    }

    fn add_span(&mut self, span: &Arrival<'_>, now: f64) {
        let block = self.block_index(span.block);
        self.push_span(block, span.bytes);
        self.span_bytes += span.bytes.len();
        let turn = if span.features.kind == Kind::Tool {
            self.turn_of(&span.trace_id)
        } else {
            0
        };
        self.features.observe(&span.features, turn);
        self.last_seen = now;
        if !span.trace_state.is_empty()
            && !self.trace_states.iter().any(|(t, _)| *t == span.trace_id)
        {
            self.trace_states
                .push((span.trace_id, span.trace_state.into()));
        }
        if span.is_root() {
            if let Some(i) = self.rootless.iter().position(|t| *t == span.trace_id) {
                self.rootless.remove(i);
                if self.rootless.is_empty() {
                    self.roots_done_at = now;
                }
            }
        }
    }

    /// The index of `block` in `blocks`, added if new.
    fn block_index(&mut self, block: &Arc<BlockKey>) -> usize {
        match self.blocks.iter().position(|b| Arc::ptr_eq(b, block)) {
            Some(i) => i,
            None => {
                self.blocks.push(block.clone());
                self.blocks.len() - 1
            }
        }
    }

    fn push_span(&mut self, block: usize, bytes: &[u8]) {
        let needed = bytes.len() + 10;
        let capacity = self.run.capacity();
        if capacity - self.run.len() < needed {
            // Doubling while the run is small (most sessions: each growth may move it, and a
            // session takes several spans a step), by a quarter beyond: large transient slack,
            // though trimmed at the end of each step, leaves the heap fragmented (doubling
            // throughout: peak RSS +8% in benchmarks.throughput).
            let step = if capacity < DOUBLING_BELOW {
                capacity
            } else {
                capacity / 4
            };
            self.run.reserve_exact(needed.max(step).max(256));
        }
        put_varint(&mut self.run, block as u64);
        put_varint(&mut self.run, bytes.len() as u64);
        self.run.extend_from_slice(bytes);
    }

    /// The index of a trace among the session's (usually the newest: tried first).
    fn turn_of(&self, trace_id: &TraceId) -> u32 {
        let ids = &self.trace_ids;
        let index = match ids.last() {
            Some(last) if last == trace_id => ids.len() - 1,
            _ => ids.iter().position(|t| t == trace_id).unwrap_or(0),
        };
        u32::try_from(index).unwrap_or(u32::MAX)
    }

    fn absorb(&mut self, other: Session) {
        // its spans come after ours, their blocks renumbered in our list
        let renumbered: SmallVec<[usize; 2]> =
            other.blocks.iter().map(|b| self.block_index(b)).collect();
        self.run.reserve(other.run.len());
        for (block, bytes) in other.run_spans() {
            self.push_span(renumbered.get(block).copied().unwrap_or(0), bytes);
        }
        self.span_bytes += other.span_bytes;
        let turn_offset = u32::try_from(self.trace_ids.len()).unwrap_or(u32::MAX);
        self.features.merge(other.features, turn_offset);
        self.trace_ids.extend(other.trace_ids);
        for (trace_id, state) in other.trace_states {
            if !self.trace_states.iter().any(|(t, _)| *t == trace_id) {
                self.trace_states.push((trace_id, state));
            }
        }
        self.rootless.extend(other.rootless); // a trace is in one session: no duplicates
        self.decided_before |= other.decided_before;
        self.created = self.created.min(other.created);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.roots_done_at = if self.rootless.is_empty() {
            self.roots_done_at.max(other.roots_done_at)
        } else {
            f64::INFINITY
        };
    }

    /// Memory this session holds, as the buffer's limits count it.
    pub fn memory(&self) -> usize {
        SESSION_FIXED_BYTES
            + self.keyed_key.len()
            + self.trace_ids.len() * TRACE_ENTRY_BYTES
            + self.run.capacity()
            + 48
            + if self.blocks.spilled() {
                self.blocks.capacity() * std::mem::size_of::<Arc<BlockKey>>() + 16
            } else {
                0
            }
            + self.features.heap_bytes()
            + self
                .trace_states
                .iter()
                .map(|(_, s)| s.len() + 40)
                .sum::<usize>()
    }

    /// The session's spans, block by block (in order of first arrival), each block's in
    /// arrival order: one pass over the run.
    pub fn spans(&self) -> Vec<(&Arc<BlockKey>, Vec<&[u8]>)> {
        let mut by_block: Vec<(&Arc<BlockKey>, Vec<&[u8]>)> =
            self.blocks.iter().map(|b| (b, Vec::new())).collect();
        for (block, bytes) in self.run_spans() {
            if let Some((_, spans)) = by_block.get_mut(block) {
                spans.push(bytes);
            }
        }
        by_block
    }

    /// The spans in arrival order, each with its block's index.
    fn run_spans(&self) -> RunSpans<'_> {
        RunSpans {
            run: &self.run,
            pos: 0,
        }
    }
}

/// A session's run, span by span: (block index, bytes).
struct RunSpans<'a> {
    run: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for RunSpans<'a> {
    type Item = (usize, &'a [u8]);

    fn next(&mut self) -> Option<(usize, &'a [u8])> {
        let mut reader = Reader::new(self.run.get(self.pos..)?, 0);
        if reader.at_end() {
            return None;
        }
        // written by push_span: cannot fail
        let block = reader.read_varint().ok()? as usize;
        let size = reader.read_varint().ok()? as usize;
        let start = self.pos + reader.position();
        self.pos = (start + size).min(self.run.len());
        Some((block, self.run.get(start..self.pos)?))
    }
}

/// One span arriving at the buffer.
pub struct Arrival<'a> {
    pub trace_id: TraceId,
    pub session_key: Option<&'a str>,
    pub trace_state: &'a str,
    pub block: &'a Arc<BlockKey>,
    /// The span's serialized bytes, as kept (limits applied).
    pub bytes: &'a [u8],
    pub features: SpanFeatures<'a>,
}

impl Arrival<'_> {
    fn is_root(&self) -> bool {
        self.features.parent == crate::features::Parent::Root
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionSettings {
    pub decision_wait: f64,
    pub root_end_grace: f64,
    pub open_trace_wait: f64,
    pub max_session_duration: f64,
    pub max_session_spans: u64,
    pub tick: f64,
    pub dropped_hold: f64,
    pub dropped_hold_max_spans: u64,
    pub decision_cache_max: usize,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            decision_wait: 30.0,
            root_end_grace: 2.0,
            open_trace_wait: 90.0,
            max_session_duration: 300.0,
            max_session_spans: 10_000,
            tick: 0.1,
            dropped_hold: 120.0,
            dropped_hold_max_spans: 200_000,
            decision_cache_max: 200_000,
        }
    }
}

// --- timers ----------------------------------------------------------------------------------

/// Deadlines rounded up to integer ticks; each tick owns a bucket, and a heap holds one entry
/// per non-empty bucket, not per session, so its size is bounded by (longest deadline / tick)
/// whatever the number of sessions. Entries are never removed: a session's `timer_tick` says
/// which entry is current, the others are stale and skipped (the collector's idea of one id
/// batch per second, at a finer grain).
struct TimerWheel {
    tick_s: f64,
    buckets: HashMap<i64, Vec<SessionId>>,
    ticks: BinaryHeap<Reverse<i64>>,
}

/// In ticks: 0.3 / 0.1 is 2.9999999999999996, and must count as tick 3.
const TOLERANCE: f64 = 1e-9;

impl TimerWheel {
    fn new(tick_s: f64) -> Self {
        TimerWheel {
            tick_s,
            buckets: HashMap::new(),
            ticks: BinaryHeap::new(),
        }
    }

    /// The first tick at or after `deadline`.
    fn tick_of(&self, deadline: f64) -> i64 {
        to_tick((deadline / self.tick_s - TOLERANCE).ceil())
    }

    /// The last tick at or before `now`: entries of this tick and earlier are due.
    fn current_tick(&self, now: f64) -> i64 {
        to_tick((now / self.tick_s + TOLERANCE).floor())
    }

    fn schedule(&mut self, id: SessionId, deadline: f64) -> i64 {
        let tick = self.tick_of(deadline);
        self.buckets
            .entry(tick)
            .or_insert_with(|| {
                self.ticks.push(Reverse(tick));
                Vec::new()
            })
            .push(id);
        tick
    }

    fn pop_due(&mut self, now: f64) -> Vec<(i64, SessionId)> {
        let limit = self.current_tick(now);
        let mut out = Vec::new();
        while let Some(&Reverse(tick)) = self.ticks.peek() {
            if tick > limit {
                break;
            }
            self.ticks.pop();
            if let Some(bucket) = self.buckets.remove(&tick) {
                out.extend(bucket.into_iter().map(|id| (tick, id)));
            }
        }
        out
    }
}

fn to_tick(value: f64) -> i64 {
    if value.is_nan() {
        NO_TICK
    } else {
        value.clamp(-9.0e18, 9.0e18) as i64 // +inf: never (a far tick)
    }
}

// --- decision cache ------------------------------------------------------------------------

/// Memory of recent decisions, so that spans arriving after their session was decided follow
/// the same decision. Bounded: the oldest entries are forgotten first.
pub struct DecisionCache {
    max_entries: usize,
    by_key: LinkedHashMap<Box<str>, Arc<Verdict>>,
    by_trace: LinkedHashMap<TraceId, Arc<Verdict>>,
}

impl DecisionCache {
    fn new(max_entries: usize) -> Self {
        DecisionCache {
            max_entries: max_entries.max(1),
            by_key: LinkedHashMap::new(),
            by_trace: LinkedHashMap::new(),
        }
    }

    fn remember(&mut self, key: Option<&str>, trace_ids: &[TraceId], verdict: &Arc<Verdict>) {
        if let Some(key) = key {
            // a key remembered already moves to the young end (without a copy of the key)
            match self.by_key.to_back(key) {
                Some(remembered) => *remembered = verdict.clone(),
                None => {
                    self.by_key.insert(key.into(), verdict.clone());
                }
            }
            if self.by_key.len() > self.max_entries {
                self.by_key.pop_front();
            }
        }
        for trace_id in trace_ids {
            // `insert` moves an id remembered already to the young end
            self.by_trace.insert(*trace_id, verdict.clone());
            if self.by_trace.len() > self.max_entries {
                self.by_trace.pop_front();
            }
        }
    }

    /// A new bound: the oldest entries beyond it are forgotten now.
    fn resize(&mut self, max_entries: usize) {
        self.max_entries = max_entries.max(1);
        while self.by_key.len() > self.max_entries {
            self.by_key.pop_front();
        }
        while self.by_trace.len() > self.max_entries {
            self.by_trace.pop_front();
        }
    }

    fn for_key(&self, key: &str) -> Option<&Arc<Verdict>> {
        self.by_key.get(key)
    }

    fn for_trace(&self, trace_id: &TraceId) -> Option<&Arc<Verdict>> {
        self.by_trace.get(trace_id)
    }

    pub fn len(&self) -> usize {
        self.by_key.len() + self.by_trace.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// --- the hold ------------------------------------------------------------------------------

/// A dropped session held a little longer: a drop is final only once the hold is over.
#[derive(Debug, Clone)]
pub struct Held {
    pub id: SessionId,
    /// The drop.
    pub verdict: Arc<Verdict>,
    /// Decided before the rarity model could score it: look again on the way out.
    pub cold: bool,
    pub expires: f64,
    /// Second looks that will have been taken when this hold ends.
    pub looks: u32,
}

/// Dropped sessions, held (bounded) instead of discarded, because three things can still change
/// a drop and all need the spans: a later turn (the session is reopened and decided again as a
/// whole), late spans of a trace still running when it was decided, and a second look for a
/// session decided while the rarity model was cold. Held spans are the first to go when room is
/// needed, oldest first.
struct Hold {
    hold_s: f64,
    max_spans: u64,
    held: LinkedHashMap<Box<str>, Held>,
    by_trace: HashMap<TraceId, Box<str>>,
    span_count: u64,
    span_bytes: usize,
    memory: usize,
    released_early: u64,
}

// --- the buffer ----------------------------------------------------------------------------

pub struct Buffer {
    settings: SessionSettings,
    slots: Vec<(u32, Option<Session>)>,
    free: Vec<u32>,
    wheel: TimerWheel,
    traces: HashMap<TraceId, SessionId>,
    keyed: HashMap<Box<str>, SessionId>,
    due_now: Vec<SessionId>,
    /// Buffered sessions, oldest first: stress relief decides the oldest early without a scan.
    by_age: BTreeMap<u64, SessionId>,
    next_age: u64,
    hold: Hold,
    pub cache: DecisionCache,
    /// Provisional sessions that joined an already decided (kept) session: they follow it.
    pub followed: Vec<(SessionId, Arc<Verdict>)>,
    pub span_count: u64,
    pub span_bytes: usize,
    pub session_count: u64,
    /// Memory of the buffered sessions (`Session::accounted`, summed): exact between ingest
    /// steps.
    pub memory: usize,
    /// Dropped sessions taken back from the hold by new spans.
    pub reopened: u64,
    /// Sessions that took spans since the last `trim_touched`.
    touched: Vec<SessionId>,
}

/// What became of one span given to `Buffer::add`.
pub enum Added {
    Buffered,
    /// Its session was decided already: the span follows this verdict.
    Follows(Arc<Verdict>),
}

impl Buffer {
    pub fn new(settings: SessionSettings) -> Buffer {
        Buffer {
            settings,
            slots: Vec::new(),
            free: Vec::new(),
            wheel: TimerWheel::new(settings.tick),
            traces: HashMap::new(),
            keyed: HashMap::new(),
            due_now: Vec::new(),
            by_age: BTreeMap::new(),
            next_age: 0,
            hold: Hold {
                hold_s: settings.dropped_hold,
                max_spans: settings.dropped_hold_max_spans,
                held: LinkedHashMap::new(),
                by_trace: HashMap::new(),
                span_count: 0,
                span_bytes: 0,
                memory: 0,
                released_early: 0,
            },
            cache: DecisionCache::new(settings.decision_cache_max),
            followed: Vec::new(),
            span_count: 0,
            span_bytes: 0,
            session_count: 0,
            memory: 0,
            reopened: 0,
            touched: Vec::new(),
        }
    }

    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// New settings (a reload; `tick` is the caller's to keep). Buffered sessions whose
    /// deadline moves earlier (or that are at a lowered span cap) are filed again, so they are
    /// due as the new settings say; a later deadline is found when the old one fires, as
    /// usual. Sessions already held keep their expiry; the hold's cap and the decision
    /// cache's size apply at once.
    pub fn set_settings(&mut self, settings: SessionSettings) {
        self.settings = settings;
        self.hold.hold_s = settings.dropped_hold;
        self.hold.max_spans = settings.dropped_hold_max_spans;
        self.cache.resize(settings.decision_cache_max);
        let buffered: Vec<SessionId> = self.by_age.values().copied().collect();
        for id in buffered {
            self.reschedule(id);
        }
    }

    /// Clears the bits of `mask` in every session's span-test bits (buffered, held, or out).
    pub fn clear_test_bits(&mut self, mask: u64) {
        for session in self.slots.iter_mut().filter_map(|(_, s)| s.as_mut()) {
            session.features.test_bits &= !mask;
        }
    }

    // -- the slab --------------------------------------------------------------------------

    pub fn get(&self, id: SessionId) -> Option<&Session> {
        slot(&self.slots, id)
    }

    fn get_mut(&mut self, id: SessionId) -> Option<&mut Session> {
        slot_mut(&mut self.slots, id)
    }

    fn insert(&mut self, session: Session) -> SessionId {
        match self.free.pop() {
            Some(index) => {
                let slot = &mut self.slots[index as usize];
                slot.1 = Some(session);
                SessionId((u64::from(slot.0) << 32) | u64::from(index))
            }
            None => {
                self.slots.push((0, Some(session)));
                SessionId((self.slots.len() - 1) as u64)
            }
        }
    }

    /// Frees a session that left the buffer (merged away, followed, or released by Python).
    pub fn free(&mut self, id: SessionId) -> Option<Session> {
        let slot = self.slots.get_mut(id.index())?;
        if slot.0 != id.generation() || slot.1.is_none() {
            return None;
        }
        let session = slot.1.take();
        slot.0 = slot.0.wrapping_add(1);
        self.free.push(id.index() as u32);
        session
    }

    fn new_session(&mut self, key: Box<str>, keyed: bool, now: f64) -> SessionId {
        let age = self.next_age;
        self.next_age += 1;
        let id = self.insert(Session::new(key, keyed, now, age));
        self.by_age.insert(age, id);
        self.session_count += 1;
        id
    }

    // -- intake ----------------------------------------------------------------------------

    /// Buffers one span, or says which verdict it must follow (its session was decided).
    pub fn add(&mut self, span: &Arrival<'_>, now: f64) -> Added {
        let trace_id = span.trace_id;
        let mut id = self.traces.get(&trace_id).copied();
        // Most spans join a buffered session and only push its deadline later, which the
        // timer wheel finds out by itself when the old deadline fires: re-filing is needed
        // only when the deadline may move earlier (a root arrived, a session opened, joined or
        // was reopened) or the session reached its span cap.
        let mut moved = span.is_root();
        if id.is_none() && self.hold.span_count > 0 {
            id = self.reopen_trace(&trace_id, now);
            moved = true;
        }
        let id = match id {
            None => {
                if let Some(verdict) = self.cache.for_trace(&trace_id) {
                    return Added::Follows(verdict.clone());
                }
                moved = true;
                match self.open(trace_id, span.session_key, now) {
                    Some(id) => id,
                    None => return self.follow_trace(&trace_id), // the key names a decided session
                }
            }
            Some(id) => match span.session_key {
                Some(key) if !self.get(id).is_some_and(|s| s.keyed) => {
                    moved = true;
                    match self.join(id, key, now) {
                        Some(id) => id,
                        None => return self.follow_trace(&trace_id),
                    }
                }
                _ => id,
            },
        };
        let max_spans = self.settings.max_session_spans;
        let Some(session) = self.get_mut(id) else {
            return Added::Buffered; // cannot happen: every id above names a buffered session
        };
        session.add_span(span, now);
        let at_cap = session.span_count() >= max_spans;
        // its memory is measured once per step, by `trim_touched`, after the slack is given
        // back: nothing reads it in between
        let first_touch = !std::mem::replace(&mut session.touched, true);
        if first_touch {
            self.touched.push(id);
        }
        self.span_count += 1;
        self.span_bytes += span.bytes.len();
        if moved || at_cap {
            self.reschedule(id);
        }
        Added::Buffered
    }

    /// Gives back the slack of the span runs of the sessions that took spans since the last
    /// call (`Core::ingest` calls it once per step, whatever became of the step), and measures
    /// their memory: `add` leaves it to this call. A run grows by a quarter at a time while
    /// spans come in, and a request usually brings all of a trace's spans at once: kept, that
    /// slack would be about a tenth of every buffered span's memory, for as long as the
    /// session waits (open traces: minutes). Shrinking in place is cheap (the allocator splits
    /// the block); a session that takes more spans later grows again.
    pub fn trim_touched(&mut self) {
        let mut touched = std::mem::take(&mut self.touched);
        for &id in &touched {
            let Some(session) = self.get_mut(id) else {
                continue; // absorbed or freed since, its slot perhaps reused: nothing to do
            };
            session.touched = false;
            if session.state != State::Buffering {
                continue; // out to be decided, or held: its memory is counted elsewhere
            }
            if session.run.capacity() - session.run.len() >= TRIM_MIN_SLACK {
                session.run.shrink_to_fit();
            }
            session.features.shrink();
            let before = session.accounted;
            let after = session.memory();
            session.accounted = after;
            self.memory = self.memory + after - before;
        }
        touched.clear();
        self.touched = touched; // keeps its allocation for the next step
    }

    fn follow_trace(&self, trace_id: &TraceId) -> Added {
        match self.cache.for_trace(trace_id) {
            Some(verdict) => Added::Follows(verdict.clone()),
            None => Added::Buffered, // cannot happen: open/join remembered the trace
        }
    }

    fn open(&mut self, trace_id: TraceId, key: Option<&str>, now: f64) -> Option<SessionId> {
        let id = match key {
            None => self.new_session(Box::default(), false, now),
            Some(key) => match self
                .keyed
                .get(key)
                .copied()
                .or_else(|| self.reopen(key, now))
            {
                Some(id) => id,
                None => {
                    let decided = self.cache.for_key(key).cloned();
                    if let Some(verdict) = decided.as_ref().filter(|v| v.keep) {
                        self.cache.remember(None, &[trace_id], verdict);
                        return None;
                    }
                    let id = self.new_session(key.into(), true, now);
                    self.keyed.insert(key.into(), id);
                    if let Some(session) = self.get_mut(id) {
                        session.decided_before = decided.is_some();
                    }
                    id
                }
            },
        };
        if let Some(session) = self.get_mut(id) {
            session.add_trace(trace_id);
            let (before, after) = (session.accounted, session.memory());
            session.accounted = after;
            self.memory = self.memory + after - before;
        }
        self.traces.insert(trace_id, id);
        Some(id)
    }

    fn join(&mut self, provisional: SessionId, key: &str, now: f64) -> Option<SessionId> {
        let target = self
            .keyed
            .get(key)
            .copied()
            .or_else(|| self.reopen(key, now));
        let Some(target) = target else {
            let decided = self.cache.for_key(key).cloned();
            if let Some(verdict) = decided.as_ref().filter(|v| v.keep) {
                self.remove(provisional);
                let trace_ids = self
                    .get(provisional)
                    .map(|s| s.trace_ids.clone())
                    .unwrap_or_default();
                self.cache.remember(None, &trace_ids, verdict);
                self.followed.push((provisional, verdict.clone()));
                return None;
            }
            let session = self.get_mut(provisional)?;
            session.keyed_key = key.into(); // promote in place: no copy
            session.keyed = true;
            session.decided_before = decided.is_some();
            self.keyed.insert(key.into(), provisional);
            return Some(provisional);
        };
        if target == provisional {
            return Some(target);
        }
        self.remove(provisional);
        let absorbed = self.free(provisional)?;
        for trace_id in &absorbed.trace_ids {
            self.traces.insert(*trace_id, target);
        }
        // `remove` took the provisional session's spans out of the totals; they come back in
        let (spans, bytes) = (absorbed.span_count(), absorbed.span_bytes);
        let session = self.get_mut(target)?;
        let before = session.accounted;
        session.absorb(absorbed);
        let after = session.memory();
        session.accounted = after;
        self.memory = self.memory + after - before;
        self.span_count += spans;
        self.span_bytes += bytes;
        Some(target)
    }

    /// Takes a held dropped session back into the buffer, to be decided again.
    fn reopen(&mut self, key: &str, now: f64) -> Option<SessionId> {
        if self.hold.span_count == 0 {
            return None;
        }
        let held = self.hold_take(key)?;
        let id = held.id;
        let age = self.next_age;
        self.next_age += 1;
        let session = self.get_mut(id)?;
        session.decided_before = true;
        session.awaiting_look |= held.cold;
        session.state = State::Buffering;
        session.timer_tick = NO_TICK;
        session.last_seen = now;
        // max_session_duration counts from here: counted from its first span, a conversation
        // longer than the cap would be due again at once, and decided again on every span
        session.created = now;
        session.age = age;
        let trace_ids = session.trace_ids.clone();
        let keyed = session.keyed.then(|| session.keyed_key.clone());
        let (spans, bytes, memory) = (session.span_count(), session.span_bytes, session.accounted);
        for trace_id in trace_ids {
            self.traces.insert(trace_id, id);
        }
        if let Some(key) = keyed {
            self.keyed.insert(key, id);
        }
        self.span_count += spans;
        self.span_bytes += bytes;
        self.memory += memory;
        self.by_age.insert(age, id);
        self.session_count += 1;
        self.reopened += 1;
        Some(id)
    }

    fn reopen_trace(&mut self, trace_id: &TraceId, now: f64) -> Option<SessionId> {
        let key = self.hold.by_trace.get(trace_id)?.clone();
        self.reopen(&key, now)
    }

    fn reschedule(&mut self, id: SessionId) {
        let max_spans = self.settings.max_session_spans;
        let Some(session) = self.get(id) else { return };
        if session.span_count() >= max_spans {
            if session.timer_tick != DUE_NOW {
                if let Some(session) = self.get_mut(id) {
                    session.timer_tick = DUE_NOW; // no wheel entry matches: only due_now holds it
                }
                self.due_now.push(id);
            }
            return;
        }
        let deadline = self.deadline(session);
        if self.wheel.tick_of(deadline) < session.timer_tick {
            let tick = self.wheel.schedule(id, deadline);
            if let Some(session) = self.get_mut(id) {
                session.timer_tick = tick;
            }
        }
    }

    /// When a session is complete (see the module's docs).
    pub fn deadline(&self, session: &Session) -> f64 {
        let s = &self.settings;
        let idle = if !session.rootless.is_empty() {
            session.last_seen + s.open_trace_wait // a trace is still running: its root arrives last
        } else if !session.keyed && s.root_end_grace > 0.0 {
            session.roots_done_at + s.root_end_grace // a lone trace, complete
        } else {
            session.last_seen + s.decision_wait // a conversation may get another turn
        };
        idle.min(session.created + s.max_session_duration)
    }

    // -- leaving the buffer ----------------------------------------------------------------

    /// Takes a session out of the buffer's indexes (it stays in the slab).
    fn remove(&mut self, id: SessionId) {
        // the session borrowed apart from the indexes it leaves: its key and trace ids are
        // read in place, not copied
        let Some(session) = slot_mut(&mut self.slots, id) else {
            return;
        };
        if session.state != State::Buffering {
            return;
        }
        session.state = State::Out;
        self.by_age.remove(&session.age);
        for trace_id in &session.trace_ids {
            if self.traces.get(trace_id) == Some(&id) {
                self.traces.remove(trace_id);
            }
        }
        if session.keyed && self.keyed.get(&session.keyed_key) == Some(&id) {
            self.keyed.remove(&session.keyed_key);
        }
        let (spans, bytes, memory) = (session.span_count(), session.span_bytes, session.accounted);
        self.span_count -= spans;
        self.span_bytes -= bytes;
        self.memory -= memory;
        self.session_count -= 1;
    }

    /// Removes and returns every session whose completion deadline has passed.
    pub fn pop_due(&mut self, now: f64) -> Vec<SessionId> {
        self.pop_due_at_most(now, usize::MAX)
    }

    /// Removes and returns at most `limit` sessions whose completion deadline has passed,
    /// oldest deadline first; the others stay due for the next call (so that deciding a tick's
    /// worth of sessions can be spread over several turns of the event loop).
    pub fn pop_due_at_most(&mut self, now: f64, limit: usize) -> Vec<SessionId> {
        let mut candidates = std::mem::take(&mut self.due_now);
        let current = self.wheel.current_tick(now);
        for (tick, id) in self.wheel.pop_due(now) {
            let Some(session) = self.get(id) else {
                continue; // decided, and gone
            };
            if session.state != State::Buffering || session.timer_tick != tick {
                continue; // stale entry: decided, merged, or rescheduled earlier
            }
            let deadline = self.deadline(session);
            if self.wheel.tick_of(deadline) > current {
                let tick = self.wheel.schedule(id, deadline); // activity moved it later: re-file
                if let Some(session) = self.get_mut(id) {
                    session.timer_tick = tick;
                }
                continue;
            }
            if let Some(session) = self.get_mut(id) {
                session.timer_tick = NO_TICK; // another stale entry of this tick must not match
            }
            candidates.push(id);
        }
        let mut due = Vec::with_capacity(candidates.len().min(limit));
        for id in candidates {
            if !self.get(id).is_some_and(|s| s.state == State::Buffering) {
                continue; // decided since, or listed twice
            }
            if due.len() < limit {
                self.remove(id); // out of the buffer: a second listing of it is skipped
                due.push(id);
            } else {
                self.due_now.push(id); // due still: the next call takes it (a double is skipped)
            }
        }
        due
    }

    /// A time by which `pop_due_at_most` or `hold_pop_expired` returns something, or at least
    /// moves on: the middle of the first tick that holds timers (safely past its boundary,
    /// whatever the float error at large times) or the end of the oldest hold, whichever comes
    /// first; None when nothing is buffered or held. The tick may be stale (its sessions decided
    /// or re-filed since): popping then returns nothing but removes the stale entry, so going
    /// from one next deadline to the next always ends. `replay` moves its clock this way, as
    /// the live ticker would, without walking the empty ticks between.
    pub fn next_deadline(&self) -> Option<f64> {
        let timer = if !self.due_now.is_empty() {
            Some(f64::NEG_INFINITY) // due already: a sliced pop left them
        } else if self.session_count > 0 {
            let tick_s = self.wheel.tick_s;
            self.wheel
                .ticks
                .peek()
                .map(|Reverse(tick)| (*tick as f64 + 0.5) * tick_s)
        } else {
            None
        };
        let hold = self.hold.held.front().map(|(_, held)| held.expires);
        match (timer, hold) {
            (Some(timer), Some(hold)) => Some(timer.min(hold)),
            (timer, hold) => timer.or(hold),
        }
    }

    /// Removes and returns the oldest sessions until at least `spans` spans and `memory` bytes
    /// are freed: stress relief decides them early.
    pub fn pop_oldest(&mut self, spans: i64, memory: i64) -> Vec<SessionId> {
        let mut out = Vec::new();
        let (mut freed_spans, mut freed_memory) = (0i64, 0i64);
        while freed_spans < spans || freed_memory < memory {
            let Some((_, &id)) = self.by_age.iter().next() else {
                break;
            };
            if let Some(session) = self.get(id) {
                freed_spans += session.span_count() as i64;
                freed_memory += session.accounted as i64;
            }
            self.remove(id);
            out.push(id);
        }
        out
    }

    /// Removes and returns every buffered session, oldest first (shutdown, end of replay).
    pub fn pop_all(&mut self) -> Vec<SessionId> {
        let mut out: Vec<SessionId> = self.by_age.values().copied().collect();
        out.sort_by(|a, b| {
            let created = |id: &SessionId| self.get(*id).map_or(0.0, |s| s.created);
            created(a).total_cmp(&created(b))
        });
        for id in &out {
            self.remove(*id);
        }
        self.due_now.clear();
        out
    }

    pub fn set_verdict(&mut self, id: SessionId, verdict: Arc<Verdict>) {
        if let Some(session) = self.get_mut(id) {
            session.verdict = Some(verdict);
        }
    }

    /// Remembers a decided session's verdict for its late spans.
    pub fn record(&mut self, id: SessionId, verdict: &Arc<Verdict>) {
        if let Some(session) = slot(&self.slots, id) {
            let key = session.keyed.then_some(&*session.keyed_key);
            self.cache.remember(key, &session.trace_ids, verdict);
        }
    }

    // -- the hold --------------------------------------------------------------------------

    pub fn hold_enabled(&self) -> bool {
        self.hold.hold_s > 0.0 && self.hold.max_spans > 0
    }

    /// Holds a dropped session (popped, not buffered); false, holding nothing, when holding is
    /// off or the session is too big. The caller releases the oldest while `hold_over_cap`.
    pub fn hold(
        &mut self,
        id: SessionId,
        verdict: Arc<Verdict>,
        cold: bool,
        now: f64,
        looks: u32,
    ) -> bool {
        let enabled = self.hold_enabled();
        let max_spans = self.hold.max_spans;
        let Some(session) = self.get_mut(id) else {
            return false;
        };
        if !enabled || session.span_count() > max_spans || session.state != State::Out {
            return false;
        }
        session.state = State::Held;
        let key: Box<str> = session.key().into();
        let trace_ids = session.trace_ids.clone();
        let (spans, bytes, memory) = (session.span_count(), session.span_bytes, session.accounted);
        if let Some(previous) = self.hold.held.remove(&key) {
            // cannot happen for one decision; keep the sums right anyway
            self.hold_forget(&previous);
        }
        let expires = now + self.hold.hold_s;
        self.hold.held.insert(
            key.clone(),
            Held {
                id,
                verdict,
                cold,
                expires,
                looks,
            },
        );
        for trace_id in trace_ids {
            self.hold.by_trace.insert(trace_id, key.clone());
        }
        self.hold.span_count += spans;
        self.hold.span_bytes += bytes;
        self.hold.memory += memory;
        true
    }

    pub fn hold_over_cap(&self) -> bool {
        self.hold.span_count > self.hold.max_spans
    }

    fn hold_take(&mut self, key: &str) -> Option<Held> {
        let held = self.hold.held.remove(key)?;
        self.hold_forget(&held);
        Some(held)
    }

    fn hold_forget(&mut self, held: &Held) {
        let Some(session) = self
            .slots
            .get_mut(held.id.index())
            .and_then(|(_, s)| s.as_mut())
        else {
            return;
        };
        session.state = State::Out;
        let key = session.key(); // once: a session without a key builds it (hex)
        for trace_id in &session.trace_ids {
            if self
                .hold
                .by_trace
                .get(trace_id)
                .is_some_and(|k| **k == *key)
            {
                self.hold.by_trace.remove(trace_id);
            }
        }
        self.hold.span_count -= session.span_count();
        self.hold.span_bytes -= session.span_bytes;
        self.hold.memory -= session.accounted;
    }

    /// Sessions whose hold is over, oldest first (expiry times grow with insertion).
    pub fn hold_pop_expired(&mut self, now: f64) -> Vec<Held> {
        let mut out = Vec::new();
        while let Some((_, held)) = self.hold.held.front() {
            if held.expires > now {
                break;
            }
            if let Some((_, held)) = self.hold.held.pop_front() {
                self.hold_forget(&held);
                out.push(held);
            }
        }
        out
    }

    /// The oldest held session, removed early to make room (its second look comes now).
    pub fn hold_release_oldest(&mut self) -> Option<Held> {
        let (_, held) = self.hold.held.pop_front()?;
        self.hold_forget(&held);
        self.hold.released_early += 1;
        Some(held)
    }

    pub fn hold_pop_all(&mut self) -> Vec<Held> {
        let mut out = Vec::with_capacity(self.hold.held.len());
        while let Some((_, held)) = self.hold.held.pop_front() {
            self.hold_forget(&held);
            out.push(held);
        }
        out
    }

    /// A keep given elsewhere (a peer sampler, through the cluster) for the conversation
    /// `key`: later turns follow it as they follow a local keep (a local keep already
    /// remembered stays, with its own rule). The session held for that key, if any, leaves the
    /// hold (its state `Out`) and is returned for the caller to keep; a buffered one is kept
    /// when it is decided (`kept_elsewhere`).
    pub fn adopt_keep(&mut self, key: &str, verdict: &Arc<Verdict>) -> Option<SessionId> {
        if !self.cache.for_key(key).is_some_and(|v| v.keep) {
            self.cache.remember(Some(key), &[], verdict);
        }
        let held = self.hold.held.get(key)?;
        // the hold names a session without a key by its trace id in hex: not a conversation
        if !self.get(held.id).is_some_and(|s| s.keyed) {
            return None;
        }
        self.hold_take(key).map(|held| held.id)
    }

    /// The keep remembered for a keyed session's key while it was buffered: only a peer's
    /// (`adopt_keep`), since a conversation kept here takes no new buffered session.
    pub fn kept_elsewhere(&self, session: &Session) -> Option<&Arc<Verdict>> {
        if !session.keyed {
            return None;
        }
        self.cache.for_key(&session.keyed_key).filter(|v| v.keep)
    }

    pub fn held_sessions(&self) -> usize {
        self.hold.held.len()
    }

    pub fn held_spans(&self) -> u64 {
        self.hold.span_count
    }

    pub fn held_bytes(&self) -> usize {
        self.hold.span_bytes
    }

    pub fn held_memory(&self) -> usize {
        self.hold.memory
    }

    pub fn released_early(&self) -> u64 {
        self.hold.released_early
    }

    /// Sessions in the slab: buffered, held, or out waiting for Python.
    pub fn live_sessions(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// The session `id` names in the slab (`Buffer::get`, borrowing only the slab).
fn slot(slots: &[(u32, Option<Session>)], id: SessionId) -> Option<&Session> {
    match slots.get(id.index()) {
        Some((generation, Some(session))) if *generation == id.generation() => Some(session),
        _ => None,
    }
}

/// The session `id` names in the slab (`Buffer::get_mut`, borrowing only the slab).
fn slot_mut(slots: &mut [(u32, Option<Session>)], id: SessionId) -> Option<&mut Session> {
    match slots.get_mut(id.index()) {
        Some((generation, Some(session))) if *generation == id.generation() => Some(session),
        _ => None,
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{Kind, Parent, SpanFeatures};

    fn block(resource: &[u8]) -> Arc<BlockKey> {
        Arc::new(BlockKey {
            resource: resource.into(),
            resource_url: "".into(),
            scope: Box::default(),
            scope_url: "".into(),
        })
    }

    fn trace(n: u8) -> TraceId {
        [n; 16]
    }

    fn arrival<'a>(
        trace_id: TraceId,
        key: Option<&'a str>,
        root: bool,
        bytes: &'a [u8],
        block: &'a Arc<BlockKey>,
    ) -> Arrival<'a> {
        Arrival {
            trace_id,
            session_key: key,
            trace_state: "",
            block,
            bytes,
            features: SpanFeatures {
                span_id: [bytes.len() as u8 + 1; 8],
                parent: if root {
                    Parent::Root
                } else {
                    Parent::Id([9; 8])
                },
                start_ns: 1,
                end_ns: 2,
                error_kinds: 0,
                test_bits: 0,
                tokens: 0,
                kind: Kind::Other,
                agent_name: None,
                tool_name: None,
                args_digest: 0,
                links: &[],
            },
        }
    }

    fn drop_verdict() -> Arc<Verdict> {
        Arc::new(Verdict::new(false, "baseline", 1.0, &[], false))
    }

    /// A buffer holding one popped, dropped session per (key, traces, spans) row.
    fn popped(
        settings: SessionSettings,
        rows: &[(&str, &[u8], usize)],
    ) -> (Buffer, Vec<SessionId>) {
        let mut buffer = Buffer::new(settings);
        let b = block(b"r");
        for (key, traces, spans) in rows {
            for i in 0..*spans {
                let t = trace(traces[i % traces.len()]);
                buffer.add(&arrival(t, Some(key), true, b"0123456789", &b), 0.0);
            }
        }
        let ids = buffer.pop_all();
        for id in &ids {
            buffer.set_verdict(*id, drop_verdict());
        }
        (buffer, ids)
    }

    #[test]
    fn the_decision_cache_forgets_the_least_recently_decided_first() {
        let mut cache = DecisionCache::new(2);
        let v = drop_verdict();
        cache.remember(Some("a"), &[trace(1)], &v);
        cache.remember(Some("b"), &[trace(2)], &v);
        cache.remember(Some("a"), &[trace(1)], &v); // decided again: the youngest now
        cache.remember(Some("c"), &[trace(3)], &v);
        assert!(cache.for_key("a").is_some() && cache.for_key("c").is_some());
        assert!(cache.for_key("b").is_none());
        assert!(cache.for_trace(&trace(1)).is_some() && cache.for_trace(&trace(3)).is_some());
        assert!(cache.for_trace(&trace(2)).is_none());
    }

    #[test]
    fn timer_ticks_round_up_and_tolerate_float_error() {
        let wheel = TimerWheel::new(0.1);
        assert_eq!(wheel.tick_of(0.3), 3); // 0.3 / 0.1 is 2.9999999999999996
        assert_eq!(wheel.tick_of(0.31), 4);
        assert_eq!(wheel.current_tick(0.3), 3);
        assert_eq!(wheel.current_tick(0.29), 2);
        assert_eq!(wheel.tick_of(f64::INFINITY), 9_000_000_000_000_000_000);
    }

    #[test]
    fn timers_pop_in_tick_order_with_one_heap_entry_per_tick() {
        let mut wheel = TimerWheel::new(1.0);
        let ids: Vec<SessionId> = (0..6).map(SessionId).collect();
        for (i, deadline) in [5.0, 1.0, 3.0, 1.0, 1e12, 3.0].iter().enumerate() {
            wheel.schedule(ids[i], *deadline);
        }
        assert_eq!(wheel.ticks.len(), 4);
        let due: Vec<(i64, u64)> = wheel
            .pop_due(3.0)
            .into_iter()
            .map(|(t, id)| (t, id.0))
            .collect();
        assert_eq!(due, vec![(1, 1), (1, 3), (3, 2), (3, 5)]);
        assert!(wheel.pop_due(4.9).is_empty());
        assert_eq!(wheel.pop_due(1e13).len(), 2); // a far jump does not walk empty ticks
    }

    #[test]
    fn due_sessions_come_out_a_slice_at_a_time_and_none_is_lost() {
        let mut buffer = Buffer::new(SessionSettings::default());
        let b = block(b"r");
        for n in 0..10 {
            buffer.add(&arrival(trace(n), None, true, b"x", &b), 0.0); // a lone trace: 2 s grace
        }
        let mut seen = Vec::new();
        for expected in [4, 4, 2, 0] {
            let slice = buffer.pop_due_at_most(10.0, 4);
            assert_eq!(slice.len(), expected);
            for id in &slice {
                assert!(buffer.get(*id).is_some_and(|s| s.state == State::Out));
            }
            seen.extend(slice);
        }
        seen.sort_by_key(|id| id.0);
        seen.dedup();
        assert_eq!(seen.len(), 10);
        assert_eq!(buffer.by_age.len(), 0);
    }

    #[test]
    fn deadlines_are_the_earliest_completion_rule() {
        let s = SessionSettings::default();
        let b = block(b"r");
        let at = |settings: SessionSettings, key: Option<&str>, root: bool| {
            let mut buffer = Buffer::new(settings);
            buffer.add(&arrival(trace(1), key, root, b"x", &b), 5.0);
            let id = buffer.by_age.values().next().copied().unwrap();
            buffer.deadline(buffer.get(id).unwrap())
        };
        assert_eq!(at(s, Some("c"), false), 5.0 + 90.0); // a trace still running
        assert_eq!(at(s, None, false), 5.0 + 90.0);
        assert_eq!(at(s, Some("c"), true), 5.0 + 30.0); // a conversation: decision_wait
        assert_eq!(at(s, None, true), 5.0 + 2.0); // a lone trace: root_end_grace
        let no_grace = SessionSettings {
            root_end_grace: 0.0,
            ..s
        };
        assert_eq!(at(no_grace, None, true), 5.0 + 30.0);
        let capped = SessionSettings {
            max_session_duration: 20.0,
            ..s
        };
        assert_eq!(at(capped, Some("c"), true), 5.0 + 20.0);
    }

    #[test]
    fn spans_come_back_block_by_block_in_arrival_order_through_a_merge() {
        let mut buffer = Buffer::new(SessionSettings::default());
        let (one, two) = (block(b"r1"), block(b"r2"));
        let big = vec![7u8; 70_000];
        buffer.add(&arrival(trace(1), None, false, b"first", &one), 0.0);
        buffer.add(&arrival(trace(1), None, false, b"", &two), 0.0);
        buffer.add(&arrival(trace(1), None, false, &big, &one), 0.0);
        buffer.add(&arrival(trace(2), Some("c"), true, b"before", &one), 0.0);
        buffer.add(&arrival(trace(1), Some("c"), true, b"last", &one), 0.0); // joins c
        let ids = buffer.pop_all();
        assert_eq!(ids.len(), 1);
        let session = buffer.get(ids[0]).unwrap();
        let runs: Vec<(&[u8], Vec<&[u8]>)> = session
            .spans()
            .into_iter()
            .map(|(b, spans)| (&*b.resource, spans))
            .collect();
        assert_eq!(
            runs,
            vec![
                (&b"r1"[..], vec![&b"before"[..], b"first", &big, b"last"]),
                (&b"r2"[..], vec![&b""[..]])
            ]
        );
        assert_eq!(session.span_bytes, 5 + 70_000 + 6 + 4);
    }

    #[test]
    fn trimming_gives_back_the_slack_of_sessions_that_took_spans_and_keeps_the_totals_true() {
        let mut buffer = Buffer::new(SessionSettings::default());
        let b = block(b"r");
        let span = [5u8; 200];
        for t in 1..=3 {
            for _ in 0..7 {
                buffer.add(&arrival(trace(t), None, false, &span, &b), 0.0);
            }
        }
        let slack = |buffer: &Buffer| -> usize {
            buffer
                .slots
                .iter()
                .filter_map(|(_, s)| s.as_ref())
                .map(|s| s.run.capacity() - s.run.len())
                .sum()
        };
        assert!(slack(&buffer) >= 3 * TRIM_MIN_SLACK); // grown ahead of the spans
        let counted = |buffer: &Buffer| -> usize {
            buffer
                .slots
                .iter()
                .filter_map(|(_, s)| s.as_ref())
                .map(Session::memory)
                .sum()
        };
        let untrimmed = counted(&buffer);
        buffer.trim_touched();
        assert!(slack(&buffer) < 3 * TRIM_MIN_SLACK);
        assert!(buffer.memory < untrimmed);
        assert_eq!(buffer.memory, counted(&buffer));
        assert!(buffer.touched.is_empty());
        // a session taken out to be decided is not the buffer's to trim any more
        buffer.add(&arrival(trace(1), None, false, &span, &b), 0.0);
        let out = buffer.pop_all();
        assert_eq!(out.len(), 3);
        buffer.trim_touched();
        assert_eq!(buffer.memory, 0);
    }

    #[test]
    fn a_tool_calls_turn_is_its_traces_place_in_the_session() {
        // turn 0 is the first trace the buffer saw; a provisional trace joining the
        // conversation (its key on a root that arrives last) comes after its traces so far
        let mut buffer = Buffer::new(SessionSettings::default());
        let b = block(b"r");
        let mut call = |t: u8, at: u64, key: Option<&str>, root: bool| {
            let mut span = arrival(trace(t), key, root, b"x", &b);
            span.features.kind = Kind::Tool;
            span.features.start_ns = at;
            buffer.add(&span, 0.0);
        };
        call(1, 1, Some("c1"), false);
        call(2, 2, Some("c1"), false);
        call(3, 3, None, false); // no key yet: provisional
        call(1, 4, None, false);
        call(3, 5, Some("c1"), true); // joins c1 as its third trace
        let ids = buffer.pop_all();
        assert_eq!(ids.len(), 1);
        let calls: Vec<_> = buffer
            .get(ids[0])
            .unwrap()
            .features
            .tool_calls
            .iter()
            .map(|c| (c.start_ns, c.turn))
            .collect();
        assert_eq!(calls, vec![(1, 0), (2, 1), (4, 0), (3, 2), (5, 2)]);
    }

    #[test]
    fn a_reopened_conversation_counts_max_session_duration_from_its_reopening() {
        // counted from its first span, a conversation longer than the cap would be due again
        // at once, and decided again on every span
        let settings = SessionSettings {
            max_session_duration: 60.0,
            ..SessionSettings::default()
        };
        let mut buffer = Buffer::new(settings);
        let b = block(b"r");
        buffer.add(&arrival(trace(1), Some("c1"), true, b"x", &b), 0.0);
        let ids = buffer.pop_due(30.05);
        assert_eq!(ids.len(), 1);
        buffer.set_verdict(ids[0], drop_verdict());
        assert!(buffer.hold(ids[0], drop_verdict(), false, 30.05, 1));
        buffer.add(&arrival(trace(2), Some("c1"), true, b"y", &b), 90.0);
        assert!(buffer.pop_due(91.05).is_empty());
        let again = buffer.pop_due(120.05);
        assert_eq!(again, ids);
        assert_eq!(buffer.get(again[0]).unwrap().trace_ids.len(), 2);
    }

    #[test]
    fn the_cache_forgets_the_oldest_and_a_new_verdict_replaces_an_old_one() {
        let mut cache = DecisionCache::new(2);
        let (keep, drop) = (
            Arc::new(Verdict::new(true, "k", 1.0, &[], false)),
            drop_verdict(),
        );
        cache.remember(Some("a"), &[trace(1)], &keep);
        cache.remember(Some("b"), &[trace(2), trace(3)], &keep); // trace 1 forgotten
        assert!(cache.for_trace(&trace(1)).is_none());
        cache.remember(Some("a"), &[], &drop); // "a" is young again, and dropped
        cache.remember(Some("c"), &[], &keep); // so "b" goes
        assert!(cache.for_key("b").is_none());
        assert!(!cache.for_key("a").unwrap().keep);
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn a_held_session_is_found_by_each_trace_and_taken_once() {
        let (mut buffer, ids) = popped(SessionSettings::default(), &[("conv", &[1, 2], 3)]);
        assert!(buffer.hold(ids[0], drop_verdict(), true, 5.0, 1));
        assert_eq!(
            (
                buffer.held_sessions(),
                buffer.held_spans(),
                buffer.held_bytes()
            ),
            (1, 3, 30)
        );
        assert_eq!(buffer.hold.by_trace.len(), 2);
        assert!(!buffer.hold(ids[0], drop_verdict(), true, 5.0, 1)); // held already
        let held = buffer.hold_take("conv").unwrap();
        assert_eq!((held.cold, held.expires, held.looks), (true, 125.0, 1));
        assert!(buffer.hold_take("conv").is_none());
        assert_eq!(
            (
                buffer.held_sessions(),
                buffer.held_spans(),
                buffer.held_memory()
            ),
            (0, 0, 0)
        );
        assert!(buffer.hold.by_trace.is_empty());
    }

    #[test]
    fn the_hold_ends_oldest_first_and_releases_the_oldest_for_room() {
        let settings = SessionSettings {
            dropped_hold: 60.0,
            ..SessionSettings::default()
        };
        let (mut buffer, ids) = popped(settings, &[("a", &[1], 1), ("b", &[2], 2), ("c", &[3], 1)]);
        for (i, id) in ids.iter().enumerate() {
            assert!(buffer.hold(*id, drop_verdict(), false, i as f64, 1));
        }
        let expired: Vec<_> = buffer.hold_pop_expired(61.5).iter().map(|h| h.id).collect();
        assert_eq!(expired, ids[..2]);
        assert_eq!(buffer.hold_release_oldest().map(|h| h.id), Some(ids[2]));
        assert_eq!((buffer.released_early(), buffer.held_spans()), (1, 0));
        assert!(buffer.hold_release_oldest().is_none());
    }

    #[test]
    fn the_hold_is_bounded_and_can_be_off() {
        let small = SessionSettings {
            dropped_hold_max_spans: 2,
            ..SessionSettings::default()
        };
        let (mut buffer, ids) = popped(small, &[("big", &[1], 3), ("a", &[2], 2), ("b", &[3], 1)]);
        assert!(!buffer.hold(ids[0], drop_verdict(), false, 0.0, 1)); // larger than the hold
        assert!(buffer.hold(ids[1], drop_verdict(), false, 0.0, 1));
        assert!(buffer.hold(ids[2], drop_verdict(), false, 0.0, 1));
        assert!(buffer.hold_over_cap()); // the caller releases the oldest
        assert_eq!(buffer.hold_release_oldest().map(|h| h.id), Some(ids[1]));
        assert!(!buffer.hold_over_cap());
        assert_eq!(buffer.hold_pop_all().len(), 1);
        for off in [
            SessionSettings {
                dropped_hold: 0.0,
                ..small
            },
            SessionSettings {
                dropped_hold_max_spans: 0,
                ..small
            },
        ] {
            let (mut buffer, ids) = popped(off, &[("a", &[1], 1)]);
            assert!(!buffer.hold_enabled());
            assert!(!buffer.hold(ids[0], drop_verdict(), false, 0.0, 1));
        }
    }

    #[test]
    fn stepping_from_next_deadline_to_next_deadline_decides_everything_at_its_time() {
        let settings = SessionSettings {
            tick: 0.1,
            dropped_hold: 60.0,
            ..SessionSettings::default()
        };
        let mut buffer = Buffer::new(settings);
        assert_eq!(buffer.next_deadline(), None);
        let b = block(b"r");
        let t0 = 1.7e9; // Unix time, as replay's clock: ticks are large numbers there
        buffer.add(&arrival(trace(1), None, true, b"x", &b), t0); // lone trace: 2 s grace
        buffer.add(&arrival(trace(2), Some("c"), true, b"x", &b), t0 + 1.0); // 30 s wait
        let mut now = t0 + 1.0;
        let mut decided = Vec::new();
        let mut steps = 0;
        while let Some(next) = buffer.next_deadline() {
            steps += 1;
            assert!(steps < 10, "stepping does not end");
            now = now.max(next);
            for id in buffer.pop_due(now) {
                decided.push(now);
                buffer.set_verdict(id, drop_verdict());
                if buffer.get(id).is_some_and(|s| s.keyed) {
                    assert!(buffer.hold(id, drop_verdict(), false, now, 1));
                }
            }
            for held in buffer.hold_pop_expired(now) {
                decided.push(now);
                buffer.free(held.id);
            }
        }
        // each at its deadline, within a tick: not all at the last one
        assert_eq!(decided.len(), 3);
        assert!(
            (decided[0] - (t0 + 2.0)).abs() <= 0.1,
            "{}",
            decided[0] - t0
        );
        assert!(
            (decided[1] - (t0 + 31.0)).abs() <= 0.1,
            "{}",
            decided[1] - t0
        );
        assert!((decided[2] - (decided[1] + 60.0)).abs() <= 1e-6);
        assert_eq!(buffer.held_sessions(), 0);
    }
}
