//! The etcd engine: every store operation mapped onto etcd v3's own
//! primitives, so that several Gantry servers can share one cluster.
//! Revisions are etcd's, compare-and-set is a txn on `mod_revision`, leases
//! are etcd leases, watches are etcd watches from a start revision.
//!
//! Requests reach the cluster through [`pool`]: one member at a time,
//! failover to a healthy one, and the retry rule for requests whose outcome
//! is unknown. Watches resume from their next revision on another member.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_client as etcd;
use futures::FutureExt;
use futures::future::BoxFuture;

mod batch;
mod pool;

use crate::backend::{Backend, Write, Written};
use crate::{
    Engine, EtcdConfig, EtcdStats, Event, EventKind, GetResponse, KeyValue, Lease, LeaseId, RangeResponse, StoreError,
    TxnOp, Watch,
};
use pool::{ATTEMPT_TIMEOUT, Done, Failure, Fault, Pool, RETRY_BUDGET, Retry};

pub(crate) struct Etcd {
    pool: Arc<Pool>,
    /// Plain puts go through group commit (see [`batch`]).
    batcher: batch::Batcher,
    namespace: String,
    /// For error messages.
    endpoints: String,
}

/// The largest range answer read from etcd. gRPC's default, 4 MB, cut a
/// range of 7,000 allocations short ("decoded message length too large");
/// the embedded store holds up to 1 GiB, and a listing as large as that is
/// read whole here too.
const MAX_RANGE_RESPONSE_BYTES: usize = 1 << 30;

/// How long one attempt of a range may take: a listing can be large. A hung
/// member is still given up on as soon as the prober sees it.
const RANGE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

impl Etcd {
    pub(crate) async fn connect(config: EtcdConfig) -> Result<Etcd, StoreError> {
        let endpoints = config.endpoints.join(",");
        let mut options = etcd::ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            // A member cut off from the quorum refuses requests ("no
            // leader", retried elsewhere) and cancels its watches (resumed
            // elsewhere) instead of serving stale reads or nothing.
            .with_require_leader(true);
        if let Some(tls) = &config.tls {
            let mut tls_options = etcd::TlsOptions::new().ca_certificate(etcd::Certificate::from_pem(&tls.ca_pem));
            if let Some((cert, key)) = &tls.client {
                tls_options = tls_options.identity(etcd::Identity::from_pem(cert, key));
            }
            options = options.with_tls(tls_options);
        }
        if let Some(auth) = &config.auth {
            // etcd-client asks for a token with these at connect and, with
            // auto refresh, again when etcd refuses it: simple tokens expire
            // (5 min by default) and a restarted member knows none.
            options = options.with_user(auth.user.clone(), auth.password.clone()).with_auto_token_refresh(true);
        }
        if config.endpoints.is_empty() {
            return Err(etcd_error(&endpoints, "connect", etcd::Error::InvalidArgs("no endpoints".into())));
        }
        let pool = Pool::start(&config.endpoints, options, config.connect_timeout);
        let etcd =
            Etcd { batcher: batch::Batcher::start(Arc::clone(&pool)), pool, namespace: config.namespace, endpoints };
        // Fail now, not on the first request, when nothing answers.
        etcd.revision().await?;
        Ok(etcd)
    }

    fn error(&self, action: &'static str, failure: Failure) -> StoreError {
        failure_error(&self.endpoints, action, failure)
    }

