//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554), as Kafka's controller
//! answers them, and the bootstrap user (`scram_bootstrap_user`).
//!
//! The client salts the password itself (AlterUserScramCredentials carries the salt, the
//! iteration count and the salted password); the broker derives the stored and server keys
//! (`security/sasl/scram.rs`) and the controller stores only those (`controller/src/scram.rs`).
//! Validation runs against the image before the one command is submitted: every change of a
//! user applies, or none does and the user's result carries the first error.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use skiff_controller::ControllerError;
use skiff_controller::ControllerHandle;
use skiff_controller::intent::{ScramChange, ScramDeletion, ScramMechanism, ScramUpsertion};

use super::errors;
use crate::broker::Broker;
use crate::security::sasl::scram::{self, MAX_ITERATIONS, MIN_ITERATIONS};

/// Why a user's credential change or description was refused (Kafka's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramRequestError {
    #[error("Username must not be empty")]
    EmptyUser,
    #[error("Unknown SCRAM mechanism")]
    UnknownMechanism,
    #[error("Too few iterations")]
    TooFewIterations,
    #[error("Too many iterations")]
    TooManyIterations,
    #[error("Salt and salted password must not be empty")]
    EmptySalt,
    #[error("A user credential cannot be altered twice in the same request")]
    AlteredTwice,
    #[error("Attempt to delete a user credential that does not exist")]
    DeleteMissing,
    #[error("Attempt to describe a user credential that does not exist")]
    DescribeMissing,
    #[error("Cannot describe SCRAM credentials for the same user twice in a single request")]
    DescribedTwice,
}

