//! Listeners, TLS and SASL with real clients (docs/security.md).
//!
//! Certificates are made in each test with the `openssl` command (a CA, a broker certificate for
//! 127.0.0.1, a client certificate `CN=alice,OU=eng,O=Acme,C=FR`). Kafka's own tools (Java,
//! `tests/support/kafka_cli.rs`) and librdkafka (`tests/compat/python-confluent`) connect over
//! SSL, SASL_SSL with SCRAM-SHA-512 and mutual TLS; raw connections check the KIP-152 order,
//! wrong passwords, garbage and truncated handshakes, slow senders and the per-address limit.
//! Every wait is bounded.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, ApiVersionsRequest, DescribeUserScramCredentialsRequest, MetadataRequest,
    SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::StrBytes;
use support::SkiffProcess;
use support::client::Client;
use support::cluster::{http_get, prometheus_value};
use support::kafka_cli;
use support::slot::Slot;

const ADMIN: (&str, &str) = ("admin", "admin-secret-8d3f");
const LISTENERS: &str = "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0,SASL_SSL://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0";

/// A CA, a broker certificate for 127.0.0.1 and a client certificate, in PEM files.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn make() -> Self {
        let dir = tempfile::Builder::new().prefix("skiff-certs-").tempdir().expect("temp dir");
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(d).output().expect("run openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=skiff-test-ca",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        );
        for (name, subject, ext) in [
            ("broker", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
            ("client", "/C=FR/O=Acme/OU=eng/CN=alice", "extendedKeyUsage=clientAuth\n"),
        ] {
            let (key, csr, pem, extfile) =
                (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
            std::fs::write(d.join(&extfile), format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n{ext}"))
                .expect("ext file");
            openssl(&[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", subject]].concat());
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &extfile,
            ]);
        }
        // Java's PEM keystore: the key and its certificate in one file.
        let keystore = [std::fs::read_to_string(d.join("client.key")), std::fs::read_to_string(d.join("client.pem"))]
            .map(|r| r.expect("read client pem"))
            .concat();
        std::fs::write(d.join("client-keystore.pem"), keystore).expect("write keystore");
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn broker_env(&self) -> Vec<(String, String)> {
        let p = |n: &str| self.path(n).display().to_string();
        vec![
            ("SKIFF_TLS_CERT".into(), p("broker.pem")),
            ("SKIFF_TLS_KEY".into(), p("broker.key")),
            ("SKIFF_TLS_CLIENT_CA".into(), p("ca.pem")),
            ("SKIFF_SASL_MECHANISMS".into(), "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512".into()),
            ("SKIFF_SCRAM_BOOTSTRAP_USER".into(), format!("{}={}", ADMIN.0, ADMIN.1)),
            // These tests are about authentication; with a SASL listener the default would refuse
            // every resource without an ACL (authorization is tests/authorization.rs).
            ("SKIFF_ALLOW_EVERYONE_IF_NO_ACL_FOUND".into(), "true".into()),
            // These tests read /metrics without credentials; with a SASL listener the HTTP
            // listener would ask for them (tests/http_auth.rs covers that).
            ("SKIFF_HTTP_METRICS_OPEN".into(), "true".into()),
        ]
    }

    /// A Java client properties file.
    fn properties(&self, name: &str, lines: &[String]) -> PathBuf {
        let path = self.path(name);
        let mut text = format!("ssl.truststore.type=PEM\nssl.truststore.location={}\n", self.path("ca.pem").display());
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        std::fs::write(&path, text).expect("write properties");
        path
    }

    fn scram_properties(&self, name: &str, user: &str, password: &str) -> PathBuf {
        self.properties(name, &[
            "security.protocol=SASL_SSL".into(),
            "sasl.mechanism=SCRAM-SHA-512".into(),
            format!(
                "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{user}\" password=\"{password}\";"
            ),
        ])
    }
}

fn start(certs: &Certs, extra_env: &[(&str, &str)]) -> SkiffProcess {
    let mut env = certs.broker_env();
    env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    SkiffProcess::start_with_listeners(LISTENERS, None, env)
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Kafka's tools over SASL_SSL (SCRAM-SHA-512) and mutual TLS: the bootstrap admin creates
/// alice with `kafka-configs`, alice creates a topic, produces with ProducerPerformance and
/// consumes with the console consumer; the certificate client lists topics over SSL; a wrong
/// password is refused.
#[test]
fn java_tools_over_sasl_ssl_and_mutual_tls() {
    let _slot = Slot::acquire();
    let certs = Certs::make();
    let broker = start(&certs, &[]);
    let sasl_ssl = broker.listener("SASL_SSL").to_string();
    let admin = certs.scram_properties("admin.properties", ADMIN.0, ADMIN.1);
    kafka_cli::run(
        kafka_cli::CONFIG_COMMAND,
        &[
            "--bootstrap-server",
            &sasl_ssl,
            "--command-config",
            &p(&admin),
            "--alter",
            "--entity-type",
            "users",
            "--entity-name",
            "alice",
            "--add-config",
            "SCRAM-SHA-512=[iterations=8192,password=alice-secret-1c9e]",
        ],
    )
    .expect("run kafka-configs")
    .ok("kafka-configs creating alice's SCRAM-SHA-512 credential")
    .expect("kafka-configs");

    let alice = certs.scram_properties("alice.properties", "alice", "alice-secret-1c9e");
    kafka_cli::run(
        kafka_cli::TOPIC_COMMAND,
        &[
            "--bootstrap-server",
            &sasl_ssl,
            "--command-config",
            &p(&alice),
            "--create",
            "--topic",
            "secured",
            "--partitions",
            "2",
        ],
    )
    .expect("run kafka-topics")
    .ok("kafka-topics --create as alice over SASL_SSL")
    .expect("create");
    let out = kafka_cli::run(
        "org.apache.kafka.tools.ProducerPerformance",
        &[
            "--topic",
            "secured",
            "--num-records",
            "2000",
            "--record-size",
            "100",
            "--throughput",
            "-1",
            "--producer-props",
            &format!("bootstrap.servers={sasl_ssl}"),
            "acks=all",
            "--producer.config",
            &p(&alice),
        ],
    )
    .expect("run ProducerPerformance")
    .ok("ProducerPerformance as alice over SASL_SSL")
    .expect("produce");
    assert!(out.contains("2000 records sent"), "{out}");
    let out = kafka_cli::run(
        kafka_cli::CONSOLE_CONSUMER,
        &[
            "--bootstrap-server",
            &sasl_ssl,
            "--consumer.config",
            &p(&alice),
            "--topic",
            "secured",
            "--from-beginning",
            "--max-messages",
            "2000",
            "--timeout-ms",
            "60000",
        ],
    )
    .expect("run console consumer")
    .ok("console consumer as alice over SASL_SSL")
    .expect("consume");
    let records = out.lines().filter(|l| l.len() == 100).count();
    assert_eq!(
        records,
        2000,
        "records consumed:\n{}",
        out.lines().filter(|l| l.len() != 100).collect::<Vec<_>>().join("\n")
    );

    // Mutual TLS: the certificate is the identity.
    let mtls = certs.properties(
        "mtls.properties",
        &[
            "security.protocol=SSL".into(),
            "ssl.keystore.type=PEM".into(),
            format!("ssl.keystore.location={}", p(&certs.path("client-keystore.pem"))),
        ],
    );
    let out = kafka_cli::run(
        kafka_cli::TOPIC_COMMAND,
        &["--bootstrap-server", broker.listener("SSL"), "--command-config", &p(&mtls), "--list"],
    )
    .expect("run kafka-topics")
    .ok("kafka-topics --list over mutual TLS")
    .expect("list");
    assert!(out.lines().any(|l| l == "secured"), "{out}");
    // SSL without a client certificate: the handshake is refused.
    let no_cert = certs.properties("nocert.properties", &["security.protocol=SSL".into()]);
    let out = kafka_cli::run_with_timeout(
        kafka_cli::TOPIC_COMMAND,
        &["--bootstrap-server", broker.listener("SSL"), "--command-config", &p(&no_cert), "--list"],
        Duration::from_secs(60),
    )
    .expect("run kafka-topics");
    assert!(!out.success, "listing without a client certificate succeeded:\n{}", out.stdout);

    // Deleting alice's credential: her next login fails.
    kafka_cli::run(
        kafka_cli::CONFIG_COMMAND,
        &[
            "--bootstrap-server",
            &sasl_ssl,
            "--command-config",
            &p(&admin),
            "--alter",
            "--entity-type",
            "users",
            "--entity-name",
            "alice",
            "--delete-config",
            "SCRAM-SHA-512",
        ],
    )
    .expect("run kafka-configs")
    .ok("kafka-configs deleting alice's SCRAM-SHA-512 credential")
    .expect("kafka-configs");
    let out = kafka_cli::run_with_timeout(
        kafka_cli::TOPIC_COMMAND,
        &["--bootstrap-server", &sasl_ssl, "--command-config", &p(&alice), "--list"],
        Duration::from_secs(60),
    )
    .expect("run kafka-topics");
    assert!(!out.success, "alice listed topics after her credential was deleted:\n{}", out.stdout);

    // A wrong password: the tool fails with Kafka's authentication error.
    let wrong = certs.scram_properties("wrong.properties", "alice", "not-her-password");
    let out = kafka_cli::run_with_timeout(
        kafka_cli::TOPIC_COMMAND,
        &["--bootstrap-server", &sasl_ssl, "--command-config", &p(&wrong), "--list"],
        Duration::from_secs(60),
    )
    .expect("run kafka-topics");
    assert!(!out.success, "a wrong password listed topics:\n{}", out.stdout);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains(
            "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512"
        ),
        "{text}"
    );
    let metrics = http_get(broker.http(), "/metrics").expect("metrics");
    assert!(prometheus_value(&metrics, "skiff_authentication_failures_total").unwrap_or(0.0) >= 1.0, "{metrics}");
    assert!(prometheus_value(&metrics, "skiff_authentications_total").unwrap_or(0.0) >= 4.0, "{metrics}");
}

/// KIP-368: with `connections_max_reauth`, Java's producer re-authenticates on its
/// connections while it produces (12 s at 25 records/s, sessions of 4 s), and nothing fails.
#[test]
fn java_client_reauthenticates_when_the_session_ends() {
    let _slot = Slot::acquire();
    let certs = Certs::make();
    let broker = start(&certs, &[("SKIFF_CONNECTIONS_MAX_REAUTH", "4s")]);
    let sasl_ssl = broker.listener("SASL_SSL").to_string();
    let admin = certs.scram_properties("admin.properties", ADMIN.0, ADMIN.1);
    let out = kafka_cli::run(
        "org.apache.kafka.tools.ProducerPerformance",
        &[
            "--topic",
            "reauth",
            "--num-records",
            "300",
            "--record-size",
            "100",
            "--throughput",
            "25",
            "--producer-props",
            &format!("bootstrap.servers={sasl_ssl}"),
            "acks=all",
            "--producer.config",
            &p(&admin),
        ],
    )
    .expect("run ProducerPerformance")
    .ok("ProducerPerformance across re-authentications")
    .expect("produce");
    assert!(out.contains("300 records sent"), "{out}");
    let metrics = http_get(broker.http(), "/metrics").expect("metrics");
    let logins = prometheus_value(&metrics, "skiff_authentications_total").unwrap_or(0.0);
    let connections = prometheus_value(&metrics, "skiff_connections_total").unwrap_or(f64::MAX);
    assert!(logins > connections, "no re-authentication: {logins} logins on {connections} connections\n{metrics}");
}

/// librdkafka (confluent-kafka) runs the compat scenario over SASL_SSL with SCRAM-SHA-512.
#[test]
fn librdkafka_over_sasl_ssl_scram_sha_512() {
    let _slot = Slot::acquire();
    let certs = Certs::make();
    let broker = start(&certs, &[]);
    let ca = p(&certs.path("ca.pem"));
    support::compat::run_client_env(
        "python-confluent",
        &broker,
        "secured-librdkafka",
        "full",
        "3000",
        &[
            ("BOOTSTRAP", broker.listener("SASL_SSL")),
            ("COMPAT_SECURITY_PROTOCOL", "SASL_SSL"),
            ("COMPAT_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("COMPAT_SASL_USERNAME", ADMIN.0),
            ("COMPAT_SASL_PASSWORD", ADMIN.1),
            ("COMPAT_SSL_CA_LOCATION", &ca),
        ],
    );
}

fn handshake(mechanism: &'static str) -> SaslHandshakeRequest {
    SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism))
}

fn token(bytes: &[u8]) -> SaslAuthenticateRequest {
    SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(bytes))
}

