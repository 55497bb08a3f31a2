//! Tests of the transaction state machine with plain values: RFC 0004 §2's table row by row,
//! KIP-360, retried EndTxn (TV1, TV2), the epoch limit, timers, and property tests over random
//! op sequences and partition histories.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;
use uuid::Uuid;

use super::*;

const PID: i64 = 7;
const FRESH: i64 = 1000;
const MAX: i16 = i16::MAX;

fn p(i: i32) -> TxnPartition {
    (Uuid::from_u128(1), i)
}

fn limits() -> TxnLimits {
    TxnLimits::default()
}

fn tv2_server() -> TxnLimits {
    TxnLimits { server_version: TxnVersion::Tv2, ..TxnLimits::default() }
}

/// A stored state; open ones (Ongoing, Prepare*) hold partition 0 and started at 100.
fn st(state: TxnStatus, producer_id: i64, producer_epoch: i16) -> TxnState {
    let open = matches!(state, TxnStatus::Ongoing | TxnStatus::PrepareCommit | TxnStatus::PrepareAbort);
    TxnState {
        producer_id,
        producer_epoch,
        prev_producer_id: producer_id,
        next_producer_id: NO_PRODUCER_ID,
        last_epoch: NO_PRODUCER_EPOCH,
        timeout_ms: 60_000,
        state,
        partitions: if open { BTreeSet::from([p(0)]) } else { BTreeSet::new() },
        groups: BTreeSet::new(),
        start_ms: if open { 100 } else { -1 },
        updated_ms: 100,
        client_version: TxnVersion::Tv1,
    }
}

fn init(now_ms: i64) -> TxnOp {
    TxnOp::InitProducerId { timeout_ms: 60_000, expected: None, now_ms }
}

fn init_expecting(producer_id: i64, producer_epoch: i16, now_ms: i64) -> TxnOp {
    TxnOp::InitProducerId {
        timeout_ms: 60_000,
        expected: Some(ProducerIdAndEpoch { producer_id, producer_epoch }),
        now_ms,
    }
}

fn add(producer_id: i64, producer_epoch: i16, parts: &[i32], now_ms: i64) -> TxnOp {
    TxnOp::AddPartitions {
        producer_id,
        producer_epoch,
        partitions: parts.iter().map(|i| p(*i)).collect(),
        version: TxnVersion::Tv1,
        now_ms,
    }
}

fn add_offsets(producer_id: i64, producer_epoch: i16, now_ms: i64) -> TxnOp {
    TxnOp::AddOffsets { producer_id, producer_epoch, group: "g".into(), version: TxnVersion::Tv1, now_ms }
}

fn end(producer_id: i64, producer_epoch: i16, commit: bool, version: TxnVersion, now_ms: i64) -> TxnOp {
    TxnOp::EndTxn { producer_id, producer_epoch, commit, version, now_ms }
}

fn pe(producer_id: i64, producer_epoch: i16) -> Answer {
    Answer::Producer(ProducerIdAndEpoch { producer_id, producer_epoch })
}

fn run(state: Option<&TxnState>, op: &TxnOp) -> Result<Applied, TxnError> {
    apply(state, op, &limits(), FRESH)
}

enum Expect {
    /// Applied: the new status, producer id and epoch, and the answer.
    To(TxnStatus, i64, i16, Answer),
    /// Applied without a change.
    Same(Answer),
    Err(TxnError),
}

use TxnStatus::*;
use TxnVersion::{Tv1, Tv2};

