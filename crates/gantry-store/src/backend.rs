//! The engine interface behind [`Store`](crate::Store): what every engine
//! implements, after the store has validated the request.

use futures::future::BoxFuture;

use crate::{Engine, EtcdStats, GetResponse, Lease, LeaseId, RangeResponse, StoreError, Txn, Watch};

/// A write as the engines see it: the store has already checked keys, values
/// and transaction limits.
#[derive(Debug)]
pub(crate) enum Write {
    Txn(Txn),
    DeletePrefix(String),
}

/// What a write did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Written {
    /// False when a comparison failed and nothing was applied.
    pub succeeded: bool,
    /// The write's revision, or the current one if nothing changed.
    pub revision: u64,
    /// How many keys were deleted.
    pub deleted: u64,
}

/// One storage engine. Methods return boxed futures so that the store can
/// hold any engine behind one `Arc<dyn Backend>`.
pub(crate) trait Backend: Send + Sync + 'static {
    fn engine(&self) -> Engine;
    fn revision(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<GetResponse, StoreError>>;
    fn range<'a>(&'a self, prefix: &'a str, limit: Option<usize>) -> BoxFuture<'a, Result<RangeResponse, StoreError>>;
    fn write(&self, write: Write) -> BoxFuture<'_, Result<Written, StoreError>>;
    /// Grants lease `id` (chosen by the caller, at random) for `ttl_secs`;
    /// [`StoreError::LeaseExists`] if that id is taken.
    fn grant_lease(&self, id: LeaseId, ttl_secs: u64) -> BoxFuture<'_, Result<Lease, StoreError>>;
    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<std::time::Duration, StoreError>>;
    fn revoke_lease(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>>;
    fn watch<'a>(&'a self, prefix: &'a str, from_revision: u64) -> BoxFuture<'a, Result<Watch, StoreError>>;
    fn compact(&self, revision: u64) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Rewrites the engine's file compactly now (nothing to do on etcd).
    fn checkpoint(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Why the engine cannot serve now, known without asking it (etcd: no
    /// leader among the members that answer); `None` when nothing is known
    /// to be wrong.
    fn problem(&self) -> Option<String> {
        None
    }
    /// Counters of the etcd engine's member pool.
    fn etcd_stats(&self) -> Option<EtcdStats> {
        None
    }
}