/// KIP-152 on a SASL listener: only ApiVersions and SaslHandshake before authentication; a wrong
/// password or garbage token is answered SASL_AUTHENTICATION_FAILED and the connection closed;
/// after a good login Metadata advertises the address of the listener the client came in on.
#[test]
fn sasl_order_wrong_passwords_and_garbage_close_the_connection() {
    let certs = Certs::make();
    let broker = start(&certs, &[]);
    let addr = broker.listener("SASL_PLAINTEXT").to_string();
    let closes = Duration::from_secs(5);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        // A request before authentication: closed without an answer.
        let mut c = Client::connect(&addr).await.expect("connect");
        assert!(c.send(&MetadataRequest::default(), 12).await.is_err(), "Metadata answered before authentication");

        // PLAIN with a wrong password.
        let mut c = Client::connect(&addr).await.expect("connect");
        c.send(&ApiVersionsRequest::default(), 3).await.expect("ApiVersions before authentication");
        let h = c.send(&handshake("PLAIN"), 1).await.expect("handshake");
        assert_eq!(h.error_code, 0);
        let asked = Instant::now();
        let r = c.send(&token(format!("\0{}\0wrong", ADMIN.0).as_bytes()), 2).await.expect("authenticate");
        assert!(
            asked.elapsed() >= Duration::from_millis(100),
            "answered before connection_failed_authentication_delay"
        );
        assert_eq!(r.error_code, 58, "SASL_AUTHENTICATION_FAILED");
        assert_eq!(r.error_message.as_deref(), Some("Authentication failed: Invalid username or password"));
        assert!(c.closed_within(closes).await.expect("read"), "connection left open after a failed login");

        // SCRAM with a garbage client-first message, and a mechanism that is not enabled.
        for garbage in [&b"\xff\xfe garbage \x00"[..], b"n,,", b"y,,n=admin,r=x", &[0u8; 300][..]] {
            let mut c = Client::connect(&addr).await.expect("connect");
            assert_eq!(c.send(&handshake("SCRAM-SHA-512"), 1).await.expect("handshake").error_code, 0);
            let r = c.send(&token(garbage), 2).await.expect("authenticate");
            assert_eq!(r.error_code, 58, "garbage {garbage:?}");
            assert!(c.closed_within(closes).await.expect("read"));
        }
        let mut c = Client::connect(&addr).await.expect("connect");
        let h = c.send(&handshake("GSSAPI"), 1).await.expect("handshake");
        assert_eq!(h.error_code, 33, "UNSUPPORTED_SASL_MECHANISM");
        assert!(h.mechanisms.iter().any(|m| m.as_str() == "SCRAM-SHA-512"));
        assert!(c.closed_within(closes).await.expect("read"));

        // Frames that are not requests, and a frame above 512 KiB before authentication.
        let mut c = Client::connect(&addr).await.expect("connect");
        c.write_frame(b"\x00\x11\x00\x01\x00\x00\x00\x07\xde\xad\xbe\xef").await.expect("write");
        assert!(c.closed_within(closes).await.expect("read"));
        let mut c = Client::connect(&addr).await.expect("connect");
        c.write_raw(&(600_000i32).to_be_bytes()).await.expect("write");
        assert!(c.closed_within(closes).await.expect("read"));

        // A good login, then Metadata names this listener's address.
        let mut c = Client::connect(&addr).await.expect("connect");
        assert_eq!(c.send(&handshake("PLAIN"), 1).await.expect("handshake").error_code, 0);
        let r = c.send(&token(format!("\0{}\0{}", ADMIN.0, ADMIN.1).as_bytes()), 2).await.expect("authenticate");
        assert_eq!(r.error_code, 0, "{:?}", r.error_message);
        let m = c.send(&MetadataRequest::default(), 12).await.expect("metadata");
        let advertised: Vec<String> = m.brokers.iter().map(|b| format!("{}:{}", b.host.as_str(), b.port)).collect();
        assert_eq!(advertised, vec![addr.clone()]);
        // SaslAuthenticate again on an authenticated connection: ILLEGAL_SASL_STATE, still open.
        assert_eq!(c.send(&token(b"x"), 2).await.expect("authenticate").error_code, 34);

        // DescribeUserScramCredentials / AlterUserScramCredentials with Kafka's per-user errors.
        let all = c.send(&DescribeUserScramCredentialsRequest::default(), 0).await.expect("describe");
        let admin: Vec<(i8, i32)> = all
            .results
            .iter()
            .find(|r| r.user.as_str() == ADMIN.0)
            .map(|r| r.credential_infos.iter().map(|i| (i.mechanism, i.iterations)).collect())
            .expect("the bootstrap user is described");
        assert_eq!(admin, vec![(1, 4096), (2, 4096)], "SCRAM-SHA-256 and SCRAM-SHA-512, 4096 iterations");
        let name = |n: &str| UserName::default().with_name(StrBytes::from_string(n.into()));
        let some =
            DescribeUserScramCredentialsRequest::default().with_users(Some(vec![name("nobody"), name("x"), name("x")]));
        let some = c.send(&some, 0).await.expect("describe");
        let codes: Vec<(String, i16)> = some.results.iter().map(|r| (r.user.to_string(), r.error_code)).collect();
        assert_eq!(codes, vec![("nobody".into(), 91), ("x".into(), 92)], "RESOURCE_NOT_FOUND, DUPLICATE_RESOURCE");
        let upsert = |user: &str, mechanism: i8, iterations: i32| {
            ScramCredentialUpsertion::default()
                .with_name(StrBytes::from_string(user.into()))
                .with_mechanism(mechanism)
                .with_iterations(iterations)
                .with_salt(Bytes::from_static(b"0123456789abcdef"))
                .with_salted_password(Bytes::from_static(b"0123456789abcdef0123456789abcdef"))
        };
        let alter = AlterUserScramCredentialsRequest::default()
            .with_upsertions(vec![upsert("few", 2, 100), upsert("odd", 9, 4096), upsert("bob", 1, 4096)])
            .with_deletions(vec![
                ScramCredentialDeletion::default().with_name(StrBytes::from_static_str("ghost")).with_mechanism(2),
            ]);
        let r = c.send(&alter, 0).await.expect("alter");
        let codes: Vec<(String, i16)> = r.results.iter().map(|r| (r.user.to_string(), r.error_code)).collect();
        assert_eq!(
            codes,
            vec![("ghost".into(), 91), ("few".into(), 93), ("odd".into(), 33), ("bob".into(), 0)],
            "RESOURCE_NOT_FOUND, UNACCEPTABLE_CREDENTIAL, UNSUPPORTED_SASL_MECHANISM, NONE"
        );
        let mut plain = Client::connect(broker.listener("PLAINTEXT")).await.expect("connect");
        let m = plain.send(&MetadataRequest::default(), 12).await.expect("metadata");
        assert_eq!(format!("{}:{}", m.brokers[0].host.as_str(), m.brokers[0].port), broker.listener("PLAINTEXT"));
        // A PLAINTEXT listener refuses SASL requests as Kafka does.
        assert_eq!(plain.send(&handshake("PLAIN"), 1).await.expect("handshake").error_code, 34);
    });
    let metrics = http_get(broker.http(), "/metrics").expect("metrics");
    assert!(prometheus_value(&metrics, "skiff_authentication_failures_total").unwrap_or(0.0) >= 6.0, "{metrics}");
}

