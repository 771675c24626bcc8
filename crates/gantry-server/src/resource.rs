//! The one resource layer. Each kind of document declares once, as a
//! [`Resource`], its key layout (through `gantry_api::keys`), its body
//! type, its routes and its validation; generic handlers read, list, write
//! and delete it through the request's [`Gate`], and [`mount`] gives it its
//! routes and their OpenAPI operations.

use axum::Json;
use axum::body::Bytes;
use axum::extract::RawQuery;
use axum::extract::rejection::BytesRejection;
use axum::routing::{self, MethodRouter};
use gantry_api::keys::{self, AgentKey, AgentKeyRef, StoreKey};
use gantry_api::{
    AgentStatus, Allocation, DeployRequest, ErrorCode, Group, Instance, JobStatus, ListenerSwitch, Listing,
    MANAGEMENT_POLICY, Machine, NodeEligibility, NodeUsage, Policy, ServiceControl, ServiceDefinition, WriteResult,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use crate::access::Owner;
use crate::error::{ApiError, ApiResult, Ids};
use crate::gate::{AppState, Gate, WriteOptions, body_bytes, json_body};
use crate::openapi::{self, Op};

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

    /// The document's key (`gantry_api::keys`).
    fn key(id: &Self::Id) -> String;

    /// Whether a key under the listed prefix holds one of these (an
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
    pub list: Option<List>,
    /// `GET` one document (and `DELETE` it when `delete`).
    pub item: &'static str,
    /// `PUT` one document.
    pub put: &'static str,
    pub delete: bool,
}

/// A listing route: `GET path` answers the documents under `prefix`.
#[derive(Debug, Clone, Copy)]
pub struct List {
    pub path: &'static str,
    pub prefix: &'static str,
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
    let prefix = R::ROUTES.list.map_or("", |list| list.prefix);
    gate.list::<R>(prefix, |_| true).await.map(Json)
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
pub fn mount<R: Resource>(mut api: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    let routes = R::ROUTES;
    let mut operations: Vec<(Op, &str, MethodRouter<AppState>)> =
        vec![(Op::Get, routes.item, routing::get(get_one::<R>)), (Op::Put, routes.put, routing::put(put_one::<R>))];
    if let Some(list) = routes.list {
        operations.push((Op::List, list.path, routing::get(list_all::<R>)));
    }
    if routes.delete {
        operations.push((Op::Delete, routes.item, routing::delete(delete_one::<R>)));
    }
    for (op, path, route) in operations {
        api = api.routes(openapi::resource_operation::<R>(path, op, route));
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
    const ROUTES: Routes = Routes {
        list: Some(List { path: "/v1/machines", prefix: keys::MACHINES }),
        item: "/v1/machines/{id}",
        put: "/v1/machines/{id}",
        delete: true,
    };

    fn key(id: &String) -> String {
        keys::machine(id)
    }

    fn check(id: &String, machine: &Machine, _raw: &[u8]) -> ApiResult<()> {
        same("id", &machine.id, id)
    }

    fn owner(machine: &Machine) -> Owner<'_> {
        Owner {
            machine: Some(&machine.id),
            federation: machine.labels.get("federation").map(String::as_str),
            address: Some(&machine.address),
        }
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
    const ROUTES: Routes = Routes {
        list: Some(List { path: "/v1/groups", prefix: keys::GROUPS }),
        item: "/v1/groups/{name}",
        put: "/v1/groups/{name}",
        delete: true,
    };

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
    const ROUTES: Routes = Routes {
        list: Some(List { path: "/v1/services", prefix: keys::SERVICES }),
        item: "/v1/services/{id}",
        put: "/v1/services/{id}",
        delete: true,
    };

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
        Owner { machine: None, federation: definition.federation.as_deref(), address: None }
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

    fn key((service, id): &(String, String)) -> String {
        keys::instance(service, id)
    }

    fn check((service, id): &(String, String), instance: &Instance, _raw: &[u8]) -> ApiResult<()> {
        same("service", &instance.service, service)?;
        same("id", &instance.id, id)
    }

    fn owner(instance: &Instance) -> Owner<'_> {
        Owner {
            machine: Some(&instance.machine),
            federation: Some(&instance.federation),
            address: Some(&instance.address),
        }
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
        list: Some(List { path: "/v1/agents", prefix: keys::AGENTS }),
        item: "/v1/agents/{machine}",
        put: "/v1/agents/{machine}/status",
        delete: false,
    };

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
        Owner { machine: Some(&status.machine), federation: None, address: None }
    }

    fn missing(machine: &String) -> String {
        format!("no agent {machine:?} connected")
    }
}

/// `agents/<machine>/usage`: what each node and its processes use.
#[derive(Debug)]
pub struct AgentUsages;

