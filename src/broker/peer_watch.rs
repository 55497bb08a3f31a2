//! Peer watch: this broker's own, early evidence that another broker's process is gone.
//!
//! A SIGKILLed broker's kernel closes all its sockets at once: its clients' connections, its
//! heartbeat connection to the controller, and the idle connection this broker holds to each
//! peer's Kafka listener (nothing is ever sent on it). The controller fences the dead broker and
//! moves its partitions in one commit some 10-150 ms later (`controller/src/raft/service.rs`),
//! but its clients ask a surviving broker for Metadata within a millisecond or two of their own
//! connection breaking. Answered from the image, that Metadata still names the dead broker as
//! leader, and each client then waits for its own next refresh (librdkafka's 1 s topic scan,
//! franz-go's 5 s `MetadataMinAge`, Java's growing backoff). So `handler/metadata.rs` asks
//! [`PeerWatch::judge`] about every leader it is about to name, and holds the answer while a
//! leader's connection is lost until the fence reaches the image (the answer then names the
//! new leader), or answers LEADER_NOT_AVAILABLE (retriable: clients refresh on their fast
//! interval) once the hold is over and the leader still refuses connections.
//!
//! ```text
//!   connected ──connection closed──▶ lost ──reconnect refused──▶ gone
//!       ▲                             │ │                          │
//!       └── reconnected, and open ◀───┘ └── SUSPECT_MAX passes ──▶ no verdict (answer as the image says)
//!           after SETTLE                                           │
//!   any state ── image: fenced, or another incarnation ──▶ forgotten (the image answers)
//! ```
//!
//! Invariants: advisory only. It never changes metadata or leadership; it delays a Metadata
//! answer by at most [`HOLD_MAX`] after the loss, or reports a partition leaderless while its
//! leader's listener refuses connections and the fence has not arrived. A live peer whose
//! connection merely broke (or timed out idle) reconnects within [`SETTLE`] and is judged a
//! leader again; without proof (no answer at all) a loss stops counting after [`SUSPECT_MAX`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_controller::MetadataHandle;
use skiff_time::{Clock, Instant};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use uuid::Uuid;

/// The longest a Metadata answer is held after a leader's connection was lost: the session
/// timeout (1 s by default), by which the controller fences a silent broker at the latest.
pub const HOLD_MAX: Duration = Duration::from_secs(1);
/// How long a lost connection without proof either way (reconnects neither refused nor
/// accepted) holds answers.
pub const SUSPECT_MAX: Duration = Duration::from_millis(200);
/// How long a reconnection must stay open before a lost peer counts as connected again: a dying
/// process's listener may still accept for a moment after its other sockets closed, then
/// resets what it accepted.
pub const SETTLE: Duration = Duration::from_millis(20);
/// The longest a Metadata answer waits for a probe of a leader's listener: a refusal or an
/// acceptance takes one round trip; no answer at all proves nothing.
pub const PROBE_WAIT: Duration = Duration::from_millis(20);
/// How long a probe's connection must stay open to prove a peer alive.
pub const PROBE_SETTLE: Duration = Duration::from_millis(5);
/// A probe's result serves Metadata requests for this long after it.
const PROBE_REUSE: Duration = Duration::from_millis(5);
/// Pause between reconnection attempts while a peer refuses or does not answer.
const RETRY: Duration = Duration::from_millis(20);
/// Bound on one connection attempt (a refusal answers at once).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// An idle connection is replaced this often, well before a peer's `connections_max_idle`
/// (600 s by default) would close it.
const REFRESH: Duration = Duration::from_secs(120);

/// What [`PeerWatch::judge`] says about a broker the image names as a leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing known against it: name it.
    Leads,
    /// Its connection was lost: hold the answer until the image changes, at most until then.
    Hold(Instant),
    /// Its listener refuses connections and the hold is over: report the partition leaderless.
    Unavailable,
}

/// A peer incarnation's lost connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lost {
    incarnation: Uuid,
    since: Instant,
    /// A reconnection was refused: nothing listens there any more.
    gone: bool,
}

