//! Session features, kept up to date span by span so that deciding costs little per session.
//!
//! Bounded whatever the session: the tool-call sequence and the agent/tool structure keep their
//! first `MAX_TOOL_CALLS` / `MAX_STRUCTURE` entries (a loop shows long before that); counts and
//! sums keep counting. Merging two gives the features of the union; sequences stay in arrival
//! order (the signals sort them by start time).
#![forbid(unsafe_code)]

use std::sync::Arc;

use hashbrown::{HashMap, HashSet};
// A session's lists are empty or short, and every buffered session carries one header each:
// a ThinVec's header is one pointer (its length and capacity live with its items), not three.
use thin_vec::ThinVec;

pub const MAX_TOOL_CALLS: usize = 1024;
pub const MAX_STRUCTURE: usize = 4096;

pub type SpanId = [u8; 8];

/// A span's parent as the structure walks need it: no parent (a root), a span id, or a value
/// of another length, which is not a root yet can match no span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Parent {
    Root,
    Id(SpanId),
    Unmatched,
}

impl Parent {
    pub fn of(bytes: &[u8]) -> Parent {
        match bytes.len() {
            0 => Parent::Root,
            8 => Parent::Id(bytes.try_into().unwrap_or_default()),
            _ => Parent::Unmatched,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Agent,
    Tool,
    Llm,
    Other,
}

/// One tool call, as the loop detectors read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub start_ns: u64,
    pub name: Arc<str>,
    /// A digest of the call's arguments, 0 when none were recorded.
    pub args_digest: u64,
    /// The index of the call's trace in its session's traces (the order the buffer first saw
    /// them; a session absorbed appends its traces after this one's). A trace is a turn: the
    /// detectors compare calls within a turn, and whole turns with one another.
    pub turn: u32,
    /// The tool span carried an error kind.
    pub failed: bool,
    pub end_ns: u64,
}

/// What one span contributes to its session's features.
#[derive(Debug, Clone)]
pub struct SpanFeatures<'a> {
    pub span_id: SpanId,
    pub parent: Parent,
    pub start_ns: u64,
    pub end_ns: u64,
    pub error_kinds: u8,
    pub test_bits: u64,
    pub tokens: i128,
    pub kind: Kind,
    pub agent_name: Option<Arc<str>>,
    pub tool_name: Option<Arc<str>>,
    pub args_digest: u64,
    pub links: &'a [Parent],
}

/// An insertion-ordered map (a Python dict's order): iteration order is first insertion, a
/// later insert of the same key replaces the value in place. Small maps (most: a session's few
/// agent and tool spans) are searched in order; an index is built past `INDEXED_FROM` entries.
#[derive(Debug, Clone)]
pub struct OrderedMap<V> {
    entries: ThinVec<(SpanId, V)>,
    index: Option<Box<HashMap<SpanId, usize>>>,
}

const INDEXED_FROM: usize = 16;

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap {
            entries: ThinVec::new(),
            index: None,
        }
    }
}