/// A TLS connection to `addr` (as 127.0.0.1), trusting `ca`.
async fn tls_connect(addr: &str, ca: &Path) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(c.expect("ca cert")).expect("add ca");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake")
}

/// The broker's certificate as a TLS client sees it (DER), trusting `ca`.
async fn served_certificate(addr: &str, ca: &Path) -> Vec<u8> {
    let tls = tls_connect(addr, ca).await;
    tls.get_ref().1.peer_certificates().and_then(|c| c.first()).expect("a certificate").to_vec()
}

/// Frames larger than any TLS record or buffer, both ways, over SASL_SSL: a 1.4 MiB produce,
/// a 1.4 MiB fetch response, then three fetches sent back to back before any answer is read
/// (so one read from the socket holds several requests, and answers queue behind each other).
/// Every answer comes back whole, in order, with the records produced and the three pipelined
/// record sets byte-identical to the first (the TLS read-ahead and write path of
/// src/server.rs and src/connection.rs).
#[test]
fn large_frames_over_sasl_ssl_come_back_whole_and_in_order() {
    use bytes::{Buf, BufMut, BytesMut};
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, Encodable};
    use kafka_protocol::records::Compression;
    use support::client::{FETCH_VERSION, TestRecord, decode_batches, encode_batch, raw_request, topic_name};

    let certs = Certs::make();
    let broker = start(&certs, &[]);
    let addr = broker.listener("SASL_SSL").to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut c = Client::over(tls_connect(&addr, &certs.path("ca.pem")).await);
        assert_eq!(c.send(&handshake("PLAIN"), 1).await.expect("handshake").error_code, 0);
        let login = format!("\0{}\0{}", ADMIN.0, ADMIN.1);
        assert_eq!(c.send(&token(login.as_bytes()), 2).await.expect("authenticate").error_code, 0);
        c.create_topic_ok("large", 2).await.expect("create topic");

        // Incompressible values (xorshift), 64 KiB each: 11 per batch, about 704 KiB a batch.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut value = || {
            let mut v = Vec::with_capacity(64 << 10);
            while v.len() < 64 << 10 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.extend_from_slice(&x.to_le_bytes());
            }
            Bytes::from(v)
        };
        let mut batch = |n: usize| -> (Vec<Bytes>, Bytes) {
            let values: Vec<Bytes> = (0..n).map(|_| value()).collect();
            let records: Vec<TestRecord> =
                values.iter().enumerate().map(|(i, v)| TestRecord::new(format!("k{i}"), v.clone(), 1)).collect();
            (values, encode_batch(&records, Compression::None, None))
        };
        let (first, b0) = batch(11);
        let (other, b1) = batch(11);
        let (second, b2) = batch(11);
        // One produce request of two batches (about 1.4 MiB), then a third batch.
        for r in c.produce_many("large", &[(0, b0), (1, b1)]).await.expect("produce 1.4 MiB") {
            assert_eq!(r.error_code, 0, "{r:?}");
        }
        assert_eq!(c.produce_ok("large", 0, b2).await.expect("produce"), 11);
        let expected: Vec<Bytes> = first.into_iter().chain(second).collect();

        // Partition 0 holds two batches: one fetch answers about 1.4 MiB.
        let p = c.fetch("large", 0, 0, 1000, 1).await.expect("fetch");
        assert_eq!(p.error_code, 0);
        let records = p.records.expect("records");
        assert!(records.len() > 1 << 20, "the fetch answered {} bytes, not more than 1 MiB", records.len());
        let values = |records: Bytes| -> Vec<Bytes> {
            decode_batches(records)
                .expect("decode")
                .into_iter()
                .flat_map(|b| b.records)
                .map(|r| r.record.value.expect("value"))
                .collect()
        };
        assert_eq!(values(records.clone()), expected, "partition 0's records, fetched over SASL_SSL");
        let p1 = c.fetch("large", 1, 0, 1000, 1).await.expect("fetch partition 1");
        assert_eq!(values(p1.records.expect("records")), other, "partition 1's records");

        // Three fetches of both partitions written at once, then their answers read.
        let fetch = FetchRequest::default()
            .with_max_wait_ms(1000)
            .with_min_bytes(1)
            .with_max_bytes(16 << 20)
            .with_topics(vec![FetchTopic::default().with_topic(topic_name("large")).with_partitions(
                (0..2).map(|p| FetchPartition::default().with_partition(p).with_partition_max_bytes(4 << 20)).collect(),
            )]);
        let mut body = BytesMut::new();
        fetch.encode(&mut body, FETCH_VERSION).expect("encode fetch");
        let mut frames = BytesMut::new();
        for correlation_id in 100..103 {
            let frame = raw_request(1, FETCH_VERSION, correlation_id, 2, &body);
            frames.put_i32(i32::try_from(frame.len()).expect("frame size"));
            frames.put_slice(&frame);
        }
        c.write_raw(&frames).await.expect("write three fetches");
        for correlation_id in 100..103 {
            let mut frame = tokio::time::timeout(Duration::from_secs(30), c.read_frame())
                .await
                .expect("answer in time")
                .expect("read")
                .expect("an answer, not a close");
            assert!(frame.len() > 2 << 20, "answer {correlation_id} is {} bytes", frame.len());
            let header = ResponseHeader::decode(&mut frame, 1).expect("response header");
            assert_eq!(header.correlation_id, correlation_id, "answers in request order");
            let r = FetchResponse::decode(&mut frame, FETCH_VERSION).expect("fetch response");
            assert!(!frame.has_remaining(), "trailing bytes");
            let parts = &r.responses[0].partitions;
            assert_eq!(parts[0].records.as_ref(), Some(&records), "partition 0's bytes, pipelined {correlation_id}");
            assert_eq!(values(parts[1].records.clone().expect("records")), other);
        }
    });
}

