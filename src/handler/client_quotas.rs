//! DescribeClientQuotas and AlterClientQuotas (KIP-546), as Kafka's controller answers them
//! (`ClientQuotasImage.describe`, `ClientQuotaControlManager`): the same validation, messages
//! and codes. The values are stored in controller state (`controller/src/quotas.rs`) and
//! enforced by every broker (`quota/`).
//!
//! AlterClientQuotas validates each entry against Kafka's rules and submits the valid ones in
//! one command; each entry gets its own error. `validate_only` submits nothing.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use kafka_protocol::messages::alter_client_quotas_response::{EntityData as AlterEntity, EntryData as AlterEntry};
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest, DescribeClientQuotasResponse,
};
use kafka_protocol::protocol::StrBytes;
use skiff_controller::intent::{EntityName, QuotaAlteration, QuotaChange, QuotaEntity};
use skiff_controller::quotas::{CLIENT_ID, IP, USER};

use super::errors;
use crate::broker::Broker;
use crate::quota::{CLIENT_KEYS, IP_KEYS};

/// An entity as the request names it: `(entity type, name or null for <default>)`.
type Components = Vec<(String, Option<String>)>;

/// Kafka's `ClientQuotaFilterComponent` match types.
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_SPECIFIED: i8 = 2;

/// Why a quota request (or one entry of it) was refused, with Kafka's messages.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuotaRequestError {
    // AlterClientQuotas (INVALID_REQUEST).
    #[error("Invalid empty client quota entity")]
    EmptyEntity,
    #[error("Invalid empty client quota entity, duplicate entity entry {0}")]
    DuplicateEntityType(String),
    #[error("Unhandled client quota entity type: {0}")]
    UnknownEntityType(String),
    #[error("Invalid IP address {0}")]
    InvalidIp(String),
    #[error("Empty {0} not supported")]
    EmptyName(String),
    #[error("Invalid quota entity combination, IP entity should not be combined with User or ClientId")]
    IpCombined,
    #[error("Invalid configuration key {0}")]
    UnknownKey(String),
    #[error("Quota {0} must be greater than 0")]
    NotPositive(String),
    #[error("{0} cannot be a fractional value.")]
    Fractional(String),
    // DescribeClientQuotas.
    #[error("Invalid empty entity type.")]
    EmptyFilterType,
    #[error("Entity type {0} cannot appear more than once in the filter.")]
    RepeatedFilterType(String),
    /// UNSUPPORTED_VERSION, as Kafka answers it.
    #[error("Unsupported entity type {0}")]
    UnsupportedEntityType(String),
    #[error("Request specified MATCH_TYPE_EXACT, but set match string to null.")]
    ExactWithoutMatch,
    #[error("Request specified MATCH_TYPE_DEFAULT, but also specified a match string.")]
    DefaultWithMatch,
    #[error("Request specified MATCH_TYPE_SPECIFIED, but also specified a match string.")]
    SpecifiedWithMatch,
    /// UNSUPPORTED_VERSION, as Kafka answers it.
    #[error("Unknown match type {0}")]
    UnknownMatchType(i8),
    #[error(
        "Invalid entity filter component combination. IP filter component should not be used with user or clientId filter component."
    )]
    IpFilterCombined,
}

pub fn describe(broker: &Arc<Broker>, req: DescribeClientQuotasRequest) -> DescribeClientQuotasResponse {
    match describe_entries(broker, &req) {
        Ok(entries) => DescribeClientQuotasResponse::default().with_entries(Some(entries)),
        Err(e) => DescribeClientQuotasResponse::default()
            .with_error_code(errors::quota_request(&e))
            .with_error_message(Some(StrBytes::from_string(e.to_string())))
            .with_entries(None),
    }
}

/// A describe filter: exact (or default, `None`) names per type, and types that must be present.
struct Filter {
    exact: Vec<(String, Option<String>)>,
    present: Vec<String>,
    strict: bool,
}

