//! Incremental fetch sessions (KIP-227), as Kafka's `FetchSession.scala` keeps them.
//!
//! A consumer of many partitions sends its whole partition list once (a full fetch, session
//! epoch 0); the broker caches it under a fresh session id and from then on the client sends
//! only what changed (a new fetch offset, a partition added or forgotten), with the epoch
//! counting up, and the broker answers only the partitions that have something to say: records,
//! a changed high watermark, last stable offset or log start offset, a preferred read replica,
//! or an error. An idle consumer of 1,000 partitions then exchanges a few dozen bytes per fetch
//! instead of ~30 KB each way.
//!
//! ```text
//!  request (session_id, epoch)     context
//!  (any, -1 FINAL_EPOCH)           close `session_id` if given; Sessionless (answer id 0)
//!  (any, 0 INITIAL_EPOCH)          close `session_id` if given; Full: the answer creates a
//!                                  session (id 0 when the cache has no slot for it)
//!  (id, n > 0)                     id unknown: FETCH_SESSION_ID_NOT_FOUND (70)
//!                                  epoch != session's: INVALID_FETCH_SESSION_EPOCH (71)
//!                                  else apply changes and forgotten partitions, epoch n+1;
//!                                  Incremental (or Sessionless if nothing is left)
//! ```
//!
//! Invariants:
//! * Sessions live in this broker's memory only. A restart or a partition moving elsewhere
//!   makes the client's next incremental fetch get FETCH_SESSION_ID_NOT_FOUND (or an error for
//!   the partition) and the client starts a full session, which is what clients expect.
//! * Memory is bounded by `max_incremental_fetch_session_cache_slots` sessions (Kafka's
//!   `max.incremental.fetch.session.cache.slots`, default 1,000); each holds the partitions its
//!   client asked for, already bounded by the request size limit.
//! * Eviction is Kafka's: a session unused for [`EVICTION_MS`] goes first; otherwise a new
//!   session may replace the smallest session created more than [`EVICTION_MS`] ago if it is at
//!   least as large, and a follower's (privileged) session may also replace any consumer's.
//! * The session's epoch moves when the request is accepted; its cached partitions when the
//!   answer is built, and that answer checks the epoch is still the one it was opened with, so
//!   two fetches racing on one session cannot both update it (the loser gets
//!   INVALID_FETCH_SESSION_EPOCH).
//! * Nothing here does I/O or reads a clock: time comes in as `now_ms`, ids from [`Ids`].
//!
//! Topic ids (Fetch v13+, FETCH_SESSION_TOPIC_ID_ERROR 106) do not apply: Skiff serves Fetch
//! up to v12, where partitions are named by topic name.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use skiff_time::Ids;

/// Kafka's `FetchMetadata.INVALID_SESSION_ID`: no session.
pub const INVALID_SESSION_ID: i32 = 0;
/// Kafka's `FetchMetadata.INITIAL_EPOCH`: a full fetch that asks for a new session.
pub const INITIAL_EPOCH: i32 = 0;
/// Kafka's `FetchMetadata.FINAL_EPOCH`: a full fetch that closes its session and wants none.
pub const FINAL_EPOCH: i32 = -1;
/// Kafka's `FetchSessionCache` eviction time (hard-coded 120 s there): a session unused this
/// long may be evicted by any new one, and one created this long ago by a larger one.
pub const EVICTION_MS: i64 = 120_000;
/// Kafka's default `max.incremental.fetch.session.cache.slots`.
pub const DEFAULT_CACHE_SLOTS: usize = 1_000;

/// Why an incremental fetch has no session to use (mapped in `handler/errors.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The session id is not (or no longer) in this broker's cache.
    #[error("fetch session {0} not found")]
    IdNotFound(i32),
    /// The request's epoch is not the session's next one.
    #[error("fetch session {id}: epoch {requested}, expected {expected}")]
    InvalidEpoch { id: i32, requested: i32, expected: i32 },
}

