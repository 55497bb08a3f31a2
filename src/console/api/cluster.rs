//! Stub (being built).

use super::ApiError;

pub(super) async fn cluster() -> ApiError {
    ApiError::NotImplemented
}

pub(super) async fn brokers() -> ApiError {
    ApiError::NotImplemented
}

