//! The transaction checker's invariants (tests/txn_checker.rs), on plain values so that they
//! are tested on hand-made histories without processes.
//!
//! Evidence: what the read-process-write workers (`dev.skiff.compat.TxnWorker`) say they did
//! (one JSON line per transaction: committed, aborted or unknown, with its input ranges), the
//! output topic read at the end twice (raw read_uncommitted with the transaction attributes, and
//! read_committed filtered as Kafka's consumer filters it), the group's committed input offsets
//! (OffsetFetch with `require_stable`) and the LSO / high watermark pairs sampled during the run.
//! Output record values name their input and transaction: `in:<partition>:<offset>|w<w>|t<n>`,
//! written to the output partition of the same number.
//!
//! Invariants (each violation names its invariant):
//! - `read_committed_matches_markers`: what the broker serves to read_committed (LSO, aborted
//!   list) equals what the log's own markers decide.
//! - `committed_visible_exactly_once`: every record of a committed transaction is visible to
//!   read_committed exactly once.
//! - `aborted_invisible`: no record of an aborted transaction is visible to read_committed; its
//!   acknowledged records are in the raw log, decided by an ABORT marker.
//! - `unknown_all_or_nothing`: a transaction whose outcome the worker could not learn is
//!   visible completely or not at all.
//! - `offsets_commit_with_outputs`: per input partition, the visible outputs are exactly one
//!   per input offset below the group's committed offset, in input order, and none above it.
//! - `every_transaction_ended`: after the workers closed, no transaction is left open.
//! - `lso_never_passes_open_transaction`: a sampled LSO L never lies above the first record of
//!   a transaction whose marker was not yet written (the marker is below the high watermark
//!   sampled right after L).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use anyhow::{Context, bail};

use super::txn::{LogRecord, Marker, Scan, client_view, decisions, marker_view, transaction_spans};

/// A transaction's outcome as its worker learned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    Aborted,
    /// An error on the way: the broker decided (commit or abort), the worker does not know.
    Unknown,
}

/// One transaction of one worker thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerTxn {
    pub worker: u32,
    pub txn: u64,
    pub outcome: Outcome,
    /// (input partition, first offset, last offset).
    pub inputs: Vec<(i32, i64, i64)>,
    /// Acknowledged outputs (partition, offset).
    pub outputs: Vec<(i32, i64)>,
    pub error: Option<String>,
}

impl WorkerTxn {
    pub fn input_count(&self) -> usize {
        self.inputs.iter().map(|&(_, first, last)| (last - first + 1) as usize).sum()
    }
}

/// Parses the worker log (JSON lines; lines without `txn` are events and are skipped).
pub fn parse_worker_log(text: &str) -> anyhow::Result<Vec<WorkerTxn>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("worker log line {}: {line}", i + 1))?;
        let Some(txn) = v.get("txn").and_then(|t| t.as_u64()) else { continue };
        let worker = v.get("w").and_then(|w| w.as_u64()).context("worker log line without w")? as u32;
        let outcome = match v.get("outcome").and_then(|o| o.as_str()) {
            Some("committed") => Outcome::Committed,
            Some("aborted") => Outcome::Aborted,
            Some("unknown") => Outcome::Unknown,
            other => bail!("worker log line {}: outcome {other:?}", i + 1),
        };
        let triples = |key: &str| -> anyhow::Result<Vec<Vec<i64>>> {
            v.get(key)
                .and_then(|a| a.as_array())
                .with_context(|| format!("worker log line {}: no {key}", i + 1))?
                .iter()
                .map(|e| {
                    e.as_array()
                        .map(|xs| xs.iter().filter_map(serde_json::Value::as_i64).collect())
                        .context("not an array of numbers")
                })
                .collect()
        };
        let inputs = triples("inputs")?
            .into_iter()
            .map(|t| match t[..] {
                [p, first, last] => Ok((p as i32, first, last)),
                _ => bail!("input range {t:?}"),
            })
            .collect::<anyhow::Result<_>>()?;
        let outputs = triples("outputs")?
            .into_iter()
            .map(|t| match t[..] {
                [p, o] => Ok((p as i32, o)),
                _ => bail!("output {t:?}"),
            })
            .collect::<anyhow::Result<_>>()?;
        let error = v.get("error").and_then(|e| e.as_str()).map(str::to_string);
        out.push(WorkerTxn { worker, txn, outcome, inputs, outputs, error });
    }
    Ok(out)
}

/// What an output record's value names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tag {
    pub input_partition: i32,
    pub input_offset: i64,
    pub worker: u32,
    pub txn: u64,
}

/// Parses `in:<partition>:<offset>|w<w>|t<n>`.
pub fn parse_tag(value: &[u8]) -> Option<Tag> {
    let s = std::str::from_utf8(value).ok()?;
    let mut parts = s.split('|');
    let mut input = parts.next()?.strip_prefix("in:")?.split(':');
    let input_partition = input.next()?.parse().ok()?;
    let input_offset = input.next()?.parse().ok()?;
    let worker = parts.next()?.strip_prefix('w')?.parse().ok()?;
    let txn = parts.next()?.strip_prefix('t')?.parse().ok()?;
    Some(Tag { input_partition, input_offset, worker, txn })
}

