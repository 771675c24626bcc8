//! The one error type of the store API: what went wrong, on which key or
//! revision, and (for engine failures) the underlying cause as `source()`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::LeaseId;

/// Everything a [`Store`](crate::Store) operation can fail with.
///
/// Callers branch on the variant: `InvalidKey`, `ValueTooLarge` and
/// `InvalidTxn` are the caller's mistake (HTTP 400); `LeaseNotFound` is 404;
/// `Compacted` tells a watcher to re-read the current state and watch again
/// from the revision of that read; `Embedded` and `Etcd` are the engine's
/// failures (HTTP 503), with the cause in [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The key (or prefix) breaks the key rules (see [`crate::validate_key`]).
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The offending key, cut to 80 characters.
        key: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// The value is over [`crate::MAX_VALUE_BYTES`].
    #[error("value for key {key:?} is {size} bytes, over the limit of {limit} bytes")]
    ValueTooLarge {
        /// The key the value was for.
        key: String,
        /// The value's size.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// A transaction that can never apply: too many operations, or the same
    /// key twice.
    #[error("invalid transaction: {reason}")]
    InvalidTxn {
        /// What is wrong with it.
        reason: String,
    },

    /// A time-to-live that is zero or too long.
    #[error("invalid lease TTL of {ttl_secs} s: it must be between 1 s and {max_secs} s")]
    InvalidTtl {
        /// The TTL asked for, rounded up to whole seconds.
        ttl_secs: u64,
        /// The longest TTL allowed.
        max_secs: u64,
    },

    /// The lease does not exist: it expired, was revoked, or never was.
    #[error("lease {lease} not found: it expired, was revoked or never existed")]
    LeaseNotFound {
        /// The lease asked for.
        lease: LeaseId,
    },

    /// A lease with this id exists already. [`crate::Store::grant_lease`]
    /// draws ids at random and draws again on this, so callers of the store
    /// do not see it.
    #[error("lease {lease} exists already")]
    LeaseExists {
        /// The id asked for.
        lease: LeaseId,
    },

    /// The history a watch asked for is gone. Re-read the current state
    /// (`get`/`range`) and watch from the revision of that read plus one.
    #[error(
        "revision {requested} has been compacted (the oldest available is {oldest_available}): \
         re-read the current state and watch from its revision"
    )]
    Compacted {
        /// The first revision the watcher needed.
        requested: u64,
        /// The oldest revision still in the history.
        oldest_available: u64,
    },

    /// The embedded engine keeps every key and value in memory, up to
    /// [`crate::EmbeddedConfig::max_data_bytes`]; a write that would take
    /// them past it is refused whole (nothing is written, the file stays
    /// as it was). Deletes are always accepted.
    #[error(
        "the embedded store is full: this write would take its keys and values past {limit} bytes, \
         the most it keeps (it holds them all in memory); delete keys, or use etcd for more"
    )]
    Full {
        /// The bound, in bytes of keys and values (plus 48 per key).
        limit: u64,
    },

    /// A compaction asked for a revision the store has not reached yet.
    #[error("revision {requested} is in the future")]
    FutureRevision {
        /// The revision asked for.
        requested: u64,
    },

    /// The embedded engine failed to read or write its file. After a failed
    /// append the store stops (later requests get [`StoreError::Closed`]):
    /// what reached the disk is unknown until the file is opened again.
    #[error("embedded store {path}: {action} failed")]
    Embedded {
        /// The log file.
        path: PathBuf,
        /// What the store was doing ("open", "append to the log", ...).
        action: &'static str,
        /// The I/O error; shared, because one failed group commit fails
        /// every request in it.
        #[source]
        source: Arc<std::io::Error>,
    },

    /// The embedded engine's file is damaged (not merely cut short by a
    /// crash, which is repaired) or is not a Gantry store. Nothing was
    /// changed: restore the file from a backup, or move it away to start
    /// empty.
    #[error("embedded store {path}: corrupt {what}")]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// What is wrong, and where.
        what: String,
    },

    /// An I/O error outside the log itself (creating the data directory,
    /// starting the writer thread).
    #[error("embedded store {path}: {action} failed")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What the store was doing.
        action: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The etcd cluster failed or refused the request.
    #[cfg(feature = "etcd")]
    #[error("etcd {endpoints}: {action} failed")]
    Etcd {
        /// The endpoints the store talks to, comma-separated.
        endpoints: String,
        /// What the store was doing ("put", "watch", ...).
        action: &'static str,
        /// etcd-client's error.
        #[source]
        source: Box<etcd_client::Error>,
    },

    /// A write was in flight when the connection, the etcd member or the
    /// leader failed (or it got no answer in time): it may or may not have
    /// been applied. Plain puts and deletes are not sent again (that could
    /// apply them twice); read the key to learn which, then write again if
    /// needed. Compare-and-set writes and reads are retried instead and
    /// never end here. HTTP 503 with code `unknown_outcome`.
    #[cfg(feature = "etcd")]
    #[error(
        "etcd {endpoints}: the outcome of this {action} is unknown: it was in flight when the connection or \
         the etcd member failed, so it may or may not have been applied; read the key before writing it again"
    )]
    UnknownOutcome {
        /// The endpoints the store talks to, comma-separated.
        endpoints: String,
        /// What the store was doing.
        action: &'static str,
        /// What failed.
        #[source]
        source: Box<etcd_client::Error>,
    },

    /// The store was closed (or its writer stopped after a failed commit).
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// The same error for one more of the callers it reached (one failed
    /// group commit fails every request in it; one ended watch ends every
    /// watcher sharing it). Variants that carry plain data or a shared cause
    /// are copied; one whose cause cannot be shared becomes
    /// [`StoreError::Closed`], which is what the store is after such a
    /// failure.
    pub fn copy_for_another_caller(&self) -> StoreError {
        match self {
            StoreError::Compacted { requested, oldest_available } => {
                StoreError::Compacted { requested: *requested, oldest_available: *oldest_available }
            }
            StoreError::Embedded { path, action, source } => {
                StoreError::Embedded { path: path.clone(), action, source: Arc::clone(source) }
            }
            _ => StoreError::Closed,
        }
    }

    /// True when the caller sent something the store will never accept
    /// (an HTTP server answers 4xx), false for engine failures.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            StoreError::InvalidKey { .. }
                | StoreError::ValueTooLarge { .. }
                | StoreError::InvalidTxn { .. }
                | StoreError::InvalidTtl { .. }
                | StoreError::FutureRevision { .. }
        )
    }
}
