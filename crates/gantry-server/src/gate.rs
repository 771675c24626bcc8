//! The way every request reaches the store: a [`Gate`] holds the
//! request's [`Caller`] and the server's state, and calls
//! [`access::authorize`] with the typed target before each operation
//! (reads, listings, writes, deletes, leases, watches, the log proxy), so
//! access control has one place to live and handlers no way around it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use gantry_api::keys::StoreKey;
use gantry_api::{AgentStatus, DeleteResult, ErrorCode, HealthStatus, LeaseGrant, Listing, Machine, WriteResult};
use gantry_store::{KeyValue, LeaseId, RangeResponse, Store, StoreError};
use serde::de::DeserializeOwned;
use utoipa::IntoParams;

use crate::access::{self, Action, Caller, Owner, Target};
use crate::acl::Acl;
use crate::agents::AgentClient;
use crate::error::{ApiError, ApiResult};
use crate::hub::{Follower, Frame, Hubs, Position};
use crate::limits::connections::Connection;
use crate::limits::{Held, Limits, Usage, WatchSlot};
use crate::metrics::Metrics;
use crate::resource::{AgentStatuses, Machines, Resource};
use crate::{query, watch};

/// How long `GET /v1/health` waits for the store's revision.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// What the server's requests share. Its store is reachable only through
/// a [`Gate`].
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    store: Store,
    /// Tokens, policies and what agents' rights depend on.
    acl: Arc<Acl>,
    /// The limits, and what each token and client address holds of them.
    usage: Arc<Usage>,
    metrics: Arc<Metrics>,
    /// The watched prefixes' shared store watches.
    hubs: Hubs,
    /// To agents' own APIs (logs).
    agents: AgentClient,
    /// Release artifacts (issue 17); `None`: this server keeps none.
    artifacts: Option<Arc<dyn crate::deploys::artifacts::ArtifactStore>>,
}

impl AppState {
    pub fn new(
        store: Store,
        acl: Arc<Acl>,
        agents: AgentClient,
        limits: Limits,
        artifacts: Option<Arc<dyn crate::deploys::artifacts::ArtifactStore>>,
    ) -> AppState {
        let hubs = Hubs::new(store.clone(), watch::encode);
        let usage = Arc::new(Usage::new(limits));
        // Keys under a lease go when it ends, without a request to say so.
        let weak = Arc::downgrade(&usage);
        acl.on_lease_end(Box::new(move |lease| weak.upgrade().map(|usage| usage.lease_ended(lease)).is_some()));
        AppState(Arc::new(Shared { store, acl, usage, metrics: Arc::default(), hubs, agents, artifacts }))
    }

    pub fn acl(&self) -> &Arc<Acl> {
        &self.0.acl
    }

    pub fn usage(&self) -> &Arc<Usage> {
        &self.0.usage
    }

    /// Who sent `request` and whether its rate allows it now (it arrived
    /// at `at`): a 429 if not. Its caller (or why it has none: an unknown
    /// token) goes with it to the handler's [`Gate`]. Requests without a
    /// known token count against their client address.
    pub fn admit(&self, request: &mut Request, at: Instant) -> ApiResult<()> {
        let caller = Caller::resolve(request.headers(), self.acl());
        let usage = self.usage();
        let held = match &caller {
            Ok(Caller::Token { known, .. }) => usage.token(&known.token.accessor, &known.token.name),
            _ => match request.extensions().get::<ConnectInfo<Connection>>() {
                Some(connection) => Arc::clone(&connection.0.held),
                // Served without connection info (a router driven
                // directly): every such request is one client.
                None => usage.address(std::net::Ipv4Addr::UNSPECIFIED.into()),
            },
        };
        usage.admit_request(&held, at)?;
        request.extensions_mut().insert(Admitted { caller, held });
        Ok(())
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }
}

/// What the front door learnt of a request for its [`Gate`].
#[derive(Debug, Clone)]
struct Admitted {
    caller: Result<Caller, ApiError>,
    held: Arc<Held>,
}

/// A request's way to the store: its caller and the server's state. Each
/// operation is authorized for the caller before it happens, and counted
/// against the limits of what it holds.
#[derive(Debug)]
pub struct Gate {
    state: AppState,
    caller: Caller,
    /// What the caller's token (or, without one, its address) holds.
    held: Arc<Held>,
}