/// Every row of RFC 0004 §2's table, with its answers (wrong epoch, wrong pid included).
#[test]
fn rfc_table_transitions_and_answers() {
    let cases: Vec<(&str, Option<TxnState>, TxnOp, Expect)> = vec![
        // none / Empty / Complete* + InitProducerId → Empty, epoch+1.
        ("new id", None, init(200), Expect::To(Empty, FRESH, 0, pe(FRESH, 0))),
        ("Empty init", Some(st(Empty, PID, 5)), init(200), Expect::To(Empty, PID, 6, pe(PID, 6))),
        ("CompleteCommit init", Some(st(CompleteCommit, PID, 5)), init(200), Expect::To(Empty, PID, 6, pe(PID, 6))),
        ("CompleteAbort init", Some(st(CompleteAbort, PID, 5)), init(200), Expect::To(Empty, PID, 6, pe(PID, 6))),
        (
            "timeout above transaction.max.timeout.ms",
            Some(st(Empty, PID, 5)),
            TxnOp::InitProducerId { timeout_ms: 900_001, expected: None, now_ms: 200 },
            Expect::Err(TxnError::InvalidTransactionTimeout),
        ),
        (
            "timeout 0",
            None,
            TxnOp::InitProducerId { timeout_ms: 0, expected: None, now_ms: 200 },
            Expect::Err(TxnError::InvalidTransactionTimeout),
        ),
        (
            "timeout at the maximum",
            None,
            TxnOp::InitProducerId { timeout_ms: 900_000, expected: None, now_ms: 200 },
            Expect::To(Empty, FRESH, 0, pe(FRESH, 0)),
        ),
        // Ongoing + InitProducerId → (PrepareEpochFence →) PrepareAbort, epoch+1, CONCURRENT_TRANSACTIONS.
        (
            "Ongoing init fences",
            Some(st(Ongoing, PID, 5)),
            init(200),
            Expect::To(PrepareAbort, PID, 6, Answer::Error(TxnError::ConcurrentTransactions)),
        ),
        (
            "PrepareCommit init",
            Some(st(PrepareCommit, PID, 5)),
            init(200),
            Expect::Err(TxnError::ConcurrentTransactions),
        ),
        ("PrepareAbort init", Some(st(PrepareAbort, PID, 5)), init(200), Expect::Err(TxnError::ConcurrentTransactions)),
        // Empty / Complete* / Ongoing + AddPartitions, AddOffsets → Ongoing.
        ("Empty add", Some(st(Empty, PID, 5)), add(PID, 5, &[1], 200), Expect::To(Ongoing, PID, 5, Answer::Ok)),
        (
            "CompleteCommit add",
            Some(st(CompleteCommit, PID, 5)),
            add(PID, 5, &[1], 200),
            Expect::To(Ongoing, PID, 5, Answer::Ok),
        ),
        (
            "CompleteAbort add",
            Some(st(CompleteAbort, PID, 5)),
            add(PID, 5, &[1], 200),
            Expect::To(Ongoing, PID, 5, Answer::Ok),
        ),
        ("Ongoing add new", Some(st(Ongoing, PID, 5)), add(PID, 5, &[1], 200), Expect::To(Ongoing, PID, 5, Answer::Ok)),
        ("Ongoing add already added", Some(st(Ongoing, PID, 5)), add(PID, 5, &[0], 200), Expect::Same(Answer::Ok)),
        (
            "Empty add offsets",
            Some(st(Empty, PID, 5)),
            add_offsets(PID, 5, 200),
            Expect::To(Ongoing, PID, 5, Answer::Ok),
        ),
        (
            "PrepareCommit add",
            Some(st(PrepareCommit, PID, 5)),
            add(PID, 5, &[1], 200),
            Expect::Err(TxnError::ConcurrentTransactions),
        ),
        (
            "PrepareAbort add offsets",
            Some(st(PrepareAbort, PID, 5)),
            add_offsets(PID, 5, 200),
            Expect::Err(TxnError::ConcurrentTransactions),
        ),
        ("add wrong epoch", Some(st(Ongoing, PID, 5)), add(PID, 4, &[1], 200), Expect::Err(TxnError::ProducerFenced)),
        (
            "add wrong pid",
            Some(st(Ongoing, PID, 5)),
            add(PID + 1, 5, &[1], 200),
            Expect::Err(TxnError::InvalidProducerIdMapping),
        ),
        ("add unknown id", None, add(PID, 5, &[1], 200), Expect::Err(TxnError::InvalidProducerIdMapping)),
        // Ongoing + EndTxn → Prepare* (TV2: epoch+1).
        (
            "Ongoing commit TV1",
            Some(st(Ongoing, PID, 5)),
            end(PID, 5, true, Tv1, 200),
            Expect::To(PrepareCommit, PID, 5, Answer::Ok),
        ),
        (
            "Ongoing abort TV1",
            Some(st(Ongoing, PID, 5)),
            end(PID, 5, false, Tv1, 200),
            Expect::To(PrepareAbort, PID, 5, Answer::Ok),
        ),
        (
            "Ongoing commit TV2",
            Some(st(Ongoing, PID, 5)),
            end(PID, 5, true, Tv2, 200),
            Expect::To(PrepareCommit, PID, 6, pe(PID, 6)),
        ),
        (
            "Ongoing abort TV2",
            Some(st(Ongoing, PID, 5)),
            end(PID, 5, false, Tv2, 200),
            Expect::To(PrepareAbort, PID, 6, pe(PID, 6)),
        ),
        (
            "end wrong epoch TV1",
            Some(st(Ongoing, PID, 5)),
            end(PID, 4, true, Tv1, 200),
            Expect::Err(TxnError::ProducerFenced),
        ),
        (
            "end wrong epoch TV2",
            Some(st(Ongoing, PID, 5)),
            end(PID, 6, true, Tv2, 200),
            Expect::Err(TxnError::ProducerFenced),
        ),
        (
            "end wrong pid",
            Some(st(Ongoing, PID, 5)),
            end(PID + 1, 5, true, Tv1, 200),
            Expect::Err(TxnError::InvalidProducerIdMapping),
        ),
        ("end unknown id", None, end(PID, 5, true, Tv1, 200), Expect::Err(TxnError::InvalidProducerIdMapping)),
        // Empty + EndTxn(abort): TV2 → CompleteAbort (nothing owed), TV1 → INVALID_TXN_STATE.
        (
            "Empty abort TV2",
            Some(st(Empty, PID, 5)),
            end(PID, 5, false, Tv2, 200),
            Expect::To(CompleteAbort, PID, 6, pe(PID, 6)),
        ),
        (
            "Empty abort TV1",
            Some(st(Empty, PID, 5)),
            end(PID, 5, false, Tv1, 200),
            Expect::Err(TxnError::InvalidTxnState),
        ),
        (
            "Empty commit TV2",
            Some(st(Empty, PID, 5)),
            end(PID, 5, true, Tv2, 200),
            Expect::Err(TxnError::InvalidTxnState),
        ),
        (
            "Empty commit TV1",
            Some(st(Empty, PID, 5)),
            end(PID, 5, true, Tv1, 200),
            Expect::Err(TxnError::InvalidTxnState),
        ),
        // Prepare* + every marker applied → Complete*.
        (
            "PrepareCommit markers done",
            Some(st(PrepareCommit, PID, 5)),
            TxnOp::MarkersDone { producer_id: PID, producer_epoch: 5, now_ms: 200 },
            Expect::To(CompleteCommit, PID, 5, Answer::NoClient),
        ),
        (
            "PrepareAbort markers done",
            Some(st(PrepareAbort, PID, 5)),
            TxnOp::MarkersDone { producer_id: PID, producer_epoch: 5, now_ms: 200 },
            Expect::To(CompleteAbort, PID, 5, Answer::NoClient),
        ),
        (
            "markers of another epoch",
            Some(st(PrepareAbort, PID, 6)),
            TxnOp::MarkersDone { producer_id: PID, producer_epoch: 5, now_ms: 200 },
            Expect::Err(TxnError::InvalidTxnState),
        ),
        // Ongoing past start + timeout → PrepareAbort, epoch+1.
        (
            "timed out",
            Some(st(Ongoing, PID, 5)),
            TxnOp::Timeout { now_ms: 100 + 60_001 },
            Expect::To(PrepareAbort, PID, 6, Answer::NoClient),
        ),
        (
            "not yet timed out",
            Some(st(Ongoing, PID, 5)),
            TxnOp::Timeout { now_ms: 100 + 60_000 },
            Expect::Same(Answer::NoClient),
        ),
        ("timer on Empty", Some(st(Empty, PID, 5)), TxnOp::Timeout { now_ms: 1 << 40 }, Expect::Same(Answer::NoClient)),
        // Empty / Complete*, idle transactional.id.expiration.ms → Dead.
        (
            "Empty expires",
            Some(st(Empty, PID, 5)),
            TxnOp::Expire { now_ms: 100 + DEFAULT_ID_EXPIRATION_MS },
            Expect::To(Dead, PID, 5, Answer::NoClient),
        ),
        (
            "CompleteCommit expires",
            Some(st(CompleteCommit, PID, 5)),
            TxnOp::Expire { now_ms: 100 + DEFAULT_ID_EXPIRATION_MS },
            Expect::To(Dead, PID, 5, Answer::NoClient),
        ),
        (
            "not idle long enough",
            Some(st(CompleteAbort, PID, 5)),
            TxnOp::Expire { now_ms: 99 + DEFAULT_ID_EXPIRATION_MS },
            Expect::Same(Answer::NoClient),
        ),
        (
            "Ongoing never expires",
            Some(st(Ongoing, PID, 5)),
            TxnOp::Expire { now_ms: 1 << 50 },
            Expect::Same(Answer::NoClient),
        ),
        ("timer on a removed id", None, TxnOp::Expire { now_ms: 1 }, Expect::Err(TxnError::TransactionalIdNotFound)),
    ];
    for (name, before, op, expect) in cases {
        let got = run(before.as_ref(), &op);
        match expect {
            Expect::To(status, producer_id, producer_epoch, answer) => {
                let a = got.unwrap_or_else(|e| panic!("{name}: {e:?}"));
                assert_eq!(
                    (a.state.state, a.state.producer_id, a.state.producer_epoch, a.answer),
                    (status, producer_id, producer_epoch, answer),
                    "{name}"
                );
                assert_ne!(Some(&a.state), before.as_ref(), "{name}: expected a change");
            }
            Expect::Same(answer) => {
                let a = got.unwrap_or_else(|e| panic!("{name}: {e:?}"));
                assert_eq!((Some(&a.state), a.answer, &a.markers), (before.as_ref(), answer, &None), "{name}");
            }
            Expect::Err(e) => assert_eq!(got, Err(e), "{name}"),
        }
    }
}

