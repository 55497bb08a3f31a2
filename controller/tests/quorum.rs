//! Black-box test of a three-voter quorum over TCP on 127.0.0.1: a late voter catches up by
//! snapshot, the quorum survives losing its leader, and every voter converges to the same state.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

use std::collections::BTreeMap;
use std::time::Duration;

use skiff_controller::image::MetadataImage;
use skiff_controller::metadata::{BrokerRegistration, Command, CommandResult, CreateTopic};
use skiff_controller::{Controller, ControllerConfig, ControllerError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Submits on whichever controller leads, retrying while leadership is unknown or moving.
async fn submit_anywhere(nodes: &[&Controller], cmd: Command) -> CommandResult {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        for c in nodes {
            match c.submit(cmd.clone()).await {
                Ok(r) => return r,
                Err(ControllerError::NotLeader { .. } | ControllerError::Raft(_)) => {}
                Err(e) => panic!("submit on node {}: {e}", c.node_id()),
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader accepted {cmd:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every node has applied at least `index`, then returns their states.
async fn converged(nodes: &[&Controller], index: u64) -> Vec<MetadataImage> {
    for c in nodes {
        let mut applied = c.metadata().subscribe();
        tokio::time::timeout(Duration::from_secs(15), applied.wait_for(|i| *i >= index))
            .await
            .unwrap_or_else(|_| panic!("node {} did not apply {index}", c.node_id()))
            .expect("watch open");
    }
    nodes.iter().map(|c| c.metadata().read(|s| s.clone())).collect()
}

/// The position of the node that accepts writes (followers answer NotLeader at once).
async fn leader_of(nodes: &[Controller]) -> usize {
    for _ in 0..300 {
        for (i, n) in nodes.iter().enumerate() {
            if n.submit(Command::AllocateProducerId).await.is_ok() {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader");
}

fn applied(c: &Controller) -> u64 {
    *c.metadata().subscribe().borrow()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_replicate_snapshot_and_fail_over() {
    init_tracing();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let mut listeners = Vec::new();
    let mut voters = BTreeMap::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        voters.insert(id, l.local_addr().expect("addr").to_string());
        listeners.push(l);
    }
    let config = |id: u64| {
        let mut c = ControllerConfig::new(id, dirs[id as usize - 1].path().to_path_buf(), "q".into());
        c.snapshot_every_entries = 20;
        // Purge the log right after each snapshot so the late voter needs one.
        c.log_kept_after_snapshot = 0;
        c
    };
    let mut listeners = listeners.into_iter();
    let (l1, l2, l3) = (listeners.next(), listeners.next(), listeners.next());
    let token = CancellationToken::new();

    // Two of three voters form a quorum on their own.
    let (n1, n2) = tokio::join!(
        Controller::start(config(1), voters.clone(), l1.expect("listener"), token.clone()),
        Controller::start(config(2), voters.clone(), l2.expect("listener"), token.clone()),
    );
    let (n1, n2) = (n1.expect("node 1"), n2.expect("node 2"));
    submit_anywhere(
        &[&n1, &n2],
        Command::RegisterBroker(BrokerRegistration {
            broker_id: 1,
            incarnation: Uuid::nil(),
            host: "h".into(),
            port: 1,
            rack: None,
            fenced: false,
            listeners: Vec::new(),
        }),
    )
    .await;
    let topic = Command::CreateTopic(CreateTopic {
        name: "t".into(),
        topic_id: Uuid::from_u128(1),
        partitions: 1,
        configs: BTreeMap::new(),
        assignments: Vec::new(),
    });
    assert!(matches!(submit_anywhere(&[&n1, &n2], topic).await, CommandResult::TopicCreated { .. }));
    for _ in 0..100 {
        submit_anywhere(&[&n1, &n2], Command::AllocateProducerId).await;
    }

    // The third voter's log was purged on the others long ago: it must install a snapshot.
    let n3 = Controller::start(config(3), voters.clone(), l3.expect("listener"), token.clone()).await.expect("node 3");
    let index = applied(&n1).max(applied(&n2));
    let states = converged(&[&n1, &n2, &n3], index).await;
    assert_eq!(states[0], states[1]);
    assert_eq!(states[0], states[2]);
    assert_eq!(states[0].cluster_id(), "q");
    assert!(dirs[2].path().join("snapshots/current.json").exists(), "node 3 installed a snapshot");

    // Lose the leader; the other two elect a new one and keep committing.
    let nodes = [n1, n2, n3];
    let leader = leader_of(&nodes).await;
    nodes[leader].shutdown().await.expect("shutdown leader");
    let rest: Vec<&Controller> = nodes.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, n)| n).collect();
    let before = rest[0].metadata().read(|s| s.next_producer_id());
    for _ in 0..10 {
        submit_anywhere(&rest, Command::AllocateProducerId).await;
    }
    let index = rest.iter().map(|n| applied(n)).max().expect("nodes");
    let states = converged(&rest, index).await;
    assert_eq!(states[0], states[1]);
    assert!(states[0].next_producer_id() >= before + 10);

    token.cancel();
    for n in &nodes {
        n.shutdown().await.expect("shutdown");
    }
}
