//! The core as Python drives it: requests in (whole or in chunks), sessions out, verdicts back.
use super::*;
use crate::extract::{ExtractorSettings, KeyTable};
use crate::otlp::validate_request;
use crate::wire::{put_len, put_tag, put_varint, I64, VARINT};

fn ld(number: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_len(&mut out, number, payload);
    out
}

/// A span of trace `trace` (16 bytes of that value), span id `id`, a root unless `parent`.
fn span(trace: u8, id: u8, parent: Option<u8>, key: Option<&str>) -> Vec<u8> {
    let mut out = [ld(1, &[trace; 16]), ld(2, &[id; 8])].concat();
    if let Some(parent) = parent {
        out.extend(ld(4, &[parent; 8]));
    }
    out.extend(ld(5, format!("span-{id}").as_bytes()));
    put_tag(&mut out, 8, I64);
    out.extend_from_slice(&u64::from(id).to_le_bytes());
    if let Some(key) = key {
        let kv = [ld(1, b"session.id"), ld(2, &ld(1, key.as_bytes()))].concat();
        out.extend(ld(9, &kv));
    }
    out
}

/// A request with `spans` split over two resources, two scopes each.
fn request(spans: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (r, resource_spans) in spans.chunks(spans.len().div_ceil(2).max(1)).enumerate() {
        let mut rs = ld(
            1,
            &ld(
                1,
                &[
                    ld(1, b"service.name"),
                    ld(2, &ld(1, format!("svc{r}").as_bytes())),
                ]
                .concat(),
            ),
        );
        for (s, scope_spans) in resource_spans
            .chunks(resource_spans.len().div_ceil(2).max(1))
            .enumerate()
        {
            let mut ss = ld(1, &ld(1, format!("scope{s}").as_bytes()));
            for one in scope_spans {
                ss.extend(ld(2, one));
            }
            rs.extend(ld(2, &ss));
        }
        out.extend(ld(1, &rs));
    }
    out
}

fn core() -> Core {
    let extractor = Extractor::new(
        &ExtractorSettings::default(),
        Vec::new(),
        KeyTable::default(),
    );
    Core::new(
        extractor,
        SessionSettings::default(),
        RequestLimits {
            max_spans: 100,
            max_bytes: 1 << 20,
        },
    )
}

fn ingest_all(core: &mut Core, body: &[u8], now: f64, chunk: usize) -> Ingested {
    validate_request(body, 1000).expect("valid");
    let mut cursor = Cursor::default();
    let mut total = Ingested::default();
    while !cursor.done {
        let part = core.ingest(body, &mut cursor, now, chunk).expect("ingests");
        total.accepted += part.accepted;
        total.invalid += part.invalid;
        total.late_kept += part.late_kept;
        total.late_dropped += part.late_dropped;
        total.requests.extend(part.requests);
    }
    total
}

fn conversation() -> Vec<Vec<u8>> {
    vec![
        span(1, 2, Some(1), None),
        span(1, 3, Some(1), None),
        span(1, 1, None, Some("conv")),
        span(2, 5, Some(4), None),
        span(2, 4, None, Some("conv")),
        span(3, 7, None, None), // a lone trace
    ]
}

/// (key, span count, trace count) of each session, sorted.
fn sessions(core: &mut Core) -> Vec<(String, u64, usize)> {
    let ids = core.buffer.pop_all();
    let mut out: Vec<_> = core
        .views(&ids)
        .into_iter()
        .map(|v| (v.key.to_string(), v.span_count, v.trace_ids.len()))
        .collect();
    for id in ids {
        core.release(id);
    }
    out.sort();
    out
}

#[test]
fn spans_group_into_conversations_and_lone_traces() {
    let mut core = core();
    let ingested = ingest_all(&mut core, &request(&conversation()), 0.0, 4096);
    assert_eq!((ingested.accepted, ingested.invalid), (6, 0));
    assert_eq!(
        sessions(&mut core),
        vec![
            ("03030303030303030303030303030303".into(), 1, 1),
            ("conv".into(), 5, 2)
        ]
    );
}

#[test]
fn a_request_ingested_in_chunks_groups_as_a_whole_one() {
    for chunk in [1, 2, 4, 5] {
        let mut core = core();
        ingest_all(&mut core, &request(&conversation()), 0.0, chunk);
        assert_eq!(sessions(&mut core).len(), 2, "chunks of {chunk}");
    }
}

