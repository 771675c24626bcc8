//! The embedded engine's single writer: a thread that drains every queued
//! request into one batch (group commit), decides each request against the
//! state as the batch leaves it, appends the batch to the log as one record
//! with one `fdatasync`, applies it to the shared state, publishes the
//! events, and only then answers the callers. It also checkpoints the log.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::codec::{self, Entry, Mutation, Stored};
use super::file::{self, Checkpoint, LogFile};
use super::log;
use super::redb_file::RedbFile;
use super::state::State;
use super::{Inner, LeaseClock};
use crate::backend::{Write, Written};
use crate::{Lease, LeaseId, StoreError, TxnOp};

/// At most this many requests share one batch...
const MAX_BATCH_REQUESTS: usize = 4096;
/// ...and at most about this many bytes of values, so one batch's memory and
/// record stay bounded (see [`log::MAX_PAYLOAD_BYTES`]).
const MAX_BATCH_BYTES: usize = 64 << 20;
/// Longest a batch waits for writers still on their way (see
/// [`Writer::gather`]).
const GATHER_WAIT: Duration = Duration::from_micros(400);
/// A checkpoint is cut into records of about this size.
const CHECKPOINT_RECORD_BYTES: usize = 1 << 20;
/// A checkpoint is due when the log is past the configured size (64 MiB by
/// default) and this many times larger than the checkpoint would be (live
/// keys plus history): the log then stays within about twice the live data,
/// and a workload that only adds keys (log about equal to live data) never
/// pays for a checkpoint.
///
/// What one costs, measured on the development VM (2 cores, ext4): 100,000
/// keys of 256 B plus 100,000 revisions of history make a 60 MB checkpoint.
/// Encoding it on the writer thread holds writes for about 120 ms; writing
/// and syncing it happen on another thread while writes go on; installing
/// it (the records appended meanwhile, a sync, the rename and the directory
/// sync) holds writes for about 70 ms. With 64 writers overwriting those
/// keys (26,000 puts/s, a checkpoint every 5 s or so) the slowest put took
/// 138 ms and p99.9 was 18 ms. Replaying a 128 MiB log at open takes 0.75 s.
const CHECKPOINT_RATIO: u64 = 2;

pub(crate) struct Request {
    pub op: Op,
    pub reply: Option<oneshot::Sender<Result<Outcome, StoreError>>>,
}

#[derive(Debug)]
pub(crate) enum Op {
    Write(Write),
    /// A new lease: its (random) id and TTL in seconds.
    Grant(LeaseId, u64),
    Revoke(LeaseId),
    /// Lease ids whose deadline passed; each is ended unless it was kept
    /// alive since.
    Expire(Vec<i64>),
    Compact(u64),
    /// Rewrite the file compactly now ([`crate::Store::checkpoint`]).
    Checkpoint,
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

/// Where the writer makes batches durable.
#[derive(Debug)]
pub(crate) enum Journal {
    /// Gantry's append-only log: a record and an `fdatasync` per batch,
    /// checkpoints beside it.
    Log(LogFile),
    /// A redb file: a write transaction per batch.
    Redb(RedbFile),
}

/// How the writer runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriterConfig {
    /// No checkpoint while the log is smaller than this.
    pub checkpoint_bytes: u64,
    /// Writes that would take the live keys and values past this are
    /// refused ([`StoreError::Full`]).
    pub max_data_bytes: usize,
}

/// Starts the writer thread. It stops when every sender is dropped, on
/// [`Op::Close`], or when the log cannot be written.
pub(crate) fn spawn(
    inner: Arc<Inner>,
    queue: mpsc::Receiver<Request>,
    journal: Journal,
    config: WriterConfig,
) -> Result<(), StoreError> {
    let path = inner.path.clone();
    let writer = Writer {
        inner,
        queue,
        journal,
        config,
        writers: 1,
        last_sync: Duration::ZERO,
        next_checkpoint: 0,
        checkpoint: None,
        timer: tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|source| StoreError::Io { path: path.clone(), action: "start the writer's timer", source })?,
    };
    std::thread::Builder::new()
        .name("gantry-store-writer".into())
        .spawn(move || writer.run())
        .map(drop)
        .map_err(|source| StoreError::Io { path, action: "start the writer thread", source })
}

