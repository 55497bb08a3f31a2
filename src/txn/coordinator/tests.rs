//! The driver against a real single-voter controller: op times, ownership, timers.

use std::collections::{BTreeMap, BTreeSet};

use skiff_controller::intent::{BrokerRegistration, CreateTopic, ProducerIdAndEpoch, TxnVersion};
use skiff_controller::{Controller, ControllerConfig};
use skiff_time::ManualClock;
use uuid::Uuid;

use super::*;

struct Harness {
    _dir: tempfile::TempDir,
    controller: ControllerHandle,
    clock: Arc<ManualClock>,
}

async fn harness(brokers: &[i32]) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let controller = Controller::start_single(
        ControllerConfig::new(1, dir.path().join("controller"), "test".into()),
        CancellationToken::new(),
    )
    .await
    .expect("controller");
    let controller = ControllerHandle::Local(controller);
    for b in brokers {
        let reg = BrokerRegistration {
            broker_id: *b,
            incarnation: Uuid::from_u128(*b as u128),
            host: "127.0.0.1".into(),
            port: 9092,
            rack: None,
            fenced: false,
        };
        controller.register_broker(reg).await.expect("register");
    }
    Harness { _dir: dir, controller, clock: Arc::new(ManualClock::new(1_000_000)) }
}

fn settings() -> TxnSettings {
    TxnSettings {
        abort_check_interval: Duration::from_millis(20),
        expire_check_interval: Duration::from_millis(20),
        ..TxnSettings::default()
    }
}

fn init(timeout_ms: i32) -> impl FnOnce(i64) -> TxnOp {
    move |now_ms| TxnOp::InitProducerId { timeout_ms, expected: None, now_ms }
}

fn producer(answer: &Answer) -> ProducerIdAndEpoch {
    match answer {
        Answer::Producer(p) => *p,
        other => panic!("expected a producer id, got {other:?}"),
    }
}

/// Two InitProducerId at the same clock reading are two ops (epoch 0, then 1), not a
/// resubmission: the driver keeps op times strictly increasing.
#[tokio::test]
async fn ops_of_one_id_get_increasing_times() {
    let h = harness(&[1]).await;
    let c = TxnCoordinator::new(1, settings(), h.controller.clone(), h.clock.clone());
    let first = producer(&c.submit("tx", init(60_000)).await.expect("init"));
    let second = producer(&c.submit("tx", init(60_000)).await.expect("init again"));
    assert_eq!(first.producer_id, second.producer_id);
    assert_eq!((first.producer_epoch, second.producer_epoch), (0, 1));
    let updated = h.controller.metadata().read(|m| m.transaction("tx").map(|s| s.updated_ms));
    assert_eq!(updated, Some(1_000_001), "the second op is 1 ms past the first");
    // A refusal comes back typed.
    let e = c.submit("tx", init(900_001)).await.expect_err("timeout above the maximum");
    assert!(matches!(e, TxnCoordinatorError::Txn(TxnError::InvalidTransactionTimeout)), "{e:?}");
    assert!(c.inner.ids.lock().expect("lock").is_empty(), "idle ids hold no lock");
}

/// A transactional id whose shard is on another broker is NOT_COORDINATOR here.
#[tokio::test]
async fn another_brokers_shard_is_not_coordinated_here() {
    let h = harness(&[1, 2]).await;
    let (here, there) = h.controller.metadata().read(|m| {
        let on =
            |b| (0..1000).map(|i| format!("id-{i}")).find(|id| m.txn_coordinator(id).map(|c| c.broker_id) == Some(b));
        (on(1).expect("an id on 1"), on(2).expect("an id on 2"))
    });
    let c = TxnCoordinator::new(1, settings(), h.controller.clone(), h.clock.clone());
    assert!(matches!(c.submit(&there, init(60_000)).await, Err(TxnCoordinatorError::NotCoordinator)));
    assert!(c.submit(&here, init(60_000)).await.is_ok());
    // The other broker serves its own.
    let c2 = TxnCoordinator::new(2, settings(), h.controller.clone(), h.clock.clone());
    assert!(c2.submit(&there, init(60_000)).await.is_ok());
}

/// The timer aborts a transaction past its timeout (fencing the producer: epoch+1) and expires
/// an idle id; neither touches a transaction within its time.
#[tokio::test]
async fn timers_abort_timed_out_transactions_and_expire_idle_ids() {
    let h = harness(&[1]).await;
    let topic_id = h
        .controller
        .create_topic(CreateTopic {
            name: "t".into(),
            topic_id: Uuid::from_u128(9),
            partitions: 1,
            configs: BTreeMap::new(),
            assignments: Vec::new(),
        })
        .await
        .expect("topic");
    let settings = TxnSettings { limits: TxnLimits { id_expiration_ms: 50_000, ..TxnLimits::default() }, ..settings() };
    let token = CancellationToken::new();
    let supervisor = Supervisor::new(token.clone());
    let (c, task) =
        TxnCoordinator::start(1, settings, h.controller.clone(), h.clock.clone(), &supervisor, token.clone());
    let pid = producer(&c.submit("slow", init(1_000)).await.expect("init"));
    c.submit("idle", init(60_000)).await.expect("init idle");
    let partitions = BTreeSet::from([(topic_id, 0)]);
    let add = |now_ms| TxnOp::AddPartitions {
        producer_id: pid.producer_id,
        producer_epoch: pid.producer_epoch,
        partitions,
        version: TxnVersion::Tv1,
        now_ms,
    };
    c.submit("slow", add).await.expect("add");
    let status = |id: &str| h.controller.metadata().read(|m| m.transaction(id).map(|s| (s.state, s.producer_epoch)));
    h.clock.sleep(Duration::from_millis(100)).await;
    assert_eq!(status("slow"), Some((TxnStatus::Ongoing, 0)), "within its timeout");
    h.clock.advance(Duration::from_millis(1_500));
    let mut aborted = None;
    for _ in 0..100 {
        h.clock.sleep(Duration::from_millis(20)).await;
        aborted = status("slow");
        if aborted != Some((TxnStatus::Ongoing, 0)) {
            break;
        }
    }
    // Its marker is owed on t-0 (nobody writes it in this test): PrepareAbort at epoch 1.
    assert_eq!(aborted, Some((TxnStatus::PrepareAbort, 1)));
    assert!(status("idle").is_some(), "not idle long enough yet");
    // A refusal is answered at once, never resubmitted like a lost answer (the client retries).
    let asked = h.clock.now();
    let again = |now_ms| TxnOp::AddPartitions {
        producer_id: pid.producer_id,
        producer_epoch: 1,
        partitions: BTreeSet::from([(topic_id, 0)]),
        version: TxnVersion::Tv1,
        now_ms,
    };
    let r = c.submit("slow", again).await;
    assert!(matches!(r, Err(TxnCoordinatorError::Txn(TxnError::ConcurrentTransactions))), "{r:?}");
    let took = h.clock.now() - asked;
    assert!(took < RESUBMIT_BACKOFF, "answered without resubmitting ({took:?})");
    h.clock.advance(Duration::from_millis(60_000));
    let mut gone = false;
    for _ in 0..100 {
        h.clock.sleep(Duration::from_millis(20)).await;
        if status("idle").is_none() {
            gone = true;
            break;
        }
    }
    assert!(gone, "the idle id expired");
    assert!(status("slow").is_some(), "a transaction awaiting markers never expires");
    token.cancel();
    task.await.expect("timer task");
}
