//! The authorizer: may this principal, from this address, do this operation on this resource?
//! (Kafka's `StandardAuthorizer`, docs/security.md "Authorization").
//!
//! Every check a handler needs goes through [`Authorizer::authorize`] (the per-API table of
//! which operation on which resource is `handler/authorize.rs`); nothing else decides access.
//!
//! The decision ([`decide`]) is Kafka's:
//! 1. a super user may do anything;
//! 2. the bindings that apply are those on the resource's type whose pattern matches its name
//!    (LITERAL equal or `*`, PREFIXED a prefix), whose principal is the caller's or `User:*`
//!    and whose host is the caller's address or `*`;
//! 3. a DENY binding for the operation (or ALL) refuses, whatever allows it;
//! 4. an ALLOW binding for the operation, ALL, or an operation implying it (READ, WRITE, DELETE
//!    and ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS) allows;
//! 5. otherwise the answer is `allow.everyone.if.no.acl.found` when no binding at all (for any
//!    principal) is on the resource, and refused when some are.
//!
//! Denials are audited: a rate-limited WARN line (principal, client address, resource,
//! operation, API) and `skiff_authorization_denied_total{api,resource_type}`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use kafka_protocol::messages::ApiKey;
use skiff_controller::acls::{AclOperation, AclPermission, AclState, PatternType, ResourceType, WILDCARD};
use tracing::warn;

use super::{Principal, RateLimitedLog};

/// Denial log lines per minute, whatever their number (a client retrying a refused request
/// in a loop must not fill the disk).
pub const DENIAL_LOG_LINES_PER_MINUTE: u32 = 60;

/// `super.users` and `allow.everyone.if.no.acl.found`, resolved at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerSettings {
    /// Principals (`User:name`) that bypass ACLs.
    pub super_users: BTreeSet<String>,
    /// Whether a resource without any binding is open to everyone.
    pub allow_everyone_if_no_acl_found: bool,
}

/// Who is asking: the connection's principal and address, and the API being served.
#[derive(Debug, Clone, Copy)]
pub struct Session<'a> {
    pub principal: &'a Principal,
    pub peer: SocketAddr,
    pub api: ApiKey,
}

/// One resource to check: its type and name (`kafka-cluster` for the cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource<'a> {
    pub resource_type: ResourceType,
    pub name: &'a str,
}

/// The authorizer shared by every connection of a broker.
pub struct Authorizer {
    settings: AuthorizerSettings,
    audit: RateLimitedLog,
    /// Denials by (API name, resource type name): `skiff_authorization_denied_total`.
    denied: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl Default for Authorizer {
    /// Open (no super users, everyone allowed where no ACL is set): a PLAINTEXT-only dev setup.
    fn default() -> Self {
        Self::new(AuthorizerSettings { super_users: BTreeSet::new(), allow_everyone_if_no_acl_found: true })
    }
}

impl Authorizer {
    pub fn new(settings: AuthorizerSettings) -> Self {
        Self { settings, audit: RateLimitedLog::new(DENIAL_LOG_LINES_PER_MINUTE), denied: Mutex::new(BTreeMap::new()) }
    }

    pub fn settings(&self) -> &AuthorizerSettings {
        &self.settings
    }

    /// Whether `session` may do `op` on `resource` given `acls`; a denial is audited when
    /// `audit` (listings that silently leave out what is not allowed, as Kafka's Metadata and
    /// ListGroups do, pass false).
    pub fn authorize(
        &self,
        acls: &AclState,
        session: &Session<'_>,
        op: AclOperation,
        resource: Resource<'_>,
        audit: bool,
        now_ms: i64,
    ) -> bool {
        let principal = session.principal.to_string();
        if self.settings.super_users.contains(&principal) {
            return true;
        }
        let allowed =
            decide(acls, &principal, session.peer.ip(), op, resource, self.settings.allow_everyone_if_no_acl_found);
        if !allowed && audit {
            self.record_denial(session, op, resource, now_ms);
        }
        allowed
    }