#[test]
fn add_sets_start_on_entry_only_and_accumulates() {
    let a = run(Some(&st(Empty, PID, 5)), &add(PID, 5, &[1], 300)).expect("op applies");
    assert_eq!((a.state.start_ms, a.state.updated_ms), (300, 300));
    let b = run(Some(&a.state), &add(PID, 5, &[2], 400)).expect("op applies");
    assert_eq!(b.state.start_ms, 300, "start_ms is set when the transaction begins, not on later adds");
    assert_eq!(b.state.partitions, BTreeSet::from([p(1), p(2)]));
    let c = run(Some(&b.state), &add_offsets(PID, 5, 500)).expect("op applies");
    assert_eq!(c.state.groups, BTreeSet::from(["g".to_string()]));
    assert_eq!(
        run(Some(&c.state), &add_offsets(PID, 5, 600)).expect("op applies").state,
        c.state,
        "group already added"
    );
}

#[test]
fn prepare_owes_a_marker_per_partition_and_completion_clears() {
    let mut s = st(Ongoing, PID, 5);
    s.partitions.insert(p(3));
    s.groups.insert("g".into());
    let a = run(Some(&s), &end(PID, 5, true, Tv2, 200)).expect("op applies");
    let m = a.markers.clone().expect("markers owed");
    assert_eq!((m.producer_id, m.producer_epoch, m.commit), (PID, 6, true), "TV2 markers carry the bumped epoch");
    assert_eq!(m.partitions, BTreeSet::from([p(0), p(3)]));
    assert_eq!(m.groups, BTreeSet::from(["g".to_string()]));
    assert_eq!(
        m.owed(3, 200),
        OwedMarker { producer_id: PID, producer_epoch: 6, commit: true, coordinator_epoch: 3, timestamp_ms: 200 }
    );
    let done = run(Some(&a.state), &TxnOp::MarkersDone { producer_id: PID, producer_epoch: 6, now_ms: 300 })
        .expect("op applies");
    assert_eq!(done.state.state, CompleteCommit);
    assert!(done.state.partitions.is_empty() && done.state.groups.is_empty());
    assert_eq!(done.state.start_ms, 100, "Kafka keeps the start time through completion");
}

