//! The embedded engine: one append-only log file replayed into memory at
//! open, one writer thread doing group commit (one record and one
//! `fdatasync` per batch), reads served from memory, watches fed by a
//! broadcast of committed events with the in-memory history as their
//! fallback.
//!
//! The same engine runs on a redb file instead of the log (`redb_file`:
//! one write transaction per batch, read into memory at open), for the
//! side-by-side measurement of issue 20 (ARCHITECTURE.md, Decisions).

mod codec;
mod disk;
mod file;
#[cfg(test)]
mod fuzz;
mod log;
#[cfg(test)]
mod power_loss;
mod redb_file;
#[cfg(test)]
mod sim_disk;
mod state;
mod watcher;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::backend::{Backend, Write, Written};
use crate::{EmbeddedConfig, Engine, Event, GetResponse, KeyValue, Lease, LeaseId, RangeResponse, StoreError, Watch};
use codec::Stored;
use disk::Disk;
use state::{HistoryLimits, State};

/// How many revisions of watch history the embedded engine keeps by default:
/// a watcher can resume from any of the last 100,000 revisions, across
/// restarts.
pub const DEFAULT_HISTORY_REVISIONS: u64 = 100_000;

/// How many bytes of keys and values the watch history holds at most by
/// default (it lives in memory): 256 MiB, far above 100,000 revisions of
/// typical inventory records.
pub const DEFAULT_HISTORY_BYTES: usize = 256 << 20;

/// The log is checkpointed once it is past this size (default 64 MiB) and
/// more than twice what a checkpoint would write.
pub const DEFAULT_CHECKPOINT_BYTES: u64 = 64 << 20;

/// The most bytes of keys and values the embedded engine holds by default:
/// 1 GiB as [`codec::stored_size`] counts them, about 3.4 million keys of
/// 256 B. Everything is in memory: at 1 million keys of 256 B (318 MB so
/// counted) and the default watch history the process held 580 MB after
/// opening and peaked at 907 MB while replaying (`bench --only engine`),
/// so plan on about three times the bound.
pub const DEFAULT_MAX_DATA_BYTES: u64 = 1 << 30;

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
    engine: Engine,
    path: std::path::PathBuf,
    /// Everything durable in the log, and nothing more: the writer applies a
    /// batch only after its record is synced.
    state: RwLock<State>,
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
    // A panic while holding one of these locks (a bug) leaves the data
    // consistent: the state is changed only by `State::apply`, entry by
    // entry, and the lease clocks by single inserts and removes. So
    // poisoning is ignored.
    fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<i64, LeaseClock>> {
        self.leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lease_expired(&self, id: i64, now: Instant) -> bool {
        self.leases().get(&id).is_none_or(|clock| clock.deadline <= now)
    }
}

impl Embedded {
    pub(crate) async fn open(config: EmbeddedConfig) -> Result<Embedded, StoreError> {
        Embedded::open_on(config, Arc::new(disk::RealDisk)).await
    }

    /// Opens the log of `config` on `disk` (the real one, or a simulated one
    /// in tests).
    pub(crate) async fn open_on(config: EmbeddedConfig, disk: Arc<dyn disk::Disk>) -> Result<Embedded, StoreError> {
        let path = config.path.clone();
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            disk.create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_owned(),
                action: "create directory",
                source,
            })?;
        }
        let limits = limits(&config);
        // Replaying reads the whole log: off the async threads.
        let (log, state) = tokio::task::spawn_blocking(move || file::open(disk, &path, limits))
            .await
            .map_err(|_| StoreError::Closed)??;
        Embedded::start(config, Engine::Embedded, writer::Journal::Log(log), state)
    }

    /// Opens the redb file of `config`: the same engine, each batch a redb
    /// write transaction instead of a log record.
    pub(crate) async fn open_redb(config: EmbeddedConfig) -> Result<Embedded, StoreError> {
        let path = config.path.clone();
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            disk::RealDisk.create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_owned(),
                action: "create directory",
                source,
            })?;
        }
        let limits = limits(&config);
        let (file, state) = tokio::task::spawn_blocking(move || redb_file::open(&path, limits))
            .await
            .map_err(|_| StoreError::Closed)??;
        Embedded::start(config, Engine::Redb, writer::Journal::Redb(file), state)
    }

    /// Starts the writer and the lease clock over an opened file.
    fn start(
        config: EmbeddedConfig,
        engine: Engine,
        journal: writer::Journal,
        state: State,
    ) -> Result<Embedded, StoreError> {
        let now = Instant::now();
        let leases = state
            .leases
            .iter()
            .map(|(&id, &ttl_secs)| {
                let ttl = Duration::from_secs(ttl_secs);
                (id, LeaseClock { ttl, deadline: now + ttl })
            })
            .collect();
        let (events, _) = broadcast::channel(config.watch_buffer.max(1));
        let inner = Arc::new(Inner {
            engine,
            path: config.path.clone(),
            revision: AtomicU64::new(state.revision),
            state: RwLock::new(state),
            events,
            leases: Mutex::new(leases),
        });
        let (requests, queue) = mpsc::channel(REQUEST_QUEUE);
        let writer_config = writer::WriterConfig {
            checkpoint_bytes: config.checkpoint_bytes,
            max_data_bytes: usize::try_from(config.max_data_bytes).unwrap_or(usize::MAX),
        };
        writer::spawn(inner.clone(), queue, journal, writer_config)?;
        tokio::spawn(expire_leases(Arc::downgrade(&inner), requests.downgrade()));
        Ok(Embedded { inner, requests })
    }

    async fn request(&self, op: writer::Op) -> Result<writer::Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(writer::Request { op, reply: Some(reply) }).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

