//! The one resource layer. Each kind of document declares once, as a
//! [`Resource`], its key layout (through `gantry_api::keys`), its body type
//! and its validation; generic handlers read, list, write and delete it,
//! and [`mount`] gives each one its routes and their OpenAPI operations.
//! Every request reaches the store through a [`Gate`], which holds the
//! request's [`Caller`] and calls [`access::authorize`] before each
//! operation, so access control has one place to live.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, RawQuery};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{self, MethodRouter};
use gantry_api::keys::{self, AgentKey, AgentKeyRef, StoreKey};
use gantry_api::{
    AgentStatus, DeleteResult, DeployRequest, ErrorCode, Group, HealthStatus, Instance, LeaseGrant, ListenerSwitch,
    Listing, Machine, ServiceControl, ServiceDefinition, WriteResult,
};
use gantry_store::{KeyValue, LeaseId, RangeResponse, Store, StoreError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::openapi::HttpMethod;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::access::{self, Action, Caller, Owner, Target};
use crate::error::{ApiError, ApiResult, Ids};
use crate::hub::{Follower, Hubs, Position};
use crate::metrics::Metrics;
use crate::{openapi, query, watch};

/// What the server's requests share. Its store is reachable only through
/// a [`Gate`].
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    store: Store,
    metrics: Arc<Metrics>,
    /// The watched prefixes' shared store watches.
    hubs: Hubs,
    /// To agents' own APIs (logs).
    http: reqwest::Client,
}

impl AppState {
    pub fn new(store: Store) -> AppState {
        let hubs = Hubs::new(store.clone(), watch::encode);
        AppState(Arc::new(Shared { store, metrics: Arc::default(), hubs, http: reqwest::Client::new() }))
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }
}

/// A request's way to the store: its caller and the server's state. Each
/// operation is authorized for the caller before it happens.
#[derive(Debug)]
pub struct Gate {
    state: AppState,
    caller: Caller,
}

impl FromRequestParts<AppState> for Gate {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Gate, Infallible> {
        let caller = Caller::from_request_parts(parts, state).await?;
        Ok(Gate { state: state.clone(), caller })
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
    fn allow(&self, action: Action, target: Target<'_>) -> ApiResult<()> {
        access::authorize(&self.caller, action, &target)
    }