impl<V> OrderedMap<V> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn insert(&mut self, key: SpanId, value: V) {
        let found = match &self.index {
            Some(index) => index.get(&key).copied(),
            None => self.entries.iter().position(|(k, _)| *k == key),
        };
        match found {
            Some(i) => self.entries[i].1 = value,
            None => {
                if let Some(index) = &mut self.index {
                    index.insert(key, self.entries.len());
                }
                self.entries.push((key, value));
                if self.index.is_none() && self.entries.len() > INDEXED_FROM {
                    let index = self
                        .entries
                        .iter()
                        .enumerate()
                        .map(|(i, (k, _))| (*k, i))
                        .collect();
                    self.index = Some(Box::new(index));
                }
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &(SpanId, V)> {
        self.entries.iter()
    }

    /// Gives back spare capacity (`Features::shrink`).
    pub fn shrink(&mut self) {
        shrink_slack(&mut self.entries);
    }

    /// Heap bytes held, roughly (for the buffer's memory figure).
    pub fn heap_bytes(&self) -> usize {
        list_bytes(&self.entries)
            + self.index.as_ref().map_or(0, |index| {
                index.capacity() * (std::mem::size_of::<(SpanId, usize)>() + 1) + 48
            })
    }
}

#[derive(Debug, Clone, Default)]
pub struct Features {
    pub span_count: u64,
    pub error_spans: u64,
    pub error_kinds: u8,
    /// 0: no span yet
    pub first_start_ns: u64,
    pub last_end_ns: u64,
    pub test_bits: u64,
    pub tokens: i128,
    pub tool_call_count: u64,
    pub tool_calls: ThinVec<ToolCall>,
    pub agents: ThinVec<(SpanId, Arc<str>)>,
    /// span id -> parent, for agent and tool spans, and for any other span that is the parent
    /// of one already there (a span ends, so arrives, after its children): enough to see agents
    /// nested in agents, directly, through agent-as-tool calls, or through the spans a
    /// framework puts between an agent and its tools (LangGraph's `tools` CHAIN), without an
    /// entry per span
    pub parents: OrderedMap<Parent>,
    /// The parent ids in `parents`.
    pub linking: IdSet,
    pub links: OrderedMap<Box<[Parent]>>,
    /// the agent of a trace's root span: the session's agent
    pub root_agent: Option<Arc<str>>,
    /// the longest root span: the longest a user waited for one turn (a trace) to finish
    pub longest_root_ns: u64,
    pub slowest_llm_ns: u64,
    /// (start, duration) of the first `MAX_TOOL_CALLS` model (LLM) calls, in arrival order:
    /// tool calls with no model call started between them were made on one model decision
    pub model_calls: ThinVec<(u64, u64)>,
    /// the duration of each root span, i.e. of each turn, in arrival order (the first
    /// `MAX_TOOL_CALLS`): rarity learns what one turn takes
    pub turn_ns: ThinVec<u64>,
}

fn duration(start: u64, end: u64) -> u64 {
    end.saturating_sub(start)
}

impl Features {
    /// `turn`: for a tool span, the index of its trace in the session (`ToolCall::turn`).
    pub fn observe(&mut self, span: &SpanFeatures<'_>, turn: u32) {
        self.span_count += 1;
        if span.error_kinds != 0 {
            self.error_spans += 1;
            self.error_kinds |= span.error_kinds;
        }
        if span.start_ns != 0 && (self.first_start_ns == 0 || span.start_ns < self.first_start_ns) {
            self.first_start_ns = span.start_ns;
        }
        self.last_end_ns = self.last_end_ns.max(span.end_ns);
        self.test_bits |= span.test_bits;
        self.tokens += span.tokens;
        let took = duration(span.start_ns, span.end_ns);
        let is_root = span.parent == Parent::Root;
        if is_root {
            self.longest_root_ns = self.longest_root_ns.max(took);
            if self.turn_ns.len() < MAX_TOOL_CALLS {
                push_compact(&mut self.turn_ns, took);
            }
        }
        match span.kind {
            Kind::Llm => {
                self.slowest_llm_ns = self.slowest_llm_ns.max(took);
                if self.model_calls.len() < MAX_TOOL_CALLS {
                    push_compact(&mut self.model_calls, (span.start_ns, took));
                }
            }
            Kind::Tool => {
                self.tool_call_count += 1;
                if self.tool_calls.len() < MAX_TOOL_CALLS {
                    push_compact(
                        &mut self.tool_calls,
                        ToolCall {
                            start_ns: span.start_ns,
                            name: span.tool_name.clone().unwrap_or_else(|| Arc::from("")),
                            args_digest: span.args_digest,
                            turn,
                            failed: span.error_kinds != 0,
                            end_ns: span.end_ns,
                        },
                    );
                }
            }
            Kind::Agent => {
                let name = span.agent_name.clone().unwrap_or_else(|| Arc::from(""));
                if self.agents.len() < MAX_STRUCTURE {
                    self.agents.push((span.span_id, name.clone()));
                }
                if is_root || self.root_agent.as_deref().is_none_or(str::is_empty) {
                    self.root_agent = Some(name);
                }
            }
            Kind::Other => {}
        }
        if self.parents.len() < MAX_STRUCTURE
            && (matches!(span.kind, Kind::Agent | Kind::Tool)
                || self.linking.contains(&span.span_id))
        {
            self.insert_parent(span.span_id, span.parent);
        }
        if !span.links.is_empty() && self.links.len() < MAX_STRUCTURE {
            self.links.insert(span.span_id, span.links.into());
        }
    }

    fn insert_parent(&mut self, span_id: SpanId, parent: Parent) {
        self.parents.insert(span_id, parent);
        if let Parent::Id(id) = parent {
            self.linking.insert(id);
        }
    }

    /// `turn_offset`: how many traces this session held before `other`'s were appended
    /// (`other`'s tool calls count their turns from 0).
    pub fn merge(&mut self, other: Features, turn_offset: u32) {
        self.span_count += other.span_count;
        self.error_spans += other.error_spans;
        self.error_kinds |= other.error_kinds;
        if other.first_start_ns != 0
            && (self.first_start_ns == 0 || other.first_start_ns < self.first_start_ns)
        {
            self.first_start_ns = other.first_start_ns;
        }
        self.last_end_ns = self.last_end_ns.max(other.last_end_ns);
        self.test_bits |= other.test_bits;
        self.tokens += other.tokens;
        self.tool_call_count += other.tool_call_count;
        let room = MAX_TOOL_CALLS.saturating_sub(self.tool_calls.len());
        self.tool_calls
            .extend(other.tool_calls.into_iter().take(room).map(|mut call| {
                call.turn += turn_offset;
                call
            }));
        let room = MAX_TOOL_CALLS.saturating_sub(self.model_calls.len());
        self.model_calls
            .extend(other.model_calls.into_iter().take(room));
        let room = MAX_TOOL_CALLS.saturating_sub(self.turn_ns.len());
        self.turn_ns.extend(other.turn_ns.into_iter().take(room));
        let room = MAX_STRUCTURE.saturating_sub(self.agents.len());
        self.agents.extend(other.agents.into_iter().take(room));
        for (span_id, parent) in other.parents.entries {
            if self.parents.len() >= MAX_STRUCTURE {
                break;
            }
            self.insert_parent(span_id, parent);
        }
        for (span_id, linked) in other.links.entries {
            if self.links.len() >= MAX_STRUCTURE {
                break;
            }
            self.links.insert(span_id, linked);
        }
        if self.root_agent.as_deref().is_none_or(str::is_empty) {
            self.root_agent = other.root_agent;
        }
        self.longest_root_ns = self.longest_root_ns.max(other.longest_root_ns);
        self.slowest_llm_ns = self.slowest_llm_ns.max(other.slowest_llm_ns);
    }

    /// The most calls of one tool (by name) within one turn, among the recorded calls, and the
    /// number of turns that made recorded calls: no loop detector over tool calls can fire on
    /// fewer (the scorer skips them then; see `SessionScorer`).
    pub fn tool_repeats(&self) -> (u32, u32) {
        let mut per_tool: HashMap<(u32, &str), u32> = HashMap::new();
        let mut turns: HashSet<u32> = HashSet::new();
        let mut most = 0;
        for call in &self.tool_calls {
            let count = per_tool.entry((call.turn, &call.name)).or_insert(0);
            *count += 1;
            most = most.max(*count);
            turns.insert(call.turn);
        }
        (most, u32::try_from(turns.len()).unwrap_or(u32::MAX))
    }

    /// The typical (median, the lower middle one of an even count) model call's duration, 0
    /// without one.
    pub fn model_pace_ns(&self) -> u64 {
        lower_median(self.model_calls.iter().map(|(_, took)| *took).collect())
    }

    /// The typical (median) recorded tool call's duration, 0 without one.
    pub fn tool_pace_ns(&self) -> u64 {
        lower_median(
            self.tool_calls
                .iter()
                .map(|c| duration(c.start_ns, c.end_ns))
                .collect(),
        )
    }

    /// Heap bytes held, roughly (for the buffer's memory figure).
    /// Gives back the spare capacity of the session's lists, once a step of spans is in
    /// (`Buffer::trim_touched`): a session waits with what it holds, often for minutes, and
    /// most hold one or two tool or model calls in room for four.
    pub fn shrink(&mut self) {
        shrink_slack(&mut self.tool_calls);
        shrink_slack(&mut self.agents);
        shrink_slack(&mut self.model_calls);
        shrink_slack(&mut self.turn_ns);
        self.parents.shrink();
        self.linking.shrink();
        self.links.shrink();
    }

    pub fn heap_bytes(&self) -> usize {
        list_bytes(&self.tool_calls)
            + list_bytes(&self.model_calls)
            + list_bytes(&self.turn_ns)
            + self.linking.heap_bytes()
            + list_bytes(&self.agents)
            + self.parents.heap_bytes()
            + self.links.heap_bytes()
            + self
                .links
                .iter()
                .map(|(_, l)| l.len() * std::mem::size_of::<Parent>())
                .sum::<usize>()
    }
}

/// Heap bytes of a list: its items' room and, once it has any, the header before them.
fn list_bytes<T>(values: &ThinVec<T>) -> usize {
    match values.capacity() {
        0 => 0,
        capacity => 2 * std::mem::size_of::<usize>() + capacity * std::mem::size_of::<T>(),
    }
}

/// Slack below this many bytes is left in a vector: not worth a reallocation.
const SHRINK_MIN_SLACK_BYTES: usize = 32;

/// Gives back a vector's spare capacity when it is worth a reallocation (shrinking in place:
/// the allocator splits the block, nothing is copied).
fn shrink_slack<T>(values: &mut ThinVec<T>) {
    if (values.capacity() - values.len()) * std::mem::size_of::<T>() >= SHRINK_MIN_SLACK_BYTES {
        values.shrink_to_fit();
    }
}

/// Pushes, growing a full vector by a quarter (at least 4), not double: the slack is memory
/// every buffered session pays for.
fn push_compact<T>(values: &mut ThinVec<T>, value: T) {
    if values.len() == values.capacity() {
        values.reserve_exact((values.len() / 4).max(4));
    }
    values.push(value);
}

/// A set of span ids, kept as a short list (most sessions link their agent and tool spans
/// through a few parents) and as a hash set past `INDEXED_FROM` ids.
#[derive(Debug, Clone, Default)]
pub struct IdSet {
    list: ThinVec<SpanId>,
    set: Option<Box<HashSet<SpanId>>>,
}

impl IdSet {
    pub fn insert(&mut self, id: SpanId) {
        if let Some(set) = &mut self.set {
            set.insert(id);
        } else if !self.list.contains(&id) {
            push_compact(&mut self.list, id);
            if self.list.len() > INDEXED_FROM {
                self.set = Some(Box::new(
                    std::mem::take(&mut self.list).into_iter().collect(),
                ));
            }
        }
    }

    pub fn contains(&self, id: &SpanId) -> bool {
        match &self.set {
            Some(set) => set.contains(id),
            None => self.list.contains(id),
        }
    }

    /// Gives back spare capacity (`Features::shrink`).
    pub fn shrink(&mut self) {
        shrink_slack(&mut self.list);
    }

    /// Heap bytes held, roughly (for the buffer's memory figure).
    pub fn heap_bytes(&self) -> usize {
        list_bytes(&self.list)
            + self.set.as_ref().map_or(0, |set| {
                set.capacity() * (std::mem::size_of::<SpanId>() + 1) + 48
            })
    }
}

fn lower_median(mut values: Vec<u64>) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let middle = (values.len() - 1) / 2;
    *values.select_nth_unstable(middle).1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(kind: Kind, id: u8, parent: Parent, start: u64, end: u64) -> SpanFeatures<'static> {
        SpanFeatures {
            span_id: [id; 8],
            parent,
            start_ns: start,
            end_ns: end,
            error_kinds: 0,
            test_bits: 0,
            tokens: 0,
            kind,
            agent_name: (kind == Kind::Agent).then(|| Arc::from(format!("agent{id}").as_str())),
            tool_name: (kind == Kind::Tool).then(|| Arc::from("search")),
            args_digest: 0,
            links: &[],
        }
    }

