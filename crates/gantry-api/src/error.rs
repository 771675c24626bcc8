//! The error body of every 4xx/5xx answer (the server's and the agent's
//! own API): `{"error": {"code": "...", "message": "..."}}`, with the codes
//! as one enum so that programs match on a type, not on strings.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

/// Every 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code, message: message.into() } }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs.
    pub code: ErrorCode,
    /// For people: what is wrong and how to fix it.
    pub message: String,
}

macro_rules! error_codes {
    ($($variant:ident = $name:literal, $status:literal, $doc:literal;)*) => {
        /// A stable error code, and the HTTP status it is answered with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(#[doc = $doc] $variant,)*
            /// A code this version does not know (a newer server's).
            Unknown,
        }

        impl ErrorCode {
            /// Every code but [`ErrorCode::Unknown`].
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The wire name: `not_found`, `cas_failed`, ...
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                    ErrorCode::Unknown => "unknown",
                }
            }

            /// The HTTP status a server answers this code with.
            pub fn http_status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                    ErrorCode::Unknown => 500,
                }
            }

            /// The code named `name`; [`ErrorCode::Unknown`] for any other.
            pub fn from_name(name: &str) -> ErrorCode {
                match name {
                    $($name => ErrorCode::$variant,)*
                    _ => ErrorCode::Unknown,
                }
            }
        }
    };
}

error_codes! {
    NotFound = "not_found", 404, "The thing asked for does not exist (or the route does not).";
    Unauthorized = "unauthorized", 401, "No token, or one the server does not know (unknown, revoked or expired).";
    Forbidden = "forbidden", 403, "The token does not grant this.";
    MethodNotAllowed = "method_not_allowed", 405, "The route exists, but not with this method.";
    InvalidPath = "invalid_path", 400, "The request's path is not valid (not UTF-8, bad percent-encoding).";
    InvalidId = "invalid_id", 400, "An id in the path is not one key segment.";
    InvalidKey = "invalid_key", 400, "A key or prefix the store does not accept.";
    InvalidBody = "invalid_body", 400, "The body does not parse as what the route takes.";
    InvalidQuery = "invalid_query", 400, "A query parameter is malformed.";
    InvalidEventId = "invalid_event_id", 400, "`Last-Event-ID` is not `REVISION.INDEX`.";
    InvalidLease = "invalid_lease", 400, "A lease id is not a hex number.";
    InvalidTtl = "invalid_ttl", 400, "A lease TTL out of range.";
    InvalidTxn = "invalid_txn", 400, "A transaction the store refuses.";
    FutureRevision = "future_revision", 400, "A watch asked to start after the store's revision.";
    BodyTooLarge = "body_too_large", 413, "The request body is over the limit.";
    ValueTooLarge = "value_too_large", 413, "A value is over the store's limit.";
    QuotaExceeded = "quota_exceeded", 413, "The write would take its token over its quota of keys or bytes.";
    TooManyRequests = "too_many_requests", 429, "Over the request rate of its token (or client address): retry after `Retry-After` seconds.";
    LimitExceeded = "limit_exceeded", 429, "Its token (or client address) holds as many watches or leases as the server allows.";
    RolloutInProgress = "rollout_in_progress", 409, "Another rollout of the service is running: the error names who deploys what.";
    NoRollout = "no_rollout", 409, "No rollout of the service is running (promote, abort).";
    ArtifactMissing = "artifact_missing", 409, "The release names an artifact the store does not hold: upload it first.";
    ArtifactMismatch = "artifact_mismatch", 400, "The uploaded bytes do not hash to the SHA-256 in the path.";
    NoArtifactStore = "no_artifact_store", 503, "This server keeps no artifacts.";
    CasFailed = "cas_failed", 409, "A compare-and-set lost: the key changed (or exists, or does not).";
    LeaseNotFound = "lease_not_found", 404, "The lease expired or never existed.";
    Compacted = "compacted", 410, "The history asked for is no longer kept.";
    CorruptValue = "corrupt_value", 500, "A stored document does not decode as its type.";
    InvalidValue = "invalid_value", 500, "A stored KV value is not UTF-8.";
    Internal = "internal", 500, "Something failed on the server's side (a file it could not read).";
    Unavailable = "unavailable", 503, "The store cannot answer now.";
    UnknownOutcome = "unknown_outcome", 504, "A write was in flight when the store's connection or etcd member failed: it may or may not have been applied. Read the key before writing it again (it was not retried, so it was not applied twice).";
    BadAgentStatus = "bad_agent_status", 502, "An agent's published status does not decode.";
    AgentUnreachable = "agent_unreachable", 502, "The server could not reach the agent's API.";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ErrorCode, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(ErrorCode::from_name(&name))
    }
}

impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .description(Some("Stable error code; the HTTP status goes with it."))
            .into()
    }
}

impl utoipa::ToSchema for ErrorCode {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_name() {
        for &code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_name(code.as_str()), code);
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
            assert!((400..600).contains(&code.http_status()), "{code}");
        }
    }

    #[test]
    fn a_code_this_version_does_not_know_is_unknown_not_an_error() {
        let body: ErrorBody = serde_json::from_str(r#"{"error":{"code":"brand_new","message":"m"}}"#).unwrap();
        assert_eq!(body.error.code, ErrorCode::Unknown);
    }
}