    fn store(&self) -> &Store {
        &self.state.0.store
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> ApiResult<HealthStatus> {
        self.allow(Action::Read, Target::Server)?;
        let revision = self.store().revision().await?;
        let store = format!("{:?}", self.store().engine()).to_lowercase();
        Ok(HealthStatus { status: "ok".into(), store, revision })
    }

    /// `GET /metrics`: Prometheus text.
    pub async fn metrics(&self) -> ApiResult<String> {
        self.allow(Action::Read, Target::Server)?;
        let revision = self.store().revision().await.unwrap_or(0);
        Ok(self.state.0.metrics.render(revision, self.state.0.hubs.running()))
    }

    /// One document, authorized on whom it belongs to.
    pub async fn read<R: Resource>(&self, id: &R::Id) -> ApiResult<R::Body> {
        let key = R::key(id);
        let Some(kv) = self.store().get(&key).await?.kv else {
            return Err(ApiError::not_found(R::missing(id)));
        };
        let document: R::Body = decode(&kv)?;
        self.allow(Action::Read, Target::Key { key: layout_key(&key)?, owner: Some(R::owner(&document)) })?;
        Ok(document)
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
            let target = Target::Key { key, owner: Some(R::owner(&document)) };
            if keep(&document) && access::authorize(&self.caller, Action::Read, &target).is_ok() {
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
        range.kvs.retain(|kv| {
            StoreKey::parse(&kv.key).is_some_and(|key| {
                access::authorize(&self.caller, Action::Read, &Target::Key { key, owner: None }).is_ok()
            })
        });
        Ok(range)
    }

    /// One key as stored (KV values are not documents).
    pub async fn get(&self, key: &str) -> ApiResult<Option<KeyValue>> {
        self.allow(Action::Read, Target::Key { key: layout_key(key)?, owner: None })?;
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
        self.allow(Action::Write, Target::Key { key: layout_key(key)?, owner })?;
        if let Some(lease) = options.lease {
            self.allow(Action::Write, Target::Lease(Some(lease)))?;
        }
        let store = self.store();
        if let Some(expected) = options.cas {
            let mut txn = gantry_store::Txn::new().when_mod_revision(key, expected);
            txn = match options.lease {
                Some(l) => txn.put_with_lease(key, value, l),
                None => txn.put(key, value),
            };
            let t = store.txn(txn).await?;
            if !t.succeeded {
                return Err(cas_failed(key, expected));
            }
            return Ok(WriteResult { revision: t.revision });
        }
        let revision = match options.lease {
            Some(l) => store.put_with_lease(key, value, l).await?,
            None => store.put(key, value).await?,
        };
        Ok(WriteResult { revision })
    }

    /// Deletes one key, only at revision `cas` when given. Deleting what is
    /// not there is not an error (idempotent).
    pub async fn delete(&self, key: &str, cas: Option<u64>) -> ApiResult<DeleteResult> {
        self.allow(Action::Delete, Target::Key { key: layout_key(key)?, owner: None })?;
        if let Some(expected) = cas {
            let t = self.store().compare_and_delete(key, expected).await?;
            if !t.succeeded {
                return Err(cas_failed(key, expected));
            }
            return Ok(DeleteResult { revision: t.revision, deleted: 1 });
        }
        let d = self.store().delete(key).await?;
        Ok(DeleteResult { revision: d.revision, deleted: d.deleted })
    }

    /// Deletes every key under `prefix`.
    pub async fn delete_prefix(&self, prefix: &str) -> ApiResult<DeleteResult> {
        self.allow(Action::Delete, Target::Prefix(prefix))?;
        let d = self.store().delete_prefix(prefix).await?;
        Ok(DeleteResult { revision: d.revision, deleted: d.deleted })
    }

    pub async fn grant_lease(&self, ttl: Duration) -> ApiResult<LeaseGrant> {
        self.allow(Action::Write, Target::Lease(None))?;
        let lease = self.store().grant_lease(ttl).await?;
        Ok(LeaseGrant { id: lease.id.to_string(), ttl_secs: lease.ttl.as_secs() })
    }

    /// Renews `lease`; its TTL.
    pub async fn keep_alive(&self, lease: LeaseId) -> ApiResult<Duration> {
        self.allow(Action::Write, Target::Lease(Some(lease)))?;
        Ok(self.store().keep_alive(lease).await?)
    }

    pub async fn revoke_lease(&self, lease: LeaseId) -> ApiResult<()> {
        self.allow(Action::Delete, Target::Lease(Some(lease)))?;
        Ok(self.store().revoke_lease(lease).await?)
    }

    /// Follows `prefix` from `start` (`None`: from now) on its shared
    /// watch. The outer error is a refusal; the inner one the store's
    /// (a start outside the history).
    pub async fn follow(
        &self,
        prefix: &str,
        start: Option<Position>,
    ) -> ApiResult<(Result<Follower, StoreError>, Arc<Metrics>)> {
        self.allow(Action::Watch, Target::Prefix(prefix))?;
        gantry_store::validate_prefix(prefix)?;
        Ok((self.state.0.hubs.follow(prefix, start).await, Arc::clone(&self.state.0.metrics)))
    }

    /// Where `machine`'s agent answers, to read `service`'s log from it,
    /// and the client to ask it with.
    pub async fn agent_api(&self, machine: &str, service: &str) -> ApiResult<(String, &reqwest::Client)> {
        self.allow(Action::Read, Target::AgentLogs { machine, service })?;
        let status = self.read::<AgentStatuses>(&machine.to_owned()).await.map_err(|e| match e.code {
            ErrorCode::CorruptValue => {
                ApiError::new(ErrorCode::BadAgentStatus, format!("agent {machine}'s status: {}", e.message))
            }
            _ => e,
        })?;
        let Some(api) = status.api else {
            return Err(ApiError::not_found(format!(
                "agent {machine} runs without its API, so its logs cannot be read remotely"
            )));
        };
        Ok((api, &self.state.0.http))
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

/// A kind of document the API reads and writes whole.
pub trait Resource: Send + Sync + 'static {
    /// The document: a PUT's body (stored as sent) and a GET's answer.
    type Body: Serialize + DeserializeOwned + ToSchema + Send + Sync + 'static;
    /// The path's ids, in path order: `String` or `(String, String)`.
    type Id: PathIds;
    /// What one document is called, for messages and the OpenAPI document.
    const WHAT: &'static str;
    /// What each path id names, in path order (`["service", "instance"]`).
    const IDS: &'static [&'static str];
    /// The OpenAPI tag of its routes.
    const TAG: &'static str;
    const ROUTES: Routes;
    /// The store prefix a [`Routes::list`] route lists.
    const PREFIX: &'static str = "";

    /// The document's key (`gantry_api::keys`).
    fn key(id: &Self::Id) -> String;

    /// Whether a key under [`Resource::PREFIX`] holds one of these (an
    /// agent's prefix holds several kinds).
    fn is_document(_key: &StoreKey<'_>) -> bool {
        true
    }

    /// Checks a body against its path and its own rules.
    fn check(_id: &Self::Id, _body: &Self::Body, _raw: &[u8]) -> ApiResult<()> {
        Ok(())
    }

    /// Whom the document belongs to, for [`access::authorize`].
    fn owner(_body: &Self::Body) -> Owner<'_> {
        Owner::default()
    }

    /// The 404's message.
    fn missing(id: &Self::Id) -> String {
        let ids: Vec<&str> = id.segments().collect();
        format!("no {} {:?}", Self::WHAT, ids.join("/"))
    }
}

/// Where a resource's routes are.
#[derive(Debug, Clone, Copy)]
pub struct Routes {
    /// `GET`: every document of the kind.
    pub list: Option<&'static str>,
    /// `GET` one document (and `DELETE` it when `delete`).
    pub item: &'static str,
    /// `PUT` one document.
    pub put: &'static str,
    pub delete: bool,
}

/// A path's ids as axum extracts them.
pub trait PathIds: DeserializeOwned + Send + Sync + 'static {
    fn segments(&self) -> impl Iterator<Item = &str>;
}

impl PathIds for String {
    fn segments(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.as_str())
    }
}