impl Resource for AgentUsages {
    type Body = NodeUsage;
    type Id = String;
    const WHAT: &'static str = "usage of machine";
    const IDS: &'static [&'static str] = &["machine"];
    const TAG: &'static str = "agents";
    const ROUTES: Routes = Routes {
        list: Some(List { path: "/v1/usage", prefix: keys::AGENTS }),
        item: "/v1/agents/{machine}/usage",
        put: "/v1/agents/{machine}/usage",
        delete: false,
    };

    fn key(machine: &String) -> String {
        AgentKey::Usage.of(machine)
    }

    fn is_document(key: &StoreKey<'_>) -> bool {
        matches!(key, StoreKey::Agent { key: AgentKeyRef::Usage, .. })
    }

    fn check(machine: &String, usage: &NodeUsage, _raw: &[u8]) -> ApiResult<()> {
        same("machine", &usage.machine, machine)
    }

    fn owner(usage: &NodeUsage) -> Owner<'_> {
        Owner { machine: Some(&usage.machine), federation: None, address: None }
    }

    fn missing(machine: &String) -> String {
        format!("no usage published by machine {machine:?} (is its agent connected?)")
    }
}

/// `allocs/<machine>/<id>`: scheduled work placed on a node. The scheduler
/// writes them; an operator may (as any document), an agent only reads its own.
#[derive(Debug)]
pub struct Allocations;

impl Resource for Allocations {
    type Body = Allocation;
    type Id = (String, String);
    const WHAT: &'static str = "allocation";
    const IDS: &'static [&'static str] = &["machine", "allocation"];
    const TAG: &'static str = "scheduling";
    const ROUTES: Routes = Routes {
        list: Some(List { path: "/v1/allocations", prefix: keys::ALLOCS }),
        item: "/v1/nodes/{machine}/allocations/{id}",
        put: "/v1/nodes/{machine}/allocations/{id}",
        delete: true,
    };

    fn key((machine, id): &(String, String)) -> String {
        keys::alloc(machine, id)
    }

    fn check((machine, id): &(String, String), alloc: &Allocation, _raw: &[u8]) -> ApiResult<()> {
        same("machine", &alloc.machine, machine)?;
        same("id", &alloc.id, id)
    }

    fn owner(alloc: &Allocation) -> Owner<'_> {
        Owner { machine: Some(&alloc.machine), federation: Some(&alloc.federation), address: None }
    }

    fn missing((machine, id): &(String, String)) -> String {
        format!("no allocation {id:?} on node {machine:?}")
    }
}

/// `jobs/<service>`: the scheduler's latest evaluation of a scheduled service.
#[derive(Debug)]
pub struct Jobs;

impl Resource for Jobs {
    type Body = JobStatus;
    type Id = String;
    const WHAT: &'static str = "job status of service";
    const IDS: &'static [&'static str] = &["service"];
    const TAG: &'static str = "scheduling";
    const ROUTES: Routes = Routes {
        list: Some(List { path: "/v1/jobs", prefix: keys::JOBS }),
        item: "/v1/jobs/{service}",
        put: "/v1/jobs/{service}",
        delete: true,
    };

    fn key(service: &String) -> String {
        keys::job(service)
    }

    fn check(service: &String, job: &JobStatus, _raw: &[u8]) -> ApiResult<()> {
        same("service", &job.service, service)
    }

    fn missing(service: &String) -> String {
        format!("no job status for service {service:?} (is it a scheduled service, with a \"count\"?)")
    }
}

/// `eligibility/<machine>`: whether the scheduler may place work on a node,
/// and whether it is draining (`gantry node:drain`, `node:eligible`).
#[derive(Debug)]
pub struct Eligibilities;

impl Resource for Eligibilities {
    type Body = NodeEligibility;
    type Id = String;
    const WHAT: &'static str = "eligibility of node";
    const IDS: &'static [&'static str] = &["machine"];
    const TAG: &'static str = "scheduling";
    const ROUTES: Routes = Routes {
        list: Some(List { path: "/v1/eligibility", prefix: keys::ELIGIBILITY }),
        item: "/v1/nodes/{machine}/eligibility",
        put: "/v1/nodes/{machine}/eligibility",
        delete: true,
    };

    fn key(machine: &String) -> String {
        keys::eligibility(machine)
    }

    fn check(machine: &String, eligibility: &NodeEligibility, _raw: &[u8]) -> ApiResult<()> {
        same("machine", &eligibility.machine, machine)
    }

    fn missing(machine: &String) -> String {
        format!("node {machine:?} has no eligibility record: it is eligible")
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

/// `acl/policies/<name>`: named rules that tokens hold.
#[derive(Debug)]
pub struct Policies;

impl Resource for Policies {
    type Body = Policy;
    type Id = String;
    const WHAT: &'static str = "policy";
    const IDS: &'static [&'static str] = &["policy"];
    const TAG: &'static str = "acl";
    const ROUTES: Routes = Routes {
        list: Some(List { path: "/v1/acl/policies", prefix: keys::ACL_POLICIES }),
        item: "/v1/acl/policies/{name}",
        put: "/v1/acl/policies/{name}",
        delete: true,
    };

    fn key(name: &String) -> String {
        keys::acl_policy(name)
    }

    fn check(name: &String, policy: &Policy, _raw: &[u8]) -> ApiResult<()> {
        same("name", &policy.name, name)?;
        if name == MANAGEMENT_POLICY {
            return Err(ApiError::new(
                ErrorCode::InvalidBody,
                "\"management\" is built in (everything): choose another name",
            ));
        }
        if policy.rules.is_empty() {
            return Err(ApiError::new(
                ErrorCode::InvalidBody,
                "a policy needs rules: [{\"prefix\": \"kv/app/\", \"access\": \"write\"}]",
            ));
        }
        for federation in &policy.federations {
            check_id("federation", federation)?;
        }
        Ok(())
    }
}
