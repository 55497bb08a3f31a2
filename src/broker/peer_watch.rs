//! Peer watch: this broker's own, early evidence that another broker's process is gone.
//!
//! A SIGKILLed broker's kernel closes all its sockets: its clients' connections, its heartbeat
//! connection to the controller, and the connection this broker holds to each peer's Kafka
//! listener. The controller fences the dead broker and moves its partitions in one commit some
//! 10-150 ms later (`controller/src/raft/service.rs`), but its clients ask a surviving broker for
//! Metadata within a millisecond or two of their own connection breaking. Answered from the
//! image, that Metadata still names the dead broker as leader, and each client then waits for its
//! own next refresh (librdkafka's 1 s topic scan, franz-go's 5 s `MetadataMinAge`, Java's growing
//! backoff). So `handler/metadata.rs` names another broker as a leader only once that broker has
//! *answered* a request sent after the Metadata request arrived ([`PeerWatch::probe_leaders`]),
//! and holds the answer while a leader is lost until the fence reaches the image (the answer then
//! names the new leader), or answers LEADER_NOT_AVAILABLE (retriable) once the hold is over and
//! the leader's listener still refuses connections.
//!
//! Why an answer and not a connection: a dying process's established sockets close before its
//! listener does (measured: up to ~10 ms apart on a loaded machine), and until then the kernel
//! still completes TCP handshakes into the dead listener's backlog. A connection that merely
//! opens and stays open proves nothing; only the process can answer. A request sent after the
//! Metadata request arrived (so after the asking client saw its own connection break) is never
//! answered by a process that is already gone.
//!
//! The proof travels over the one connection this broker holds to each peer's PLAINTEXT
//! listener: an ApiVersions request ("ping", client id [`CLIENT_ID`]), pipelined, answered in
//! one round trip (well under a millisecond between live brokers; no new connection per
//! Metadata request).
//!
//! ```text
//!   connected ──connection closed, or no answer──▶ lost ──reconnect refused──▶ gone
//!       ▲        within PROBE_WAIT of an ask        │ │                        │
//!       └── a ping sent after the loss answered ◀───┘ └── SUSPECT_MAX ──▶ no verdict (name it)
//!                                                                          │ HOLD_MAX
//!   any state ── image: fenced, or another incarnation ──▶ forgotten       ▼ leaderless
//! ```
//!
//! Invariants: advisory only. It never changes metadata or leadership; it delays a Metadata
//! answer by at most [`HOLD_MAX`] after a loss, or reports a partition leaderless while its
//! leader's listener refuses connections and the fence has not arrived. A live peer answers a
//! ping within a round trip, so a loss of a live peer's connection (or a slow answer) is cleared
//! by its next answer; without proof either way a loss stops counting after [`SUSPECT_MAX`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};
use skiff_controller::MetadataHandle;
use skiff_time::{Clock, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use uuid::Uuid;

/// The longest a Metadata answer is held after a leader's connection was lost: the session
/// timeout (1 s by default), by which the controller fences a silent broker at the latest.
pub const HOLD_MAX: Duration = Duration::from_secs(1);
/// How long a loss without proof either way (reconnects neither refused nor answered) holds
/// answers.
pub const SUSPECT_MAX: Duration = Duration::from_millis(200);
/// How long a Metadata answer waits for a leader's answer to a ping before it counts that
/// leader as lost (and holds the answer until it answers, or [`SUSPECT_MAX`]). A live peer
/// answers in one round trip; a loaded machine may take a few milliseconds.
pub const PROBE_WAIT: Duration = Duration::from_millis(20);
/// The client id of the pings, as the peer's request log and metrics show it.
pub const CLIENT_ID: &str = "skiff-peer-watch";
/// Pings in flight on one connection at most (more asks share the last one sent).
const MAX_IN_FLIGHT: usize = 8;
/// The largest answer frame accepted (an ApiVersions answer is well under 1 KiB).
const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Pause between reconnection attempts while a peer refuses or does not answer.
const RETRY: Duration = Duration::from_millis(20);
/// Bound on one connection attempt (a refusal answers at once).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// A ping is sent at least this often, so the peer's `connections_max_idle` (600 s by default)
/// never closes the connection; a connection whose oldest ping is older than this is replaced.
const KEEPALIVE: Duration = Duration::from_secs(120);

/// What [`PeerWatch::judge`] says about a broker the image names as a leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing known against it: name it.
    Leads,
    /// Lost (connection closed, or no answer in time): hold the answer until the image changes
    /// or it answers again, at most until then.
    Hold(Instant),
    /// Its listener refuses connections and the hold is over: report the partition leaderless.
    Unavailable,
}