/// Shared between the watch task and the Metadata handler; cheap to clone.
#[derive(Clone)]
pub struct PeerWatch {
    inner: Arc<Inner>,
}

struct Inner {
    lost: Mutex<HashMap<i32, Lost>>,
    /// Peer incarnations whose listener this broker has connected to at least once. A refusal
    /// from a peer never reached proves nothing: it may still be binding its listener, or its
    /// advertised address may not be reachable from here at all (a compose stack advertises
    /// host-published ports, `127.0.0.1:1909x`, which inside a container is the container
    /// itself). Only a peer once reached can be judged gone.
    reached: Mutex<HashSet<(i32, Uuid)>>,
    /// Per peer: when its listener was last probed for a Metadata answer (single flight: a
    /// request arriving while a probe runs waits for it and uses its result).
    probes: Mutex<HashMap<i32, Arc<tokio::sync::Mutex<Option<Instant>>>>>,
    /// Bumped on every change of `lost`, to wake held answers.
    changed: watch::Sender<u64>,
}

impl Default for PeerWatch {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                lost: Mutex::new(HashMap::new()),
                reached: Mutex::new(HashSet::new()),
                probes: Mutex::new(HashMap::new()),
                changed: watch::channel(0).0,
            }),
        }
    }
}

impl PeerWatch {
    /// The verdict on broker `id`, whose live incarnation in the image is `incarnation`.
    pub fn judge(&self, id: i32, incarnation: Uuid, now: Instant) -> Verdict {
        let lost = self.inner.lost.lock().unwrap_or_else(|e| e.into_inner());
        verdict(lost.get(&id).filter(|l| l.incarnation == incarnation).copied(), now)
    }

    /// Probes the listeners of the peers `leaders` (id, incarnation, address) that are not
    /// already known lost, concurrently, and records a refusal; at most [`PROBE_WAIT`].
    ///
    /// Why on the Metadata path: a dying process's sockets close one after another, newest
    /// first as measured (the listener, bound at start-up, last; the idle connection [`run`]
    /// holds, opened when the peer registered, after the clients' connections), and a client
    /// that asks for Metadata as soon as its own connection broke (franz-go within a
    /// millisecond) would be answered before this broker noticed anything. See [`probe_gone`].
    /// One probe per peer serves all requests arriving while it runs and for [`PROBE_REUSE`]
    /// after; a probe of a live peer delays the answer by [`PROBE_SETTLE`].
    pub async fn probe_leaders(&self, leaders: &[(i32, Uuid, String)], clock: &dyn Clock) {
        let probes = leaders
            .iter()
            .filter(|(id, inc, _)| self.was_reached(*id, *inc) && self.judge(*id, *inc, clock.now()) == Verdict::Leads)
            .map(|(id, incarnation, addr)| async move {
                let slot = {
                    let mut probes = self.inner.probes.lock().unwrap_or_else(|e| e.into_inner());
                    probes.entry(*id).or_default().clone()
                };
                let mut last = slot.lock().await;
                if last.is_some_and(|t| clock.now() < t + PROBE_REUSE) {
                    return;
                }
                if probe_gone(addr, clock).await {
                    self.refused(*id, *incarnation, clock.now(), clock.now_ms());
                }
                *last = Some(clock.now());
            });
        futures::future::join_all(probes).await;
    }

