//! Who is asking, and whether they may: the one access-control seam.
//!
//! Every request that reaches the store goes through [`crate::gate::Gate`],
//! which holds the request's [`Caller`] and calls [`authorize`] with what
//! the request does ([`Action`]) and to what ([`Target`]) before it touches
//! the store, the lease table, a watch or an agent.
//!
//! Default deny (DESIGN.md "Trust boundary"): without a token only
//! `GET /v1/health` answers (balancers ask it); every other request needs a
//! token that grants it, or gets 401 (no token, an unknown, revoked or
//! expired one) or 403 (a token without the right). What a token grants:
//! - the `management` policy: everything;
//! - other policies: their rules (longest prefix wins, see `acl::access_of`)
//!   over store keys and three names for what is not a key (`logs/<machine>/`,
//!   `metrics`, `prometheus/targets`), leases under `leases/`; a policy limited to federations
//!   sees no other federation's services and instances;
//! - an agent's token (its machine M, federation F): M's machine record,
//!   M's instances (at M's registered address, of the services M runs, in
//!   F), M's status and the leases it granted; it reads groups, F's
//!   services and instances, its own control documents, and the datastores
//!   its services require; nothing else.
//!
//! With `gantry server --acl off` every caller is [`Caller::Open`]: the
//! benchmarks' baseline, and nothing else should run that way.
//!
//! Over TLS the verified client certificate is the request's [`Peer`]: the
//! transport's identity (which node or operator holds the connection),
//! beside the token, which carries the rights.

use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use gantry_api::keys::{AgentKeyRef, StoreKey};
use gantry_api::{Access, AgentIdentity, ErrorCode};
use gantry_store::LeaseId;
use gantry_tls::listener::PeerCertificate;

use crate::acl::{Acl, AclMode, Identity, Known, Unknown, access_of};
use crate::error::{ApiError, ApiResult};
use crate::limits::connections::Connection;

/// Who sent a request, extracted once per request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// ACLs are off (`--acl off`): everything is allowed.
    Open,
    /// No token: only health answers.
    Anonymous,
    /// A known, unexpired token.
    Token { known: Known, acl: Arc<Acl> },
}

impl Caller {
    /// Who deploys: the token's name, if it has one (`None` with ACLs off).
    pub fn name(&self) -> Option<&str> {
        match self {
            Caller::Token { known, .. } if !known.token.name.is_empty() => Some(&known.token.name),
            _ => None,
        }
    }

    /// The token's accessor, for lease ownership and messages.
    pub fn accessor(&self) -> Option<&str> {
        match self {
            Caller::Token { known, .. } => Some(&known.token.accessor),
            _ => None,
        }
    }

    /// Whether the caller may see `federation`'s things: a policy limited
    /// to federations sees only those (an agent only its own).
    pub fn sees_federation(&self, federation: &str) -> bool {
        match self {
            Caller::Open => true,
            Caller::Anonymous => false,
            Caller::Token { known, .. } => match &*known.identity {
                Identity::Management | Identity::Rules { federations: None, .. } => true,
                Identity::Rules { federations: Some(allowed), .. } => allowed.contains(federation),
                Identity::Agent(agent) => agent.federation == federation,
            },
        }
    }

    /// Whether nothing this caller asks is ever refused (no filtering needed).
    pub fn sees_everything(&self) -> bool {
        match self {
            Caller::Open => true,
            Caller::Token { known, .. } => matches!(*known.identity, Identity::Management),
            Caller::Anonymous => false,
        }
    }
}

impl Caller {
    /// Who sent a request with `headers`: its token, or nobody; a token the
    /// server does not know is a 401.
    pub fn resolve(headers: &HeaderMap, acl: &Arc<Acl>) -> Result<Caller, ApiError> {
        if acl.mode() == AclMode::Off {
            return Ok(Caller::Open);
        }
        let Some(header) = headers.get(header::AUTHORIZATION) else { return Ok(Caller::Anonymous) };
        let secret = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header is not `Bearer <token>`"))?;
        match acl.resolve(secret) {
            Ok(known) => Ok(Caller::Token { known, acl: Arc::clone(acl) }),
            Err(Unknown::NoSuchToken) => Err(unauthorized("the token is not known here (revoked, or never issued)")),
            Err(Unknown::Expired) => Err(unauthorized("the token has expired")),
        }
    }
}

pub(crate) fn unauthorized(why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Unauthorized,
        format!("{why}: send `Authorization: Bearer <token>` (gantry: --token, GANTRY_TOKEN or GANTRY_TOKEN_FILE)"),
    )
}

/// The client certificate a TLS handshake verified, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer(pub Option<PeerCertificate>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Peer, Self::Rejection> {
        Ok(Peer(parts.extensions.get::<ConnectInfo<Connection>>().and_then(|c| c.0.certificate.clone())))
    }
}

/// What a request does to its [`Target`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    /// Create or replace (a lease: grant or renew).
    Write,
    Delete,
    /// Follow changes (`GET /v1/watch`).
    Watch,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Read, Action::Write, Action::Delete, Action::Watch];

    /// The metrics' label.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Delete => "delete",
            Action::Watch => "watch",
        }
    }

    fn needs(self) -> Access {
        match self {
            Action::Read | Action::Watch => Access::Read,
            Action::Write | Action::Delete => Access::Write,
        }
    }
}

