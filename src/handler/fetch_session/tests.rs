//! The session cache and contexts with plain values: epochs, forgotten partitions, what an
//! incremental answer keeps, eviction, errors.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use skiff_time::SequentialIds;

use super::*;

fn name(t: &str) -> TopicName {
    TopicName(StrBytes::from_string(t.to_string()))
}

fn request(session_id: i32, epoch: i32, parts: &[(&str, i32, i64)]) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (t, p, offset) in parts {
        let partition =
            FetchPartition::default().with_partition(*p).with_fetch_offset(*offset).with_partition_max_bytes(1 << 20);
        match topics.last_mut() {
            Some(last) if last.topic == name(t) => last.partitions.push(partition),
            _ => topics.push(FetchTopic::default().with_topic(name(t)).with_partitions(vec![partition])),
        }
    }
    FetchRequest::default().with_session_id(session_id).with_session_epoch(epoch).with_topics(topics)
}

fn data(partition: i32, hwm: i64, records: &[u8]) -> PartitionData {
    PartitionData::default()
        .with_partition_index(partition)
        .with_high_watermark(hwm)
        .with_last_stable_offset(hwm)
        .with_log_start_offset(0)
        .with_preferred_read_replica(BrokerId(-1))
        .with_records(Some(Bytes::copy_from_slice(records)))
}

/// The answer the fetch handler builds for `req`: one response topic per request topic, every
/// partition at high watermark `hwm` and no records unless listed in `with_records`.
fn answer(req: &FetchRequest, hwm: i64, with_records: &[(&str, i32)]) -> FetchResponse {
    let responses = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let has = with_records.iter().any(|(n, i)| name(n) == t.topic && *i == p.partition);
                    data(p.partition, hwm, if has { b"batch" } else { b"" })
                })
                .collect();
            FetchableTopicResponse::default().with_topic(t.topic.clone()).with_partitions(partitions)
        })
        .collect();
    FetchResponse::default().with_responses(responses)
}

fn answered(response: &FetchResponse) -> Vec<(String, i32)> {
    response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), p.partition_index)))
        .collect()
}

fn cache(slots: usize) -> SessionCache {
    SessionCache::new(slots, Arc::new(SequentialIds::default()))
}

/// Opens a full session over `parts` at `now_ms`, answered at high watermark 10.
fn full(cache: &mut SessionCache, parts: &[(&str, i32, i64)], follower: bool, now_ms: i64) -> i32 {
    let req = request(0, INITIAL_EPOCH, parts);
    let Context::Full { privileged } = cache.open(&req, follower, now_ms) else { panic!("a full context") };
    let mut response = answer(&req, 10, &[]);
    cache.complete_full(&req, &mut response, privileged, now_ms);
    response.session_id
}

/// An incremental fetch answered at high watermark `hwm` with records for `with_records`.
fn incremental(
    cache: &mut SessionCache,
    req: &FetchRequest,
    hwm: i64,
    with_records: &[(&str, i32)],
) -> Result<FetchResponse, SessionError> {
    match cache.open(req, false, 0) {
        Context::Incremental { id, epoch, request } => {
            let mut response = answer(&request, hwm, with_records);
            cache.complete_incremental(id, epoch, &mut response).map(|()| response)
        }
        Context::Error(e) => Err(e),
        other => panic!("unexpected context {other:?}"),
    }
}

#[test]
fn epochs_follow_kafkas_fetch_metadata() {
    assert_eq!(next_epoch(0), 1);
    assert_eq!(next_epoch(41), 42);
    assert_eq!(next_epoch(i32::MAX), 1, "wraps to 1, never to the initial epoch");
    assert_eq!(next_epoch(FINAL_EPOCH), FINAL_EPOCH);
}

#[test]
fn a_full_fetch_creates_a_session_and_incremental_fetches_answer_only_news() {
    let mut c = cache(10);
    let parts: Vec<(&str, i32, i64)> = (0..100).map(|p| ("t", p, 0)).collect();
    let id = full(&mut c, &parts, false, 0);
    assert_ne!(id, INVALID_SESSION_ID);
    assert_eq!((c.len(), c.partitions()), (1, 100));

    // Nothing changed: no partition.
    let r = incremental(&mut c, &request(id, 1, &[]), 10, &[]).expect("epoch 1");
    assert_eq!(r.session_id, id);
    assert!(answered(&r).is_empty(), "{:?}", answered(&r));

    // Records on one partition: that one alone.
    let r = incremental(&mut c, &request(id, 2, &[]), 10, &[("t", 37)]).expect("epoch 2");
    assert_eq!(answered(&r), vec![("t".to_string(), 37)]);

    // The high watermark moved everywhere: every partition, once.
    let r = incremental(&mut c, &request(id, 3, &[]), 11, &[]).expect("epoch 3");
    assert_eq!(answered(&r).len(), 100);
    let r = incremental(&mut c, &request(id, 4, &[]), 11, &[]).expect("epoch 4");
    assert!(answered(&r).is_empty());
}

