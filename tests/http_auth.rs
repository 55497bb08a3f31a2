//! The HTTP listener's TLS, authentication and authorization (docs/security.md, "The HTTP
//! listener"), against a real broker process.
//!
//! A broker with SASL listeners (so `http_auth` and `allow_everyone_if_no_acl_found` take
//! their network-facing defaults) serves the console over HTTPS (`http_tls`): no credentials
//! or a wrong password is 401 with the Basic challenge, a user without ACLs is refused (403)
//! and sees no topics, a user granted the ACLs and the super user succeed, `/health` stays
//! open and `/metrics` needs credentials unless `http_metrics_open`. A PLAINTEXT-only
//! `skiff dev` stays open without any configuration, and the ACLs apply to its console as to
//! its PLAINTEXT clients (`User:ANONYMOUS`). Users and ACLs are made with Kafka's Admin APIs
//! over SASL/PLAIN. Every wait is bounded.
#![allow(clippy::disallowed_methods)] // black-box tests wait in real time

mod support;

use std::time::Duration;

use anyhow::{Context, ensure};
use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde_json::{Value, json};
use support::SkiffProcess;
use support::certs::Certs;
use support::client::Client;
use support::cluster::prometheus_value;

const ADMIN: (&str, &str) = ("admin", "admin-secret-5e1f");
const ALICE: (&str, &str) = ("alice", "alice-secret-c4d2");
const BOB: (&str, &str) = ("bob", "bob-secret-0a9b");
/// A wrong password that must appear in no log line.
const WRONG: &str = "not-alices-password-71c3";

// Kafka's codes (ResourceType, PatternType, AclOperation, AclPermissionType).
const TOPIC: i8 = 2;
const LITERAL: i8 = 3;
const PREFIXED: i8 = 4;
const CREATE: i8 = 5;
const DELETE: i8 = 6;
const DESCRIBE: i8 = 8;
const ALLOW: i8 = 3;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// A broker with SASL_PLAINTEXT (the test's admin connection) and SASL_SSL listeners, the
/// console over HTTPS, `admin` the bootstrap and super user.
fn start_secured(certs: &Certs, extra: &[(&str, &str)]) -> SkiffProcess {
    let mut env: Vec<(String, String)> = vec![
        ("SKIFF_TLS_CERT".into(), certs.file("broker.pem")),
        ("SKIFF_TLS_KEY".into(), certs.file("broker.key")),
        ("SKIFF_HTTP_TLS".into(), "true".into()),
        ("SKIFF_SASL_MECHANISMS".into(), "PLAIN,SCRAM-SHA-512".into()),
        ("SKIFF_SCRAM_BOOTSTRAP_USER".into(), format!("{}={}", ADMIN.0, ADMIN.1)),
        ("SKIFF_SUPER_USERS".into(), format!("User:{}", ADMIN.0)),
        // Every failed authentication in the log (its budget is rate-limited, not its level).
        ("SKIFF_LOG".into(), "info,openraft=warn".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    SkiffProcess::start_with_listeners("SASL_PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0", None, env)
}

/// A Kafka connection authenticated with SASL/PLAIN.
async fn login(addr: &str, (user, password): (&str, &str)) -> anyhow::Result<Client> {
    let mut c = Client::connect(addr).await?;
    let h = c.send(&SaslHandshakeRequest::default().with_mechanism(sb("PLAIN")), 1).await?;
    ensure!(h.error_code == 0, "handshake: {}", h.error_code);
    let token = Bytes::from(format!("\0{user}\0{password}").into_bytes());
    let r = c.send(&SaslAuthenticateRequest::default().with_auth_bytes(token), 2).await?;
    ensure!(r.error_code == 0, "login as {user}: {} {:?}", r.error_code, r.error_message);
    Ok(c)
}

/// Creates `user` with a SCRAM-SHA-512 credential (AlterUserScramCredentials).
async fn create_user(admin: &mut Client, (user, password): (&str, &str)) -> anyhow::Result<()> {
    use alter_user_scram_credentials_request::ScramCredentialUpsertion;
    let salt = format!("http-auth-test-salt-{user}");
    let salted = skiff::security::sasl::scram::salted_password(
        skiff_controller::scram::ScramMechanism::ScramSha512,
        password.as_bytes(),
        salt.as_bytes(),
        4096,
    );
    let req = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
        ScramCredentialUpsertion::default()
            .with_name(sb(user))
            .with_mechanism(2)
            .with_iterations(4096)
            .with_salt(Bytes::from(salt.into_bytes()))
            .with_salted_password(Bytes::from(salted)),
    ]);
    let r = admin.send(&req, 0).await?;
    ensure!(r.results.iter().all(|r| r.error_code == 0), "creating {user}: {:?}", r.results);
    Ok(())
}