/// Kafka's `FetchMetadata.nextEpoch`.
pub fn next_epoch(epoch: i32) -> i32 {
    if epoch < 0 {
        FINAL_EPOCH
    } else if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

type Key = (TopicName, i32);

/// One partition of a session: the client's last request parameters and what the broker last
/// told the client (Kafka's `CachedPartition`).
#[derive(Debug, Clone)]
struct CachedPartition {
    topic: TopicName,
    topic_id: uuid::Uuid,
    request: FetchPartition,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
}

impl CachedPartition {
    fn new(topic: &FetchTopic, request: &FetchPartition) -> Self {
        Self {
            topic: topic.topic.clone(),
            topic_id: topic.topic_id,
            request: request.clone(),
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
        }
    }

    fn key(&self) -> Key {
        (self.topic.clone(), self.request.partition)
    }

    /// Whether the answer for this partition must be sent (Kafka's `maybeUpdateResponseData`),
    /// remembering what was sent when `update`. Kafka compares the high watermark and log start;
    /// the last stable offset is compared too, so a read_committed consumer hears of a commit
    /// that moved only the LSO.
    fn must_respond(&mut self, data: &PartitionData, update: bool) -> bool {
        let mut must = data.records.as_ref().is_some_and(|r| !r.is_empty());
        if self.high_watermark != data.high_watermark {
            must = true;
            if update {
                self.high_watermark = data.high_watermark;
            }
        }
        if self.last_stable_offset != data.last_stable_offset {
            must = true;
            if update {
                self.last_stable_offset = data.last_stable_offset;
            }
        }
        if self.log_start_offset != data.log_start_offset {
            must = true;
            if update {
                self.log_start_offset = data.log_start_offset;
            }
        }
        if data.preferred_read_replica.0 >= 0 {
            must = true;
        }
        if data.error_code != 0 {
            // Sent every time while it lasts; -1 makes the partition be sent again once it
            // clears.
            if update {
                self.high_watermark = -1;
            }
            must = true;
        }
        must
    }
}

/// One client's session: its partitions in the order they are read (those just answered move
/// to the end, so a response cut by `max_bytes` serves the others first next time).
#[derive(Debug)]
struct Session {
    /// Created by a follower (replica id >= 0): may evict consumers' sessions.
    privileged: bool,
    partitions: Vec<CachedPartition>,
    index: HashMap<Key, usize>,
    creation_ms: i64,
    last_used_ms: i64,
    epoch: i32,
    /// The size the cache's eviction index holds this session under.
    cached_size: usize,
}

impl Session {
    fn reindex(&mut self) {
        self.index = self.partitions.iter().enumerate().map(|(i, p)| (p.key(), i)).collect();
    }

    /// Applies an incremental request: new partitions are added, known ones take the new
    /// request parameters, then forgotten ones are removed (Kafka's `FetchSession.update`).
    fn update(&mut self, req: &FetchRequest) {
        for t in &req.topics {
            for p in &t.partitions {
                match self.index.get(&(t.topic.clone(), p.partition)) {
                    Some(&i) => {
                        let cached = &mut self.partitions[i];
                        cached.request = p.clone();
                        cached.topic_id = t.topic_id;
                    }
                    None => {
                        let cached = CachedPartition::new(t, p);
                        self.index.insert(cached.key(), self.partitions.len());
                        self.partitions.push(cached);
                    }
                }
            }
        }
        let forgotten: HashSet<Key> =
            req.forgotten_topics_data.iter().flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p))).collect();
        if !forgotten.is_empty() {
            let before = self.partitions.len();
            self.partitions.retain(|p| !forgotten.contains(&p.key()));
            if self.partitions.len() != before {
                self.reindex();
            }
        }
    }

    /// The session's partitions as a request's topic list, consecutive partitions of one topic
    /// grouped (Kafka's `FetchResponse.of` groups the same way).
    fn topics(&self) -> Vec<FetchTopic> {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for p in &self.partitions {
            match topics.last_mut() {
                Some(t) if t.topic == p.topic => t.partitions.push(p.request.clone()),
                _ => topics.push(
                    FetchTopic::default()
                        .with_topic(p.topic.clone())
                        .with_topic_id(p.topic_id)
                        .with_partitions(vec![p.request.clone()]),
                ),
            }
        }
        topics
    }
}