#[test]
fn groups_only_transaction_completes_in_its_prepare() {
    let s = run(Some(&st(Empty, PID, 5)), &add_offsets(PID, 5, 200)).expect("op applies").state;
    let a = run(Some(&s), &end(PID, 5, true, Tv1, 300)).expect("op applies");
    assert_eq!(a.state.state, CompleteCommit, "no partition owes a marker");
    let m = a.markers.expect("markers owed");
    assert!(m.partitions.is_empty());
    assert_eq!(m.groups, BTreeSet::from(["g".to_string()]), "the group's offsets are resolved in this apply");
}

#[test]
fn fenced_producer_is_refused_after_init_fence_and_timeout() {
    // A new instance fences the ongoing transaction; the old instance's ops at epoch 5 fail.
    let fenced = run(Some(&st(Ongoing, PID, 5)), &init(200)).expect("op applies");
    let m = fenced.markers.clone().expect("markers owed");
    assert_eq!((m.producer_epoch, m.commit, m.partitions.len()), (6, false, 1));
    assert_eq!(fenced.state.last_epoch, NO_PRODUCER_EPOCH, "a fence forgets the last epoch");
    assert_eq!(run(Some(&fenced.state), &end(PID, 5, true, Tv1, 300)), Err(TxnError::ProducerFenced));
    assert_eq!(
        run(Some(&fenced.state), &init(300)),
        Err(TxnError::ConcurrentTransactions),
        "until the abort completes"
    );
    let done = run(Some(&fenced.state), &TxnOp::MarkersDone { producer_id: PID, producer_epoch: 6, now_ms: 400 })
        .expect("op applies");
    let again = run(Some(&done.state), &init(500)).expect("op applies");
    assert_eq!(again.answer, pe(PID, 7), "the retried InitProducerId bumps a second time");
    assert_eq!(run(Some(&again.state), &add(PID, 5, &[0], 600)), Err(TxnError::ProducerFenced));
    assert_eq!(run(Some(&again.state), &add(PID, 6, &[0], 600)), Err(TxnError::ProducerFenced));
}

#[test]
fn tv2_server_fence_bumps_twice() {
    // Kafka 4.x: prepareFenceProducerEpoch (+1) then prepareAbortOrCommit with the server's TV2 (+1).
    let a = apply(Some(&st(Ongoing, PID, 5)), &TxnOp::Timeout { now_ms: 1 << 40 }, &tv2_server(), FRESH)
        .expect("op applies");
    assert_eq!((a.state.state, a.state.producer_epoch, a.state.last_epoch), (PrepareAbort, 7, 6));
    assert_eq!(a.state.client_version, Tv2);
}

#[test]
fn kip360_init_with_expected_producer() {
    let s = st(Empty, PID, 5);
    // The current epoch: bump, remember it.
    let a = run(Some(&s), &init_expecting(PID, 5, 200)).expect("op applies");
    assert_eq!((a.answer, a.state.last_epoch), (pe(PID, 6), 5));
    // Its retry after a lost answer (a new request): the same epoch, no second bump.
    let b = run(Some(&a.state), &init_expecting(PID, 5, 300)).expect("op applies");
    assert_eq!((b.answer, b.state.producer_epoch), (pe(PID, 6), 6));
    // A stale epoch, or another producer id: fenced.
    assert_eq!(run(Some(&a.state), &init_expecting(PID, 4, 300)), Err(TxnError::ProducerFenced));
    assert_eq!(run(Some(&a.state), &init_expecting(PID + 1, 6, 300)), Err(TxnError::ProducerFenced));
    // A new instance without an expected epoch fences that producer: its retry then fails.
    let c = run(Some(&a.state), &init(300)).expect("op applies");
    assert_eq!((c.answer, c.state.last_epoch), (pe(PID, 7), NO_PRODUCER_EPOCH));
    assert_eq!(run(Some(&c.state), &init_expecting(PID, 5, 400)), Err(TxnError::ProducerFenced));
    // An unknown transactional id accepts any expected producer (its state expired).
    let d = run(None, &init_expecting(42, 9, 200)).expect("op applies");
    assert_eq!((d.answer, d.used_fresh_producer_id), (pe(FRESH, 0), true));
    // From Complete*, the same rules.
    let e = run(Some(&st(CompleteAbort, PID, 5)), &init_expecting(PID, 5, 200)).expect("op applies");
    assert_eq!(e.answer, pe(PID, 6));
}

#[test]
fn kip360_across_producer_id_rotation() {
    let s = st(CompleteCommit, PID, MAX - 1);
    let a = run(Some(&s), &init_expecting(PID, MAX - 1, 200)).expect("op applies");
    assert_eq!(a.answer, pe(FRESH, 0));
    assert!(a.used_fresh_producer_id);
    assert_eq!((a.state.prev_producer_id, a.state.last_epoch), (PID, MAX - 1));
    // The retry names the old id with the exhausted epoch: recognised, same answer.
    let b = apply(Some(&a.state), &init_expecting(PID, MAX - 1, 300), &limits(), FRESH + 1).expect("op applies");
    assert_eq!((b.answer, b.used_fresh_producer_id), (pe(FRESH, 0), false));
    // The old id with a non-exhausted epoch is fenced.
    assert_eq!(run(Some(&a.state), &init_expecting(PID, 3, 300)), Err(TxnError::ProducerFenced));
}

#[test]
fn kip360_retry_of_a_bump_to_the_last_usable_epoch() {
    // Deviation from Kafka (which throws IllegalStateException here): the retry is recognised.
    let a = run(Some(&st(Empty, PID, MAX - 2)), &init_expecting(PID, MAX - 2, 200)).expect("op applies");
    assert_eq!(a.answer, pe(PID, MAX - 1));
    let b = run(Some(&a.state), &init_expecting(PID, MAX - 2, 300)).expect("op applies");
    assert_eq!((b.answer, b.used_fresh_producer_id), (pe(PID, MAX - 1), false));
}

