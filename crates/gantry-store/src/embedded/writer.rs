//! The embedded engine's single writer: a thread that drains every queued
//! request into one redb write transaction (group commit), commits it with
//! full durability, publishes the events, and only then answers the callers.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, ReadableTable, Table, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::codec::{self, Meta};
use super::{
    EVENTS, Inner, KV, LEASE_KEYS, LEASES, LeaseClock, META, META_NEXT_LEASE, META_OLDEST,
    META_REVISION, engine_error,
};
use crate::backend::{Write, Written};
use crate::{Event, EventKind, Lease, LeaseId, StoreError, TxnOp};

/// At most this many requests share one commit...
const MAX_BATCH_REQUESTS: usize = 4096;
/// ...and at most about this many bytes of values, so one commit's memory
/// stays bounded.
const MAX_BATCH_BYTES: usize = 64 << 20;
/// Longest a batch waits for writers still on their way (see
/// [`Writer::gather`]); small next to an fsync.
const GATHER_WAIT: Duration = Duration::from_micros(400);

pub(crate) struct Request {
    pub op: Op,
    pub reply: Option<oneshot::Sender<Result<Outcome, StoreError>>>,
}

#[derive(Debug)]
pub(crate) enum Op {
    Write(Write),
    Grant(u64),
    Revoke(LeaseId),
    /// Lease ids whose deadline passed; each is ended unless it was kept
    /// alive since.
    Expire(Vec<i64>),
    Compact(u64),
    Close,
}

impl Op {
    fn size(&self) -> usize {
        match self {
            Op::Write(Write::Txn(txn)) => txn
                .ops
                .iter()
                .map(|op| match op {
                    TxnOp::Put { key, value, .. } => key.len() + value.len(),
                    TxnOp::Delete { key } => key.len(),
                })
                .sum(),
            _ => 64,
        }
    }
}

#[derive(Debug)]
pub(crate) enum Outcome {
    Written(Written),
    Lease(Lease),
    Done,
}

/// The counters kept in the meta table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Counters {
    pub revision: u64,
    pub oldest: u64,
    pub next_lease: i64,
}

pub(crate) struct Opened {
    pub db: Database,
    pub counters: Counters,
    /// (lease id, TTL in seconds) of every lease alive at the last commit.
    pub leases: Vec<(i64, u64)>,
}

/// Opens or creates the file, creates the tables, reads the counters.
pub(crate) fn open_file(path: &Path) -> Result<Opened, StoreError> {
    open_tables(path).map_err(|e| engine_error(path, "open", e))
}

fn open_tables(path: &Path) -> Result<Opened, redb::Error> {
    let db = Database::create(path)?;
    let txn = db.begin_write()?;
    let (counters, leases) = {
        let meta = txn.open_table(META)?;
        let counter = |name: &str, default: u64| -> Result<u64, redb::Error> {
            Ok(meta.get(name)?.map_or(default, |guard| guard.value()))
        };
        let counters = Counters {
            revision: counter(META_REVISION, 0)?,
            oldest: counter(META_OLDEST, 1)?,
            next_lease: counter(META_NEXT_LEASE, 1)? as i64,
        };
        let table = txn.open_table(LEASES)?;
        let mut leases = Vec::new();
        for entry in table.iter()? {
            let (id, ttl) = entry?;
            leases.push((id.value(), ttl.value()));
        }
        // Create the other tables so that readers never miss one.
        txn.open_table(KV)?;
        txn.open_table(EVENTS)?;
        txn.open_table(LEASE_KEYS)?;
        (counters, leases)
    };
    txn.commit()?;
    Ok(Opened {
        db,
        counters,
        leases,
    })
}

/// Starts the writer thread. It stops when every sender is dropped or on
/// [`Op::Close`].
pub(crate) fn spawn(
    inner: Arc<Inner>,
    queue: mpsc::Receiver<Request>,
    counters: Counters,
    history_revisions: u64,
) -> Result<(), StoreError> {
    let path = inner.path.clone();
    let writer = Writer {
        inner,
        queue,
        counters,
        history_revisions,
        writers: 1,
    };
    std::thread::Builder::new()
        .name("gantry-store-writer".into())
        .spawn(move || writer.run())
        .map(drop)
        .map_err(|source| StoreError::Io {
            path,
            action: "start the writer thread",
            source,
        })
}