    /// Kafka's `authorizeByResourceType`: whether `session` may do `op` on at least one
    /// resource of `resource_type` (InitProducerId without a transactional id accepts WRITE on
    /// any topic instead of IDEMPOTENT_WRITE on the cluster).
    pub fn authorize_any(
        &self,
        acls: &AclState,
        session: &Session<'_>,
        op: AclOperation,
        resource_type: ResourceType,
    ) -> bool {
        let principal = session.principal.to_string();
        if self.settings.super_users.contains(&principal) {
            return true;
        }
        let host = session.peer.ip().to_string();
        let applies = |b: &&skiff_controller::acls::AclBinding| {
            (b.principal == principal || b.principal == "User:*") && (b.host == WILDCARD || b.host == host)
        };
        let mut bindings = acls.of_type(resource_type).peekable();
        if bindings.peek().is_none() {
            return self.settings.allow_everyone_if_no_acl_found;
        }
        let bindings: Vec<_> = bindings.filter(applies).collect();
        // A DENY on every resource of the type (literal `*`) refuses everything.
        let denied_everywhere = bindings.iter().any(|b| {
            b.permission == AclPermission::Deny
                && b.pattern == PatternType::Literal
                && b.name == WILDCARD
                && (b.operation == op || b.operation == AclOperation::All)
        });
        !denied_everywhere
            && bindings.iter().any(|b| {
                b.permission == AclPermission::Allow
                    && b.operation.allow_grants(op)
                    // An allowed name that a DENY on the same pattern takes back grants nothing.
                    && !bindings.iter().any(|d| {
                        d.permission == AclPermission::Deny
                            && d.pattern == b.pattern
                            && d.name == b.name
                            && (d.operation == op || d.operation == AclOperation::All)
                    })
            })
    }

    fn record_denial(&self, session: &Session<'_>, op: AclOperation, resource: Resource<'_>, now_ms: i64) {
        {
            let mut denied = self.denied.lock().unwrap_or_else(|e| e.into_inner());
            *denied.entry((format!("{:?}", session.api), resource.resource_type.name())).or_default() += 1;
        }
        if let Some(suppressed) = self.audit.admit(now_ms) {
            warn!(
                principal = %session.principal,
                client = %session.peer,
                operation = op.name(),
                resource_type = resource.resource_type.name(),
                resource = resource.name,
                api = ?session.api,
                suppressed,
                "authorization denied"
            );
        }
    }

    /// `skiff_authorization_denied_total{api,resource_type}` in Prometheus text.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write;
        let mut out = String::from(
            "# HELP skiff_authorization_denied_total Requests (or parts of requests) refused by the authorizer, by API and resource type.\n# TYPE skiff_authorization_denied_total counter\n",
        );
        for (api, rt, n) in self.denials() {
            let _ = writeln!(out, "skiff_authorization_denied_total{{api=\"{api}\",resource_type=\"{rt}\"}} {n}");
        }
        out
    }

    /// `(api, resource_type, denials)` for `/metrics`.
    pub fn denials(&self) -> Vec<(String, &'static str, u64)> {
        let denied = self.denied.lock().unwrap_or_else(|e| e.into_inner());
        denied.iter().map(|((api, rt), n)| (api.clone(), *rt, *n)).collect()
    }
}

/// The decision for a principal that is not a super user (steps 2-5 of the module docs).
pub fn decide(
    acls: &AclState,
    principal: &str,
    host: IpAddr,
    op: AclOperation,
    resource: Resource<'_>,
    allow_everyone_if_no_acl_found: bool,
) -> bool {
    let host = host.to_string();
    let mut resource_has_acls = false;
    let mut allowed = false;
    for b in acls.of_type(resource.resource_type) {
        let on_resource = match b.pattern {
            PatternType::Literal => b.name == resource.name || b.name == WILDCARD,
            PatternType::Prefixed => resource.name.starts_with(b.name.as_str()),
            PatternType::Any | PatternType::Match => false,
        };
        if !on_resource {
            continue;
        }
        resource_has_acls = true;
        if !(b.principal == principal || b.principal == "User:*") || !(b.host == WILDCARD || b.host == host) {
            continue;
        }
        match b.permission {
            AclPermission::Deny if b.operation == op || b.operation == AclOperation::All => return false,
            AclPermission::Allow if b.operation.allow_grants(op) => allowed = true,
            _ => {}
        }
    }
    if resource_has_acls { allowed } else { allow_everyone_if_no_acl_found }
}

#[cfg(test)]
mod tests {
    use skiff_controller::acls::AclBinding;

    use super::*;

