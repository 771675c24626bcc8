//! The etcd engine: every store operation mapped onto etcd v3's own
//! primitives, so that several Gantry servers can share one cluster.
//! Revisions are etcd's, compare-and-set is a txn on `mod_revision`, leases
//! are etcd leases, watches are etcd watches from a start revision.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use etcd_client as etcd;
use futures::FutureExt;
use futures::future::BoxFuture;

mod batch;

use crate::backend::{Backend, Write, Written};
use crate::{
    Engine, EtcdConfig, Event, EventKind, GetResponse, KeyValue, Lease, LeaseId, RangeResponse, StoreError, TxnOp,
    Watch,
};

pub(crate) struct Etcd {
    client: etcd::Client,
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

impl Etcd {
    pub(crate) async fn connect(config: EtcdConfig) -> Result<Etcd, StoreError> {
        let endpoints = config.endpoints.join(",");
        let mut options = etcd::ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some(tls) = &config.tls {
            let mut tls_options = etcd::TlsOptions::new().ca_certificate(etcd::Certificate::from_pem(&tls.ca_pem));
            if let Some((cert, key)) = &tls.client {
                tls_options = tls_options.identity(etcd::Identity::from_pem(cert, key));
            }
            options = options.with_tls(tls_options);
        }
        if let Some(auth) = &config.auth {
            // etcd-client asks for a token with these at connect and again
            // when the token expires.
            options = options.with_user(auth.user.clone(), auth.password.clone());
        }
        let client = etcd::Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|source| etcd_error(&endpoints, "connect", source))?;
        let etcd =
            Etcd { batcher: batch::Batcher::start(client.kv_client()), client, namespace: config.namespace, endpoints };
        // Fail now, not on the first request, when nothing answers.
        etcd.revision().await?;
        Ok(etcd)
    }

    fn error(&self, action: &'static str, source: etcd::Error) -> StoreError {
        etcd_error(&self.endpoints, action, source)
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
        let mut kv = self.client.kv_client();
        let lease = txn.ops.iter().find_map(|op| match op {
            TxnOp::Put { lease: Some(lease), .. } => Some(*lease),
            _ => None,
        });
        let fail = |source| self.write_error(source, lease);
        // A lone put or delete uses the plain RPC: the same as a client
        // talking to etcd directly. Lone puts without a lease are batched
        // with concurrent ones (a missing lease would fail a whole batch).
        if txn.compares.is_empty() && txn.ops.len() == 1 {
            match txn.ops.into_iter().next() {
                Some(TxnOp::Put { key, value, lease: None }) => {
                    let revision = self.batcher.put(self.full_key(&key), value.to_vec()).await.map_err(fail)?;
                    return Ok(Written { succeeded: true, revision, deleted: 0 });
                }
                Some(TxnOp::Put { key, value, lease }) => {
                    let options = lease.map(|lease| etcd::PutOptions::new().with_lease(lease.0));
                    let response = kv.put(self.full_key(&key), value.to_vec(), options).await.map_err(fail)?;
                    return Ok(Written { succeeded: true, revision: header_revision(response.header()), deleted: 0 });
                }
                Some(TxnOp::Delete { key }) => {
                    let response = kv.delete(self.full_key(&key), None).await.map_err(fail)?;
                    let revision = header_revision(response.header());
                    return Ok(Written { succeeded: true, revision, deleted: response.deleted() as u64 });
                }
                None => unreachable!("one operation was checked above"),
            }
        }
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
        let ops: Vec<etcd::TxnOp> = txn
            .ops
            .into_iter()
            .map(|op| match op {
                TxnOp::Put { key, value, lease } => etcd::TxnOp::put(
                    self.full_key(&key),
                    value.to_vec(),
                    lease.map(|lease| etcd::PutOptions::new().with_lease(lease.0)),
                ),
                TxnOp::Delete { key } => etcd::TxnOp::delete(self.full_key(&key), None),
            })
            .collect();
        let response = kv.txn(etcd::Txn::new().when(compares).and_then(ops)).await.map_err(fail)?;
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

    fn write_error(&self, source: etcd::Error, lease: Option<LeaseId>) -> StoreError {
        match lease {
            Some(lease) if is_lease_not_found(&source) => StoreError::LeaseNotFound { lease },
            _ => self.error("write", source),
        }
    }
}

fn etcd_error(endpoints: &str, action: &'static str, source: etcd::Error) -> StoreError {
    StoreError::Etcd { endpoints: endpoints.to_owned(), action, source: Box::new(source) }
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
            let options = etcd::GetOptions::new().with_count_only();
            let response = self
                .client
                .kv_client()
                .get(vec![0u8], Some(options))
                .await
                .map_err(|source| self.error("read the revision", source))?;
            Ok(header_revision(response.header()))
        }
        .boxed()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<GetResponse, StoreError>> {
        async move {
            let response = self
                .client
                .kv_client()
                .get(self.full_key(key), None)
                .await
                .map_err(|source| self.error("get", source))?;
            let kv = response.kvs().first().map(|kv| self.key_value(kv));
            Ok(GetResponse { kv, revision: header_revision(response.header()) })
        }
        .boxed()
    }

