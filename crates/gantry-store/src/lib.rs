//! Gantry's single source of truth: a revisioned key-value store with
//! compare-and-set, leases and resumable watches, over two engines.
//!
//! [`Store`] is the one handle the server uses; it is cheap to clone. Behind
//! it sits one of two engines with the same semantics, checked by one
//! conformance suite (`tests/suite.rs`):
//!
//! - **embedded** (the default): one crash-safe, append-only log file
//!   (`store.log` in the data directory), replayed into memory when opened.
//!   A single writer thread does *group commit*: the requests queued while
//!   the previous batch was syncing are decided together, appended as one
//!   checksummed record, and made durable with one `fdatasync`; only then
//!   are they applied to the in-memory state that reads see, and only then
//!   is every caller answered. An acknowledged write survives `SIGKILL` and
//!   power loss. A crash during an append leaves a torn last record, which
//!   was never acknowledged and is cut off at the next open; damage anywhere
//!   else is [`StoreError::Corrupt`], never silently dropped data. When the
//!   log is past [`DEFAULT_CHECKPOINT_BYTES`] and more than twice the live
//!   data, it is replaced by a checkpoint (the live keys, leases and watch
//!   history, written beside it and synced by another thread while writes
//!   go on, then renamed over it). The file is locked while open, so two
//!   processes never share it. Everything, keys and watch history, lives in
//!   memory: the engine is made for a control plane's tens of megabytes,
//!   and a write that would take the keys and values past
//!   [`EmbeddedConfig::max_data_bytes`] is refused with
//!   [`StoreError::Full`]. The same engine runs on a redb file instead of
//!   the log ([`StoreConfig::Redb`], `--store redb`), measured against it
//!   and slower (ARCHITECTURE.md, Decisions).
//! - **etcd** (cargo feature `etcd`, on by default): an etcd v3 cluster that
//!   several Gantry servers may share. Everything maps onto etcd's own
//!   primitives: our revision is etcd's revision, compare-and-set is a txn
//!   comparing `mod_revision` (or `create_revision == 0`), leases are etcd
//!   leases and watches are etcd watches from a start revision. Plain puts
//!   that arrive together are committed as one etcd transaction (group
//!   commit on top of etcd; see `etcd/batch.rs`), so they share a revision.
//!
//! Cargo feature `test-utils` adds `local_etcd`, a real etcd started for
//! tests and benchmarks; it is not product API.
//!
//! # Data model
//!
//! - **Keys** are UTF-8 strings of `/`-separated segments: non-empty, at most
//!   [`MAX_KEY_BYTES`], no control characters, no empty, `.` or `..`
//!   segments ([`validate_key`]). A bad key is [`StoreError::InvalidKey`].
//! - **Values** are bytes (callers store JSON), at most [`MAX_VALUE_BYTES`];
//!   a larger one is [`StoreError::ValueTooLarge`]. Nothing is stored when a
//!   request is refused.
//! - **Revisions**: every write that changes something bumps one global
//!   revision (a transaction or a prefix delete is one revision, however many
//!   keys it touches; a delete of nothing bumps nothing). Each key carries
//!   `create_revision`, `mod_revision`, `version` (writes since creation) and
//!   an optional lease. Revisions only grow. Concurrent writes may share a
//!   revision on etcd (never two writes of one key). An empty store is at revision 0
//!   (embedded) or 1 (etcd); compare revisions, never assume their values.
//! - **Reads** (`get`, `range`) return the revision they were served at: the
//!   state they show includes every write up to that revision and nothing
//!   after it. Watching from that revision plus one continues exactly where
//!   the read left off.
//!
//! # Compare-and-set and transactions
//!
//! [`Store::compare_and_put`] / [`Store::compare_and_delete`] apply only if the
//! key's `mod_revision` equals the expected one, where `0` means "the key must
//! not exist". They return whether they applied; a lost race is
//! `succeeded == false`, not an error. [`Txn`] generalises this to up to
//! [`MAX_TXN_OPS`] comparisons and operations applied atomically as one
//! revision.
//!
//! # Leases
//!
//! [`Store::grant_lease`] creates a lease with a time-to-live (whole seconds,
//! rounded up; etcd may raise very short TTLs to its minimum, the granted TTL
//! is returned). Keys written with [`Store::put_with_lease`] are deleted, with
//! delete events, when the lease expires or is revoked. [`Store::keep_alive`]
//! restarts the full TTL. Like etcd after a leader change, the embedded engine
//! gives every lease that was alive a fresh full TTL when it is reopened: a
//! machine that kept its lease alive is not expired because Gantry restarted.
//!
//! # Watches
//!
//! [`Store::watch`] streams every change under a prefix in revision order,
//! each exactly once, starting at `from_revision` (0 means "changes after
//! now"), including changes already made: resume after a disconnect by
//! watching from the last revision seen plus one. If that history is gone the
//! stream yields [`StoreError::Compacted`] and ends: re-read and watch again,
//! never a silent gap. The embedded engine keeps the last
//! [`DEFAULT_HISTORY_REVISIONS`] revisions of history (at most
//! [`DEFAULT_HISTORY_BYTES`] of keys and values) in memory and in its log,
//! so it survives restarts; a watcher that falls behind the in-memory
//! fan-out buffer catches up from that history by itself and only gets
//! `Compacted` once it is behind the history too. Fan-out is one broadcast
//! of shared events, filtered per watcher, so a thousand watchers of one
//! prefix cost one commit.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend;
mod embedded;
mod error;
#[cfg(feature = "etcd")]
mod etcd;
mod key;
#[cfg(feature = "test-utils")]
pub mod local_etcd;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use bytes::Bytes;