    #[test]
    fn observes_spans_and_merges_like_the_union() {
        let mut a = Features::default();
        a.observe(&span(Kind::Tool, 2, Parent::Id([1; 8]), 10, 20), 0);
        a.observe(&span(Kind::Agent, 1, Parent::Root, 5, 50), 0);
        let mut b = Features::default();
        b.observe(&span(Kind::Llm, 3, Parent::Id([1; 8]), 60, 100), 0);
        a.merge(b, 1);
        assert_eq!(a.span_count, 3);
        assert_eq!((a.first_start_ns, a.last_end_ns), (5, 100));
        assert_eq!(a.longest_root_ns, 45);
        assert_eq!(a.slowest_llm_ns, 40);
        assert_eq!(a.tool_calls.len(), 1);
        assert_eq!(a.root_agent.as_deref(), Some("agent1"));
        assert_eq!(
            a.parents.iter().map(|(k, _)| k[0]).collect::<Vec<_>>(),
            vec![2, 1]
        );
    }

    #[test]
    fn an_end_before_its_start_counts_as_zero() {
        let mut f = Features::default();
        f.observe(&span(Kind::Agent, 1, Parent::Root, 50, 10), 0);
        assert_eq!(f.longest_root_ns, 0);
        assert_eq!(f.turn_ns, vec![0]);
    }

