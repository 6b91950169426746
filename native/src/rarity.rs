//! How unusual a session is compared with recent traffic: the windowed, decayed rarity model
//! over Apache DataSketches (the `datasketches` crate: a frequent-items sketch per window for
//! shapes, t-digests for numbers). `sampler/signals/rarity.py` documents what it computes and
//! why (its module docstring is the specification); this is that model, plus
//! `score_session`, which scores a `SessionView` and teaches the model in one call.
//!
//! Recent traffic is a ring of `windows` windows of `window_s` seconds. A window `age`
//! windows old weighs `decay ** age`; a window ages out whole. Time is the caller's `now`
//! (never a clock read); a `now` earlier than one already seen counts as the latest one seen.
//!
//! Deterministic: scores depend only on the sequence of `observe` / `score` / `flush` calls
//! and their `now`s. Scoring never changes what the model answers: it only remembers, between
//! two flushes, answers that do not change until then (the fences, the below-the-tail
//! thresholds).

#![forbid(unsafe_code)]

use std::collections::VecDeque;

use datasketches::frequencies::FrequentItemsSketch;
use datasketches::tdigest::{TDigest, TDigestMut};
use hashbrown::HashSet;
use hashlink::LinkedHashMap;

use crate::core::SessionView;

/// The numeric dimensions, in the order their signals are written.
pub const DIMENSIONS: [&str; 7] = [
    "latency",
    "model_latency",
    "tool_latency",
    "duration",
    "tokens",
    "span_count",
    "tool_calls",
];
/// The signal each dimension fires.
pub const TAIL_SIGNALS: [&str; 7] = [
    "tail_latency",
    "tail_model_latency",
    "tail_tool_latency",
    "tail_duration",
    "tail_tokens",
    "tail_span_count",
    "tail_tool_calls",
];
pub const RARE_SHAPE: &str = "rare_shape";
pub const LATENCY: usize = 0;
pub const MODEL_LATENCY: usize = 1;
pub const TOOL_LATENCY: usize = 2;
const DURATION: usize = 3;
const TOKENS: usize = 4;
const SPAN_COUNT: usize = 5;
const TOOL_CALLS: usize = 6;
const DIMS: usize = DIMENSIONS.len();

/// Dimensions that are a session's typical value, narrow across normal sessions: beyond
/// Tukey's outer fence (`FAR_OUT` interquartile ranges above Q3) they score 1 however many
/// sessions are there.
const FENCED: [usize; 2] = [MODEL_LATENCY, TOOL_LATENCY];
const FAR_OUT: f64 = 3.0;
/// A shape part seen in fewer sessions than this in the live windows is rare whatever its
/// share: two sightings make no habit.
pub const MIN_SIGHTINGS: u64 = 3;
/// Windows in the ring at most: the ring and its weights are held in memory (with 5-minute
/// windows, three and a half days), and a window's age stays a small integer.
pub const MAX_WINDOWS: usize = 1024;
pub const MIN_LG_MAX_K: u8 = 3;
pub const MAX_LG_MAX_K: u8 = 24;

/// The model's settings (`RaritySettings` in Python, which holds the defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub window_s: f64,
    pub windows: usize,
    pub decay: f64,
    pub warmup_sessions: u64,
    pub shape_lg_max_k: u8,
    pub group_shape_lg_max_k: u8,
    pub quantile_k: u16,
    pub max_groups: usize,
    pub min_group_values: u64,
    pub rare_shape_share: f64,
    pub tail_quantile: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            window_s: 300.0,
            windows: 6,
            decay: 0.5,
            warmup_sessions: 200,
            shape_lg_max_k: 10,
            group_shape_lg_max_k: 9,
            quantile_k: 100,
            max_groups: 256,
            min_group_values: 50,
            rare_shape_share: 0.002,
            tail_quantile: 0.99,
        }
    }
}

impl Settings {
    /// Every problem at once, as `RaritySettings` words them.
    pub fn validate(&self) -> Result<(), String> {
        let lg_range = MIN_LG_MAX_K..=MAX_LG_MAX_K;
        let checks = [
            (
                self.window_s > 0.0 && self.window_s.is_finite(),
                "window_s must be > 0".to_string(),
            ),
            (
                (1..=MAX_WINDOWS).contains(&self.windows),
                format!("windows must be in [1, {MAX_WINDOWS}]"),
            ),
            (
                self.decay > 0.0 && self.decay <= 1.0,
                "decay must be in (0, 1]".to_string(),
            ),
            (
                lg_range.contains(&self.shape_lg_max_k),
                format!("shape_lg_max_k must be in [{MIN_LG_MAX_K}, {MAX_LG_MAX_K}]"),
            ),
            (
                lg_range.contains(&self.group_shape_lg_max_k),
                format!("group_shape_lg_max_k must be in [{MIN_LG_MAX_K}, {MAX_LG_MAX_K}]"),
            ),
            (
                self.quantile_k >= 10,
                "quantile_k must be in [10, 65535]".to_string(),
            ),
            (self.max_groups >= 1, "max_groups must be >= 1".to_string()),
            (
                self.min_group_values >= 1,
                "min_group_values must be >= 1".to_string(),
            ),
            (
                self.rare_shape_share > 0.0 && self.rare_shape_share < 1.0,
                "rare_shape_share must be in (0, 1)".to_string(),
            ),
            (
                self.tail_quantile > 0.0 && self.tail_quantile < 1.0,
                "tail_quantile must be in (0, 1)".to_string(),
            ),
        ];
        let problems: Vec<String> = checks
            .into_iter()
            .filter(|(ok, _)| !ok)
            .map(|(_, message)| message)
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("invalid rarity settings: {}", problems.join("; ")))
        }
    }

    /// The settings the ring of windows and its sketches are built on, by name, that differ.
    pub fn geometry_changes(&self, other: &Settings) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.window_s != other.window_s {
            changed.push("window_s");
        }
        if self.windows != other.windows {
            changed.push("windows");
        }
        if self.max_groups != other.max_groups {
            changed.push("max_groups");
        }
        if self.shape_lg_max_k != other.shape_lg_max_k {
            changed.push("shape_lg_max_k");
        }
        if self.group_shape_lg_max_k != other.group_shape_lg_max_k {
            changed.push("group_shape_lg_max_k");
        }
        if self.quantile_k != other.quantile_k {
            changed.push("quantile_k");
        }
        changed
    }

    fn weights(&self) -> Vec<f64> {
        (0..self.windows)
            .map(|age| self.decay.powi(age as i32))
            .collect()
    }
}

/// A session's scores, each in [0, 1]. `cold`: too little traffic seen to score it fully, in
/// all (warm-up) or of its group (its shape is not scored and its numbers score 0).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Scores {
    pub shape: f64,
    pub numeric: [f64; DIMS],
    pub cold: bool,
}