use backend::{Backend, Write};
pub use embedded::{
    DEFAULT_CHECKPOINT_BYTES, DEFAULT_HISTORY_BYTES, DEFAULT_HISTORY_REVISIONS, DEFAULT_MAX_DATA_BYTES,
};
pub use error::StoreError;
pub use key::{MAX_KEY_BYTES, MAX_TXN_OPS, MAX_VALUE_BYTES, validate_key, validate_prefix};
pub use watch::Watch;

/// Longest lease time-to-live accepted: one year.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// A lease identifier, as etcd numbers them (positive, never 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

impl LeaseId {
    /// A fresh id: 63 random bits from the operating system, never 0.
    ///
    /// Random, not counted: a lease's keys go when it is revoked, so an id
    /// someone could guess (etcd's and the old embedded counter's were the
    /// previous id plus one) would let them take a machine and its
    /// instances out of the inventory.
    pub fn random() -> LeaseId {
        loop {
            let mut bytes = [0u8; 8];
            // The OS's generator only fails where there is none at all
            // (no getrandom(2), no /dev/urandom): nothing can run there.
            getrandom::fill(&mut bytes).expect("the operating system's random generator");
            let id = (u64::from_le_bytes(bytes) >> 1) as i64;
            if id != 0 {
                return LeaseId(id);
            }
        }
    }
}

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Its identifier, for `put_with_lease`, `keep_alive` and `revoke_lease`.
    pub id: LeaseId,
    /// The time-to-live granted, restarted by every keep-alive.
    pub ttl: Duration,
}

/// One key with its value and revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Bytes,
    /// The revision that created the key (since it last did not exist).
    pub create_revision: u64,
    /// The revision of the last write to the key.
    pub mod_revision: u64,
    /// How many times the key was written since it was created (1 after the
    /// first put).
    pub version: u64,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

/// The answer to [`Store::get`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetResponse {
    /// The key, if it exists.
    pub kv: Option<KeyValue>,
    /// The revision the read was served at.
    pub revision: u64,
}

/// The answer to [`Store::range`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResponse {
    /// The keys under the prefix, sorted by key (byte order).
    pub kvs: Vec<KeyValue>,
    /// True when the limit cut the answer short.
    pub more: bool,
    /// The revision the read was served at.
    pub revision: u64,
}

/// The answer to a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeleteResponse {
    /// How many keys were deleted.
    pub deleted: u64,
    /// The revision of the delete, or the current revision if nothing was
    /// deleted.
    pub revision: u64,
}

/// The answer to a compare-and-set or a [`Txn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    /// True if every comparison held and the operations were applied.
    pub succeeded: bool,
    /// The revision of the transaction if it changed something, else the
    /// current revision.
    pub revision: u64,
}