/// What a request acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// One key of the layout (`raw` as stored). `owner` is what its
    /// document says about whom it belongs to, when the layer has the
    /// document: a write's body, a read's result (a read is authorized after
    /// the document is decoded, and a listing leaves out the documents a
    /// caller may not read). A delete has the key alone.
    Key { key: StoreKey<'a>, raw: &'a str, owner: Option<Owner<'a>> },
    /// Every key under a store prefix: a listing, a query, a watch, a
    /// prefix delete (items are then authorized one by one).
    Prefix(&'a str),
    /// A lease; `None` for one about to be granted.
    Lease(Option<LeaseId>),
    /// A service's log on one machine, read through its agent's API.
    AgentLogs { machine: &'a str, service: &'a str },
    /// `GET /v1/health`: open to anyone, so balancers can ask it.
    Health,
    /// `GET /metrics`.
    Metrics,
    /// `GET /v1/prometheus/targets`: every scrape target of the fleet.
    PrometheusTargets,
    /// The caller's own token (`GET /v1/acl/self`): any token may read itself.
    OwnToken,
    /// A service's deploys (issue 17): its releases, rollout and artifacts.
    /// Reading needs read on the service (an agent: running it); creating,
    /// promoting, aborting and rolling back need write on the service.
    Deploys { service: &'a str },
}

/// The rule prefix that grants `GET /v1/prometheus/targets`.
pub const PROMETHEUS_TARGETS: &str = "prometheus/targets";

/// Whom a document belongs to, as far as access control cares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owner<'a> {
    /// The machine it describes or runs on.
    pub machine: Option<&'a str>,
    /// The federation it is part of (federations never see each other).
    pub federation: Option<&'a str>,
    /// The address it is published at (an instance).
    pub address: Option<&'a str>,
}

/// Whether `caller` may do `action` to `target`: `Ok`, or the JSON 401/403.
///
/// Architecture invariant: this is the only place that decides access.
/// Handlers never call the store themselves; [`crate::gate::Gate`]
/// calls this before every operation.
pub fn authorize(caller: &Caller, action: Action, target: &Target<'_>) -> ApiResult<()> {
    if *target == Target::Health {
        return Ok(());
    }
    let (known, acl) = match caller {
        Caller::Open => return Ok(()),
        Caller::Anonymous => return Err(unauthorized("this request needs a token")),
        Caller::Token { known, acl } => (known, acl),
    };
    if *target == Target::OwnToken {
        return Ok(());
    }
    let allowed = match &*known.identity {
        Identity::Management => true,
        Identity::Rules { rules, federations } => by_rules(rules, federations.as_ref(), known, acl, action, target),
        Identity::Agent(agent) => as_agent(agent, known, acl, action, target),
    };
    if allowed {
        return Ok(());
    }
    let name = if known.token.name.is_empty() { String::new() } else { format!(" ({})", known.token.name) };
    Err(ApiError::new(
        ErrorCode::Forbidden,
        format!("token {}{name} may not {} {}", known.token.accessor, action.as_str(), describe(target)),
    ))
}

fn describe(target: &Target<'_>) -> String {
    match target {
        Target::Key { raw, .. } => raw.to_string(),
        Target::Prefix(prefix) => format!("keys under {prefix:?}"),
        Target::Lease(Some(lease)) => format!("lease {lease}"),
        Target::Lease(None) => "leases".into(),
        Target::AgentLogs { machine, service } => format!("the log of {service} on {machine}"),
        Target::Health => "health".into(),
        Target::Metrics => "metrics".into(),
        Target::PrometheusTargets => "the Prometheus targets".into(),
        Target::OwnToken => "its own token".into(),
        Target::Deploys { service } => format!("the deploys of {service}"),
    }
}

/// A token of policies: its rules, over the resource the target names.
fn by_rules(
    rules: &[gantry_api::Rule],
    federations: Option<&std::collections::BTreeSet<String>>,
    known: &Known,
    acl: &Acl,
    action: Action,
    target: &Target<'_>,
) -> bool {
    let needs = action.needs();
    let grants = |resource: &str| access_of(rules, resource) >= needs;
    match target {
        Target::Key { key, raw, owner } => {
            let in_federation = match (federations, federation_of(key, owner.as_ref(), acl)) {
                (Some(allowed), Some(federation)) => allowed.contains(&federation),
                _ => true,
            };
            // Releases and rollouts belong to their service.
            let resource = match key {
                StoreKey::Release { service, .. } | StoreKey::Rollout(service) => gantry_api::keys::service(service),
                _ => (*raw).to_owned(),
            };
            in_federation && grants(&resource)
        }
        Target::Deploys { service } => {
            let in_federation = federations.is_none_or(|allowed| {
                allowed.contains(
                    &acl.service_federation(service).unwrap_or_else(|| gantry_api::DEFAULT_FEDERATION.to_owned()),
                )
            });
            in_federation && grants(&gantry_api::keys::service(service))
        }
        // A listing or watch of a prefix is allowed when something under it
        // may be read: its items are authorized one by one.
        Target::Prefix(prefix) => {
            grants(prefix)
                || (needs == Access::Read
                    && rules.iter().any(|r| r.prefix.starts_with(prefix) && r.access >= Access::Read))
        }
        Target::Lease(None) => grants("leases/"),
        Target::Lease(Some(lease)) => {
            grants("leases/") && acl.lease_owner(&lease.to_string()).as_deref() == Some(&*known.token.accessor)
        }
        Target::AgentLogs { machine, service } => grants(&format!("logs/{machine}/{service}")),
        Target::Metrics => grants("metrics"),
        Target::PrometheusTargets => grants(PROMETHEUS_TARGETS),
        Target::Health | Target::OwnToken => true,
    }
}

/// The federation a service definition or an instance belongs to (a
/// definition without one is in `default`); `None` for other keys.
fn federation_of(key: &StoreKey<'_>, owner: Option<&Owner<'_>>, acl: &Acl) -> Option<String> {
    match key {
        StoreKey::Service(id) | StoreKey::Instance { service: id, .. } | StoreKey::Job(id) => Some(
            owner
                .and_then(|o| o.federation.map(str::to_owned))
                .or_else(|| acl.service_federation(id))
                .unwrap_or_else(|| gantry_api::DEFAULT_FEDERATION.to_owned()),
        ),
        StoreKey::Alloc { .. } => Some(
            owner
                .and_then(|o| o.federation.map(str::to_owned))
                .unwrap_or_else(|| gantry_api::DEFAULT_FEDERATION.to_owned()),
        ),
        _ => None,
    }
}

/// An agent's token: its own node's records, what its services need.
fn as_agent(agent: &AgentIdentity, known: &Known, acl: &Acl, action: Action, target: &Target<'_>) -> bool {
    let me = agent.machine.as_str();
    let reading = matches!(action, Action::Read | Action::Watch);
    let in_federation = |key: &StoreKey<'_>, owner: Option<&Owner<'_>>| {
        federation_of(key, owner, acl).is_some_and(|f| f == agent.federation)
    };
    match target {
        Target::Key { key, owner, .. } => match key {
            StoreKey::Machine(id) => *id == me && owner.is_none_or(|o| o.machine.is_none_or(|m| m == me)),
            StoreKey::Group(_) => reading,
            StoreKey::Service(_) => reading && in_federation(key, owner.as_ref()),
            StoreKey::Instance { service, id } if reading => {
                let _ = (service, id);
                in_federation(key, owner.as_ref())
            }
            StoreKey::Instance { service, id } => {
                // Only its own instance, of a service it runs, in its
                // federation, at its own address: no one else's traffic.
                // A static service's instance is named after the machine,
                // a scheduled one's after the allocation placed here.
                let allocation = acl.agent_runs_allocation(me, service, id);
                (*id == me || allocation)
                    && match owner {
                        None => action == Action::Delete,
                        Some(o) => {
                            o.machine == Some(me)
                                && o.federation == Some(agent.federation.as_str())
                                && o.address.is_some_and(|a| acl.machine_address(me).as_deref() == Some(a))
                                && (allocation || acl.agent_runs(agent, service))
                        }
                    }
            }
            // Its own allocations: read, never written (the scheduler's).
            StoreKey::Alloc { machine, .. } => reading && *machine == me,
            StoreKey::Job(_) | StoreKey::Eligibility(_) | StoreKey::Rollout(_) => false,
            // The releases of what it runs: read, never written.
            StoreKey::Release { service, .. } => reading && acl.agent_runs(agent, service),
            StoreKey::Agent { machine, key } => {
                *machine == me && (reading || matches!(key, AgentKeyRef::Status | AgentKeyRef::Usage))
            }
            StoreKey::Datastore(name) => reading && acl.agent_may_read_datastore(agent, name),
            StoreKey::Kv(_)
            | StoreKey::AclToken(_)
            | StoreKey::AclPolicy(_)
            | StoreKey::AclLease(_)
            | StoreKey::AclBootstrap => false,
        },
        Target::Prefix(prefix) => {
            reading
                && (matches!(*prefix, "groups/" | "services/" | "instances/" | "kv/datastores/")
                    || prefix.strip_prefix("instances/").is_some_and(|s| s.ends_with('/') && s.len() > 1)
                    || *prefix == gantry_api::keys::agent(me)
                    || *prefix == gantry_api::keys::allocs_of(me)
                    || *prefix == gantry_api::keys::machine(me))
        }
        Target::Lease(None) => true,
        Target::Lease(Some(lease)) => acl.lease_owner(&lease.to_string()).as_deref() == Some(&*known.token.accessor),
        // The fleet's addresses are no business of one node.
        Target::AgentLogs { .. } | Target::Metrics | Target::PrometheusTargets => false,
        Target::Health | Target::OwnToken => true,
        Target::Deploys { service } => reading && acl.agent_runs(agent, service),
    }
}
