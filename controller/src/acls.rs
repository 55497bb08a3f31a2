//! Access control lists (Kafka's ACL model, KIP-290 prefixed patterns): who may do which
//! operation on which resource, from which host. The controller stores the bindings; brokers
//! read them from the metadata image and decide (`src/security/authorizer.rs`).
//!
//! The broker resolves CreateAcls and DeleteAcls filters against its image and submits exact
//! bindings ([`AclChange`]); `apply` is total and idempotent: creating a binding that exists and
//! deleting one that is gone are no-ops, as in Kafka.
//!
//! Wire codes are Kafka's (`ResourceType`, `PatternType`, `AclOperation`, `AclPermissionType`
//! in `org.apache.kafka.common`), so nothing here depends on the protocol crate.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Kafka's name of the one CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// A literal resource name or principal/host that matches every name.
pub const WILDCARD: &str = "*";

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $code:literal, $text:literal;)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name { $($variant),* }

        impl $name {
            pub const ALL_VALUES: &'static [$name] = &[$($name::$variant),*];

            /// Kafka's wire code.
            pub fn code(self) -> i8 {
                match self { $($name::$variant => $code),* }
            }

            /// `None` for a code Kafka does not define (Kafka's UNKNOWN).
            pub fn from_code(code: i8) -> Option<Self> {
                match code { $($code => Some($name::$variant),)* _ => None }
            }

            /// Kafka's name, as `kafka-acls.sh` prints it.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

wire_enum!(
    /// `ResourceType`. `Any` is only valid in filters.
    ResourceType {
        Any = 1, "ANY";
        Topic = 2, "TOPIC";
        Group = 3, "GROUP";
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
        DelegationToken = 6, "DELEGATION_TOKEN";
        User = 7, "USER";
    }
);

wire_enum!(
    /// `PatternType`. `Any` and `Match` are only valid in filters.
    PatternType {
        Any = 1, "ANY";
        Match = 2, "MATCH";
        Literal = 3, "LITERAL";
        Prefixed = 4, "PREFIXED";
    }
);

wire_enum!(
    /// `AclOperation`. `Any` is only valid in filters; `All` grants or denies every operation.
    AclOperation {
        Any = 1, "ANY";
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
        CreateTokens = 13, "CREATE_TOKENS";
        DescribeTokens = 14, "DESCRIBE_TOKENS";
        TwoPhaseCommit = 15, "TWO_PHASE_COMMIT";
    }
);

wire_enum!(
    /// `AclPermissionType`. `Any` is only valid in filters.
    AclPermission {
        Any = 1, "ANY";
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
);

impl AclOperation {
    /// The operations an ALLOW binding for `self` also grants (Kafka's implied operations):
    /// DESCRIBE by READ, WRITE, DELETE and ALTER; DESCRIBE_CONFIGS by ALTER_CONFIGS. A DENY
    /// binding implies nothing: it refuses exactly its operation (or every one, for ALL).
    pub fn allow_grants(self, wanted: AclOperation) -> bool {
        self == wanted
            || self == AclOperation::All
            || (wanted == AclOperation::Describe
                && matches!(
                    self,
                    AclOperation::Read | AclOperation::Write | AclOperation::Delete | AclOperation::Alter
                ))
            || (wanted == AclOperation::DescribeConfigs && self == AclOperation::AlterConfigs)
    }
}

/// One ACL: `principal` is allowed or denied `operation` on the resources matched by
/// (`resource_type`, `name`, `pattern`) when connecting from `host`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern: PatternType,
    /// `User:name`, or `User:*` for every user.
    pub principal: String,
    /// An IP address, or `*`.
    pub host: String,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

/// Why a binding cannot be stored: Kafka answers these INVALID_REQUEST with this message.
pub fn validate(b: &AclBinding) -> Result<(), String> {
    if b.resource_type == ResourceType::Any {
        return Err("Invalid resourceType ANY".into());
    }
    if !matches!(b.pattern, PatternType::Literal | PatternType::Prefixed) {
        return Err(format!("Invalid patternType {}", b.pattern));
    }
    if b.operation == AclOperation::Any {
        return Err("Invalid operation ANY".into());
    }
    if b.permission == AclPermission::Any {
        return Err("Invalid permissionType ANY".into());
    }
    if b.name.is_empty() {
        return Err("Resource name should not be empty".into());
    }
    if b.resource_type == ResourceType::Cluster && b.name != CLUSTER_NAME {
        return Err(format!("The only valid name for the CLUSTER resource is {CLUSTER_NAME}"));
    }
    match b.principal.split_once(':') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
        _ => return Err(format!("Could not parse principal from `{}` (no colon is found)", b.principal)),
    }
    if b.host.is_empty() {
        return Err("Host should not be empty".into());
    }
    Ok(())
}

/// Kafka's `AclBindingFilter`: `None` fields match anything; `Any` codes match anything;
/// `PatternType::Match` matches every pattern that would apply to the named resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: ResourceType,
    pub name: Option<String>,
    pub pattern: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

impl AclFilter {
    /// Whether `b` is selected (Kafka's `AclBindingFilter.matches`).
    pub fn matches(&self, b: &AclBinding) -> bool {
        let resource = (self.resource_type == ResourceType::Any || self.resource_type == b.resource_type)
            && match (&self.name, self.pattern) {
                (None, PatternType::Any | PatternType::Match) => true,
                (None, p) => p == b.pattern,
                (Some(n), PatternType::Any) => *n == b.name,
                (Some(n), PatternType::Match) => match b.pattern {
                    PatternType::Literal => *n == b.name || b.name == WILDCARD,
                    PatternType::Prefixed => n.starts_with(b.name.as_str()),
                    _ => false,
                },
                (Some(n), p) => p == b.pattern && *n == b.name,
            };
        resource
            && self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && (self.operation == AclOperation::Any || self.operation == b.operation)
            && (self.permission == AclPermission::Any || self.permission == b.permission)
    }
}

/// CreateAcls and DeleteAcls as exact bindings, applied together (deletions first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AclChange {
    pub creations: Vec<AclBinding>,
    pub deletions: Vec<AclBinding>,
}