fn parse_filter(req: &DescribeClientQuotasRequest) -> Result<Filter, QuotaRequestError> {
    let mut f = Filter { exact: vec![], present: vec![], strict: req.strict };
    let mut seen = BTreeSet::new();
    for c in &req.components {
        let t = c.entity_type.to_string();
        if t.is_empty() {
            return Err(QuotaRequestError::EmptyFilterType);
        }
        if !seen.insert(t.clone()) {
            return Err(QuotaRequestError::RepeatedFilterType(t));
        }
        if t != IP && t != USER && t != CLIENT_ID {
            return Err(QuotaRequestError::UnsupportedEntityType(t));
        }
        let m = c._match.as_ref().map(|m| m.to_string());
        match c.match_type {
            MATCH_EXACT => match m {
                None => return Err(QuotaRequestError::ExactWithoutMatch),
                Some(m) => f.exact.push((t, Some(m))),
            },
            MATCH_DEFAULT if m.is_some() => return Err(QuotaRequestError::DefaultWithMatch),
            MATCH_DEFAULT => f.exact.push((t, None)),
            MATCH_SPECIFIED if m.is_some() => return Err(QuotaRequestError::SpecifiedWithMatch),
            MATCH_SPECIFIED => f.present.push(t),
            other => return Err(QuotaRequestError::UnknownMatchType(other)),
        }
    }
    let has = |t: &str| seen.contains(t);
    if has(IP) && (has(USER) || has(CLIENT_ID)) {
        return Err(QuotaRequestError::IpFilterCombined);
    }
    Ok(f)
}

/// Kafka's `ClientQuotasImage.matches`.
fn matches(entity: &QuotaEntity, f: &Filter) -> bool {
    if f.strict && entity.components().len() != f.exact.len() + f.present.len() {
        return false;
    }
    f.exact.iter().all(|(t, name)| entity.component(t).is_some_and(|n| n.as_wire() == name.as_deref()))
        && f.present.iter().all(|t| entity.component(t).is_some())
}

fn describe_entries(
    broker: &Arc<Broker>,
    req: &DescribeClientQuotasRequest,
) -> Result<Vec<EntryData>, QuotaRequestError> {
    let filter = parse_filter(req)?;
    Ok(broker.metadata.read(|m| {
        m.quotas()
            .entities()
            .filter(|(entity, _)| matches(entity, &filter))
            .map(|(entity, values)| {
                EntryData::default()
                    .with_entity(
                        entity
                            .components()
                            .into_iter()
                            .map(|(t, n)| {
                                EntityData::default()
                                    .with_entity_type(StrBytes::from_static_str(t))
                                    .with_entity_name(n.map(|n| StrBytes::from_string(n.to_string())))
                            })
                            .collect(),
                    )
                    .with_values(
                        values
                            .iter()
                            .map(|(k, v)| {
                                ValueData::default().with_key(StrBytes::from_string(k.clone())).with_value(*v)
                            })
                            .collect(),
                    )
            })
            .collect()
    }))
}

/// Kafka's `ClientQuotaControlManager.validateEntity`.
fn entity_of(components: &[(String, Option<String>)]) -> Result<QuotaEntity, QuotaRequestError> {
    if components.is_empty() {
        return Err(QuotaRequestError::EmptyEntity);
    }
    let mut e = QuotaEntity::default();
    for (t, name) in components {
        let slot = match t.as_str() {
            USER => &mut e.user,
            CLIENT_ID => &mut e.client_id,
            IP => &mut e.ip,
            _ => return Err(QuotaRequestError::UnknownEntityType(t.clone())),
        };
        if slot.is_some() {
            return Err(QuotaRequestError::DuplicateEntityType(t.clone()));
        }
        if t == IP
            && let Some(n) = name
            && n.parse::<IpAddr>().is_err()
        {
            return Err(QuotaRequestError::InvalidIp(n.clone()));
        }
        if name.as_deref() == Some("") {
            return Err(QuotaRequestError::EmptyName(t.clone()));
        }
        *slot = Some(EntityName::from_wire(name.as_deref()));
    }
    if e.ip.is_some() && (e.user.is_some() || e.client_id.is_some()) {
        return Err(QuotaRequestError::IpCombined);
    }
    Ok(e)
}

/// Kafka's `validateQuotaKeyValue`: a known key of the entity's kind, positive, integral where
/// the key is.
fn check_op(entity: &QuotaEntity, key: &str, value: Option<f64>) -> Result<(), QuotaRequestError> {
    let keys: &[(&str, bool)] = if entity.ip.is_some() { &IP_KEYS } else { &CLIENT_KEYS };
    let Some((_, integral)) = keys.iter().find(|(k, _)| *k == key) else {
        return Err(QuotaRequestError::UnknownKey(key.to_string()));
    };
    let Some(value) = value else { return Ok(()) };
    if value.is_nan() || value <= 0.0 {
        return Err(QuotaRequestError::NotPositive(key.to_string()));
    }
    if *integral && (value % 1.0).abs() > 1e-6 {
        return Err(QuotaRequestError::Fractional(key.to_string()));
    }
    Ok(())
}

