//! Mutual TLS on the controller port (docs/security.md, "Inside the cluster"): three controllers
//! and two brokers, all with `SKIFF_CONTROLLER_TLS_*`, produce and consume through a controller
//! leader kill; a broker whose certificate comes from another CA, a broker whose certificate
//! expired and a plaintext client of the controller port are refused, logged and counted, and
//! the refused brokers never register.
//!
//! Certificates are made with the `openssl` command: a cluster CA, a node certificate for
//! 127.0.0.1 (serverAuth + clientAuth, shared by every node), one from a second CA and an
//! expired one from the cluster CA. Every wait is bounded.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::cluster::{Cluster, ClusterSpec, NodeRef, Workload, http_get, prometheus_value};

struct Certs {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

const EC: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
const NODE_EXT: &str = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
    extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n";

impl Certs {
    fn make() -> Self {
        let dir = tempfile::Builder::new().prefix("skiff-ctl-certs-").tempdir().expect("temp dir");
        let d = dir.path();
        for ca in ["ca", "other-ca"] {
            let subject = format!("/CN=skiff-{ca}");
            openssl(
                d,
                &[
                    &["req", "-x509"][..],
                    &EC,
                    &["-keyout", &format!("{ca}.key"), "-out", &format!("{ca}.pem"), "-days", "2"],
                    &["-subj", &subject, "-addext", "basicConstraints=critical,CA:TRUE"],
                    &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                ]
                .concat(),
            );
        }
        std::fs::write(d.join("node.ext"), NODE_EXT).expect("ext file");
        for (name, ca) in [("node", "ca"), ("rogue", "other-ca"), ("expired", "ca")] {
            let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
            openssl(
                d,
                &[&["req"][..], &EC, &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={name}")]].concat(),
            );
            if name == "expired" {
                continue;
            }
            let (ca_pem, ca_key, pem) = (format!("{ca}.pem"), format!("{ca}.key"), format!("{name}.pem"));
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &ca_pem,
                    "-CAkey",
                    &ca_key,
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-extfile",
                    "node.ext",
                ],
            );
        }
        // `openssl x509` cannot back-date; `openssl ca` can (a valid signature, validity in 2020).
        std::fs::write(
            d.join("ca.cnf"),
            "[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\nnew_certs_dir=.\nserial=serial\ndefault_md=sha256\n\
             policy=p\nunique_subject=no\n[p]\ncommonName=supplied\n",
        )
        .expect("ca config");
        std::fs::write(d.join("index.txt"), "").expect("index");
        std::fs::write(d.join("serial"), "1000\n").expect("serial");
        openssl(
            d,
            &[
                "ca",
                "-batch",
                "-config",
                "ca.cnf",
                "-cert",
                "ca.pem",
                "-keyfile",
                "ca.key",
                "-in",
                "expired.csr",
                "-out",
                "expired.pem",
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20200102000000Z",
                "-extfile",
                "node.ext",
                "-notext",
            ],
        );
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The controller-TLS environment of a node presenting `name`.pem, trusting the cluster CA.
    fn env(&self, name: &str) -> Vec<(String, String)> {
        vec![
            ("SKIFF_CONTROLLER_TLS_CERT".into(), self.path(&format!("{name}.pem"))),
            ("SKIFF_CONTROLLER_TLS_KEY".into(), self.path(&format!("{name}.key"))),
            ("SKIFF_CONTROLLER_TLS_CA".into(), self.path("ca.pem")),
        ]
    }
}

fn ok<T>(r: anyhow::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e:#}"))
}

/// The sum of `skiff_controller_tls_refused_total` over the running controllers.
fn refused_total(cluster: &Cluster) -> f64 {
    cluster
        .controller_refs()
        .into_iter()
        .filter_map(|c| http_get(&cluster.http_base(c)?, "/metrics"))
        .filter_map(|m| prometheus_value(&m, "skiff_controller_tls_refused_total"))
        .sum()
}

/// Every controller log of the cluster's root, concatenated.
fn controller_logs(root: &Path) -> String {
    let mut out = String::new();
    let Ok(dirs) = std::fs::read_dir(root) else { return out };
    for dir in dirs.flatten() {
        let Ok(files) = std::fs::read_dir(dir.path()) else { continue };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().to_string();
            // Controllers' directories are `c1`, `c2`, ... (tests/support/cluster.rs).
            if name.starts_with("stderr-") && dir.file_name().to_string_lossy().starts_with('c') {
                out.push_str(&std::fs::read_to_string(f.path()).unwrap_or_default());
            }
        }
    }
    out
}

