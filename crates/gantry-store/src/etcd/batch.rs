//! Group commit on top of etcd: plain puts (no compare, no lease) that
//! arrive while earlier ones are in flight are sent together as one etcd
//! transaction, so many concurrent writers share etcd's raft round and fsync
//! instead of queueing for one each.
//!
//! A put that finds nothing queued or in flight is sent at once from the
//! caller's task, as a direct client would send it: a lone writer pays no
//! hop through the batching task.
//!
//! Durability is unchanged: a put is acknowledged only after etcd has
//! committed the transaction that carries it. Puts batched together share
//! one revision, as the puts of any etcd transaction do. Two puts of the same
//! key never share a transaction (etcd refuses that); the later one waits for
//! the next batch. Puts from one client stay in order because a client waits
//! for each acknowledgement before sending the next.
//!
//! Puts go through the member pool with [`Retry::NotSent`]: a batch whose
//! outcome is unknown fails every put in it as unknown, never sent twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use etcd_client as etcd;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::header_revision;
use super::pool::{ATTEMPT_TIMEOUT, Failure, Pool, Retry};

/// etcd's default `--max-txn-ops`.
const MAX_OPS: usize = 128;
/// Transactions in flight at once: enough to keep etcd's pipeline busy while
/// the next batch forms.
const IN_FLIGHT: usize = 4;

/// The revision a put was committed at, or why it was not.
pub(super) type Reply = Result<u64, Failure>;

struct Pending {
    key: Vec<u8>,
    value: Vec<u8>,
    reply: oneshot::Sender<Reply>,
}

/// Hands puts to the batching task; the task ends when the last clone drops.
#[derive(Clone)]
pub(super) struct Batcher {
    queue: mpsc::UnboundedSender<Pending>,
    pool: Arc<Pool>,
    /// Puts not answered yet, sent directly or batched.
    busy: Arc<AtomicUsize>,
}

/// Counts a put as busy until dropped.
struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Batcher {
    pub(super) fn start(pool: Arc<Pool>) -> Batcher {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(run(Arc::clone(&pool), pending));
        Batcher { queue, pool, busy: Arc::default() }
    }

    /// Puts `key`, alone or in company.
    pub(super) async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Reply {
        let alone = self.busy.fetch_add(1, Ordering::AcqRel) == 0;
        let _busy = Busy(Arc::clone(&self.busy));
        if alone {
            return put_one(&self.pool, key, value).await;
        }
        let (reply, answer) = oneshot::channel();
        let closed = || Failure::NotSent(etcd::Error::Internal("the etcd write batcher has stopped".to_owned()));
        self.queue.send(Pending { key, value, reply }).map_err(|_| closed())?;
        answer.await.unwrap_or_else(|_| Err(closed()))
    }
}

async fn run(pool: Arc<Pool>, mut pending: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match pending.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        // Wait for a free slot before collecting: what arrives meanwhile
        // joins this batch.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
        let mut keys = HashSet::from([first.key.clone()]);
        let mut batch = vec![first];
        while batch.len() < MAX_OPS {
            let Ok(next) = pending.try_recv() else { break };
            if !keys.insert(next.key.clone()) {
                carried = Some(next);
                break;
            }
            batch.push(next);
        }
        let pool = Arc::clone(&pool);
        tokio::spawn(async move {
            commit(&pool, batch).await;
            drop(slot);
        });
    }
}

/// One plain put, exactly what a direct client sends.
async fn put_one(pool: &Pool, key: Vec<u8>, value: Vec<u8>) -> Reply {
    let done = pool
        .call(Retry::NotSent, ATTEMPT_TIMEOUT, |client, _| {
            let (key, value) = (key.clone(), value.clone());
            async move { client.kv_client().put(key, value, None).await }
        })
        .await?;
    Ok(header_revision(done.value.header()))
}

async fn commit(pool: &Pool, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        // Alone: the plain RPC.
        let one = batch.pop().expect("one put");
        let _ = one.reply.send(put_one(pool, one.key, one.value).await);
        return;
    }
    let ops: Vec<(Vec<u8>, Vec<u8>)> =
        batch.iter_mut().map(|p| (std::mem::take(&mut p.key), std::mem::take(&mut p.value))).collect();
    let result = pool
        .call(Retry::NotSent, ATTEMPT_TIMEOUT, |client, _| {
            let ops =
                ops.iter().map(|(key, value)| etcd::TxnOp::put(key.clone(), value.clone(), None)).collect::<Vec<_>>();
            async move { client.kv_client().txn(etcd::Txn::new().and_then(ops)).await }
        })
        .await
        .map(|done| header_revision(done.value.header()));
    for put in batch {
        let _ = put.reply.send(match &result {
            Ok(revision) => Ok(*revision),
            Err(failure) => Err(copy_failure(failure)),
        });
    }
}

/// The same failure for every put of a failed batch (etcd's error is not Clone).
fn copy_failure(failure: &Failure) -> Failure {
    let error = match failure.error() {
        etcd::Error::GRpcStatus(status) => etcd::Error::GRpcStatus(status.clone()),
        other => etcd::Error::Internal(other.to_string()),
    };
    match failure {
        Failure::NotSent(_) => Failure::NotSent(error),
        Failure::Unknown(_) => Failure::Unknown(error),
        Failure::Answered(_) => Failure::Answered(error),
    }
}