#[test]
fn invalid_ids_are_counted_not_buffered() {
    let mut core = core();
    let mut no_trace = ld(2, &[1; 8]);
    no_trace.extend(ld(5, b"x"));
    let zero_span = [ld(1, &[1; 16]), ld(2, &[0; 8])].concat();
    let short_trace = [ld(1, &[1; 15]), ld(2, &[1; 8])].concat();
    let ingested = ingest_all(
        &mut core,
        &request(&[no_trace, zero_span, short_trace, span(4, 1, None, None)]),
        0.0,
        4096,
    );
    assert_eq!((ingested.accepted, ingested.invalid), (1, 3));
    assert_eq!(core.buffer.span_count, 1);
}

#[test]
fn a_kept_session_comes_back_annotated_and_its_late_spans_follow_it() {
    let mut core = core();
    ingest_all(&mut core, &request(&conversation()[..5]), 0.0, 4096);
    let ids = core.buffer.pop_all();
    let verdict = core.verdict(true, "errors", 1.0, &["error"]);
    let requests = core.decide(ids[0], verdict, false);
    assert_eq!(requests.iter().map(|r| r.1).sum::<usize>(), 5);
    let body = &requests[0].0;
    assert!(validate_request(body, 100).is_ok());
    assert!(body
        .windows(b"agent_sampler.rule".len())
        .any(|w| w == b"agent_sampler.rule"));
    assert_eq!(core.buffer.live_sessions(), 0); // kept: freed
    let late = ingest_all(&mut core, &request(&[span(2, 9, Some(4), None)]), 1.0, 4096);
    assert_eq!((late.accepted, late.late_kept), (1, 1));
    assert_eq!(late.requests.iter().map(|r| r.1).sum::<usize>(), 1);
}

#[test]
fn a_dropped_session_is_held_then_reopened_by_a_new_turn() {
    let mut core = core();
    ingest_all(&mut core, &request(&conversation()[..3]), 0.0, 4096);
    let ids = core.buffer.pop_all();
    let drop = core.verdict(false, "baseline", 1.0, &[]);
    assert!(core.decide(ids[0], drop, false).is_empty());
    assert!(core.hold(ids[0], false, 0.0, 1));
    assert_eq!((core.buffer.held_spans(), core.buffer.span_count), (3, 0));
    ingest_all(&mut core, &request(&conversation()[3..5]), 1.0, 4096);
    assert_eq!(
        (
            core.buffer.held_spans(),
            core.buffer.span_count,
            core.buffer.reopened
        ),
        (0, 5, 1)
    );
    let ids = core.buffer.pop_all();
    let views = core.views(&ids);
    assert!(views[0].decided_before);
}

#[test]
fn memory_is_accounted_and_given_back() {
    let mut core = core();
    ingest_all(&mut core, &request(&conversation()), 0.0, 4096);
    let bytes = core.buffer.span_bytes;
    assert!(core.buffer.memory > bytes);
    let ids = core.buffer.pop_all();
    assert_eq!((core.buffer.memory, core.buffer.span_bytes), (0, 0));
    for id in ids {
        core.release(id);
    }
    assert_eq!(core.buffer.live_sessions(), 0);
}

#[test]
fn an_unreadable_request_is_an_error_not_a_panic() {
    let mut core = core();
    let mut cursor = Cursor::default();
    let body = [0x0a, 0x05, 0x12];
    assert!(core.ingest(&body, &mut cursor, 0.0, 10).is_err());
    let mut varint = Vec::new();
    put_tag(&mut varint, 1, VARINT);
    put_varint(&mut varint, 1);
    let mut cursor = Cursor::default();
    assert!(core.ingest(&varint, &mut cursor, 0.0, 10).is_ok()); // an unknown-typed field: skipped
    assert!(cursor.done);
}

// --- shadow mode ---------------------------------------------------------------------------

fn occurrences(requests: &[KeptRequest], needle: &[u8]) -> usize {
    requests
        .iter()
        .map(|(body, _)| body.windows(needle.len()).filter(|w| *w == needle).count())
        .sum()
}

fn spans_in(requests: &[KeptRequest]) -> usize {
    requests.iter().map(|r| r.1).sum()
}

