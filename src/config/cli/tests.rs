use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::super::settings::{Legacy, format_duration, parse_duration};
use super::*;

const SUBCOMMANDS: [&str; 4] = ["dev", "controller", "broker", "node"];

fn matches(args: &[&str]) -> ArgMatches {
    command().try_get_matches_from(std::iter::once("skiff").chain(args.iter().copied())).expect("arguments parse")
}

/// The configuration `args` and the variables in `vars` give (no validation).
fn load(args: &[&str], vars: &[(&str, &str)]) -> (Config, Vec<String>) {
    let m = matches(args);
    let (name, sub) = m.subcommand().expect("subcommand");
    let vars: BTreeMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut problems = Vec::new();
    let config = layered(sub, role_mask(name).expect("known"), &|k| vars.get(k).cloned(), &mut problems);
    (config, problems)
}

fn first_subcommand(s: &Setting) -> &'static str {
    ["dev", "controller", "broker"]
        .into_iter()
        .find(|sub| role_mask(sub).is_some_and(|m| m & s.roles != 0))
        .expect("a role")
}

/// A value different from the default: (command-line text, TOML literal, value as shown).
fn sample(s: &Setting) -> (String, String, String) {
    let default = s.show(&Config::default());
    let (text, toml, shown) = match s.type_name() {
        "BOOL" => {
            let v = if default == "true" { "false" } else { "true" };
            (v.into(), v.into(), v.into())
        }
        "N" => ("7".into(), "7".into(), "7".into()),
        "NUMBER" => ("0.25".into(), "0.25".into(), "0.25".into()),
        "LIST" => ("a:1,b:2".into(), "[\"a:1\", \"b:2\"]".into(), "a:1,b:2".into()),
        "DURATION" => ("7s".into(), "\"7s\"".into(), "7s".into()),
        // Secrets are never shown, whatever their value.
        "SECRET" => ("user=sample-7".into(), "\"user=sample-7\"".into(), "***".into()),
        _ => ("sample-7".into(), "\"sample-7\"".into(), "sample-7".into()),
    };
    assert_ne!(shown, default, "{}: the sample must differ from the default", s.key);
    (text, toml, shown)
}

fn toml_for(key: &str, literal: &str) -> String {
    match key.rsplit_once('.') {
        Some((section, leaf)) => format!("[{section}]\n{leaf} = {literal}\n"),
        None => format!("{key} = {literal}\n"),
    }
}

/// Leaves of the serialized config as `section.field` → value (what a file key names).
fn leaves(c: &Config) -> BTreeMap<String, String> {
    let value = toml::Value::try_from(c).expect("serializes");
    let mut out = BTreeMap::new();
    for (k, v) in value.as_table().expect("a table") {
        match v {
            toml::Value::Table(t)
                if ["broker", "controller", "lifecycle", "groups", "transactions", "security"]
                    .contains(&k.as_str()) =>
            {
                for (leaf, v) in t {
                    out.insert(format!("{k}.{leaf}"), v.to_string());
                }
            }
            _ => {
                out.insert(k.clone(), v.to_string());
            }
        }
    }
    out
}

#[test]
fn every_setting_is_reachable_from_the_file_a_variable_and_a_flag() {
    let defaults = leaves(&Config::default());
    for s in SETTINGS {
        let (text, literal, shown) = sample(s);
        let sub = first_subcommand(s);

        let from_file = Config::from_toml(&toml_for(s.key, &literal)).unwrap_or_else(|e| panic!("{}: {e}", s.key));
        assert_eq!(s.show(&from_file), shown, "{} from the file", s.key);
        // The key names the field it sets, and only that one.
        let changed: Vec<String> =
            leaves(&from_file).into_iter().filter(|(k, v)| defaults.get(k) != Some(v)).map(|(k, _)| k).collect();
        assert_eq!(changed, vec![s.key.to_string()], "{}: the fields the file key changed", s.key);

        let (from_env, problems) = load(&[sub], &[(s.env, &text)]);
        assert!(problems.is_empty(), "{}: {problems:?}", s.env);
        assert_eq!(s.show(&from_env), shown, "{} from {}", s.key, s.env);

        let flag = format!("--{}={text}", s.flag);
        let (from_flag, problems) = load(&[sub, &flag], &[]);
        assert!(problems.is_empty(), "{flag}: {problems:?}");
        assert_eq!(s.show(&from_flag), shown, "{} from {flag}", s.key);

        // The older millisecond spelling of a duration keeps working where it existed.
        if let Some(Legacy { key, env_flag }) = s.legacy {
            let from_file = Config::from_toml(&toml_for(key, "7000")).unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(s.show(&from_file), "7s", "{key}");
            if let Some((env, flag)) = env_flag {
                assert_eq!(s.show(&load(&[sub], &[(env, "7000")]).0), "7s", "{env}");
                assert_eq!(s.show(&load(&[sub, &format!("--{flag}"), "7000"], &[]).0), "7s", "--{flag}");
            }
        }
    }
}