    fn full_key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.namespace.len() + key.len());
        full.extend_from_slice(self.namespace.as_bytes());
        full.extend_from_slice(key.as_bytes());
        full
    }

    /// Our key for an etcd key; keys are written through this engine, so they
    /// are UTF-8 and carry the namespace.
    fn short_key(&self, key: &[u8]) -> String {
        let key = key.strip_prefix(self.namespace.as_bytes()).unwrap_or(key);
        String::from_utf8_lossy(key).into_owned()
    }

    fn key_value(&self, kv: &etcd::KeyValue) -> KeyValue {
        KeyValue {
            key: self.short_key(kv.key()),
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: kv.create_revision() as u64,
            mod_revision: kv.mod_revision() as u64,
            version: kv.version() as u64,
            lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
        }
    }

    async fn write_txn(&self, txn: crate::Txn) -> Result<Written, StoreError> {
        let lease = txn.ops.iter().find_map(|op| match op {
            TxnOp::Put { lease: Some(lease), .. } => Some(*lease),
            _ => None,
        });
        let fail = |failure| self.write_error(failure, lease);
        // A lone put or delete uses the plain RPC: the same as a client
        // talking to etcd directly. Lone puts without a lease are batched
        // with concurrent ones (a missing lease would fail a whole batch).
        // Without a compare, an unknown outcome is not retried.
        if txn.compares.is_empty() && txn.ops.len() == 1 {
            match txn.ops.into_iter().next() {
                Some(TxnOp::Put { key, value, lease: None }) => {
                    let revision = self.batcher.put(self.full_key(&key), value.to_vec()).await.map_err(fail)?;
                    return Ok(Written { succeeded: true, revision, deleted: 0 });
                }
                Some(TxnOp::Put { key, value, lease }) => {
                    let key = self.full_key(&key);
                    let done = self
                        .pool
                        .call(Retry::NotSent, ATTEMPT_TIMEOUT, |client, _| {
                            let options = lease.map(|lease| etcd::PutOptions::new().with_lease(lease.0));
                            let (key, value) = (key.clone(), value.to_vec());
                            async move { client.kv_client().put(key, value, options).await }
                        })
                        .await
                        .map_err(fail)?;
                    return Ok(Written { succeeded: true, revision: header_revision(done.value.header()), deleted: 0 });
                }
                Some(TxnOp::Delete { key }) => {
                    let key = self.full_key(&key);
                    let done = self
                        .pool
                        .call(Retry::NotSent, ATTEMPT_TIMEOUT, |client, _| {
                            let key = key.clone();
                            async move { client.kv_client().delete(key, None).await }
                        })
                        .await
                        .map_err(fail)?;
                    let revision = header_revision(done.value.header());
                    return Ok(Written { succeeded: true, revision, deleted: done.value.deleted() as u64 });
                }
                None => unreachable!("one operation was checked above"),
            }
        }
        let guarded = !txn.compares.is_empty();
        let compares: Vec<etcd::Compare> = txn
            .compares
            .iter()
            .map(|compare| {
                let key = self.full_key(&compare.key);
                match compare.mod_revision {
                    0 => etcd::Compare::create_revision(key, etcd::CompareOp::Equal, 0),
                    revision => etcd::Compare::mod_revision(key, etcd::CompareOp::Equal, revision as i64),
                }
            })
            .collect();
        let newest_compared = txn.compares.iter().map(|compare| compare.mod_revision).max().unwrap_or(0);
        let ops: Vec<KeyOp> = txn
            .ops
            .into_iter()
            .map(|op| match op {
                TxnOp::Put { key, value, lease } => (self.full_key(&key), Some((value.to_vec(), lease))),
                TxnOp::Delete { key } => (self.full_key(&key), None),
            })
            .collect();
        // A guarded transaction may be sent again after an unknown outcome:
        // its compare fails if the first attempt applied. That attempt then
        // also reads the keys it writes, to tell "applied by us" from "beaten
        // by another writer" (see `applied_before`).
        let retry = if guarded { Retry::Always } else { Retry::NotSent };
        let done = self
            .pool
            .call(retry, ATTEMPT_TIMEOUT, |client, maybe_applied| {
                let mut request = etcd::Txn::new().when(compares.clone()).and_then(etcd_ops(&ops));
                if maybe_applied {
                    let reads = ops.iter().map(|(key, _)| etcd::TxnOp::get(key.clone(), None)).collect::<Vec<_>>();
                    request = request.or_else(reads);
                }
                async move { client.kv_client().txn(request).await }
            })
            .await
            .map_err(fail)?;
        let Done { value: response, maybe_applied } = done;
        if maybe_applied
            && !response.succeeded()
            && let Some(revision) = applied_before(&response, &ops, newest_compared)
        {
            let deleted = ops.iter().filter(|(_, put)| put.is_none()).count() as u64;
            return Ok(Written { succeeded: true, revision, deleted });
        }
        let deleted = response
            .op_responses()
            .iter()
            .map(|op| match op {
                etcd::TxnOpResponse::Delete(delete) => delete.deleted() as u64,
                _ => 0,
            })
            .sum();
        Ok(Written { succeeded: response.succeeded(), revision: header_revision(response.header()), deleted })
    }

    fn write_error(&self, failure: Failure, lease: Option<LeaseId>) -> StoreError {
        match lease {
            Some(lease) if is_lease_not_found(failure.error()) => StoreError::LeaseNotFound { lease },
            _ => self.error("write", failure),
        }
    }
}