/// Kafka's `EvictableKey`: the least valuable session sorts first (a consumer's before a
/// follower's, then the smaller, then by id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct EvictableKey {
    privileged: bool,
    size: usize,
    id: i32,
}

/// The bounded set of sessions (Kafka's `FetchSessionCache`).
#[derive(Debug)]
pub struct SessionCache {
    max_slots: usize,
    sessions: HashMap<i32, Session>,
    /// (last used, id): the least recently used first.
    last_used: BTreeSet<(i64, i32)>,
    /// Sessions older than [`EVICTION_MS`] (as of their last use): any new session may evict.
    evictable_by_all: BTreeSet<EvictableKey>,
    /// Those plus every consumer's session: a new follower session may evict.
    evictable_by_privileged: BTreeSet<EvictableKey>,
    partitions: usize,
    evictions: u64,
    /// Incremental fetches accepted since start.
    incremental: u64,
    ids: Arc<dyn Ids>,
}

/// What the handler is to do with a fetch request (Kafka's `FetchContext`).
#[derive(Debug)]
pub enum Context {
    /// A session error: answer it at once, with session id 0 and no partitions.
    Error(SessionError),
    /// Answer the request's partitions; no session (id 0).
    Sessionless,
    /// Answer the request's partitions; the answer creates a session (if a slot is free).
    Full { privileged: bool },
    /// Answer the session's partitions: `request` is the original with the session's partition
    /// list in place of the changes, and only partitions with news are answered.
    Incremental { id: i32, epoch: i32, request: Box<FetchRequest> },
}