impl PathIds for (String, String) {
    fn segments(&self) -> impl Iterator<Item = &str> {
        [self.0.as_str(), self.1.as_str()].into_iter()
    }
}

/// Ids in paths are one key segment each.
pub fn check_id(what: &str, id: &str) -> ApiResult<()> {
    if !keys::is_segment(id) {
        return Err(ApiError::new(ErrorCode::InvalidId, format!("invalid {what} id {id:?}")));
    }
    Ok(())
}

fn check_ids<R: Resource>(id: &R::Id) -> ApiResult<()> {
    R::IDS.iter().zip(id.segments()).try_for_each(|(what, id)| check_id(what, id))
}

/// A body naming other ids than its path is refused (it would be stored
/// under a key that contradicts it).
fn same(field: &str, in_body: &str, in_path: &str) -> ApiResult<()> {
    if in_body != in_path {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            format!("body {field} {in_body:?} does not match the path's {in_path:?}"),
        ));
    }
    Ok(())
}

async fn get_one<R: Resource>(gate: Gate, Ids(id): Ids<R::Id>) -> ApiResult<Json<R::Body>> {
    check_ids::<R>(&id)?;
    gate.read::<R>(&id).await.map(Json)
}

async fn list_all<R: Resource>(gate: Gate) -> ApiResult<Json<Listing<R::Body>>> {
    gate.list::<R>(R::PREFIX, |_| true).await.map(Json)
}

