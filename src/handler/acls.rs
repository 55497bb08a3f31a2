//! CreateAcls, DescribeAcls, DeleteAcls (KIP-140, KIP-290): Kafka's ACL admin API over the
//! bindings in controller state (`controller/src/acls.rs`). `kafka-acls.sh --add / --list /
//! --remove` use these. Who may call them (ALTER / DESCRIBE on the cluster) is checked in
//! `authorize.rs` like every other API.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{DeleteAclsFilterResult, DeleteAclsMatchingAcl};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest,
    DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use skiff_controller::acls::{
    AclBinding, AclChange, AclFilter, AclOperation, AclPermission, PatternType, ResourceType, validate,
};

use super::errors;
use crate::broker::Broker;

/// Why an ACL or filter in a request is refused: Kafka answers INVALID_REQUEST with the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidAcl(pub String);

fn code<T>(what: &str, raw: i8, from: fn(i8) -> Option<T>) -> Result<T, InvalidAcl> {
    from(raw).ok_or_else(|| InvalidAcl(format!("Invalid {what} code {raw}")))
}

fn binding(
    resource_type: i8,
    name: &str,
    pattern: i8,
    principal: &str,
    host: &str,
    operation: i8,
    permission: i8,
) -> Result<AclBinding, InvalidAcl> {
    let b = AclBinding {
        resource_type: code("resourceType", resource_type, ResourceType::from_code)?,
        name: name.to_string(),
        pattern: code("patternType", pattern, PatternType::from_code)?,
        principal: principal.to_string(),
        host: host.to_string(),
        operation: code("operation", operation, AclOperation::from_code)?,
        permission: code("permissionType", permission, AclPermission::from_code)?,
    };
    validate(&b).map_err(InvalidAcl)?;
    Ok(b)
}

#[allow(clippy::too_many_arguments)]
fn filter(
    resource_type: i8,
    name: Option<&StrBytes>,
    pattern: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, InvalidAcl> {
    Ok(AclFilter {
        resource_type: code("resourceType", resource_type, ResourceType::from_code)?,
        name: name.map(|n| n.to_string()),
        pattern: code("patternType", pattern, PatternType::from_code)?,
        principal: principal.map(|p| p.to_string()),
        host: host.map(|h| h.to_string()),
        operation: code("operation", operation, AclOperation::from_code)?,
        permission: code("permissionType", permission, AclPermission::from_code)?,
    })
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub async fn create(broker: &Arc<Broker>, req: CreateAclsRequest) -> CreateAclsResponse {
    let parsed: Vec<Result<AclBinding, InvalidAcl>> = req
        .creations
        .iter()
        .map(|c| {
            binding(
                c.resource_type,
                c.resource_name.as_str(),
                c.resource_pattern_type,
                c.principal.as_str(),
                c.host.as_str(),
                c.operation,
                c.permission_type,
            )
        })
        .collect();
    let creations: Vec<AclBinding> = parsed.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
    let submitted = if creations.is_empty() {
        Ok(())
    } else {
        broker.controller.alter_acls(AclChange { creations, deletions: vec![] }).await
    };
    let results = parsed
        .into_iter()
        .map(|r| {
            let (code, message) = match (r, &submitted) {
                (Err(e), _) => (errors::invalid_acl(&e), Some(e.to_string())),
                (Ok(_), Err(e)) => (errors::controller(e), Some(e.to_string())),
                (Ok(_), Ok(())) => (errors::NONE, None),
            };
            let mut out = AclCreationResult::default();
            out.error_code = code;
            out.error_message = message.map(StrBytes::from_string);
            out
        })
        .collect();
    let mut resp = CreateAclsResponse::default();
    resp.results = results;
    resp
}

pub fn describe(broker: &Arc<Broker>, req: DescribeAclsRequest) -> DescribeAclsResponse {
    let mut resp = DescribeAclsResponse::default();
    let f = match filter(
        req.resource_type_filter,
        req.resource_name_filter.as_ref(),
        req.pattern_type_filter,
        req.principal_filter.as_ref(),
        req.host_filter.as_ref(),
        req.operation,
        req.permission_type,
    ) {
        Ok(f) => f,
        Err(e) => {
            resp.error_code = errors::invalid_acl(&e);
            resp.error_message = Some(StrBytes::from_string(e.to_string()));
            return resp;
        }
    };
    let matching: Vec<AclBinding> = broker.metadata.read(|m| m.acls().matching(&f).cloned().collect());
    // One entry per resource pattern, as Kafka groups them.
    let mut by_resource: BTreeMap<(ResourceType, String, PatternType), Vec<AclDescription>> = BTreeMap::new();
    for b in matching {
        let mut d = AclDescription::default();
        d.principal = text(&b.principal);
        d.host = text(&b.host);
        d.operation = b.operation.code();
        d.permission_type = b.permission.code();
        by_resource.entry((b.resource_type, b.name, b.pattern)).or_default().push(d);
    }
    resp.resources = by_resource
        .into_iter()
        .map(|((rt, name, pattern), acls)| {
            let mut r = DescribeAclsResource::default();
            r.resource_type = rt.code();
            r.resource_name = StrBytes::from_string(name);
            r.pattern_type = pattern.code();
            r.acls = acls;
            r
        })
        .collect();
    resp
}

pub async fn delete(broker: &Arc<Broker>, req: DeleteAclsRequest) -> DeleteAclsResponse {
    let filters: Vec<Result<AclFilter, InvalidAcl>> = req
        .filters
        .iter()
        .map(|f| {
            filter(
                f.resource_type_filter,
                f.resource_name_filter.as_ref(),
                f.pattern_type_filter,
                f.principal_filter.as_ref(),
                f.host_filter.as_ref(),
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    let matched: Vec<Result<Vec<AclBinding>, InvalidAcl>> = broker.metadata.read(|m| {
        filters
            .iter()
            .map(|f| f.as_ref().map(|f| m.acls().matching(f).cloned().collect()).map_err(Clone::clone))
            .collect()
    });
    let mut deletions: Vec<AclBinding> = matched.iter().flat_map(|m| m.iter().flatten().cloned()).collect();
    deletions.sort();
    deletions.dedup();
    let submitted = if deletions.is_empty() {
        Ok(())
    } else {
        broker.controller.alter_acls(AclChange { creations: vec![], deletions }).await
    };
    let mut resp = DeleteAclsResponse::default();
    resp.filter_results = matched
        .into_iter()
        .map(|m| {
            let mut out = DeleteAclsFilterResult::default();
            match m {
                Err(e) => {
                    out.error_code = errors::invalid_acl(&e);
                    out.error_message = Some(StrBytes::from_string(e.to_string()));
                }
                Ok(bindings) => {
                    if let Err(e) = &submitted {
                        out.error_code = errors::controller(e);
                        out.error_message = Some(StrBytes::from_string(e.to_string()));
                        return out;
                    }
                    out.matching_acls = bindings
                        .into_iter()
                        .map(|b| {
                            let mut a = DeleteAclsMatchingAcl::default();
                            a.resource_type = b.resource_type.code();
                            a.resource_name = StrBytes::from_string(b.name);
                            a.pattern_type = b.pattern.code();
                            a.principal = StrBytes::from_string(b.principal);
                            a.host = StrBytes::from_string(b.host);
                            a.operation = b.operation.code();
                            a.permission_type = b.permission.code();
                            a
                        })
                        .collect();
                }
            }
            out
        })
        .collect();
    resp
}