    #[test]
    fn a_tool_call_records_its_turn_whether_it_failed_and_its_end() {
        let mut f = Features::default();
        f.observe(&span(Kind::Tool, 2, Parent::Id([1; 8]), 10, 15), 0);
        let mut failed = span(Kind::Tool, 3, Parent::Id([1; 8]), 90, 95);
        failed.error_kinds = 1;
        f.observe(&failed, 1);
        f.observe(&span(Kind::Llm, 4, Parent::Id([1; 8]), 80, 81), 0);
        let calls: Vec<_> = f
            .tool_calls
            .iter()
            .map(|c| (c.start_ns, c.turn, c.failed, c.end_ns))
            .collect();
        assert_eq!(calls, vec![(10, 0, false, 15), (90, 1, true, 95)]);
        assert_eq!(f.model_calls, vec![(80, 1)]);
    }

    #[test]
    fn merge_counts_the_other_sessions_turns_after_this_ones() {
        let mut keyed = Features::default();
        keyed.observe(&span(Kind::Tool, 1, Parent::Id([9; 8]), 1, 2), 0);
        keyed.observe(&span(Kind::Tool, 2, Parent::Id([9; 8]), 5, 6), 1);
        let mut provisional = Features::default();
        provisional.observe(&span(Kind::Tool, 3, Parent::Id([8; 8]), 9, 10), 0);
        provisional.observe(&span(Kind::Llm, 4, Parent::Id([8; 8]), 8, 9), 0);
        keyed.merge(provisional, 2);
        let turns: Vec<_> = keyed.tool_calls.iter().map(|c| c.turn).collect();
        assert_eq!(turns, vec![0, 1, 2]);
        assert_eq!(keyed.model_calls, vec![(8, 1)]);
    }

