//! Feature flags (KIP-584): the supported and finalized features ApiVersions carries (Java's
//! `Admin.describeFeatures`, `kafka-features.sh describe`), and UpdateFeatures.
//!
//! Skiff's features are fixed by the build: each is finalized at the one level the code
//! implements, and that level is the whole supported range, so an update can only restate the
//! current level (accepted, a no-op, dry run or not) and anything else is refused with Kafka's
//! `INVALID_UPDATE_VERSION` and the message Kafka's `FeatureControlManager` gives.
//!
//! The levels, and why:
//! * `metadata.version` 25 = `4.0-IV3`, Kafka 4.0's release level: Skiff serves Kafka 4.0's
//!   client protocol (KIP-848 consumer groups GA with ConsumerGroupHeartbeat v1, KIP-966
//!   DescribeTopicPartitions, KIP-896's removed versions) and none of what later levels add
//!   (4.1-IV0 on: share groups, streams groups, ELR by default).
//! * `group.version` 1: the KIP-848 consumer group protocol is served.
//! * `kraft.version` 0: the controller quorum's voters are static (set by configuration), not
//!   KIP-853's dynamic quorum.
//! * `transaction.version` 2: transactions are served with KIP-890 part 2 (TV2: an epoch bump
//!   per transaction, implicit adds by Produce v12 and TxnOffsetCommit v5; RFC 0004 phase 2).
//!   Java producers switch to TV2 (EndTxn v5, Produce v12) on it; older request versions keep
//!   TV1 (server-side verification, no epoch bump per transaction), as in Kafka.
//! * `eligible.leader.replicas.version`, `share.version`, `streams.version` 0: not served.
//!
//! A level-0 feature is disabled: like Kafka it is never listed among the finalized features,
//! and, like Kafka (KIP-1022), a supported range starting at 0 is left out of ApiVersions
//! answers below v4, whose clients reject a minimum of 0.

use kafka_protocol::messages::api_versions_response::{FinalizedFeatureKey, SupportedFeatureKey};
use kafka_protocol::messages::update_features_response::UpdatableFeatureResult;
use kafka_protocol::messages::{ApiVersionsResponse, UpdateFeaturesRequest, UpdateFeaturesResponse};
use kafka_protocol::protocol::StrBytes;

use super::errors;

/// One feature: the levels this build supports (`min..=max`) and the level it runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    pub min: i16,
    pub max: i16,
    pub finalized: i16,
}

/// Kafka's `MetadataVersion.IBP_4_0_IV3` feature level (see the module docs).
pub const METADATA_VERSION_LEVEL: i16 = 25;

/// Every feature a Kafka 4.4 broker lists, at Skiff's levels, in name order.
pub const FEATURES: &[Feature] = &[
    Feature { name: "eligible.leader.replicas.version", min: 0, max: 0, finalized: 0 },
    Feature { name: "group.version", min: 1, max: 1, finalized: 1 },
    Feature { name: "kraft.version", min: 0, max: 0, finalized: 0 },
    Feature {
        name: "metadata.version",
        min: METADATA_VERSION_LEVEL,
        max: METADATA_VERSION_LEVEL,
        finalized: METADATA_VERSION_LEVEL,
    },
    Feature { name: "share.version", min: 0, max: 0, finalized: 0 },
    Feature { name: "streams.version", min: 0, max: 0, finalized: 0 },
    Feature { name: "transaction.version", min: 0, max: 2, finalized: 2 },
];

/// The finalized features' epoch. Kafka uses the metadata offset of the last feature change;
/// Skiff's features have never changed since the cluster formed, so it is constant.
pub const FINALIZED_FEATURES_EPOCH: i64 = 0;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Adds the features to an ApiVersions answer of request version `version`.
pub fn add_to_api_versions(r: ApiVersionsResponse, version: i16) -> ApiVersionsResponse {
    let supported = FEATURES
        .iter()
        .filter(|f| version >= 4 || f.min != 0)
        .map(|f| SupportedFeatureKey::default().with_name(s(f.name)).with_min_version(f.min).with_max_version(f.max))
        .collect();
    let finalized = FEATURES
        .iter()
        .filter(|f| f.finalized != 0)
        .map(|f| {
            FinalizedFeatureKey::default()
                .with_name(s(f.name))
                .with_min_version_level(f.finalized)
                .with_max_version_level(f.finalized)
        })
        .collect();
    r.with_supported_features(supported)
        .with_finalized_features_epoch(FINALIZED_FEATURES_EPOCH)
        .with_finalized_features(finalized)
}

