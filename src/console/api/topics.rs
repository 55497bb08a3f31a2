//! Stub (being built).

use super::ApiError;

pub(super) async fn list() -> ApiError {
    ApiError::NotImplemented
}

pub(super) async fn create() -> ApiError {
    ApiError::NotImplemented
}

pub(super) async fn describe() -> ApiError {
    ApiError::NotImplemented
}

pub(super) async fn delete() -> ApiError {
    ApiError::NotImplemented
}

pub(super) async fn alter_incremental() -> ApiError {
    ApiError::NotImplemented
}

pub(super) async fn alter() -> ApiError {
    ApiError::NotImplemented
}

pub(super) async fn add_partitions() -> ApiError {
    ApiError::NotImplemented
}