struct Writer {
    inner: Arc<Inner>,
    queue: mpsc::Receiver<Request>,
    journal: Journal,
    config: WriterConfig,
    /// How many requests the last batch held: an estimate of how many
    /// callers are writing concurrently.
    writers: usize,
    /// How long the last append took, sync included.
    last_sync: Duration,
    /// No checkpoint is started before the log reaches this length (set
    /// after a failed one, so that it is not retried at every batch).
    next_checkpoint: u64,
    checkpoint: Option<InProgress>,
    /// Lets the writer wait for stragglers asleep until one arrives or the
    /// wait is over, instead of polling (which takes the CPU from the very
    /// callers it waits for on a small machine).
    timer: tokio::runtime::Runtime,
}

/// A checkpoint being written by another thread while the writer goes on
/// appending to the log.
struct InProgress {
    thread: JoinHandle<std::io::Result<Checkpoint>>,
    /// The records appended to the log since the checkpoint's state was
    /// taken: they go after it in the new log.
    tail: Vec<u8>,
}

/// The writer cannot go on: the log is in an unknown state.
struct Stop;

impl Writer {
    fn run(mut self) {
        let mut close_reply = None;
        while let Some(first) = self.queue.blocking_recv() {
            let mut batch = self.gather(first);
            let close_at = batch.iter().position(|request| matches!(request.op, Op::Close));
            let rest = close_at.map(|at| batch.split_off(at));
            let (forced, batch): (Vec<_>, Vec<_>) =
                batch.into_iter().partition(|request| matches!(request.op, Op::Checkpoint));
            let mut stop = self.commit(batch).is_err() || self.checkpoint_step().is_err();
            if !stop && !forced.is_empty() {
                let done = self.checkpoint_now();
                stop = done.is_err();
                for reply in forced.into_iter().filter_map(|request| request.reply) {
                    let answer = match &done {
                        Ok(()) => Ok(Outcome::Done),
                        Err(error) => Err(error.copy_for_another_caller()),
                    };
                    let _ = reply.send(answer);
                }
            }
            if let Some(rest) = rest {
                let mut rest = rest.into_iter();
                close_reply = rest.next().and_then(|close| close.reply);
                self.refuse(rest.collect());
                break;
            }
            if stop {
                self.refuse(Vec::new());
                break;
            }
        }
        if let Some(in_progress) = self.checkpoint.take() {
            // Let it finish, so that it does not write beside a log that
            // someone else may open once this one is unlocked.
            let _ = in_progress.thread.join();
            if let Journal::Log(log) = &self.journal {
                log.remove_checkpoint();
            }
        }
        // Release (and unlock) the file before saying the store is closed.
        drop(self);
        if let Some(reply) = close_reply {
            let _ = reply.send(Ok(Outcome::Done));
        }
    }

    /// Answers `Closed` to `requests` and to everything still queued, and
    /// refuses new requests.
    fn refuse(&mut self, requests: Vec<Request>) {
        self.queue.close();
        let queued = std::iter::from_fn(|| self.queue.try_recv().ok());
        for request in requests.into_iter().chain(queued) {
            if let Some(reply) = request.reply {
                let _ = reply.send(Err(StoreError::Closed));
            }
        }
    }