#[test]
fn producer_id_rotates_at_the_epoch_limit() {
    // InitProducerId: epoch MAX-2 → MAX-1 (still usable), MAX-1 → new producer id, epoch 0.
    assert_eq!(run(Some(&st(Empty, PID, MAX - 2)), &init(200)).expect("op applies").answer, pe(PID, MAX - 1));
    let r = run(Some(&st(Empty, PID, MAX - 1)), &init(200)).expect("op applies");
    assert_eq!((r.answer, r.used_fresh_producer_id, r.state.prev_producer_id), (pe(FRESH, 0), true, PID));
    assert_eq!(r.state.last_epoch, NO_PRODUCER_EPOCH, "no expected epoch: nothing to remember");

    // A TV1 fence of an ongoing transaction at MAX-1 reaches MAX; the retry rotates.
    let f = run(Some(&st(Ongoing, PID, MAX - 1)), &init(200)).expect("op applies");
    assert_eq!(f.state.producer_epoch, MAX);
    let done = run(Some(&f.state), &TxnOp::MarkersDone { producer_id: PID, producer_epoch: MAX, now_ms: 300 })
        .expect("op applies");
    assert_eq!(run(Some(&done.state), &init(400)).expect("op applies").answer, pe(FRESH, 0));

    // TV2 EndTxn at MAX-1: markers at MAX with the old id, the answer is the next id at 0.
    let e = run(Some(&st(Ongoing, PID, MAX - 1)), &end(PID, MAX - 1, true, Tv2, 200)).expect("op applies");
    assert_eq!((e.answer, e.used_fresh_producer_id), (pe(FRESH, 0), true));
    assert_eq!((e.state.producer_id, e.state.producer_epoch, e.state.next_producer_id), (PID, MAX, FRESH));
    assert_eq!(e.state.producer_ids().collect::<Vec<_>>(), vec![PID, FRESH]);
    let m = e.markers.expect("markers owed");
    assert_eq!((m.producer_id, m.producer_epoch), (PID, MAX));
    let c = run(Some(&e.state), &TxnOp::MarkersDone { producer_id: PID, producer_epoch: MAX, now_ms: 300 })
        .expect("op applies");
    assert_eq!((c.state.state, c.state.producer_id, c.state.producer_epoch), (CompleteCommit, FRESH, 0));
    assert_eq!((c.state.prev_producer_id, c.state.last_epoch), (PID, MAX - 1));
    // The EndTxn retried with the old id and epoch is recognised (retryOnOverflow).
    assert_eq!(run(Some(&c.state), &end(PID, MAX - 1, true, Tv2, 400)).expect("op applies").answer, pe(FRESH, 0));
    // The new id works.
    assert_eq!(run(Some(&c.state), &add(FRESH, 0, &[1], 400)).expect("op applies").state.state, Ongoing);

    // A TV2 server fence at MAX-1 rotates too (Kafka 4.x); the abort at MAX does not bump.
    let t = apply(Some(&st(Ongoing, PID, MAX - 1)), &TxnOp::Timeout { now_ms: 1 << 40 }, &tv2_server(), FRESH)
        .expect("op applies");
    assert_eq!((t.state.producer_epoch, t.state.next_producer_id, t.used_fresh_producer_id), (MAX, FRESH, true));
    // Kafka's shouldHandleTimeoutAtEpochOverflowBoundaryCorrectlyAndLateClientAbortRequestTV2:
    // once the markers are written the id is rotated, and the client's late abort with its old
    // id and epoch is a retry answered with the new id.
    let ta = run(Some(&t.state), &TxnOp::MarkersDone { producer_id: PID, producer_epoch: MAX, now_ms: 1 << 41 })
        .expect("op applies");
    assert_eq!((ta.state.state, ta.state.producer_id, ta.state.producer_epoch), (CompleteAbort, FRESH, 0));
    let late = run(Some(&ta.state), &end(PID, MAX - 1, false, Tv2, (1 << 41) + 1)).expect("op applies");
    assert_eq!((late.answer, &late.state), (pe(FRESH, 0), &ta.state));
}

#[test]
fn retried_end_txn_tv1() {
    let s = st(Ongoing, PID, 5);
    let first = run(Some(&s), &end(PID, 5, true, Tv1, 200)).expect("op applies");
    // Resubmitted after a lost answer (same op): the same answer, nothing owed twice.
    let again = run(Some(&first.state), &end(PID, 5, true, Tv1, 200)).expect("op applies");
    assert_eq!((&again.state, again.answer, &again.markers), (&first.state, Answer::Ok, &None));
    // The client's own retry while the markers are owed: CONCURRENT_TRANSACTIONS; the other result: ITS.
    assert_eq!(run(Some(&first.state), &end(PID, 5, true, Tv1, 250)), Err(TxnError::ConcurrentTransactions));
    assert_eq!(run(Some(&first.state), &end(PID, 5, false, Tv1, 250)), Err(TxnError::InvalidTxnState));
    let done = run(Some(&first.state), &TxnOp::MarkersDone { producer_id: PID, producer_epoch: 5, now_ms: 300 })
        .expect("op applies");
    let retry = run(Some(&done.state), &end(PID, 5, true, Tv1, 400)).expect("op applies");
    assert_eq!((&retry.state, retry.answer), (&done.state, Answer::Ok));
    assert_eq!(run(Some(&done.state), &end(PID, 5, false, Tv1, 400)), Err(TxnError::InvalidTxnState));
    assert_eq!(run(Some(&done.state), &end(PID, 4, true, Tv1, 400)), Err(TxnError::ProducerFenced));
}

