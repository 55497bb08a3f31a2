mod support;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;
use support::SkiffProcess;
use support::client::Client;
use support::invariants::{self, Expectations};
use support::load::{self, ConsumerSpec, Routing};

#[test]
fn scratch() {
    let p = SkiffProcess::start();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let boot = p.bootstrap().to_string();
    let routing = Routing::new(vec![boot.clone()]);
    rt.block_on(async { Client::connect(&boot).await.unwrap().create_topic_ok("t", 3).await.unwrap() });
    let md = rt.block_on(routing.topic_metadata("t")).unwrap();
    eprintln!("md {md:?}");
    let stop = Arc::new(AtomicBool::new(false));
    let cstop = Arc::new(AtomicBool::new(false));
    let hs: Vec<_> = load::cluster_specs(&routing, "t", 3, 3, Duration::from_secs(30))
        .into_iter()
        .map(|s| rt.spawn(load::run_producer(s, stop.clone())))
        .collect();
    let cs: Vec<_> = (0..3)
        .map(|p| {
            rt.spawn(load::run_consumer(
                ConsumerSpec {
                    routing: routing.clone(),
                    topic: "t".into(),
                    partition: p,
                    give_up_after: Duration::from_secs(30),
                    position: Arc::new(AtomicI64::new(0)),
                },
                cstop.clone(),
            ))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let mut acked = vec![];
    for h in hs {
        let (r, e) = rt.block_on(h).unwrap();
        assert!(e.is_none(), "{e:?}");
        acked.extend(r.acked);
    }
    std::thread::sleep(Duration::from_secs(1));
    cstop.store(true, Ordering::Relaxed);
    let mut consumed = vec![];
    for h in cs {
        let (r, e) = rt.block_on(h).unwrap();
        assert!(e.is_none(), "{e:?}");
        consumed.extend(r.consumed);
    }
    let logs = rt.block_on(invariants::read_topic(&routing, "t", 3, Duration::from_secs(10))).unwrap();
    let leaders = routing.leader_observations();
    let s = invariants::check(
        &logs,
        &Expectations { topic: "t", acked: &acked, consumed: &consumed, leaders: &leaders, final_metadata: Some(&md) },
    )
    .unwrap_or_else(|v| panic!("{v}"));
    eprintln!("{s}; acks logged {}", routing.ack_count());
}