#[test]
fn changed_request_parameters_are_kept_and_answered_partitions_move_to_the_end() {
    let mut c = cache(10);
    let id = full(&mut c, &[("a", 0, 0), ("a", 1, 0), ("b", 0, 0)], false, 0);
    // The client moved partition a-0 to offset 5.
    let Context::Incremental { request, .. } = c.open(&request(id, 1, &[("a", 0, 5)]), false, 0) else {
        panic!("incremental")
    };
    let offsets: Vec<(String, i32, i64)> = request
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), p.partition, p.fetch_offset)))
        .collect();
    assert_eq!(offsets, vec![("a".into(), 0, 5), ("a".into(), 1, 0), ("b".into(), 0, 0)]);
    let mut response = answer(&request, 10, &[("a", 0)]);
    c.complete_incremental(id, 2, &mut response).expect("current epoch");
    // a-0 answered: read last next time; a-1 and b-0 first.
    let Context::Incremental { request, .. } = c.open(&request_for(id, 2), false, 0) else { panic!("incremental") };
    let order: Vec<(String, i32)> =
        request.topics.iter().flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), p.partition))).collect();
    assert_eq!(order, vec![("a".into(), 1), ("b".into(), 0), ("a".into(), 0)]);
    assert_eq!(request.topics.len(), 3, "a, b, a: consecutive runs grouped");
}

fn request_for(id: i32, epoch: i32) -> FetchRequest {
    request(id, epoch, &[])
}

#[test]
fn forgotten_partitions_leave_the_session_and_an_emptied_session_closes() {
    let mut c = cache(10);
    let id = full(&mut c, &[("t", 0, 0), ("t", 1, 0), ("u", 0, 0)], false, 0);
    let mut req = request(id, 1, &[("t", 2, 0)]);
    req.forgotten_topics_data = vec![ForgottenTopic::default().with_topic(name("t")).with_partitions(vec![0, 1, 9])];
    let Context::Incremental { id: got, epoch, request: inner } = c.open(&req, false, 0) else { panic!("incremental") };
    assert_eq!((got, epoch), (id, 2));
    let left: Vec<(String, i32)> =
        inner.topics.iter().flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), p.partition))).collect();
    assert_eq!(left, vec![("u".into(), 0), ("t".into(), 2)]);
    assert!(inner.forgotten_topics_data.is_empty());
    assert_eq!(c.partitions(), 2);
    let mut response = answer(&inner, 10, &[]);
    c.complete_incremental(id, 2, &mut response).expect("current");
    assert_eq!(answered(&response), vec![("t".to_string(), 2)], "the new partition is news, u-0 is not");

    // Added and forgotten in one request: forgotten wins (Kafka applies forgets last).
    let mut req = request(id, 2, &[("v", 0, 0)]);
    req.forgotten_topics_data = vec![
        ForgottenTopic::default().with_topic(name("v")).with_partitions(vec![0]),
        ForgottenTopic::default().with_topic(name("u")).with_partitions(vec![0]),
        ForgottenTopic::default().with_topic(name("t")).with_partitions(vec![2]),
    ];
    assert!(matches!(c.open(&req, false, 0), Context::Sessionless));
    assert!(c.is_empty());
    assert_eq!(c.partitions(), 0);
}

#[test]
fn session_errors_are_kafkas() {
    let mut c = cache(10);
    let id = full(&mut c, &[("t", 0, 0)], false, 0);
    assert_eq!(
        c.open(&request(id + 1, 1, &[]), false, 0).error(),
        Some(SessionError::IdNotFound(id + 1)),
        "an unknown id"
    );
    assert_eq!(
        c.open(&request(id, 5, &[]), false, 0).error(),
        Some(SessionError::InvalidEpoch { id, requested: 5, expected: 1 }),
        "a wrong epoch"
    );
    // An id of 0 with a positive epoch names no session.
    assert_eq!(c.open(&request(0, 1, &[]), false, 0).error(), Some(SessionError::IdNotFound(0)));
    // A wrong epoch does not disturb the session: the right one still works.
    assert!(incremental(&mut c, &request(id, 1, &[]), 10, &[]).is_ok());
    // Replaying epoch 1 is now wrong.
    assert!(matches!(
        incremental(&mut c, &request(id, 1, &[]), 10, &[]),
        Err(SessionError::InvalidEpoch { expected: 2, .. })
    ));
}