/// One LSO observation: ListOffsets read_committed, then read_uncommitted, on the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LsoSample {
    pub partition: i32,
    pub lso: i64,
    pub high_watermark_after: i64,
    /// Milliseconds since the workload started.
    pub at_ms: u64,
}

/// Everything the checker judges.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub output_partitions: i32,
    /// Output partition → read_uncommitted scan (every record, markers included).
    pub raw: BTreeMap<i32, Scan>,
    /// Output partition → read_committed scan (before the consumer's filtering).
    pub committed: BTreeMap<i32, Scan>,
    /// Input partition → the group's committed offset (-1: none).
    pub group_offsets: BTreeMap<i32, i64>,
    pub txns: Vec<WorkerTxn>,
    pub lso_samples: Vec<LsoSample>,
}

/// Invariant name → violations.
#[derive(Debug, Default)]
pub struct Violations(pub BTreeMap<&'static str, Vec<String>>);

impl Violations {
    fn add(&mut self, invariant: &'static str, what: String) {
        self.0.entry(invariant).or_default().push(what);
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.0.keys().copied().collect()
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, list) in &self.0 {
            writeln!(f, "invariant {name} violated {} times:", list.len())?;
            for v in list.iter().take(10) {
                writeln!(f, "  {v}")?;
            }
            if list.len() > 10 {
                writeln!(f, "  ... and {} more", list.len() - 10)?;
            }
        }
        Ok(())
    }
}

/// Counts of what was checked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub committed_txns: usize,
    pub aborted_txns: usize,
    pub unknown_txns: usize,
    pub visible_records: usize,
    pub raw_records: usize,
    pub markers: usize,
    pub inputs_committed: i64,
    pub lso_samples: usize,
    /// Samples that saw a transaction open (LSO below the high watermark read after it).
    pub lso_samples_below_high_watermark: usize,
}