impl FromRequestParts<AppState> for Gate {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Gate, ApiError> {
        let Admitted { caller, held } = parts.extensions.remove::<Admitted>().ok_or_else(|| {
            ApiError::new(ErrorCode::Internal, "the request did not pass the server's front door (a bug)")
        })?;
        let caller = caller?;
        // Who first, then what: a request without a token is refused before
        // its body or query is even read (only health answers everyone).
        if matches!(caller, Caller::Anonymous) && parts.uri.path() != "/v1/health" {
            return Err(access::unauthorized("this request needs a token"));
        }
        Ok(Gate { state: state.clone(), caller, held })
    }
}

/// A put's query: `?cas=REV` and `?lease=ID`.
#[derive(Debug, Clone, Copy, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WriteOptions {
    /// Write only if the key's revision is this one (0: only if the key
    /// does not exist); otherwise 409 `cas_failed`.
    pub cas: Option<u64>,
    /// Attach the key to this lease (its hex id, from `POST /v1/leases`):
    /// the key disappears when the lease ends.
    #[param(value_type = Option<String>)]
    pub lease: Option<LeaseId>,
}

impl WriteOptions {
    pub fn parse(raw: Option<&str>) -> ApiResult<WriteOptions> {
        let q = query::parse(raw)?;
        Ok(WriteOptions { cas: query::number(&q, "cas")?, lease: q.get("lease").map(|v| query::lease(v)).transpose()? })
    }
}

impl Gate {
    /// [`access::authorize`], counted in the metrics.
    fn allow(&self, action: Action, target: Target<'_>) -> ApiResult<()> {
        let decision = access::authorize(&self.caller, action, &target);
        self.state.0.metrics.decided(action, decision.is_ok());
        decision
    }

    /// Whether a listing shows the caller `key` (with `owner`).
    fn shows(&self, key: StoreKey<'_>, raw: &str, owner: Option<Owner<'_>>) -> bool {
        self.caller.sees_everything() || self.allow(Action::Read, Target::Key { key, raw, owner }).is_ok()
    }

    /// Whether the caller may create tokens (asked before the request's
    /// body is read, so a caller without the right learns nothing of it).
    pub fn may_create_token(&self) -> ApiResult<()> {
        self.allow(Action::Write, Target::Prefix(gantry_api::keys::ACL_TOKENS))
    }

    /// The caller, once it has asked for its own token (a token may always).
    pub fn whoami(&self) -> ApiResult<&Caller> {
        self.allow(Action::Read, Target::OwnToken)?;
        Ok(&self.caller)
    }

    pub fn acl(&self) -> &Arc<Acl> {
        &self.state.0.acl
    }

    /// The store, for a computation that only reads and that the caller's
    /// right to write `key` covers (`job:plan`: what writing a service
    /// definition would make the scheduler do, written nowhere).
    pub fn store_if_may_write(&self, key: &str, owner: Option<Owner<'_>>) -> ApiResult<&Store> {
        self.allow(Action::Write, Target::Key { key: layout_key(key)?, raw: key, owner })?;
        Ok(self.store())
    }

    fn store(&self) -> &Store {
        &self.state.0.store
    }

