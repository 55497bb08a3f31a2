//! Transactions with real clients (issue #13): the `txn` and `txn-rpw` scenarios of
//! `tests/compat/README.md` ("Transactions") run by the Java client, librdkafka
//! (python-confluent) and franz-go against `skiff dev`.
//!
//! - `txn_<client>`: two transactional producers, 30 overlapping transactions over 3 partitions,
//!   every third aborted; a transaction left open must hold the LSO (ListOffsets
//!   read_committed) at its first record; read_committed sees exactly the committed records,
//!   once each, in offset order; read_uncommitted sees the aborted ones too.
//! - `txn_rpw_<client>`: read-process-write with the consumed offsets committed in the
//!   transaction (`sendOffsetsToTransaction`, `send_offsets_to_transaction`,
//!   `GroupTransactSession`), every fourth transaction aborted and re-processed: one output per
//!   input, in order, and the group's offsets at the input's end.
//!
//! Kafka Streams with `exactly_once_v2` through a broker restart is
//! `streams_word_count_exactly_once_through_broker_restart` in tests/ecosystem.rs; the
//! multi-process checker under faults is tests/txn_checker.rs. Every scenario passes against
//! Apache Kafka 4.4 (`BOOTSTRAP=127.0.0.1:19092 MODE=txn tests/compat/<client>/run.sh`).
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use support::SkiffProcess;
use support::compat::run_client_with;
use support::slot::Slot;

/// Transactions in the `txn` scenario.
const TXNS: &str = "30";
/// Input records of the `txn-rpw` scenario.
const RPW_RECORDS: &str = "600";

fn txn(client: &str) {
    let _slot = Slot::acquire();
    let broker = SkiffProcess::start();
    run_client_with(client, &broker, &format!("txn-{client}"), "txn", TXNS);
}

fn txn_rpw(client: &str) {
    let _slot = Slot::acquire();
    let broker = SkiffProcess::start();
    run_client_with(client, &broker, &format!("txn-rpw-{client}"), "txn-rpw", RPW_RECORDS);
}

#[test]
fn txn_java() {
    txn("java");
}

#[test]
fn txn_python_confluent() {
    txn("python-confluent");
}

#[test]
fn txn_go_franz() {
    txn("go-franz");
}

#[test]
fn txn_rpw_java() {
    txn_rpw("java");
}

#[test]
fn txn_rpw_python_confluent() {
    txn_rpw("python-confluent");
}

#[test]
fn txn_rpw_go_franz() {
    txn_rpw("go-franz");
}
