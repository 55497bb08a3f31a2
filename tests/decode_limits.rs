//! Tiny request frames whose array length prefixes claim billions of elements.
//!
//! kafka-protocol 0.18 sizes arrays with `Vec::with_capacity(n)` where `n` comes off the wire
//! (`protocol/types.rs`, `Array::decode` and `CompactArray::decode`), before decoding a single
//! element. An allocation the system refuses is not a panic but `handle_alloc_error` → abort,
//! which `catch_unwind` in `decode_request` cannot stop. Each case therefore runs in a child
//! process (this test binary re-executed with `SKIFF_DECODE_LIMITS_CASE` set), so an abort is
//! observed as the child's exit status instead of killing the test harness. The child reports
//! the decode result and its peak RSS (`VmHWM`).
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

use std::process::Command;

use bytes::{BufMut, Bytes, BytesMut};
use skiff::protocol::{DecodeError, decode_request};

const CASE_ENV: &str = "SKIFF_DECODE_LIMITS_CASE";

/// Unsigned varint as in the Kafka flexible versions.
fn uvarint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Request header v1 (non-flexible): key, version, correlation id, null client id.
fn header_v1(key: i16, version: i16) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i16(key);
    b.put_i16(version);
    b.put_i32(7);
    b.put_i16(-1);
    b
}

/// Request header v2 (flexible): v1 plus an empty tagged-field section.
fn header_v2(key: i16, version: i16) -> BytesMut {
    let mut b = header_v1(key, version);
    uvarint(&mut b, 0);
    b
}

/// The hostile frames, by name. Each is a few bytes long.
fn case(name: &str) -> Bytes {
    let mut b;
    match name {
        // Metadata v12, topics: compact array of u32::MAX - 1 elements.
        "metadata_v12_topics" => {
            b = header_v2(3, 12);
            uvarint(&mut b, u32::MAX);
        }
        // Metadata v4, topics: array of i32::MAX elements.
        "metadata_v4_topics" => {
            b = header_v1(3, 4);
            b.put_i32(i32::MAX);
        }
        // Produce v9: null transactional id, acks, timeout, topic_data of u32::MAX - 1.
        "produce_v9_topic_data" => {
            b = header_v2(0, 9);
            uvarint(&mut b, 0);
            b.put_i16(-1);
            b.put_i32(30_000);
            uvarint(&mut b, u32::MAX);
        }
        // Produce v9, one topic "t" whose partition_data claims u32::MAX - 1 elements.
        "produce_v9_partition_data" => {
            b = header_v2(0, 9);
            uvarint(&mut b, 0);
            b.put_i16(-1);
            b.put_i32(30_000);
            uvarint(&mut b, 2);
            uvarint(&mut b, 2);
            b.put_u8(b't');
            uvarint(&mut b, u32::MAX);
        }
        // Produce v3 (non-flexible): topic_data of i32::MAX.
        "produce_v3_topic_data" => {
            b = header_v1(0, 3);
            b.put_i16(-1);
            b.put_i16(-1);
            b.put_i32(30_000);
            b.put_i32(i32::MAX);
        }
        // Fetch v12: replica id, max wait, min bytes, max bytes, isolation, session id/epoch,
        // then topics of u32::MAX - 1.
        "fetch_v12_topics" => {
            b = header_v2(1, 12);
            b.put_i32(-1);
            b.put_i32(500);
            b.put_i32(1);
            b.put_i32(1 << 20);
            b.put_i8(0);
            b.put_i32(0);
            b.put_i32(-1);
            uvarint(&mut b, u32::MAX);
        }
        // A moderate claim (2^24 topics): the reservation fits in memory, so it must at least
        // not be touched (RSS stays small).
        "metadata_v12_topics_moderate" => {
            b = header_v2(3, 12);
            uvarint(&mut b, (1 << 24) + 1);
        }
        other => panic!("unknown case {other}"),
    }
    b.freeze()
}

const CASES: &[&str] = &[
    "metadata_v12_topics",
    "metadata_v4_topics",
    "produce_v9_topic_data",
    "produce_v9_partition_data",
    "produce_v3_topic_data",
    "fetch_v12_topics",
    "metadata_v12_topics_moderate",
];

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The child side: decode one hostile frame and print the outcome.
fn run_child(name: &str) {
    let frame = case(name);
    let len = frame.len();
    let result = decode_request(frame);
    let outcome = match &result {
        Ok(r) => format!("Ok({:?})", r.api_key),
        Err(DecodeError::Malformed { reason, .. }) => format!("Malformed({reason})"),
        Err(e) => format!("Err({e})"),
    };
    println!("DECODE-LIMITS {name} frame={len}B outcome={outcome} peak_rss_kib={}", peak_rss_kib());
    assert!(matches!(result, Err(DecodeError::Malformed { .. })), "{name}: {outcome}");
}

#[test]
fn huge_array_prefixes_are_refused_without_allocating() {
    if let Ok(name) = std::env::var(CASE_ENV) {
        run_child(&name);
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let mut failures = Vec::new();
    for name in CASES {
        let out = Command::new(&exe)
            .args(["--exact", "huge_array_prefixes_are_refused_without_allocating", "--nocapture"])
            .env(CASE_ENV, name)
            .output()
            .expect("spawn child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stdout.lines().find(|l| l.starts_with("DECODE-LIMITS")).unwrap_or("(no report)");
        println!("{name}: status={:?} {line}", out.status);
        if !out.status.success() {
            let tail: String = stderr.lines().filter(|l| l.contains("memory allocation")).collect();
            failures.push(format!("{name}: {:?} {line} {tail}", out.status));
            continue;
        }
        let rss: u64 = line.rsplit("peak_rss_kib=").next().and_then(|v| v.trim().parse().ok()).unwrap_or(u64::MAX);
        if rss > 64 * 1024 {
            failures.push(format!("{name}: peak RSS {rss} KiB"));
        }
    }
    assert!(failures.is_empty(), "hostile frames broke the decoder:\n{}", failures.join("\n"));
}
