//! API errors: every failure becomes a status code and a JSON `ErrorBody`,
//! including the requests the framework would refuse by itself (an unknown
//! route, a method the route does not take, path ids that do not decode).

use axum::Json;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use gantry_api::{ErrorBody, ErrorCode};
use gantry_store::StoreError;
use serde::de::DeserializeOwned;

/// An error answer: a stable code (which carries its HTTP status) and a
/// message for people.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds to send as `Retry-After` (a rate limit's 429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into(), retry_after: None }
    }

    /// The same error, telling the client to come back in `seconds`.
    pub fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds);
        self
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
            StoreError::UnknownOutcome { .. } => ErrorCode::UnknownOutcome,
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
        let status = self.status();
        let mut response = (status, Json(ErrorBody::new(self.code, self.message))).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Where no route matches: a JSON 404.
pub async fn no_route(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no API route {}; the routes are in GET /v1/openapi.json (openapi/gantry.json in the repository)",
        uri.path()
    ))
}

/// Where the route exists but not with this method: a JSON 405 (axum adds
/// the `Allow` header with the methods the route takes).
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}; the Allow header lists the methods it takes", uri.path()),
    )
}

/// The path's parameters (`{id}`, `(service, id)`), decoded as axum does,
/// with a JSON 400 `invalid_path` when they do not decode.
#[derive(Debug)]
pub struct Ids<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Ids<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Ids<T>, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(ids)) => Ok(Ids(ids)),
            Err(e) => Err(ApiError::new(ErrorCode::InvalidPath, e.body_text())),
        }
    }
}