/// A peer incarnation's lost connection (or unanswered ping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lost {
    incarnation: Uuid,
    since: Instant,
    /// A reconnection was refused: nothing listens there any more.
    gone: bool,
}

/// Where Metadata asks a peer's watcher for a ping: the latest instant a proof of life must
/// postdate.
type Asks = watch::Sender<Option<Instant>>;

/// Shared between the watch tasks and the Metadata handler; cheap to clone.
#[derive(Clone)]
pub struct PeerWatch {
    inner: Arc<Inner>,
}

struct Inner {
    lost: Mutex<HashMap<i32, Lost>>,
    /// Peer incarnations that answered this broker at least once. A refusal from a peer never
    /// reached proves nothing: it may still be binding its listener, or its advertised address
    /// may not be reachable from here at all (a compose stack advertises host-published ports,
    /// `127.0.0.1:1909x`, which inside a container is the container itself). Only a peer once
    /// reached can be judged gone.
    reached: Mutex<HashSet<(i32, Uuid)>>,
    /// Per peer: its incarnation, and when the latest answered ping was sent.
    proven: Mutex<HashMap<i32, (Uuid, Instant)>>,
    /// Per peer with a running watcher: its incarnation and where Metadata asks for a ping (the
    /// latest instant a proof of life must postdate).
    links: Mutex<HashMap<i32, (Uuid, Asks)>>,
    /// Bumped on every change of `lost` and every answered ping, to wake waiting answers.
    changed: watch::Sender<u64>,
}

impl Default for PeerWatch {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                lost: Mutex::new(HashMap::new()),
                reached: Mutex::new(HashSet::new()),
                proven: Mutex::new(HashMap::new()),
                links: Mutex::new(HashMap::new()),
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

    /// Asks each peer in `leaders` (id, incarnation) that is reached and not already lost to
    /// answer a ping sent now, and waits until each has answered, was lost, or [`PROBE_WAIT`]
    /// passed; a peer that has not answered by then is counted lost from now (its answer, when
    /// it comes, clears that at once). Asks arriving together share pings.
    pub async fn probe_leaders(&self, leaders: &[(i32, Uuid)], clock: &dyn Clock) {
        let asked_at = clock.now();
        let mut changes = self.subscribe();
        let asked: Vec<(i32, Uuid)> = {
            let links = self.inner.links.lock().unwrap_or_else(|e| e.into_inner());
            leaders
                .iter()
                .copied()
                .filter(|(id, inc)| self.was_reached(*id, *inc) && self.judge(*id, *inc, asked_at) == Verdict::Leads)
                .filter(|(id, inc)| match links.get(id) {
                    Some((linked, asks)) if linked == inc => {
                        asks.send_modify(|want| *want = Some(want.map_or(asked_at, |w| w.max(asked_at))));
                        true
                    }
                    _ => false,
                })
                .collect()
        };
        let deadline = asked_at + PROBE_WAIT;
        loop {
            changes.borrow_and_update();
            let now = clock.now();
            let waiting: Vec<(i32, Uuid)> = asked
                .iter()
                .copied()
                .filter(|(id, inc)| {
                    self.judge(*id, *inc, now) == Verdict::Leads && !self.proven_since(*id, *inc, asked_at)
                })
                .collect();
            if waiting.is_empty() {
                return;
            }
            if now >= deadline {
                for (id, inc) in waiting {
                    self.unanswered(id, inc, asked_at, clock.now_ms());
                }
                return;
            }
            tokio::select! {
                _ = changes.changed() => {}
                () = clock.sleep_until(deadline) => {}
            }
        }
    }