/// Why one feature update was refused (Kafka's `INVALID_UPDATE_VERSION`, with its message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid update version {level} for feature {feature}. {reason}")]
pub struct InvalidUpdateVersion {
    pub feature: String,
    pub level: i16,
    pub reason: String,
}

/// Kafka's `FeatureUpdate.UpgradeType` codes.
const UPGRADE: i8 = 1;
const SAFE_DOWNGRADE: i8 = 2;
const UNSAFE_DOWNGRADE: i8 = 3;

/// Kafka's `FeatureControlManager.updateFeature` checks, against Skiff's fixed levels. `Ok`
/// means the update restates the current level: nothing to change.
pub fn check_update(node_id: i32, feature: &str, level: i16, upgrade_type: i8) -> Result<(), InvalidUpdateVersion> {
    let refuse = |reason: String| InvalidUpdateVersion { feature: feature.to_string(), level, reason };
    if !matches!(upgrade_type, UPGRADE | SAFE_DOWNGRADE | UNSAFE_DOWNGRADE) {
        return Err(refuse("The controller does not support the given upgrade type.".into()));
    }
    if level < 0 {
        return Err(refuse("A feature version cannot be less than 0.".into()));
    }
    // An unknown feature is Kafka's DISABLED range 0-0 (`QuorumFeatures.reasonNotSupported`).
    let f = FEATURES.iter().find(|f| f.name == feature);
    let (min, max, current) = f.map_or((0, 0, 0), |f| (f.min, f.max, f.finalized));
    if !(min..=max).contains(&level) {
        let what = format!("Broker {node_id}");
        return Err(refuse(if max == 0 {
            format!("{what} does not support this feature.")
        } else if min == max {
            format!("{what} only supports versions {min}")
        } else {
            format!("{what} only supports versions {min}-{max}")
        }));
    }
    // Within the range: Kafka's rules first, for their messages.
    if level < current && upgrade_type == UPGRADE {
        return Err(refuse(
            "Can't downgrade the version of this feature without setting the upgrade type to either safe or \
             unsafe downgrade."
                .into(),
        ));
    }
    if level > current && upgrade_type != UPGRADE {
        return Err(refuse("Can't downgrade to a newer version.".into()));
    }
    // A range wider than the current level (`transaction.version` 0-2): Skiff's levels are
    // fixed by the build, so any other level is refused (Kafka would apply the downgrade).
    if level != current {
        return Err(refuse(format!("Skiff runs {feature} at level {current} only; it cannot be changed.")));
    }
    Ok(())
}

