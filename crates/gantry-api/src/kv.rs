//! The free-form key-value space, writes, leases and listings.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One key of the free-form KV space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KvEntry {
    /// The KV key (without the store's `kv/` prefix).
    pub key: String,
    /// The user's value, as text.
    pub value: String,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
    /// The lease, as a hex id, if the key is attached to one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lease: Option<String>,
}

/// `GET /v1/kv?prefix=...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KvList {
    pub revision: u64,
    pub entries: Vec<KvEntry>,
    /// True when `limit` cut the list short.
    pub more: bool,
}

/// The answer to a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WriteResult {
    pub revision: u64,
}

/// The answer to a delete: the store's revision after it, and how many keys went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeleteResult {
    pub revision: u64,
    pub deleted: u64,
}

/// `POST /v1/leases`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    pub ttl_secs: u64,
}

/// A granted or renewed lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LeaseGrant {
    /// Hex id, as `?lease=` takes it.
    pub id: String,
    pub ttl_secs: u64,
}

/// A list of documents (machines, groups, services, instances, agents'
/// statuses), with the revision it was read at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Listing<T> {
    pub revision: u64,
    pub items: Vec<T>,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthStatus {
    /// `ok` when the store answers.
    pub status: String,
    /// The store engine: `embedded` or `etcd`.
    pub store: String,
    pub revision: u64,
}
