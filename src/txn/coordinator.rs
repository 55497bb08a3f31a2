//! The transaction coordinator driver: the broker side of the transaction shards it holds.
//!
//! ```text
//!  handler (InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn)
//!     │ TxnCoordinator::submit(id, |now_ms| op)
//!     ▼
//!  owner check (image: shard → broker, epoch) ── not here: NOT_COORDINATOR
//!     │ per-id lock (one op of an id at a time, in arrival order)
//!     │ now_ms = max(clock, last change + 1, last op + 1)   (transactions::op_time_ms)
//!     ▼
//!  controller.txn(TxnCommand { id, shard, epoch, op, limits }) ──Raft──▶ apply
//!     │ outcome unknown (controller failover): the same command again, which `apply`
//!     │ answers as the first time (RFC 0004 §2)
//!     ▼
//!  Answer / TxnError / stale epoch (NOT_COORDINATOR) / controller unavailable
//! ```
//!
//! Timers ([`TxnCoordinator::start`]'s task): every `abort_check_interval` (Kafka's
//! `transaction.abort.timed.out.transaction.cleanup.interval.ms`), or earlier when an owned
//! transaction's deadline comes first, Ongoing transactions of owned shards past
//! `start_ms + timeout_ms` get a `Timeout` op (fence + abort, as Kafka's
//! `abortTimedOutTransactions`); every `expire_check_interval` idle Empty/Complete* ids past
//! `transactional.id.expiration.ms` get an `Expire` op. Both ops are no-ops in `apply` when
//! the state moved on, so a timer racing a client is harmless.
//!
//! Nothing here is state that a failover would lose: a new owner reads the shard's
//! transactions from its image (which holds everything applied before the shard moved to it)
//! and its timers pick up the deadlines from there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_controller::intent::{Answer, Rejection, TxnCommand, TxnError, TxnLimits, TxnOp, TxnVersion};
use skiff_controller::transactions::{TxnStatus, op_time_ms, shard_for};
use skiff_controller::{ControllerError, ControllerHandle, ErrorKind, MetadataHandle};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::Clock;
use crate::supervisor::Supervisor;

/// How often an op whose outcome is unknown is resubmitted before the client is told to retry.
const RESUBMITS: u32 = 5;
/// First wait between resubmissions (doubles each time).
const RESUBMIT_BACKOFF: Duration = Duration::from_millis(100);
/// No resubmission starts later than this after the first attempt: the controller client
/// already retries each one for up to 15 s, and the client's own request times out at 30 s
/// (Java's `request.timeout.ms`), after which it retries with a new op anyway.
const RESUBMIT_WINDOW: Duration = Duration::from_secs(10);

/// The coordinator's configs (docs/configuration.md, `[transactions]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnSettings {
    /// `transaction.max.timeout.ms`, `transactional.id.expiration.ms`, and the finalized
    /// transaction version the coordinator uses when it aborts on its own (TV2).
    pub limits: TxnLimits,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`: how often timed-out
    /// transactions are looked for (Kafka: 10 s).
    pub abort_check_interval: Duration,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`: how often idle ids are
    /// looked for (Kafka: 1 h).
    pub expire_check_interval: Duration,
}

impl Default for TxnSettings {
    fn default() -> Self {
        TxnSettings {
            // `transaction.version` 2 is finalized (handler/features.rs): the coordinator's own
            // aborts (timeouts, fencing by InitProducerId) use TV2, as Kafka's do.
            limits: TxnLimits { server_version: TxnVersion::Tv2, ..TxnLimits::default() },
            abort_check_interval: Duration::from_secs(10),
            expire_check_interval: Duration::from_secs(3600),
        }
    }
}

/// Why a coordinator op was not answered by the state machine. Kafka codes in
/// `handler/errors.rs` (`txn_coordinator`).
#[derive(Debug, thiserror::Error)]
pub enum TxnCoordinatorError {
    /// The id's shard is owned by another broker, or moved while the op was in flight.
    #[error("this broker is not the coordinator of the transactional id (its shard is elsewhere)")]
    NotCoordinator,
    /// The state machine refused the op (nothing changed).
    #[error("{0}")]
    Txn(TxnError),
    /// The controller could not be reached or did not answer in time; the op may or may not
    /// have applied (a retry is answered correctly either way).
    #[error("controller: {0}")]
    Controller(ControllerError),
}

impl From<ControllerError> for TxnCoordinatorError {
    fn from(e: ControllerError) -> Self {
        match e {
            ControllerError::Rejected(Rejection::Txn { error, .. }) => TxnCoordinatorError::Txn(error),
            ControllerError::Rejected(Rejection::StaleTxnCoordinator { .. }) => TxnCoordinatorError::NotCoordinator,
            other => TxnCoordinatorError::Controller(other),
        }
    }
}