impl Scores {
    pub const COLD: Scores = Scores {
        shape: 0.0,
        numeric: [0.0; DIMS],
        cold: true,
    };

    /// The signal names of the scores at or above `threshold` (a score of 0 never fires).
    pub fn fired(&self, threshold: f64) -> Vec<&'static str> {
        let mut names = Vec::new();
        if fires(self.shape, threshold) {
            names.push(RARE_SHAPE);
        }
        for (dimension, score) in self.numeric.iter().enumerate() {
            if fires(*score, threshold) {
                names.push(TAIL_SIGNALS[dimension]);
            }
        }
        names
    }
}

fn fires(score: f64, threshold: f64) -> bool {
    score > 0.0 && score >= threshold
}

/// The model refuses only a `now` that is not a finite number of seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct BadTime(pub f64);

impl std::fmt::Display for BadTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "now must be a finite number of seconds: {}", self.0)
    }
}

/// One t-digest: values wait in `pending` until the next flush, which folds them in; between
/// flushes it is read frozen (`TDigest` answers from `&self`).
struct Digest {
    frozen: Option<TDigest>,
    pending: Vec<f64>,
    count: u64,
    /// The largest value known to rank below the tail quantile (until the next flush), or
    /// None when not asked yet; -inf when none was found.
    below: Option<f64>,
}

impl Digest {
    fn new() -> Self {
        Digest {
            frozen: None,
            pending: Vec::new(),
            count: 0,
            below: None,
        }
    }

    fn flush(&mut self, k: u16) {
        if self.pending.is_empty() {
            return;
        }
        let mut digest = match self.frozen.take() {
            Some(frozen) => frozen.unfreeze(),
            None => TDigestMut::new(k).expect("quantile_k validated (>= 10)"),
        };
        for value in self.pending.drain(..) {
            digest.update(value); // NaN and infinities are ignored
        }
        let frozen = digest.freeze();
        self.count = frozen.total_weight();
        self.frozen = Some(frozen);
        self.below = None;
    }

    /// The digest, when it holds values.
    fn values(&self) -> Option<&TDigest> {
        self.frozen.as_ref().filter(|d| !d.is_empty())
    }

    fn rank(&self, value: f64) -> Option<f64> {
        self.values()?.rank(value).ok().flatten()
    }

    fn quantile(&self, rank: f64) -> Option<f64> {
        self.values()?.quantile(rank).ok().flatten()
    }

    /// A value known to rank below `q` (a value at or below it ranks below `q` too, ranks
    /// being monotone in the value): the sketch's own quantile at `q` or, when that ranks at
    /// `q`, lower quantiles; -inf when none is found. Asked once per flush, so that most
    /// values (those below the tail) score by one comparison instead of a rank per window.
    fn below(&mut self, q: f64) -> f64 {
        if let Some(below) = self.below {
            return below;
        }
        let mut found = f64::NEG_INFINITY;
        let mut step = (1.0 - q) / 8.0;
        let mut at = q;
        for _ in 0..8 {
            let Some(candidate) = self.quantile(at) else {
                break;
            };
            if self.rank(candidate).is_some_and(|r| r < q) {
                found = candidate;
                break;
            }
            at = (q - step).max(0.0);
            step *= 4.0;
        }
        self.below = Some(found);
        found
    }

    fn approx_bytes(&self) -> usize {
        self.frozen.as_ref().map_or(0, |d| d.serialize().len())
    }
}

#[derive(Debug)]
struct Window {
    index: i64,
    shapes: FrequentItemsSketch<String>,
    sessions: u64,
}

struct GroupWindow {
    index: i64,
    sessions: u64,
    /// The group's own shapes: a part's share is measured among the group's sessions.
    shapes: FrequentItemsSketch<String>,
    values: [Option<Digest>; DIMS],
}

#[derive(Default)]
struct Group {
    windows: VecDeque<GroupWindow>, // oldest first
    /// The fences of the fenced dimensions for one window index and one flush.
    fences: Option<(i64, u64, [f64; DIMS])>,
}

fn frequent_items(lg_max_k: u8) -> FrequentItemsSketch<String> {
    FrequentItemsSketch::new(1usize << lg_max_k).expect("lg_max_k validated in [3, 24]")
}

/// Recent traffic, in bounded memory: at most `windows` shape sketches, and per group (at
/// most `max_groups`) `windows` shape sketches and `windows * DIMENSIONS` t-digests.
pub struct Model {
    settings: Settings,
    weights: Vec<f64>,
    windows: VecDeque<Window>, // oldest first; only windows that saw traffic
    groups: LinkedHashMap<String, Group>, // least recently observed first
    latest: f64,
    flushes: u64,
    /// Groups with values waiting for the next flush.
    pending: HashSet<String>,
}