struct Writer {
    inner: Arc<Inner>,
    queue: mpsc::Receiver<Request>,
    counters: Counters,
    history_revisions: u64,
    /// How many requests the last batch held: an estimate of how many
    /// callers are writing concurrently.
    writers: usize,
}

/// The tables one batch writes to.
struct Tables<'txn> {
    kv: Table<'txn, &'static str, &'static [u8]>,
    events: Table<'txn, u64, &'static [u8]>,
    leases: Table<'txn, i64, u64>,
    lease_keys: Table<'txn, (i64, &'static str), ()>,
}

/// What a batch changes, applied to the shared state once it is committed.
struct Batch {
    counters: Counters,
    events: Vec<Event>,
    granted: Vec<(i64, Duration)>,
    ended: Vec<i64>,
    now: Instant,
}

impl Writer {
    fn run(mut self) {
        let mut close_reply = None;
        while let Some(first) = self.queue.blocking_recv() {
            let mut batch = self.gather(first);
            if let Some(at) = batch
                .iter()
                .position(|request| matches!(request.op, Op::Close))
            {
                let mut rest = batch.split_off(at).into_iter();
                self.commit(batch);
                close_reply = rest.next().and_then(|close| close.reply);
                self.queue.close();
                let queued = std::iter::from_fn(|| self.queue.try_recv().ok());
                for request in rest.chain(queued) {
                    if let Some(reply) = request.reply {
                        let _ = reply.send(Err(StoreError::Closed));
                    }
                }
                break;
            }
            self.commit(batch);
        }
        // Release the database before saying the store is closed.
        drop(self);
        if let Some(reply) = close_reply {
            let _ = reply.send(Ok(Outcome::Done));
        }
    }

    /// Collects the requests queued behind `first` into one batch.
    ///
    /// Under load, the callers the previous commit answered are still
    /// sending their next request when this batch starts. Committing at once
    /// would split the writers into two groups taking turns, each paying a
    /// full fsync for half of them. So when recent batches were larger than
    /// what is queued, wait a little (at most [`GATHER_WAIT`]) for the rest.
    /// A lone writer never waits.
    fn gather(&mut self, first: Request) -> Vec<Request> {
        let mut size = first.op.size();
        let mut batch = vec![first];
        let deadline = Instant::now() + GATHER_WAIT;
        loop {
            while batch.len() < MAX_BATCH_REQUESTS && size < MAX_BATCH_BYTES {
                match self.queue.try_recv() {
                    Ok(request) => {
                        size += request.op.size();
                        batch.push(request);
                    }
                    Err(_) => break,
                }
            }
            let full = batch.len() >= MAX_BATCH_REQUESTS || size >= MAX_BATCH_BYTES;
            if full || batch.len() >= self.writers || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        // Fewer arrived in time: fewer writers now, stop waiting for them.
        self.writers = batch.len();
        batch
    }

    /// Applies `requests` in one write transaction, commits it durably, then
    /// publishes and answers.
    fn commit(&mut self, requests: Vec<Request>) {
        if requests.is_empty() {
            return;
        }
        let (ops, replies): (Vec<Op>, Vec<_>) = requests
            .into_iter()
            .map(|request| (request.op, request.reply))
            .unzip();
        let mut batch = Batch {
            counters: self.counters,
            events: Vec::new(),
            granted: Vec::new(),
            ended: Vec::new(),
            now: Instant::now(),
        };
        let outcomes = match self.apply_and_commit(ops, &mut batch) {
            Ok(outcomes) => outcomes,
            Err(error) => {
                let error = self.inner.error("commit", error);
                for reply in replies.into_iter().flatten() {
                    let _ = reply.send(Err(clone_error(&error)));
                }
                return;
            }
        };

        self.counters = batch.counters;
        self.inner
            .revision
            .store(batch.counters.revision, Ordering::SeqCst);
        {
            let mut leases = self.inner.leases();
            for (id, ttl) in batch.granted {
                leases.insert(
                    id,
                    LeaseClock {
                        ttl,
                        deadline: Instant::now() + ttl,
                    },
                );
            }
            for id in batch.ended {
                leases.remove(&id);
            }
        }
        if !batch.events.is_empty() {
            // No receiver is not an error: nobody is watching.
            let _ = self.inner.events.send(Arc::from(batch.events));
        }
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            if let Some(reply) = reply {
                let _ = reply.send(outcome);
            }
        }
    }

