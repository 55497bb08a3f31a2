//! The `skiff` command line as users meet it: each role's `--help` lists that role's settings
//! only, logs written to a file carry no ANSI escape codes, and the `Kafka bootstrap:` line
//! shows the address clients should use.

#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `skiff` with no `SKIFF_*` variables from the caller's environment.
fn skiff() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("SKIFF_") && k != "SKIFF_LOG") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// The long flags `skiff <role> --help` lists.
fn help_flags(role: &str) -> BTreeSet<String> {
    let out = skiff().args([role, "--help"]).output().expect("run skiff --help");
    assert!(out.status.success(), "skiff {role} --help: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .map(|l| l.split([' ', '=']).next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn each_role_help_lists_only_its_own_settings() {
    let controller = help_flags("controller");
    let broker = help_flags("broker");
    for broker_only in ["kafka-listen", "kafka-advertise", "flush-bytes", "flush-interval", "controllers", "rack"] {
        assert!(!controller.contains(broker_only), "`skiff controller --help` lists --{broker_only}");
        assert!(broker.contains(broker_only), "`skiff broker --help` lacks --{broker_only}");
    }
    for controller_only in ["controller-listen", "voters", "session-timeout", "snapshot-every-entries"] {
        assert!(!broker.contains(controller_only), "`skiff broker --help` lists --{controller_only}");
        assert!(controller.contains(controller_only), "`skiff controller --help` lacks --{controller_only}");
    }
    // Exactly the declared settings of each role (plus --config).
    for role in ["dev", "controller", "broker", "node"] {
        let mut want: BTreeSet<String> = BTreeSet::from(["config".to_string()]);
        if role == "node" {
            want.insert("roles".into());
        }
        for s in skiff::config::cli::settings_of(role) {
            want.insert(s.flag.to_string());
            if let Some((_, flag)) = s.legacy.and_then(|l| l.env_flag) {
                want.insert(flag.to_string());
            }
        }
        assert_eq!(help_flags(role), want, "`skiff {role} --help`");
    }
}

/// A running `skiff dev`; killed on drop.
struct Dev {
    child: Child,
    lines: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
    stderr: std::path::PathBuf,
}

impl Dev {
    fn start(extra: &[&str]) -> Dev {
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr = dir.path().join("stderr.log");
        let mut cmd = skiff();
        cmd.arg("dev").arg("--data-dir").arg(dir.path().join("data"));
        cmd.args(["--storage", "memory://", "--http-listen", "127.0.0.1:0"]).args(extra);
        // Colours must depend on where stderr goes, not on the caller's NO_COLOR.
        cmd.env_remove("NO_COLOR").env("SKIFF_LOG", "info");
        let log = std::fs::File::create(&stderr).expect("stderr file");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        let mut child = cmd.spawn().expect("spawn skiff dev");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Dev { child, lines, _dir: dir, stderr }
    }

    /// The address on the `Kafka bootstrap:` line (after which the HTTP line follows).
    fn bootstrap(&self) -> String {
        loop {
            let line = self.lines.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
                panic!("no bootstrap line\n{}", std::fs::read_to_string(&self.stderr).unwrap_or_default())
            });
            if let Some(addr) = line.strip_prefix("Kafka bootstrap: ") {
                return addr.trim().to_string();
            }
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn logs_written_to_a_file_have_no_escape_codes() {
    let dev = Dev::start(&["--kafka-listen", "127.0.0.1:0"]);
    dev.bootstrap();
    let log = std::fs::read(&dev.stderr).expect("read stderr");
    let text = String::from_utf8_lossy(&log);
    assert!(text.contains("effective configuration") && text.contains("skiff is ready"), "{text}");
    assert!(!log.contains(&0x1b), "ANSI escape codes in a log file:\n{text}");
}

#[test]
fn bootstrap_line_shows_the_advertised_address() {
    let dev = Dev::start(&["--kafka-listen", "127.0.0.1:0", "--kafka-advertise", "127.0.0.1:51092"]);
    assert_eq!(dev.bootstrap(), "127.0.0.1:51092");
}

#[test]
fn bootstrap_line_shows_the_bound_port() {
    let dev = Dev::start(&["--kafka-listen", "127.0.0.1:0"]);
    let addr: std::net::SocketAddr = dev.bootstrap().parse().expect("HOST:PORT");
    assert_ne!(addr.port(), 0);
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("the printed address accepts");
}
