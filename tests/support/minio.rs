//! A real S3-compatible store for black-box tests: MinIO.
//!
//! [`Minio::shared`] finds one, in this order, once per test binary:
//! 1. `SKIFF_TEST_S3_ENDPOINT` (e.g. `http://127.0.0.1:9000`) with `AWS_ACCESS_KEY_ID` /
//!    `AWS_SECRET_ACCESS_KEY` and the bucket `SKIFF_TEST_S3_BUCKET` (default `skiff-test`),
//!    which must exist;
//! 2. a `minio` binary (`SKIFF_MINIO_BIN`, else `minio` on PATH, else `~/go/bin/minio`, where
//!    `scripts/install-minio.sh` puts it), started on 127.0.0.1 with an ephemeral port, a
//!    temporary data directory, random credentials and the bucket created up front (a
//!    directory `<data>/<bucket>` is a bucket to single-drive MinIO);
//! 3. testcontainers' MinIO module when a Docker engine answers (`docker info`); it needs the
//!    `testcontainers` cargo feature (`cargo test --features testcontainers`), which is off by
//!    default because the crate adds compile time and most machines have the binary.
//!    `SKIFF_TEST_MINIO=docker` takes this path even when a binary exists (and fails when no
//!    engine answers): `deploy/test-stack.sh`, part of `scripts/test.sh`, runs tests/minio.rs
//!    that way against the image `deploy/images-offline.sh` builds;
//! 4. otherwise the test FAILS with what to do. It is never skipped, in CI or not.
//!
//! Each test gets its own key prefix ([`Minio::unique_prefix`]) so tests share one MinIO.
//! [`Minio::start_local`] starts a private MinIO that the test may stop, freeze and restart.
//!
//! A started MinIO runs under a small shell watchdog that stops it (and removes its data
//! directory) when the test process exits, however it exits.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long MinIO may take to answer its health check after a start.
pub const MINIO_START_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a MinIO is and how to reach it.
pub struct Minio {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
    local: Option<LocalMinio>,
    /// Keeps a Docker container alive for the life of the test binary, with the watchdog that
    /// removes it after the process exits.
    #[allow(dead_code)]
    container: Option<std::sync::Mutex<Box<dyn std::any::Any + Send>>>,
}

struct LocalMinio {
    bin: PathBuf,
    /// Removed when the last watchdog exits (shared) or on drop (private).
    root: PathBuf,
    port: u16,
    watchdog: Option<Child>,
    starts: u32,
}

static SHARED: OnceLock<Minio> = OnceLock::new();
static PREFIXES: AtomicU64 = AtomicU64::new(0);