fn shadow_core() -> Core {
    let mut core = core();
    core.set_shadow(true);
    core
}

const VERDICT_KEY: &[u8] = b"agent_sampler.verdict";

#[test]
fn shadow_mode_sends_a_dropped_session_when_it_is_let_go_annotated_as_dropped() {
    let mut core = shadow_core();
    ingest_all(&mut core, &request(&conversation()[..3]), 0.0, 4096);
    let ids = core.buffer.pop_all();
    let drop = core.verdict(false, "baseline", 1.0, &["rare_shape"]);
    assert!(core.decide(ids[0], drop, false).is_empty());
    assert!(core.hold(ids[0], false, 0.0, 1)); // held as in live mode: nothing out yet
    let held = core.buffer.hold_pop_all();
    let out = core.release(held[0].id);
    assert_eq!(spans_in(&out), 3);
    assert!(out
        .iter()
        .all(|(body, _)| validate_request(body, 100).is_ok()));
    assert_eq!(occurrences(&out, VERDICT_KEY), 3);
    assert_eq!(occurrences(&out, b"drop"), 3);
    assert_eq!(occurrences(&out, b"agent_sampler.adjusted_count"), 0);
    assert_eq!(core.buffer.live_sessions(), 0);
    // a late span follows the drop, and goes out too
    let late = ingest_all(&mut core, &request(&[span(1, 9, Some(1), None)]), 1.0, 4096);
    assert_eq!((late.late_kept, late.late_dropped), (0, 1));
    assert_eq!(spans_in(&late.requests), 1);
    assert_eq!(occurrences(&late.requests, b"drop"), 1);
}

#[test]
fn live_mode_sends_nothing_of_a_dropped_session() {
    let mut core = core();
    ingest_all(&mut core, &request(&conversation()[..3]), 0.0, 4096);
    let ids = core.buffer.pop_all();
    let drop = core.verdict(false, "baseline", 1.0, &[]);
    core.decide(ids[0], drop, false);
    assert!(core.release(ids[0]).is_empty());
    let late = ingest_all(&mut core, &request(&[span(1, 9, Some(1), None)]), 1.0, 4096);
    assert_eq!((late.late_dropped, late.requests.len()), (1, 0));
}

#[test]
fn shadow_mode_sends_a_reopened_conversation_once_with_its_last_verdict() {
    let mut core = shadow_core();
    ingest_all(&mut core, &request(&conversation()[..3]), 0.0, 4096);
    let ids = core.buffer.pop_all();
    let drop = core.verdict(false, "baseline", 1.0, &[]);
    core.decide(ids[0], drop, false);
    assert!(core.hold(ids[0], false, 0.0, 1));
    let second = ingest_all(&mut core, &request(&conversation()[3..5]), 1.0, 4096);
    assert!(second.requests.is_empty()); // the new turn reopened it
    let ids = core.buffer.pop_all();
    let keep = core.verdict(true, "errors", 1.0, &["error"]);
    let out = core.decide(ids[0], keep, false);
    assert_eq!(spans_in(&out), 5);
    assert_eq!(occurrences(&out, b"keep"), 5);
    assert_eq!(occurrences(&out, b"drop"), 0);
}

#[test]
fn a_kept_second_look_goes_out_once_as_kept() {
    let mut core = shadow_core();
    ingest_all(&mut core, &request(&conversation()[..3]), 0.0, 4096);
    let ids = core.buffer.pop_all();
    let drop = core.verdict(false, "baseline", 1.0, &[]);
    core.decide(ids[0], drop, false);
    assert!(core.hold(ids[0], true, 0.0, 1));
    let held = core.buffer.hold_pop_all();
    let keep = core.verdict(true, "rare", 1.0, &["rare_shape"]);
    let out = core.decide(held[0].id, keep, false);
    assert_eq!((spans_in(&out), occurrences(&out, b"drop")), (3, 0));
    assert!(core.release(held[0].id).is_empty()); // gone: nothing more goes out
    assert_eq!(core.buffer.live_sessions(), 0);
}