#[test]
fn the_declaration_covers_every_field_and_follows_one_naming_rule() {
    // Every field of the config, once every setting holds a value (options included).
    let mut all = Config::default();
    for s in SETTINGS {
        s.parse_into(&mut all, &sample(s).0).expect("sample parses");
    }
    let keys: BTreeSet<String> = SETTINGS.iter().map(|s| s.key.to_string()).collect();
    assert_eq!(leaves(&all).into_keys().collect::<BTreeSet<_>>(), keys);
    assert_eq!(keys.len(), SETTINGS.len(), "file keys are unique");

    let env_of = |flag: &str| format!("SKIFF_{}", flag.to_uppercase().replace('-', "_"));
    for s in SETTINGS {
        assert_eq!(s.env, env_of(s.flag), "{}", s.key);
        assert!(!s.help.is_empty() && !s.default_text().is_empty(), "{}: help and default", s.key);
        if let Some(l) = s.legacy {
            assert_eq!(l.key, format!("{}_ms", s.key));
            assert_eq!(s.type_name(), "DURATION", "{}", s.key);
            if let Some((env, flag)) = l.env_flag {
                assert_eq!((env, flag.to_string()), (env_of(flag).as_str(), format!("{}-ms", s.flag)));
            }
        }
    }
    // A flag names one setting per role; `--node-id` is the broker's and the controller's id.
    for sub in ["dev", "controller", "broker"] {
        let flags: Vec<&str> = settings_of(sub).map(|s| s.flag).collect();
        let unique: BTreeSet<&str> = flags.iter().copied().collect();
        assert_eq!(flags.len(), unique.len(), "`skiff {sub}` has a flag twice");
    }
    let shared: Vec<&str> =
        SETTINGS.iter().filter(|s| SETTINGS.iter().filter(|o| o.flag == s.flag).count() > 1).map(|s| s.key).collect();
    assert_eq!(shared, ["broker.node_id", "controller.node_id"]);
}

/// docs/configuration.md: `| \`key\` (or \`key_ms\`) | \`ENV\` / \`--flag\` (…) | default | meaning |`
/// rows under the sections' headings.
fn documented() -> BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md"))
        .expect("docs/configuration.md");
    let ticked = |cell: &str| -> BTreeSet<String> { cell.split('`').skip(1).step_by(2).map(str::to_string).collect() };
    let mut section: Option<String> = None;
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            section = if line == "## Process" {
                Some(String::new())
            } else {
                line.split_once("(`[").and_then(|(_, rest)| rest.split_once("]`")).map(|(s, _)| format!("{s}."))
            };
            continue;
        }
        let Some(prefix) = section.as_ref().filter(|_| line.starts_with("| `")) else { continue };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let keys: BTreeSet<String> = ticked(cells[1]).into_iter().map(|k| format!("{prefix}{k}")).collect();
        let first = keys.iter().next().expect("a key").clone();
        let main = keys.iter().find(|k| !k.ends_with("_ms") || keys.len() == 1).unwrap_or(&first).clone();
        assert!(rows.insert(main.clone(), (keys, ticked(cells[2]))).is_none(), "{main} documented twice");
    }
    rows
}

#[test]
fn docs_list_every_setting_with_its_variable_and_flag() {
    let docs = documented();
    for s in SETTINGS {
        let (keys, names) =
            docs.get(s.key).unwrap_or_else(|| panic!("docs/configuration.md has no row for `{}`", s.key));
        let mut want_keys = BTreeSet::from([s.key.to_string()]);
        let mut want_names = BTreeSet::from([s.env.to_string(), format!("--{}", s.flag)]);
        if let Some(l) = s.legacy {
            want_keys.insert(l.key.to_string());
            if let Some((env, flag)) = l.env_flag {
                want_names.extend([env.to_string(), format!("--{flag}")]);
            }
        }
        assert_eq!(keys, &want_keys, "docs: keys of `{}`", s.key);
        assert_eq!(names, &want_names, "docs: variables and flags of `{}`", s.key);
    }
    let declared: BTreeSet<&str> = SETTINGS.iter().map(|s| s.key).collect();
    for key in docs.keys() {
        assert!(declared.contains(key.as_str()), "docs/configuration.md documents `{key}`, which no setting declares");
    }
}

#[test]
fn docs_example_file_parses_to_the_defaults() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md"))
        .expect("docs/configuration.md");
    let example = text.split("```toml\n").nth(1).and_then(|t| t.split("```").next()).expect("a toml example");
    let c = Config::from_toml(example).expect("the example parses");
    assert_eq!(leaves(&c), leaves(&Config::default()));
}