/// The handle handlers use. Cheap to clone.
#[derive(Clone)]
pub struct TxnCoordinator {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: i32,
    settings: TxnSettings,
    controller: ControllerHandle,
    metadata: MetadataHandle,
    clock: Arc<dyn Clock>,
    /// One lock per transactional id with an op in flight (or whose last op's outcome is
    /// unknown); the value is the `now_ms` of the id's last op.
    ids: Mutex<HashMap<String, Arc<tokio::sync::Mutex<i64>>>>,
}

impl TxnCoordinator {
    /// The coordinator handle and its timer task (critical: a dead timer task would leave
    /// abandoned transactions open forever); it runs until `shutdown`.
    pub fn start(
        node_id: i32,
        settings: TxnSettings,
        controller: ControllerHandle,
        clock: Arc<dyn Clock>,
        supervisor: &Supervisor,
        shutdown: CancellationToken,
    ) -> (TxnCoordinator, tokio::task::JoinHandle<()>) {
        let coordinator = TxnCoordinator::new(node_id, settings, controller, clock);
        let task = supervisor.spawn_critical("txn-coordinator", coordinator.clone().run_timers(shutdown));
        (coordinator, task)
    }

    /// A handle without timers (tests of handlers).
    pub fn new(node_id: i32, settings: TxnSettings, controller: ControllerHandle, clock: Arc<dyn Clock>) -> Self {
        TxnCoordinator {
            inner: Arc::new(Inner {
                node_id,
                settings,
                metadata: controller.metadata(),
                controller,
                clock,
                ids: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn settings(&self) -> TxnSettings {
        self.inner.settings
    }

    /// The epoch of `transactional_id`'s shard if this broker coordinates it. Unassigned
    /// shards (no broker registered yet) are served here at epoch 0, as group shards are.
    pub fn owned_epoch(&self, transactional_id: &str) -> Result<i32, TxnCoordinatorError> {
        let node_id = self.inner.node_id;
        self.inner.metadata.read(|m| match m.txn_coordinator(transactional_id) {
            None => Ok(0),
            Some(c) if c.broker_id == node_id => Ok(c.epoch),
            Some(_) => Err(TxnCoordinatorError::NotCoordinator),
        })
    }

    /// Runs one op on `transactional_id`: `op` builds it from the `now_ms` this driver assigns.
    pub async fn submit(
        &self,
        transactional_id: &str,
        op: impl FnOnce(i64) -> TxnOp,
    ) -> Result<Answer, TxnCoordinatorError> {
        let lock = self.lock_for(transactional_id);
        let mut last = lock.lock().await;
        // Checked under the id's lock: an op queued behind one that saw the shard move is
        // refused too.
        let epoch = self.owned_epoch(transactional_id)?;
        let clock_ms = self.inner.clock.now_ms();
        let now_ms = self
            .inner
            .metadata
            .read(|m| op_time_ms(m.transaction(transactional_id), clock_ms))
            .max(last.saturating_add(1));
        *last = now_ms;
        let command = TxnCommand {
            transactional_id: transactional_id.to_string(),
            shard: shard_for(transactional_id),
            coordinator_epoch: epoch,
            op: op(now_ms),
            limits: self.inner.settings.limits,
        };
        let result = self.submit_until_known(command).await;
        let unknown = matches!(result, Err(TxnCoordinatorError::Controller(_)));
        drop(last);
        // Forget the lock once idle, unless the outcome is unknown: the next op must then stay
        // past this one's `now_ms` even if the image never shows it applied.
        if !unknown {
            let mut ids = self.inner.ids.lock().expect("txn id locks poisoned");
            drop(lock);
            if ids.get(transactional_id).is_some_and(|l| Arc::strong_count(l) == 1) {
                ids.remove(transactional_id);
            }
        }
        result
    }

    fn lock_for(&self, transactional_id: &str) -> Arc<tokio::sync::Mutex<i64>> {
        let mut ids = self.inner.ids.lock().expect("txn id locks poisoned");
        ids.entry(transactional_id.to_string()).or_insert_with(|| Arc::new(tokio::sync::Mutex::new(i64::MIN))).clone()
    }

    /// Submits `command`, and again (the identical command) while its outcome is unknown:
    /// `apply` recognises a resubmission and answers as the first time.
    async fn submit_until_known(&self, command: TxnCommand) -> Result<Answer, TxnCoordinatorError> {
        let mut backoff = RESUBMIT_BACKOFF;
        let mut attempt = 0;
        let started = self.inner.clock.now();
        loop {
            match self.inner.controller.txn(command.clone()).await {
                Ok(answer) => return Ok(answer),
                // Only an unknown outcome is resubmitted; a refusal (e.g. CONCURRENT_TRANSACTIONS
                // while markers are owed) is the client's answer, and the client retries it.
                Err(e)
                    if !matches!(e, ControllerError::Rejected(_))
                        && matches!(e.kind(), ErrorKind::Retriable | ErrorKind::Unavailable)
                        && attempt < RESUBMITS
                        && self.inner.clock.now() - started < RESUBMIT_WINDOW =>
                {
                    attempt += 1;
                    warn!(
                        transactional_id = %command.transactional_id,
                        attempt,
                        error = %e,
                        "transaction op outcome unknown; resubmitting the same op"
                    );
                    self.inner.clock.sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The timer task: aborts timed-out transactions and expires idle ids of owned shards.
    async fn run_timers(self, shutdown: CancellationToken) {
        let settings = self.inner.settings;
        let mut next_expire = self.inner.clock.now_ms().saturating_add(ms(settings.expire_check_interval));
        loop {
            let now = self.inner.clock.now_ms();
            let next_deadline = self.owned(|_, s| (s.state == TxnStatus::Ongoing).then(|| deadline(s))).into_iter();
            let wake = next_deadline
                .map(|(_, d)| d)
                .chain([now.saturating_add(ms(settings.abort_check_interval)), next_expire])
                .min()
                .unwrap_or(now);
            let wait = Duration::from_millis(u64::try_from(wake.saturating_sub(now)).unwrap_or(0));
            tokio::select! {
                () = self.inner.clock.sleep(wait) => {}
                () = shutdown.cancelled() => break,
            }
            let now = self.inner.clock.now_ms();
            for id in timed_out(&self.owned(|_, s| Some(s.clone())), now) {
                match self.submit(&id, |now_ms| TxnOp::Timeout { now_ms }).await {
                    Ok(_) => {
                        info!(transactional_id = %id, "aborted a transaction past its transaction.timeout.ms (epoch bumped: the producer is fenced)")
                    }
                    Err(e) => {
                        warn!(transactional_id = %id, error = %e, "aborting a timed-out transaction failed; retrying at the next check")
                    }
                }
            }
            if now >= next_expire {
                next_expire = now.saturating_add(ms(settings.expire_check_interval));
                let expiration = settings.limits.id_expiration_ms;
                for id in expired(&self.owned(|_, s| Some(s.clone())), now, expiration) {
                    match self.submit(&id, |now_ms| TxnOp::Expire { now_ms }).await {
                        Ok(_) => {
                            info!(transactional_id = %id, "expired an idle transactional id (transactional.id.expiration.ms)")
                        }
                        Err(e) => warn!(transactional_id = %id, error = %e, "expiring a transactional id failed"),
                    }
                }
            }
        }
        info!("transaction coordinator timers stopping");
    }

    /// `f` over the transactions of the shards this broker owns, collected with their ids.
    fn owned<T>(&self, f: impl Fn(&str, &skiff_controller::image::TxnState) -> Option<T>) -> Vec<(String, T)> {
        let node_id = self.inner.node_id;
        self.inner.metadata.read(|m| {
            m.transactions()
                .filter(|(id, _)| m.txn_coordinator(id).is_none_or(|c| c.broker_id == node_id))
                .filter_map(|(id, s)| f(id, s).map(|v| (id.to_string(), v)))
                .collect()
        })
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// When an Ongoing transaction times out: the first `now_ms` past `start + timeout`.
fn deadline(s: &skiff_controller::image::TxnState) -> i64 {
    s.start_ms.saturating_add(i64::from(s.timeout_ms)).saturating_add(1)
}

/// Ongoing transactions past their timeout at `now` (Kafka's `timedOutTransactions`).
fn timed_out(states: &[(String, skiff_controller::image::TxnState)], now: i64) -> Vec<String> {
    states
        .iter()
        .filter(|(_, s)| s.state == TxnStatus::Ongoing && deadline(s) <= now)
        .map(|(id, _)| id.clone())
        .collect()
}

/// Idle ids past `transactional.id.expiration.ms` at `now` (Kafka's `shouldExpire`).
fn expired(states: &[(String, skiff_controller::image::TxnState)], now: i64, expiration_ms: i64) -> Vec<String> {
    states
        .iter()
        .filter(|(_, s)| s.state.is_expiration_allowed() && s.updated_ms <= now.saturating_sub(expiration_ms))
        .map(|(id, _)| id.clone())
        .collect()
}

#[cfg(test)]
mod tests;
