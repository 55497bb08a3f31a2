//! Rebuilding a cluster from its bucket (docs/cluster.md): a controller whose data dir is lost
//! starts on an empty dir with `--restore-from-storage` from the newest snapshot copy in object
//! storage, and every record produced before that snapshot is readable again (checked by the
//! Java compat program's verify mode: offsets, keys, values, headers, timestamps).
//!
//! Needs the Java compat program (tests/compat/setup.sh) and MinIO (tests/support/minio.rs).
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use std::time::{Duration, Instant};

use support::cluster::{Cluster, ClusterSpec, http_get, prometheus_value};
use support::compat;

const RECORDS: u32 = 3_000;

#[test]
fn controller_rebuilt_from_snapshot_copies_in_the_bucket() {
    let mut spec = ClusterSpec::new("restore", 1, 1);
    let snapshot_every = vec!["--snapshot-every-entries".to_string(), "20".to_string()];
    spec.controller_args = snapshot_every.clone();
    let mut cluster = Cluster::start(spec);
    let controller = cluster.controller_refs()[0];
    let broker = cluster.broker_refs()[0];
    let copies = |cluster: &Cluster| {
        cluster
            .http_base(controller)
            .and_then(|base| http_get(&base, "/metrics"))
            .and_then(|body| prometheus_value(&body, "skiff_controller_snapshot_copies_total"))
            .unwrap_or(0.0)
    };

    compat::run_java(&cluster.bootstrap(), "restore", "produce", RECORDS).expect("produce");
    // Every record is committed now; more metadata entries make the controller snapshot (every
    // 20 entries) at least twice after them, and copy each snapshot to the bucket.
    let before = copies(&cluster);
    for i in 0..45 {
        cluster.create_topic(&format!("restore-filler-{i}"), 1).expect("filler topic");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while copies(&cluster) < before + 2.0 {
        assert!(Instant::now() < deadline, "no snapshot copies after the produce (had {before})");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Lose the controller's disk entirely.
    cluster.terminate(broker);
    cluster.kill(controller);
    cluster.wipe(controller);
    let mut args = snapshot_every;
    args.push("--restore-from-storage".into());
    cluster.set_controller_args(args);
    cluster.start_node(controller);
    cluster.start_node(broker);

    compat::run_java(&cluster.bootstrap(), "restore", "verify", RECORDS)
        .expect("every record readable after the rebuild");
}
