//! Crash-only supervision of a process's tasks: one root [`CancellationToken`], one
//! [`TaskTracker`], and critical tasks whose unexpected end stops the process.
//!
//! ```text
//!   main.rs: signal ──cancel──▶ root token ◀──cancel── critical task failed (panic, error,
//!                                   │                   or returned before the root was cancelled)
//!                                   ▼
//!            node.rs: ordered shutdown (stop accepting → … → drain the WAL → stop Raft)
//!                                   ▼
//!            Supervisor::join: every tracked task joined; the first failure, if any, is the
//!            process's result (main exits non-zero)
//! ```
//!
//! Invariants: every task the broker wiring starts is spawned here (tracked, and joined by
//! [`Supervisor::join`]), or detached with a comment saying why. A critical task that ends on
//! its own before shutdown began is a failure: the WAL committer, the group coordinator and
//! the listeners only end because they were told to, so anything else means producers or
//! consumers would be left waiting on a dead task. The failure is logged at ERROR with the
//! task's name, the root is cancelled, and the process exits non-zero once stopped, so an
//! orchestrator restarts it (crash-only: no in-process restart of a half-dead broker).
//!
//! Debug builds only: `SKIFF_TEST_PANIC_TASK=<task name>` makes that critical task panic when
//! it starts (read once, by [`test_panic_task_from_env`]), so black-box tests can prove the
//! above on the real binary (`tests/broker.rs`, `critical_task_panic_stops_the_process`).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::error;

/// The environment variable naming a critical task to panic at start (debug builds only).
pub const TEST_PANIC_TASK_ENV: &str = "SKIFF_TEST_PANIC_TASK";

/// Reads [`TEST_PANIC_TASK_ENV`] (debug builds; always `None` in release builds).
pub fn test_panic_task_from_env() -> Option<String> {
    if cfg!(debug_assertions) { std::env::var(TEST_PANIC_TASK_ENV).ok().filter(|s| !s.is_empty()) } else { None }
}

/// Why a critical task ended the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    pub task: String,
    pub reason: String,
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "critical task `{}` failed: {}", self.task, self.reason)
    }
}

impl std::error::Error for TaskFailure {}

/// What a supervised task returns: `()` or a `Result` whose error is a failure.
pub trait TaskOutcome: Send + 'static {
    fn into_failure(self) -> Option<String>;
}

impl TaskOutcome for () {
    fn into_failure(self) -> Option<String> {
        None
    }
}

impl<E: fmt::Display + Send + 'static> TaskOutcome for Result<(), E> {
    fn into_failure(self) -> Option<String> {
        self.err().map(|e| e.to_string())
    }
}

/// Owns a process's tasks. Cheap to clone; clones share the root, the tracker and the failure.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    root: CancellationToken,
    tracker: TaskTracker,
    /// The first failure; later ones are logged only.
    failure: Mutex<Option<TaskFailure>>,
    /// Tasks still running, by spawn number (named in the log when a join times out).
    running: Mutex<BTreeMap<u64, &'static str>>,
    next_id: AtomicU64,
    panic_task: Option<String>,
}