async fn put_one<R: Resource>(
    gate: Gate,
    Ids(id): Ids<R::Id>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<WriteResult>> {
    check_ids::<R>(&id)?;
    let options = WriteOptions::parse(raw.as_deref())?;
    let bytes = body_bytes(body)?;
    let document: R::Body = json_body(&bytes)?;
    R::check(&id, &document, &bytes)?;
    let key = R::key(&id);
    gate.write(&key, Some(R::owner(&document)), bytes, options).await.map(Json)
}

async fn delete_one<R: Resource>(gate: Gate, Ids(id): Ids<R::Id>) -> ApiResult<Json<WriteResult>> {
    check_ids::<R>(&id)?;
    let deleted = gate.delete(&R::key(&id), None).await?;
    Ok(Json(WriteResult { revision: deleted.revision }))
}

/// Adds `R`'s routes, and their operations to the document.
pub fn mount<R: Resource>(api: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    let routes = R::ROUTES;
    let mut api = api;
    if let Some(path) = routes.list {
        let route = routing::get(list_all::<R>);
        api = api.routes(openapi::resource_operation::<R>(path, HttpMethod::Get, openapi::Op::List, route));
    }
    let item: [(HttpMethod, openapi::Op, &str, MethodRouter<AppState>); 2] = [
        (HttpMethod::Get, openapi::Op::Get, routes.item, routing::get(get_one::<R>)),
        (HttpMethod::Put, openapi::Op::Put, routes.put, routing::put(put_one::<R>)),
    ];
    for (method, op, path, route) in item {
        api = api.routes(openapi::resource_operation::<R>(path, method, op, route));
    }
    if routes.delete {
        let route = routing::delete(delete_one::<R>);
        api = api.routes(openapi::resource_operation::<R>(routes.item, HttpMethod::Delete, openapi::Op::Delete, route));
    }
    api
}

// ---- The resources ----

/// `machines/<machine>`: the machine inventory (seed 002).
#[derive(Debug)]
pub struct Machines;

impl Resource for Machines {
    type Body = Machine;
    type Id = String;
    const WHAT: &'static str = "machine";
    const IDS: &'static [&'static str] = &["machine"];
    const TAG: &'static str = "inventory";
    const ROUTES: Routes =
        Routes { list: Some("/v1/machines"), item: "/v1/machines/{id}", put: "/v1/machines/{id}", delete: true };
    const PREFIX: &'static str = keys::MACHINES;

    fn key(id: &String) -> String {
        keys::machine(id)
    }

    fn check(id: &String, machine: &Machine, _raw: &[u8]) -> ApiResult<()> {
        same("id", &machine.id, id)
    }

    fn owner(machine: &Machine) -> Owner<'_> {
        Owner { machine: Some(&machine.id), federation: machine.labels.get("federation").map(String::as_str) }
    }
}

/// `groups/<group>`: node groups as `gantry apply` uploads them.
#[derive(Debug)]
pub struct Groups;

impl Resource for Groups {
    type Body = Group;
    type Id = String;
    const WHAT: &'static str = "group";
    const IDS: &'static [&'static str] = &["group"];
    const TAG: &'static str = "inventory";
    const ROUTES: Routes =
        Routes { list: Some("/v1/groups"), item: "/v1/groups/{name}", put: "/v1/groups/{name}", delete: true };
    const PREFIX: &'static str = keys::GROUPS;

    fn key(name: &String) -> String {
        keys::group(name)
    }

    fn check(name: &String, group: &Group, _raw: &[u8]) -> ApiResult<()> {
        same("name", &group.name, name)
    }
}

/// `services/<service>`: service definitions, judged as `gantry repo:check` judges the files.
#[derive(Debug)]
pub struct Services;

impl Resource for Services {
    type Body = ServiceDefinition;
    type Id = String;
    const WHAT: &'static str = "service";
    const IDS: &'static [&'static str] = &["service"];
    const TAG: &'static str = "inventory";
    const ROUTES: Routes =
        Routes { list: Some("/v1/services"), item: "/v1/services/{id}", put: "/v1/services/{id}", delete: true };
    const PREFIX: &'static str = keys::SERVICES;

    fn key(id: &String) -> String {
        keys::service(id)
    }

    fn check(id: &String, definition: &ServiceDefinition, raw: &[u8]) -> ApiResult<()> {
        same("id", &definition.id, id)?;
        // The shape is right; now its meaning (placeholders, ports, names).
        let text = std::str::from_utf8(raw).unwrap_or_default();
        gantry_spec::parse_service_json(id, text)
            .map(drop)
            .map_err(|e| ApiError::new(ErrorCode::InvalidBody, format!("invalid service definition: {e}")))
    }

    fn owner(definition: &ServiceDefinition) -> Owner<'_> {
        Owner { machine: None, federation: definition.federation.as_deref() }
    }
}

/// `instances/<service>/<instance>`: services running on machines.
#[derive(Debug)]
pub struct Instances;