    /// The store and the artifact store, for the deploys of `service`,
    /// once the caller may read them (`write`: create, upload, promote,
    /// abort, roll back).
    pub fn deploys(
        &self,
        service: &str,
        write: bool,
    ) -> ApiResult<(&Store, Option<crate::deploys::artifacts::SharedArtifacts>)> {
        let action = if write { Action::Write } else { Action::Read };
        self.allow(action, Target::Deploys { service })?;
        Ok((self.store(), self.state.0.artifacts.clone()))
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> ApiResult<HealthStatus> {
        self.allow(Action::Read, Target::Health)?;
        // Known without asking: etcd without a usable leader (quorum lost,
        // or an election under way). Balancers route around a 503.
        let unavailable = |fallback: ApiError| match self.store().problem() {
            Some(problem) => ApiError::new(ErrorCode::Unavailable, problem),
            None => fallback,
        };
        if let Some(problem) = self.store().problem() {
            return Err(ApiError::new(ErrorCode::Unavailable, problem));
        }
        // A balancer asks often and waits little: the store's own retries
        // (up to 6 s on etcd) are cut short.
        let revision = match tokio::time::timeout(HEALTH_TIMEOUT, self.store().revision()).await {
            Ok(Ok(revision)) => revision,
            Ok(Err(error)) => return Err(unavailable(error.into())),
            Err(_) => {
                let late = format!("the store did not answer within {HEALTH_TIMEOUT:?}");
                return Err(unavailable(ApiError::new(ErrorCode::Unavailable, late)));
            }
        };
        let store = format!("{:?}", self.store().engine()).to_lowercase();
        Ok(HealthStatus { status: "ok".into(), store, revision })
    }

    /// `GET /metrics`: Prometheus text.
    pub async fn metrics(&self) -> ApiResult<String> {
        self.allow(Action::Read, Target::Metrics)?;
        let revision = self.store().revision().await.unwrap_or(0);
        let mut text = self.state.0.metrics.render(revision, self.state.0.hubs.running());
        if let Some(stats) = self.store().etcd_stats() {
            crate::metrics::render_etcd(&mut text, &stats);
        }
        self.state.0.usage.render(&mut text, self.state.0.acl.most_leases());
        Ok(text)
    }

    /// Whether the caller may see `federation`'s things (see [`Caller::sees_federation`]).
    pub fn sees_federation(&self, federation: &str) -> bool {
        self.caller.sees_federation(federation)
    }

    /// What Prometheus' discovery is made of (`GET /v1/prometheus/targets`):
    /// machines, agents' statuses, service definitions and instances. The
    /// one right to read the targets covers these reads: a Prometheus
    /// token needs no rule over the keys themselves.
    pub async fn prometheus_sources(&self) -> ApiResult<crate::prometheus::Sources> {
        self.allow(Action::Read, Target::PrometheusTargets)?;
        let store = self.store();
        let (machines, agents, services, instances) = tokio::try_join!(
            store.range(gantry_api::keys::MACHINES, None),
            store.range(gantry_api::keys::AGENTS, None),
            store.range(gantry_api::keys::SERVICES, None),
            store.range(gantry_api::keys::INSTANCES, None),
        )?;
        Ok(crate::prometheus::Sources::decode(&machines.kvs, &agents.kvs, &services.kvs, &instances.kvs))
    }

    /// One document, authorized on whom it belongs to. A missing (or
    /// undecodable) one is authorized on its key alone, so that a caller
    /// who may not read it cannot tell whether it exists.
    pub async fn read<R: Resource>(&self, id: &R::Id) -> ApiResult<R::Body> {
        let key = R::key(id);
        let document = self.store().get(&key).await?.kv.map(|kv| decode::<R::Body>(&kv));
        let owner = match &document {
            Some(Ok(document)) => Some(R::owner(document)),
            _ => None,
        };
        self.allow(Action::Read, Target::Key { key: layout_key(&key)?, raw: &key, owner })?;
        document.unwrap_or_else(|| Err(ApiError::not_found(R::missing(id))))
    }

    /// The documents under `prefix` that `keep` takes, leaving out the ones
    /// the caller may not read.
    pub async fn list<R: Resource>(
        &self,
        prefix: &str,
        keep: impl Fn(&R::Body) -> bool,
    ) -> ApiResult<Listing<R::Body>> {
        self.allow(Action::Read, Target::Prefix(prefix))?;
        let range = self.store().range(prefix, None).await?;
        let mut items = Vec::with_capacity(range.kvs.len());
        for kv in &range.kvs {
            let Some(key) = StoreKey::parse(&kv.key).filter(R::is_document) else { continue };
            let document: R::Body = decode(kv)?;
            if keep(&document) && self.shows(key, &kv.key, Some(R::owner(&document))) {
                items.push(document);
            }
        }
        Ok(Listing { revision: range.revision, items })
    }

    /// The keys under `prefix` (at most `limit`), leaving out the ones the
    /// caller may not read.
    pub async fn range(&self, prefix: &str, limit: Option<usize>) -> ApiResult<RangeResponse> {
        self.allow(Action::Read, Target::Prefix(prefix))?;
        let mut range = self.store().range(prefix, limit).await?;
        range.kvs.retain(|kv| StoreKey::parse(&kv.key).is_some_and(|key| self.shows(key, &kv.key, None)));
        Ok(range)
    }

    /// One key as stored (KV values are not documents).
    pub async fn get(&self, key: &str) -> ApiResult<Option<KeyValue>> {
        self.allow(Action::Read, Target::Key { key: layout_key(key)?, raw: key, owner: None })?;
        Ok(self.store().get(key).await?.kv)
    }

    /// Stores `value` under `key` as sent, with the put's options; `owner`
    /// is what the body says about whom it belongs to.
    pub async fn write(
        &self,
        key: &str,
        owner: Option<Owner<'_>>,
        value: Bytes,
        options: WriteOptions,
    ) -> ApiResult<WriteResult> {
        self.allow(Action::Write, Target::Key { key: layout_key(key)?, raw: key, owner })?;
        if let Some(lease) = options.lease {
            self.allow(Action::Write, Target::Lease(Some(lease)))?;
        }
        // A token's keys and bytes count against its quota (what it holds
        // is what it wrote last): key and value, as the store holds them.
        let usage = &self.state.0.usage;
        let bytes = (key.len() + value.len()) as u64;
        let accounted = self.held.is_token();
        if accounted {
            usage.admit_write(&self.held, key, bytes)?;
        }
        let store = self.store();
        let noted = value.clone();
        let revision = if let Some(expected) = options.cas {
            let mut txn = gantry_store::Txn::new().when_mod_revision(key, expected);
            txn = match options.lease {
                Some(l) => txn.put_with_lease(key, value, l),
                None => txn.put(key, value),
            };
            let t = store.txn(txn).await?;
            if !t.succeeded {
                return Err(cas_failed(key, expected));
            }
            t.revision
        } else {
            match options.lease {
                Some(l) => store.put_with_lease(key, value, l).await?,
                None => store.put(key, value).await?,
            }
        };
        self.state.0.acl.note(key, Some(&noted));
        if accounted {
            usage.wrote(&self.held, key, bytes, options.lease, revision);
        }
        Ok(WriteResult { revision })
    }

    /// Deletes one key, only at revision `cas` when given. Deleting what is
    /// not there is not an error (idempotent).
    pub async fn delete(&self, key: &str, cas: Option<u64>) -> ApiResult<DeleteResult> {
        self.allow(Action::Delete, Target::Key { key: layout_key(key)?, raw: key, owner: None })?;
        if let Some(expected) = cas {
            let t = self.store().compare_and_delete(key, expected).await?;
            if !t.succeeded {
                return Err(cas_failed(key, expected));
            }
            self.state.0.usage.deleted(key, t.revision);
            return Ok(DeleteResult { revision: t.revision, deleted: 1 });
        }
        let d = self.store().delete(key).await?;
        self.state.0.acl.note(key, None);
        self.state.0.usage.deleted(key, d.revision);
        Ok(DeleteResult { revision: d.revision, deleted: d.deleted })
    }

    /// Deletes every key under `prefix`.
    pub async fn delete_prefix(&self, prefix: &str) -> ApiResult<DeleteResult> {
        self.allow(Action::Delete, Target::Prefix(prefix))?;
        let d = self.store().delete_prefix(prefix).await?;
        self.state.0.usage.deleted_prefix(prefix, d.revision);
        Ok(DeleteResult { revision: d.revision, deleted: d.deleted })
    }

    pub async fn grant_lease(&self, ttl: Duration) -> ApiResult<LeaseGrant> {
        self.allow(Action::Write, Target::Lease(None))?;
        // A token's leases are counted by the access view's records of who
        // granted each (they end with their lease); without access
        // control nobody owns a lease, and only the TTL is bounded.
        let live = self.caller.accessor().map_or(0, |accessor| self.state.0.acl.leases_of(accessor));
        self.state.0.usage.admit_lease(&self.held, live, ttl)?;
        let lease = self.store().grant_lease(ttl).await?;
        let id = lease.id.to_string();
        // Who granted it, under the lease itself (it goes with the lease):
        // only that token may renew or revoke it.
        if let Some(accessor) = self.caller.accessor() {
            let key = gantry_api::keys::acl_lease(&id);
            self.store().put_with_lease(&key, accessor.as_bytes().to_vec(), lease.id).await?;
            self.state.0.acl.note(&key, Some(accessor.as_bytes()));
        }
        Ok(LeaseGrant { id, ttl_secs: lease.ttl.as_secs() })
    }

    /// Renews `lease`; its TTL.
    pub async fn keep_alive(&self, lease: LeaseId) -> ApiResult<Duration> {
        self.allow(Action::Write, Target::Lease(Some(lease)))?;
        Ok(self.store().keep_alive(lease).await?)
    }

    pub async fn revoke_lease(&self, lease: LeaseId) -> ApiResult<()> {
        self.allow(Action::Delete, Target::Lease(Some(lease)))?;
        self.store().revoke_lease(lease).await?;
        // The access view says so too once it sees the owner record go.
        self.state.0.usage.lease_ended(lease);
        Ok(())
    }

    /// Follows `prefix` from `start` (`None`: from now) on its shared
    /// watch. The outer error is a refusal; the inner one the store's
    /// (a start outside the history).
    pub async fn follow(
        &self,
        prefix: &str,
        start: Option<Position>,
    ) -> ApiResult<(Result<Follower, StoreError>, Watcher)> {
        self.allow(Action::Watch, Target::Prefix(prefix))?;
        gantry_store::validate_prefix(prefix)?;
        let slot = self.state.0.usage.open_watch(&self.held)?;
        let visibility = Visibility(if self.caller.sees_everything() { None } else { Some(self.caller.clone()) });
        let watcher = Watcher::new(Arc::clone(&self.state.0.metrics), slot, visibility);
        Ok((self.state.0.hubs.follow(prefix, start).await, watcher))
    }

    /// What the server needs to read `service`'s log from `machine`'s
    /// agent: the machine as registered (its address), the status its
    /// agent published (its API's port), and the client to ask it with.
    pub async fn agent_api(&self, machine: &str, service: &str) -> ApiResult<(Machine, AgentStatus, &AgentClient)> {
        self.allow(Action::Read, Target::AgentLogs { machine, service })?;
        let status = self.read::<AgentStatuses>(&machine.to_owned()).await.map_err(|e| match e.code {
            ErrorCode::CorruptValue => {
                ApiError::new(ErrorCode::BadAgentStatus, format!("agent {machine}'s status: {}", e.message))
            }
            _ => e,
        })?;
        let registered = self.read::<Machines>(&machine.to_owned()).await.map_err(|e| match e.code {
            ErrorCode::NotFound => ApiError::not_found(format!(
                "machine {machine} is not registered (its agent's lease ended?), so where its agent answers is unknown"
            )),
            _ => e,
        })?;
        Ok((registered, status, &self.state.0.agents))
    }
}

/// One open watch, as long as it streams: counted in `/metrics` and
/// against its caller's watches, and what of it the caller may see.
#[derive(Debug)]
pub struct Watcher {
    metrics: Arc<Metrics>,
    _slot: WatchSlot,
    pub visibility: Visibility,
}

impl Watcher {
    fn new(metrics: Arc<Metrics>, slot: WatchSlot, visibility: Visibility) -> Watcher {
        metrics.watchers.fetch_add(1, Ordering::Relaxed);
        Watcher { metrics, _slot: slot, visibility }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.metrics.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Which of a watch's events its caller may see: each one is authorized
/// as a read of its key, with the owner the hub read from its value once
/// for every watcher.
#[derive(Debug, Clone)]
pub struct Visibility(Option<Caller>);

impl Visibility {
    pub fn shows(&self, frame: &Frame) -> bool {
        let Some(caller) = &self.0 else { return true };
        let Some(key) = StoreKey::parse(&frame.key) else { return false };
        let owner = Owner {
            machine: frame.owner.machine.as_deref(),
            federation: frame.owner.federation.as_deref(),
            address: frame.owner.address.as_deref(),
        };
        let owner = (owner != Owner::default()).then_some(owner);
        access::authorize(caller, Action::Read, &Target::Key { key, raw: &frame.key, owner }).is_ok()
    }
}

/// The typed key of a key this layer built; a key outside the layout (an
/// empty KV key) is the caller's mistake.
fn layout_key(key: &str) -> ApiResult<StoreKey<'_>> {
    StoreKey::parse(key)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidKey, format!("{key:?} is not a key Gantry stores")))
}

fn cas_failed(key: &str, expected: u64) -> ApiError {
    let wanted = if expected == 0 { "not to exist".to_string() } else { format!("to be at revision {expected}") };
    ApiError::new(
        ErrorCode::CasFailed,
        format!("compare-and-set failed: expected {key:?} {wanted}; read it again and retry"),
    )
}

/// A stored document as its type.
pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> ApiResult<T> {
    serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::new(ErrorCode::CorruptValue, format!("stored value of {:?} does not decode: {e}", kv.key))
    })
}

/// The request body, or the JSON 413/400 for one that could not be read.
pub fn body_bytes(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::BodyTooLarge, format!("request body over {} bytes", gantry_api::MAX_BODY_BYTES))
        } else {
            ApiError::new(ErrorCode::InvalidBody, e.body_text())
        }
    })
}

/// A JSON body as `T`, with serde's message (line, column, unknown field)
/// when it is not one.
pub fn json_body<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::new(ErrorCode::InvalidBody, format!("invalid JSON body: {e}")))
}