fn pem_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(path).expect("pem").to_vec()
}

/// Replacing the certificate file switches new connections to the new certificate without a
/// restart; a half-written file keeps the old one in use.
#[test]
fn certificates_are_reloaded_when_the_files_change() {
    let certs = Certs::make();
    // The broker reads copies that the test replaces.
    let (cert, key) = (certs.path("live.pem"), certs.path("live.key"));
    std::fs::copy(certs.path("broker.pem"), &cert).expect("copy");
    std::fs::copy(certs.path("broker.key"), &key).expect("copy");
    let broker = SkiffProcess::start_with_listeners(
        "SSL://127.0.0.1:0",
        None,
        vec![("SKIFF_TLS_CERT".into(), p(&cert)), ("SKIFF_TLS_KEY".into(), p(&key))],
    );
    let addr = broker.listener("SSL").to_string();
    let ca = certs.path("ca.pem");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    assert_eq!(rt.block_on(served_certificate(&addr, &ca)), pem_der(&certs.path("broker.pem")));
    // A second certificate for the same key and names, then a broken file.
    let out = Command::new("openssl")
        .args(["x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"])
        .args(["-out", "rotated.pem", "-days", "3", "-extfile", "broker.ext"])
        .current_dir(certs.dir.path())
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::copy(certs.path("rotated.pem"), &cert).expect("replace");
    let rotated = pem_der(&certs.path("rotated.pem"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        if rt.block_on(served_certificate(&addr, &ca)) == rotated {
            break;
        }
        assert!(Instant::now() < deadline, "the new certificate was not served within 10 s");
    }
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\ntruncat").expect("break the file");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(rt.block_on(served_certificate(&addr, &ca)), rotated, "a broken file replaced the certificate");
    std::thread::sleep(Duration::from_millis(300));
    assert!(std::fs::read_to_string(broker.stderr_path()).expect("log").contains("cannot be loaded"));
}

/// Reads until the peer closes, for at most `within`; true if it closed.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))))
            .expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
    false
}