pub fn update_features(node_id: i32, req: &UpdateFeaturesRequest, version: i16) -> UpdateFeaturesResponse {
    let mut results = Vec::new();
    let mut first_error = None;
    for u in &req.feature_updates {
        // v0 has a downgrade flag instead of a type (Kafka's `UpdateFeaturesRequest.upgradeType`).
        let upgrade_type =
            if version == 0 { if u.allow_downgrade { SAFE_DOWNGRADE } else { UPGRADE } } else { u.upgrade_type };
        let outcome = check_update(node_id, u.feature.as_str(), u.max_version_level, upgrade_type);
        let (code, message) = match &outcome {
            Ok(()) => (errors::NONE, None),
            Err(e) => {
                tracing::info!(feature = %u.feature, level = u.max_version_level, "feature update refused: {e}");
                (errors::feature_update(e), Some(s(&e.to_string())))
            }
        };
        if code != errors::NONE && first_error.is_none() {
            first_error = Some((code, message.clone()));
        }
        results.push(
            UpdatableFeatureResult::default()
                .with_feature(u.feature.clone())
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    let r = UpdateFeaturesResponse::default();
    if version >= 2 {
        // v2 has no per-feature results: the update is one operation and its error is the
        // request's (Kafka's `UpdateFeaturesResponse.createWithErrors`).
        match first_error {
            Some((code, message)) => r.with_error_code(code).with_error_message(message),
            None => r,
        }
    } else {
        r.with_results(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::ResponseError;
    use kafka_protocol::messages::update_features_request::FeatureUpdateKey;

    fn req(updates: &[(&str, i16, i8)], validate_only: bool) -> UpdateFeaturesRequest {
        UpdateFeaturesRequest::default().with_validate_only(validate_only).with_feature_updates(
            updates
                .iter()
                .map(|(f, l, t)| {
                    FeatureUpdateKey::default().with_feature(s(f)).with_max_version_level(*l).with_upgrade_type(*t)
                })
                .collect(),
        )
    }

    #[test]
    fn api_versions_lists_features_as_kafka_does() {
        let v4 = add_to_api_versions(ApiVersionsResponse::default(), 4);
        assert_eq!(v4.supported_features.len(), FEATURES.len());
        let finalized: Vec<_> =
            v4.finalized_features.iter().map(|f| (f.name.to_string(), f.max_version_level)).collect();
        assert_eq!(
            finalized,
            vec![("group.version".into(), 1), ("metadata.version".into(), 25), ("transaction.version".into(), 2)]
        );
        // Below v4, ranges starting at 0 are left out (KIP-1022).
        let v3 = add_to_api_versions(ApiVersionsResponse::default(), 3);
        let names: Vec<_> = v3.supported_features.iter().map(|f| f.name.to_string()).collect();
        assert_eq!(names, vec!["group.version", "metadata.version"]);
    }

    #[test]
    fn only_the_current_levels_are_accepted() {
        let invalid = errors::code(ResponseError::InvalidUpdateVersion);
        let r = update_features(1, &req(&[("metadata.version", 25, 1), ("group.version", 1, 1)], true), 1);
        assert!(r.results.iter().all(|x| x.error_code == 0), "{r:?}");
        let r = update_features(1, &req(&[("metadata.version", 26, 1)], false), 1);
        assert_eq!(r.results[0].error_code, invalid);
        assert_eq!(
            r.results[0].error_message.as_deref(),
            Some("Invalid update version 26 for feature metadata.version. Broker 1 only supports versions 25")
        );
        let r = update_features(1, &req(&[("transaction.version", 3, 1)], false), 1);
        assert_eq!(
            r.results[0].error_message.as_deref(),
            Some("Invalid update version 3 for feature transaction.version. Broker 1 only supports versions 0-2")
        );
        // TV2 runs; a downgrade to 1 is refused (the level is fixed by the build), restating 2
        // is accepted.
        let r = update_features(1, &req(&[("transaction.version", 1, 2), ("transaction.version", 2, 1)], false), 1);
        assert_eq!((r.results[0].error_code, r.results[1].error_code), (invalid, 0));
        let r = update_features(1, &req(&[("share.version", 1, 1)], false), 1);
        assert_eq!(
            r.results[0].error_message.as_deref(),
            Some("Invalid update version 1 for feature share.version. Broker 1 does not support this feature.")
        );
        let r = update_features(1, &req(&[("group.version", 0, 2)], false), 1);
        assert_eq!(r.results[0].error_code, invalid, "disabling KIP-848 is not possible");
        let r = update_features(1, &req(&[("group.version", 1, 9)], false), 1);
        assert_eq!(r.results[0].error_code, invalid, "unknown upgrade type");
        // v2: the first error becomes the request's.
        let r = update_features(1, &req(&[("group.version", 1, 1), ("nope", 1, 1)], false), 2);
        assert_eq!(r.error_code, invalid);
        assert!(r.results.is_empty());
    }
}