    /// Wakes when any peer's state changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    fn update(&self, id: i32, f: impl FnOnce(&mut HashMap<i32, Lost>) -> bool) {
        let changed = f(&mut self.inner.lost.lock().unwrap_or_else(|e| e.into_inner()));
        if changed {
            self.inner.changed.send_modify(|n| *n += 1);
            debug!(peer = id, "peer watch changed");
        }
    }

    /// The connection to `id` closed at `now` (a loss already recorded keeps its time).
    fn connection_lost(&self, id: i32, incarnation: Uuid, now: Instant) {
        self.update(id, |lost| match lost.get(&id) {
            Some(l) if l.incarnation == incarnation => false,
            _ => {
                lost.insert(id, Lost { incarnation, since: now, gone: false });
                true
            }
        });
    }

    /// Whether this broker has connected to peer `id`'s incarnation `incarnation` at least once.
    fn was_reached(&self, id: i32, incarnation: Uuid) -> bool {
        self.inner.reached.lock().unwrap_or_else(|e| e.into_inner()).contains(&(id, incarnation))
    }

    /// A connection to `id`'s listener opened.
    fn reached(&self, id: i32, incarnation: Uuid) {
        self.inner.reached.lock().unwrap_or_else(|e| e.into_inner()).insert((id, incarnation));
    }

    /// A connection to `id` was refused at `now`; ignored for a peer never reached.
    fn refused(&self, id: i32, incarnation: Uuid, now: Instant, unix_ms: i64) {
        if !self.was_reached(id, incarnation) {
            debug!(peer = id, "peer's listener refuses connections, but was never reached from here: no verdict");
            return;
        }
        self.update(id, |lost| {
            let entry = lost.entry(id).or_insert(Lost { incarnation, since: now, gone: false });
            if entry.incarnation != incarnation {
                *entry = Lost { incarnation, since: now, gone: false };
            }
            if entry.gone {
                return false;
            }
            entry.gone = true;
            info!(
                peer = id,
                unix_ms,
                "peer broker's listener refuses connections: its partitions are held from Metadata until it is fenced"
            );
            true
        });
    }

    /// A connection to `id` is open (and stayed open past [`SETTLE`] after a loss).
    fn connected(&self, id: i32) {
        self.update(id, |lost| lost.remove(&id).is_some());
    }

    /// Forgets every peer not in `live` (id → incarnation): the image has the last word.
    fn retain(&self, live: &HashMap<i32, Uuid>, unix_ms: i64) {
        self.inner.reached.lock().unwrap_or_else(|e| e.into_inner()).retain(|(id, inc)| live.get(id) == Some(inc));
        let mut lost = self.inner.lost.lock().unwrap_or_else(|e| e.into_inner());
        let before = lost.len();
        lost.retain(|id, l| {
            let keep = live.get(id) == Some(&l.incarnation);
            if !keep {
                info!(peer = *id, gone = l.gone, unix_ms, "image shows the gone peer broker fenced (or restarted)");
            }
            keep
        });
        if lost.len() != before {
            drop(lost);
            self.inner.changed.send_modify(|n| *n += 1);
        }
    }
}

/// The pure rule behind [`PeerWatch::judge`].
fn verdict(lost: Option<Lost>, now: Instant) -> Verdict {
    let Some(l) = lost else { return Verdict::Leads };
    let bound = l.since + if l.gone { HOLD_MAX } else { SUSPECT_MAX };
    match (now < bound, l.gone) {
        (true, _) => Verdict::Hold(bound),
        (false, true) => Verdict::Unavailable,
        (false, false) => Verdict::Leads,
    }
}

/// Whether the process listening at `addr` is gone: its listener refuses a connection, or
/// resets each one it accepted (a dying listener still accepts until it is closed, then resets
/// what it queued) until it refuses. A connection that stays open for [`PROBE_SETTLE`] is life;
/// no answer within [`PROBE_WAIT`], or a listener that keeps accepting and closing (a live
/// broker at its connection limit), proves nothing.
async fn probe_gone(addr: &str, clock: &dyn Clock) -> bool {
    let deadline = clock.now() + PROBE_WAIT;
    let mut buf = [0u8; 16];
    loop {
        let attempt = tokio::select! {
            r = tokio::net::TcpStream::connect(addr) => r,
            () = clock.sleep_until(deadline) => return false,
        };
        let mut stream = match attempt {
            Ok(stream) => stream,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionRefused,
        };
        let settled = (clock.now() + PROBE_SETTLE).min(deadline);
        tokio::select! {
            r = stream.read(&mut buf) => match r {
                // A peer never speaks first; bytes are life.
                Ok(n) if n > 0 => return false,
                // Closed or reset: try again, until refused or out of time.
                _ => continue,
            },
            () = clock.sleep_until(settled) => return false,
        }
    }
}