impl Supervisor {
    /// Supervises tasks under `root`: a failing critical task cancels it.
    pub fn new(root: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                root,
                tracker: TaskTracker::new(),
                failure: Mutex::new(None),
                running: Mutex::new(BTreeMap::new()),
                next_id: AtomicU64::new(0),
                panic_task: None,
            }),
        }
    }

    /// Like [`Self::new`], making the critical task named `panic_task` panic at start (tests of
    /// supervision itself; see [`test_panic_task_from_env`]).
    pub fn with_test_panic(root: CancellationToken, panic_task: Option<String>) -> Self {
        let mut s = Self::new(root);
        if let Some(inner) = Arc::get_mut(&mut s.inner) {
            inner.panic_task = panic_task;
        }
        s
    }

    /// The root token: cancelled by a signal (main.rs) or by a failing critical task.
    pub fn root(&self) -> &CancellationToken {
        &self.inner.root
    }

    /// The first critical failure so far.
    pub fn failure(&self) -> Option<TaskFailure> {
        self.inner.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Spawns a critical task: if it panics, returns an error, or returns at all before the
    /// root is cancelled, the failure is logged with `name` and the root is cancelled. The
    /// handle resolves when the task has ended (for ordered shutdown); [`Self::join`] also
    /// waits for it.
    pub fn spawn_critical<F>(&self, name: &'static str, task: F) -> JoinHandle<()>
    where
        F: Future + Send + 'static,
        F::Output: TaskOutcome,
    {
        self.spawn_inner(name, true, task)
    }

    /// Spawns a tracked task whose failure is logged but does not stop the process.
    pub fn spawn<F>(&self, name: &'static str, task: F) -> JoinHandle<()>
    where
        F: Future + Send + 'static,
        F::Output: TaskOutcome,
    {
        self.spawn_inner(name, false, task)
    }

    fn spawn_inner<F>(&self, name: &'static str, critical: bool, task: F) -> JoinHandle<()>
    where
        F: Future + Send + 'static,
        F::Output: TaskOutcome,
    {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.running.lock().unwrap_or_else(|p| p.into_inner()).insert(id, name);
        let inject = critical && self.inner.panic_task.as_deref() == Some(name);
        let this = self.clone();
        self.inner.tracker.spawn(async move {
            let outcome = AssertUnwindSafe(async move {
                if inject {
                    panic!("{TEST_PANIC_TASK_ENV}={name}: injected panic");
                }
                task.await
            })
            .catch_unwind()
            .await;
            this.inner.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            let reason = match outcome {
                Ok(out) => match out.into_failure() {
                    Some(e) => e,
                    None if !critical || this.inner.root.is_cancelled() => return,
                    None => "it ended before shutdown".to_string(),
                },
                Err(panic) => format!("panicked: {}", panic_message(panic.as_ref())),
            };
            if critical {
                this.fail(name, reason);
            } else {
                error!(task = name, reason = %reason, "task failed");
            }
        })
    }

    fn fail(&self, task: &'static str, reason: String) {
        error!(task, reason = %reason, "critical task failed: shutting down");
        let mut first = self.inner.failure.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(TaskFailure { task: task.to_string(), reason });
        }
        drop(first);
        self.inner.root.cancel();
    }

    /// Waits (at most `timeout`) for every task spawned so far and later; returns the first
    /// critical failure. Call after the ordered shutdown told every task to stop.
    pub async fn join(&self, timeout: Duration) -> Result<(), TaskFailure> {
        self.inner.tracker.close();
        if tokio::time::timeout(timeout, self.inner.tracker.wait()).await.is_err() {
            let names: Vec<&str> =
                self.inner.running.lock().unwrap_or_else(|p| p.into_inner()).values().copied().collect();
            error!(tasks = ?names, "tasks still running after {timeout:?} of shutdown; abandoning them");
        }
        match self.failure() {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOIN: Duration = Duration::from_secs(5);

    /// A task body that panics (typed `()`, as real task bodies are).
    fn explode(message: &str) {
        panic!("{message}")
    }

    #[tokio::test]
    async fn a_panicking_critical_task_cancels_the_root_and_fails_the_join() {
        let root = CancellationToken::new();
        let sup = Supervisor::new(root.clone());
        let stop = root.clone();
        let bystander = sup.spawn_critical("bystander", async move { stop.cancelled().await });
        sup.spawn_critical("committer", async { explode("boom") });
        tokio::time::timeout(JOIN, root.cancelled()).await.expect("the root is cancelled");
        bystander.await.expect("the other task stops with the root");
        let failure = sup.join(JOIN).await.expect_err("a failure");
        assert_eq!(failure.task, "committer");
        assert!(failure.reason.contains("panicked: boom"), "{failure}");
    }

    #[tokio::test]
    async fn an_error_or_an_early_return_is_a_failure() {
        let sup = Supervisor::new(CancellationToken::new());
        sup.spawn_critical("flusher", async { Err::<(), _>("disk on fire") });
        let failure = sup.join(JOIN).await.expect_err("a failure");
        assert_eq!(failure, TaskFailure { task: "flusher".into(), reason: "disk on fire".into() });

        let root = CancellationToken::new();
        let sup = Supervisor::new(root.clone());
        sup.spawn_critical("heartbeat", async {});
        let failure = sup.join(JOIN).await.expect_err("returned before shutdown");
        assert_eq!(failure.task, "heartbeat");
        assert!(root.is_cancelled());
    }

    #[tokio::test]
    async fn a_clean_shutdown_joins_everything() {
        let root = CancellationToken::new();
        let sup = Supervisor::new(root.clone());
        let done = Arc::new(AtomicU64::new(0));
        for name in ["a", "b", "c"] {
            let (stop, done) = (root.child_token(), done.clone());
            sup.spawn_critical(name, async move {
                stop.cancelled().await;
                // Work after the stop (draining) is waited for too.
                tokio::task::yield_now().await;
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        let (stop, done2) = (root.clone(), done.clone());
        sup.spawn("helper", async move {
            stop.cancelled().await;
            done2.fetch_add(1, Ordering::SeqCst);
            Ok::<(), String>(())
        });
        root.cancel();
        sup.join(JOIN).await.expect("clean");
        assert_eq!(done.load(Ordering::SeqCst), 4, "every task ran to its end");
        assert!(sup.inner.running.lock().expect("lock").is_empty());
    }

    /// A task that ignores the stop does not hang the process: the join gives up after its
    /// timeout (tokio's paused clock: no real waiting).
    #[tokio::test(start_paused = true)]
    async fn a_stuck_task_is_abandoned_after_the_join_timeout() {
        let root = CancellationToken::new();
        let sup = Supervisor::new(root.clone());
        sup.spawn_critical("stuck", std::future::pending::<()>());
        root.cancel();
        let clock = skiff_time::system_clock();
        let start = clock.now();
        sup.join(Duration::from_secs(10)).await.expect("no failure, only a straggler");
        assert_eq!(clock.now() - start, Duration::from_secs(10));
        assert_eq!(sup.inner.running.lock().expect("lock").values().copied().collect::<Vec<_>>(), ["stuck"]);
    }

    #[tokio::test]
    async fn a_non_critical_failure_does_not_stop_the_process() {
        let root = CancellationToken::new();
        let sup = Supervisor::new(root.clone());
        sup.spawn("connection", async { explode("bad client") }).await.expect("the wrapper itself does not panic");
        assert!(!root.is_cancelled());
        root.cancel();
        sup.join(JOIN).await.expect("no critical failure");
    }

    #[tokio::test]
    async fn the_test_hook_panics_only_the_named_task() {
        let root = CancellationToken::new();
        let sup = Supervisor::with_test_panic(root.clone(), Some("wal-committer".into()));
        let stop = root.clone();
        sup.spawn_critical("wal-flusher", async move { stop.cancelled().await });
        sup.spawn_critical("wal-committer", async {});
        let failure = sup.join(JOIN).await.expect_err("injected");
        assert_eq!(failure.task, "wal-committer");
        assert!(failure.reason.contains("injected panic"), "{failure}");
    }
}