pub async fn alter(broker: &Arc<Broker>, req: AlterClientQuotasRequest) -> AlterClientQuotasResponse {
    let mut outcomes: Vec<(Components, Result<(), QuotaRequestError>)> = Vec::new();
    let mut change = QuotaChange { alterations: vec![] };
    for entry in &req.entries {
        let components: Components = entry
            .entity
            .iter()
            .map(|c| (c.entity_type.to_string(), c.entity_name.as_ref().map(|n| n.to_string())))
            .collect();
        let checked = entity_of(&components).and_then(|entity| {
            let ops: Vec<(String, Option<f64>)> =
                entry.ops.iter().map(|op| (op.key.to_string(), (!op.remove).then_some(op.value))).collect();
            for (k, v) in &ops {
                check_op(&entity, k, *v)?;
            }
            Ok(QuotaAlteration { entity, ops })
        });
        let result = checked.map(|a| {
            if !a.ops.is_empty() {
                change.alterations.push(a);
            }
        });
        outcomes.push((components, result));
    }
    let submitted = if req.validate_only || change.alterations.is_empty() {
        Ok(())
    } else {
        broker.controller.alter_client_quotas(change).await
    };
    let entries = outcomes
        .into_iter()
        .map(|(components, result)| {
            let entity = components
                .into_iter()
                .map(|(t, n)| {
                    AlterEntity::default()
                        .with_entity_type(StrBytes::from_string(t))
                        .with_entity_name(n.map(StrBytes::from_string))
                })
                .collect();
            let error = match (result, &submitted) {
                (Err(e), _) => Some((errors::quota_request(&e), e.to_string())),
                (Ok(()), Err(e)) => Some((errors::controller(e), e.to_string())),
                (Ok(()), Ok(())) => None,
            };
            let out = AlterEntry::default().with_entity(entity);
            match error {
                None => out,
                Some((code, message)) => {
                    out.with_error_code(code).with_error_message(Some(StrBytes::from_string(message)))
                }
            }
        })
        .collect();
    AlterClientQuotasResponse::default().with_entries(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(t: &str, n: Option<&str>) -> (String, Option<String>) {
        (t.to_string(), n.map(str::to_string))
    }

    #[test]
    fn entities_are_validated_as_kafka_does() {
        assert_eq!(entity_of(&[]), Err(QuotaRequestError::EmptyEntity));
        assert_eq!(
            entity_of(&[c(USER, Some("a")), c(USER, Some("b"))]),
            Err(QuotaRequestError::DuplicateEntityType(USER.into()))
        );
        assert_eq!(entity_of(&[c("group", Some("a"))]), Err(QuotaRequestError::UnknownEntityType("group".into())));
        assert_eq!(entity_of(&[c(IP, Some("nope"))]), Err(QuotaRequestError::InvalidIp("nope".into())));
        assert_eq!(entity_of(&[c(USER, Some(""))]), Err(QuotaRequestError::EmptyName(USER.into())));
        assert_eq!(entity_of(&[c(IP, None), c(USER, Some("a"))]), Err(QuotaRequestError::IpCombined));
        let e = entity_of(&[c(USER, None), c(CLIENT_ID, Some("app"))]).expect("valid");
        assert_eq!(e.user, Some(EntityName::Default));
        assert_eq!(
            check_op(&e, "connection_creation_rate", Some(1.0)),
            Err(QuotaRequestError::UnknownKey("connection_creation_rate".into()))
        );
        assert_eq!(
            check_op(&e, "producer_byte_rate", Some(1.5)),
            Err(QuotaRequestError::Fractional("producer_byte_rate".into()))
        );
        assert_eq!(
            check_op(&e, "producer_byte_rate", Some(0.0)),
            Err(QuotaRequestError::NotPositive("producer_byte_rate".into()))
        );
        assert_eq!(check_op(&e, "request_percentage", Some(12.5)), Ok(()));
        assert_eq!(check_op(&e, "producer_byte_rate", None), Ok(()), "removing needs no value");
    }

    #[test]
    fn filters_match_as_kafka_does() {
        let e = entity_of(&[c(USER, Some("u")), c(CLIENT_ID, None)]).expect("valid");
        let f = |exact: Vec<(String, Option<String>)>, present: Vec<&str>, strict| Filter {
            exact,
            present: present.into_iter().map(str::to_string).collect(),
            strict,
        };
        assert!(matches(&e, &f(vec![c(USER, Some("u"))], vec![], false)));
        assert!(!matches(&e, &f(vec![c(USER, Some("u"))], vec![], true)), "strict: every component named");
        assert!(matches(&e, &f(vec![c(USER, Some("u")), c(CLIENT_ID, None)], vec![], true)));
        assert!(matches(&e, &f(vec![], vec![USER, CLIENT_ID], true)));
        assert!(!matches(&e, &f(vec![c(USER, None)], vec![], false)));
    }
}
