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

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use etcd_client as etcd;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::header_revision;

/// etcd's default `--max-txn-ops`.
const MAX_OPS: usize = 128;
/// Transactions in flight at once: enough to keep etcd's pipeline busy while
/// the next batch forms.
const IN_FLIGHT: usize = 4;

/// The revision a put was committed at, or why it was not.
pub(super) type Reply = Result<u64, etcd::Error>;

struct Pending {
    key: Vec<u8>,
    value: Vec<u8>,
    reply: oneshot::Sender<Reply>,
}

/// Hands puts to the batching task; the task ends when the last clone drops.
#[derive(Clone)]
pub(super) struct Batcher {
    queue: mpsc::UnboundedSender<Pending>,
    kv: etcd::KvClient,
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
    pub(super) fn start(kv: etcd::KvClient) -> Batcher {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(run(kv.clone(), pending));
        Batcher { queue, kv, busy: Arc::default() }
    }

    /// Puts `key`, alone or in company.
    pub(super) async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Reply {
        let alone = self.busy.fetch_add(1, Ordering::AcqRel) == 0;
        let _busy = Busy(Arc::clone(&self.busy));
        if alone {
            let response = self.kv.clone().put(key, value, None).await?;
            return Ok(header_revision(response.header()));
        }
        let (reply, answer) = oneshot::channel();
        let closed = || etcd::Error::Internal("the etcd write batcher has stopped".to_owned());
        self.queue.send(Pending { key, value, reply }).map_err(|_| closed())?;
        answer.await.unwrap_or_else(|_| Err(closed()))
    }
}

async fn run(kv: etcd::KvClient, mut pending: mpsc::UnboundedReceiver<Pending>) {
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
        let kv = kv.clone();
        tokio::spawn(async move {
            commit(kv, batch).await;
            drop(slot);
        });
    }
}

async fn commit(mut kv: etcd::KvClient, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        // Alone: the plain RPC, exactly what a direct client sends.
        let one = batch.pop().expect("one put");
        let result = kv.put(one.key, one.value, None).await.map(|r| header_revision(r.header()));
        let _ = one.reply.send(result);
        return;
    }
    let ops: Vec<etcd::TxnOp> = batch
        .iter_mut()
        .map(|p| etcd::TxnOp::put(std::mem::take(&mut p.key), std::mem::take(&mut p.value), None))
        .collect();
    let result = kv.txn(etcd::Txn::new().and_then(ops)).await.map(|r| header_revision(r.header()));
    for put in batch {
        let _ = put.reply.send(match &result {
            Ok(revision) => Ok(*revision),
            Err(error) => Err(copy_error(error)),
        });
    }
}

/// The same failure for every put of a failed batch (etcd's error is not Clone).
fn copy_error(error: &etcd::Error) -> etcd::Error {
    match error {
        etcd::Error::GRpcStatus(status) => etcd::Error::GRpcStatus(status.clone()),
        other => etcd::Error::Internal(other.to_string()),
    }
}