/// A broker (id `id`) presenting `cert` to the cluster's controllers; its stderr goes to `log`.
fn rogue_broker(cluster: &Cluster, certs: &Certs, cert: &str, id: i32, log: &Path) -> std::process::Child {
    let data = cluster.root().join(format!("rogue-{id}"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
    cmd.args(["broker", "--node-id", &id.to_string(), "--kafka-listen", "127.0.0.1:0"])
        .args(["--http-listen", "127.0.0.1:0", "--controllers", &cluster.controller_addrs().join(",")])
        .arg("--data-dir")
        .arg(&data)
        .arg("--storage")
        .arg(format!("file://{}", data.join("objects").display()));
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("SKIFF_") && k != "SKIFF_LOG") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(certs.env(cert));
    let stderr = std::fs::File::create(log).expect("rogue log");
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr).spawn().expect("spawn rogue broker")
}

/// Brokers the controller leader knows (registered at least once).
fn registered_brokers(cluster: &Cluster) -> String {
    let leader = ok(cluster.wait_controller_leader(Duration::from_secs(15), None));
    let metrics = http_get(&cluster.http_base(NodeRef::Controller(leader)).expect("leader runs"), "/metrics")
        .expect("leader metrics");
    metrics.lines().filter(|l| l.starts_with("skiff_cluster_broker_fenced{")).collect::<Vec<_>>().join("\n")
}