/// ALLOW bindings on topics for `principal`, host `*`: (pattern type, name, operation).
async fn allow(admin: &mut Client, principal: &str, bindings: &[(i8, &str, i8)]) -> anyhow::Result<()> {
    let creations = bindings
        .iter()
        .map(|(pattern, name, op)| {
            create_acls_request::AclCreation::default()
                .with_resource_type(TOPIC)
                .with_resource_name(sb(name))
                .with_resource_pattern_type(*pattern)
                .with_principal(sb(principal))
                .with_host(sb("*"))
                .with_operation(*op)
                .with_permission_type(ALLOW)
        })
        .collect();
    let r = admin.send(&CreateAclsRequest::default().with_creations(creations), 3).await?;
    ensure!(r.results.iter().all(|r| r.error_code == 0), "CreateAcls: {:?}", r.results);
    Ok(())
}

/// One HTTP answer: status, the `WWW-Authenticate` values, the body.
struct Answer {
    status: u16,
    challenges: Vec<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_string()
    }
}

/// The HTTP listener at `base` (`http://` or `https://` trusting `ca`).
struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(base: &str, ca: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(30)).no_proxy();
        if let Some(ca) = ca {
            let pem = std::fs::read(ca)?;
            b = b.tls_built_in_root_certs(false).add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        Ok(Self { client: b.build()?, base: base.trim_end_matches('/').to_string() })
    }

    /// `method path` as `auth` (user, password), with a JSON body for writes (the API's
    /// cross-site guard wants `Content-Type: application/json` on every write).
    async fn call(
        &self,
        method: &str,
        path: &str,
        auth: Option<(&str, &str)>,
        body: Option<Value>,
    ) -> anyhow::Result<Answer> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let write = method != reqwest::Method::GET;
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some((user, password)) = auth {
            req = req.basic_auth(user, Some(password));
        }
        if write {
            req = req.header("Content-Type", "application/json").body(body.unwrap_or(json!({})).to_string());
        }
        let resp = req.send().await.with_context(|| path.to_string())?;
        let status = resp.status().as_u16();
        let challenges = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .collect();
        let body = resp.text().await?;
        Ok(Answer { status, challenges, body })
    }

    async fn expect(
        &self,
        method: &str,
        path: &str,
        auth: Option<(&str, &str)>,
        body: Option<Value>,
        want: u16,
    ) -> anyhow::Result<Answer> {
        let a = self.call(method, path, auth, body).await?;
        ensure!(a.status == want, "{method} {path} as {:?}: {} (want {want}): {}", auth.map(|a| a.0), a.status, a.body);
        Ok(a)
    }
}

/// The listed topics' names, internal ones (`__consumer_offsets`, ...) left out.
fn topic_names(a: &Answer) -> Vec<String> {
    let names = a.json()["topics"].as_array().cloned().unwrap_or_default();
    names.iter().filter_map(|t| t["name"].as_str()).filter(|n| !n.starts_with("__")).map(str::to_string).collect()
}

