//! Racks (issue #17, RFC 0005): 3 `skiff controller` + 3 `skiff broker` processes on loopback
//! with MinIO (`support::cluster`), one broker per rack (`ClusterSpec::with_racks`).
//!
//! - `every_broker_reports_every_rack`: Metadata and DescribeCluster from each broker name
//!   every broker's rack (`--rack`, carried in its registration).
//!
//! The tests of this file run one at a time (each starts six processes). Every loop is bounded
//! in count and time; waits poll for a condition with a deadline.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time

mod support;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use kafka_protocol::messages::DescribeClusterRequest;
use support::client::Client;
use support::cluster::{Cluster, ClusterSpec};

/// One cluster at a time: each test starts six processes on a shared two-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

const RACKS: [&str; 3] = ["az-a", "az-b", "az-c"];

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn three_racks(name: &str) -> Cluster {
    Cluster::start(ClusterSpec::new(name, 3, 3).with_racks(&RACKS))
}

/// broker id → rack, as the harness started them.
fn expected_racks(cluster: &Cluster) -> BTreeMap<i32, Option<String>> {
    cluster.broker_refs().into_iter().map(|b| (b.id(), cluster.rack_of(b).map(str::to_string))).collect()
}

#[test]
fn every_broker_reports_every_rack() {
    let _one = serial();
    let cluster = three_racks("racks-report");
    let want = expected_racks(&cluster);
    assert_eq!(want.values().flatten().count(), 3, "the harness gives each broker a rack");
    for b in cluster.broker_refs() {
        let addr = cluster.kafka_addr(b).expect("running broker");
        let deadline = Instant::now() + Duration::from_secs(20);
        // A broker learns the others' registrations from its image: poll until it has all.
        let (metadata, described) = loop {
            let got: anyhow::Result<_> = cluster.block_on(async {
                let mut c = Client::connect(&addr).await?;
                let m = c.metadata(None).await?;
                let d = c.send(&DescribeClusterRequest::default(), 0).await?;
                let m: BTreeMap<i32, Option<String>> =
                    m.brokers.iter().map(|b| (b.node_id.0, b.rack.as_ref().map(|r| r.to_string()))).collect();
                let d: BTreeMap<i32, Option<String>> =
                    d.brokers.iter().map(|b| (b.broker_id.0, b.rack.as_ref().map(|r| r.to_string()))).collect();
                Ok((m, d))
            });
            match got {
                Ok((m, d)) if m == want && d == want => break (m, d),
                other if Instant::now() > deadline => {
                    panic!("{b} at {addr}: wanted racks {want:?}, got {:?}", other.context("last answer"))
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        assert_eq!(metadata, described);
    }
}
