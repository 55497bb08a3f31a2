//! Stub (being built).

use super::ApiError;

pub(super) async fn browse() -> ApiError {
    ApiError::NotImplemented
}

pub(super) async fn produce() -> ApiError {
    ApiError::NotImplemented
}