    #[test]
    fn every_turn_and_model_call_keeps_its_duration_and_the_paces_are_lower_medians() {
        let mut f = Features::default();
        f.observe(&span(Kind::Agent, 1, Parent::Root, 0, 3), 0);
        f.observe(&span(Kind::Llm, 2, Parent::Id([1; 8]), 1, 2), 0);
        f.observe(&span(Kind::Agent, 3, Parent::Root, 10, 9), 0);
        f.observe(&span(Kind::Llm, 4, Parent::Id([3; 8]), 10, 14), 0);
        let mut other = Features::default();
        other.observe(&span(Kind::Agent, 5, Parent::Root, 20, 25), 0);
        other.observe(&span(Kind::Llm, 6, Parent::Id([5; 8]), 21, 23), 0);
        f.merge(other, 2);
        assert_eq!(f.turn_ns, vec![3, 0, 5]);
        assert_eq!(f.model_calls, vec![(1, 1), (10, 4), (21, 2)]);
        assert_eq!(f.model_pace_ns(), 2);
        f.observe(&span(Kind::Llm, 7, Parent::Id([5; 8]), 30, 40), 0);
        assert_eq!(f.model_pace_ns(), 2, "the lower middle of four: 1 2 | 4 10");
        assert_eq!(Features::default().model_pace_ns(), 0);
        assert_eq!(Features::default().tool_pace_ns(), 0);
        f.observe(&span(Kind::Tool, 8, Parent::Id([5; 8]), 30, 37), 0);
        f.observe(&span(Kind::Tool, 9, Parent::Id([5; 8]), 40, 39), 0);
        assert_eq!(
            f.tool_pace_ns(),
            0,
            "an end before its start counts as zero"
        );
    }