    fn apply_and_commit(
        &self,
        ops: Vec<Op>,
        batch: &mut Batch,
    ) -> Result<Vec<Result<Outcome, StoreError>>, redb::Error> {
        let txn: WriteTransaction = self.inner.db.begin_write()?;
        let mut outcomes = Vec::with_capacity(ops.len());
        {
            let mut tables = Tables {
                kv: txn.open_table(KV)?,
                events: txn.open_table(EVENTS)?,
                leases: txn.open_table(LEASES)?,
                lease_keys: txn.open_table(LEASE_KEYS)?,
            };
            for op in ops {
                outcomes.push(self.apply(&mut tables, batch, op)?);
            }
            let counters = &mut batch.counters;
            let keep_from = counters.revision.saturating_sub(self.history_revisions) + 1;
            if keep_from > counters.oldest {
                tables.events.retain_in(..keep_from, |_, _| false)?;
                counters.oldest = keep_from;
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(META_REVISION, counters.revision)?;
            meta.insert(META_OLDEST, counters.oldest)?;
            meta.insert(META_NEXT_LEASE, counters.next_lease as u64)?;
        }
        txn.commit()?;
        Ok(outcomes)
    }

    /// Applies one request. Refusals (a failed comparison, a missing lease)
    /// are decided before anything is written, so a refused request leaves
    /// no trace in the transaction.
    fn apply(
        &self,
        tables: &mut Tables<'_>,
        batch: &mut Batch,
        op: Op,
    ) -> Result<Result<Outcome, StoreError>, redb::Error> {
        let outcome = match op {
            Op::Write(Write::Txn(txn)) => {
                for compare in &txn.compares {
                    let current =
                        read_meta(&tables.kv, &compare.key)?.map_or(0, |meta| meta.mod_revision);
                    if current != compare.mod_revision {
                        let revision = batch.counters.revision;
                        return Ok(Ok(Outcome::Written(Written {
                            succeeded: false,
                            revision,
                            deleted: 0,
                        })));
                    }
                }
                for op in &txn.ops {
                    if let TxnOp::Put {
                        lease: Some(lease), ..
                    } = op
                        && tables.leases.get(lease.0)?.is_none()
                    {
                        return Ok(Err(StoreError::LeaseNotFound { lease: *lease }));
                    }
                }
                let revision = batch.counters.revision + 1;
                let mut events = Vec::with_capacity(txn.ops.len());
                let mut deleted = 0;
                for op in txn.ops {
                    match op {
                        TxnOp::Put { key, value, lease } => {
                            put(tables, revision, &key, &value, lease)?;
                            events.push(event(EventKind::Put, key, value, revision));
                        }
                        TxnOp::Delete { key } => {
                            if delete(tables, &key)? {
                                deleted += 1;
                                events.push(event(EventKind::Delete, key, Bytes::new(), revision));
                            }
                        }
                    }
                }
                record(tables, batch, events)?;
                Outcome::Written(Written {
                    succeeded: true,
                    revision: batch.counters.revision,
                    deleted,
                })
            }
            Op::Write(Write::DeletePrefix(prefix)) => {
                let mut keys = Vec::new();
                for entry in tables.kv.range(prefix.as_str()..)? {
                    let (key, _) = entry?;
                    let key = key.value();
                    if !key.starts_with(prefix.as_str()) {
                        break;
                    }
                    keys.push(key.to_owned());
                }
                let revision = batch.counters.revision + 1;
                let mut events = Vec::with_capacity(keys.len());
                for key in keys {
                    delete(tables, &key)?;
                    events.push(event(EventKind::Delete, key, Bytes::new(), revision));
                }
                let deleted = events.len() as u64;
                record(tables, batch, events)?;
                Outcome::Written(Written {
                    succeeded: true,
                    revision: batch.counters.revision,
                    deleted,
                })
            }
            Op::Grant(ttl_secs) => {
                let id = batch.counters.next_lease;
                batch.counters.next_lease += 1;
                tables.leases.insert(id, ttl_secs)?;
                let ttl = Duration::from_secs(ttl_secs);
                batch.granted.push((id, ttl));
                Outcome::Lease(Lease {
                    id: LeaseId(id),
                    ttl,
                })
            }
            Op::Revoke(lease) => {
                if tables.leases.get(lease.0)?.is_none() {
                    return Ok(Err(StoreError::LeaseNotFound { lease }));
                }
                end_lease(tables, batch, lease.0)?;
                Outcome::Done
            }
            Op::Expire(ids) => {
                for id in ids {
                    // Kept alive since the clock saw it expire: not expired.
                    if self.inner.lease_expired(id, batch.now) && tables.leases.get(id)?.is_some() {
                        end_lease(tables, batch, id)?;
                    }
                }
                Outcome::Done
            }
            Op::Compact(revision) => {
                let counters = &mut batch.counters;
                if revision > counters.revision {
                    return Ok(Err(StoreError::FutureRevision {
                        requested: revision,
                    }));
                }
                if revision > counters.oldest {
                    tables.events.retain_in(..revision, |_, _| false)?;
                    counters.oldest = revision;
                }
                Outcome::Done
            }
            Op::Close => Outcome::Done,
        };
        Ok(Ok(outcome))
    }
}

fn event(kind: EventKind, key: String, value: Bytes, revision: u64) -> Event {
    Event {
        kind,
        key,
        value,
        mod_revision: revision,
    }
}

/// Gives `events` the next revision, if there are any: a request that
/// changed nothing does not bump the revision.
fn record(
    tables: &mut Tables<'_>,
    batch: &mut Batch,
    events: Vec<Event>,
) -> Result<(), redb::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let revision = batch.counters.revision + 1;
    tables
        .events
        .insert(revision, codec::encode_events(&events).as_slice())?;
    batch.counters.revision = revision;
    batch.events.extend(events);
    Ok(())
}

