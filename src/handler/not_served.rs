//! Requests for what Skiff does not serve: an API or version it does not advertise, transactions
//! (not built yet), and the like. Each is answered at once with the protocol's non-retriable
//! error (never a retriable one that a client would repeat until its own timeout), and the
//! broker says why at INFO the first time per client, so an operator can tell a user what failed
//! without the log growing with every retry (the bounds are `log_limit.rs`'s: once per
//! (client, feature), at most 60 lines a minute; the lines suppressed by that cap are counted
//! in the next line written).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tracing::info;

use super::log_limit::OncePerKey;

/// Who asked: the request header's client id (may be empty) and the connection's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Asker {
    pub client_id: String,
    pub ip: IpAddr,
}

/// The per-client first-time log of refused features.
#[derive(Default)]
pub struct NotServed {
    logged: OncePerKey<(Asker, String)>,
    /// Requests refused as not served, logged or not.
    refused: AtomicU64,
}

impl NotServed {
    /// Records that `asker` was refused `feature` (a short stable name, e.g. "transactions" or
    /// "Produce v2") because of `why`, at wall time `now_ms`. Logs at INFO unless this pair was
    /// logged before or the per-minute cap is reached; returns whether it logged.
    pub fn report(&self, now_ms: i64, asker: &Asker, feature: &str, why: &str) -> bool {
        self.refused.fetch_add(1, Relaxed);
        let Some(suppressed) = self.logged.admit(now_ms, (asker.clone(), feature.to_string())) else {
            return false;
        };
        info!(
            client_id = %asker.client_id,
            client = %asker.ip,
            feature,
            suppressed_before = suppressed,
            "refused a request for something Skiff does not serve: {why} (logged once per client)"
        );
        true
    }

    /// Requests refused as not served since start.
    pub fn refused_total(&self) -> u64 {
        self.refused.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asker(id: &str) -> Asker {
        Asker { client_id: id.into(), ip: IpAddr::from([127, 0, 0, 1]) }
    }

    #[test]
    fn logs_once_per_client_and_feature() {
        let n = NotServed::default();
        assert!(n.report(0, &asker("a"), "transactions", "why"));
        assert!(!n.report(1, &asker("a"), "transactions", "why"), "second time is quiet");
        assert!(n.report(2, &asker("a"), "api", "why"), "another feature is logged");
        assert!(n.report(3, &asker("b"), "transactions", "why"), "another client is logged");
        assert_eq!(n.refused_total(), 4);
    }
}