impl Resource for Instances {
    type Body = Instance;
    type Id = (String, String);
    const WHAT: &'static str = "instance";
    const IDS: &'static [&'static str] = &["service", "instance"];
    const TAG: &'static str = "inventory";
    const ROUTES: Routes = Routes {
        list: None,
        item: "/v1/services/{service}/instances/{id}",
        put: "/v1/services/{service}/instances/{id}",
        delete: true,
    };
    const PREFIX: &'static str = keys::INSTANCES;

    fn key((service, id): &(String, String)) -> String {
        keys::instance(service, id)
    }

    fn check((service, id): &(String, String), instance: &Instance, _raw: &[u8]) -> ApiResult<()> {
        same("service", &instance.service, service)?;
        same("id", &instance.id, id)
    }

    fn owner(instance: &Instance) -> Owner<'_> {
        Owner { machine: Some(&instance.machine), federation: Some(&instance.federation) }
    }

    fn missing((service, id): &(String, String)) -> String {
        format!("no instance {id:?} of service {service:?}")
    }
}

/// `agents/<machine>/status`: what each agent publishes about itself.
#[derive(Debug)]
pub struct AgentStatuses;

impl Resource for AgentStatuses {
    type Body = AgentStatus;
    type Id = String;
    const WHAT: &'static str = "agent status";
    const IDS: &'static [&'static str] = &["machine"];
    const TAG: &'static str = "agents";
    const ROUTES: Routes = Routes {
        list: Some("/v1/agents"),
        item: "/v1/agents/{machine}",
        put: "/v1/agents/{machine}/status",
        delete: false,
    };
    const PREFIX: &'static str = keys::AGENTS;

    fn key(machine: &String) -> String {
        AgentKey::Status.of(machine)
    }

    fn is_document(key: &StoreKey<'_>) -> bool {
        matches!(key, StoreKey::Agent { key: AgentKeyRef::Status, .. })
    }

    fn check(machine: &String, status: &AgentStatus, _raw: &[u8]) -> ApiResult<()> {
        same("machine", &status.machine, machine)
    }

    fn owner(status: &AgentStatus) -> Owner<'_> {
        Owner { machine: Some(&status.machine), federation: None }
    }

    fn missing(machine: &String) -> String {
        format!("no agent {machine:?} connected")
    }
}

/// `agents/<machine>/listener`: the listener's switch.
#[derive(Debug)]
pub struct ListenerSwitches;

impl Resource for ListenerSwitches {
    type Body = ListenerSwitch;
    type Id = String;
    const WHAT: &'static str = "listener switch for machine";
    const IDS: &'static [&'static str] = &["machine"];
    const TAG: &'static str = "agents";
    const ROUTES: Routes = Routes {
        list: None,
        item: "/v1/agents/{machine}/listener",
        put: "/v1/agents/{machine}/listener",
        delete: false,
    };

    fn key(machine: &String) -> String {
        AgentKey::Listener.of(machine)
    }
}

/// `agents/<machine>/deploy`: the newest provision request.
#[derive(Debug)]
pub struct DeployRequests;

impl Resource for DeployRequests {
    type Body = DeployRequest;
    type Id = String;
    const WHAT: &'static str = "deploy request for machine";
    const IDS: &'static [&'static str] = &["machine"];
    const TAG: &'static str = "agents";
    const ROUTES: Routes =
        Routes { list: None, item: "/v1/agents/{machine}/deploy", put: "/v1/agents/{machine}/deploy", delete: false };

    fn key(machine: &String) -> String {
        AgentKey::Deploy.of(machine)
    }
}

/// `agents/<machine>/service/<service>`: stop/start/restart of one service on one machine.
#[derive(Debug)]
pub struct ServiceControls;

impl Resource for ServiceControls {
    type Body = ServiceControl;
    type Id = (String, String);
    const WHAT: &'static str = "service control";
    const IDS: &'static [&'static str] = &["machine", "service"];
    const TAG: &'static str = "agents";
    const ROUTES: Routes = Routes {
        list: None,
        item: "/v1/agents/{machine}/services/{service}",
        put: "/v1/agents/{machine}/services/{service}",
        delete: true,
    };

    fn key((machine, service): &(String, String)) -> String {
        AgentKey::Service(service.clone()).of(machine)
    }

    fn missing((machine, service): &(String, String)) -> String {
        format!("no service control of {service:?} on machine {machine:?}")
    }
}
