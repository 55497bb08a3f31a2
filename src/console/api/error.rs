//! The console API's one error type and its one mapping to HTTP: a Kafka error code keeps its
//! Kafka name (`TOPIC_ALREADY_EXISTS`), the HTTP status says who has to act (400 the caller,
//! 404 nothing there, 409 a state conflict, 503 retry later, 500 the server).
//!
//! Body: `{"error": {"code": "TOPIC_ALREADY_EXISTS", "message": "..."}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kafka_protocol::ResponseError;

/// What went wrong, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// A Kafka error code from the broker code path (never 0).
    Kafka { code: i16, message: String },
    /// The request itself is malformed (JSON, query parameter, missing field).
    BadRequest(String),
    /// No such API path.
    NotFound(String),
    /// The request body is over the limit.
    PayloadTooLarge(usize),
    /// This node runs no broker (a controller-only node).
    NoBroker,
    /// A write whose body is not declared JSON (`mod.rs`'s cross-site write guard).
    UnsupportedMediaType(String),
    /// A write a browser sent from another site (`mod.rs`'s cross-site write guard).
    Forbidden(String),
    /// The ACLs refuse the caller `operation` on the resource (`access.rs`): 403 with Kafka's
    /// `*_AUTHORIZATION_FAILED` code for the resource type.
    Denied {
        principal: String,
        operation: skiff_controller::acls::AclOperation,
        resource_type: skiff_controller::acls::ResourceType,
        name: String,
    },
}

/// The API's result type.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// A Kafka error `code` with `message` (Kafka's own description when empty).
    pub fn kafka(code: i16, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.is_empty() {
            message = describe(code);
        }
        ApiError::Kafka { code, message }
    }

    /// `error`'s code with `message`.
    pub fn of(error: ResponseError, message: impl Into<String>) -> Self {
        Self::kafka(error.code(), message)
    }

    /// The error's name: Kafka's `Errors` enum name, or one of the API's own.
    pub fn name(&self) -> String {
        match self {
            ApiError::Kafka { code, .. } => kafka_name(*code),
            ApiError::BadRequest(_) => "INVALID_REQUEST".into(),
            ApiError::NotFound(_) => "NOT_FOUND".into(),
            ApiError::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE".into(),
            ApiError::NoBroker => "BROKER_NOT_AVAILABLE".into(),
            ApiError::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE".into(),
            ApiError::Forbidden(_) => "FORBIDDEN".into(),
            ApiError::Denied { resource_type, .. } => kafka_name(crate::handler::errors::denied(*resource_type)),
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::Kafka { message, .. }
            | ApiError::BadRequest(message)
            | ApiError::NotFound(message)
            | ApiError::UnsupportedMediaType(message)
            | ApiError::Forbidden(message) => message.clone(),
            ApiError::PayloadTooLarge(limit) => format!("The request body is larger than {limit} bytes."),
            ApiError::NoBroker => "This node runs no broker; ask a broker's HTTP listener.".into(),
            ApiError::Denied { principal, operation, resource_type, name } => format!(
                "{principal} is not authorized to {} {} '{name}' (an ACL must allow it).",
                operation.name(),
                resource_type.name()
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Kafka { code, .. } => kafka_status(*code),
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NoBroker => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Forbidden(_) | ApiError::Denied { .. } => StatusCode::FORBIDDEN,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name(), self.message())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": { "code": self.name(), "message": self.message() } });
        if let ApiError::Denied { operation, resource_type, name, .. } = &self {
            // For pages and scripts: which permission is missing, without parsing the message.
            body["error"]["operation"] = operation.name().into();
            body["error"]["resource_type"] = resource_type.name().into();
            body["error"]["resource_name"] = name.as_str().into();
        }
        super::json(self.status(), &body)
    }
}

/// Kafka's name of error `code`: `UnknownTopicOrPartition` → `UNKNOWN_TOPIC_OR_PARTITION`.
pub fn kafka_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".into(),
        Some(ResponseError::Unknown(c)) => format!("UNKNOWN_ERROR_CODE_{c}"),
        Some(e) => screaming_snake(&e.to_string()),
    }
}

/// Kafka's description of error `code`, for errors the broker path gave no message for.
fn describe(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(ResponseError::Unknown(c)) => format!("Unknown error code {c}."),
        Some(e) => format!("{}.", screaming_snake(&e.to_string()).to_lowercase().replace('_', " ")),
        None => String::new(),
    }
}

fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The HTTP status of a Kafka error: retriable errors are 503 (the page retries), "not
/// there" is 404, state conflicts 409, everything the caller sent wrong 400.
fn kafka_status(code: i16) -> StatusCode {
    use ResponseError as E;
    let Some(e) = ResponseError::try_from_code(code) else { return StatusCode::OK };
    match e {
        E::UnknownTopicOrPartition | E::GroupIdNotFound | E::UnknownTopicId => StatusCode::NOT_FOUND,
        E::TopicAlreadyExists | E::NonEmptyGroup | E::ReassignmentInProgress | E::RebalanceInProgress => {
            StatusCode::CONFLICT
        }
        E::UnknownServerError | E::Unknown(_) => StatusCode::INTERNAL_SERVER_ERROR,
        e if e.is_retriable()
            || matches!(
                e,
                E::BrokerNotAvailable | E::CoordinatorNotAvailable | E::NotCoordinator | E::KafkaStorageError
            ) =>
        {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::BAD_REQUEST,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_names_and_statuses() {
        let e = ApiError::of(ResponseError::TopicAlreadyExists, "Topic 'x' already exists.");
        assert_eq!(e.name(), "TOPIC_ALREADY_EXISTS");
        assert_eq!(e.status(), StatusCode::CONFLICT);
        assert_eq!(kafka_name(17), "INVALID_TOPIC_EXCEPTION");
        assert_eq!(kafka_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(ApiError::kafka(3, "").status(), StatusCode::NOT_FOUND);
        assert_eq!(ApiError::kafka(6, "").status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ApiError::kafka(40, "").name(), "INVALID_CONFIG");
        assert_eq!(ApiError::kafka(40, "").status(), StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::kafka(68, "").status(), StatusCode::CONFLICT);
        assert_eq!(ApiError::kafka(-1, "").status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(ApiError::kafka(3, "").message(), "unknown topic or partition.");
    }
}