#[test]
fn shadow_keeps_carry_no_threshold_live_ones_below_one_do() {
    for (shadow, expected) in [(false, 5), (true, 0)] {
        let mut core = core();
        core.set_shadow(shadow);
        ingest_all(&mut core, &request(&conversation()[..5]), 0.0, 4096);
        let ids = core.buffer.pop_all();
        let keep = core.verdict(true, "sampled", 2.0, &[]);
        let out = core.decide(ids[0], keep, false);
        assert_eq!(occurrences(&out, b"ot=th:"), expected, "shadow {shadow}");
        assert_eq!(occurrences(&out, VERDICT_KEY), if shadow { 5 } else { 0 });
    }
}

#[test]
fn late_spans_take_the_mode_they_arrive_in() {
    let mut core = core();
    ingest_all(&mut core, &request(&conversation()[..3]), 0.0, 4096);
    let ids = core.buffer.pop_all();
    let drop = core.verdict(false, "baseline", 1.0, &[]);
    core.decide(ids[0], drop, false);
    assert!(core.release(ids[0]).is_empty()); // live: dropped for good
    core.set_shadow(true);
    let late = ingest_all(&mut core, &request(&[span(1, 9, Some(1), None)]), 1.0, 4096);
    assert_eq!(occurrences(&late.requests, VERDICT_KEY), 1);
    core.set_shadow(false);
    let late = ingest_all(
        &mut core,
        &request(&[span(1, 10, Some(1), None)]),
        2.0,
        4096,
    );
    assert!(late.requests.is_empty());
}

// --- reloads --------------------------------------------------------------------------------

/// `session.id` exists, on the span (a test a reload can add or take away).
fn has_session_id(keys: &mut KeyTable) -> SpanTest {
    SpanTest::Attribute {
        key: keys.add("session.id"),
        scope: crate::span_tests::Scope::Span,
        op: crate::span_tests::AttributeOp::Exists,
    }
}

#[test]
fn new_span_tests_see_the_spans_that_arrive_after_them() {
    let mut core = core();
    // the root of trace 1 (with session.id) arrives before the test exists
    ingest_all(&mut core, &request(&conversation()[..3]), 0.0, 4096);
    let mut keys = KeyTable::default();
    let tests = vec![SpanTest::Vacant, has_session_id(&mut keys)];
    core.set_span_tests(tests, keys, 0b10);
    assert_eq!(core.extractor.span_tests(), 2);
    let ids = core.buffer.pop_all();
    assert_eq!(core.views(&ids)[0].test_bits, 0);
    for id in ids {
        core.release(id);
    }
    ingest_all(&mut core, &request(&conversation()[3..5]), 1.0, 4096);
    let ids = core.buffer.pop_all();
    assert_eq!(core.views(&ids)[0].test_bits, 0b10);
}

#[test]
fn a_position_given_to_another_test_forgets_what_the_old_one_found() {
    let mut keys = KeyTable::default();
    let tests = vec![has_session_id(&mut keys)];
    let extractor = Extractor::new(&ExtractorSettings::default(), tests, keys);
    let limits = RequestLimits {
        max_spans: 100,
        max_bytes: 1 << 20,
    };
    let mut core = Core::new(extractor, SessionSettings::default(), limits);
    ingest_all(&mut core, &request(&conversation()[..3]), 0.0, 4096);
    // kept at its position: what it found stays
    let mut keys = KeyTable::default();
    core.set_span_tests(vec![has_session_id(&mut keys)], keys, 0);
    let ids = core.buffer.pop_all();
    assert_eq!(core.views(&ids)[0].test_bits, 1);
    let drop = core.verdict(false, "baseline", 1.0, &[]);
    core.decide(ids[0], drop, false);
    assert!(core.hold(ids[0], false, 0.0, 1));
    // position 0 now holds another test: cleared in held sessions too
    let other = SpanTest::SpanName(vec!["span-7".into()]);
    core.set_span_tests(vec![other], KeyTable::default(), 1);
    let held = core.buffer.hold_pop_all();
    assert_eq!(core.view(held[0].id).unwrap().test_bits, 0);
}

#[test]
fn shorter_waits_apply_to_sessions_already_buffered() {
    let mut core = core();
    ingest_all(&mut core, &request(&conversation()[..3]), 0.0, 4096);
    assert!(core.buffer.pop_due(10.0).is_empty()); // decision_wait 30s
    let mut settings = *core.buffer.settings();
    settings.decision_wait = 5.0;
    core.set_session_settings(settings).unwrap();
    assert_eq!(core.buffer.pop_due(10.0).len(), 1);
    settings.tick = 0.5;
    assert!(core.set_session_settings(settings).is_err());
    assert_eq!(core.buffer.settings().tick, 0.1);
}