/// Keeps one watcher per live peer incarnation (not `me`), following the image, until `stop`.
pub async fn run(watch: PeerWatch, me: i32, metadata: MetadataHandle, clock: Arc<dyn Clock>, stop: CancellationToken) {
    let mut applied = metadata.subscribe();
    // (incarnation, address) → the watcher's token.
    let mut watchers: HashMap<i32, (Uuid, String, CancellationToken)> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let peers = metadata.read(|m| m.live_broker_processes());
        let live: HashMap<i32, Uuid> = peers.iter().map(|(id, inc, _)| (*id, *inc)).collect();
        watch.retain(&live, clock.now_ms());
        watchers.retain(|id, (inc, addr, token)| {
            let keep = peers.iter().any(|(i, n, a)| i == id && n == inc && a.first() == Some(addr));
            if !keep {
                token.cancel();
            }
            keep
        });
        for (id, incarnation, addrs) in peers {
            let Some(addr) = addrs.into_iter().next() else { continue };
            if id == me || watchers.contains_key(&id) {
                continue;
            }
            let token = stop.child_token();
            watchers.insert(id, (incarnation, addr.clone(), token.clone()));
            tasks.spawn(watch_peer(watch.clone(), id, incarnation, addr, clock.clone(), token));
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { break },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = stop.cancelled() => break,
        }
    }
    for (_, (_, _, token)) in watchers {
        token.cancel();
    }
    while tasks.join_next().await.is_some() {}
}

