//! Stub (being built).

use super::ApiError;

pub(super) async fn list() -> ApiError {
    ApiError::NotImplemented
}

pub(super) async fn describe() -> ApiError {
    ApiError::NotImplemented
}

pub(super) async fn reset_offsets() -> ApiError {
    ApiError::NotImplemented
}