impl Model {
    pub fn new(settings: Settings) -> Result<Model, String> {
        settings.validate()?;
        Ok(Model {
            weights: settings.weights(),
            settings,
            windows: VecDeque::new(),
            groups: LinkedHashMap::new(),
            latest: f64::NEG_INFINITY,
            flushes: 0,
            pending: HashSet::new(),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Scores with `settings` from now on, keeping every window and sketch: thresholds and
    /// weights may change, not the geometry (an error naming what changed; nothing changes).
    pub fn reconfigure(&mut self, settings: Settings) -> Result<(), String> {
        settings.validate()?;
        let fixed = self.settings.geometry_changes(&settings);
        if !fixed.is_empty() {
            return Err(format!(
                "rarity settings need a new model: {}",
                fixed.join(", ")
            ));
        }
        self.weights = settings.weights();
        self.settings = settings;
        for group in self.groups.values_mut() {
            group.fences = None;
            for window in group.windows.iter_mut() {
                for digest in window.values.iter_mut().flatten() {
                    digest.below = None;
                }
            }
        }
        Ok(())
    }

    fn index_at(&self, now: f64) -> Result<i64, BadTime> {
        if !now.is_finite() {
            return Err(BadTime(now));
        }
        Ok((now.max(self.latest) / self.settings.window_s).floor() as i64)
    }

    /// Scores a session against the traffic observed so far. `parts`: the parts of its shape
    /// (it is as rare as its rarest part). `numbers`: a value per dimension (None or NaN: not
    /// scored). `units`: per dimension, how many units the value is the largest of (its rank
    /// r becomes r**n).
    pub fn score<S: AsRef<str>>(
        &mut self,
        parts: &[S],
        group: &str,
        numbers: &[Option<f64>; DIMS],
        now: f64,
        units: &[u32; DIMS],
    ) -> Result<Scores, BadTime> {
        let index = self.index_at(now)?;
        let settings = &self.settings;
        let horizon = index.saturating_sub(settings.windows as i64); // at or before: not live
        let seen: u64 = self
            .windows
            .iter()
            .filter(|w| w.index > horizon)
            .map(|w| w.sessions)
            .sum();
        if seen < settings.warmup_sessions.max(1) {
            return Ok(Scores::COLD);
        }
        let Some(group) = self.groups.get_mut(group) else {
            return Ok(Scores::COLD);
        };
        let weights = &self.weights;
        let live: Vec<(f64, usize)> = group
            .windows
            .iter()
            .enumerate()
            .filter(|(_, gw)| gw.index > horizon)
            .map(|(i, gw)| (weights[index.saturating_sub(gw.index) as usize], i))
            .collect();
        let group_sessions: u64 = live.iter().map(|&(_, i)| group.windows[i].sessions).sum();
        if live.is_empty() || group_sessions < settings.min_group_values {
            return Ok(Scores::COLD);
        }
        let mut scores = Scores::default();
        let total: f64 = live
            .iter()
            .map(|&(w, i)| w * group.windows[i].sessions as f64)
            .sum();
        let common = 10.0 * settings.rare_shape_share * total; // from here on: scores 0
        for part in parts {
            let part = part.as_ref();
            let mut known = 0.0;
            let mut sightings = 0;
            for &(weight, i) in &live {
                let bound = group.windows[i].shapes.lower_bound(part);
                known += weight * bound as f64;
                sightings += bound;
            }
            if known >= common && sightings >= MIN_SIGHTINGS {
                continue; // most parts: common
            }
            let mut score = shape_score((known / total).min(1.0), settings.rare_shape_share);
            if score < 0.5 && sightings < MIN_SIGHTINGS {
                score = 0.5; // seen once or twice: in a small group that is already 2%
            }
            if score > scores.shape {
                scores.shape = score;
                if score >= 1.0 {
                    break;
                }
            }
        }
        let fences = match group.fences {
            Some((at, flushes, fences)) if at == index && flushes == self.flushes => fences,
            _ => {
                let mut fences = [f64::INFINITY; DIMS];
                for dimension in FENCED {
                    fences[dimension] = far_out(&group.windows, &live, dimension);
                }
                group.fences = Some((index, self.flushes, fences));
                fences
            }
        };
        let q = settings.tail_quantile;
        for (dimension, value) in numbers.iter().enumerate() {
            let Some(value) = value.filter(|v| v.is_finite()) else {
                continue;
            };
            scores.numeric[dimension] = tail_score(
                &mut group.windows,
                &live,
                dimension,
                value,
                units[dimension].max(1),
                q,
                settings.min_group_values,
                fences[dimension],
            );
        }
        Ok(scores)
    }

    /// Adds a session (after scoring it) to the current window: each distinct part of its
    /// shape, once, and its numbers (a list per dimension: one value per unit, each learned).
    pub fn observe<S: AsRef<str>>(
        &mut self,
        parts: &[S],
        group: &str,
        numbers: &[&[f64]; DIMS],
        learned: &[bool; DIMS],
        now: f64,
    ) -> Result<(), BadTime> {
        let index = self.advance(now)?;
        let mut distinct: HashSet<&str> = HashSet::with_capacity(parts.len());
        let parts: Vec<&str> = parts
            .iter()
            .map(AsRef::as_ref)
            .filter(|p| distinct.insert(*p))
            .collect();
        let Some(window) = self.windows.back_mut() else {
            return Ok(()); // advance leaves a current window
        };
        for part in &parts {
            window.shapes.update_ref(*part);
        }
        window.sessions += 1;
        let settings = &self.settings;
        let group_state = match self.groups.get_mut(group) {
            Some(_) => {
                self.groups.to_back(group);
                self.groups.get_mut(group)
            }
            None => {
                self.groups.insert(group.to_string(), Group::default());
                if self.groups.len() > settings.max_groups {
                    if let Some((evicted, _)) = self.groups.pop_front() {
                        self.pending.remove(&evicted);
                    }
                }
                self.groups.get_mut(group)
            }
        };
        let Some(group_state) = group_state else {
            return Ok(());
        };
        let group_windows = &mut group_state.windows;
        if group_windows.back().is_none_or(|gw| gw.index != index) {
            group_windows.push_back(GroupWindow {
                index,
                sessions: 0,
                shapes: frequent_items(settings.group_shape_lg_max_k),
                values: Default::default(),
            });
            expire(group_windows, index, settings.windows, |gw| gw.index);
        }
        let Some(group_window) = group_windows.back_mut() else {
            return Ok(());
        };
        group_window.sessions += 1;
        for part in &parts {
            group_window.shapes.update_ref(*part);
        }
        let mut waiting = false;
        for dimension in 0..DIMS {
            if !learned[dimension] {
                continue;
            }
            let digest = group_window.values[dimension].get_or_insert_with(Digest::new);
            digest.pending.extend_from_slice(numbers[dimension]);
            waiting |= !numbers[dimension].is_empty();
        }
        if waiting && !self.pending.contains(group) {
            self.pending.insert(group.to_string());
        }
        Ok(())
    }

    /// Adds the numbers of the sessions observed since the last flush to their t-digests.
    pub fn flush(&mut self) {
        let k = self.settings.quantile_k;
        for group in self.pending.drain() {
            if let Some(group) = self.groups.get_mut(&group) {
                for window in group.windows.iter_mut() {
                    for digest in window.values.iter_mut().flatten() {
                        digest.flush(k);
                    }
                }
            }
        }
        self.flushes += 1;
    }

    /// Sessions observed in the windows still live at `now` (unweighted).
    pub fn sessions_seen(&self, now: f64) -> Result<u64, BadTime> {
        let index = self.index_at(now)?;
        Ok(self.live(index).map(|(_, w)| w.sessions).sum())
    }

    /// The weighted share below which shapes cannot be told apart (the shape sketches' error
    /// over their traffic).
    pub fn shape_resolution(&self, now: f64) -> Result<f64, BadTime> {
        let index = self.index_at(now)?;
        let total: f64 = self.live(index).map(|(w, x)| w * x.sessions as f64).sum();
        if total == 0.0 {
            return Ok(0.0);
        }
        let error: f64 = self
            .live(index)
            .map(|(w, x)| w * x.shapes.maximum_error() as f64)
            .sum();
        Ok(error / total)
    }

    /// Groups with quantile sketches, least recently observed first.
    pub fn groups(&self) -> Vec<&str> {
        self.groups.keys().map(String::as_str).collect()
    }

    /// Serialized size of every sketch held (the memory held is a small multiple of it).
    pub fn approx_bytes(&self) -> usize {
        let mut bytes: usize = self
            .windows
            .iter()
            .map(|w| w.shapes.serialize().len())
            .sum();
        for group in self.groups.values() {
            for window in &group.windows {
                bytes += window.shapes.serialize().len();
                bytes += window
                    .values
                    .iter()
                    .flatten()
                    .map(Digest::approx_bytes)
                    .sum::<usize>();
            }
        }
        bytes
    }

    fn live(&self, index: i64) -> impl Iterator<Item = (f64, &Window)> {
        self.windows.iter().filter_map(move |window| {
            let age = index.saturating_sub(window.index);
            (age < self.settings.windows as i64).then(|| (self.weights[age as usize], window))
        })
    }

    fn advance(&mut self, now: f64) -> Result<i64, BadTime> {
        let index = self.index_at(now)?;
        self.latest = self.latest.max(now);
        if self.windows.back().is_some_and(|w| w.index == index) {
            return Ok(index);
        }
        self.windows.push_back(Window {
            index,
            shapes: frequent_items(self.settings.shape_lg_max_k),
            sessions: 0,
        });
        let windows = self.settings.windows;
        expire(&mut self.windows, index, windows, |w| w.index);
        let mut emptied = Vec::new();
        for (name, group) in self.groups.iter_mut() {
            expire(&mut group.windows, index, windows, |gw| gw.index);
            if group.windows.is_empty() {
                emptied.push(name.clone());
            }
        }
        for name in emptied {
            self.groups.remove(&name);
            self.pending.remove(&name);
        }
        Ok(index)
    }
}

fn expire<T>(windows: &mut VecDeque<T>, index: i64, count: usize, at: impl Fn(&T) -> i64) {
    while windows
        .front()
        .is_some_and(|w| index.saturating_sub(at(w)) >= count as i64)
    {
        windows.pop_front();
    }
}

fn shape_score(share: f64, rare_share: f64) -> f64 {
    if share <= 0.0 {
        return 1.0;
    }
    (0.5 + 0.5 * (rare_share / share).log10()).clamp(0.0, 1.0)
}

/// Tukey's outer fence, from the decay-weighted quartiles of the live windows (+inf when they
/// have no spread, or no values).
fn far_out(windows: &VecDeque<GroupWindow>, live: &[(f64, usize)], dimension: usize) -> f64 {
    let (mut q1, mut q3, mut weights) = (0.0, 0.0, 0.0);
    for &(weight, i) in live {
        let Some(digest) = &windows[i].values[dimension] else {
            continue;
        };
        let (Some(low), Some(high)) = (digest.quantile(0.25), digest.quantile(0.75)) else {
            continue;
        };
        let w = weight * digest.count as f64;
        q1 += w * low;
        q3 += w * high;
        weights += w;
    }
    if weights == 0.0 {
        return f64::INFINITY;
    }
    let (q1, q3) = (q1 / weights, q3 / weights);
    if q3 > q1 {
        q3 + FAR_OUT * (q3 - q1)
    } else {
        f64::INFINITY
    }
}

/// A value's tail score in its group's live windows: 0 below the tail quantile `q` of the
/// decay-weighted mixture, 0.5 at it, 1 above every value seen; 1 beyond `fence`.
#[allow(clippy::too_many_arguments)]
fn tail_score(
    windows: &mut VecDeque<GroupWindow>,
    live: &[(f64, usize)],
    dimension: usize,
    value: f64,
    units: u32,
    q: f64,
    min_values: u64,
    fence: f64,
) -> f64 {
    let count: u64 = live
        .iter()
        .filter_map(|&(_, i)| windows[i].values[dimension].as_ref())
        .map(|d| d.count)
        .sum();
    if count < min_values {
        return 0.0;
    }
    if value > fence {
        return 1.0;
    }
    // Below q in every window, the value ranks below q in their weighted mixture, and so
    // does rank**units: it scores 0 without a rank per window.
    let mut below_everywhere = true;
    for &(_, i) in live {
        if let Some(digest) = windows[i].values[dimension].as_mut() {
            if digest.count > 0 && value > digest.below(q) {
                below_everywhere = false;
                break;
            }
        }
    }
    if below_everywhere {
        return 0.0;
    }
    let (mut weighted_rank, mut weighted_count) = (0.0, 0.0);
    for &(weight, i) in live {
        let Some(digest) = &windows[i].values[dimension] else {
            continue;
        };
        let Some(rank) = digest.rank(value) else {
            continue;
        };
        let n = digest.count as f64;
        weighted_count += weight * n;
        weighted_rank += weight * n * rank;
    }
    if weighted_count == 0.0 {
        return 0.0;
    }
    let rank = (weighted_rank / weighted_count).powf(f64::from(units));
    if rank < q {
        return 0.0;
    }
    (0.5 + 0.5 * (rank - q) / (1.0 - q)).min(1.0)
}

// --- one session ----------------------------------------------------------------------------

/// How a session is scored (`SessionScorer.score` in Python says what each means).
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionOptions {
    pub fragment: bool,
    pub learn: bool,
    pub running_at_cap: bool,
    pub collapse_repeats: bool,
}

/// What `RaritySignal.score` needs of a session: its rarity scores (`dimensions` says which
/// numbers were scored: all, or for a fragment its latencies), the signals fired, and `cold`
/// (never for a fragment).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionScore {
    pub shape: f64,
    pub numeric: [f64; DIMS],
    pub dimensions: &'static [usize],
    pub fired: Vec<&'static str>,
    pub cold: bool,
}

const ALL_DIMENSIONS: [usize; DIMS] = [0, 1, 2, 3, 4, 5, 6];
const FRAGMENT_DIMENSIONS: [usize; 3] = [LATENCY, MODEL_LATENCY, TOOL_LATENCY];

/// What the model reads of a session being decided: a native `SessionView`'s (`of`), or
/// another source's with the same meaning (the bindings read any object with its attributes).
#[derive(Debug, Clone, Default)]
pub struct SessionFacts<'a> {
    /// Its tool names in start order (repeats not collapsed yet).
    pub tools: Vec<&'a str>,
    /// Its root agent: the group its numbers are ranked in.
    pub group: &'a str,
    /// Its longest turn (root span), in seconds.
    pub latency_s: f64,
    /// Its typical (median) model and tool call, in seconds.
    pub model_pace_s: f64,
    pub tool_pace_s: f64,
    pub duration_s: f64,
    pub tokens: f64,
    pub span_count: f64,
    pub tool_call_count: f64,
    /// Each ended turn's duration, in seconds.
    pub turn_latencies: Vec<f64>,
}

impl<'a> SessionFacts<'a> {
    pub fn of(view: &'a SessionView) -> Self {
        let mut calls: Vec<_> = view.tool_calls.iter().collect();
        calls.sort_by(|a, b| {
            (a.start_ns, &a.name, a.args_digest).cmp(&(b.start_ns, &b.name, b.args_digest))
        });
        SessionFacts {
            tools: calls.into_iter().map(|c| &*c.name).collect(),
            group: &view.root_agent,
            latency_s: seconds(view.longest_root_ns),
            model_pace_s: seconds(view.model_pace_ns),
            tool_pace_s: seconds(view.tool_pace_ns),
            duration_s: duration_s(view),
            tokens: view.tokens as f64,
            span_count: view.span_count as f64,
            tool_call_count: view.tool_call_count as f64,
            turn_latencies: view.turn_ns.iter().map(|ns| seconds(*ns)).collect(),
        }
    }