impl Minio {
    /// The MinIO this test binary uses (started on first use). Panics with instructions when
    /// there is none.
    pub fn shared() -> &'static Minio {
        SHARED.get_or_init(|| {
            if let Ok(endpoint) = std::env::var("SKIFF_TEST_S3_ENDPOINT")
                && !endpoint.is_empty()
            {
                let need = |k: &str| {
                    std::env::var(k).unwrap_or_else(|_| panic!("SKIFF_TEST_S3_ENDPOINT is set but {k} is not"))
                };
                return Minio {
                    endpoint,
                    access_key: need("AWS_ACCESS_KEY_ID"),
                    secret_key: need("AWS_SECRET_ACCESS_KEY"),
                    bucket: std::env::var("SKIFF_TEST_S3_BUCKET").unwrap_or_else(|_| "skiff-test".into()),
                    local: None,
                    container: None,
                };
            }
            if std::env::var("SKIFF_TEST_MINIO").as_deref() == Ok("docker") {
                assert!(docker_available(), "SKIFF_TEST_MINIO=docker but no Docker engine answers `docker info`");
                return Self::start_container();
            }
            if find_binary().is_none() && docker_available() {
                return Self::start_container();
            }
            Self::start_local()
        })
    }

    /// MinIO in Docker through testcontainers' MinIO module.
    #[cfg(feature = "testcontainers")]
    fn start_container() -> Minio {
        use testcontainers_modules::minio::MinIO;
        use testcontainers_modules::testcontainers::core::{CmdWaitFor, ExecCommand};
        use testcontainers_modules::testcontainers::runners::SyncRunner;
        let container = MinIO::default().start().unwrap_or_else(|e| panic!("starting MinIO in Docker: {e}"));
        let port = container.get_host_port_ipv4(9000).unwrap_or_else(|e| panic!("MinIO container port: {e}"));
        let bucket = "skiff-test".to_string();
        // Through the S3 API with the image's `mc`: a directory made under /data of a server
        // that is already running is not a bucket to it until it rescans (NoSuchBucket for
        // the first tests, seen with the MinIO of deploy/images-offline.sh).
        let mut made = container
            .exec(
                ExecCommand::new(["mc", "mb", "--ignore-existing", &format!("local/{bucket}")])
                    .with_env_vars([("MC_HOST_local", "http://minioadmin:minioadmin@127.0.0.1:9000")])
                    .with_cmd_ready_condition(CmdWaitFor::exit()),
            )
            .unwrap_or_else(|e| panic!("creating the bucket in the MinIO container: {e}"));
        let code = made.exit_code().unwrap_or_else(|e| panic!("`mc mb` in the MinIO container: {e}"));
        if code != Some(0) {
            let out = made.stdout_to_vec().unwrap_or_default();
            let err = made.stderr_to_vec().unwrap_or_default();
            panic!(
                "`mc mb local/{bucket}` in the MinIO container exited {code:?}: {}{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        // The container lives in a static, which is never dropped, and testcontainers-rs has no
        // reaper: a watchdog removes it once this test process is gone, however it exits.
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(r#"while kill -0 "$WATCH_PID" 2>/dev/null; do sleep 0.5; done; docker rm -f -v "$CONTAINER" >/dev/null 2>&1"#)
            .env("WATCH_PID", std::process::id().to_string())
            .env("CONTAINER", container.id())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn the MinIO container's watchdog (sh): {e}"));
        Minio {
            endpoint: format!("http://127.0.0.1:{port}"),
            // The image's default root credentials.
            access_key: "minioadmin".into(),
            secret_key: "minioadmin".into(),
            bucket,
            local: None,
            container: Some(std::sync::Mutex::new(Box::new((container, watchdog)))),
        }
    }

    #[cfg(not(feature = "testcontainers"))]
    fn start_container() -> Minio {
        panic!(
            "no `minio` binary, but a Docker engine answers: run the tests with \
             `cargo test --features testcontainers` to use testcontainers' MinIO module, or {}",
            missing_message()
        )
    }

    /// A private MinIO process (for tests that stop or freeze it). Panics with instructions
    /// when no `minio` binary is found.
    pub fn start_local() -> Minio {
        let bin = find_binary().unwrap_or_else(|| panic!("{}", missing_message()));
        let root = tempfile::Builder::new().prefix("skiff-minio-").tempdir().expect("temp dir").keep();
        let bucket = "skiff-test".to_string();
        std::fs::create_dir_all(root.join("data").join(&bucket)).expect("create bucket directory");
        let port = free_port();
        let mut m = Minio {
            endpoint: format!("http://127.0.0.1:{port}"),
            access_key: format!("skiff{:08x}", rand_u32()),
            secret_key: format!("secret{:016x}", (u64::from(rand_u32()) << 32) | u64::from(rand_u32())),
            bucket,
            local: Some(LocalMinio { bin, root, port, watchdog: None, starts: 0 }),
            container: None,
        };
        m.launch();
        m
    }

    /// A fresh key prefix for one test: `<name>-<pid>-<n>`.
    pub fn unique_prefix(&self, name: &str) -> String {
        let n = PREFIXES.fetch_add(1, Ordering::Relaxed);
        format!("{name}-{}-{n}-{:08x}", std::process::id(), rand_u32())
    }

    /// `skiff dev` configuration (TOML) storing objects under `s3://<bucket>/<prefix>` here.
    /// `extra` is appended (e.g. a `[broker]` table).
    pub fn skiff_config(&self, prefix: &str, extra: &str) -> String {
        format!(
            "storage = \"s3://{}/{prefix}\"\ns3_endpoint = \"{}\"\ns3_region = \"us-east-1\"\n{extra}\n",
            self.bucket, self.endpoint
        )
    }

    /// Environment for a `skiff` process: the credentials (and nothing that would override
    /// the config file's endpoint).
    pub fn skiff_env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }

    /// OS pid of the MinIO server process, if started here and running.
    pub fn pid(&self) -> Option<u32> {
        let local = self.local.as_ref()?;
        let text = std::fs::read_to_string(local.root.join(format!("minio-{}.pid", local.starts))).ok()?;
        text.trim().parse().ok()
    }

    /// The bucket's directory on disk when MinIO runs here from a binary (single-drive MinIO
    /// keeps each object as a directory holding `xl.meta`); `None` for an external endpoint
    /// or a container.
    pub fn bucket_dir(&self) -> Option<PathBuf> {
        self.local.as_ref().map(|l| l.root.join("data").join(&self.bucket))
    }

    /// The MinIO log of the current run.
    pub fn log_tail(&self, lines: usize) -> String {
        match &self.local {
            Some(l) => super::tail(&l.root.join(format!("minio-{}.log", l.starts)), lines),
            None => "<external MinIO: no log>".into(),
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
    pub fn freeze(&self) {
        signal(self.pid().expect("freeze: MinIO not started here"), "STOP");
    }

    /// Resumes a frozen server (SIGCONT).
    pub fn thaw(&self) {
        signal(self.pid().expect("thaw: MinIO not started here"), "CONT");
    }

    /// Kills the server (SIGKILL) and waits for its watchdog; the data directory stays.
    pub fn kill(&mut self) {
        let pid = self.pid();
        let local = self.local.as_mut().expect("kill: MinIO not started here");
        if let Some(pid) = pid {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
        }
        if let Some(mut w) = local.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        if self.local.as_ref().is_some_and(|l| l.watchdog.is_some()) {
            self.kill();
        }
        self.launch();
    }

    fn launch(&mut self) {
        let local = self.local.as_mut().expect("launch: not a local MinIO");
        local.starts += 1;
        let n = local.starts;
        let console = free_port();
        // The watchdog: runs MinIO, writes its pid, and stops it when the test process is gone
        // or the watchdog itself is terminated. A private MinIO keeps its data between runs;
        // the directory is removed on drop.
        let script = r#"
"$MINIO_BIN" server --quiet --address "127.0.0.1:$MINIO_PORT" --console-address "127.0.0.1:$MINIO_CONSOLE_PORT" "$MINIO_ROOT_DIR/data" >"$MINIO_ROOT_DIR/minio-$MINIO_RUN.log" 2>&1 &
m=$!
echo "$m" > "$MINIO_ROOT_DIR/minio-$MINIO_RUN.pid"
trap 'kill -CONT $m 2>/dev/null; kill $m 2>/dev/null; wait $m; exit 0' TERM INT HUP
while kill -0 "$WATCH_PID" 2>/dev/null && kill -0 "$m" 2>/dev/null; do sleep 0.5; done
kill -CONT $m 2>/dev/null; kill $m 2>/dev/null; wait $m
if ! kill -0 "$WATCH_PID" 2>/dev/null; then rm -rf "$MINIO_ROOT_DIR"; fi
"#;
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("MINIO_BIN", &local.bin)
            .env("MINIO_PORT", local.port.to_string())
            .env("MINIO_CONSOLE_PORT", console.to_string())
            .env("MINIO_ROOT_DIR", &local.root)
            .env("MINIO_RUN", n.to_string())
            .env("WATCH_PID", std::process::id().to_string())
            .env("MINIO_ROOT_USER", &self.access_key)
            .env("MINIO_ROOT_PASSWORD", &self.secret_key)
            .env("MINIO_BROWSER", "off")
            .env("MINIO_UPDATE", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn MinIO watchdog (sh)");
        local.watchdog = Some(watchdog);
        let addr = format!("127.0.0.1:{}", local.port);
        let deadline = Instant::now() + MINIO_START_TIMEOUT;
        loop {
            if http_status(&addr, "/minio/health/ready") == Some(200) {
                break;
            }
            let exited = local.watchdog.as_mut().and_then(|w| w.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let log = super::tail(&local.root.join(format!("minio-{n}.log")), 40);
                panic!(
                    "MinIO ({}) did not become ready on {addr} within {MINIO_START_TIMEOUT:?} (exited: {exited:?})\n{log}",
                    local.bin.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The bucket is the directory created before the first start; an anonymous request
        // cannot tell a missing bucket from a forbidden one, so skiff's start-up check (a
        // signed LIST) is what verifies it.
    }
}

impl Drop for Minio {
    fn drop(&mut self) {
        if self.local.as_ref().is_some_and(|l| l.watchdog.is_some()) {
            self.kill();
        }
        if let Some(l) = &self.local {
            if std::thread::panicking() {
                eprintln!(
                    "---- MinIO log tail ----\n{}\n---- kept MinIO directory: {} ----",
                    self.log_tail(30),
                    l.root.display()
                );
            } else {
                let _ = std::fs::remove_dir_all(&l.root);
            }
        }
    }
}

/// `minio` from `SKIFF_MINIO_BIN`, PATH, or `~/go/bin`.
pub fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SKIFF_MINIO_BIN").map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("minio"));
    let go_bin = [
        std::env::var_os("GOBIN").map(|d| PathBuf::from(d).join("minio")),
        std::env::var_os("GOPATH").map(|d| PathBuf::from(d).join("bin").join("minio")),
        std::env::var_os("HOME").map(|h| Path::new(&h).join("go").join("bin").join("minio")),
    ];
    on_path.chain(go_bin.into_iter().flatten()).find(|p| p.is_file())
}

fn missing_message() -> String {
    format!(
        "no MinIO for the S3 tests (CI={}): these tests are never skipped.\n\
         Either run `scripts/install-minio.sh` (installs `minio` into ~/go/bin with `go install`; \
         scripts/test.sh does this), put a `minio` binary on PATH or in SKIFF_MINIO_BIN, or point \
         SKIFF_TEST_S3_ENDPOINT (+ AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, SKIFF_TEST_S3_BUCKET) \
         at an S3-compatible store.",
        std::env::var("CI").unwrap_or_else(|_| "unset".into())
    )
}

/// True if a Docker engine answers.
fn docker_available() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A port that was free a moment ago, below Linux's ephemeral range (32768-60999): a port from
/// that range can be taken by an outgoing connection of one of the many clients a test runs
/// before the process it was picked for binds it ("Address already in use" of a controller in
/// `failover_clients`, where killed brokers make every client reconnect). Each test process
/// walks its own stretch of 20000-31999 (offset by its pid) and skips ports bound now.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(2_654_435_761) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Status of an anonymous `GET path` (HTTP/1.0), `None` if unreachable.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let sock = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().expect("run kill(1)");
    assert!(status.success(), "kill -{name} {pid} failed: {status}");
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish() as u32
}