#[test]
fn controller_port_mutual_tls() {
    let certs = Certs::make();
    // Two racks with zero cross-zone produce: its zone endpoints speak the same mutual TLS.
    let mut spec = ClusterSpec::new("ctltls", 3, 2).with_racks(&["az-a", "az-b"]);
    spec.controller_env = certs.env("node");
    spec.broker_env = certs.env("node");
    spec.broker_env.push(("SKIFF_ZONE_PRODUCE".into(), "true".into()));
    let started = Instant::now();
    let mut cluster = Cluster::start(spec);
    let topic = "ctltls";
    ok(cluster.create_topic(topic, 4));

    // 1. Produce and consume through a controller leader kill, every hop over mutual TLS.
    let load = Workload::start(&cluster, topic, 4, 1, Duration::from_secs(60));
    ok(load.wait_all_acked(0, Duration::from_secs(30)));
    let leader = ok(cluster.wait_controller_leader(Duration::from_secs(15), None));
    cluster.kill(NodeRef::Controller(leader));
    let new_leader = ok(cluster.wait_controller_leader(Duration::from_secs(20), Some(leader)));
    ok(load.wait_all_acked(load.routing.ack_count(), Duration::from_secs(30)));
    cluster.start_node(NodeRef::Controller(leader));
    let outcome = ok(load.finish(&cluster));
    eprintln!("controller {leader} killed, {new_leader} elected; {}", outcome.describe(&cluster));
    assert!(outcome.summary.acked > 0 && outcome.summary.consumed > 0, "{}", outcome.summary);
    assert_eq!(refused_total(&cluster), 0.0, "no refusal among the cluster's own nodes");

    // 1b. A client of rack az-a produces every partition through the az-a broker: those led by
    //     the az-b broker are forwarded over the zone endpoint's mutual TLS and acknowledged.
    let meta = ok(cluster.metadata(topic));
    let rack_a = cluster.broker_refs().into_iter().find(|b| cluster.rack_of(*b) == Some("az-a")).expect("az-a broker");
    let forwarded = meta.partitions.iter().filter(|p| p.leader_id != rack_a.id()).count();
    assert!(forwarded > 0, "some partition is led in az-b: {meta:?}");
    let addr = cluster.kafka_addr(rack_a).expect("az-a broker runs");
    let zone: anyhow::Result<()> = cluster.block_on(async {
        let mut c = support::client::Client::connect(&addr).await?;
        c.set_client_id("tls-zone,skiff_rack=az-a");
        for p in &meta.partitions {
            let batch = support::client::encode_batch(
                &[support::client::TestRecord::new("k", "zoned", 1)],
                kafka_protocol::records::Compression::None,
                None,
            );
            c.produce_ok(topic, p.partition, batch).await?;
        }
        Ok(())
    });
    zone.expect("produce through the az-a broker, forwarded over mutual TLS");

    // 2. A plaintext client of the controller port, sending a well-formed request frame, gets
    //    no answer: the connection is closed.
    let addr = cluster.controller_addrs()[0].clone();
    let mut s = TcpStream::connect(&addr).expect("connect to the controller port");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let body = br#"{"Broker":"DescribeQuorum"}"#;
    s.write_all(&(body.len() as u32).to_be_bytes()).expect("write length");
    s.write_all(body).expect("write body");
    let mut answer = Vec::new();
    let read = s.read_to_end(&mut answer);
    // A TLS alert at most (it starts with content type 21), never a frame of JSON.
    assert!(
        read.is_err() || answer.is_empty() || answer[0] == 21,
        "a plaintext client was answered: {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(!String::from_utf8_lossy(&answer).contains("DescribeQuorum"), "answered in plaintext");
    let deadline = Instant::now() + Duration::from_secs(10);
    while refused_total(&cluster) < 1.0 {
        assert!(Instant::now() < deadline, "the plaintext client was not counted");
        std::thread::sleep(Duration::from_millis(100));
    }

    // 3. Brokers with a certificate from another CA, or an expired one, are refused and never
    //    register.
    let before = refused_total(&cluster);
    let mut rogues = Vec::new();
    for (cert, id) in [("rogue", 91), ("expired", 92)] {
        let log = cluster.root().join(format!("rogue-{id}.log"));
        rogues.push((id, rogue_broker(&cluster, &certs, cert, id, &log), log));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while refused_total(&cluster) < before + 4.0 {
        assert!(Instant::now() < deadline, "refusals of the rogue brokers not counted: {}", refused_total(&cluster));
        std::thread::sleep(Duration::from_millis(200));
    }
    let registered = registered_brokers(&cluster);
    for (id, mut child, log) in rogues {
        assert!(!registered.contains(&format!("broker=\"{id}\"")), "broker {id} registered:\n{registered}");
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!log.contains("Kafka bootstrap"), "broker {id} started serving:\n{log}");
    }
    for good in [4, 5] {
        assert!(registered.contains(&format!("broker=\"{good}\"")), "broker {good} missing:\n{registered}");
    }
    let logs = controller_logs(cluster.root());
    let refusals: Vec<&str> = logs.lines().filter(|l| l.contains("controller connection refused")).collect();
    assert!(!refusals.is_empty(), "refusals are logged");
    for l in &refusals {
        assert!(l.contains("peer=127.0.0.1:"), "{l}");
    }
    assert!(
        refusals.iter().any(|l| l.contains("UnknownIssuer") || l.contains("unknown issuer")),
        "another CA's certificate named as such: {refusals:#?}"
    );
    assert!(refusals.iter().any(|l| l.contains("Expired") || l.contains("expired")), "expiry named: {refusals:#?}");
    eprintln!("controller_port_mutual_tls: {:?} in all, {} refusals logged", started.elapsed(), refusals.len());
}