/// On a SASL_SSL + ACL broker: HTTPS, 401 without or with wrong credentials (logged without
/// the password, counted), 403 and an empty list for a user without ACLs, success for a user
/// the ACLs allow and for the super user; `/health` open, `/metrics` authenticated.
#[test]
fn console_on_a_sasl_ssl_broker_authenticates_and_authorizes() {
    let certs = Certs::make();
    let broker = start_secured(&certs, &[]);
    assert!(broker.http().starts_with("https://"), "the HTTP listener is not HTTPS: {}", broker.http());
    let rt = runtime();
    rt.block_on(async {
        let mut admin = login(broker.listener("SASL_PLAINTEXT"), ADMIN).await?;
        create_user(&mut admin, ALICE).await?;
        create_user(&mut admin, BOB).await?;
        allow(
            &mut admin,
            "User:alice",
            &[
                (PREFIXED, "alice-", CREATE),
                (PREFIXED, "alice-", DELETE),
                (PREFIXED, "alice-", DESCRIBE),
                (LITERAL, "shared", DESCRIBE),
            ],
        )
        .await?;
        let http = Http::new(broker.http(), Some(&certs.path("ca.pem")))?;

        // Open: the probes.
        let health = http.expect("GET", "/health", None, None, 200).await?;
        ensure!(health.body.trim() == "ok", "health: {}", health.body);

        // No credentials: 401 with the Basic challenge (the browser's prompt), everywhere else.
        for path in ["/api/v1/topics", "/metrics", "/", "/api/v1/cluster"] {
            let a = http.expect("GET", path, None, None, 401).await?;
            ensure!(
                a.challenges.iter().any(|c| c.starts_with("Basic realm=\"skiff\"")),
                "{path}: challenges {:?}",
                a.challenges
            );
        }
        // Wrong password, unknown user: 401, logged without the password, counted.
        let wrong = http.expect("GET", "/api/v1/topics", Some((ALICE.0, WRONG)), None, 401).await?;
        ensure!(wrong.error_code() == "AUTHENTICATION_FAILED", "{}", wrong.body);
        http.expect("GET", "/api/v1/topics", Some(("nobody", WRONG)), None, 401).await?;
        let log = std::fs::read_to_string(broker.stderr_path())?;
        ensure!(!log.contains(WRONG), "the wrong password is in the log");
        ensure!(
            log.lines().any(|l| l.contains("authentication failed") && l.contains("HTTP") && l.contains("User:alice")),
            "no log line for alice's failed HTTP authentication:\n{}",
            broker.stderr_tail(30)
        );
        let metrics = http.expect("GET", "/metrics", Some(ADMIN), None, 200).await?;
        let failures = prometheus_value(&metrics.body, "skiff_http_authentication_failures_total");
        ensure!(failures == Some(2.0), "skiff_http_authentication_failures_total {failures:?}");

        // The super user: everything.
        http.expect("POST", "/api/v1/topics", Some(ADMIN), Some(json!({"name": "secret", "partitions": 1})), 201)
            .await?;
        http.expect("POST", "/api/v1/topics", Some(ADMIN), Some(json!({"name": "shared", "partitions": 1})), 201)
            .await?;
        http.expect("GET", "/api/v1/cluster", Some(ADMIN), None, 200).await?;
        let all = http.expect("GET", "/api/v1/topics", Some(ADMIN), None, 200).await?;
        ensure!(topic_names(&all) == ["secret", "shared"], "admin sees {:?}", topic_names(&all));

        // A user without ACLs: refused, named operation, sees nothing.
        let denied = http.expect("POST", "/api/v1/topics", Some(BOB), Some(json!({"name": "bob-t"})), 403).await?;
        ensure!(denied.error_code() == "TOPIC_AUTHORIZATION_FAILED", "{}", denied.body);
        ensure!(denied.json()["error"]["operation"] == "CREATE", "{}", denied.body);
        let denied = http.expect("DELETE", "/api/v1/topics/secret", Some(BOB), None, 403).await?;
        ensure!(denied.json()["error"]["operation"] == "DELETE", "{}", denied.body);
        http.expect("GET", "/api/v1/topics/secret", Some(BOB), None, 403).await?;
        http.expect(
            "PATCH",
            "/api/v1/topics/secret/configs",
            Some(BOB),
            Some(json!({"set": {"retention.ms": "1000"}})),
            403,
        )
        .await?;
        http.expect("POST", "/api/v1/topics/secret/messages", Some(BOB), Some(json!({"value": "x"})), 403).await?;
        http.expect("GET", "/api/v1/topics/secret/partitions/0/messages", Some(BOB), None, 403).await?;
        let cluster = http.expect("GET", "/api/v1/cluster", Some(BOB), None, 403).await?;
        ensure!(cluster.error_code() == "CLUSTER_AUTHORIZATION_FAILED", "{}", cluster.body);
        let none = http.expect("GET", "/api/v1/topics", Some(BOB), None, 200).await?;
        ensure!(topic_names(&none).is_empty(), "bob sees {:?}", topic_names(&none));
        // /metrics needs an authenticated principal, not an ACL.
        http.expect("GET", "/metrics", Some(BOB), None, 200).await?;

        // A user the ACLs allow: what they allow, and no more.
        let created = http
            .expect("POST", "/api/v1/topics", Some(ALICE), Some(json!({"name": "alice-t", "partitions": 2})), 201)
            .await?;
        ensure!(created.json()["name"] == "alice-t", "{}", created.body);
        let mine = http.expect("GET", "/api/v1/topics", Some(ALICE), None, 200).await?;
        ensure!(topic_names(&mine) == ["alice-t", "shared"], "alice sees {:?}", topic_names(&mine));
        http.expect("POST", "/api/v1/topics", Some(ALICE), Some(json!({"name": "other"})), 403).await?;
        http.expect("DELETE", "/api/v1/topics/shared", Some(ALICE), None, 403).await?;
        http.expect("DELETE", "/api/v1/topics/alice-t", Some(ALICE), None, 200).await?;
        http.expect("DELETE", "/api/v1/topics/secret", Some(ADMIN), None, 200).await?;

        // Refusals are audited like the Kafka APIs'.
        let metrics = http.expect("GET", "/metrics", Some(ADMIN), None, 200).await?;
        let denied = metrics
            .body
            .lines()
            .find(|l| l.starts_with("skiff_authorization_denied_total{api=\"CreateTopics\",resource_type=\"TOPIC\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        ensure!(denied == Some(2.0), "CreateTopics denials {denied:?}");
        let log = std::fs::read_to_string(broker.stderr_path())?;
        ensure!(
            log.lines()
                .any(|l| l.contains("authorization denied") && l.contains("User:bob") && l.contains("DeleteTopics")),
            "no denial line for bob's DELETE"
        );
        for secret in [ADMIN.1, ALICE.1, BOB.1] {
            ensure!(!log.contains(secret), "a password is in the log");
        }
        anyhow::Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", broker.stderr_tail(40)));
}

/// `http_metrics_open`: Prometheus scrapes `/metrics` without credentials; the console still
/// needs them. Plain HTTP here (no `http_tls`).
#[test]
fn metrics_can_be_left_open_for_scrapers() {
    let certs = Certs::make();
    let broker = start_secured(&certs, &[("SKIFF_HTTP_TLS", "false"), ("SKIFF_HTTP_METRICS_OPEN", "true")]);
    assert!(broker.http().starts_with("http://"), "{}", broker.http());
    let rt = runtime();
    rt.block_on(async {
        let http = Http::new(broker.http(), None)?;
        let metrics = http.expect("GET", "/metrics", None, None, 200).await?;
        ensure!(metrics.body.contains("skiff_http_authentication_failures_total"), "no HTTP failure counter");
        let a = http.expect("GET", "/api/v1/topics", None, None, 401).await?;
        ensure!(a.challenges.iter().any(|c| c.starts_with("Basic realm=\"skiff\"")), "challenges {:?}", a.challenges);
        http.expect("GET", "/api/v1/topics", Some(ADMIN), None, 200).await?;
        anyhow::Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", broker.stderr_tail(40)));
}

/// A PLAINTEXT-only `skiff dev` with no configuration: the console asks for nothing (the
/// quick start and the browser test), and its callers are `User:ANONYMOUS`, so an ACL that
/// refuses ANONYMOUS a deletion refuses it on the console too, as on the PLAINTEXT listener.
#[test]
fn plaintext_dev_console_stays_open_and_follows_the_acls() {
    let broker = SkiffProcess::start();
    let rt = runtime();
    rt.block_on(async {
        let http = Http::new(broker.http(), None)?;
        http.expect("GET", "/", None, None, 200).await?;
        http.expect("GET", "/metrics", None, None, 200).await?;
        http.expect("POST", "/api/v1/topics", None, Some(json!({"name": "keep", "partitions": 1})), 201).await?;
        http.expect("POST", "/api/v1/topics", None, Some(json!({"name": "scratch", "partitions": 1})), 201).await?;
        // Once an ACL names `keep`, only what it allows is allowed there (ANONYMOUS may describe).
        let mut c = Client::connect(broker.bootstrap()).await?;
        allow(&mut c, "User:ANONYMOUS", &[(LITERAL, "keep", DESCRIBE)]).await?;
        let denied = http.expect("DELETE", "/api/v1/topics/keep", None, None, 403).await?;
        ensure!(denied.error_code() == "TOPIC_AUTHORIZATION_FAILED", "{}", denied.body);
        ensure!(
            denied.json()["error"]["message"].as_str().is_some_and(|m| m.contains("User:ANONYMOUS")),
            "{}",
            denied.body
        );
        http.expect("GET", "/api/v1/topics/keep", None, None, 200).await?;
        http.expect("DELETE", "/api/v1/topics/scratch", None, None, 200).await?;
        let left = http.expect("GET", "/api/v1/topics", None, None, 200).await?;
        ensure!(topic_names(&left) == ["keep"], "{:?}", topic_names(&left));
        anyhow::Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", broker.stderr_tail(40)));
}
