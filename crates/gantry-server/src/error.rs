//! API errors: every failure becomes a status code and a JSON `ErrorBody`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gantry_api::{ErrorBody, ErrorDetail};
use gantry_store::StoreError;

/// An error answer: status, stable code, message for people.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let (status, code) = match &e {
            StoreError::InvalidKey { .. } => (StatusCode::BAD_REQUEST, "invalid_key"),
            StoreError::ValueTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "value_too_large"),
            StoreError::InvalidTxn { .. } => (StatusCode::BAD_REQUEST, "invalid_txn"),
            StoreError::InvalidTtl { .. } => (StatusCode::BAD_REQUEST, "invalid_ttl"),
            StoreError::LeaseNotFound { .. } => (StatusCode::NOT_FOUND, "lease_not_found"),
            StoreError::Compacted { .. } => (StatusCode::GONE, "compacted"),
            StoreError::FutureRevision { .. } => (StatusCode::BAD_REQUEST, "future_revision"),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        // The full chain, for people reading the answer; store errors keep
        // their causes as sources.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        ApiError::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message } };
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