/// Truncated and stalled TLS handshakes, and 300 connections that each send 2 bytes of a frame
/// (slowloris), are all closed by `request_read_timeout`; the broker serves on.
#[test]
fn truncated_tls_handshakes_and_slow_senders_are_closed() {
    let certs = Certs::make();
    let broker = start(&certs, &[("SKIFF_REQUEST_READ_TIMEOUT", "2s")]);
    // A TLS record header announcing a 512-byte ClientHello, then 3 bytes of it.
    let partial_hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01];
    for listener in ["SSL", "SASL_SSL"] {
        let mut stalled = TcpStream::connect(broker.listener(listener)).expect("connect");
        stalled.write_all(&partial_hello).expect("write");
        let mut cut = TcpStream::connect(broker.listener(listener)).expect("connect");
        cut.write_all(&partial_hello).expect("write");
        cut.shutdown(std::net::Shutdown::Write).expect("half close");
        assert!(closed_within(&mut cut, Duration::from_secs(5)), "{listener}: truncated handshake left open");
        assert!(closed_within(&mut stalled, Duration::from_secs(8)), "{listener}: stalled handshake left open");
        // Not a TLS record at all.
        let mut garbage = TcpStream::connect(broker.listener(listener)).expect("connect");
        garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
        assert!(closed_within(&mut garbage, Duration::from_secs(5)), "{listener}: garbage left open");
    }
    // Silent connections: closed at request_read_timeout before SASL authentication, kept (up
    // to connections_max_idle) on PLAINTEXT.
    let mut silent_sasl = TcpStream::connect(broker.listener("SASL_PLAINTEXT")).expect("connect");
    let mut silent_plain = TcpStream::connect(broker.listener("PLAINTEXT")).expect("connect");
    assert!(closed_within(&mut silent_sasl, Duration::from_secs(6)), "an unauthenticated connection sat idle");
    assert!(!closed_within(&mut silent_plain, Duration::from_millis(100)), "a PLAINTEXT connection was closed idle");
    let mut slow: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(broker.listener("PLAINTEXT")).expect("connect");
            s.write_all(&[0, 0]).expect("two bytes of a size prefix");
            s
        })
        .collect();
    let started = Instant::now();
    for s in &mut slow {
        let left = Duration::from_secs(15).saturating_sub(started.elapsed()).max(Duration::from_millis(10));
        assert!(closed_within(s, left), "a slow sender was still connected after {:?}", started.elapsed());
    }
    let metrics = http_get(broker.http(), "/metrics").expect("metrics");
    let slow_closed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("skiff_connections_closed_total{reason=\"request_read_timeout\"} "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(slow_closed >= Some(300), "{metrics}");
    let tls_failed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("skiff_connections_closed_total{reason=\"tls_handshake\"} "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(tls_failed >= Some(6), "{metrics}");
    // Still serving.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut c = Client::connect(broker.listener("PLAINTEXT")).await.expect("connect");
        c.send(&ApiVersionsRequest::default(), 3).await.expect("ApiVersions after the flood");
    });
}