/// Holds a connection to one peer incarnation's listener at `addr` and reports what happens to
/// it, until `stop`.
async fn watch_peer(
    watch: PeerWatch,
    id: i32,
    incarnation: Uuid,
    addr: String,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    let mut buf = [0u8; 64];
    loop {
        let attempt = tokio::select! {
            r = tokio::net::TcpStream::connect(addr.as_str()) => Some(r),
            () = clock.sleep(CONNECT_TIMEOUT) => None,
            () = stop.cancelled() => return,
        };
        let mut stream = match attempt {
            Some(Ok(stream)) => {
                watch.reached(id, incarnation);
                stream
            }
            Some(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                watch.refused(id, incarnation, clock.now(), clock.now_ms());
                tokio::select! {
                    () = clock.sleep(RETRY) => continue,
                    () = stop.cancelled() => return,
                }
            }
            // No answer or another error: no proof either way.
            _ => {
                tokio::select! {
                    () = clock.sleep(RETRY) => continue,
                    () = stop.cancelled() => return,
                }
            }
        };
        // Open: after a loss, only once it stays open (a dying listener resets what it accepted).
        let mut settled = false;
        let refresh = clock.now() + REFRESH;
        loop {
            let wait = if settled { refresh } else { clock.now() + SETTLE };
            tokio::select! {
                r = stream.read(&mut buf) => match r {
                    // A peer never sends on this connection, but bytes are no harm.
                    Ok(n) if n > 0 => continue,
                    _ => {
                        watch.connection_lost(id, incarnation, clock.now());
                        break;
                    }
                },
                () = clock.sleep_until(wait) => {
                    if settled {
                        // Replace the idle connection before the peer's idle timeout closes it.
                        break;
                    }
                    settled = true;
                    watch.connected(id);
                }
                () = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_leader_is_held_then_reported_leaderless_only_while_refusing() {
        let t0 = skiff_time::system_clock().now();
        let ms = |n| t0 + Duration::from_millis(n);
        let inc = Uuid::from_u128(1);
        assert_eq!(verdict(None, t0), Verdict::Leads);
        // Lost, no proof yet: held briefly, then named again.
        let lost = Lost { incarnation: inc, since: t0, gone: false };
        assert_eq!(verdict(Some(lost), ms(10)), Verdict::Hold(t0 + SUSPECT_MAX));
        assert_eq!(verdict(Some(lost), t0 + SUSPECT_MAX), Verdict::Leads);
        // Refused: held up to HOLD_MAX for the fence, then leaderless.
        let gone = Lost { gone: true, ..lost };
        assert_eq!(verdict(Some(gone), ms(10)), Verdict::Hold(t0 + HOLD_MAX));
        assert_eq!(verdict(Some(gone), t0 + HOLD_MAX), Verdict::Unavailable);
    }

    #[test]
    fn only_the_lost_incarnation_is_judged_and_the_image_clears_it() {
        let clock = skiff_time::system_clock();
        let w = PeerWatch::default();
        let (old, new) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let now = clock.now();
        w.reached(5, old);
        w.connection_lost(5, old, now);
        w.refused(5, old, now, 0);
        assert!(matches!(w.judge(5, old, now), Verdict::Hold(_)));
        assert_eq!(w.judge(5, new, now), Verdict::Leads, "a restarted process is not the lost one");
        assert_eq!(w.judge(6, old, now), Verdict::Leads);
        // The image fenced it (no longer live): forgotten.
        w.retain(&HashMap::from([(6, old)]), 0);
        assert_eq!(w.judge(5, old, now), Verdict::Leads);
        // A reconnection that stays open clears a loss.
        w.connection_lost(6, old, now);
        assert!(matches!(w.judge(6, old, now), Verdict::Hold(_)));
        w.connected(6);
        assert_eq!(w.judge(6, old, now), Verdict::Leads);
    }

    /// A peer this broker never reached (still binding its listener, or advertising an address
    /// that is not reachable from here, as a compose stack's host-published ports are from inside
    /// a container) is never judged gone: its partitions are answered as the image says.
    #[tokio::test]
    async fn a_peer_never_reached_is_never_judged_gone() {
        let clock = skiff_time::system_clock();
        let w = PeerWatch::default();
        let inc = Uuid::from_u128(4);
        let closed = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch_peer(w.clone(), 8, inc, closed.clone(), clock.clone(), stop.clone()));
        w.probe_leaders(&[(8, inc, closed)], clock.as_ref()).await;
        clock.sleep(RETRY * 3).await;
        assert_eq!(w.judge(8, inc, clock.now()), Verdict::Leads);
        stop.cancel();
        task.await.expect("watcher ends at stop");
    }

    #[tokio::test]
    async fn a_probe_tells_a_live_listener_from_a_closed_one() {
        let clock = skiff_time::system_clock();
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let live_addr = live.local_addr().expect("addr").to_string();
        let closed = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        assert!(probe_gone(&closed, clock.as_ref()).await, "refused: gone");
        assert!(!probe_gone(&live_addr, clock.as_ref()).await, "accepted and kept open: alive");
        drop(live);
    }

    #[tokio::test]
    async fn a_peer_that_stops_listening_is_gone_and_one_that_listens_again_is_back() {
        let clock = skiff_time::system_clock();
        let w = PeerWatch::default();
        let inc = Uuid::from_u128(3);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch_peer(w.clone(), 7, inc, addr.to_string(), clock.clone(), stop.clone()));
        let (conn, _) = listener.accept().await.expect("the watcher connects");
        // The process dies: its connection and its listener close.
        drop(conn);
        drop(listener);
        let mut changes = w.subscribe();
        let deadline = clock.now() + Duration::from_secs(5);
        while !matches!(w.inner.lost.lock().expect("lock").get(&7), Some(Lost { gone: true, .. })) {
            assert!(clock.now() < deadline, "never judged gone");
            let _ = tokio::time::timeout(Duration::from_millis(50), changes.changed()).await;
        }
        assert!(matches!(w.judge(7, inc, clock.now()), Verdict::Hold(_)));
        // It listens again (same port): back after SETTLE.
        let again = tokio::net::TcpListener::bind(addr).await.expect("rebind");
        let (_conn, _) = again.accept().await.expect("the watcher reconnects");
        while w.judge(7, inc, clock.now()) != Verdict::Leads {
            assert!(clock.now() < deadline, "never back");
            let _ = tokio::time::timeout(Duration::from_millis(50), changes.changed()).await;
        }
        stop.cancel();
        task.await.expect("watcher ends at stop");
    }
}
