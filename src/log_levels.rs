//! Log levels changed at run time: Kafka's broker loggers (`kafka-configs --entity-type
//! broker-loggers`, resource type BROKER_LOGGER), over tracing's filter.
//!
//! The process's filter is a list of directives (`SKIFF_LOG` / `RUST_LOG`, default
//! `info,openraft=warn`): a root level and per-target levels. Kafka's loggers map onto them:
//! `root` is the default level, every other logger a tracing target (a crate or module path)
//! written with dots as Java loggers are, since Kafka's tools accept no other separator:
//! logger `skiff.handler.fetch` is target `skiff::handler::fetch`. Setting a logger's level adds or replaces
//! its directive; deleting it removes the directive, so the logger follows `root` again, as a
//! log4j logger without a level follows its parent. Each change rebuilds the filter and swaps
//! it in (`tracing_subscriber::reload`), so it applies to the next event, and lasts until the
//! process restarts (Kafka's broker-logger levels are not persisted either).
//!
//! Kafka's log4j levels are accepted as Kafka accepts them (OFF, FATAL, ERROR, WARN, INFO,
//! DEBUG, TRACE); tracing has no FATAL, so it filters as ERROR and is reported as set.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

/// Kafka's `Log4jController.ROOT_LOGGER`.
pub const ROOT_LOGGER: &str = "root";
/// Kafka's `LogLevelConfig.VALID_LOG_LEVELS`, in its order.
pub const VALID_LEVELS: &[&str] = &["OFF", "FATAL", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"];
/// The default filter when no environment variable sets one.
pub const DEFAULT_FILTER: &str = "info,openraft=warn";
/// Targets that exist in every Skiff process, listed even without a level of their own (log4j
/// lists the loggers it has created; these are the crates that log and their top-level
/// modules). Kafka's `kafka-configs` only alters loggers that Describe lists; deeper modules
/// can still be set through the API, and are listed once they have a level.
pub const KNOWN_TARGETS: &[&str] = &[
    "openraft",
    "skiff",
    "skiff::broker",
    "skiff::connection",
    "skiff::group",
    "skiff::handler",
    "skiff::http",
    "skiff::log",
    "skiff::node",
    "skiff::server",
    "skiff::supervisor",
    "skiff_controller",
    "skiff_controller::client",
    "skiff_controller::raft",
    "skiff_storage",
    "skiff_storage::cache",
    "skiff_storage::store",
];

/// Why a logger change was refused (mapped to Kafka's codes in handler/errors.rs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoggerError {
    /// Kafka: InvalidConfigurationException.
    #[error("Logger {0} does not exist!")]
    UnknownLogger(String),
    /// Kafka: InvalidConfigurationException.
    #[error(
        "Cannot set the log level of {logger} to {level} as it is not a supported log level. Valid log levels are \
         OFF, FATAL, ERROR, WARN, INFO, DEBUG, TRACE"
    )]
    InvalidLevel { logger: String, level: String },
    /// Kafka: InvalidRequestException.
    #[error("Removing the log level of the root logger is not allowed")]
    RemoveRoot,
    /// Kafka: InvalidRequestException (APPEND and SUBTRACT).
    #[error("{0} operation is not allowed for the BROKER_LOGGER resource")]
    OperationNotAllowed(&'static str),
    /// The rebuilt filter could not be installed.
    #[error("{0}")]
    Reload(String),
}

/// One change: set a logger's level (`Some`) or remove it (`None`).
pub type Change = (String, Option<String>);

type Reload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The levels as set, and how to install a new filter.
pub struct LogLevels {
    levels: Mutex<Levels>,
    reload: Reload,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Levels {
    root: String,
    /// Target → level (Kafka's names, upper case).
    targets: BTreeMap<String, String>,
}

/// Parses `level` and `target=level` directives; `None` for any other kind (span or field
/// filters), which loggers cannot represent: `main.rs` then installs no run-time control.
fn parse(spec: &str) -> Option<Levels> {
    let mut levels = Levels { root: "ERROR".into(), targets: BTreeMap::new() };
    for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match d.split_once('=') {
            None => levels.root = kafka_level(d)?,
            Some((target, level)) if is_target(target) => {
                levels.targets.insert(target.to_string(), kafka_level(level)?);
            }
            Some(_) => return None,
        }
    }
    Some(levels)
}

fn is_target(t: &str) -> bool {
    !t.is_empty() && t.split("::").all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

/// A tracing level as Kafka names it (`None`: not a level).
fn kafka_level(tracing: &str) -> Option<String> {
    let upper = tracing.trim().to_ascii_uppercase();
    VALID_LEVELS.contains(&upper.as_str()).then_some(upper)
}

/// A logger name (dotted) as a tracing target.
fn target_of(logger: &str) -> String {
    logger.replace('.', "::")
}

/// A tracing target as a logger name (dotted).
fn logger_of(target: &str) -> String {
    target.replace("::", ".")
}

/// Kafka's level as a tracing directive level.
fn tracing_level(kafka: &str) -> &'static str {
    match kafka {
        "OFF" => "off",
        "FATAL" | "ERROR" => "error",
        "WARN" => "warn",
        "INFO" => "info",
        "DEBUG" => "debug",
        _ => "trace",
    }
}

impl Levels {
    fn spec(&self) -> String {
        let mut parts = vec![tracing_level(&self.root).to_string()];
        parts.extend(self.targets.iter().map(|(t, l)| format!("{t}={}", tracing_level(l))));
        parts.join(",")
    }