/// Every stored binding, ordered by resource type first so one type's bindings are a range.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AclState {
    pub(crate) bindings: BTreeSet<AclBinding>,
}

impl AclState {
    pub(crate) fn apply(&mut self, change: &AclChange) {
        for d in &change.deletions {
            self.bindings.remove(d);
        }
        // Invalid bindings never reach the log (the broker validates); skipping them here keeps
        // `apply` total should one ever arrive.
        for c in change.creations.iter().filter(|c| validate(c).is_ok()) {
            self.bindings.insert(c.clone());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &AclBinding> {
        self.bindings.iter()
    }

    /// The bindings on resources of `resource_type`.
    pub fn of_type(&self, resource_type: ResourceType) -> impl Iterator<Item = &AclBinding> {
        self.bindings.iter().filter(move |b| b.resource_type == resource_type)
    }

    pub fn matching<'a>(&'a self, filter: &'a AclFilter) -> impl Iterator<Item = &'a AclBinding> + 'a {
        self.bindings.iter().filter(move |b| filter.matches(b))
    }
}

impl FromIterator<AclBinding> for AclState {
    /// The valid bindings of `iter` (tests, and brokers building a view).
    fn from_iter<I: IntoIterator<Item = AclBinding>>(iter: I) -> Self {
        Self { bindings: iter.into_iter().filter(|b| validate(b).is_ok()).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(rt: ResourceType, name: &str, pattern: PatternType, op: AclOperation) -> AclBinding {
        AclBinding {
            resource_type: rt,
            name: name.into(),
            pattern,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: op,
            permission: AclPermission::Allow,
        }
    }

    fn filter(name: Option<&str>, pattern: PatternType) -> AclFilter {
        AclFilter {
            resource_type: ResourceType::Topic,
            name: name.map(Into::into),
            pattern,
            principal: None,
            host: None,
            operation: AclOperation::Any,
            permission: AclPermission::Any,
        }
    }

    #[test]
    fn codes_round_trip_and_unknown_is_none() {
        for op in AclOperation::ALL_VALUES {
            assert_eq!(AclOperation::from_code(op.code()), Some(*op));
        }
        assert_eq!(AclOperation::from_code(0), None, "UNKNOWN");
        assert_eq!(ResourceType::from_code(2), Some(ResourceType::Topic));
        assert_eq!(PatternType::from_code(4), Some(PatternType::Prefixed));
        assert_eq!(AclPermission::from_code(3), Some(AclPermission::Allow));
    }

    #[test]
    fn implied_operations_are_kafkas() {
        use AclOperation::*;
        for op in [Read, Write, Delete, Alter, Describe, All] {
            assert!(op.allow_grants(Describe), "{op} implies DESCRIBE");
        }
        for op in [Create, ClusterAction, DescribeConfigs, IdempotentWrite] {
            assert!(!op.allow_grants(Describe), "{op} does not imply DESCRIBE");
        }
        assert!(AlterConfigs.allow_grants(DescribeConfigs));
        assert!(!DescribeConfigs.allow_grants(AlterConfigs));
        assert!(!Read.allow_grants(Write));
        assert!(All.allow_grants(IdempotentWrite));
    }

    #[test]
    fn filters_match_as_kafka_defines() {
        let lit = binding(ResourceType::Topic, "orders", PatternType::Literal, AclOperation::Read);
        let star = binding(ResourceType::Topic, "*", PatternType::Literal, AclOperation::Read);
        let pre = binding(ResourceType::Topic, "ord", PatternType::Prefixed, AclOperation::Read);
        let other = binding(ResourceType::Topic, "pay", PatternType::Prefixed, AclOperation::Read);
        let group = binding(ResourceType::Group, "orders", PatternType::Literal, AclOperation::Read);
        let sel = |f: &AclFilter| {
            [&lit, &star, &pre, &other, &group].into_iter().filter(|b| f.matches(b)).cloned().collect::<Vec<_>>()
        };
        assert_eq!(sel(&filter(Some("orders"), PatternType::Match)), vec![lit.clone(), star.clone(), pre.clone()]);
        assert_eq!(sel(&filter(Some("orders"), PatternType::Any)), vec![lit.clone()]);
        assert_eq!(sel(&filter(Some("orders"), PatternType::Literal)), vec![lit.clone()]);
        assert_eq!(sel(&filter(Some("ord"), PatternType::Prefixed)), vec![pre.clone()]);
        assert_eq!(sel(&filter(None, PatternType::Prefixed)), vec![pre.clone(), other.clone()]);
        assert_eq!(sel(&filter(None, PatternType::Any)).len(), 4, "every topic binding, no group");
        let any_type = AclFilter { resource_type: ResourceType::Any, ..filter(None, PatternType::Any) };
        assert_eq!(sel(&any_type).len(), 5);
        let bob = AclFilter { principal: Some("User:bob".into()), ..filter(None, PatternType::Any) };
        assert!(sel(&bob).is_empty());
        let deny = AclFilter { permission: AclPermission::Deny, ..filter(None, PatternType::Any) };
        assert!(sel(&deny).is_empty());
    }

    #[test]
    fn validation_and_idempotent_apply() {
        let ok = binding(ResourceType::Topic, "t", PatternType::Literal, AclOperation::Read);
        assert!(validate(&ok).is_ok());
        for bad in [
            AclBinding { pattern: PatternType::Match, ..ok.clone() },
            AclBinding { resource_type: ResourceType::Any, ..ok.clone() },
            AclBinding { operation: AclOperation::Any, ..ok.clone() },
            AclBinding { principal: "alice".into(), ..ok.clone() },
            AclBinding { resource_type: ResourceType::Cluster, name: "c".into(), ..ok.clone() },
        ] {
            assert!(validate(&bad).is_err(), "{bad:?}");
        }
        let mut s = AclState::default();
        let add = AclChange { creations: vec![ok.clone(), ok.clone()], deletions: vec![] };
        s.apply(&add);
        s.apply(&add);
        assert_eq!(s.len(), 1);
        s.apply(&AclChange { creations: vec![], deletions: vec![ok.clone(), ok] });
        assert!(s.is_empty());
        let json = serde_json::to_string(&s).expect("json");
        assert_eq!(serde_json::from_str::<AclState>(&json).expect("back"), s);
    }
}
