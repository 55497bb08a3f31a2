//! Client quotas (Kafka's KIP-546 model): per entity, a set of quota values by key.
//!
//! An entity is a user, a client id, both, or an IP address, each either named or `<default>`
//! (Kafka's `/config/users/<user>/clients/<client-id>` ... `/config/clients/<default>`,
//! `/config/ips/<ip>`). The controller only stores them: the broker validates an
//! AlterClientQuotas request against Kafka's rules before submitting, and resolves which entity
//! applies to a connection (`src/quota/`). `apply` is total: removing an absent key is a no-op,
//! and an entity left without any value is forgotten, as Kafka's image forgets it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One component of an entity: a name, or the `<default>` entity (a null name on the wire).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntityName {
    Default,
    Name(String),
}

impl EntityName {
    pub fn from_wire(name: Option<&str>) -> Self {
        name.map_or(Self::Default, |n| Self::Name(n.to_string()))
    }

    pub fn as_wire(&self) -> Option<&str> {
        match self {
            Self::Default => None,
            Self::Name(n) => Some(n),
        }
    }
}

/// A quota entity: which components it has (`None`: the component is absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaEntity {
    pub user: Option<EntityName>,
    pub client_id: Option<EntityName>,
    pub ip: Option<EntityName>,
}

/// Kafka's entity type names (`ClientQuotaEntity.USER` etc.).
pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
pub const IP: &str = "ip";

impl QuotaEntity {
    /// `(entity type, name)` of each present component, in Kafka's order.
    pub fn components(&self) -> Vec<(&'static str, Option<&str>)> {
        let mut out = Vec::with_capacity(2);
        if let Some(u) = &self.user {
            out.push((USER, u.as_wire()));
        }
        if let Some(c) = &self.client_id {
            out.push((CLIENT_ID, c.as_wire()));
        }
        if let Some(i) = &self.ip {
            out.push((IP, i.as_wire()));
        }
        out
    }

    pub fn component(&self, entity_type: &str) -> Option<&EntityName> {
        match entity_type {
            USER => self.user.as_ref(),
            CLIENT_ID => self.client_id.as_ref(),
            IP => self.ip.as_ref(),
            _ => None,
        }
    }
}

/// AlterClientQuotas: per entity, keys to set (`Some`) and to remove (`None`), applied together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaChange {
    pub alterations: Vec<QuotaAlteration>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaAlteration {
    pub entity: QuotaEntity,
    pub ops: Vec<(String, Option<f64>)>,
}

/// Every entity's quota values. Stored as a list in snapshots (JSON maps need string keys).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Vec<(QuotaEntity, BTreeMap<String, f64>)>", into = "Vec<(QuotaEntity, BTreeMap<String, f64>)>")]
pub struct QuotasState {
    entities: BTreeMap<QuotaEntity, BTreeMap<String, f64>>,
}

impl From<Vec<(QuotaEntity, BTreeMap<String, f64>)>> for QuotasState {
    fn from(v: Vec<(QuotaEntity, BTreeMap<String, f64>)>) -> Self {
        Self { entities: v.into_iter().collect() }
    }
}

impl From<QuotasState> for Vec<(QuotaEntity, BTreeMap<String, f64>)> {
    fn from(s: QuotasState) -> Self {
        s.entities.into_iter().collect()
    }
}

impl QuotasState {
    pub(crate) fn apply(&mut self, change: &QuotaChange) {
        for a in &change.alterations {
            let values = self.entities.entry(a.entity.clone()).or_default();
            for (key, value) in &a.ops {
                match value {
                    Some(v) => {
                        values.insert(key.clone(), *v);
                    }
                    None => {
                        values.remove(key);
                    }
                }
            }
            if values.is_empty() {
                self.entities.remove(&a.entity);
            }
        }
    }

    /// [`QuotasState::apply`] for tests of the broker's resolution.
    #[doc(hidden)]
    pub fn apply_for_test(&mut self, change: &QuotaChange) {
        self.apply(change)
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// The value of `key` set on exactly `entity`.
    pub fn value(&self, entity: &QuotaEntity, key: &str) -> Option<f64> {
        self.entities.get(entity).and_then(|v| v.get(key)).copied()
    }

    pub fn entities(&self) -> impl Iterator<Item = (&QuotaEntity, &BTreeMap<String, f64>)> {
        self.entities.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_remove_forget_and_snapshot_round_trip() {
        let e =
            QuotaEntity { user: Some(EntityName::Name("u".into())), client_id: Some(EntityName::Default), ip: None };
        let mut s = QuotasState::default();
        s.apply(&QuotaChange {
            alterations: vec![QuotaAlteration {
                entity: e.clone(),
                ops: vec![("producer_byte_rate".into(), Some(1024.0)), ("request_percentage".into(), Some(50.0))],
            }],
        });
        assert_eq!(s.value(&e, "producer_byte_rate"), Some(1024.0));
        let json = serde_json::to_string(&s).expect("json");
        assert_eq!(serde_json::from_str::<QuotasState>(&json).expect("back"), s);
        s.apply(&QuotaChange {
            alterations: vec![QuotaAlteration {
                entity: e.clone(),
                ops: vec![("producer_byte_rate".into(), None), ("request_percentage".into(), None), ("x".into(), None)],
            }],
        });
        assert!(s.is_empty(), "an entity without values is forgotten");
        assert_eq!(e.components(), vec![(USER, Some("u")), (CLIENT_ID, None)]);
    }
}
