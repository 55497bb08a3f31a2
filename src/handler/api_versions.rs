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
    // No finalized features: transaction.version etc. stay unadvertised until implemented.
    ApiVersionsResponse::default().with_error_code(error_code).with_api_keys(api_keys).with_finalized_features_epoch(-1)
}

pub fn handle(_req: &ApiVersionsRequest, _version: i16) -> ApiVersionsResponse {
    response(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_advertised_api() {
        let r = handle(&ApiVersionsRequest::default(), 3);
        assert_eq!(r.api_keys.len(), SUPPORTED_APIS.len());
        assert!(r.api_keys.iter().any(|k| k.api_key == 0 && k.min_version == 0 && k.max_version == 11));
    }
}