#[test]
fn two_fetches_racing_on_one_session_cannot_both_update_it() {
    let mut c = cache(10);
    let id = full(&mut c, &[("t", 0, 0)], false, 0);
    let Context::Incremental { epoch: first, request: r1, .. } = c.open(&request(id, 1, &[]), false, 0) else {
        panic!()
    };
    // A second request with the next epoch is accepted while the first still waits.
    let Context::Incremental { epoch: second, .. } = c.open(&request(id, 2, &[]), false, 0) else { panic!() };
    assert_eq!((first, second), (2, 3));
    let mut late = answer(&r1, 11, &[("t", 0)]);
    let e = c.complete_incremental(id, first, &mut late).expect_err("the session moved on");
    assert!(matches!(e, SessionError::InvalidEpoch { .. }));
    assert!(late.responses.is_empty());
}

#[test]
fn full_fetches_close_the_session_they_name_and_final_epoch_creates_none() {
    let mut c = cache(10);
    let id = full(&mut c, &[("t", 0, 0)], false, 0);
    assert!(matches!(c.open(&request(id, FINAL_EPOCH, &[]), false, 0), Context::Sessionless));
    assert!(c.is_empty(), "closed");
    let id = full(&mut c, &[("t", 0, 0)], false, 0);
    let again = request(id, INITIAL_EPOCH, &[("t", 0, 0)]);
    assert!(matches!(c.open(&again, false, 0), Context::Full { privileged: false }));
    assert!(c.is_empty(), "the named session is closed before a new one is made");
    // Fetch v4-6 have no session fields: they decode as (0, -1).
    assert!(matches!(c.open(&FetchRequest::default(), false, 0), Context::Sessionless));
}

#[test]
fn errors_are_always_answered_and_resent_once_cleared() {
    let mut c = cache(10);
    let id = full(&mut c, &[("t", 0, 0), ("t", 1, 0)], false, 0);
    let Context::Incremental { id, epoch, request } = c.open(&request(id, 1, &[]), false, 0) else { panic!() };
    let mut r = answer(&request, 10, &[]);
    r.responses[0].partitions[1].error_code = 6; // NOT_LEADER_OR_FOLLOWER
    c.complete_incremental(id, epoch, &mut r).expect("current");
    assert_eq!(answered(&r), vec![("t".to_string(), 1)]);
    // Cleared, at the same high watermark as before: sent again, since the error reset it.
    let r = incremental(&mut c, &request_for(id, 2), 10, &[]).expect("current");
    assert_eq!(answered(&r), vec![("t".to_string(), 1)]);
    let r = incremental(&mut c, &request_for(id, 3), 10, &[]).expect("current");
    assert!(answered(&r).is_empty());
}

#[test]
fn a_preferred_read_replica_is_always_answered() {
    let mut c = cache(10);
    let id = full(&mut c, &[("t", 0, 0)], false, 0);
    let Context::Incremental { id, epoch, request } = c.open(&request_for(id, 1), false, 0) else { panic!() };
    let mut r = answer(&request, 10, &[]);
    r.responses[0].partitions[0].preferred_read_replica = BrokerId(3);
    c.complete_incremental(id, epoch, &mut r).expect("current");
    assert_eq!(answered(&r), vec![("t".to_string(), 0)]);
}

#[test]
fn log_start_and_last_stable_offset_changes_are_news() {
    let mut c = cache(10);
    let id = full(&mut c, &[("t", 0, 0), ("t", 1, 0)], false, 0);
    let Context::Incremental { id, epoch, request } = c.open(&request_for(id, 1), false, 0) else { panic!() };
    let mut r = answer(&request, 10, &[]);
    r.responses[0].partitions[0].log_start_offset = 4;
    r.responses[0].partitions[1].last_stable_offset = 7;
    c.complete_incremental(id, epoch, &mut r).expect("current");
    assert_eq!(answered(&r).len(), 2);
}