    /// Collects the requests queued behind `first` into one batch.
    ///
    /// Under load, the callers the previous batch answered are still
    /// sending their next request when this batch starts. Committing at once
    /// would split the writers into two groups taking turns, each paying a
    /// full sync for half of them. So when recent batches were larger than
    /// what is queued, wait a little for the rest: at most as long as the
    /// last sync took (waiting longer would cost more than a sync of their
    /// own) and at most [`GATHER_WAIT`]. A lone writer never waits.
    fn gather(&mut self, first: Request) -> Vec<Request> {
        let mut size = first.op.size();
        let mut batch = vec![first];
        let deadline = Instant::now() + self.last_sync.min(GATHER_WAIT);
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
            let now = Instant::now();
            if full || batch.len() >= self.writers || now >= deadline {
                break;
            }
            let queue = &mut self.queue;
            // The timeout is made inside `block_on`: it needs the runtime's timer.
            match self.timer.block_on(async { tokio::time::timeout(deadline - now, queue.recv()).await }) {
                Ok(Some(request)) => {
                    size += request.op.size();
                    batch.push(request);
                }
                // The wait is over, or every sender is gone.
                Ok(None) | Err(_) => break,
            }
        }
        // Fewer arrived in time: fewer writers now, stop waiting for them.
        self.writers = batch.len();
        batch
    }

    /// Decides `requests`, makes their changes durable as one record,
    /// applies them, then publishes and answers.
    fn commit(&mut self, requests: Vec<Request>) -> Result<(), Stop> {
        if requests.is_empty() {
            return Ok(());
        }
        let (ops, replies): (Vec<Op>, Vec<_>) = requests.into_iter().map(|request| (request.op, request.reply)).unzip();
        let (outcomes, changes) = {
            let state = self.inner.state();
            let mut pending = Pending::new(&state, &self.inner, self.config.max_data_bytes);
            let outcomes: Vec<_> = ops.into_iter().map(|op| pending.decide(op)).collect();
            (outcomes, pending.changes)
        };

        // Refused requests and failed comparisons change nothing: no record.
        if !changes.entries.is_empty() {
            let started = Instant::now();
            let durable = match &mut self.journal {
                Journal::Log(log) => {
                    let mut payload = Vec::new();
                    for entry in &changes.entries {
                        codec::encode(entry, &mut payload);
                    }
                    let mut record = Vec::with_capacity(payload.len() + 16);
                    log::frame(&payload, &mut record);
                    let appended = log.append(&record);
                    if let (Ok(()), Some(in_progress)) = (&appended, &mut self.checkpoint) {
                        in_progress.tail.extend_from_slice(&record);
                    }
                    appended.map_err(|error| file::io_error(&self.inner.path, "append to the log", error))
                }
                Journal::Redb(redb) => redb.commit(&changes.entries),
            };
            self.last_sync = started.elapsed();
            if let Err(error) = durable {
                fail_all(replies, &error);
                return Err(Stop);
            }
            self.publish(changes);
        }
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            if let Some(reply) = reply {
                let _ = reply.send(outcome);
            }
        }
        Ok(())
    }

    /// Applies durable changes to the shared state, the lease clocks and
    /// the watchers.
    fn publish(&self, changes: Changes) {
        let mut events = Vec::new();
        {
            let mut state = self.inner.state_mut();
            for entry in changes.entries {
                if let Err(reason) = state.apply(entry, Some(&mut events)) {
                    // The entries were decided against this very state.
                    unreachable!("the writer's own entry does not apply: {reason}");
                }
            }
            self.inner.revision.store(state.revision, Ordering::SeqCst);
        }
        {
            let now = Instant::now();
            let mut leases = self.inner.leases();
            for (id, ttl) in changes.granted {
                leases.insert(id, LeaseClock { ttl, deadline: now + ttl });
            }
            for id in changes.ended {
                leases.remove(&id);
            }
        }
        if !events.is_empty() {
            // No receiver is not an error: nobody is watching.
            let _ = self.inner.events.send(Arc::from(events));
        }
    }

    /// Starts a checkpoint when one is due, and installs a finished one.
    fn checkpoint_step(&mut self) -> Result<(), Stop> {
        match &self.checkpoint {
            Some(in_progress) if in_progress.thread.is_finished() => {
                let in_progress = self.checkpoint.take().expect("just matched");
                let written = in_progress
                    .thread
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("the checkpoint thread panicked")));
                let Journal::Log(log) = &mut self.journal else { unreachable!("only the log is checkpointed") };
                match written {
                    Ok(checkpoint) => {
                        if log.install(checkpoint, &in_progress.tail).is_err() {
                            return Err(Stop);
                        }
                    }
                    Err(_) => {
                        // The log is intact: carry on with it, retry later.
                        self.next_checkpoint = log.len() + self.config.checkpoint_bytes;
                    }
                }
            }
            Some(_) => {}
            None if self.checkpoint_due() => self.start_checkpoint(),
            None => {}
        }
        Ok(())
    }

    /// Checkpoints the log (after finishing one in progress), or compacts
    /// the redb file, holding writes meanwhile.
    fn checkpoint_now(&mut self) -> Result<(), StoreError> {
        let path = self.inner.path.clone();
        if let Some(in_progress) = self.checkpoint.take() {
            let _ = in_progress.thread.join().map(|written| {
                written.and_then(|checkpoint| match &mut self.journal {
                    Journal::Log(log) => log.install(checkpoint, &in_progress.tail),
                    Journal::Redb(_) => Ok(()),
                })
            });
        }
        match &mut self.journal {
            Journal::Log(log) => {
                let records = encode_checkpoint(&self.inner.state());
                let checkpoint = file::write_checkpoint(&*log.disk(), &path, &records)
                    .map_err(|error| file::io_error(&path, "write a checkpoint", error))?;
                log.install(checkpoint, &[]).map_err(|error| file::io_error(&path, "install a checkpoint", error))
            }
            Journal::Redb(redb) => redb.compact(),
        }
    }

    fn checkpoint_due(&self) -> bool {
        // redb keeps its file compact itself.
        let Journal::Log(log) = &self.journal else {
            return false;
        };
        let len = log.len();
        if len < self.config.checkpoint_bytes.max(self.next_checkpoint) {
            return false;
        }
        let state = self.inner.state();
        len > CHECKPOINT_RATIO * (state.kv_bytes + state.history_bytes) as u64
    }

    /// Encodes the state here (the writer is the only one changing it, so
    /// this is a consistent cut), and writes and syncs it on another thread
    /// while the writer goes on.
    fn start_checkpoint(&mut self) {
        let Journal::Log(log) = &self.journal else {
            return;
        };
        let records = encode_checkpoint(&self.inner.state());
        let path = self.inner.path.clone();
        let disk = log.disk();
        let log_len = log.len();
        let spawned = std::thread::Builder::new()
            .name("gantry-store-checkpoint".into())
            .spawn(move || file::write_checkpoint(&*disk, &path, &records));
        match spawned {
            Ok(thread) => {
                self.checkpoint = Some(InProgress { thread, tail: Vec::new() });
            }
            Err(_) => self.next_checkpoint = log_len + self.config.checkpoint_bytes,
        }
    }
}