/// `max_connections_per_ip`: the connection beyond the limit is closed at once and counted.
#[test]
fn connections_beyond_the_per_address_limit_are_closed() {
    let broker =
        SkiffProcess::start_with_listeners("127.0.0.1:0", Some("[broker]\nmax_connections_per_ip = 3\n"), vec![]);
    let mut kept: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(broker.bootstrap()).expect("connect")).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(broker.bootstrap()).expect("connect");
    assert!(closed_within(&mut extra, Duration::from_secs(5)), "the fourth connection was kept");
    assert!(!closed_within(&mut kept[0], Duration::from_millis(300)), "a connection within the limit was closed");
    kept.pop();
    std::thread::sleep(Duration::from_millis(300));
    let mut again = TcpStream::connect(broker.bootstrap()).expect("connect");
    assert!(!closed_within(&mut again, Duration::from_millis(500)), "a slot freed by a close was not reused");
    let metrics = http_get(broker.http(), "/metrics").expect("metrics");
    assert!(metrics.contains("skiff_connections_closed_total{reason=\"max_connections_per_ip\"} 1"), "{metrics}");
}

/// Passwords and object-store credentials appear in no log line, no error and not in /metrics,
/// even at debug level.
#[test]
fn credentials_never_appear_in_logs_or_metrics() {
    let certs = Certs::make();
    let aws_secret = "aws-secret-7f2c9e1d";
    let broker = start(
        &certs,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIASKIFFTESTKEY"),
            ("AWS_SECRET_ACCESS_KEY", aws_secret),
            ("SKIFF_LOG", "debug,openraft=warn"),
        ],
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        for password in ["wrong-password-4b1a", ADMIN.1] {
            let mut c = Client::connect(broker.listener("SASL_PLAINTEXT")).await.expect("connect");
            c.send(&handshake("PLAIN"), 1).await.expect("handshake");
            c.send(&token(format!("\0{}\0{password}", ADMIN.0).as_bytes()), 2).await.expect("authenticate");
        }
    });
    let metrics = http_get(broker.http(), "/metrics").expect("metrics");
    std::thread::sleep(Duration::from_millis(300));
    let log = std::fs::read_to_string(broker.stderr_path()).expect("log");
    let failure = log.lines().find(|l| l.contains("authentication failed")).expect("the failed login is logged");
    for part in ["principal=User:admin", "mechanism=\"PLAIN\"", "peer=127.0.0.1:", "listener=SASL_PLAINTEXT"] {
        assert!(failure.contains(part), "{part} missing in {failure}");
    }
    assert!(log.contains("SCRAM bootstrap user created"), "{log}");
    for secret in [ADMIN.1, "wrong-password-4b1a", aws_secret] {
        assert!(!log.contains(secret), "`{secret}` in the log");
        assert!(!metrics.contains(secret), "`{secret}` in /metrics");
    }
    assert!(log.contains("scram_bootstrap_user=***"), "the effective configuration hides it");
}