    fn acl(
        rt: ResourceType,
        name: &str,
        pattern: PatternType,
        who: &str,
        op: AclOperation,
        perm: AclPermission,
    ) -> AclBinding {
        AclBinding {
            resource_type: rt,
            name: name.into(),
            pattern,
            principal: who.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    fn state(bindings: Vec<AclBinding>) -> AclState {
        bindings.into_iter().collect()
    }

    fn topic(name: &str) -> Resource<'_> {
        Resource { resource_type: ResourceType::Topic, name }
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn literal_prefixed_wildcard_and_implied() {
        use AclOperation::*;
        use AclPermission::*;
        let s = state(vec![
            acl(ResourceType::Topic, "orders", PatternType::Literal, "User:alice", Read, Allow),
            acl(ResourceType::Topic, "pay-", PatternType::Prefixed, "User:alice", Write, Allow),
            acl(ResourceType::Topic, "*", PatternType::Literal, "User:*", Describe, Allow),
            acl(ResourceType::Topic, "audit", PatternType::Literal, "User:alice", AlterConfigs, Allow),
        ]);
        let d = |who: &str, op, name| decide(&s, who, LOCAL, op, topic(name), false);
        assert!(d("User:alice", Read, "orders"));
        assert!(!d("User:alice", Write, "orders"), "READ does not grant WRITE");
        assert!(d("User:alice", Write, "pay-eu"), "prefixed");
        assert!(!d("User:alice", Write, "pay"), "a shorter name is not under the prefix");
        assert!(d("User:bob", Describe, "anything"), "User:* on the * literal");
        assert!(!d("User:bob", Read, "orders"));
        assert!(d("User:alice", DescribeConfigs, "audit"), "ALTER_CONFIGS implies DESCRIBE_CONFIGS");
        // No binding on groups at all: allow.everyone.if.no.acl.found decides.
        let g = Resource { resource_type: ResourceType::Group, name: "g" };
        assert!(!decide(&s, "User:bob", LOCAL, Read, g, false));
        assert!(decide(&s, "User:bob", LOCAL, Read, g, true));
        // A binding on the resource for someone else: refused even when everyone is allowed.
        assert!(!decide(&s, "User:bob", LOCAL, Read, topic("orders"), true));
    }

    #[test]
    fn deny_wins_and_hosts_match() {
        use AclOperation::*;
        use AclPermission::*;
        let mut deny_host = acl(ResourceType::Topic, "t", PatternType::Literal, "User:alice", Read, Deny);
        deny_host.host = "10.0.0.9".into();
        let s = state(vec![
            acl(ResourceType::Topic, "*", PatternType::Literal, "User:alice", All, Allow),
            acl(ResourceType::Topic, "secret", PatternType::Prefixed, "User:alice", Read, Deny),
            deny_host,
        ]);
        let d = |ip: IpAddr, op, name| decide(&s, "User:alice", ip, op, topic(name), false);
        assert!(d(LOCAL, Read, "orders"));
        assert!(!d(LOCAL, Read, "secret-plans"), "deny overrides allow");
        assert!(d(LOCAL, Write, "secret-plans"), "a DENY of READ refuses only READ");
        assert!(d(LOCAL, Describe, "secret-plans"), "a DENY implies nothing");
        assert!(d(LOCAL, Read, "t"), "the DENY is for another host");
        assert!(!d("10.0.0.9".parse().expect("ip"), Read, "t"));
    }

    #[test]
    fn super_users_and_any_resource_of_a_type() {
        use AclOperation::*;
        let s =
            state(vec![acl(ResourceType::Topic, "x", PatternType::Literal, "User:alice", Write, AclPermission::Allow)]);
        let a = Authorizer::new(AuthorizerSettings {
            super_users: ["User:root".to_string()].into(),
            allow_everyone_if_no_acl_found: false,
        });
        let peer: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let session = |p: &'static Principal| Session { principal: p, peer, api: ApiKey::Produce };
        static ROOT: std::sync::LazyLock<Principal> = std::sync::LazyLock::new(|| Principal::user("root"));
        static ALICE: std::sync::LazyLock<Principal> = std::sync::LazyLock::new(|| Principal::user("alice"));
        static BOB: std::sync::LazyLock<Principal> = std::sync::LazyLock::new(|| Principal::user("bob"));
        assert!(a.authorize(&s, &session(&ROOT), Delete, topic("x"), true, 0));
        assert!(!a.authorize(&s, &session(&BOB), Write, topic("x"), true, 0));
        assert!(a.authorize_any(&s, &session(&ALICE), Write, ResourceType::Topic));
        assert!(!a.authorize_any(&s, &session(&BOB), Write, ResourceType::Topic));
        assert_eq!(a.denials(), vec![("Produce".to_string(), "TOPIC", 1)]);
    }
}
