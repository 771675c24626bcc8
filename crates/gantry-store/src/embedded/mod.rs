//! The embedded engine: one redb file, one writer thread doing group commit,
//! reads on redb's MVCC snapshots, watches fed by a broadcast of committed
//! events with the persisted history as their fallback.

mod watcher;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use redb::{Database, ReadTransaction, ReadableDatabase, TableDefinition};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::backend::{Backend, Write, Written};
use crate::{
    EmbeddedConfig, Engine, Event, GetResponse, KeyValue, Lease, LeaseId, RangeResponse,
    StoreError, Watch,
};

pub(crate) mod codec;

/// How many revisions of watch history the embedded engine keeps by default:
/// a watcher can resume from any of the last 100,000 revisions, across
/// restarts.
pub const DEFAULT_HISTORY_REVISIONS: u64 = 100_000;

/// key → metadata and value ([`codec::encode_kv`]).
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv_v1");
/// revision → the events of that revision ([`codec::encode_events`]).
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events_v1");
/// lease id → TTL in seconds.
const LEASES: TableDefinition<i64, u64> = TableDefinition::new("leases_v1");
/// (lease id, key) → (): the keys to delete when a lease ends.
const LEASE_KEYS: TableDefinition<(i64, &str), ()> = TableDefinition::new("lease_keys_v1");
/// Counters: [`META_REVISION`], [`META_OLDEST`], [`META_NEXT_LEASE`].
const META: TableDefinition<&str, u64> = TableDefinition::new("meta_v1");

/// The last committed revision.
const META_REVISION: &str = "revision";
/// The oldest revision still in the watch history.
const META_OLDEST: &str = "oldest";
/// The id the next granted lease gets.
const META_NEXT_LEASE: &str = "next_lease";

/// How often lease deadlines are checked; a lease ends at most this much
/// after its TTL ran out.
const LEASE_TICK: Duration = Duration::from_millis(100);

/// Requests queued for the writer; senders wait when it is full.
const REQUEST_QUEUE: usize = 8192;

pub(crate) struct Embedded {
    inner: Arc<Inner>,
    requests: mpsc::Sender<writer::Request>,
}

/// What the writer thread, readers, watchers and the lease clock share.
pub(crate) struct Inner {
    db: Database,
    path: PathBuf,
    /// Every commit's events, in revision order, shared by all watchers.
    events: broadcast::Sender<Arc<[Event]>>,
    /// The last committed revision, published before its events are sent.
    revision: AtomicU64,
    /// Deadlines of the live leases. Keep-alives only touch this map: a
    /// restart gives every lease a fresh TTL, so deadlines need no disk.
    leases: Mutex<HashMap<i64, LeaseClock>>,
}

#[derive(Clone, Copy, Debug)]
struct LeaseClock {
    ttl: Duration,
    deadline: Instant,
}

impl Inner {
    fn error(&self, action: &'static str, source: impl Into<redb::Error>) -> StoreError {
        engine_error(&self.path, action, source)
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<i64, LeaseClock>> {
        // A panic while holding this lock leaves the map consistent (every
        // update is a single insert or remove), so poisoning is ignored.
        self.leases
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lease_expired(&self, id: i64, now: Instant) -> bool {
        self.leases()
            .get(&id)
            .is_none_or(|clock| clock.deadline <= now)
    }
}

fn engine_error(path: &Path, action: &'static str, source: impl Into<redb::Error>) -> StoreError {
    StoreError::Embedded {
        path: path.to_owned(),
        action,
        source: Arc::new(source.into()),
    }
}

impl Embedded {
    pub(crate) async fn open(config: EmbeddedConfig) -> Result<Embedded, StoreError> {
        let path = config.path.clone();
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_owned(),
                action: "create directory",
                source,
            })?;
        }
        let opened = tokio::task::spawn_blocking(move || writer::open_file(&path))
            .await
            .map_err(|_| StoreError::Closed)??;

