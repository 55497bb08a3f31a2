//! Object-store credentials never appear in logs, `/metrics`, the console API or error messages
//! (docs/security.md, "Credentials"), even when the store rejects them.
//!
//! A private MinIO with recognisable credentials; `skiff dev` stores in it at debug level; then
//! MinIO restarts with another secret, so every request skiff signs is refused (403
//! SignatureDoesNotMatch) while skiff keeps running. Then the whole log, `/metrics`, every
//! console API read and the produce errors are searched for the secret (and the session
//! token). A second start with a wrong secret fails at start-up with the store's refusal and
//! without the secret. Every wait is bounded.
#![allow(clippy::disallowed_methods)] // black-box tests wait in real time

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::records::Compression;
use support::SkiffProcess;
use support::client::{Client, TestRecord, encode_batch};
use support::cluster::http_get;
use support::minio::Minio;

fn batch(n: usize) -> Bytes {
    let records: Vec<TestRecord> = (0..n).map(|i| TestRecord::new(format!("k{i}"), format!("v{i}"), 0)).collect();
    encode_batch(&records, Compression::None, None)
}

/// Everything an operator or a client can read from the process.
fn observable(skiff: &SkiffProcess, extra: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = extra.iter().map(|e| ("client error".to_string(), e.clone())).collect();
    for path in
        ["/metrics", "/api/v1/cluster", "/api/v1/brokers", "/api/v1/topics", "/api/v1/topics/creds", "/api/v1/groups"]
    {
        out.push((path.to_string(), http_get(skiff.http(), path).unwrap_or_default()));
    }
    out.push(("log".into(), std::fs::read_to_string(skiff.stderr_path()).unwrap_or_default()));
    out
}

#[test]
fn object_store_credentials_never_appear_even_when_refused() {
    let mut minio = Minio::start_local();
    let secret = minio.secret_key.clone();
    let session_token = "skiff-session-token-3e7b1c9a55";
    let prefix = minio.unique_prefix("creds");
    let config = minio.skiff_config(&prefix, "");
    let mut env = minio.skiff_env();
    env.push(("SKIFF_LOG".into(), "debug,openraft=warn,hyper=info,h2=info".into()));
    let mut skiff = SkiffProcess::start_with_config_and_env(&config, env.clone());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let errors = rt.block_on(async {
        let mut c = Client::connect(skiff.bootstrap()).await.expect("connect");
        c.create_topic_ok("creds", 1).await.expect("create topic");
        c.produce_ok("creds", 0, batch(3)).await.expect("produce while the credentials are right");

        // The store now refuses every signature skiff makes.
        minio.secret_key = format!("{secret}-rotated");
        minio.restart();
        let mut errors = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while errors.len() < 3 && Instant::now() < deadline {
            match c.produce("creds", 0, batch(2)).await {
                Ok(r) if r.error_code != 0 => errors.push(format!("{} {:?}", r.error_code, r.error_message)),
                Ok(_) => {}
                Err(e) => {
                    errors.push(format!("{e:#}"));
                    c = Client::connect(skiff.bootstrap()).await.expect("reconnect");
                }
            }
        }
        errors
    });
    assert!(!errors.is_empty(), "produce kept succeeding although the store refuses skiff's signatures");
    std::thread::sleep(Duration::from_millis(500));
    let seen = observable(&skiff, &errors);
    let log = &seen.last().expect("log").1;
    assert!(
        log.contains("SignatureDoesNotMatch") || log.contains("403"),
        "the store's refusal is not in the log (the test did not trigger it):\n{}",
        skiff.stderr_tail(40)
    );
    for (what, text) in &seen {
        assert!(!text.contains(&secret), "the object-store secret appears in {what}");
    }
    skiff.kill();

    // A wrong secret (and a session token) at start-up: refused with the store's explanation,
    // neither value quoted.
    let wrong = "skiff-wrong-secret-5d1e9a7c";
    let mut env: Vec<(String, String)> = minio
        .skiff_env()
        .into_iter()
        .map(|(k, v)| if k == "AWS_SECRET_ACCESS_KEY" { (k, wrong.to_string()) } else { (k, v) })
        .collect();
    env.push(("AWS_SESSION_TOKEN".into(), session_token.into()));
    env.push(("SKIFF_LOG".into(), "debug,openraft=warn,hyper=info,h2=info".into()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("dev")
        .args(["--storage", &format!("s3://{}/{prefix}-2", minio.bucket), "--s3-endpoint", &minio.endpoint])
        .args(["--s3-region", "us-east-1", "--kafka-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(tempfile::tempdir().expect("dir").path())
        .env_remove("SKIFF_LOG")
        .envs(env)
        .output()
        .expect("run skiff");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "started with a wrong secret:\n{text}");
    assert!(text.contains("object storage"), "the failure names the object store:\n{text}");
    for s in [wrong, session_token, secret.as_str()] {
        assert!(!text.contains(s), "`{s}` appears in the start-up failure:\n{text}");
    }
}