    /// Wakes when any peer's state changes or a peer answers.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    fn bump(&self) {
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn update(&self, id: i32, f: impl FnOnce(&mut HashMap<i32, Lost>) -> bool) {
        let changed = f(&mut self.inner.lost.lock().unwrap_or_else(|e| e.into_inner()));
        if changed {
            self.bump();
            debug!(peer = id, "peer watch changed");
        }
    }

    /// Whether `id`'s incarnation `incarnation` answered a ping sent at or after `since`.
    fn proven_since(&self, id: i32, incarnation: Uuid, since: Instant) -> bool {
        let proven = self.inner.proven.lock().unwrap_or_else(|e| e.into_inner());
        proven.get(&id).is_some_and(|(inc, sent)| *inc == incarnation && *sent >= since)
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

    /// `id` did not answer a ping asked for at `since` within [`PROBE_WAIT`].
    fn unanswered(&self, id: i32, incarnation: Uuid, since: Instant, unix_ms: i64) {
        debug!(peer = id, unix_ms, "peer broker did not answer a ping in time: its partitions are held from Metadata");
        self.connection_lost(id, incarnation, since);
    }

    /// `id` answered a ping sent at `sent`: proof of life for asks up to then, and the end of
    /// any loss recorded before it was sent.
    fn answered(&self, id: i32, incarnation: Uuid, sent: Instant) {
        self.inner.reached.lock().unwrap_or_else(|e| e.into_inner()).insert((id, incarnation));
        {
            let mut proven = self.inner.proven.lock().unwrap_or_else(|e| e.into_inner());
            let slot = proven.entry(id).or_insert((incarnation, sent));
            if slot.0 != incarnation || slot.1 < sent {
                *slot = (incarnation, sent);
            }
        }
        let mut lost = self.inner.lost.lock().unwrap_or_else(|e| e.into_inner());
        if lost.get(&id).is_some_and(|l| l.incarnation == incarnation && l.since <= sent) {
            lost.remove(&id);
            debug!(peer = id, "peer answered again");
        }
        drop(lost);
        self.bump();
    }

    /// Whether this broker has had an answer from peer `id`'s incarnation `incarnation`.
    fn was_reached(&self, id: i32, incarnation: Uuid) -> bool {
        self.inner.reached.lock().unwrap_or_else(|e| e.into_inner()).contains(&(id, incarnation))
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

    /// Registers the watcher of `id`'s incarnation: where Metadata asks it for pings.
    fn link(&self, id: i32, incarnation: Uuid) -> watch::Receiver<Option<Instant>> {
        let (asks, rx) = watch::channel(None);
        self.inner.links.lock().unwrap_or_else(|e| e.into_inner()).insert(id, (incarnation, asks));
        rx
    }

    /// Forgets every peer not in `live` (id → incarnation): the image has the last word.
    fn retain(&self, live: &HashMap<i32, Uuid>, unix_ms: i64) {
        self.inner.reached.lock().unwrap_or_else(|e| e.into_inner()).retain(|(id, inc)| live.get(id) == Some(inc));
        self.inner.proven.lock().unwrap_or_else(|e| e.into_inner()).retain(|id, (inc, _)| live.get(id) == Some(inc));
        self.inner.links.lock().unwrap_or_else(|e| e.into_inner()).retain(|id, (inc, _)| live.get(id) == Some(inc));
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
            self.bump();
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

/// One ping: an ApiVersions v0 request with correlation id `correlation_id`, size-prefixed.
fn ping_frame(correlation_id: i32) -> Vec<u8> {
    let key = ApiKey::ApiVersions;
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(0)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let mut body = BytesMut::new();
    header.encode(&mut body, key.request_header_version(0)).expect("a fixed request header encodes");
    ApiVersionsRequest::default().encode(&mut body, 0).expect("an empty ApiVersions v0 request encodes");
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// Takes every complete answer frame off the front of `buf`, returning their correlation ids;
/// `Err` for a frame no Kafka listener sends (a negative or oversized length, or too short for
/// a correlation id).
fn answered_correlation_ids(buf: &mut BytesMut) -> Result<Vec<i32>, ()> {
    let mut ids = Vec::new();
    while buf.len() >= 4 {
        let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let size = usize::try_from(size).map_err(|_| ())?;
        if !(4..=MAX_FRAME_BYTES).contains(&size) {
            return Err(());
        }
        if buf.len() < 4 + size {
            break;
        }
        ids.push(i32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]));
        buf.advance(4 + size);
    }
    Ok(ids)
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
            let asks = watch.link(id, incarnation);
            tasks.spawn(watch_peer(watch.clone(), id, incarnation, addr, asks, clock.clone(), token));
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

/// Holds a connection to one peer incarnation's listener at `addr`, pings it when `asks` asks
/// (and on every (re)connection), and reports what happens, until `stop`.
async fn watch_peer(
    watch: PeerWatch,
    id: i32,
    incarnation: Uuid,
    addr: String,
    mut asks: watch::Receiver<Option<Instant>>,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    let mut correlation_id: i32 = 0;
    loop {
        let attempt = tokio::select! {
            r = tokio::net::TcpStream::connect(addr.as_str()) => Some(r),
            () = clock.sleep(CONNECT_TIMEOUT) => None,
            () = stop.cancelled() => return,
        };
        let stream = match attempt {
            Some(Ok(stream)) => stream,
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
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let mut buf = BytesMut::with_capacity(1024);
        // (correlation id, sent at), oldest first: answers come back in order.
        let mut in_flight: VecDeque<(i32, Instant)> = VecDeque::new();
        // A ping at once: a reconnection counts only once the process answers on it.
        let mut last_sent: Option<Instant> = None;
        let mut due = true;
        loop {
            if due && in_flight.len() < MAX_IN_FLIGHT {
                correlation_id = correlation_id.wrapping_add(1);
                let sent = clock.now();
                if writer.write_all(&ping_frame(correlation_id)).await.is_err() {
                    watch.connection_lost(id, incarnation, clock.now());
                    break;
                }
                in_flight.push_back((correlation_id, sent));
                last_sent = Some(sent);
            }
            let keepalive = in_flight.front().map_or(last_sent, |(_, s)| Some(*s)).unwrap_or(clock.now()) + KEEPALIVE;
            tokio::select! {
                r = reader.read_buf(&mut buf) => match r {
                    Ok(n) if n > 0 => {
                        let Ok(ids) = answered_correlation_ids(&mut buf) else {
                            debug!(peer = id, "peer sent a frame no Kafka listener sends: reconnecting");
                            break;
                        };
                        for answered in ids {
                            // In order; an unknown id (never sent) proves nothing.
                            while let Some((cid, sent)) = in_flight.pop_front() {
                                if cid == answered {
                                    watch.answered(id, incarnation, sent);
                                    break;
                                }
                            }
                        }
                        due = pending_ask(&asks, last_sent);
                    }
                    _ => {
                        watch.connection_lost(id, incarnation, clock.now());
                        break;
                    }
                },
                changed = asks.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    due = pending_ask(&asks, last_sent);
                }
                () = clock.sleep_until(keepalive) => {
                    if !in_flight.is_empty() {
                        // A ping unanswered this long: the connection (or the peer) is stuck.
                        debug!(peer = id, "peer left a ping unanswered: reconnecting");
                        break;
                    }
                    due = true;
                }
                () = stop.cancelled() => return,
            }
        }
    }
}

/// Whether an ask arrived after the last ping was sent.
fn pending_ask(asks: &watch::Receiver<Option<Instant>>, last_sent: Option<Instant>) -> bool {
    match (*asks.borrow(), last_sent) {
        (Some(want), Some(sent)) => want > sent,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use kafka_protocol::protocol::Decodable;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A stand-in for a peer broker's Kafka listener: answers every request with a minimal
    /// frame carrying its correlation id, after `delay_ms`. [`FakePeer::die`] does what a
    /// SIGKILL does first: every accepted connection closes, nothing is accepted or answered any
    /// more, but the listening socket stays open a moment longer, so the kernel still completes
    /// handshakes into its backlog.
    struct FakePeer {
        addr: String,
        listener: Option<Arc<TcpListener>>,
        delay_ms: Arc<AtomicU64>,
        dead: CancellationToken,
    }

    impl FakePeer {
        async fn start() -> FakePeer {
            Self::on(TcpListener::bind("127.0.0.1:0").await.expect("bind")).await
        }

        async fn on(listener: TcpListener) -> FakePeer {
            let listener = Arc::new(listener);
            let addr = listener.local_addr().expect("addr").to_string();
            let (delay_ms, dead) = (Arc::new(AtomicU64::new(0)), CancellationToken::new());
            let (l, d, dead2) = (listener.clone(), delay_ms.clone(), dead.clone());
            tokio::spawn(async move {
                loop {
                    let conn = tokio::select! {
                        c = l.accept() => c,
                        () = dead2.cancelled() => return,
                    };
                    if let Ok((stream, _)) = conn {
                        tokio::spawn(Self::serve(stream, d.clone(), dead2.clone()));
                    }
                }
            });
            FakePeer { addr, listener: Some(listener), delay_ms, dead }
        }

        async fn serve(mut stream: TcpStream, delay_ms: Arc<AtomicU64>, dead: CancellationToken) {
            let mut buf = BytesMut::new();
            loop {
                tokio::select! {
                    r = stream.read_buf(&mut buf) => if !matches!(r, Ok(n) if n > 0) { return },
                    () = dead.cancelled() => return,
                }
                while buf.len() >= 12 {
                    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                    if buf.len() < 4 + size {
                        break;
                    }
                    // Request header: api key, api version, correlation id.
                    let correlation = [buf[8], buf[9], buf[10], buf[11]];
                    buf.advance(4 + size);
                    tokio::select! {
                        () = skiff_time::system_clock().sleep(Duration::from_millis(delay_ms.load(Ordering::SeqCst))) => {}
                        () = dead.cancelled() => return,
                    }
                    // Size 10: correlation id, error code 0, an empty api_keys array.
                    let mut answer = vec![0, 0, 0, 10];
                    answer.extend_from_slice(&correlation);
                    answer.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
                    if stream.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            }
        }

        /// The process dies: its connections close, its listener only queues handshakes.
        fn die(&self) {
            self.dead.cancel();
        }

        /// The listening socket closes too: connections are refused.
        async fn close_listener(&mut self) {
            // The accept task holds a clone until it sees `dead`.
            self.die();
            let mut listener = self.listener.take().expect("open");
            for _ in 0..200 {
                match Arc::try_unwrap(listener) {
                    Ok(l) => return drop(l),
                    Err(l) => listener = l,
                }
                skiff_time::system_clock().sleep(Duration::from_millis(5)).await;
            }
            panic!("the fake peer's listener is still shared");
        }
    }

    /// A watcher of peer `id` at `addr` (as `run` spawns one), until the token is cancelled.
    fn spawn_watcher(
        w: &PeerWatch,
        id: i32,
        inc: Uuid,
        addr: &str,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let stop = CancellationToken::new();
        let asks = w.link(id, inc);
        let task = tokio::spawn(watch_peer(
            w.clone(),
            id,
            inc,
            addr.to_string(),
            asks,
            skiff_time::system_clock(),
            stop.clone(),
        ));
        (stop, task)
    }

    /// Waits (≤ 5 s) until `cond` holds, re-checking on every change of the watch.
    async fn until(w: &PeerWatch, what: &str, cond: impl Fn() -> bool) {
        let mut changes = w.subscribe();
        let clock = skiff_time::system_clock();
        let deadline = clock.now() + Duration::from_secs(5);
        while !cond() {
            assert!(clock.now() < deadline, "never: {what}");
            let _ = tokio::time::timeout(Duration::from_millis(20), changes.changed()).await;
        }
    }

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
        w.answered(5, old, now);
        w.connection_lost(5, old, now);
        w.refused(5, old, now, 0);
        assert!(matches!(w.judge(5, old, now), Verdict::Hold(_)));
        assert_eq!(w.judge(5, new, now), Verdict::Leads, "a restarted process is not the lost one");
        assert_eq!(w.judge(6, old, now), Verdict::Leads);
        // The image fenced it (no longer live): forgotten.
        w.retain(&HashMap::from([(6, old)]), 0);
        assert_eq!(w.judge(5, old, now), Verdict::Leads);
        // Only an answer to a ping sent after the loss clears it.
        let later = now + Duration::from_millis(1);
        w.connection_lost(6, old, later);
        w.answered(6, old, now);
        assert!(matches!(w.judge(6, old, later), Verdict::Hold(_)), "a ping sent before the loss proves nothing");
        w.answered(6, old, later);
        assert_eq!(w.judge(6, old, later), Verdict::Leads);
    }

    #[test]
    fn pings_are_api_versions_requests_and_answers_are_framed_safely() {
        let frame = ping_frame(42);
        let size = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(size, frame.len() - 4);
        let mut body = bytes::Bytes::copy_from_slice(&frame[4..]);
        let header = RequestHeader::decode(&mut body, ApiKey::ApiVersions.request_header_version(0)).expect("header");
        assert_eq!((header.request_api_key, header.request_api_version, header.correlation_id), (18, 0, 42));
        assert_eq!(header.client_id.as_deref(), Some(CLIENT_ID));
        // Two answers and half of a third: two ids, the half stays.
        let mut buf = BytesMut::new();
        for id in [7i32, 8] {
            buf.extend_from_slice(&6i32.to_be_bytes());
            buf.extend_from_slice(&id.to_be_bytes());
            buf.extend_from_slice(&[0, 0]);
        }
        buf.extend_from_slice(&[0, 0, 0, 6, 0]);
        assert_eq!(answered_correlation_ids(&mut buf), Ok(vec![7, 8]));
        assert_eq!(buf.len(), 5);
        // Lengths no Kafka listener sends: refused, never a panic or a huge allocation.
        for size in [-1i32, 0, 3, i32::MAX] {
            let mut bad = BytesMut::from(&size.to_be_bytes()[..]);
            assert_eq!(answered_correlation_ids(&mut bad), Err(()), "size {size}");
        }
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
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        let (stop, task) = spawn_watcher(&w, 8, inc, &closed);
        w.probe_leaders(&[(8, inc)], clock.as_ref()).await;
        clock.sleep(RETRY * 3).await;
        assert_eq!(w.judge(8, inc, clock.now()), Verdict::Leads);
        stop.cancel();
        task.await.expect("watcher ends at stop");
    }

    /// The race behind franz-go's 5 s waits (issue #17): a SIGKILLed process's connections close
    /// before its listener does, and meanwhile the kernel still completes handshakes into the
    /// dead listener's backlog. A connection that opens and stays open proved the peer alive on
    /// the old code (a reconnection open for 20 ms, a probe open for 5 ms), so a Metadata request
    /// arriving in that window named the dead leader. Only an answer proves life now.
    #[tokio::test]
    async fn a_dying_listener_that_still_accepts_is_not_proof_of_life() {
        let clock = skiff_time::system_clock();
        let w = PeerWatch::default();
        let inc = Uuid::from_u128(3);
        let mut peer = FakePeer::start().await;
        let (stop, task) = spawn_watcher(&w, 7, inc, &peer.addr);
        until(&w, "the peer answers a first ping", || w.was_reached(7, inc)).await;
        // Alive: a Metadata request names it after one round trip.
        let t0 = clock.now();
        w.probe_leaders(&[(7, inc)], clock.as_ref()).await;
        assert_eq!(w.judge(7, inc, clock.now()), Verdict::Leads);
        assert!(clock.now() - t0 < PROBE_WAIT, "a live peer answers within a round trip: {:?}", clock.now() - t0);
        // SIGKILL: connections closed, the listener's backlog still completes handshakes.
        peer.die();
        clock.sleep(Duration::from_millis(60)).await;
        w.probe_leaders(&[(7, inc)], clock.as_ref()).await;
        assert!(
            matches!(w.judge(7, inc, clock.now()), Verdict::Hold(_)),
            "a peer whose listener accepts but never answers is not named: {:?}",
            w.judge(7, inc, clock.now())
        );
        // The listener closes: refused, so gone (held until the fence, then leaderless).
        peer.close_listener().await;
        until(&w, "judged gone", || w.inner.lost.lock().expect("lock").get(&7).is_some_and(|l| l.gone)).await;
        stop.cancel();
        task.await.expect("watcher ends at stop");
    }

    /// Never flap on a live broker: one that answers late is held only until it answers, then
    /// named (a broken connection to a live one likewise: the next test).
    #[tokio::test]
    async fn a_slow_live_peer_is_held_only_until_it_answers() {
        let clock = skiff_time::system_clock();
        let w = PeerWatch::default();
        let inc = Uuid::from_u128(5);
        let peer = FakePeer::start().await;
        let (stop, task) = spawn_watcher(&w, 9, inc, &peer.addr);
        until(&w, "the peer answers a first ping", || w.was_reached(9, inc)).await;
        peer.delay_ms.store(3 * PROBE_WAIT.as_millis() as u64, Ordering::SeqCst);
        w.probe_leaders(&[(9, inc)], clock.as_ref()).await;
        assert!(matches!(w.judge(9, inc, clock.now()), Verdict::Hold(_)), "no answer within PROBE_WAIT: held");
        until(&w, "named again once it answers", || w.judge(9, inc, clock.now()) == Verdict::Leads).await;
        let lost = w.inner.lost.lock().expect("lock").get(&9).copied();
        assert_eq!(lost, None, "cleared by the answer, not by SUSPECT_MAX running out");
        stop.cancel();
        task.await.expect("watcher ends at stop");
    }

    #[tokio::test]
    async fn a_peer_that_stops_listening_is_gone_and_one_that_listens_again_is_back() {
        let clock = skiff_time::system_clock();
        let w = PeerWatch::default();
        let inc = Uuid::from_u128(6);
        let mut peer = FakePeer::start().await;
        let addr = peer.addr.clone();
        let (stop, task) = spawn_watcher(&w, 7, inc, &addr);
        until(&w, "the peer answers a first ping", || w.was_reached(7, inc)).await;
        peer.close_listener().await;
        until(&w, "judged gone", || w.inner.lost.lock().expect("lock").get(&7).is_some_and(|l| l.gone)).await;
        assert!(matches!(w.judge(7, inc, clock.now()), Verdict::Hold(_)));
        // It listens (and answers) again on the same port: back.
        let _again = FakePeer::on(TcpListener::bind(addr.as_str()).await.expect("rebind")).await;
        until(&w, "back", || w.judge(7, inc, clock.now()) == Verdict::Leads).await;
        stop.cancel();
        task.await.expect("watcher ends at stop");
    }
}
