//! The command line: `skiff dev | controller | broker | node`, each taking exactly the settings
//! its role uses (from [`SETTINGS`]), and the layering of the file, `SKIFF_*` variables and
//! flags, each overriding the one before.
//!
//! The variables are read here, through an injected lookup (tests pass a map), not by clap;
//! `--help` still shows each one as clap would (`[env: SKIFF_…=]`), which deploy/validate.sh
//! reads. Bad values of every layer and the validation problems are reported together.

use std::ffi::OsStr;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::Config;
use super::settings::{BROKER, CONTROLLER, DEV, Kind, SETTINGS, Setting};
use crate::node::Roles;

const CONFIG_ENV: &str = "SKIFF_CONFIG";

/// The `skiff` command with its four subcommands.
pub fn command() -> Command {
    Command::new("skiff")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Kafka-compatible streaming on object storage with stateless brokers")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(role_command("dev", DEV).about(
            "One process: a single-voter controller and one broker, objects in a local directory by default. \
             Needs nothing else installed.",
        ))
        .subcommand(
            role_command("controller", CONTROLLER)
                .about("A controller: one voter of the metadata quorum (Raft). Brokers connect to it."),
        )
        .subcommand(
            role_command("broker", BROKER)
                .about("A broker: serves Kafka clients, keeps no durable state; needs --controllers and --storage."),
        )
        .subcommand(
            role_command("node", CONTROLLER | BROKER)
                .about("A cluster node with the roles given by --roles (e.g. controller,broker).")
                .arg(
                    Arg::new("roles")
                        .long("roles")
                        .value_name("ROLES")
                        .env("SKIFF_ROLES")
                        .value_delimiter(',')
                        .action(ArgAction::Append)
                        .required(true)
                        .help("Roles to run: controller, broker, or both (comma-separated)"),
                ),
        )
}

/// Which settings a subcommand takes.
fn role_mask(subcommand: &str) -> Option<u8> {
    match subcommand {
        "dev" => Some(DEV),
        "controller" => Some(CONTROLLER),
        "broker" => Some(BROKER),
        "node" => Some(CONTROLLER | BROKER),
        _ => None,
    }
}

/// The settings `skiff <subcommand>` takes (as flags and variables).
pub fn settings_of(subcommand: &str) -> impl Iterator<Item = &'static Setting> {
    let mask = role_mask(subcommand).unwrap_or(0);
    SETTINGS.iter().filter(move |s| s.roles & mask != 0)
}

fn role_command(name: &'static str, mask: u8) -> Command {
    let mut cmd = Command::new(name).arg(
        Arg::new("config")
            .long("config")
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help(format!("TOML config file (keys as in docs/configuration.md) [env: {CONFIG_ENV}=]")),
    );
    let mut flags: Vec<&str> = Vec::new();
    for s in SETTINGS.iter().filter(|s| s.roles & mask != 0) {
        // `--node-id` is declared by two settings; the first one's help describes both.
        if flags.contains(&s.flag) {
            continue;
        }
        flags.push(s.flag);
        // On a node with both roles, say which role a flag is for.
        let both_roles: u8 = SETTINGS.iter().filter(|o| o.flag == s.flag).map(|o| o.roles).fold(0, |a, r| a | r);
        let note = match (mask == CONTROLLER | BROKER, both_roles & (CONTROLLER | BROKER)) {
            (true, CONTROLLER) => " (controller role)",
            (true, BROKER) => " (broker role)",
            _ => "",
        };
        let default = s.default_text();
        let default = if default.is_empty() { String::new() } else { format!(" [default: {default}]") };
        let help = format!("{}{note}{default} [env: {}=]", s.help, s.env);
        cmd = cmd.arg(flag_arg(s, s.flag, help).help_heading(heading(s.section())));
        if let Some((env, flag)) = s.legacy.and_then(|l| l.env_flag) {
            let help = format!("--{} in milliseconds (the older spelling){note} [env: {env}=]", s.flag);
            cmd = cmd.arg(flag_arg(s, flag, help).value_name("MS").help_heading("Older spellings"));
        }
    }
    cmd
}

fn heading(section: &str) -> &'static str {
    match section {
        "broker" => "Broker",
        "controller" => "Controller",
        "lifecycle" => "Compaction, retention and garbage collection",
        "groups" => "Consumer groups",
        "security" => "Security (TLS, SASL)",
        _ => "Process",
    }
}