/// The `advertised=` address of `listener` in a cluster node's log.
fn advertised_in_log(log: &str, listener: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains("Kafka listener") && l.contains(&format!("listener={listener} ")))?;
    line.split_whitespace().find_map(|w| w.strip_prefix("advertised=")).map(str::to_string)
}

/// In a cluster, Metadata names every broker at its listener of the name the client came in
/// on: a SASL client is never sent to another broker's PLAINTEXT port.
#[test]
fn every_broker_is_advertised_at_the_listener_the_client_came_in_on() {
    use support::cluster::{Cluster, ClusterSpec};
    let _slot = Slot::acquire();
    let mut spec = ClusterSpec::new("sec-listeners", 1, 2);
    spec.broker_env = vec![
        ("SKIFF_KAFKA_LISTEN".into(), "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0".into()),
        ("SKIFF_SASL_MECHANISMS".into(), "PLAIN".into()),
        ("SKIFF_SCRAM_BOOTSTRAP_USER".into(), format!("{}={}", ADMIN.0, ADMIN.1)),
    ];
    let cluster = Cluster::start(spec);
    let brokers = cluster.broker_refs();
    let addresses = |listener: &str| -> Vec<(i32, String)> {
        brokers
            .iter()
            .map(|b| {
                let log = cluster.log_tail(*b, 400);
                (b.id(), advertised_in_log(&log, listener).unwrap_or_else(|| panic!("{b}: no {listener} line\n{log}")))
            })
            .collect()
    };
    let (plain, sasl) = (addresses("PLAINTEXT"), addresses("SASL_PLAINTEXT"));
    let first = brokers[0];
    assert_eq!(
        cluster.kafka_addr(first).as_deref(),
        Some(plain[0].1.as_str()),
        "the bootstrap line is the first listener"
    );
    let seen = |addr: String, login: bool| {
        cluster.block_on(async move {
            let mut c = Client::connect(&addr).await.expect("connect");
            if login {
                assert_eq!(c.send(&handshake("PLAIN"), 1).await.expect("handshake").error_code, 0);
                let r = c.send(&token(format!("\0{}\0{}", ADMIN.0, ADMIN.1).as_bytes()), 2).await.expect("login");
                assert_eq!(r.error_code, 0, "{:?}", r.error_message);
            }
            // Both brokers registered: retry until the image has them (bounded).
            for _ in 0..50 {
                let m = c.send(&MetadataRequest::default(), 12).await.expect("metadata");
                let mut out: Vec<(i32, String)> =
                    m.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port))).collect();
                out.sort();
                if out.len() == 2 {
                    return out;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            panic!("Metadata never listed both brokers");
        })
    };
    assert_eq!(seen(sasl[0].1.clone(), true), sasl, "from SASL_PLAINTEXT");
    assert_eq!(seen(plain[0].1.clone(), false), plain, "from PLAINTEXT");
    assert_ne!(sasl, plain);
}