#[test]
fn a_lower_span_cap_makes_bigger_sessions_due_at_once() {
    let mut core = core();
    ingest_all(&mut core, &request(&conversation()[..3]), 0.0, 4096);
    let mut settings = *core.buffer.settings();
    settings.max_session_spans = 2;
    core.set_session_settings(settings).unwrap();
    assert_eq!(core.buffer.pop_due(0.0).len(), 1);
}

// -- verdicts shared by peer samplers (the cluster) ----------------------------------------

fn peer_keep(core: &mut Core) -> Arc<Verdict> {
    core.verdict(true, "keep-errors", 1.0, &["error", "shared_keep"])
}

#[test]
fn a_peers_keep_sends_the_held_part_at_once_and_later_turns_follow_it() {
    let mut core = core();
    ingest_all(&mut core, &request(&conversation()[..3]), 0.0, 4096);
    let ids = core.buffer.pop_all();
    let drop = core.verdict(false, "baseline", 1.0, &[]);
    core.decide(ids[0], drop, false);
    assert!(core.hold(ids[0], false, 0.0, 1));

    let keep = peer_keep(&mut core);
    let (requests, spans) = core.adopt_keep("conv", keep.clone());
    assert_eq!((spans, spans_in(&requests)), (3, 3));
    assert_eq!(occurrences(&requests, b"keep-errors"), 3);
    assert_eq!(occurrences(&requests, b"shared_keep"), 3);
    assert_eq!(
        (core.buffer.held_spans(), core.buffer.live_sessions()),
        (0, 0)
    );

    // a second announcement of the same keep finds nothing more to send
    assert_eq!(core.adopt_keep("conv", keep).1, 0);
    // the next turn follows the keep, its root (with the key) arriving last
    let late = ingest_all(&mut core, &request(&conversation()[3..5]), 1.0, 4096);
    assert_eq!((late.late_kept, spans_in(&late.requests)), (2, 2));
    // and so does a late span of a trace of the held part
    let late = ingest_all(&mut core, &request(&[span(1, 9, Some(1), None)]), 2.0, 4096);
    assert_eq!(late.late_kept, 1);
}

#[test]
fn a_buffered_part_learns_of_a_peers_keep_and_is_decided_with_it() {
    let mut core = core();
    ingest_all(&mut core, &request(&conversation()), 0.0, 4096);
    let keep = peer_keep(&mut core);
    assert_eq!(core.adopt_keep("conv", keep).1, 0); // buffered: kept when decided
    assert_eq!(core.buffer.span_count, 6);
    let ids = core.buffer.pop_all();
    let views = core.views(&ids);
    let kept: Vec<_> = views
        .iter()
        .map(|v| {
            (
                v.key.to_string(),
                v.kept_elsewhere.as_ref().map(|k| k.rule.to_string()),
            )
        })
        .collect();
    assert!(kept.contains(&("conv".into(), Some("keep-errors".into()))));
    assert!(kept.contains(&("03030303030303030303030303030303".into(), None)));
}

#[test]
fn a_local_keep_is_not_replaced_by_a_peers() {
    let mut core = core();
    ingest_all(&mut core, &request(&conversation()[..3]), 0.0, 4096);
    let ids = core.buffer.pop_all();
    let mine = core.verdict(true, "mine", 1.0, &[]);
    core.decide(ids[0], mine, false);
    let keep = peer_keep(&mut core);
    assert_eq!(core.adopt_keep("conv", keep).1, 0);
    let late = ingest_all(&mut core, &request(&conversation()[3..5]), 1.0, 4096);
    assert_eq!(occurrences(&late.requests, b"mine"), 2);
}

#[test]
fn a_keyless_held_session_is_no_conversation_to_adopt() {
    let mut core = core();
    ingest_all(&mut core, &request(&conversation()[5..]), 0.0, 4096);
    let ids = core.buffer.pop_all();
    let drop = core.verdict(false, "baseline", 1.0, &[]);
    core.decide(ids[0], drop, false);
    assert!(core.hold(ids[0], false, 0.0, 1));
    let keep = peer_keep(&mut core);
    let (_, spans) = core.adopt_keep("03030303030303030303030303030303", keep);
    assert_eq!((spans, core.buffer.held_spans()), (0, 1));
}