fn flag_arg(s: &Setting, flag: &'static str, help: String) -> Arg {
    let arg = Arg::new(flag).long(flag).value_name(s.value_name()).help(help);
    match s.kind() {
        // `--flag` alone means true, as the switches of older versions did.
        Kind::Bool => arg.num_args(0..=1).default_missing_value("true").value_parser(["true", "false"]),
        Kind::List => arg.action(ArgAction::Append),
        Kind::Single => arg.action(ArgAction::Set),
    }
}

/// Parsed arguments → the validated configuration and the roles (`None`: `skiff dev`).
/// `env` looks up a variable; every problem of the file, the variables, the flags and
/// [`Config::validate`] is returned at once.
pub fn resolve(
    matches: &ArgMatches,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Config, Option<Roles>), Vec<String>> {
    let Some((name, sub)) = matches.subcommand() else {
        return Err(vec!["no subcommand (dev, controller, broker, node)".into()]);
    };
    let mask = role_mask(name).ok_or_else(|| vec![format!("unknown subcommand `{name}`")])?;
    let mut problems = Vec::new();
    let roles = match name {
        "dev" => None,
        "controller" => Some(Roles { controller: true, broker: false }),
        "broker" => Some(Roles { controller: false, broker: true }),
        _ => {
            let mut roles = Roles { controller: false, broker: false };
            for r in sub.try_get_many::<String>("roles").ok().flatten().into_iter().flatten() {
                match r.trim() {
                    "controller" => roles.controller = true,
                    "broker" => roles.broker = true,
                    other => problems.push(format!("--roles: unknown role `{other}` (expected controller, broker)")),
                }
            }
            Some(roles)
        }
    };
    let config = layered(sub, mask, env, &mut problems);
    if let Err(p) = config.validate() {
        problems.extend(p);
    }
    if problems.is_empty() { Ok((config, roles)) } else { Err(problems) }
}

/// Defaults ← file ← variables ← flags, for the settings in `mask`.
fn layered(m: &ArgMatches, mask: u8, env: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<String>) -> Config {
    // An empty variable counts as unset (as clap treats them).
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    let mut config = Config::default();
    let path =
        m.try_get_one::<PathBuf>("config").ok().flatten().cloned().or_else(|| var(CONFIG_ENV).map(PathBuf::from));
    if let Some(path) = path {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                if let Err(p) = super::settings::apply_toml(&mut config, &text) {
                    problems.extend(p.into_iter().map(|e| format!("config file {}: {e}", path.display())));
                }
            }
            Err(e) => problems.push(format!("reading config file {}: {e}", path.display())),
        }
    }
    for s in SETTINGS.iter().filter(|s| s.roles & mask != 0) {
        let legacy = s.legacy.and_then(|l| l.env_flag);
        let vars = [Some(s.env), legacy.map(|(e, _)| e)];
        let given = vars.into_iter().flatten().filter_map(|n| var(n).map(|v| (n.to_string(), v))).collect();
        apply_layer(s, &mut config, given, problems);
        let flags = [Some(s.flag), legacy.map(|(_, f)| f)];
        let given = flags
            .into_iter()
            .flatten()
            .filter_map(|f| {
                let values = m.try_get_many::<String>(f).ok().flatten()?;
                Some((format!("--{f}"), values.cloned().collect::<Vec<_>>().join(",")))
            })
            .collect();
        apply_layer(s, &mut config, given, problems);
    }
    config
}

/// Applies one layer's value of `s`, if the layer gives one (under one name only).
fn apply_layer(s: &Setting, config: &mut Config, given: Vec<(String, String)>, problems: &mut Vec<String>) {
    match given.as_slice() {
        [] => {}
        [(name, value)] => {
            if let Err(e) = s.parse_into(config, value) {
                problems.push(format!("{name}: {e}"));
            }
        }
        [(a, _), (b, _), ..] => problems.push(format!("{a} and {b} set the same thing; give one")),
    }
}

/// Whether log lines may carry ANSI colours: only on a terminal, and never with `NO_COLOR`
/// set to anything non-empty (no-color.org). Logs redirected to a file stay plain text.
pub fn log_colours(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

#[cfg(test)]
mod tests;
