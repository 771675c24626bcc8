//! What `GET /v1/watch` streams: one [`WatchEvent`] per Server-Sent Event,
//! or a final [`ResetEvent`] when the watcher must re-read.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One change, as `GET /v1/watch` streams it (one SSE `data:` line each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WatchEvent {
    pub kind: WatchKind,
    /// The store key (`kv/datastores/X`, `instances/api/...`).
    pub key: String,
    /// The new value; absent for a delete.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value: Option<String>,
    pub revision: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WatchKind {
    Put,
    Delete,
}

/// The SSE event name a watch uses when the watcher must re-read: the
/// revision it asked for is no longer in the history (or it fell too far
/// behind). Its data is a [`ResetEvent`].
pub const WATCH_RESET_EVENT: &str = "reset";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResetEvent {
    /// The oldest revision the server can still replay; re-read (a read
    /// answers with its revision), then watch from that revision + 1.
    pub oldest_available: u64,
    pub message: String,
}