    /// Kafka's `loggerExists` for a target: a known crate, one of its modules, or a target with
    /// a level.
    fn exists(&self, target: &str) -> bool {
        self.targets.contains_key(target)
            || (is_target(target) && KNOWN_TARGETS.contains(&target.split("::").next().unwrap_or_default()))
    }
}

impl LogLevels {
    /// The levels of filter `spec` (`None` if it has directives other than `level` and
    /// `target=level`), installing changes with `reload` (given the new filter string).
    pub fn new(spec: &str, reload: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static) -> Option<Self> {
        Some(Self { levels: Mutex::new(parse(spec)?), reload: Box::new(reload) })
    }

    /// Every logger with its level (its own, else root's), root first, then by name.
    pub fn loggers(&self) -> Vec<(String, String)> {
        let l = self.levels.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut targets: Vec<String> = KNOWN_TARGETS.iter().map(|t| t.to_string()).collect();
        targets.extend(l.targets.keys().cloned());
        targets.sort();
        targets.dedup();
        let mut out = vec![(ROOT_LOGGER.to_string(), l.root.clone())];
        out.extend(targets.into_iter().map(|t| {
            let level = l.targets.get(&t).cloned().unwrap_or_else(|| l.root.clone());
            (logger_of(&t), level)
        }));
        out
    }

    /// Applies `changes` in order, all or none (Kafka validates every operation first); with
    /// `validate_only`, only checks them.
    pub fn apply(&self, changes: &[Change], validate_only: bool) -> Result<(), LoggerError> {
        let mut guard = self.levels.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = guard.clone();
        for (logger, level) in changes {
            let target = target_of(logger);
            if logger != ROOT_LOGGER && !next.exists(&target) {
                return Err(LoggerError::UnknownLogger(logger.clone()));
            }
            match level {
                Some(level) => {
                    let Some(level) = kafka_level(level) else {
                        return Err(LoggerError::InvalidLevel { logger: logger.clone(), level: level.clone() });
                    };
                    if logger == ROOT_LOGGER {
                        next.root = level;
                    } else {
                        next.targets.insert(target, level);
                    }
                }
                None if logger == ROOT_LOGGER => return Err(LoggerError::RemoveRoot),
                None => {
                    next.targets.remove(&target);
                }
            }
        }
        if validate_only || next == *guard {
            return Ok(());
        }
        (self.reload)(&next.spec()).map_err(LoggerError::Reload)?;
        tracing::info!(filter = %next.spec(), "log levels changed");
        *guard = next;
        Ok(())
    }
}

static GLOBAL: OnceLock<LogLevels> = OnceLock::new();

/// Makes `levels` the process's (once, by `main.rs`; later calls are ignored).
pub fn install(levels: LogLevels) {
    let _ = GLOBAL.set(levels);
}

/// The process's log levels, if `main.rs` installed them (not in tests that embed a broker).
pub fn global() -> Option<&'static LogLevels> {
    GLOBAL.get()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn levels() -> (LogLevels, Arc<Mutex<Vec<String>>>) {
        let installed = Arc::new(Mutex::new(Vec::new()));
        let sink = installed.clone();
        let l = LogLevels::new(DEFAULT_FILTER, move |spec| {
            sink.lock().expect("lock").push(spec.to_string());
            Ok(())
        })
        .expect("default filter parses");
        (l, installed)
    }

    #[test]
    fn lists_root_and_targets_with_effective_levels() {
        let (l, _) = levels();
        let got = l.loggers();
        assert_eq!(got[0], ("root".to_string(), "INFO".to_string()));
        assert!(got.contains(&("openraft".to_string(), "WARN".to_string())));
        assert!(got.contains(&("skiff_controller".to_string(), "INFO".to_string())));
        assert!(LogLevels::new("info,[span]=debug", |_| Ok(())).is_none(), "span directives are not loggers");
    }

    #[test]
    fn set_and_delete_rebuild_the_filter() {
        let (l, installed) = levels();
        l.apply(&[("skiff.handler".into(), Some("debug".into()))], false).expect("set");
        l.apply(&[("openraft".into(), None)], false).expect("delete");
        assert_eq!(installed.lock().expect("lock").last().map(String::as_str), Some("info,skiff::handler=debug"));
        assert!(l.loggers().contains(&("openraft".to_string(), "INFO".to_string())), "follows root again");
        l.apply(&[("root".into(), Some("FATAL".into()))], true).expect("dry run");
        assert_eq!(installed.lock().expect("lock").len(), 2, "a dry run installs nothing");
    }

    #[test]
    fn kafka_refusals() {
        let (l, installed) = levels();
        assert_eq!(
            l.apply(&[("nope".into(), Some("INFO".into()))], false),
            Err(LoggerError::UnknownLogger("nope".into()))
        );
        assert!(matches!(
            l.apply(&[("skiff".into(), Some("LOUD".into()))], false),
            Err(LoggerError::InvalidLevel { .. })
        ));
        assert_eq!(l.apply(&[("root".into(), None)], false), Err(LoggerError::RemoveRoot));
        // All or none: a valid change before a refused one is not applied.
        let both = [("skiff".into(), Some("DEBUG".into())), ("nope".into(), Some("INFO".into()))];
        assert!(l.apply(&both, false).is_err());
        assert!(installed.lock().expect("lock").is_empty());
    }
}