impl SessionCache {
    pub fn new(max_slots: usize, ids: Arc<dyn Ids>) -> Self {
        Self {
            max_slots,
            sessions: HashMap::new(),
            last_used: BTreeSet::new(),
            evictable_by_all: BTreeSet::new(),
            evictable_by_privileged: BTreeSet::new(),
            partitions: 0,
            evictions: 0,
            incremental: 0,
            ids,
        }
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Partitions held over all sessions (as of each session's last use).
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// Sessions evicted to make room for new ones since start.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Incremental fetches accepted since start.
    pub fn incremental_fetches(&self) -> u64 {
        self.incremental
    }

    /// The context for `req` (Kafka's `FetchManager.newContext`); `follower` for a replica's
    /// fetch. Versions before 7 have no session fields: they decode as (0, -1), sessionless.
    pub fn open(&mut self, req: &FetchRequest, follower: bool, now_ms: i64) -> Context {
        let (id, epoch) = (req.session_id, req.session_epoch);
        if epoch == INITIAL_EPOCH || epoch == FINAL_EPOCH {
            // Any session a full fetch names is closed.
            if id != INVALID_SESSION_ID {
                self.remove(id);
            }
            return if epoch == FINAL_EPOCH { Context::Sessionless } else { Context::Full { privileged: follower } };
        }
        let Some(session) = self.sessions.get_mut(&id) else {
            return Context::Error(SessionError::IdNotFound(id));
        };
        if session.epoch != epoch {
            return Context::Error(SessionError::InvalidEpoch { id, requested: epoch, expected: session.epoch });
        }
        session.update(req);
        if session.partitions.is_empty() {
            self.remove(id);
            return Context::Sessionless;
        }
        session.epoch = next_epoch(session.epoch);
        let topics = session.topics();
        self.touch(id, now_ms);
        self.incremental += 1;
        let mut request = req.clone();
        request.topics = topics;
        request.forgotten_topics_data = Vec::new();
        Context::Incremental { id, epoch: next_epoch(epoch), request: Box::new(request) }
    }

    /// Completes a full fetch: caches its partitions with what `response` told the client
    /// (Kafka's `FullFetchContext.updateAndGenerateResponseData`) and sets the response's
    /// session id (0 when no slot could be had). `req.topics` and `response.responses` are
    /// parallel, as the fetch handler builds them.
    pub fn complete_full(&mut self, req: &FetchRequest, response: &mut FetchResponse, privileged: bool, now_ms: i64) {
        let mut partitions = Vec::new();
        for (t, answer) in req.topics.iter().zip(&response.responses) {
            for (p, data) in t.partitions.iter().zip(&answer.partitions) {
                let mut cached = CachedPartition::new(t, p);
                cached.must_respond(data, true);
                partitions.push(cached);
            }
        }
        response.session_id = self.maybe_create(now_ms, privileged, partitions);
    }

    /// Completes an incremental fetch (Kafka's `IncrementalFetchContext`): keeps only the
    /// partitions with news, remembers what they told the client and moves them to the end of
    /// the session's order. A session that moved on meanwhile (another fetch raced this one)
    /// or went away makes the answer INVALID_FETCH_SESSION_EPOCH.
    pub fn complete_incremental(
        &mut self,
        id: i32,
        epoch: i32,
        response: &mut FetchResponse,
    ) -> Result<(), SessionError> {
        let Some(session) = self.sessions.get_mut(&id) else {
            response.responses.clear();
            return Err(SessionError::InvalidEpoch { id, requested: epoch, expected: -1 });
        };
        if session.epoch != epoch {
            response.responses.clear();
            return Err(SessionError::InvalidEpoch { id, requested: epoch, expected: session.epoch });
        }
        let mut answered = vec![false; session.partitions.len()];
        for t in &mut response.responses {
            t.partitions.retain(|data| {
                let Some(&i) = session.index.get(&(t.topic.clone(), data.partition_index)) else {
                    return false;
                };
                let must = session.partitions[i].must_respond(data, true);
                answered[i] = must;
                must
            });
        }
        response.responses.retain(|t| !t.partitions.is_empty());
        if answered.iter().any(|a| *a) {
            // Stable: the unanswered keep their order, the answered follow in theirs.
            let mut rest = Vec::with_capacity(session.partitions.len());
            let mut moved = Vec::new();
            for (p, a) in std::mem::take(&mut session.partitions).into_iter().zip(answered) {
                if a { moved.push(p) } else { rest.push(p) }
            }
            rest.extend(moved);
            session.partitions = rest;
            session.reindex();
        }
        response.session_id = id;
        Ok(())
    }

    /// An answer for session `id` is being throttled (KIP-219: sent without partitions). If a
    /// full fetch just created the session (it is still at its first epoch), it is removed and
    /// true returned: Kafka creates no session for a throttled full fetch, and the client starts
    /// over. An incremental fetch's session stays (its epoch has moved on already).
    pub fn throttled(&mut self, id: i32) -> bool {
        if self.sessions.get(&id).is_some_and(|s| s.epoch == next_epoch(INITIAL_EPOCH)) {
            self.remove(id);
            return true;
        }
        false
    }

    /// Kafka's `maybeCreateSession`: a slot if one is free or can be had by eviction.
    fn maybe_create(&mut self, now_ms: i64, privileged: bool, partitions: Vec<CachedPartition>) -> i32 {
        let size = partitions.len();
        if self.max_slots == 0 {
            return INVALID_SESSION_ID;
        }
        if self.sessions.len() >= self.max_slots && !self.try_evict(privileged, size, now_ms) {
            return INVALID_SESSION_ID;
        }
        let id = self.new_id();
        let mut session = Session {
            privileged,
            partitions,
            index: HashMap::new(),
            creation_ms: now_ms,
            last_used_ms: now_ms,
            epoch: next_epoch(INITIAL_EPOCH),
            cached_size: 0,
        };
        session.reindex();
        self.sessions.insert(id, session);
        self.last_used.insert((now_ms, id));
        self.index_for_eviction(id, now_ms);
        id
    }

    /// Kafka's `tryEvict`: the least recently used session if it is stale, else the least
    /// valuable evictable one if the new session (`privileged`, `size`) is worth at least as
    /// much.
    fn try_evict(&mut self, privileged: bool, size: usize, now_ms: i64) -> bool {
        let Some(&(last_used, id)) = self.last_used.first() else { return false };
        if now_ms - last_used > EVICTION_MS {
            self.remove(id);
            self.evictions += 1;
            return true;
        }
        let candidates = if privileged { &self.evictable_by_privileged } else { &self.evictable_by_all };
        let Some(&victim) = candidates.first() else { return false };
        // The new session's key, with an id below every real one (ids are > 0).
        if (EvictableKey { privileged, size, id: 0 }) < victim {
            return false;
        }
        self.remove(victim.id);
        self.evictions += 1;
        true
    }

    /// Kafka's `touch`: marks `id` used now and re-files it for eviction at its current size.
    fn touch(&mut self, id: i32, now_ms: i64) {
        let Some(s) = self.sessions.get_mut(&id) else { return };
        self.last_used.remove(&(s.last_used_ms, id));
        s.last_used_ms = now_ms;
        self.last_used.insert((now_ms, id));
        let old = EvictableKey { privileged: s.privileged, size: s.cached_size, id };
        self.evictable_by_all.remove(&old);
        self.evictable_by_privileged.remove(&old);
        self.partitions -= s.cached_size;
        self.index_for_eviction(id, now_ms);
    }

    fn index_for_eviction(&mut self, id: i32, now_ms: i64) {
        let Some(s) = self.sessions.get_mut(&id) else { return };
        s.cached_size = s.partitions.len();
        self.partitions += s.cached_size;
        let key = EvictableKey { privileged: s.privileged, size: s.cached_size, id };
        let old_enough = now_ms - s.creation_ms > EVICTION_MS;
        if !s.privileged || old_enough {
            self.evictable_by_privileged.insert(key);
        }
        if old_enough {
            self.evictable_by_all.insert(key);
        }
    }

    fn remove(&mut self, id: i32) {
        let Some(s) = self.sessions.remove(&id) else { return };
        self.last_used.remove(&(s.last_used_ms, id));
        let key = EvictableKey { privileged: s.privileged, size: s.cached_size, id };
        self.evictable_by_all.remove(&key);
        self.evictable_by_privileged.remove(&key);
        self.partitions -= s.cached_size;
    }

    /// A fresh, positive, unused session id (Kafka draws random ints the same way).
    fn new_id(&self) -> i32 {
        loop {
            let id = (self.ids.uuid().as_u128() as u32 & 0x7fff_ffff) as i32;
            if id != INVALID_SESSION_ID && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

/// The broker's session cache, shared by its connections.
#[derive(Debug)]
pub struct FetchSessions {
    cache: Mutex<SessionCache>,
}

impl FetchSessions {
    pub fn new(max_slots: usize, ids: Arc<dyn Ids>) -> Self {
        Self { cache: Mutex::new(SessionCache::new(max_slots, ids)) }
    }

    /// Runs `f` on the cache. Never held across an await: every operation is synchronous.
    pub fn with<T>(&self, f: impl FnOnce(&mut SessionCache) -> T) -> T {
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut cache)
    }

    /// Prometheus text: Kafka's `NumIncrementalFetchSessions`,
    /// `NumIncrementalFetchPartitionsCached` and `IncrementalFetchSessionEvictionsPerSec`, and
    /// how many fetches were incremental.
    pub fn render_metrics(&self) -> String {
        let (sessions, partitions, evictions, incremental) =
            self.with(|c| (c.len(), c.partitions(), c.evictions(), c.incremental_fetches()));
        let mut out = String::new();
        let _ = write!(
            out,
            "# HELP skiff_fetch_sessions Incremental fetch sessions cached on this broker (KIP-227).\n\
             # TYPE skiff_fetch_sessions gauge\nskiff_fetch_sessions {sessions}\n\
             # HELP skiff_fetch_session_partitions Partitions held in this broker's fetch sessions.\n\
             # TYPE skiff_fetch_session_partitions gauge\nskiff_fetch_session_partitions {partitions}\n\
             # HELP skiff_fetch_session_evictions_total Fetch sessions evicted to make room for new ones.\n\
             # TYPE skiff_fetch_session_evictions_total counter\nskiff_fetch_session_evictions_total {evictions}\n\
             # HELP skiff_fetch_session_incremental_total Incremental fetches served from a session.\n\
             # TYPE skiff_fetch_session_incremental_total counter\nskiff_fetch_session_incremental_total {incremental}\n"
        );
        out
    }
}

/// A helper for the fetch handler's answer to a session error.
pub fn error_response(code: i16) -> FetchResponse {
    FetchResponse::default().with_error_code(code).with_session_id(INVALID_SESSION_ID)
}

#[cfg(test)]
mod tests;