/// SCRAM credentials are controller state: a user created with AlterUserScramCredentials logs
/// in after a restart, and the bootstrap user is not re-created over a changed password.
#[test]
fn credentials_survive_a_restart() {
    use skiff::security::sasl::scram::salted_password;
    use skiff_controller::intent::ScramMechanism;
    let env = vec![
        ("SKIFF_SASL_MECHANISMS".to_string(), "PLAIN".to_string()),
        ("SKIFF_SCRAM_BOOTSTRAP_USER".to_string(), format!("{}={}", ADMIN.0, ADMIN.1)),
        // Managing users is ALTER on the cluster: the bootstrap user is the super user.
        ("SKIFF_SUPER_USERS".to_string(), format!("User:{}", ADMIN.0)),
    ];
    let mut broker = SkiffProcess::start_with_listeners("SASL_PLAINTEXT://127.0.0.1:0", None, env);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let login = |addr: String, user: &'static str, password: &'static str| {
        rt.block_on(async move {
            let mut c = Client::connect(&addr).await.expect("connect");
            assert_eq!(c.send(&handshake("PLAIN"), 1).await.expect("handshake").error_code, 0);
            let r = c.send(&token(format!("\0{user}\0{password}").as_bytes()), 2).await.expect("login");
            (r.error_code, c)
        })
    };
    let (code, mut admin) = login(broker.listener("SASL_PLAINTEXT").to_string(), ADMIN.0, ADMIN.1);
    assert_eq!(code, 0);
    // As Kafka's Admin client does: salt and hash client-side, send the salted password.
    let salt = b"client-side-salt";
    let upsert = |user: &str, password: &str| {
        let salted = salted_password(ScramMechanism::ScramSha512, password.as_bytes(), salt, 4096);
        ScramCredentialUpsertion::default()
            .with_name(StrBytes::from_string(user.into()))
            .with_mechanism(2)
            .with_iterations(4096)
            .with_salt(Bytes::from_static(salt))
            .with_salted_password(Bytes::from(salted))
    };
    let alter = AlterUserScramCredentialsRequest::default()
        .with_upsertions(vec![upsert("carol", "carol-secret"), upsert(ADMIN.0, "admin-changed")]);
    let r = rt.block_on(admin.send(&alter, 0)).expect("alter");
    assert!(r.results.iter().all(|r| r.error_code == 0), "{r:?}");
    drop(admin);
    broker.restart();
    let addr = broker.listener("SASL_PLAINTEXT").to_string();
    assert_eq!(login(addr.clone(), "carol", "carol-secret").0, 0, "carol after the restart");
    assert_eq!(login(addr.clone(), ADMIN.0, "admin-changed").0, 0, "the changed password stands");
    assert_eq!(login(addr, ADMIN.0, ADMIN.1).0, 58, "the bootstrap password was not restored");
}