fn key_value(key: &str, stored: &Stored) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: stored.value.clone(),
        create_revision: stored.create_revision,
        mod_revision: stored.mod_revision,
        version: stored.version,
        lease: (stored.lease != 0).then_some(LeaseId(stored.lease)),
    }
}

impl Backend for Embedded {
    fn engine(&self) -> Engine {
        self.inner.engine
    }

    fn revision(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        let revision = self.inner.revision.load(Ordering::SeqCst);
        async move { Ok(revision) }.boxed()
    }

    // Reads come from memory, under the state's read lock: they see every
    // durable write up to the revision they return, and none after it.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<GetResponse, StoreError>> {
        let state = self.inner.state();
        let response =
            GetResponse { kv: state.kv.get(key).map(|stored| key_value(key, stored)), revision: state.revision };
        drop(state);
        async move { Ok(response) }.boxed()
    }

    fn range<'a>(&'a self, prefix: &'a str, limit: Option<usize>) -> BoxFuture<'a, Result<RangeResponse, StoreError>> {
        let response = {
            let state = self.inner.state();
            let mut keys = state.range(prefix);
            let kvs: Vec<KeyValue> =
                keys.by_ref().take(limit.unwrap_or(usize::MAX)).map(|(key, stored)| key_value(key, stored)).collect();
            RangeResponse { more: keys.next().is_some(), kvs, revision: state.revision }
        };
        async move { Ok(response) }.boxed()
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

    fn grant_lease(&self, id: LeaseId, ttl_secs: u64) -> BoxFuture<'_, Result<Lease, StoreError>> {
        async move {
            match self.request(writer::Op::Grant(id, ttl_secs)).await? {
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

    fn watch<'a>(&'a self, prefix: &'a str, from_revision: u64) -> BoxFuture<'a, Result<Watch, StoreError>> {
        let watch = watcher::watch(&self.inner, prefix.to_owned(), from_revision);
        async move { Ok(watch) }.boxed()
    }

    fn compact(&self, revision: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        async move { self.request(writer::Op::Compact(revision)).await.map(drop) }.boxed()
    }

    fn checkpoint(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move { self.request(writer::Op::Checkpoint).await.map(drop) }.boxed()
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

fn limits(config: &EmbeddedConfig) -> HistoryLimits {
    HistoryLimits { revisions: config.history_revisions.max(1), bytes: config.history_bytes }
}

/// Ends leases whose deadline passed, until the store is dropped.
async fn expire_leases(inner: Weak<Inner>, requests: mpsc::WeakSender<writer::Request>) {
    let mut tick = tokio::time::interval(LEASE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let expired: Vec<i64> =
            inner.leases().iter().filter(|(_, clock)| clock.deadline <= now).map(|(&id, _)| id).collect();
        drop(inner);
        if expired.is_empty() {
            continue;
        }
        let Some(requests) = requests.upgrade() else {
            return;
        };
        let (reply, answer) = oneshot::channel();
        let request = writer::Request { op: writer::Op::Expire(expired), reply: Some(reply) };
        if requests.send(request).await.is_err() {
            return;
        }
        drop(requests);
        // Wait for the revocation so the next tick does not ask again; a
        // failure (the disk) is retried at the next tick.
        let _ = answer.await;
    }
}