#[test]
fn shadow_mode_sends_an_adopted_part_once_as_kept() {
    let mut core = shadow_core();
    ingest_all(&mut core, &request(&conversation()[..3]), 0.0, 4096);
    let ids = core.buffer.pop_all();
    let drop = core.verdict(false, "baseline", 1.0, &[]);
    core.decide(ids[0], drop, false);
    assert!(core.hold(ids[0], false, 0.0, 1));
    let keep = peer_keep(&mut core);
    let (requests, _) = core.adopt_keep("conv", keep);
    assert_eq!(spans_in(&requests), 3);
    assert_eq!(occurrences(&requests, b"baseline"), 0);
    assert!(core.release(ids[0]).is_empty()); // freed: the drop never goes out
}

mod arbitrary {
    use super::*;
    use proptest::prelude::*;

    /// A valid request, then bytes overwritten, inserted or cut at random places.
    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        let base = request(&conversation());
        let len = base.len();
        proptest::collection::vec((0..len, any::<u8>(), 0u8..3), 0..8).prop_map(move |edits| {
            let mut body = base.clone();
            for (at, byte, how) in edits {
                let at = at.min(body.len().saturating_sub(1));
                match how {
                    0 if !body.is_empty() => body[at] = byte,
                    1 => body.insert(at, byte),
                    _ => body.truncate(at.max(1)),
                }
            }
            body
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_are_refused_or_read_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if validate_request(&bytes, 1000).is_ok() {
                let mut core = core();
                ingest_all(&mut core, &bytes, 0.0, 3);
            }
        }

        #[test]
        fn whatever_validates_is_ingested_whole(body in mutated()) {
            let Ok(summary) = validate_request(&body, 1000) else { return Ok(()) };
            let mut core = core();
            let mut cursor = Cursor::default();
            let mut seen = 0;
            while !cursor.done {
                let part = core.ingest(&body, &mut cursor, 0.0, 2).expect("a validated request ingests");
                seen += part.accepted + part.invalid;
            }
            prop_assert_eq!(seen as usize, summary.spans);
            let ids = core.buffer.pop_all();
            let verdict = core.verdict(true, "r", 2.0, &[]);
            for id in ids {
                for (request, _) in core.decide(id, verdict.clone(), true) {
                    prop_assert!(validate_request(&request, 1000).is_ok()); // what goes out is valid
                }
            }
        }
    }
}

#[test]
fn a_request_of_empty_blocks_is_ingested_in_steps() {
    // 5,000 empty resource blocks then a span: no step takes more than its budget of blocks
    let mut body = ld(1, &[]).repeat(5_000);
    body.extend(request(&[span(1, 1, None, None)]));
    validate_request(&body, 1000).expect("valid");
    let mut core = core();
    let mut cursor = Cursor::default();
    let mut steps = 0;
    let mut accepted = 0;
    while !cursor.done {
        let part = core.ingest(&body, &mut cursor, 1.0, 100).expect("ingests");
        accepted += part.accepted;
        steps += 1;
        assert!(steps <= 100, "no progress");
    }
    assert_eq!(accepted, 1);
    assert!(steps >= 50, "{steps} steps for 5,000 blocks at 100 a step");
    // the smallest budget still makes progress
    let mut core2 = self::core();
    assert_eq!(ingest_all(&mut core2, &body, 1.0, 1).accepted, 1);
}

#[test]
fn a_large_span_counts_for_its_size() {
    let mut big = span(1, 1, None, None);
    let kv = [ld(1, b"blob"), ld(2, &ld(1, &[b'x'; 64 << 10]))].concat();
    big.extend(ld(9, &kv));
    let body = request(&[big, span(1, 2, Some(1), None), span(1, 3, Some(1), None)]);
    let mut core = core();
    let mut cursor = Cursor::default();
    let first = core.ingest(&body, &mut cursor, 1.0, 32).expect("ingests");
    assert_eq!(
        first.accepted, 1,
        "64 KiB is 64 units: the step ends after it"
    );
    assert_eq!(ingest_all(&mut self::core(), &body, 1.0, 32).accepted, 3);
}