    #[test]
    fn an_id_set_is_a_list_then_a_set() {
        let mut ids = IdSet::default();
        for n in 0..40u8 {
            ids.insert([n; 8]);
            ids.insert([n; 8]);
            assert!(ids.contains(&[n; 8]) && !ids.contains(&[n + 1; 8]));
        }
        assert!((0..40u8).all(|n| ids.contains(&[n; 8])));
        assert!(ids.set.is_some() && ids.list.capacity() == 0);
    }

    #[test]
    fn tool_repeats_count_one_tool_within_one_turn() {
        let mut f = Features::default();
        assert_eq!(f.tool_repeats(), (0, 0));
        let call = |name: &str, turn: u32, f: &mut Features| {
            let mut span = span(Kind::Tool, 1, Parent::Id([9; 8]), 1, 2);
            span.tool_name = Some(Arc::from(name));
            f.observe(&span, turn);
        };
        for (name, turn) in [("a", 0), ("b", 0), ("a", 0), ("a", 1), ("a", 2), ("b", 2)] {
            call(name, turn, &mut f);
        }
        assert_eq!(f.tool_repeats(), (2, 3), "a twice in turn 0; turns 0, 1, 2");
    }

    #[test]
    fn agent_nesting_is_seen_through_the_spans_between_an_agent_and_its_tools() {
        // agent 1 > chain 2 > tool 3, arriving in end order (children first)
        let mut f = Features::default();
        f.observe(&span(Kind::Tool, 3, Parent::Id([2; 8]), 2, 3), 0);
        f.observe(&span(Kind::Other, 2, Parent::Id([1; 8]), 1, 4), 0);
        f.observe(&span(Kind::Other, 7, Parent::Id([1; 8]), 1, 4), 0); // links nothing
        f.observe(&span(Kind::Agent, 1, Parent::Root, 0, 5), 0);
        let parents: Vec<_> = f.parents.iter().map(|(k, p)| (k[0], *p)).collect();
        assert_eq!(
            parents,
            vec![
                (3, Parent::Id([2; 8])),
                (2, Parent::Id([1; 8])),
                (1, Parent::Root)
            ]
        );
    }
}