#[test]
fn each_role_lists_only_its_own_flags() {
    let flags_of = |sub: &str| -> BTreeSet<String> {
        let help = command().find_subcommand_mut(sub).expect("subcommand").render_long_help().to_string();
        help.lines()
            .filter_map(|l| l.trim_start().strip_prefix("--"))
            .map(|l| l.split([' ', '=']).next().unwrap_or_default().to_string())
            .filter(|f| !["help", "config", "roles"].contains(&f.as_str()))
            .collect()
    };
    for sub in SUBCOMMANDS {
        let mut want: BTreeSet<String> = BTreeSet::new();
        for s in settings_of(sub) {
            want.insert(s.flag.to_string());
            if let Some((_, flag)) = s.legacy.and_then(|l| l.env_flag) {
                want.insert(flag.to_string());
            }
        }
        assert_eq!(flags_of(sub), want, "`skiff {sub} --help`");
    }
    let controller = flags_of("controller");
    let broker = flags_of("broker");
    for broker_only in ["kafka-listen", "kafka-advertise", "flush-bytes", "flush-interval", "controllers", "rack"] {
        assert!(!controller.contains(broker_only), "--{broker_only} in `skiff controller --help`");
        assert!(broker.contains(broker_only));
    }
    for controller_only in ["controller-listen", "voters", "session-timeout", "snapshot-every-entries"] {
        assert!(!broker.contains(controller_only), "--{controller_only} in `skiff broker --help`");
        assert!(controller.contains(controller_only));
    }
    // What the compose file gives a controller (storage for snapshot copies) stays there.
    for shared in ["node-id", "data-dir", "http-listen", "storage", "s3-endpoint"] {
        assert!(controller.contains(shared) && broker.contains(shared), "--{shared}");
    }
    let dev = flags_of("dev");
    assert!(!dev.contains("voters") && !dev.contains("controllers") && dev.contains("flush-bytes"));
    assert_eq!(flags_of("node"), &controller | &broker);
}

#[test]
fn flags_override_variables_override_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("skiff.toml");
    std::fs::write(&file, "[broker]\nflush_bytes = 1000\nnum_partitions = 2\nflush_interval_ms = 40\n").expect("write");
    let file = file.to_str().expect("utf-8");
    let (c, problems) = load(&["dev", "--config", file], &[]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!((c.broker.flush_bytes, c.broker.num_partitions), (1000, 2));
    assert_eq!(c.broker.flush_interval, Some(Duration::from_millis(40)));
    let (c, _) = load(
        &["dev", "--config", file, "--num-partitions", "4"],
        &[("SKIFF_FLUSH_BYTES", "2000"), ("SKIFF_NUM_PARTITIONS", "3"), ("SKIFF_FLUSH_INTERVAL", "1s")],
    );
    assert_eq!((c.broker.flush_bytes, c.broker.num_partitions), (2000, 4));
    assert_eq!(c.broker.flush_interval, Some(Duration::from_secs(1)));
    // The config file can come from the environment too.
    let (c, _) = load(&["dev"], &[("SKIFF_CONFIG", file)]);
    assert_eq!(c.broker.flush_bytes, 1000);
    // A flag of either spelling beats a variable of either spelling.
    let (c, _) = load(&["broker", "--flush-interval-ms", "20"], &[("SKIFF_FLUSH_INTERVAL", "1s")]);
    assert_eq!(c.broker.flush_interval, Some(Duration::from_millis(20)));
}