        let now = Instant::now();
        let leases = opened
            .leases
            .iter()
            .map(|&(id, ttl_secs)| {
                let ttl = Duration::from_secs(ttl_secs);
                (
                    id,
                    LeaseClock {
                        ttl,
                        deadline: now + ttl,
                    },
                )
            })
            .collect();
        let (events, _) = broadcast::channel(config.watch_buffer.max(1));
        let inner = Arc::new(Inner {
            db: opened.db,
            path: config.path.clone(),
            events,
            revision: AtomicU64::new(opened.counters.revision),
            leases: Mutex::new(leases),
        });
        let (requests, queue) = mpsc::channel(REQUEST_QUEUE);
        writer::spawn(
            inner.clone(),
            queue,
            opened.counters,
            config.history_revisions.max(1),
        )?;
        tokio::spawn(expire_leases(Arc::downgrade(&inner), requests.downgrade()));
        Ok(Embedded { inner, requests })
    }

    async fn request(&self, op: writer::Op) -> Result<writer::Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(writer::Request {
                op,
                reply: Some(reply),
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `read` on a fresh snapshot, off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Inner, &ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let txn = inner.db.begin_read().map_err(|e| inner.error("read", e))?;
            read(&inner, &txn)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

/// The revision a snapshot was taken at.
fn snapshot_revision(inner: &Inner, txn: &ReadTransaction) -> Result<u64, StoreError> {
    let meta = txn.open_table(META).map_err(|e| inner.error("read", e))?;
    let revision = meta
        .get(META_REVISION)
        .map_err(|e| inner.error("read", e))?;
    Ok(revision.map_or(0, |guard| guard.value()))
}

fn decode(inner: &Inner, key: &str, record: &[u8]) -> Result<KeyValue, StoreError> {
    codec::decode_kv(key, record).ok_or_else(|| StoreError::Corrupt {
        path: inner.path.clone(),
        what: format!("record of key {key:?}"),
    })
}

impl Backend for Embedded {
    fn engine(&self) -> Engine {
        Engine::Embedded
    }

    fn revision(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        let revision = self.inner.revision.load(Ordering::SeqCst);
        async move { Ok(revision) }.boxed()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<GetResponse, StoreError>> {
        let key = key.to_owned();
        self.read(move |inner, txn| {
            let revision = snapshot_revision(inner, txn)?;
            let table = txn.open_table(KV).map_err(|e| inner.error("read", e))?;
            let kv = match table
                .get(key.as_str())
                .map_err(|e| inner.error("read", e))?
            {
                Some(record) => Some(decode(inner, &key, record.value())?),
                None => None,
            };
            Ok(GetResponse { kv, revision })
        })
        .boxed()
    }

    fn range<'a>(
        &'a self,
        prefix: &'a str,
        limit: Option<usize>,
    ) -> BoxFuture<'a, Result<RangeResponse, StoreError>> {
        let prefix = prefix.to_owned();
        self.read(move |inner, txn| {
            let revision = snapshot_revision(inner, txn)?;
            let table = txn.open_table(KV).map_err(|e| inner.error("read", e))?;
            let limit = limit.unwrap_or(usize::MAX);
            let mut kvs = Vec::new();
            let mut more = false;
            for entry in table
                .range(prefix.as_str()..)
                .map_err(|e| inner.error("read", e))?
            {
                let (key, record) = entry.map_err(|e| inner.error("read", e))?;
                let key = key.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                if kvs.len() == limit {
                    more = true;
                    break;
                }
                kvs.push(decode(inner, key, record.value())?);
            }
            Ok(RangeResponse {
                kvs,
                more,
                revision,
            })
        })
        .boxed()
    }

    fn write(&self, write: Write) -> BoxFuture<'_, Result<Written, StoreError>> {
        async move {
            match self.request(writer::Op::Write(write)).await? {
                writer::Outcome::Written(written) => Ok(written),
                other => unreachable!("a write was answered with {other:?}"),
            }
        }
        .boxed()
    }

    fn grant_lease(&self, ttl_secs: u64) -> BoxFuture<'_, Result<Lease, StoreError>> {
        async move {
            match self.request(writer::Op::Grant(ttl_secs)).await? {
                writer::Outcome::Lease(lease) => Ok(lease),
                other => unreachable!("a lease grant was answered with {other:?}"),
            }
        }
        .boxed()
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<Duration, StoreError>> {
        let now = Instant::now();
        let answer = match self.inner.leases().get_mut(&lease.0) {
            Some(clock) if clock.deadline > now => {
                clock.deadline = now + clock.ttl;
                Ok(clock.ttl)
            }
            _ => Err(StoreError::LeaseNotFound { lease }),
        };
        async move { answer }.boxed()
    }

    fn revoke_lease(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        async move { self.request(writer::Op::Revoke(lease)).await.map(drop) }.boxed()
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        from_revision: u64,
    ) -> BoxFuture<'a, Result<Watch, StoreError>> {
        let watch = watcher::watch(&self.inner, prefix.to_owned(), from_revision);
        async move { Ok(watch) }.boxed()
    }

    fn compact(&self, revision: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        async move { self.request(writer::Op::Compact(revision)).await.map(drop) }.boxed()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            match self.request(writer::Op::Close).await {
                Ok(_) | Err(StoreError::Closed) => Ok(()),
                Err(other) => Err(other),
            }
        }
        .boxed()
    }
}

/// Ends leases whose deadline passed, until the store is dropped.
async fn expire_leases(inner: Weak<Inner>, requests: mpsc::WeakSender<writer::Request>) {
    let mut tick = tokio::time::interval(LEASE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let expired: Vec<i64> = inner
            .leases()
            .iter()
            .filter(|(_, clock)| clock.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        drop(inner);
        if expired.is_empty() {
            continue;
        }
        let Some(requests) = requests.upgrade() else {
            return;
        };
        let (reply, answer) = oneshot::channel();
        let request = writer::Request {
            op: writer::Op::Expire(expired),
            reply: Some(reply),
        };
        if requests.send(request).await.is_err() {
            return;
        }
        drop(requests);
        // Wait for the revocation so the next tick does not ask again; a
        // failure (the disk) is retried at the next tick.
        let _ = answer.await;
    }
}