    /// The tool path, repeats collapsed when asked (as the session's shape collapses them).
    pub fn path(&self, collapse_repeats: bool) -> Vec<&'a str> {
        let mut path: Vec<&str> = Vec::with_capacity(self.tools.len());
        for tool in &self.tools {
            if !collapse_repeats || path.last() != Some(tool) {
                path.push(tool);
            }
        }
        path
    }
}

/// What a path's rarity is judged on (`SessionScorer.shape_parts`): each tool, each step from
/// one tool to the next (`a>b`) and, with `ends`, its first and last tool (`^a`, `b$`); `^$`
/// for a session without tools. Distinct, in that order.
pub fn shape_parts(path: &[&str], ends: bool) -> Vec<String> {
    let Some((first, last)) = path.first().zip(path.last()) else {
        return if ends { vec!["^$".to_string()] } else { vec![] };
    };
    let mut parts: Vec<String> = Vec::with_capacity(2 * path.len() + 2);
    parts.extend(path.iter().map(|tool| tool.to_string()));
    parts.extend(
        path.windows(2)
            .map(|step| format!("{}>{}", step[0], step[1])),
    );
    if ends {
        parts.push(format!("^{first}"));
        parts.push(format!("{last}$"));
    }
    let distinct: Vec<bool> = {
        let mut seen: HashSet<&str> = HashSet::with_capacity(parts.len());
        parts
            .iter()
            .map(|part| seen.insert(part.as_str()))
            .collect()
    };
    let mut distinct = distinct.into_iter();
    parts.retain(|_| distinct.next().unwrap_or(false));
    parts
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Scores a session being decided against the model, then (with `learn`) teaches it the
/// session: `RaritySignal.score`'s work in one call. Numbers are per turn where a
/// conversation of many ordinary turns would otherwise be an outlier; the longest turn is
/// ranked as the largest of the session's turns, every turn being learned.
pub fn score_session(
    model: &mut Model,
    session: &SessionFacts<'_>,
    now: f64,
    options: SessionOptions,
    threshold: f64,
) -> Result<SessionScore, BadTime> {
    let path = session.path(options.collapse_repeats);
    let parts = shape_parts(&path, !options.fragment);
    let group = session.group;
    let turns_ended = session.turn_latencies.len();
    let mut units = [1u32; DIMS];
    units[LATENCY] = u32::try_from(turns_ended).unwrap_or(u32::MAX);
    let mut numbers = [None; DIMS];
    numbers[LATENCY] = Some(session.latency_s);
    numbers[MODEL_LATENCY] = Some(session.model_pace_s);
    numbers[TOOL_LATENCY] = Some(session.tool_pace_s);
    let (scores, dimensions): (Scores, &'static [usize]) = if options.fragment {
        let scores = model.score(&parts, group, &numbers, now, &units)?;
        if options.learn {
            // its numbers were learned the first time; its steps may be new
            model.observe(&parts, group, &[&[]; DIMS], &[false; DIMS], now)?;
        }
        (scores, &FRAGMENT_DIMENSIONS)
    } else {
        // sizes per turn: a conversation of many ordinary turns is not an outlier
        let turns = turns_ended.max(1) as f64;
        numbers[DURATION] = Some(session.duration_s);
        numbers[TOKENS] = Some(session.tokens / turns);
        numbers[SPAN_COUNT] = Some(session.span_count / turns);
        numbers[TOOL_CALLS] = Some(session.tool_call_count / turns);
        let scores = model.score(&parts, group, &numbers, now, &units)?;
        if options.learn {
            let values: [f64; DIMS] = numbers.map(|n| n.unwrap_or(f64::NAN));
            let mut learned: [&[f64]; DIMS] = std::array::from_fn(|d| &values[d..d + 1]);
            if turns_ended > 0 {
                learned[LATENCY] = &session.turn_latencies; // every turn is learned
            }
            model.observe(&parts, group, &learned, &[true; DIMS], now)?;
        }
        (scores, &ALL_DIMENSIONS)
    };
    let mut fired = scores.fired(threshold);
    let mut numeric = scores.numeric;
    if options.running_at_cap && turns_ended == 0 {
        numeric[LATENCY] = 1.0;
        if !fired.contains(&TAIL_SIGNALS[LATENCY]) {
            fired.push(TAIL_SIGNALS[LATENCY]);
        }
    }
    Ok(SessionScore {
        shape: scores.shape,
        numeric,
        dimensions,
        fired,
        cold: scores.cold && !options.fragment,
    })
}

/// Last end - first start, in seconds (0 without a start, or when it ends before).
pub fn duration_s(view: &SessionView) -> f64 {
    if view.first_start_ns == 0 || view.last_end_ns < view.first_start_ns {
        return 0.0;
    }
    seconds(view.last_end_ns - view.first_start_ns)
}

#[cfg(test)]
mod tests {
    //! Like datasketches' own tests, these check what the model promises (scores at known
    //! shares and ranks, bounds, determinism), mirroring tests/unit/signals/test_rarity.py.
    use std::sync::Arc;

    use super::*;
    use crate::buffer::SessionId;
    use crate::features::ToolCall;

    const NONE: [Option<f64>; DIMS] = [None; DIMS];
    const ONE: [u32; DIMS] = [1; DIMS];
    const NO_VALUES: [&[f64]; DIMS] = [&[]; DIMS];

    fn settings(change: impl FnOnce(&mut Settings)) -> Settings {
        let mut settings = Settings::default();
        change(&mut settings);
        settings
    }

    fn model(change: impl FnOnce(&mut Settings)) -> Model {
        Model::new(settings(change)).expect("valid settings")
    }

    fn observe_shapes(model: &mut Model, shapes: &[&str], group: &str, now: f64) {
        for shape in shapes {
            model
                .observe(&[shape], group, &NO_VALUES, &[false; DIMS], now)
                .unwrap();
        }
        model.flush();
    }

    fn common(n: usize) -> Vec<&'static str> {
        const COMMON: [&str; 5] = ["t0", "t1", "t2", "t3", "t4"];
        (0..n).map(|i| COMMON[i % 5]).collect()
    }

    fn shape(model: &mut Model, part: &str, group: &str, now: f64) -> f64 {
        model.score(&[part], group, &NONE, now, &ONE).unwrap().shape
    }

    fn numbers(dimension: usize, value: f64) -> [Option<f64>; DIMS] {
        let mut numbers = NONE;
        numbers[dimension] = Some(value);
        numbers
    }

    fn learn(model: &mut Model, group: &str, dimension: usize, values: &[f64], now: f64) {
        let mut learned = NO_VALUES;
        learned[dimension] = values;
        let mut which = [false; DIMS];
        which[dimension] = true;
        model.observe(&["s"], group, &learned, &which, now).unwrap();
    }

    fn log_score(rare_share: f64, share: f64) -> f64 {
        0.5 + 0.5 * (rare_share / share).log10()
    }

    #[test]
    fn nothing_is_rare_until_the_warmup_is_over() {
        let mut model = model(|_| ());
        observe_shapes(&mut model, &common(199), "support", 0.0);
        let cold = model
            .score(
                &["never-seen"],
                "support",
                &numbers(DURATION, 1e9),
                0.0,
                &ONE,
            )
            .unwrap();
        assert_eq!(cold, Scores::COLD);
        assert!(cold.fired(0.0).is_empty());
        assert_eq!(model.sessions_seen(0.0), Ok(199));

        observe_shapes(&mut model, &common(1), "support", 0.0);
        let warm = model
            .score(&["never-seen"], "support", &NONE, 0.0, &ONE)
            .unwrap();
        assert_eq!((warm.shape, warm.cold), (1.0, false));
        assert_eq!(warm.fired(0.5), vec![RARE_SHAPE]);
    }

    #[test]
    fn shape_scores_are_log_linear_in_the_share_and_half_at_the_boundary() {
        let mut model = model(|s| s.rare_shape_share = 0.002);
        let counts = [
            ("once", 1),
            ("twice", 2),
            ("ten", 10),
            ("twenty", 20),
            ("hundred", 100),
        ];
        let mut total = 0;
        for (name, count) in counts {
            observe_shapes(&mut model, &vec![name; count], "support", 0.0);
            total += count;
        }
        observe_shapes(&mut model, &common(5000 - total), "support", 0.0);

        let cases = [
            ("never", 1.0),
            ("once", 0.5_f64.max(1.0)), // 0.02%: a tenth of the boundary, clipped to 1
            ("twice", 0.5),             // seen twice: 0.85 by its share, and at least 0.5
            ("ten", 0.5),
            ("twenty", log_score(0.002, 0.004)),
            ("hundred", 0.0),
        ];
        for (part, expected) in cases {
            let got = shape(&mut model, part, "support", 0.0);
            let expected = if part == "twice" {
                log_score(0.002, 0.0004)
            } else {
                expected
            };
            assert!((got - expected).abs() < 1e-9, "{part}: {got} != {expected}");
        }
        assert_eq!(shape(&mut model, "ten", "support", 0.0), 0.5); // exactly
    }

    #[test]
    fn older_windows_weigh_less_and_age_out_whole() {
        for (decay, windows_later, expected) in [
            (0.5, 5, log_score(0.05, 15.625 / 1031.25)),
            (1.0, 5, log_score(0.05, 0.25)),
            (0.5, 6, 1.0),
        ] {
            let mut model = model(|s| {
                s.decay = decay;
                s.rare_shape_share = 0.05;
            });
            let mut first = vec!["fading"; 500];
            first.extend(common(500));
            observe_shapes(&mut model, &first, "support", 0.0);
            let later = 300.0 * f64::from(windows_later);
            observe_shapes(&mut model, &common(1000), "support", later);
            let got = shape(&mut model, "fading", "support", later);
            assert!(
                (got - expected).abs() < 1e-9,
                "{decay} {windows_later}: {got}"
            );
        }
    }

    #[test]
    fn a_small_group_is_cold_and_a_quiet_agents_usual_path_is_not_rare() {
        let mut model = model(|s| s.rare_shape_share = 0.01);
        observe_shapes(&mut model, &common(9951), "support", 0.0);
        observe_shapes(&mut model, &["quiet:usual"; 49], "quiet", 0.0);
        let small = model
            .score(&["quiet:other"], "quiet", &numbers(TOKENS, 1e9), 0.0, &ONE)
            .unwrap();
        assert_eq!(small, Scores::COLD);

        observe_shapes(&mut model, &["quiet:usual"], "quiet", 0.0);
        assert_eq!(shape(&mut model, "quiet:usual", "quiet", 0.0), 0.0);
        assert_eq!(shape(&mut model, "quiet:other", "quiet", 0.0), 1.0);
        assert!(
            model
                .score(&["x"], "unknown", &NONE, 0.0, &ONE)
                .unwrap()
                .cold
        );
    }

    #[test]
    fn a_common_shape_is_never_rare_however_many_one_offs_go_by() {
        let mut model = model(|s| s.rare_shape_share = 0.002);
        let names: Vec<String> = (0..16_000).map(|i| format!("one-off-{i}")).collect();
        for i in 0..4000 {
            let mut batch: Vec<&str> = names[4 * i..4 * i + 4].iter().map(|s| s.as_str()).collect();
            batch.push(common(5)[i % 5]);
            observe_shapes(&mut model, &batch, "support", 0.0);
        }
        let resolution = model.shape_resolution(0.0).unwrap();
        assert!(
            0.0 < resolution && resolution <= 3.5 / 1024.0,
            "{resolution}"
        );
        for part in common(5) {
            assert_eq!(shape(&mut model, part, "support", 0.0), 0.0);
        }
        assert_eq!(shape(&mut model, "one-off-7", "support", 0.0), 1.0);
    }

    fn hundred_values() -> Model {
        let mut model = model(|s| s.warmup_sessions = 100);
        for i in 0..100 {
            learn(&mut model, "support", DURATION, &[f64::from(i)], 0.0);
        }
        model.flush();
        model
    }

    #[test]
    fn the_tail_score_is_half_at_the_tail_quantile_then_linear() {
        let mut model = hundred_values();
        for (value, expected) in [
            (50.0, 0.0),
            (98.4, 0.0),
            (98.5, 0.5),
            (99.0, 0.75),
            (99.5, 1.0),
        ] {
            // twice: the second answers from what the first remembered
            for _ in 0..2 {
                let scores = model
                    .score(&["s"], "support", &numbers(DURATION, value), 0.0, &ONE)
                    .unwrap();
                let got = scores.numeric[DURATION];
                assert!(
                    (got - expected).abs() < 1e-9,
                    "{value}: {got} != {expected}"
                );
            }
        }
        let at_tail = model
            .score(&["s"], "support", &numbers(DURATION, 98.5), 0.0, &ONE)
            .unwrap();
        assert_eq!(at_tail.fired(0.5), vec!["tail_duration"]);
    }

    #[test]
    fn the_longest_turn_is_ranked_as_the_longest_of_its_turns() {
        let mut model = model(|s| s.warmup_sessions = 0);
        let values: Vec<f64> = (0..1000).map(f64::from).collect();
        for turns in values.chunks(10) {
            learn(&mut model, "support", LATENCY, turns, 0.0);
        }
        model.flush();
        for (value, turns, fires) in [(995.0, 1, true), (995.0, 10, false), (999.9, 10, true)] {
            let mut units = ONE;
            units[LATENCY] = turns;
            let scores = model
                .score(&["s"], "support", &numbers(LATENCY, value), 0.0, &units)
                .unwrap();
            assert_eq!(scores.numeric[LATENCY] >= 0.5, fires, "{value} of {turns}");
        }
    }

    #[test]
    fn a_typical_value_beyond_the_fence_is_tail_however_many_share_it() {
        let mut model = model(|s| s.warmup_sessions = 0);
        // 950 normal sessions around 1 s, 50 slow ones around 4 s (5%: inside the p99)
        for i in 0..1000 {
            let value = if i < 950 {
                0.8 + 0.4 * f64::from(i) / 950.0
            } else {
                3.5 + f64::from(i - 950) / 50.0
            };
            let mut learned = NO_VALUES;
            let values = [value];
            learned[MODEL_LATENCY] = &values;
            learned[LATENCY] = &values;
            let mut which = [false; DIMS];
            which[MODEL_LATENCY] = true;
            which[LATENCY] = true;
            model
                .observe(&["s"], "support", &learned, &which, 0.0)
                .unwrap();
        }
        model.flush();
        let mut slow = NONE;
        slow[MODEL_LATENCY] = Some(3.6);
        slow[LATENCY] = Some(3.6);
        let scores = model.score(&["s"], "support", &slow, 0.0, &ONE).unwrap();
        assert_eq!(scores.numeric[MODEL_LATENCY], 1.0);
        assert_eq!(scores.numeric[LATENCY], 0.0); // an extreme, not fenced: ranked only
        let usual = model
            .score(&["s"], "support", &numbers(MODEL_LATENCY, 1.19), 0.0, &ONE)
            .unwrap();
        assert_eq!(usual.numeric[MODEL_LATENCY], 0.0);
    }

    #[test]
    fn groups_are_bounded_least_recently_observed_evicted() {
        let mut model = model(|s| {
            s.warmup_sessions = 0;
            s.min_group_values = 1;
            s.max_groups = 3;
        });
        for group in ["a", "b", "c", "a"] {
            learn(&mut model, group, DURATION, &[1.0], 0.0);
        }
        model
            .score(&["s"], "b", &numbers(DURATION, 5.0), 0.0, &ONE)
            .unwrap(); // scoring is not a use
        learn(&mut model, "d", DURATION, &[1.0], 0.0);
        model.flush();
        assert_eq!(model.groups(), vec!["c", "a", "d"]);
        let evicted = model.score(&["s"], "b", &numbers(DURATION, 5.0), 0.0, &ONE);
        assert_eq!(evicted.unwrap().numeric[DURATION], 0.0);
        let kept = model.score(&["s"], "a", &numbers(DURATION, 5.0), 0.0, &ONE);
        assert_eq!(kept.unwrap().numeric[DURATION], 1.0);
    }

    #[test]
    fn time_never_goes_backwards_and_must_be_finite() {
        let mut model = model(|_| ());
        observe_shapes(&mut model, &common(300), "support", 1000.0);
        observe_shapes(&mut model, &["late"; 300], "support", 10.0); // counts as 1000
        assert_eq!(model.sessions_seen(10.0), Ok(600));
        assert_eq!(shape(&mut model, "late", "support", 10.0), 0.0);
        for bad in [f64::NAN, f64::INFINITY] {
            let refused = model.observe(&["s"], "g", &NO_VALUES, &[false; DIMS], bad);
            assert!(refused.unwrap_err().to_string().contains("finite"));
        }
        // a jump of any size leaves nothing live behind
        observe_shapes(&mut model, &["after"], "support", 1e300);
        assert_eq!(model.sessions_seen(1e300), Ok(1));
        observe_shapes(&mut model, &["before"], "support", -1e300);
        assert_eq!(model.sessions_seen(0.0), Ok(2));
    }

    fn replay(seed: u64) -> Vec<Scores> {
        // a small deterministic generator: the point is the same input twice
        let mut state = seed;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as f64 / f64::from(1u32 << 31)
        };
        let mut model = model(|s| s.warmup_sessions = 100);
        let mut scores = Vec::new();
        for i in 0..3000 {
            let part = format!("s{}", (1.0 / (next() + 0.002)) as u32 % 500);
            let group = format!("g{}", i % 3);
            let mut values = NONE;
            values[DURATION] = Some((next() * 3.0).exp());
            values[TOKENS] = Some((next() * 9999.0).floor());
            let now = f64::from(i) * 0.5;
            scores.push(model.score(&[&part], &group, &values, now, &ONE).unwrap());
            let learned: [f64; DIMS] = values.map(|v| v.unwrap_or(f64::NAN));
            let slices: [&[f64]; DIMS] = std::array::from_fn(|d| &learned[d..d + 1]);
            model
                .observe(&[&part], &group, &slices, &[true; DIMS], now)
                .unwrap();
            model.flush();
        }
        scores
    }

    #[test]
    fn the_same_traffic_gives_the_same_scores() {
        let (first, second) = (replay(3), replay(3));
        assert_eq!(first, second);
        assert!(first.iter().any(|s| s.shape > 0.0));
        assert!(first.iter().any(|s| s.numeric[DURATION] > 0.0));
        for s in &first {
            assert!((0.0..=1.0).contains(&s.shape));
            assert!(s.numeric.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }

    #[test]
    fn memory_is_bounded_under_high_cardinality() {
        let limits = settings(|s| {
            s.window_s = 100.0;
            s.max_groups = 256;
        });
        let mut model = Model::new(limits.clone()).unwrap();
        let mut sizes = Vec::new();
        for i in 0..50_000u32 {
            let part = format!("agent-{}:tool-{i:05}", i % 1000);
            let group = format!("agent-{}", i % 1000);
            learn_part(&mut model, &part, &group, f64::from(i), f64::from(i) / 60.0);
            if i % 5000 == 4999 {
                model.flush();
                sizes.push(model.approx_bytes());
            }
        }
        let shapes_bound = 64 + (0.75 * 1024.0) as usize * ("agent-999:tool-00000".len() + 16);
        let values_bound = 16 * usize::from(limits.quantile_k);
        let bound =
            limits.windows * shapes_bound + limits.max_groups * limits.windows * values_bound;
        assert_eq!(model.groups().len(), 256);
        assert!(
            sizes.iter().all(|size| *size <= bound),
            "{sizes:?} > {bound}"
        );
        let full = &sizes[sizes.len() - 3..];
        let (low, high) = (full.iter().min().unwrap(), full.iter().max().unwrap());
        assert!(*high as f64 <= 1.2 * *low as f64, "{full:?}");
    }

    fn learn_part(model: &mut Model, part: &str, group: &str, tokens: f64, now: f64) {
        let mut learned = NO_VALUES;
        let values = [tokens];
        learned[TOKENS] = &values;
        let mut which = [false; DIMS];
        which[TOKENS] = true;
        model
            .observe(&[part], group, &learned, &which, now)
            .unwrap();
    }

    #[test]
    fn invalid_settings_are_refused_every_problem_at_once() {
        let refused = Model::new(settings(|s| {
            s.windows = 0;
            s.max_groups = 0;
            s.rare_shape_share = 0.0;
            s.quantile_k = 9;
            s.group_shape_lg_max_k = 25;
        }));
        let message = refused.err().unwrap();
        for name in [
            "windows",
            "max_groups",
            "rare_shape_share",
            "quantile_k",
            "group_shape",
        ] {
            assert!(message.contains(name), "{message}");
        }
        assert!(Model::new(settings(|s| s.window_s = f64::NAN)).is_err());
        assert!(Model::new(settings(|s| s.decay = 1.5)).is_err());
        assert!(Model::new(settings(|s| s.tail_quantile = 1.0)).is_err());
        // a ring too large to hold (and ages beyond a small integer) is refused, not built
        assert!(Model::new(settings(|s| s.windows = MAX_WINDOWS + 1)).is_err());
        assert!(Model::new(settings(|s| s.windows = usize::MAX)).is_err());
        assert!(Model::new(settings(|s| s.windows = MAX_WINDOWS)).is_ok());
    }

    #[test]
    fn a_reconfigured_model_keeps_its_sketches_and_forgets_its_answers() {
        let mut model = hundred_values();
        for _ in 0..20 {
            let scores = model.score(&["s"], "support", &numbers(DURATION, 95.0), 0.0, &ONE);
            assert_eq!(scores.unwrap().numeric[DURATION], 0.0);
        }
        let wider = settings(|s| {
            s.warmup_sessions = 100;
            s.tail_quantile = 0.9;
        });
        model.reconfigure(wider).unwrap();
        let scores = model.score(&["s"], "support", &numbers(DURATION, 95.0), 0.0, &ONE);
        let expected = 0.5 + 0.5 * (0.955 - 0.9) / 0.1;
        assert!((scores.unwrap().numeric[DURATION] - expected).abs() < 0.01);

        let refused = model.reconfigure(settings(|s| s.windows = 3));
        assert!(refused.unwrap_err().contains("windows"));
        assert_eq!(model.settings().tail_quantile, 0.9);
    }

    #[test]
    fn shape_parts_are_tools_steps_and_ends_once_each() {
        assert_eq!(
            shape_parts(&["a", "b", "a", "b"], true),
            vec!["a", "b", "a>b", "b>a", "^a", "b$"]
        );
        assert_eq!(shape_parts(&["a", "b"], false), vec!["a", "b", "a>b"]);
        assert_eq!(shape_parts(&[], true), vec!["^$"]);
        assert!(shape_parts(&[], false).is_empty());
    }

    fn call(start_ns: u64, name: &str) -> ToolCall {
        ToolCall {
            start_ns,
            name: Arc::from(name),
            args_digest: 0,
            turn: 0,
            failed: false,
            end_ns: start_ns + 1,
        }
    }

    fn view(agent: &str, tools: &[&str], turns: &[u64]) -> SessionView {
        SessionView {
            id: SessionId::from_u64(1),
            key: "k".into(),
            keyed: true,
            trace_ids: vec![[1; 16]],
            randomness: 0,
            span_count: 10,
            span_bytes: 0,
            memory: 0,
            error_spans: 0,
            error_kinds: 0,
            first_start_ns: 1,
            last_end_ns: 2_000_000_001,
            test_bits: 0,
            tokens: 1000,
            tool_call_count: tools.len() as u64,
            tool_calls: (0..).zip(tools).map(|(i, t)| call(10 - i, t)).collect(),
            model_starts: vec![],
            turn_ns: turns.to_vec(),
            model_pace_ns: 500_000_000,
            tool_pace_ns: 100_000_000,
            tool_repeats: (1, 1),
            agents: vec![],
            parents: vec![],
            links: vec![],
            root_agent: Arc::from(agent),
            longest_root_ns: turns.iter().copied().max().unwrap_or(0),
            slowest_llm_ns: 0,
            decided_before: false,
            kept_elsewhere: None,
            awaiting_look: false,
            rootless: false,
            created: 0.0,
        }
    }

    fn options(fragment: bool, learn: bool) -> SessionOptions {
        SessionOptions {
            fragment,
            learn,
            running_at_cap: false,
            collapse_repeats: true,
        }
    }

    #[test]
    fn a_session_is_scored_then_learned_in_one_call() {
        let mut model = model(|s| s.warmup_sessions = 0);
        // tools started in the reverse of their arrival: the path is in start order
        let usual = view("support", &["answer", "search", "search"], &[1_000_000_000]);
        let facts = SessionFacts::of(&usual);
        assert_eq!(facts.path(true), vec!["search", "answer"]);
        assert_eq!(facts.path(false), vec!["search", "search", "answer"]);
        assert_eq!(facts.duration_s, 2.0);
        for i in 0..60 {
            let scored = score_session(
                &mut model,
                &SessionFacts::of(&usual),
                0.0,
                options(false, true),
                0.5,
            );
            assert_eq!(scored.unwrap().cold, i < 50, "session {i}");
            model.flush();
        }
        assert_eq!(model.sessions_seen(0.0), Ok(60));
        let scored = score_session(
            &mut model,
            &SessionFacts::of(&usual),
            0.0,
            options(false, false),
            0.5,
        )
        .unwrap();
        assert_eq!(
            (scored.shape, scored.cold, scored.dimensions.len()),
            (0.0, false, 7)
        );
        assert!(scored.fired.is_empty());
        assert_eq!(model.sessions_seen(0.0), Ok(60)); // a second look teaches nothing

        let odd = view("support", &["refund"], &[30_000_000_000]);
        let scored = score_session(
            &mut model,
            &SessionFacts::of(&odd),
            0.0,
            options(false, false),
            0.5,
        )
        .unwrap();
        assert_eq!(scored.shape, 1.0);
        assert_eq!(scored.numeric[LATENCY], 1.0);
        assert_eq!(scored.fired, vec![RARE_SHAPE, "tail_latency"]);

        // a fragment: its latencies and its path's steps only, never cold, teaches its parts
        let fragment = score_session(
            &mut model,
            &SessionFacts::of(&odd),
            0.0,
            options(true, true),
            0.5,
        )
        .unwrap();
        assert_eq!(fragment.dimensions, &[LATENCY, MODEL_LATENCY, TOOL_LATENCY]);
        assert!(!fragment.cold);
        assert_eq!(model.sessions_seen(0.0), Ok(61));

        // still running at max_session_duration with no turn ended: tail_latency
        let running = view("support", &["answer", "search"], &[]);
        let at_cap = SessionOptions {
            running_at_cap: true,
            ..options(false, false)
        };
        let scored =
            score_session(&mut model, &SessionFacts::of(&running), 0.0, at_cap, 0.5).unwrap();
        assert_eq!(scored.numeric[LATENCY], 1.0);
        assert_eq!(scored.fired, vec!["tail_latency"]);
    }
}
