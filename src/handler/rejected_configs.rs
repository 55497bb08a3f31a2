//! The INFO log of configs a client was refused by CreateTopics, AlterConfigs or
//! IncrementalAlterConfigs: who asked, the resource, the config, its value and why, so an
//! operator can tell why an application (Kafka Connect, Streams, a schema registry) failed to
//! start without that application's own log. Bounded by `log_limit.rs`: once per (client,
//! resource, config, value), at most 60 lines a minute; the lines suppressed by that cap are
//! counted in the next line written.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tracing::info;

use super::log_limit::OncePerKey;
use super::not_served::Asker;
use crate::broker::topic_config::InvalidConfig;

/// The rate-limited log of rejected configs.
#[derive(Default)]
pub struct RejectedConfigs {
    logged: OncePerKey<(Asker, String)>,
    /// Configs rejected since start, logged or not.
    rejected: AtomicU64,
}

impl RejectedConfigs {
    /// Records that `asker`'s `api` request (e.g. "CreateTopics") was refused `config` on
    /// `resource` (e.g. "topic orders") at wall time `now_ms`; logs at INFO unless the same was
    /// logged before or the per-minute cap is reached. Returns whether it logged.
    pub fn report(&self, now_ms: i64, asker: &Asker, api: &str, resource: &str, config: &InvalidConfig) -> bool {
        self.rejected.fetch_add(1, Relaxed);
        let key = format!("{resource}\0{}\0{}", config.name, config.value);
        let Some(suppressed) = self.logged.admit(now_ms, (asker.clone(), key)) else {
            return false;
        };
        info!(
            client_id = %asker.client_id,
            client = %asker.ip,
            api,
            resource,
            name = %config.name,
            value = %config.value,
            suppressed_before = suppressed,
            "rejected a config: {} (logged once per client, resource and value)",
            config.message
        );
        true
    }

    /// Configs rejected since start.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn asker(id: &str) -> Asker {
        Asker { client_id: id.into(), ip: IpAddr::from([127, 0, 0, 1]) }
    }

    fn invalid(name: &str, value: &str) -> InvalidConfig {
        InvalidConfig { name: name.into(), value: value.into(), message: "why".into() }
    }

    #[test]
    fn logs_once_per_client_resource_and_value() {
        let r = RejectedConfigs::default();
        let ratio = invalid("min.cleanable.dirty.ratio", "2");
        assert!(r.report(0, &asker("a"), "CreateTopics", "topic t", &ratio));
        assert!(!r.report(1, &asker("a"), "CreateTopics", "topic t", &ratio), "a retry is quiet");
        assert!(!r.report(1, &asker("a"), "AlterConfigs", "topic t", &ratio), "whichever request");
        assert!(r.report(2, &asker("a"), "CreateTopics", "topic u", &ratio), "another resource is logged");
        assert!(r.report(3, &asker("a"), "CreateTopics", "topic t", &invalid("min.cleanable.dirty.ratio", "3")));
        assert!(r.report(4, &asker("b"), "CreateTopics", "topic t", &ratio), "another client is logged");
        assert_eq!(r.rejected_total(), 6);
    }
}