/// What a watch event did to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The key was created or overwritten.
    Put,
    /// The key was deleted (explicitly, by prefix, or by its lease ending).
    Delete,
}

/// One change, as a watch delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key.
    pub key: String,
    /// The new value; empty for a delete.
    pub value: Bytes,
    /// The revision of the change. Several events may share one revision
    /// (a transaction, a prefix delete, a lease's end).
    pub mod_revision: u64,
}

/// A condition of a [`Txn`]: the key's `mod_revision` equals this one
/// (`0`: the key does not exist).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The key compared.
    pub key: String,
    /// The expected `mod_revision`; `0` means "must not exist".
    pub mod_revision: u64,
}

/// One operation of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    /// Write a key, optionally attached to a lease.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
        /// The lease, if any.
        lease: Option<LeaseId>,
    },
    /// Delete a key (nothing happens if it does not exist).
    Delete {
        /// The key.
        key: String,
    },
}

impl TxnOp {
    fn key(&self) -> &str {
        match self {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } => key,
        }
    }
}

/// An atomic transaction: if every comparison holds, apply every operation as
/// one revision; otherwise change nothing.
///
/// ```
/// # use gantry_store::Txn;
/// let txn = Txn::new()
///     .when_mod_revision("kv/leader", 0)
///     .put("kv/leader", "web-1")
///     .delete("kv/candidates/web-1");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// The comparisons, all of which must hold.
    pub compares: Vec<Compare>,
    /// The operations, applied in order; each key at most once.
    pub ops: Vec<TxnOp>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Requires `key`'s `mod_revision` to be `mod_revision` (`0`: absent).
    pub fn when_mod_revision(mut self, key: impl Into<String>, mod_revision: u64) -> Txn {
        self.compares.push(Compare { key: key.into(), mod_revision });
        self
    }

    /// Writes `key`.
    pub fn put(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Txn {
        self.ops.push(TxnOp::Put { key: key.into(), value: value.into(), lease: None });
        self
    }

    /// Writes `key` attached to `lease`.
    pub fn put_with_lease(mut self, key: impl Into<String>, value: impl Into<Bytes>, lease: LeaseId) -> Txn {
        self.ops.push(TxnOp::Put { key: key.into(), value: value.into(), lease: Some(lease) });
        self
    }

    /// Deletes `key`.
    pub fn delete(mut self, key: impl Into<String>) -> Txn {
        self.ops.push(TxnOp::Delete { key: key.into() });
        self
    }

    fn validate(&self) -> Result<(), StoreError> {
        if self.ops.len() > MAX_TXN_OPS || self.compares.len() > MAX_TXN_OPS {
            return Err(StoreError::InvalidTxn {
                reason: format!(
                    "{} comparisons and {} operations, over the limit of {MAX_TXN_OPS} each",
                    self.compares.len(),
                    self.ops.len()
                ),
            });
        }
        for compare in &self.compares {
            validate_key(&compare.key)?;
        }
        let mut seen = std::collections::HashSet::new();
        for op in &self.ops {
            validate_key(op.key())?;
            if let TxnOp::Put { key, value, .. } = op {
                key::validate_value(key, value)?;
            }
            if !seen.insert(op.key()) {
                return Err(StoreError::InvalidTxn {
                    reason: format!("key {:?} appears in more than one operation", op.key()),
                });
            }
        }
        Ok(())
    }
}

/// What the etcd engine's member pool has done (for `/metrics`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdStats {
    /// The member requests go to now.
    pub endpoint: String,
    /// Members configured.
    pub members: usize,
    /// Members that answered the last probe.
    pub members_up: usize,
    /// Whether some member that answers follows a live leader.
    pub leader: bool,
    /// Times requests moved to another member.
    pub failovers: u64,
    /// Attempts sent again (to another member, or after a pause).
    pub retries: u64,
    /// Plain writes answered "unknown outcome".
    pub unknown_outcomes: u64,
}

/// Which engine a [`Store`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// One append-only log file on this machine.
    Embedded,
    /// The embedded engine on one redb file instead of the log.
    Redb,
    /// An etcd v3 cluster.
    Etcd,
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Embedded => "embedded",
            Engine::Redb => "redb",
            Engine::Etcd => "etcd",
        })
    }
}