#[test]
fn retried_end_txn_tv2() {
    let s = st(Ongoing, PID, 5);
    let first = run(Some(&s), &end(PID, 5, true, Tv2, 200)).expect("op applies");
    assert_eq!((first.answer, first.state.last_epoch), (pe(PID, 6), 5));
    let again = run(Some(&first.state), &end(PID, 5, true, Tv2, 200)).expect("op applies");
    assert_eq!((&again.state, again.answer, &again.markers), (&first.state, pe(PID, 6), &None));
    assert_eq!(run(Some(&first.state), &end(PID, 5, true, Tv2, 250)), Err(TxnError::ConcurrentTransactions));
    assert_eq!(
        run(Some(&first.state), &end(PID, 6, true, Tv2, 250)),
        Err(TxnError::ProducerFenced),
        "Prepare*: only the retry epoch"
    );
    let done = run(Some(&first.state), &TxnOp::MarkersDone { producer_id: PID, producer_epoch: 6, now_ms: 300 })
        .expect("op applies");
    let cc = done.state;
    // Kafka's TV2 table for CompleteCommit: commit retry NONE, commit current ITS, abort retry ITS,
    // abort current: a new (empty) abort with an epoch bump; an older epoch: PRODUCER_FENCED.
    assert_eq!(run(Some(&cc), &end(PID, 5, true, Tv2, 400)).expect("op applies").answer, pe(PID, 6));
    assert_eq!(run(Some(&cc), &end(PID, 6, true, Tv2, 400)), Err(TxnError::InvalidTxnState));
    assert_eq!(run(Some(&cc), &end(PID, 5, false, Tv2, 400)), Err(TxnError::InvalidTxnState));
    let ab = run(Some(&cc), &end(PID, 6, false, Tv2, 400)).expect("op applies");
    assert_eq!((ab.state.state, ab.answer, ab.state.start_ms), (CompleteAbort, pe(PID, 7), 400));
    assert_eq!(run(Some(&cc), &end(PID, 4, true, Tv2, 400)), Err(TxnError::ProducerFenced));
    // CompleteAbort: abort retry NONE, commit ITS; Empty: the retry epoch is fenced.
    let ca = st(CompleteAbort, PID, 6);
    assert_eq!(run(Some(&ca), &end(PID, 5, false, Tv2, 400)).expect("op applies").answer, pe(PID, 6));
    assert_eq!(run(Some(&ca), &end(PID, 5, true, Tv2, 400)), Err(TxnError::InvalidTxnState));
    assert_eq!(run(Some(&ca), &end(PID, 6, true, Tv2, 400)), Err(TxnError::InvalidTxnState));
    assert_eq!(run(Some(&st(Empty, PID, 6)), &end(PID, 5, false, Tv2, 400)), Err(TxnError::ProducerFenced));
}

#[test]
fn verification_answers() {
    let s = st(Ongoing, PID, 5);
    let parts = BTreeSet::from([p(0), p(1)]);
    assert_eq!(
        verify_partitions(Some(&s), PID, 5, &parts),
        Ok(vec![(p(0), None), (p(1), Some(TxnError::TransactionAbortable))])
    );
    assert_eq!(verify_partitions(Some(&s), PID, 4, &parts), Err(TxnError::ProducerFenced));
    assert_eq!(verify_partitions(Some(&s), PID + 1, 5, &parts), Err(TxnError::InvalidProducerIdMapping));
    assert_eq!(verify_partitions(None, PID, 5, &parts), Err(TxnError::InvalidProducerIdMapping));
    assert_eq!(
        verify_partitions(Some(&st(PrepareCommit, PID, 5)), PID, 5, &parts),
        Err(TxnError::ConcurrentTransactions)
    );
}

#[test]
fn op_time_is_past_the_last_change() {
    let s = st(Empty, PID, 5);
    assert_eq!(op_time_ms(Some(&s), 50), 101);
    assert_eq!(op_time_ms(Some(&s), 500), 500);
    assert_eq!(op_time_ms(None, 50), 50);
}

#[test]
fn state_round_trips_and_old_snapshots_default() {
    let mut s = st(Ongoing, PID, 5);
    s.groups.insert("g".into());
    let json = serde_json::to_string(&s).expect("json round trip");
    assert_eq!(serde_json::from_str::<TxnState>(&json).expect("json round trip"), s);
    // A snapshot without the KIP-890 fields and groups.
    let mut v: serde_json::Value = serde_json::from_str(&json).expect("json round trip");
    for f in ["prev_producer_id", "next_producer_id", "last_epoch", "groups", "client_version"] {
        v.as_object_mut().expect("an object").remove(f);
    }
    let old: TxnState = serde_json::from_value(v).expect("json round trip");
    assert_eq!((old.prev_producer_id, old.next_producer_id, old.last_epoch), (-1, -1, -1));
    assert_eq!((old.groups.len(), old.client_version), (0, Tv1));
}