#[test]
fn a_throttled_full_fetch_leaves_no_session_but_a_throttled_incremental_one_keeps_it() {
    let mut c = cache(10);
    let id = full(&mut c, &[("t", 0, 0)], false, 0);
    assert!(c.throttled(id));
    assert!(c.is_empty());
    let id = full(&mut c, &[("t", 0, 0)], false, 0);
    assert!(incremental(&mut c, &request_for(id, 1), 10, &[]).is_ok());
    assert!(!c.throttled(id));
    assert!(!c.throttled(INVALID_SESSION_ID));
    assert_eq!(c.len(), 1);
}

#[test]
fn no_slot_no_session() {
    let mut c = cache(0);
    assert_eq!(full(&mut c, &[("t", 0, 0)], false, 0), INVALID_SESSION_ID);
    let mut c = cache(1);
    assert_ne!(full(&mut c, &[("t", 0, 0)], false, 0), INVALID_SESSION_ID);
    // Full, and the one session is young and in use: the next client goes sessionless.
    assert_eq!(full(&mut c, &[("t", 0, 0), ("t", 1, 0)], false, 1_000), INVALID_SESSION_ID);
    assert_eq!((c.len(), c.evictions()), (1, 0));
}

#[test]
fn a_stale_session_is_evicted_first() {
    let mut c = cache(2);
    let old = full(&mut c, &[("t", 0, 0); 1], false, 0);
    let busy = full(&mut c, &[("t", 0, 0), ("t", 1, 0)], false, 100_000);
    // `old` unused for more than 120 s: any new session takes its slot.
    let new = full(&mut c, &[("t", 0, 0)], false, 120_001);
    assert_ne!(new, INVALID_SESSION_ID);
    assert_eq!((c.len(), c.evictions()), (2, 1));
    assert!(matches!(c.open(&request_for(old, 1), false, 120_001), Context::Error(SessionError::IdNotFound(_))));
    assert!(matches!(c.open(&request_for(busy, 1), false, 120_001), Context::Incremental { .. }));
}

#[test]
fn an_old_smaller_session_yields_to_a_larger_new_one() {
    let mut c = cache(1);
    let small = full(&mut c, &[("t", 0, 0)], false, 0);
    // Used recently (not stale), but created more than 120 s before that use: evictable by
    // size.
    assert!(incremental_at(&mut c, small, 1, 200_000));
    // A smaller new session does not evict it; an equal or larger one does.
    assert_eq!(full(&mut c, &[], false, 200_001), INVALID_SESSION_ID);
    let big = full(&mut c, &[("t", 0, 0), ("t", 1, 0)], false, 200_002);
    assert_ne!(big, INVALID_SESSION_ID);
    assert_eq!(c.evictions(), 1);
    assert_eq!(c.partitions(), 2);
}

#[test]
fn a_followers_session_may_evict_a_young_consumers_but_not_the_reverse() {
    let mut c = cache(1);
    let consumer = full(&mut c, &[("t", 0, 0), ("t", 1, 0)], false, 0);
    let follower = full(&mut c, &[("t", 0, 0)], true, 1_000);
    assert_ne!(follower, INVALID_SESSION_ID, "privileged beats any consumer session");
    assert!(matches!(c.open(&request_for(consumer, 1), false, 1_000), Context::Error(_)));
    assert_eq!(full(&mut c, &[("t", 0, 0), ("t", 1, 0), ("t", 2, 0)], false, 2_000), INVALID_SESSION_ID);
    assert_eq!(c.evictions(), 1);
}

fn incremental_at(c: &mut SessionCache, id: i32, epoch: i32, now_ms: i64) -> bool {
    match c.open(&request_for(id, epoch), false, now_ms) {
        Context::Incremental { id, epoch, request } => {
            let mut response = answer(&request, 10, &[]);
            c.complete_incremental(id, epoch, &mut response).is_ok()
        }
        _ => false,
    }
}

#[test]
fn metrics_name_sessions_partitions_and_evictions() {
    let sessions = FetchSessions::new(1, Arc::new(SequentialIds::default()));
    sessions.with(|c| full(c, &[("t", 0, 0), ("t", 1, 0)], false, 0));
    sessions.with(|c| full(c, &[("t", 0, 0)], false, 200_000));
    let text = sessions.render_metrics();
    assert!(text.contains("skiff_fetch_sessions 1\n"), "{text}");
    assert!(text.contains("skiff_fetch_session_partitions 1\n"), "{text}");
    assert!(text.contains("skiff_fetch_session_evictions_total 1\n"), "{text}");
}

impl Context {
    fn error(&self) -> Option<SessionError> {
        match self {
            Context::Error(e) => Some(*e),
            _ => None,
        }
    }
}