/// How to open a [`Store`].
#[derive(Clone, Debug)]
pub enum StoreConfig {
    /// The embedded engine.
    Embedded(EmbeddedConfig),
    /// The embedded engine on a redb file (`path` is that file).
    Redb(EmbeddedConfig),
    /// An etcd cluster.
    #[cfg(feature = "etcd")]
    Etcd(EtcdConfig),
}

/// Settings of the embedded engine.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// The log file; its directory is created if missing.
    pub path: PathBuf,
    /// How many revisions of watch history to keep (default
    /// [`DEFAULT_HISTORY_REVISIONS`]).
    pub history_revisions: u64,
    /// How many bytes of keys and values the watch history may hold; older
    /// revisions are dropped sooner when it is full (default
    /// [`DEFAULT_HISTORY_BYTES`]).
    pub history_bytes: usize,
    /// How many commits the in-memory watch fan-out buffers before a slow
    /// watcher has to catch up from the history (default 4096).
    pub watch_buffer: usize,
    /// The log is rewritten as a checkpoint once it is larger than this and
    /// than twice the checkpoint (default [`DEFAULT_CHECKPOINT_BYTES`]).
    pub checkpoint_bytes: u64,
    /// The most bytes of keys and values (plus 48 per key) the store holds:
    /// it keeps them all in memory, so a write past this bound is refused
    /// with [`StoreError::Full`] (default [`DEFAULT_MAX_DATA_BYTES`]).
    pub max_data_bytes: u64,
}

impl EmbeddedConfig {
    /// Defaults for the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> EmbeddedConfig {
        EmbeddedConfig {
            path: path.into(),
            history_revisions: DEFAULT_HISTORY_REVISIONS,
            history_bytes: DEFAULT_HISTORY_BYTES,
            watch_buffer: 4096,
            checkpoint_bytes: DEFAULT_CHECKPOINT_BYTES,
            max_data_bytes: DEFAULT_MAX_DATA_BYTES,
        }
    }

    /// Defaults for the file `store.log` in the data directory `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> EmbeddedConfig {
        EmbeddedConfig::new(dir.into().join("store.log"))
    }

    /// Defaults for the redb engine's file `store.redb` in the data
    /// directory `dir`.
    pub fn redb_in_dir(dir: impl Into<PathBuf>) -> EmbeddedConfig {
        EmbeddedConfig::new(dir.into().join("store.redb"))
    }
}

/// Settings of the etcd engine.
#[cfg(feature = "etcd")]
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs, such as `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Prepended to every key in etcd (and removed from every key read), so
    /// that Gantry can share a cluster with other users: e.g. `"gantry/"`.
    pub namespace: String,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// TLS to etcd (then the endpoints are `https://`); `None`: plaintext.
    pub tls: Option<EtcdTls>,
    /// etcd's own authentication (`etcdctl auth enable`): a user and its password.
    pub auth: Option<EtcdAuth>,
}

/// How the store speaks TLS to etcd.
#[cfg(feature = "etcd")]
#[derive(Clone)]
pub struct EtcdTls {
    /// The CA that signed etcd's certificates (PEM).
    pub ca_pem: String,
    /// This client's certificate and key (PEM), for etcd's
    /// `--client-cert-auth`.
    pub client: Option<(String, String)>,
}

#[cfg(feature = "etcd")]
impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls").field("client_certificate", &self.client.is_some()).finish_non_exhaustive()
    }
}

/// A user of etcd's authentication. Its password never shows in `Debug`
/// output or errors.
#[cfg(feature = "etcd")]
#[derive(Clone)]
pub struct EtcdAuth {
    /// The etcd user.
    pub user: String,
    /// Its password.
    pub password: String,
}

#[cfg(feature = "etcd")]
impl std::fmt::Debug for EtcdAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdAuth").field("user", &self.user).field("password", &"(secret)").finish()
    }
}