#[test]
fn aborted_index_example() {
    let mut idx = AbortedIndex::default();
    // Two overlapping aborts, then one that started after the first marker.
    idx.push(AbortedTxn { producer_id: 1, first_offset: 0, last_offset: 10, lso_at_marker: 5 });
    idx.push(AbortedTxn { producer_id: 2, first_offset: 5, last_offset: 12, lso_at_marker: 13 });
    idx.push(AbortedTxn { producer_id: 3, first_offset: 20, last_offset: 30, lso_at_marker: 31 });
    let pids = |v: Vec<AbortedTxn>| v.iter().map(|a| a.producer_id).collect::<Vec<_>>();
    assert_eq!(pids(idx.collect(0, 8)), vec![1, 2]);
    assert_eq!(pids(idx.collect(11, 13)), vec![2]);
    assert_eq!(pids(idx.collect(0, 40)), vec![1, 2, 3]);
    assert_eq!(pids(idx.collect(31, 40)), Vec::<i64>::new());
    idx.truncate_below(11);
    assert_eq!(pids(idx.iter().copied().collect()), vec![2, 3]);
    let open = BTreeMap::from([(4, OpenTxn { producer_epoch: 0, first_offset: 33 })]);
    assert_eq!(last_stable_offset(&open, 40), 33);
    assert_eq!(last_stable_offset(&BTreeMap::new(), 40), 40);
    assert_eq!(lso_at_marker(&BTreeMap::new(), 40), 41);
}

// ---- property tests -------------------------------------------------------------------------

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

/// Which producer id and epoch a client op carries, relative to the current state.
#[derive(Debug, Clone, Copy)]
enum Who {
    Current,
    EpochBefore,
    EpochAfter,
    PreviousIdLastEpoch,
    OtherId,
}

#[derive(Debug, Clone)]
enum Step {
    Init { timeout_ms: i32, expected: Option<Who> },
    Add { who: Who, partition: i32, tv2: bool },
    AddOffsets { who: Who },
    End { who: Who, commit: bool, tv2: bool },
    MarkersDone { who: Who },
    Timeout,
    Expire,
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![
        6 => Just(Who::Current),
        2 => Just(Who::EpochBefore),
        1 => Just(Who::EpochAfter),
        1 => Just(Who::PreviousIdLastEpoch),
        1 => Just(Who::OtherId),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (prop_oneof![4 => Just(60_000), 1 => Just(900_001)], proptest::option::of(who()))
            .prop_map(|(timeout_ms, expected)| Step::Init { timeout_ms, expected }),
        4 => (who(), 0..3i32, any::<bool>()).prop_map(|(who, partition, tv2)| Step::Add { who, partition, tv2 }),
        1 => who().prop_map(|who| Step::AddOffsets { who }),
        4 => (who(), any::<bool>(), any::<bool>()).prop_map(|(who, commit, tv2)| Step::End { who, commit, tv2 }),
        3 => who().prop_map(|who| Step::MarkersDone { who }),
        1 => Just(Step::Timeout),
        1 => Just(Step::Expire),
    ]
}

fn pick(s: Option<&TxnState>, who: Who) -> (i64, i16) {
    let Some(s) = s else { return (PID, 0) };
    match who {
        Who::Current => (s.producer_id, s.producer_epoch),
        Who::EpochBefore => (s.producer_id, s.producer_epoch.saturating_sub(1)),
        Who::EpochAfter => (s.producer_id, s.producer_epoch.saturating_add(1)),
        Who::PreviousIdLastEpoch => (s.prev_producer_id, MAX - 1),
        Who::OtherId => (s.producer_id + 5000, s.producer_epoch),
    }
}

fn materialize(s: Option<&TxnState>, step: &Step, now_ms: i64) -> TxnOp {
    let version = |tv2: bool| if tv2 { Tv2 } else { Tv1 };
    match step {
        Step::Init { timeout_ms, expected } => TxnOp::InitProducerId {
            timeout_ms: *timeout_ms,
            expected: expected.map(|w| {
                let (producer_id, producer_epoch) = pick(s, w);
                ProducerIdAndEpoch { producer_id, producer_epoch }
            }),
            now_ms,
        },
        Step::Add { who, partition, tv2 } => {
            let (producer_id, producer_epoch) = pick(s, *who);
            TxnOp::AddPartitions {
                producer_id,
                producer_epoch,
                partitions: BTreeSet::from([p(*partition)]),
                version: version(*tv2),
                now_ms,
            }
        }
        Step::AddOffsets { who } => {
            let (producer_id, producer_epoch) = pick(s, *who);
            TxnOp::AddOffsets { producer_id, producer_epoch, group: "g".into(), version: Tv1, now_ms }
        }
        Step::End { who, commit, tv2 } => {
            let (producer_id, producer_epoch) = pick(s, *who);
            TxnOp::EndTxn { producer_id, producer_epoch, commit: *commit, version: version(*tv2), now_ms }
        }
        Step::MarkersDone { who } => {
            let (producer_id, producer_epoch) = pick(s, *who);
            TxnOp::MarkersDone { producer_id, producer_epoch, now_ms }
        }
        Step::Timeout => TxnOp::Timeout { now_ms },
        Step::Expire => TxnOp::Expire { now_ms },
    }
}

/// The client-visible answer of an apply, whether or not the state changed.
fn reply(r: &Result<Applied, TxnError>) -> Result<Answer, TxnError> {
    match r {
        Ok(Applied { answer: Answer::Error(e), .. }) | Err(e) => Err(*e),
        Ok(a) => Ok(a.answer),
    }
}

