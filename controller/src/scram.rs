//! SCRAM credentials (RFC 5802/7677, Kafka's KIP-554): per user and mechanism, the salt, the
//! iteration count and the two derived keys. Never the password, nor the salted password.
//!
//! The controller only stores them: the broker derives the keys from what
//! AlterUserScramCredentials carries (the client salts the password itself) and validates the
//! request against the image before submitting, exactly as for configs. `apply` is total:
//! deleting a credential that is gone is a no-op.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Kafka's SCRAM mechanisms, by their wire codes (`ScramMechanism` in the Admin API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScramMechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [Self::ScramSha256, Self::ScramSha512];

    pub fn name(self) -> &'static str {
        match self {
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The Admin API's `mechanism` byte (0 is UNKNOWN).
    pub fn code(self) -> i8 {
        match self {
            Self::ScramSha256 => 1,
            Self::ScramSha512 => 2,
        }
    }

    pub fn from_code(code: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.code() == code)
    }
}

/// One stored credential. `Debug` hides the keys: they let anyone who has them impersonate the
/// server to the user (server key) or mount an offline dictionary attack (stored key).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

/// `AlterScramCredentials`: credentials to set and to remove, applied together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScramChange {
    pub upsertions: Vec<ScramUpsertion>,
    pub deletions: Vec<ScramDeletion>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScramUpsertion {
    pub user: String,
    pub mechanism: ScramMechanism,
    pub credential: ScramCredential,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScramDeletion {
    pub user: String,
    pub mechanism: ScramMechanism,
}

/// Every user's credentials, by mechanism.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScramState {
    pub(crate) users: BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>,
}

impl ScramState {
    pub(crate) fn apply(&mut self, change: &ScramChange) {
        for d in &change.deletions {
            if let Some(creds) = self.users.get_mut(&d.user) {
                creds.remove(&d.mechanism);
                if creds.is_empty() {
                    self.users.remove(&d.user);
                }
            }
        }
        for u in &change.upsertions {
            self.users.entry(u.user.clone()).or_default().insert(u.mechanism, u.credential.clone());
        }
    }

    pub fn credential(&self, user: &str, mechanism: ScramMechanism) -> Option<&ScramCredential> {
        self.users.get(user).and_then(|c| c.get(&mechanism))
    }

    /// Every user with at least one credential, with the (mechanism, iterations) of each.
    pub fn users(&self) -> impl Iterator<Item = (&str, Vec<(ScramMechanism, i32)>)> {
        self.users.iter().map(|(u, c)| (u.as_str(), c.iter().map(|(m, c)| (*m, c.iterations)).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(i: i32) -> ScramCredential {
        ScramCredential { salt: vec![1], stored_key: vec![2], server_key: vec![3], iterations: i }
    }

    #[test]
    fn upsert_delete_and_debug_hides_keys() {
        let mut s = ScramState::default();
        let up = |user: &str, m| ScramUpsertion { user: user.into(), mechanism: m, credential: cred(4096) };
        s.apply(&ScramChange {
            upsertions: vec![up("alice", ScramMechanism::ScramSha256), up("alice", ScramMechanism::ScramSha512)],
            deletions: vec![],
        });
        assert!(s.credential("alice", ScramMechanism::ScramSha512).is_some());
        s.apply(&ScramChange {
            upsertions: vec![],
            deletions: vec![
                ScramDeletion { user: "alice".into(), mechanism: ScramMechanism::ScramSha256 },
                ScramDeletion { user: "nobody".into(), mechanism: ScramMechanism::ScramSha256 },
            ],
        });
        assert_eq!(s.users().collect::<Vec<_>>(), vec![("alice", vec![(ScramMechanism::ScramSha512, 4096)])]);
        let shown = format!("{:?}", cred(4096));
        assert!(!shown.contains("stored_key") && !shown.contains("salt"), "{shown}");
        let json = serde_json::to_string(&s).expect("json");
        assert_eq!(serde_json::from_str::<ScramState>(&json).expect("back"), s);
    }
}
