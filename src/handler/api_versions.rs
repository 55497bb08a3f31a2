//! ApiVersions: the advertised API ranges (see `protocol::SUPPORTED_APIS`).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use crate::protocol::SUPPORTED_APIS;

/// The key list every ApiVersions answer carries, including the UNSUPPORTED_VERSION one.
pub fn response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = SUPPORTED_APIS
        .iter()
        .map(|r| ApiVersion::default().with_api_key(r.key as i16).with_min_version(r.min).with_max_version(r.max))
        .collect();
    ApiVersionsResponse::default().with_error_code(error_code).with_api_keys(api_keys).with_finalized_features_epoch(-1)
}

/// The full answer: the key list and the features (handler/features.rs; Skiff's levels, with
/// `transaction.version` 2: RFC 0004 phase 2).
pub fn handle(_req: &ApiVersionsRequest, version: i16) -> ApiVersionsResponse {
    super::features::add_to_api_versions(response(0), version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_advertised_api() {
        let r = handle(&ApiVersionsRequest::default(), 3);
        assert_eq!(r.api_keys.len(), SUPPORTED_APIS.len());
        assert!(r.api_keys.iter().any(|k| k.api_key == 0 && k.min_version == 0 && k.max_version == 12));
    }
}