fn start_epoch() -> impl Strategy<Value = Option<i16>> {
    prop_oneof![Just(None), Just(Some(0)), Just(Some(MAX - 4)), Just(Some(MAX - 2)), Just(Some(MAX - 1))]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Random op sequences on one transactional id: determinism, epochs never decrease per
    /// producer id, a retired epoch never changes the state, resubmission is idempotent, a
    /// client never gets epoch `i16::MAX` from InitProducerId.
    #[test]
    fn state_machine_invariants(
        start in start_epoch(),
        tv2_server in any::<bool>(),
        steps in prop::collection::vec((step(), 1i64..5_000, 0u8..20), 1..60),
    ) {
        let limits = TxnLimits {
            server_version: if tv2_server { Tv2 } else { Tv1 },
            ..TxnLimits::default()
        };
        let mut state: Option<TxnState> = start.map(|e| st(CompleteCommit, PID, e));
        let mut fresh = FRESH;
        let mut max_epoch: HashMap<i64, i16> = HashMap::new();
        if let Some(s) = &state {
            max_epoch.insert(s.producer_id, s.producer_epoch);
        }
        let mut now = 1_000i64;
        for (step, advance, jump) in steps {
            // Mostly small steps; sometimes past a timeout or the id expiration.
            now += match jump {
                0 => DEFAULT_ID_EXPIRATION_MS,
                1 | 2 => 70_000,
                _ => advance,
            };
            let now_ms = op_time_ms(state.as_ref(), now);
            now = now_ms;
            let op = materialize(state.as_ref(), &step, now_ms);
            let before = state.clone();
            let got = apply(before.as_ref(), &op, &limits, fresh);
            prop_assert_eq!(&got, &apply(before.as_ref(), &op, &limits, fresh), "deterministic");

            // A retired epoch of a producer id never changes the state.
            let carried = match &op {
                TxnOp::AddPartitions { producer_id, producer_epoch, .. }
                | TxnOp::AddOffsets { producer_id, producer_epoch, .. }
                | TxnOp::EndTxn { producer_id, producer_epoch, .. } => Some((*producer_id, *producer_epoch)),
                _ => None,
            };
            if let (Some((pid, epoch)), Ok(a)) = (carried, &got)
                && max_epoch.get(&pid).is_some_and(|m| epoch < *m)
            {
                prop_assert_eq!(Some(&a.state), before.as_ref(), "retired epoch {} of {} changed {:?}", epoch, pid, op);
            }

            let Ok(a) = got else { continue };
            if let (TxnOp::InitProducerId { .. }, Answer::Producer(x)) = (&op, a.answer) {
                prop_assert!(x.producer_epoch < MAX, "InitProducerId handed out epoch i16::MAX");
            }
            // Epochs never decrease for a producer id.
            let m = max_epoch.entry(a.state.producer_id).or_insert(a.state.producer_epoch);
            prop_assert!(a.state.producer_epoch >= *m, "epoch of {} went back: {} < {}", a.state.producer_id, a.state.producer_epoch, m);
            *m = a.state.producer_epoch;
            if a.used_fresh_producer_id {
                prop_assert!(a.state.producer_id == fresh || a.state.next_producer_id == fresh);
                fresh += 1;
            }

            // Resubmitting the op after its success: no change, the same answer, no new effect.
            if a.state.state != Dead && !matches!(a.answer, Answer::Error(_)) {
                let again = apply(Some(&a.state), &op, &limits, fresh);
                prop_assert_eq!(reply(&again), Ok(a.answer), "resubmitted {:?}", op);
                let again = again.expect("resubmission applies");
                prop_assert_eq!(&again.state, &a.state, "resubmission changed the state: {:?}", op);
                prop_assert!(again.markers.is_none() && !again.used_fresh_producer_id);
            }
            state = if a.state.state == Dead { None } else { Some(a.state) };
        }
    }

    /// The aborted index over a simulated partition history answers what a full scan answers.
    #[test]
    fn aborted_index_matches_brute_force(
        events in prop::collection::vec((0i64..4, 0u8..4), 1..120),
        queries in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 1..20),
        log_start in any::<prop::sample::Index>(),
    ) {
        let mut open: BTreeMap<i64, OpenTxn> = BTreeMap::new();
        let mut idx = AbortedIndex::default();
        let mut all = Vec::new();
        let mut offset = 0i64;
        for (pid, kind) in events {
            match (kind, open.contains_key(&pid)) {
                // Data: opens the producer's transaction at its first batch.
                (0 | 1, _) => {
                    open.entry(pid).or_insert(OpenTxn { producer_epoch: 0, first_offset: offset });
                }
                (2, true) => {
                    let t = open.remove(&pid).expect("open");
                    let e = AbortedTxn {
                        producer_id: pid,
                        first_offset: t.first_offset,
                        last_offset: offset,
                        lso_at_marker: lso_at_marker(&open, offset),
                    };
                    idx.push(e);
                    all.push(e);
                }
                (3, true) => {
                    open.remove(&pid);
                }
                _ => {}
            }
            offset += 1;
            prop_assert!(last_stable_offset(&open, offset) <= offset);
        }
        let brute = |all: &[AbortedTxn], f: i64, u: i64| {
            all.iter().filter(|e| e.last_offset >= f && e.first_offset < u).copied().collect::<Vec<_>>()
        };
        let lso = last_stable_offset(&open, offset);
        for (a, b) in &queries {
            let f = a.index(offset as usize + 1) as i64;
            let u = f + b.index((offset - f) as usize + 1) as i64;
            prop_assert_eq!(idx.collect(f, u), brute(&all, f, u), "fetch [{}, {})", f, u);
            let u = u.min(lso).max(f);
            prop_assert_eq!(idx.collect(f, u), brute(&all, f, u), "fetch [{}, {}) below the LSO", f, u);
        }
        let start = log_start.index(offset as usize + 1) as i64;
        idx.truncate_below(start);
        all.retain(|e| e.last_offset >= start);
        prop_assert!(idx.iter().copied().eq(all.iter().copied()));
        for (a, b) in &queries {
            let f = start + a.index((offset - start) as usize + 1) as i64;
            let u = f + b.index((offset - f) as usize + 1) as i64;
            prop_assert_eq!(idx.collect(f, u), brute(&all, f, u), "after truncation, fetch [{}, {})", f, u);
        }
    }
}