/// The whole state as framed records.
pub(crate) fn encode_checkpoint(state: &State) -> Vec<u8> {
    let mut records = Vec::with_capacity(state.kv_bytes + state.history_bytes + 4096);
    let mut payload = Vec::with_capacity(CHECKPOINT_RECORD_BYTES * 2);
    for entry in state.checkpoint() {
        codec::encode(&entry, &mut payload);
        if payload.len() >= CHECKPOINT_RECORD_BYTES {
            log::frame(&payload, &mut records);
            payload.clear();
        }
    }
    if !payload.is_empty() {
        log::frame(&payload, &mut records);
    }
    records
}

/// One failed append fails every request in it; each gets its own error
/// sharing the cause.
fn fail_all(replies: Vec<Option<oneshot::Sender<Result<Outcome, StoreError>>>>, error: &StoreError) {
    for reply in replies.into_iter().flatten() {
        let _ = reply.send(Err(error.copy_for_another_caller()));
    }
}

/// What a batch changes, once durable.
#[derive(Default)]
struct Changes {
    entries: Vec<Entry>,
    granted: Vec<(i64, Duration)>,
    ended: Vec<i64>,
}

/// The state as the requests decided so far in a batch leave it: the shared
/// state (unchanged until the batch is durable) under an overlay of this
/// batch's changes.
struct Pending<'a> {
    state: &'a State,
    inner: &'a Inner,
    /// Keys written (`Some`) or deleted (`None`) by this batch.
    keys: BTreeMap<String, Option<Stored>>,
    /// Leases granted (`true`) or ended (`false`) by this batch.
    leases: HashMap<i64, bool>,
    revision: u64,
    oldest: u64,
    /// The live keys' size, as [`State::kv_bytes`] counts it, with this
    /// batch's changes.
    kv_bytes: usize,
    max_data_bytes: usize,
    now: Instant,
    changes: Changes,
}