/// A record that does not decode is treated as absent: it is overwritten
/// rather than blocking every later write to its key.
fn read_meta(
    kv: &Table<'_, &'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Meta>, redb::Error> {
    Ok(kv
        .get(key)?
        .and_then(|record| codec::decode_meta(record.value())))
}

fn put(
    tables: &mut Tables<'_>,
    revision: u64,
    key: &str,
    value: &[u8],
    lease: Option<LeaseId>,
) -> Result<(), redb::Error> {
    let old = read_meta(&tables.kv, key)?;
    let lease = lease.map_or(0, |lease| lease.0);
    let meta = Meta {
        create_revision: old.map_or(revision, |old| old.create_revision),
        mod_revision: revision,
        version: old.map_or(1, |old| old.version + 1),
        lease,
    };
    if let Some(old) = old.filter(|old| old.lease != 0 && old.lease != lease) {
        tables.lease_keys.remove((old.lease, key))?;
    }
    if lease != 0 {
        tables.lease_keys.insert((lease, key), ())?;
    }
    tables
        .kv
        .insert(key, codec::encode_kv(meta, value).as_slice())?;
    Ok(())
}

/// Deletes `key`, returning whether it existed.
fn delete(tables: &mut Tables<'_>, key: &str) -> Result<bool, redb::Error> {
    let old = tables
        .kv
        .remove(key)?
        .map(|record| codec::decode_meta(record.value()));
    match old {
        None => Ok(false),
        Some(meta) => {
            if let Some(meta) = meta.filter(|meta| meta.lease != 0) {
                tables.lease_keys.remove((meta.lease, key))?;
            }
            Ok(true)
        }
    }
}

/// Deletes a lease and its keys, as one revision.
fn end_lease(tables: &mut Tables<'_>, batch: &mut Batch, id: i64) -> Result<(), redb::Error> {
    let mut keys = Vec::new();
    for entry in tables.lease_keys.range((id, "")..(id + 1, ""))? {
        let (key, _) = entry?;
        keys.push(key.value().1.to_owned());
    }
    let revision = batch.counters.revision + 1;
    let mut events = Vec::with_capacity(keys.len());
    for key in keys {
        tables.lease_keys.remove((id, key.as_str()))?;
        tables.kv.remove(key.as_str())?;
        events.push(event(EventKind::Delete, key, Bytes::new(), revision));
    }
    tables.leases.remove(id)?;
    batch.ended.push(id);
    record(tables, batch, events)
}

/// One failed commit fails every request in it; each gets its own error
/// sharing the cause.
fn clone_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Embedded {
            path,
            action,
            source,
        } => StoreError::Embedded {
            path: path.clone(),
            action,
            source: source.clone(),
        },
        _ => StoreError::Closed,
    }
}