pub fn describe(
    broker: &Arc<Broker>,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let result = |user: &str, infos: Vec<(ScramMechanism, i32)>| {
        DescribeUserScramCredentialsResult::default()
            .with_user(StrBytes::from_string(user.to_string()))
            .with_credential_infos(
                infos
                    .into_iter()
                    .map(|(m, i)| CredentialInfo::default().with_mechanism(m.code()).with_iterations(i))
                    .collect(),
            )
    };
    let error = |user: &str, e: ScramRequestError| {
        DescribeUserScramCredentialsResult::default()
            .with_user(StrBytes::from_string(user.to_string()))
            .with_error_code(errors::scram_request(&e))
            .with_error_message(Some(StrBytes::from_string(e.to_string())))
    };
    let results = broker.metadata.read(|m| {
        let all = m.scram();
        match req.users.as_deref() {
            None | Some([]) => all.users().map(|(u, infos)| result(u, infos)).collect(),
            Some(users) => {
                let mut count: BTreeMap<&str, usize> = BTreeMap::new();
                for u in users {
                    *count.entry(u.name.as_str()).or_default() += 1;
                }
                let mut done = std::collections::BTreeSet::new();
                users
                    .iter()
                    .map(|u| u.name.as_str())
                    .filter(|u| done.insert(*u))
                    .map(|u| {
                        if count[u] > 1 {
                            return error(u, ScramRequestError::DescribedTwice);
                        }
                        match all.users().find(|(name, _)| *name == u) {
                            Some((_, infos)) => result(u, infos),
                            None => error(u, ScramRequestError::DescribeMissing),
                        }
                    })
                    .collect()
            }
        }
    });
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

pub async fn alter(broker: &Arc<Broker>, req: AlterUserScramCredentialsRequest) -> AlterUserScramCredentialsResponse {
    // Per user, in request order: the changes, or the first error.
    let mut users: Vec<(String, Result<ScramChange, ScramRequestError>)> = Vec::new();
    let mut seen: std::collections::BTreeSet<(String, i8)> = Default::default();
    let mut entry = |user: &str| -> usize {
        match users.iter().position(|(u, _)| u == user) {
            Some(i) => i,
            None => {
                users.push((user.to_string(), Ok(ScramChange { upsertions: vec![], deletions: vec![] })));
                users.len() - 1
            }
        }
    };
    let mut outcome: Vec<(usize, Result<ChangeItem, ScramRequestError>)> = Vec::new();
    for d in &req.deletions {
        let user = d.name.as_str();
        let i = entry(user);
        let r = if !seen.insert((user.to_string(), d.mechanism)) {
            Err(ScramRequestError::AlteredTwice)
        } else {
            check_user_and_mechanism(user, d.mechanism).and_then(|m| {
                let exists = broker.metadata.read(|img| img.scram().credential(user, m).is_some());
                if exists {
                    Ok(ChangeItem::Delete(ScramDeletion { user: user.to_string(), mechanism: m }))
                } else {
                    Err(ScramRequestError::DeleteMissing)
                }
            })
        };
        outcome.push((i, r));
    }
    for u in &req.upsertions {
        let user = u.name.as_str();
        let i = entry(user);
        let r = if !seen.insert((user.to_string(), u.mechanism)) {
            Err(ScramRequestError::AlteredTwice)
        } else {
            check_user_and_mechanism(user, u.mechanism).and_then(|m| {
                if u.iterations < MIN_ITERATIONS {
                    return Err(ScramRequestError::TooFewIterations);
                }
                if u.iterations > MAX_ITERATIONS {
                    return Err(ScramRequestError::TooManyIterations);
                }
                if u.salt.is_empty() || u.salted_password.is_empty() {
                    return Err(ScramRequestError::EmptySalt);
                }
                let credential = scram::credential_from_salted(m, &u.salted_password, &u.salt, u.iterations);
                Ok(ChangeItem::Upsert(ScramUpsertion { user: user.to_string(), mechanism: m, credential }))
            })
        };
        outcome.push((i, r));
    }
    for (i, r) in outcome {
        let slot = &mut users[i].1;
        match (slot.as_mut(), r) {
            (Err(_), _) => {}
            (Ok(_), Err(e)) => *slot = Err(e),
            (Ok(change), Ok(ChangeItem::Delete(d))) => change.deletions.push(d),
            (Ok(change), Ok(ChangeItem::Upsert(u))) => change.upsertions.push(u),
        }
    }
    let mut all = ScramChange { upsertions: vec![], deletions: vec![] };
    for (_, r) in &users {
        if let Ok(c) = r {
            all.upsertions.extend(c.upsertions.iter().cloned());
            all.deletions.extend(c.deletions.iter().cloned());
        }
    }
    let submitted: Result<(), ControllerError> = if all.upsertions.is_empty() && all.deletions.is_empty() {
        Ok(())
    } else {
        broker.controller.alter_scram_credentials(all).await
    };
    let results = users
        .into_iter()
        .map(|(user, r)| {
            let out = AlterUserScramCredentialsResult::default().with_user(StrBytes::from_string(user));
            let error = match (r, &submitted) {
                (Err(e), _) => Some((errors::scram_request(&e), e.to_string())),
                (Ok(_), Err(e)) => Some((errors::controller(e), e.to_string())),
                (Ok(_), Ok(())) => None,
            };
            match error {
                None => out,
                Some((code, message)) => {
                    out.with_error_code(code).with_error_message(Some(StrBytes::from_string(message)))
                }
            }
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}

enum ChangeItem {
    Delete(ScramDeletion),
    Upsert(ScramUpsertion),
}

fn check_user_and_mechanism(user: &str, mechanism: i8) -> Result<ScramMechanism, ScramRequestError> {
    if user.is_empty() {
        return Err(ScramRequestError::EmptyUser);
    }
    ScramMechanism::from_code(mechanism).ok_or(ScramRequestError::UnknownMechanism)
}

/// Creates `name` with both SCRAM mechanisms if it has no credential yet (a restart, or another
/// broker of the cluster, finds it and leaves it). The password is never logged.
pub async fn bootstrap_user(controller: &ControllerHandle, name: &str, password: &str) -> Result<(), ControllerError> {
    let missing: Vec<ScramMechanism> = controller
        .metadata()
        .read(|m| ScramMechanism::ALL.into_iter().filter(|mech| m.scram().credential(name, *mech).is_none()).collect());
    if missing.is_empty() {
        return Ok(());
    }
    let upsertions = missing
        .iter()
        .map(|m| {
            let salt: [u8; 32] = rand::random();
            ScramUpsertion {
                user: name.to_string(),
                mechanism: *m,
                credential: scram::credential(*m, password, &salt, MIN_ITERATIONS),
            }
        })
        .collect();
    controller.alter_scram_credentials(ScramChange { upsertions, deletions: vec![] }).await?;
    tracing::info!(user = %name, mechanisms = ?missing.iter().map(|m| m.name()).collect::<Vec<_>>(), "SCRAM bootstrap user created");
    Ok(())
}