impl<'a> Pending<'a> {
    fn new(state: &'a State, inner: &'a Inner, max_data_bytes: usize) -> Pending<'a> {
        Pending {
            state,
            inner,
            keys: BTreeMap::new(),
            leases: HashMap::new(),
            revision: state.revision,
            oldest: state.oldest,
            kv_bytes: state.kv_bytes,
            max_data_bytes,
            now: Instant::now(),
            changes: Changes::default(),
        }
    }

    fn get(&self, key: &str) -> Option<&Stored> {
        match self.keys.get(key) {
            Some(overlaid) => overlaid.as_ref(),
            None => self.state.kv.get(key),
        }
    }

    fn lease_alive(&self, id: i64) -> bool {
        match self.leases.get(&id) {
            Some(&alive) => alive,
            None => self.state.leases.contains_key(&id),
        }
    }

    /// The existing keys under `prefix`, in order.
    fn keys_under(&self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .state
            .range(prefix)
            .map(|(key, _)| key)
            .filter(|key| !self.keys.contains_key(key.as_str()))
            .cloned()
            .collect();
        keys.extend(
            self.keys
                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(key, _)| key.starts_with(prefix))
                .filter(|(_, stored)| stored.is_some())
                .map(|(key, _)| key.clone()),
        );
        keys.sort_unstable();
        keys
    }

    /// The existing keys attached to lease `id`, in order.
    fn keys_of_lease(&self, id: i64) -> Vec<String> {
        let mut keys: Vec<String> =
            self.state.keys_of_lease(id).filter(|key| !self.keys.contains_key(*key)).map(str::to_owned).collect();
        keys.extend(
            self.keys
                .iter()
                .filter(|(_, stored)| stored.as_ref().is_some_and(|s| s.lease == id))
                .map(|(key, _)| key.clone()),
        );
        keys.sort_unstable();
        keys
    }

    /// Decides one request. Refusals (a failed comparison, a missing lease)
    /// are decided before anything changes, so a refused request leaves no
    /// trace in the batch.
    fn decide(&mut self, op: Op) -> Result<Outcome, StoreError> {
        match op {
            Op::Write(Write::Txn(txn)) => {
                for compare in &txn.compares {
                    let current = self.get(&compare.key).map_or(0, |s| s.mod_revision);
                    if current != compare.mod_revision {
                        return Ok(Outcome::Written(Written { succeeded: false, revision: self.revision, deleted: 0 }));
                    }
                }
                for op in &txn.ops {
                    if let TxnOp::Put { lease: Some(lease), .. } = op
                        && !self.lease_alive(lease.0)
                    {
                        return Err(StoreError::LeaseNotFound { lease: *lease });
                    }
                }
                let size =
                    |key: &str, stored: Option<&Stored>| stored.map_or(0, |stored| codec::stored_size(key, stored));
                let (mut added, mut removed) = (0, 0);
                for op in &txn.ops {
                    match op {
                        TxnOp::Put { key, value, .. } => {
                            added += key.len() + value.len() + codec::STORED_OVERHEAD;
                            removed += size(key, self.get(key));
                        }
                        TxnOp::Delete { key } => removed += size(key, self.get(key)),
                    }
                }
                // Everything is in memory: past the bound, refuse rather
                // than grow (a write that does not grow the data passes).
                let kv_bytes = (self.kv_bytes + added).saturating_sub(removed);
                if kv_bytes > self.max_data_bytes && added > removed {
                    return Err(StoreError::Full { limit: self.max_data_bytes as u64 });
                }
                self.kv_bytes = kv_bytes;
                let revision = self.revision + 1;
                let mut mutations = Vec::with_capacity(txn.ops.len());
                let mut deleted = 0;
                for op in txn.ops {
                    match op {
                        TxnOp::Put { key, value, lease } => {
                            let old = self.get(&key);
                            let stored = Stored {
                                // A value of its own: one cut from a larger
                                // buffer (an HTTP request's read buffer, 8 KiB
                                // or more) would keep all of it alive as
                                // long as the key, and the history, hold it.
                                value: Bytes::copy_from_slice(&value),
                                create_revision: old.map_or(revision, |old| old.create_revision),
                                mod_revision: revision,
                                version: old.map_or(1, |old| old.version + 1),
                                lease: lease.map_or(0, |lease| lease.0),
                            };
                            self.keys.insert(key.clone(), Some(stored.clone()));
                            mutations.push(Mutation::Put { key, stored });
                        }
                        TxnOp::Delete { key } => {
                            if self.get(&key).is_some() {
                                deleted += 1;
                                self.keys.insert(key.clone(), None);
                                mutations.push(Mutation::Delete { key });
                            }
                        }
                    }
                }
                self.record(mutations);
                Ok(Outcome::Written(Written { succeeded: true, revision: self.revision, deleted }))
            }
            Op::Write(Write::DeletePrefix(prefix)) => {
                let keys = self.keys_under(&prefix);
                let deleted = keys.len() as u64;
                self.delete_all(keys);
                Ok(Outcome::Written(Written { succeeded: true, revision: self.revision, deleted }))
            }
            Op::Grant(LeaseId(id), ttl_secs) => {
                if self.lease_alive(id) {
                    return Err(StoreError::LeaseExists { lease: LeaseId(id) });
                }
                self.leases.insert(id, true);
                self.changes.entries.push(Entry::Lease { id, ttl_secs });
                let ttl = Duration::from_secs(ttl_secs);
                self.changes.granted.push((id, ttl));
                Ok(Outcome::Lease(Lease { id: LeaseId(id), ttl }))
            }
            Op::Revoke(lease) => {
                if !self.lease_alive(lease.0) {
                    return Err(StoreError::LeaseNotFound { lease });
                }
                self.end_lease(lease.0);
                Ok(Outcome::Done)
            }
            Op::Expire(ids) => {
                for id in ids {
                    // Kept alive since the clock saw it expire: not expired.
                    if self.inner.lease_expired(id, self.now) && self.lease_alive(id) {
                        self.end_lease(id);
                    }
                }
                Ok(Outcome::Done)
            }
            Op::Compact(revision) => {
                if revision > self.revision {
                    return Err(StoreError::FutureRevision { requested: revision });
                }
                if revision > self.oldest {
                    self.oldest = revision;
                    self.changes.entries.push(Entry::Compact { oldest: revision });
                }
                Ok(Outcome::Done)
            }
            Op::Close | Op::Checkpoint => Ok(Outcome::Done),
        }
    }

    /// Deletes `keys` (which exist) as one revision.
    fn delete_all(&mut self, keys: Vec<String>) {
        let mut mutations = Vec::with_capacity(keys.len());
        for key in keys {
            let removed = self.get(&key).map_or(0, |stored| codec::stored_size(&key, stored));
            self.kv_bytes = self.kv_bytes.saturating_sub(removed);
            self.keys.insert(key.clone(), None);
            mutations.push(Mutation::Delete { key });
        }
        self.record(mutations);
    }

    /// Ends a lease, deleting its keys as one revision.
    fn end_lease(&mut self, id: i64) {
        let keys = self.keys_of_lease(id);
        self.delete_all(keys);
        self.leases.insert(id, false);
        self.changes.entries.push(Entry::EndLease { id });
        self.changes.ended.push(id);
    }

    /// Gives `mutations` the next revision, if there are any: a request that
    /// changed nothing does not bump the revision.
    fn record(&mut self, mutations: Vec<Mutation>) {
        if mutations.is_empty() {
            return;
        }
        self.revision += 1;
        self.changes.entries.push(Entry::Revision { revision: self.revision, mutations });
    }
}