#[cfg(feature = "etcd")]
impl EtcdConfig {
    /// Defaults for these endpoints, with no namespace.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> EtcdConfig {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            namespace: String::new(),
            connect_timeout: Duration::from_secs(5),
            tls: None,
            auth: None,
        }
    }

    /// The same cluster over TLS: `http://` endpoints become `https://`.
    pub fn with_tls(mut self, tls: EtcdTls) -> EtcdConfig {
        for endpoint in &mut self.endpoints {
            if let Some(rest) = endpoint.strip_prefix("http://") {
                *endpoint = format!("https://{rest}");
            }
        }
        self.tls = Some(tls);
        self
    }

    /// Parses `etcd://HOST:PORT[,HOST:PORT...]` (the `--store` flag).
    pub fn from_url(url: &str) -> Option<EtcdConfig> {
        let hosts = url.strip_prefix("etcd://")?;
        let endpoints: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|host| !host.is_empty())
            .map(|host| format!("http://{host}"))
            .collect();
        (!endpoints.is_empty()).then(|| EtcdConfig::new(endpoints))
    }
}

/// The handle to the store. Cheap to clone; every clone is the same store.
///
/// See the [crate documentation](crate) for the semantics every engine
/// guarantees.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("engine", &self.backend.engine()).finish()
    }
}

impl Store {
    /// Opens the engine `config` names.
    pub async fn open(config: StoreConfig) -> Result<Store, StoreError> {
        match config {
            StoreConfig::Embedded(config) => Store::open_embedded(config).await,
            StoreConfig::Redb(config) => Store::open_redb(config).await,
            #[cfg(feature = "etcd")]
            StoreConfig::Etcd(config) => Store::connect_etcd(config).await,
        }
    }

    /// Opens (or creates) the embedded store file, replaying it into
    /// memory. Must be called inside a tokio runtime. The file is locked: a
    /// second open fails until this store is closed or dropped.
    pub async fn open_embedded(config: EmbeddedConfig) -> Result<Store, StoreError> {
        let backend = embedded::Embedded::open(config).await?;
        Ok(Store { backend: Arc::new(backend) })
    }

    /// Opens (or creates) the embedded engine on the redb file at
    /// `config.path` (checkpoint settings do not apply: redb keeps its
    /// file compact itself). Locked like the log.
    pub async fn open_redb(config: EmbeddedConfig) -> Result<Store, StoreError> {
        let backend = embedded::Embedded::open_redb(config).await?;
        Ok(Store { backend: Arc::new(backend) })
    }

    /// Connects to an etcd cluster.
    #[cfg(feature = "etcd")]
    pub async fn connect_etcd(config: EtcdConfig) -> Result<Store, StoreError> {
        let backend = etcd::Etcd::connect(config).await?;
        Ok(Store { backend: Arc::new(backend) })
    }

    /// Which engine this store runs on.
    pub fn engine(&self) -> Engine {
        self.backend.engine()
    }

    /// Why the store cannot serve now, if it knows without asking: on etcd,
    /// when no member that answers follows a live leader (quorum lost, or
    /// an election under way). `None` otherwise.
    pub fn problem(&self) -> Option<String> {
        self.backend.problem()
    }

    /// The etcd engine's member in use and failover counters; `None` on the
    /// embedded engines.
    pub fn etcd_stats(&self) -> Option<EtcdStats> {
        self.backend.etcd_stats()
    }

    /// The current revision.
    pub async fn revision(&self) -> Result<u64, StoreError> {
        self.backend.revision().await
    }

    /// Reads one key.
    pub async fn get(&self, key: &str) -> Result<GetResponse, StoreError> {
        validate_key(key)?;
        self.backend.get(key).await
    }

    /// Reads the keys under `prefix` (`""`: every key), sorted by key, at
    /// most `limit` of them.
    pub async fn range(&self, prefix: &str, limit: Option<usize>) -> Result<RangeResponse, StoreError> {
        validate_prefix(prefix)?;
        if limit == Some(0) {
            // etcd reads a limit of 0 as "no limit": ask for one key to learn `more`.
            let mut response = self.backend.range(prefix, Some(1)).await?;
            response.more = !response.kvs.is_empty();
            response.kvs.clear();
            return Ok(response);
        }
        self.backend.range(prefix, limit).await
    }

    /// Writes `key`, returning the write's revision.
    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<u64, StoreError> {
        let txn = Txn::new().put(key, value);
        Ok(self.write_txn(txn).await?.revision)
    }