/// One operation of a transaction, keyed for etcd: the full key, and for a
/// put its value and lease (`None`: a delete).
type KeyOp = (Vec<u8>, Option<(Vec<u8>, Option<LeaseId>)>);

/// etcd's operations for ours (built again for each attempt).
fn etcd_ops(ops: &[KeyOp]) -> Vec<etcd::TxnOp> {
    ops.iter()
        .map(|(key, put)| match put {
            Some((value, lease)) => etcd::TxnOp::put(
                key.clone(),
                value.clone(),
                lease.map(|lease| etcd::PutOptions::new().with_lease(lease.0)),
            ),
            None => etcd::TxnOp::delete(key.clone(), None),
        })
        .collect()
}

/// After an attempt with an unknown outcome, a retry whose compare failed:
/// did the first attempt apply? Yes when every key it puts holds its value
/// (and lease), all written at one revision newer than every revision
/// compared, and every key it deletes is gone. Returns that revision.
fn applied_before(response: &etcd::TxnResponse, ops: &[KeyOp], newest_compared: u64) -> Option<u64> {
    let reads = response.op_responses();
    if reads.len() != ops.len() {
        return None;
    }
    let mut revision = None;
    for ((_, put), read) in ops.iter().zip(reads) {
        let etcd::TxnOpResponse::Get(read) = read else { return None };
        let kv = read.kvs().first();
        match (put, kv) {
            (None, None) => {}
            (Some((value, lease)), Some(kv)) => {
                let kv_lease = (kv.lease() != 0).then_some(LeaseId(kv.lease()));
                let at = kv.mod_revision() as u64;
                if kv.value() != value.as_slice() || kv_lease != *lease || at <= newest_compared {
                    return None;
                }
                if *revision.get_or_insert(at) != at {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(revision.unwrap_or_else(|| header_revision(response.header())))
}

fn etcd_error(endpoints: &str, action: &'static str, source: etcd::Error) -> StoreError {
    StoreError::Etcd { endpoints: endpoints.to_owned(), action, source: Box::new(source) }
}

/// The store's error for a failed request: an unknown outcome is its own.
fn failure_error(endpoints: &str, action: &'static str, failure: Failure) -> StoreError {
    match failure {
        Failure::Unknown(source) => {
            StoreError::UnknownOutcome { endpoints: endpoints.to_owned(), action, source: Box::new(source) }
        }
        other => etcd_error(endpoints, action, other.into_error()),
    }
}

fn header_revision(header: Option<&etcd::ResponseHeader>) -> u64 {
    header.map_or(0, |header| header.revision() as u64)
}

/// etcd says "requested lease not found" (gRPC NotFound) for puts, revokes
/// and keep-alives on a lease that is gone.
fn is_lease_not_found(error: &etcd::Error) -> bool {
    match error {
        etcd::Error::GRpcStatus(status) => status.message().contains("lease not found"),
        etcd::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
        _ => false,
    }
}

fn status_message(error: &etcd::Error) -> &str {
    match error {
        etcd::Error::GRpcStatus(status) => status.message(),
        _ => "",
    }
}

impl Backend for Etcd {
    fn engine(&self) -> Engine {
        Engine::Etcd
    }

    fn revision(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        async move {
            // Counting the keys equal to "\0" touches nothing and returns
            // the current revision in the header.
            let done = self
                .pool
                .call(Retry::Always, ATTEMPT_TIMEOUT, |client, _| async move {
                    let options = etcd::GetOptions::new().with_count_only();
                    client.kv_client().get(vec![0u8], Some(options)).await
                })
                .await
                .map_err(|failure| self.error("read the revision", failure))?;
            Ok(header_revision(done.value.header()))
        }
        .boxed()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<GetResponse, StoreError>> {
        async move {
            let full = self.full_key(key);
            let done = self
                .pool
                .call(Retry::Always, ATTEMPT_TIMEOUT, |client, _| {
                    let full = full.clone();
                    async move { client.kv_client().get(full, None).await }
                })
                .await
                .map_err(|failure| self.error("get", failure))?;
            let kv = done.value.kvs().first().map(|kv| self.key_value(kv));
            Ok(GetResponse { kv, revision: header_revision(done.value.header()) })
        }
        .boxed()
    }

    fn range<'a>(&'a self, prefix: &'a str, limit: Option<usize>) -> BoxFuture<'a, Result<RangeResponse, StoreError>> {
        async move {
            let limit = limit.map_or(0, |limit| i64::try_from(limit).unwrap_or(i64::MAX));
            let full = self.full_key(prefix);
            let done = self
                .pool
                .call(Retry::Always, RANGE_ATTEMPT_TIMEOUT, |client, _| {
                    // Keys come back sorted by key: etcd's default order.
                    let options = etcd::GetOptions::new().with_prefix().with_limit(limit);
                    let full = full.clone();
                    async move {
                        client
                            .kv_client()
                            .max_decoding_message_size(MAX_RANGE_RESPONSE_BYTES)
                            .get(full, Some(options))
                            .await
                    }
                })
                .await
                .map_err(|failure| self.error("range", failure))?;
            let response = done.value;
            Ok(RangeResponse {
                kvs: response.kvs().iter().map(|kv| self.key_value(kv)).collect(),
                more: response.more(),
                revision: header_revision(response.header()),
            })
        }
        .boxed()
    }

    fn write(&self, write: Write) -> BoxFuture<'_, Result<Written, StoreError>> {
        async move {
            match write {
                Write::Txn(txn) => self.write_txn(txn).await,
                Write::DeletePrefix(prefix) => {
                    let full = self.full_key(&prefix);
                    let done = self
                        .pool
                        .call(Retry::NotSent, ATTEMPT_TIMEOUT, |client, _| {
                            let full = full.clone();
                            async move {
                                client.kv_client().delete(full, Some(etcd::DeleteOptions::new().with_prefix())).await
                            }
                        })
                        .await
                        .map_err(|failure| self.error("delete", failure))?;
                    Ok(Written {
                        succeeded: true,
                        revision: header_revision(done.value.header()),
                        deleted: done.value.deleted() as u64,
                    })
                }
            }
        }
        .boxed()
    }

    fn grant_lease(&self, id: LeaseId, ttl_secs: u64) -> BoxFuture<'_, Result<Lease, StoreError>> {
        async move {
            // Gantry picks the id (at random): etcd's own are its member id
            // and a counter, easy to guess. That also makes a grant safe to
            // send again: "already exists" after an unknown outcome is ours.
            let result = self
                .pool
                .call(Retry::Always, ATTEMPT_TIMEOUT, |client, _| async move {
                    let options = etcd::LeaseGrantOptions::new().with_id(id.0);
                    client.lease_client().grant(ttl_secs as i64, Some(options)).await
                })
                .await;
            match result {
                Ok(done) => {
                    Ok(Lease { id: LeaseId(done.value.id()), ttl: Duration::from_secs(done.value.ttl() as u64) })
                }
                Err(failure) if status_message(failure.error()).contains("lease already exists") => {
                    Err(StoreError::LeaseExists { lease: id })
                }
                Err(failure) => Err(self.error("grant a lease", failure)),
            }
        }
        .boxed()
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<Duration, StoreError>> {
        async move {
            // Opening the keep-alive stream renews the lease once and checks
            // it exists; one more round trip learns the TTL it was renewed to.
            // Renewing is idempotent: retried on another member.
            let done = self
                .pool
                .call(Retry::Always, ATTEMPT_TIMEOUT, |client, _| async move {
                    let (mut keeper, mut responses) = client.lease_client().keep_alive(lease.0).await?;
                    keeper.keep_alive().await?;
                    responses.message().await
                })
                .await
                .map_err(|failure| {
                    if is_lease_not_found(failure.error()) {
                        StoreError::LeaseNotFound { lease }
                    } else {
                        self.error("keep a lease alive", failure)
                    }
                })?;
            match done.value {
                Some(response) if response.ttl() > 0 => Ok(Duration::from_secs(response.ttl() as u64)),
                _ => Err(StoreError::LeaseNotFound { lease }),
            }
        }
        .boxed()
    }

    fn revoke_lease(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let result = self
                .pool
                .call(Retry::Always, ATTEMPT_TIMEOUT, |client, maybe_applied| async move {
                    match client.lease_client().revoke(lease.0).await {
                        // Gone after an attempt that may have revoked it: done.
                        Err(error) if maybe_applied && is_lease_not_found(&error) => Ok(()),
                        Err(error) => Err(error),
                        Ok(_) => Ok(()),
                    }
                })
                .await;
            match result {
                Ok(_) => Ok(()),
                Err(failure) if is_lease_not_found(failure.error()) => Err(StoreError::LeaseNotFound { lease }),
                Err(failure) => Err(self.error("revoke a lease", failure)),
            }
        }
        .boxed()
    }

    fn watch<'a>(&'a self, prefix: &'a str, from_revision: u64) -> BoxFuture<'a, Result<Watch, StoreError>> {
        async move {
            let mut state = Follower {
                pool: Arc::clone(&self.pool),
                key: self.full_key(prefix),
                stream: None,
                namespace: self.namespace.clone(),
                endpoints: self.endpoints.clone(),
                next: from_revision,
                pending: VecDeque::new(),
                ended: None,
            };
            // Return only once etcd has registered the watch, so that "from
            // now" (revision 0) means from this call's return, as embedded.
            state.open().await;
            if let Some(Some(error)) = state.ended.take() {
                return Err(error);
            }
            Ok(Watch::new(futures::stream::unfold(state, |mut state| async move {
                let item = state.next_event().await?;
                Some((item, state))
            })))
        }
        .boxed()
    }

    fn compact(&self, revision: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let result = self
                .pool
                .call(Retry::Always, ATTEMPT_TIMEOUT, |client, _| async move {
                    client.kv_client().compact(revision as i64, None).await
                })
                .await;
            match result {
                Ok(_) => Ok(()),
                Err(failure) => match status_message(failure.error()) {
                    message if message.contains("has been compacted") => Ok(()),
                    message if message.contains("future revision") => {
                        Err(StoreError::FutureRevision { requested: revision })
                    }
                    _ => Err(self.error("compact", failure)),
                },
            }
        }
        .boxed()
    }

    fn checkpoint(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        // etcd compacts and defragments its own files.
        async { Ok(()) }.boxed()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async { Ok(()) }.boxed()
    }

    fn problem(&self) -> Option<String> {
        self.pool.view().problem
    }

    fn etcd_stats(&self) -> Option<EtcdStats> {
        let view = self.pool.view();
        let counters = &self.pool.counters;
        Some(EtcdStats {
            endpoint: self.pool.endpoint_in_use().to_owned(),
            members: view.members,
            members_up: view.up,
            leader: view.leader_ok,
            failovers: counters.failovers.load(Ordering::Relaxed),
            retries: counters.retries.load(Ordering::Relaxed),
            unknown_outcomes: counters.unknown_outcomes.load(Ordering::Relaxed),
        })
    }
}

/// One etcd watch, turned into our events; when its member fails, the
/// watch is opened again on another member from the next revision not
/// delivered, so watchers see no gap and no duplicate.
struct Follower {
    pool: Arc<Pool>,
    key: Vec<u8>,
    /// The etcd stream (owns the request side too: dropping it cancels the
    /// watch) and the signal that its member stopped answering.
    stream: Option<(etcd::WatchStream, Fault)>,
    namespace: String,
    endpoints: String,
    /// The first revision not delivered yet (0 until the first stream said
    /// where "now" is).
    next: u64,
    pending: VecDeque<Event>,
    /// Set when the watch failed for good: delivered after the pending events.
    ended: Option<Option<StoreError>>,
}

/// What one read of the etcd stream brought.
enum Received {
    Events,
    Created,
    /// The member failed or lost its leader: open the watch elsewhere.
    Lost,
}

impl Follower {
    async fn next_event(&mut self) -> Option<Result<Event, StoreError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if let Some(ended) = &mut self.ended {
                return ended.take().map(Err);
            }
            if self.stream.is_none() {
                self.open().await;
                continue;
            }
            if let Received::Lost = self.receive().await {
                self.stream = None;
            }
        }
    }

    /// Opens the etcd watch from `next` on a healthy member and waits until
    /// etcd registered it, retrying on other members for a while; sets
    /// `ended` when that fails.
    async fn open(&mut self) {
        let started = Instant::now();
        let mut tries: u32 = 0;
        while self.ended.is_none() {
            if tries > 0 {
                self.pool.counters.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(25 << tries.min(4))).await;
            }
            tries += 1;
            let last_error = match self.open_once().await {
                Ok(()) => return,
                Err(error) => error,
            };
            if started.elapsed() >= RETRY_BUDGET {
                self.ended = Some(Some(etcd_error(&self.endpoints, "watch", last_error)));
            }
        }
    }

    async fn open_once(&mut self) -> Result<(), etcd::Error> {
        let (client, fault) = self.pool.client_for_stream().await.map_err(Failure::into_error)?;
        let options = if self.key.is_empty() {
            etcd::WatchOptions::new().with_all_keys()
        } else {
            etcd::WatchOptions::new().with_prefix()
        };
        let options = options.with_start_revision(self.next as i64);
        let mut watch_client = client.watch_client();
        let opened = tokio::time::timeout(ATTEMPT_TIMEOUT, watch_client.watch(self.key.clone(), Some(options)));
        let stream = match opened.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                self.pool.stream_failed(&fault, &error);
                return Err(error);
            }
            Err(_) => return Err(etcd::Error::WatchError(format!("no answer within {ATTEMPT_TIMEOUT:?}"))),
        };
        self.stream = Some((stream, fault));
        let deadline = tokio::time::Instant::now() + ATTEMPT_TIMEOUT;
        loop {
            let received = tokio::time::timeout_at(deadline, self.receive()).await;
            match received {
                Ok(Received::Created) => return Ok(()),
                Ok(Received::Events) if self.ended.is_some() => return Ok(()),
                Ok(Received::Events) => {}
                Ok(Received::Lost) | Err(_) => {
                    self.stream = None;
                    return Err(etcd::Error::WatchError("the member did not register the watch".into()));
                }
            }
        }
    }

    /// Reads one response into `pending`, or sets `ended`.
    async fn receive(&mut self) -> Received {
        let Some((stream, fault)) = &mut self.stream else { return Received::Lost };
        let message = tokio::select! {
            message = stream.message() => message,
            () = fault.fired() => return Received::Lost,
        };
        let response = match message {
            Ok(Some(response)) => response,
            // The member closed the stream (it is shutting down).
            Ok(None) => return Received::Lost,
            Err(error) => {
                if matches!(pool::classify(&error), Failure::Answered(_)) {
                    self.ended = Some(Some(etcd_error(&self.endpoints, "watch", error)));
                    return Received::Events;
                }
                self.pool.stream_failed(fault, &error);
                return Received::Lost;
            }
        };
        if response.compact_revision() > 0 {
            self.ended = Some(Some(StoreError::Compacted {
                requested: self.next,
                oldest_available: response.compact_revision() as u64,
            }));
            return Received::Events;
        }
        if response.canceled() {
            let reason = response.cancel_reason().to_owned();
            if reason.contains("no leader") {
                return Received::Lost;
            }
            let source = etcd::Error::WatchError(format!("etcd cancelled the watch: {reason}"));
            self.ended = Some(Some(etcd_error(&self.endpoints, "watch", source)));
            return Received::Events;
        }
        if response.created() {
            if self.next == 0 {
                // "From now": the next revision after the one etcd is at.
                self.next = header_revision(response.header()) + 1;
            }
            return Received::Created;
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision() as u64;
            if revision < self.next {
                // Already delivered (never expected: a resumed watch starts at `next`).
                continue;
            }
            let key = kv.key().strip_prefix(self.namespace.as_bytes()).unwrap_or(kv.key());
            let (kind, value) = match event.event_type() {
                etcd::EventType::Put => (EventKind::Put, Bytes::copy_from_slice(kv.value())),
                etcd::EventType::Delete => (EventKind::Delete, Bytes::new()),
            };
            self.pending.push_back(Event {
                kind,
                key: String::from_utf8_lossy(key).into_owned(),
                value,
                mod_revision: revision,
            });
        }
        // Every event of a revision comes in one response: the next revision
        // to ask for is past the newest seen.
        if let Some(last) = self.pending.back() {
            self.next = self.next.max(last.mod_revision + 1);
        }
        Received::Events
    }
}