#[test]
fn older_switches_and_lists_keep_working() {
    let (c, problems) = load(
        &["controller", "--restore-from-storage", "--voters", "1=a:1,2=b:2", "--voters", "3=c:3", "--node-id", "3"],
        &[],
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert!(c.controller.restore_from_storage);
    assert_eq!(c.controller.voters, ["1=a:1", "2=b:2", "3=c:3"]);
    assert_eq!(c.controller.node_id, 3);
    let (c, _) = load(&["controller", "--copy-snapshots=false", "--session-timeout-ms", "600"], &[]);
    assert!(!c.controller.copy_snapshots);
    assert_eq!(c.controller.session_timeout, Duration::from_millis(600));
    let (c, _) = load(&["dev", "--auto-create-topics", "false", "--s3-path-style", "true"], &[]);
    assert!(!c.broker.auto_create_topics);
    assert_eq!(c.s3_path_style, Some(true));
    // A node with both roles: --node-id is both ids.
    let (c, _) = load(&["node", "--roles", "controller,broker", "--node-id", "5"], &[]);
    assert_eq!((c.broker.node_id, c.controller.node_id), (5, 5));
    // Roles read only their own variables.
    let (c, _) = load(&["controller"], &[("SKIFF_FLUSH_BYTES", "1"), ("SKIFF_SNAPSHOT_EVERY_ENTRIES", "9")]);
    assert_eq!((c.broker.flush_bytes, c.controller.snapshot_every_entries), (Config::default().broker.flush_bytes, 9));
}

#[test]
fn every_problem_of_every_layer_is_reported_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("skiff.toml");
    std::fs::write(&file, "bogus = 1\n[broker]\nnum_partitions = \"three\"\n[lifecycle]\ngc_grace = \"soon\"\n")
        .expect("write");
    let m = matches(&[
        "dev",
        "--config",
        file.to_str().expect("utf-8"),
        "--flush-bytes",
        "lots",
        "--kafka-listen",
        "nowhere",
        "--flush-interval",
        "1s",
        "--flush-interval-ms",
        "5",
    ]);
    let vars = BTreeMap::from([("SKIFF_MAX_CONNECTIONS".to_string(), "-1".to_string())]);
    let problems = resolve(&m, &|k| vars.get(k).cloned()).expect_err("invalid");
    let all = problems.join("\n");
    for expected in [
        "unknown key `bogus`",
        "`broker.num_partitions`",
        "`lifecycle.gc_grace`",
        "SKIFF_MAX_CONNECTIONS",
        "--flush-bytes",
        "--flush-interval and --flush-interval-ms",
        "kafka_listen",
    ] {
        assert!(all.contains(expected), "missing `{expected}` in:\n{all}");
    }
    assert_eq!(problems.len(), 7, "{all}");
    // The same key in both spellings in one file is refused.
    let e = Config::from_toml("[broker]\nflush_interval = \"1s\"\nflush_interval_ms = 5\n").expect_err("twice");
    assert!(e.contains("set the same thing"), "{e}");
}

#[test]
fn unknown_roles_are_a_problem() {
    let m = matches(&["node", "--roles", "controller,cook"]);
    let problems = resolve(&m, &|_| None).expect_err("unknown role");
    assert!(problems.iter().any(|p| p.contains("unknown role `cook`")), "{problems:?}");
}

#[test]
fn durations() {
    for (text, ms) in [("250ms", 250), ("5s", 5_000), ("2m", 120_000), ("1h", 3_600_000), ("1m30s", 90_000), ("20", 20)]
    {
        assert_eq!(parse_duration(text), Ok(Duration::from_millis(ms)), "{text}");
    }
    for bad in ["", "5 s", "s", "5x", "-5", "1.5s", "5s3"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
    assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    assert_eq!(format_duration(Duration::from_secs(300)), "5m");
    assert_eq!(format_duration(Duration::from_millis(90_000)), "90s");
    assert_eq!(format_duration(Duration::ZERO), "0ms");
    let c =
        Config::from_toml("[broker]\nflush_interval = 20\n[controller]\nsession_timeout = \"2s\"\n").expect("parse");
    assert_eq!(c.flush_interval(), Duration::from_millis(20));
    assert_eq!(c.controller.session_timeout, Duration::from_secs(2));
    assert!(Config::from_toml("[broker]\nflush_interval = -5\n").is_err());
    assert!(Config::from_toml("[broker]\nflush_interval = true\n").is_err());
}

#[test]
fn effective_config_lists_every_setting_with_secrets_hidden() {
    let c = Config {
        storage: Some("s3://AKIA:secret@bucket/p".into()),
        s3_endpoint: Some("http://user:pw@127.0.0.1:9000".into()),
        ..Config::default()
    };
    let logged = c.redacted();
    assert!(!logged.contains("secret") && !logged.contains("pw"), "{logged}");
    assert!(logged.contains("storage=s3://***@bucket/p"), "{logged}");
    for s in SETTINGS {
        assert!(logged.contains(&format!("{}=", s.key)), "{} missing from {logged}", s.key);
    }
    assert!(logged.contains("lifecycle.gc_grace=5m"), "{logged}");
    assert!(logged.contains("kafka_advertise=(default)"), "{logged}");
}

#[test]
fn colours_only_on_a_terminal_without_no_color() {
    assert!(log_colours(true, None));
    assert!(log_colours(true, Some(OsStr::new(""))));
    assert!(!log_colours(true, Some(OsStr::new("1"))));
    assert!(!log_colours(false, None));
}

#[test]
fn bootstrap_is_the_advertised_address() {
    let bound: std::net::SocketAddr = "0.0.0.0:9092".parse().expect("addr");
    let c = Config { kafka_advertise: Some("127.0.0.1:51092".into()), ..Config::default() };
    assert_eq!(c.kafka_bootstrap(bound), "127.0.0.1:51092");
    let bound: std::net::SocketAddr = "127.0.0.1:40123".parse().expect("addr");
    assert_eq!(Config::default().kafka_bootstrap(bound), "127.0.0.1:40123");
}