    /// Writes `key` attached to `lease`: the key is deleted when the lease
    /// ends. Fails with [`StoreError::LeaseNotFound`] if the lease is gone.
    pub async fn put_with_lease(&self, key: &str, value: impl Into<Bytes>, lease: LeaseId) -> Result<u64, StoreError> {
        let txn = Txn::new().put_with_lease(key, value, lease);
        Ok(self.write_txn(txn).await?.revision)
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<DeleteResponse, StoreError> {
        let written = self.write_txn(Txn::new().delete(key)).await?;
        Ok(DeleteResponse { deleted: written.deleted, revision: written.revision })
    }

    /// Deletes every key under `prefix` as one revision. The empty prefix is
    /// refused, so one call cannot wipe the store.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<DeleteResponse, StoreError> {
        validate_prefix(prefix)?;
        if prefix.is_empty() {
            return Err(StoreError::InvalidKey {
                key: String::new(),
                reason: "deleting by the empty prefix would delete every key",
            });
        }
        let written = self.backend.write(Write::DeletePrefix(prefix.to_owned())).await?;
        Ok(DeleteResponse { deleted: written.deleted, revision: written.revision })
    }

    /// Writes `key` only if its `mod_revision` is `expected` (`0`: only if
    /// it does not exist).
    pub async fn compare_and_put(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        expected: u64,
    ) -> Result<TxnResponse, StoreError> {
        self.txn(Txn::new().when_mod_revision(key, expected).put(key, value)).await
    }

    /// Deletes `key` only if its `mod_revision` is `expected`.
    pub async fn compare_and_delete(&self, key: &str, expected: u64) -> Result<TxnResponse, StoreError> {
        self.txn(Txn::new().when_mod_revision(key, expected).delete(key)).await
    }

    /// Applies a [`Txn`] atomically.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        let written = self.write_txn(txn).await?;
        Ok(TxnResponse { succeeded: written.succeeded, revision: written.revision })
    }

    async fn write_txn(&self, txn: Txn) -> Result<backend::Written, StoreError> {
        txn.validate()?;
        self.backend.write(Write::Txn(txn)).await
    }

    /// Grants a lease of `ttl` (rounded up to whole seconds, at least 1 s).
    pub async fn grant_lease(&self, ttl: Duration) -> Result<Lease, StoreError> {
        let ttl_secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        if ttl_secs == 0 || ttl_secs > MAX_LEASE_TTL.as_secs() {
            return Err(StoreError::InvalidTtl { ttl_secs, max_secs: MAX_LEASE_TTL.as_secs() });
        }
        // Two draws of 63 random bits meet about never; a few more draws
        // make it never in practice.
        let mut attempts = 0;
        loop {
            match self.backend.grant_lease(LeaseId::random(), ttl_secs).await {
                Err(StoreError::LeaseExists { .. }) if attempts < 3 => attempts += 1,
                granted => return granted,
            }
        }
    }

    /// Restarts a lease's full TTL, returning it.
    pub async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        self.backend.keep_alive(lease).await
    }

    /// Ends a lease now, deleting its keys (one revision, with delete events).
    pub async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.backend.revoke_lease(lease).await
    }

    /// Watches the keys under `prefix` (`""`: every key) from
    /// `from_revision` (`0`: only changes after now). See the crate docs.
    pub async fn watch(&self, prefix: &str, from_revision: u64) -> Result<Watch, StoreError> {
        validate_prefix(prefix)?;
        self.backend.watch(prefix, from_revision).await
    }

    /// Discards watch history before `revision`: watching from an older
    /// revision then fails with [`StoreError::Compacted`]. Compacting at or
    /// below an already compacted revision does nothing.
    pub async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        self.backend.compact(revision).await
    }

    /// Rewrites the embedded store's file compactly now, holding writes
    /// meanwhile: the log is replaced by a checkpoint of the live state
    /// (as it is by itself once it outgrows the state), a redb file is
    /// compacted. Nothing to do on etcd, which compacts its own files.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        self.backend.checkpoint().await
    }

    /// Stops this store. Embedded: later writes on any clone fail with
    /// [`StoreError::Closed`]; returns once the writer has stopped and the
    /// file is unlocked (every acknowledged write is already durable). etcd: nothing to release; the
    /// connection closes with the last clone.
    pub async fn close(self) -> Result<(), StoreError> {
        self.backend.close().await
    }
}
