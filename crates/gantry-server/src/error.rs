//! API errors: every failure becomes a status code and a JSON `ErrorBody`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gantry_api::{ErrorBody, ErrorCode};
use gantry_store::StoreError;

/// An error answer: a stable code (which carries its HTTP status) and a
/// message for people.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let code = match &e {
            StoreError::InvalidKey { .. } => ErrorCode::InvalidKey,
            StoreError::ValueTooLarge { .. } => ErrorCode::ValueTooLarge,
            StoreError::InvalidTxn { .. } => ErrorCode::InvalidTxn,
            StoreError::InvalidTtl { .. } => ErrorCode::InvalidTtl,
            StoreError::LeaseNotFound { .. } => ErrorCode::LeaseNotFound,
            StoreError::Compacted { .. } => ErrorCode::Compacted,
            StoreError::FutureRevision { .. } => ErrorCode::FutureRevision,
            _ => ErrorCode::Unavailable,
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
        ApiError::new(code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(ErrorBody::new(self.code, self.message))).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