    fn range<'a>(&'a self, prefix: &'a str, limit: Option<usize>) -> BoxFuture<'a, Result<RangeResponse, StoreError>> {
        async move {
            let limit = limit.map_or(0, |limit| i64::try_from(limit).unwrap_or(i64::MAX));
            // Keys come back sorted by key: etcd's default order.
            let options = etcd::GetOptions::new().with_prefix().with_limit(limit);
            let response = self
                .client
                .kv_client()
                .max_decoding_message_size(MAX_RANGE_RESPONSE_BYTES)
                .get(self.full_key(prefix), Some(options))
                .await
                .map_err(|source| self.error("range", source))?;
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
                    let options = etcd::DeleteOptions::new().with_prefix();
                    let response = self
                        .client
                        .kv_client()
                        .delete(self.full_key(&prefix), Some(options))
                        .await
                        .map_err(|source| self.error("delete", source))?;
                    Ok(Written {
                        succeeded: true,
                        revision: header_revision(response.header()),
                        deleted: response.deleted() as u64,
                    })
                }
            }
        }
        .boxed()
    }

    fn grant_lease(&self, id: LeaseId, ttl_secs: u64) -> BoxFuture<'_, Result<Lease, StoreError>> {
        async move {
            // Gantry picks the id (at random): etcd's own are its member id
            // and a counter, easy to guess.
            let options = etcd::LeaseGrantOptions::new().with_id(id.0);
            let response =
                self.client.lease_client().grant(ttl_secs as i64, Some(options)).await.map_err(|source| {
                    if status_message(&source).contains("lease already exists") {
                        StoreError::LeaseExists { lease: id }
                    } else {
                        self.error("grant a lease", source)
                    }
                })?;
            Ok(Lease { id: LeaseId(response.id()), ttl: Duration::from_secs(response.ttl() as u64) })
        }
        .boxed()
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<Duration, StoreError>> {
        async move {
            let fail = |source: etcd::Error| {
                if is_lease_not_found(&source) {
                    StoreError::LeaseNotFound { lease }
                } else {
                    self.error("keep a lease alive", source)
                }
            };
            // Opening the keep-alive stream renews the lease once and checks
            // it exists; one more round trip learns the TTL it was renewed to.
            let (mut keeper, mut responses) = self.client.lease_client().keep_alive(lease.0).await.map_err(fail)?;
            keeper.keep_alive().await.map_err(fail)?;
            match responses.message().await.map_err(fail)? {
                Some(response) if response.ttl() > 0 => Ok(Duration::from_secs(response.ttl() as u64)),
                _ => Err(StoreError::LeaseNotFound { lease }),
            }
        }
        .boxed()
    }

    fn revoke_lease(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            match self.client.lease_client().revoke(lease.0).await {
                Ok(_) => Ok(()),
                Err(source) if is_lease_not_found(&source) => Err(StoreError::LeaseNotFound { lease }),
                Err(source) => Err(self.error("revoke a lease", source)),
            }
        }
        .boxed()
    }

    fn watch<'a>(&'a self, prefix: &'a str, from_revision: u64) -> BoxFuture<'a, Result<Watch, StoreError>> {
        async move {
            let key = self.full_key(prefix);
            let options = if key.is_empty() {
                etcd::WatchOptions::new().with_all_keys()
            } else {
                etcd::WatchOptions::new().with_prefix()
            };
            let options = options.with_start_revision(from_revision as i64);
            let stream = self
                .client
                .watch_client()
                .watch(key, Some(options))
                .await
                .map_err(|source| self.error("watch", source))?;
            let mut state = Follower {
                stream,
                namespace: self.namespace.clone(),
                endpoints: self.endpoints.clone(),
                next: from_revision,
                pending: VecDeque::new(),
                ended: None,
                created: false,
            };
            // Return only once etcd has registered the watch, so that "from
            // now" (revision 0) means from this call's return, as embedded.
            while !state.created && state.ended.is_none() {
                state.receive().await;
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
            match self.client.kv_client().compact(revision as i64, None).await {
                Ok(_) => Ok(()),
                Err(source) => match status_message(&source) {
                    message if message.contains("has been compacted") => Ok(()),
                    message if message.contains("future revision") => {
                        Err(StoreError::FutureRevision { requested: revision })
                    }
                    _ => Err(self.error("compact", source)),
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
}

/// One etcd watch, turned into our events.
struct Follower {
    /// Owns the request side too: dropping it cancels the watch.
    stream: etcd::WatchStream,
    namespace: String,
    endpoints: String,
    /// The first revision not delivered yet, for `Compacted`.
    next: u64,
    pending: VecDeque<Event>,
    /// Set when the stream failed: delivered after the pending events.
    ended: Option<Option<StoreError>>,
    created: bool,
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
            self.receive().await;
        }
    }

    /// Reads one response into `pending`, or sets `ended`.
    async fn receive(&mut self) {
        let response = match self.stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => {
                self.ended = Some(Some(StoreError::Closed));
                return;
            }
            Err(source) => {
                self.ended = Some(Some(etcd_error(&self.endpoints, "watch", source)));
                return;
            }
        };
        self.created |= response.created();
        if response.compact_revision() > 0 {
            self.ended = Some(Some(StoreError::Compacted {
                requested: self.next,
                oldest_available: response.compact_revision() as u64,
            }));
            return;
        }
        if response.canceled() {
            let reason = response.cancel_reason().to_owned();
            let source = etcd::Error::WatchError(format!("etcd cancelled the watch: {reason}"));
            self.ended = Some(Some(etcd_error(&self.endpoints, "watch", source)));
            return;
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let key = kv.key().strip_prefix(self.namespace.as_bytes()).unwrap_or(kv.key());
            let (kind, value) = match event.event_type() {
                etcd::EventType::Put => (EventKind::Put, Bytes::copy_from_slice(kv.value())),
                etcd::EventType::Delete => (EventKind::Delete, Bytes::new()),
            };
            self.pending.push_back(Event {
                kind,
                key: String::from_utf8_lossy(key).into_owned(),
                value,
                mod_revision: kv.mod_revision() as u64,
            });
            self.next = self.next.max(kv.mod_revision() as u64 + 1);
        }
    }
}