pub fn check(e: &Evidence) -> Result<Summary, Violations> {
    let mut v = Violations::default();
    let mut summary = Summary {
        lso_samples: e.lso_samples.len(),
        lso_samples_below_high_watermark: e.lso_samples.iter().filter(|s| s.lso < s.high_watermark_after).count(),
        ..Summary::default()
    };
    // Visible (read_committed, as a consumer shows it) records per output partition, tagged.
    let mut visible: BTreeMap<i32, Vec<(i64, Tag)>> = BTreeMap::new();
    for p in 0..e.output_partitions {
        let (Some(raw), Some(rc)) = (e.raw.get(&p), e.committed.get(&p)) else {
            v.add("read_committed_matches_markers", format!("output partition {p} was not scanned"));
            continue;
        };
        summary.raw_records += raw.records.iter().filter(|r| r.marker.is_none()).count();
        summary.markers += raw.records.iter().filter(|r| r.marker.is_some()).count();
        let shown = client_view(rc);
        let decided: Vec<LogRecord> = marker_view(&raw.records).into_iter().filter(|r| r.offset < rc.end).collect();
        let shown_offsets: Vec<i64> = shown.iter().map(|r| r.offset).collect();
        let decided_offsets: Vec<i64> = decided.iter().map(|r| r.offset).collect();
        if shown_offsets != decided_offsets {
            let (shown_set, decided_set): (BTreeSet<i64>, BTreeSet<i64>) =
                (shown_offsets.iter().copied().collect(), decided_offsets.iter().copied().collect());
            let extra: Vec<_> = shown_set.difference(&decided_set).take(5).collect();
            let missing: Vec<_> = decided_set.difference(&shown_set).take(5).collect();
            v.add(
                "read_committed_matches_markers",
                format!(
                    "output {p}: read_committed shows {} records, the markers commit {} below the LSO {}; shown but not committed: {extra:?}, committed but not shown: {missing:?}",
                    shown_offsets.len(),
                    decided_offsets.len(),
                    rc.end
                ),
            );
        }
        for r in &shown {
            match r.value.as_deref().and_then(parse_tag) {
                Some(tag) => visible.entry(p).or_default().push((r.offset, tag)),
                None => v.add(
                    "committed_visible_exactly_once",
                    format!("output {p} offset {}: not a checker record", r.offset),
                ),
            }
        }
        // No transaction may be left open once the workers closed.
        for (offset, decision) in decisions(&raw.records) {
            if decision.is_none() {
                v.add("every_transaction_ended", format!("output {p} offset {offset}: no marker follows it"));
            }
        }
        if rc.end != raw.end {
            v.add(
                "every_transaction_ended",
                format!("output {p}: LSO {} below the high watermark {} at the end", rc.end, raw.end),
            );
        }
    }

    // Per transaction (worker, txn): its visible records.
    let mut by_txn: BTreeMap<(u32, u64), Vec<Tag>> = BTreeMap::new();
    for tags in visible.values() {
        for (_, tag) in tags {
            by_txn.entry((tag.worker, tag.txn)).or_default().push(*tag);
        }
    }
    let logged: BTreeMap<(u32, u64), &WorkerTxn> = e.txns.iter().map(|t| ((t.worker, t.txn), t)).collect();
    // How the raw log decided each transactional record, per output partition (computed once:
    // a long run has thousands of aborted transactions).
    let decided_by_partition: BTreeMap<i32, BTreeMap<i64, Option<Marker>>> =
        e.raw.iter().map(|(&p, raw)| (p, decisions(&raw.records))).collect();
    for t in &e.txns {
        let seen = by_txn.get(&(t.worker, t.txn)).map_or(0, Vec::len);
        let want = t.input_count();
        match t.outcome {
            Outcome::Committed => {
                summary.committed_txns += 1;
                let distinct: BTreeSet<Tag> = by_txn.get(&(t.worker, t.txn)).into_iter().flatten().copied().collect();
                if seen != want || distinct.len() != want {
                    v.add(
                        "committed_visible_exactly_once",
                        format!(
                            "worker {} txn {} committed {want} records; read_committed shows {seen} ({} distinct)",
                            t.worker,
                            t.txn,
                            distinct.len()
                        ),
                    );
                }
            }
            Outcome::Aborted => {
                summary.aborted_txns += 1;
                if seen > 0 {
                    v.add(
                        "aborted_invisible",
                        format!(
                            "worker {} txn {} aborted; read_committed shows {seen} of its records",
                            t.worker, t.txn
                        ),
                    );
                }
                for &(p, offset) in &t.outputs {
                    let Some(decided) = decided_by_partition.get(&p) else { continue };
                    match decided.get(&offset) {
                        Some(Some(Marker::Abort)) => {}
                        other => v.add(
                            "aborted_invisible",
                            format!("worker {} txn {} aborted; its record at output {p} offset {offset} is decided {other:?} in the log", t.worker, t.txn),
                        ),
                    }
                }
            }
            Outcome::Unknown => {
                summary.unknown_txns += 1;
                if seen != 0 && seen != want {
                    v.add(
                        "unknown_all_or_nothing",
                        format!("worker {} txn {}: {seen} of {want} records visible", t.worker, t.txn),
                    );
                }
            }
        }
    }
    for ((w, n), tags) in &by_txn {
        if !logged.contains_key(&(*w, *n)) {
            // A transaction the worker never logged (killed mid-way) must not be visible: it
            // never returned from commitTransaction, and the log is written before anything else.
            v.add(
                "committed_visible_exactly_once",
                format!("worker {w} txn {n} was never logged, yet {} records are visible", tags.len()),
            );
        }
    }

    // Atomicity of consumed offsets and outputs, per input partition (output partition = input).
    for (&p, &committed) in &e.group_offsets {
        let upto = committed.max(0);
        summary.inputs_committed += upto;
        let inputs: Vec<i64> = visible
            .get(&p)
            .into_iter()
            .flatten()
            .filter(|(_, t)| t.input_partition == p)
            .map(|(_, t)| t.input_offset)
            .collect();
        let expected: Vec<i64> = (0..upto).collect();
        if inputs != expected {
            let first_bad =
                inputs.iter().zip(&expected).position(|(a, b)| a != b).unwrap_or(inputs.len().min(expected.len()));
            v.add(
                "offsets_commit_with_outputs",
                format!(
                    "input {p}: committed offset {committed}, {} visible outputs; first difference at #{first_bad}: output for input {:?}, want {:?}",
                    inputs.len(),
                    inputs.get(first_bad),
                    expected.get(first_bad)
                ),
            );
        }
        let stray = visible.get(&p).into_iter().flatten().filter(|(_, t)| t.input_partition != p).count();
        if stray > 0 {
            v.add("offsets_commit_with_outputs", format!("output {p}: {stray} records for another input partition"));
        }
    }
    summary.visible_records = visible.values().map(Vec::len).sum();

    // The LSO never passes an open transaction.
    for p in 0..e.output_partitions {
        let Some(raw) = e.raw.get(&p) else { continue };
        let spans = transaction_spans(&raw.records);
        for s in e.lso_samples.iter().filter(|s| s.partition == p) {
            for &(pid, first, marker) in &spans {
                if first < s.lso && marker.is_none_or(|m| m >= s.high_watermark_after) {
                    v.add(
                        "lso_never_passes_open_transaction",
                        format!(
                            "output {p} at +{} ms: LSO {} passed producer {pid}'s transaction from offset {first} whose marker ({marker:?}) was not below the high watermark {} read right after",
                            s.at_ms, s.lso, s.high_watermark_after
                        ),
                    );
                }
            }
        }
    }

    if v.0.is_empty() { Ok(summary) } else { Err(v) }
}
