//! Typed HTTP client of the Gantry API (see the `gantry-server` crate docs
//! for the routes). Used by the CLI, the agent, and applications that want
//! `get_host('mysql', master=True)` (seed 002): [`Client::lookup`].
//! [`deploy`] is `instance:deploy`'s rollout over the agents.
//!
//! Over HTTPS ([`Client::with_tls`]) the client trusts the CA it is given
//! and no other (not the system's roots), checks that the server's
//! certificate names the host it connects to, and presents its own
//! certificate when it has one. A handshake that fails is a
//! [`ClientError::Tls`] that says why.
//!
//! Several servers (`http://a:7400,http://b:7400`, issue 19): a client
//! starts on one of them chosen at random (so many agents spread over the
//! servers), stays on it while it answers, and moves to the next when it
//! cannot connect (any request: it never reached the server) or when a
//! read or a lease renewal fails in flight or answers 502/503/504. A write that failed in
//! flight is not sent again: the server may have applied it.
#![forbid(unsafe_code)]

pub mod deploy;
pub mod fleet;
mod releases;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::{Stream, StreamExt};
use gantry_api::keys::AgentKey;
use gantry_api::{
    AgentControl, AgentStatus, Allocation, DeleteResult, DeployRequest, ErrorBody, ErrorCode, Group, HealthStatus,
    Instance, JobPlan, JobStatus, KvEntry, KvList, LeaseGrant, LeaseRequest, ListenerSwitch, Listing, Machine,
    NodeEligibility, NodeUsage, Policy, ResetEvent, ServiceControl, ServiceDefinition, Token, TokenCreated,
    TokenRequest, WATCH_RESET_EVENT, WatchEvent, Whoami, WriteResult, keys,
};
use gantry_tls::TlsError;
use gantry_tls::config::ClientTls;
use gantry_tls::problem::TlsProblem;
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached (not running, wrong address).
    #[error("cannot reach the gantry server at {server}")]
    Connect {
        server: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server was reached, but TLS with it failed: its certificate is
    /// not one this client trusts, or it refused this client's.
    #[error("TLS with the gantry server at {server} failed: {problem}")]
    Tls {
        server: String,
        problem: TlsProblem,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error.
    #[error("{message}")]
    Api { status: u16, code: ErrorCode, message: String },
    /// The answer was not what the API promises.
    #[error("unexpected answer from {url}")]
    Decode {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ClientError {
    /// True for a 404 (`not_found`): the thing asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { status: 404, .. })
    }

    /// The API error code, if the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A connection to one Gantry server, or to one of several; cheap to
/// clone (clones share which server is in use).
#[derive(Clone)]
pub struct Client {
    /// Every server given, without trailing slashes.
    servers: Arc<[String]>,
    /// Index into `servers` of the one in use.
    current: Arc<AtomicUsize>,
    http: reqwest::Client,
    /// Sent as `Authorization: Bearer` with every request.
    token: Option<std::sync::Arc<str>>,
    /// The TLS configuration `http` uses, to say why a connection failed.
    tls: std::sync::Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_struct("Client").field("servers", &self.servers).field("token", &self.token.is_some()).finish()
    }
}

/// A token's secret, kept where a `Debug` print cannot show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// One item of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    Event {
        /// `REVISION.INDEX`, to resume after this event.
        id: String,
        event: WatchEvent,
    },
    /// The history this watch needs is gone: re-read, then watch again.
    Reset(ResetEvent),
}

impl Client {
    /// A client of the server at `base` (`http://127.0.0.1:7400`, or a
    /// comma-separated list of servers of one cluster), over plain HTTP: it trusts no CA, so an `https://` server is refused
    /// ([`TlsProblem::UnknownIssuer`]); use [`Client::with_tls`] for one.
    pub fn new(base: &str) -> Client {
        Client::with_config(base, gantry_tls::config::trust_nothing())
    }

    /// A client of the HTTPS server at `base`, trusting `tls`'s CA only and
    /// presenting its certificate, if any.
    pub fn with_tls(base: &str, tls: &ClientTls) -> Result<Client, TlsError> {
        let mut config = tls.config()?;
        // reqwest here speaks HTTP/1.1 only (no `http2` feature).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client::with_config(base, config))
    }

    fn with_config(base: &str, tls: rustls::ClientConfig) -> Client {
        let config = std::sync::Arc::new(tls.clone());
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .build()
            .expect("reqwest builds with a rustls configuration given whole");
        let servers: Vec<String> = base
            .split(',')
            .map(|server| server.trim().trim_end_matches('/').to_owned())
            .filter(|server| !server.is_empty())
            .collect();
        let servers: Arc<[String]> = if servers.is_empty() { Arc::from([String::new()]) } else { servers.into() };
        // Start on a server chosen at random, so that many clients spread.
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let start = (seed as usize ^ std::process::id() as usize) % servers.len();
        Client { servers, current: Arc::new(AtomicUsize::new(start)), http, token: None, tls: config }
    }

    /// Every server this client may use.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    fn current_index(&self) -> usize {
        self.current.load(Ordering::Acquire) % self.servers.len()
    }

    /// Moves off server `from` to the next one (unless another request
    /// moved already).
    fn fail_over(&self, from: usize) {
        let next = (from + 1) % self.servers.len();
        let _ = self.current.compare_exchange(from, next, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The same client, sending `token` (a token's secret) with every request.
    pub fn with_token(mut self, token: &str) -> Client {
        self.token = Some(token.trim().into());
        self
    }

    /// A failed request as the error that says why: TLS, or no connection.
    fn unreachable(server: &str, source: reqwest::Error) -> ClientError {
        match TlsProblem::find(&source) {
            Some(problem) => ClientError::Tls { server: server.to_owned(), problem, source },
            None => ClientError::Connect { server: server.to_owned(), source },
        }
    }

    /// The server in use now.
    pub fn base(&self) -> &str {
        &self.servers[self.current_index()]
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// [`Client::unreachable`], and where that finds no TLS problem on an
    /// HTTPS server, one found by connecting again ([`diagnose`]): a server
    /// refusing this client's certificate can close the connection before
    /// the HTTP client has a reason to give.
    ///
    /// [`diagnose`]: gantry_tls::problem::diagnose
    async fn failed(&self, server: &str, source: reqwest::Error) -> ClientError {
        let error = Client::unreachable(server, source);
        let ClientError::Connect { server, source } = error else { return error };
        let Some(url) = reqwest::Url::parse(&server).ok().filter(|url| url.scheme() == "https") else {
            return ClientError::Connect { server, source };
        };
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return ClientError::Connect { server, source };
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addr = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, port).to_string(),
            Err(_) => format!("{host}:{port}"),
        };
        match gantry_tls::problem::diagnose(&addr, host, self.tls.clone(), Duration::from_secs(2)).await {
            Some(problem) => ClientError::Tls { server, problem, source },
            None => ClientError::Connect { server, source },
        }
    }

    async fn send(&self, request: RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let (http, request) = request.build_split();
        let mut request = request.map_err(|source| Client::unreachable(self.base(), source))?;
        // Reads and lease renewals may be sent again after failing in flight.
        let read = request.method() == Method::GET || request.url().path().ends_with("/keepalive");
        let mut tries = 0;
        let response = loop {
            tries += 1;
            let index = self.current_index();
            let server = self.servers[index].clone();
            // The last server, or a body that cannot be sent twice (a stream):
            // this try's outcome is the answer.
            let again = if tries >= self.servers.len() { None } else { request.try_clone() };
            let last = again.is_none();
            match http.execute(request).await {
                Ok(response) if read && !last && matches!(response.status().as_u16(), 502..=504) => {
                    self.fail_over(index);
                }
                Ok(response) => break response,
                // Never reached the server, or a read: another server may answer.
                Err(source) if !last && (source.is_connect() || read) => self.fail_over(index),
                Err(source) => return Err(self.failed(&server, source).await),
            }
            let Some(mut next) = again else { unreachable!("a copy is kept unless this was the last try") };
            on_server(&mut next, self.base());
            request = next;
        };
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => {
                ClientError::Api { status: status.as_u16(), code: body.error.code, message: body.error.message }
            }
            // Not Gantry's error body (a proxy in between, another server).
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                code: ErrorCode::Unknown,
                message: format!("HTTP {status}: {text}"),
            },
        })
    }

    async fn call<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        let response = self.send(request).await?;
        let url = response.url().to_string();
        let bytes = response.bytes().await.map_err(|source| Client::unreachable(self.base(), source))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode { url, source: Box::new(e) })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match &self.token {
            // reqwest marks the header sensitive: it is never logged.
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn health(&self) -> Result<HealthStatus, ClientError> {
        self.call(self.request(Method::GET, "/v1/health")).await
    }

    // ---- KV ----

    /// The key, or `None` when it does not exist.
    pub async fn kv_get(&self, key: &str) -> Result<Option<KvEntry>, ClientError> {
        match self.call(self.request(Method::GET, &format!("/v1/kv/{}", encode_path(key)))).await {
            Ok(entry) => Ok(Some(entry)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn kv_list(&self, prefix: &str) -> Result<KvList, ClientError> {
        self.call(self.request(Method::GET, "/v1/kv").query(&[("prefix", prefix)])).await
    }

    /// At most `limit` keys under `prefix` (`more` says whether there are others).
    pub async fn kv_list_limited(&self, prefix: &str, limit: usize) -> Result<KvList, ClientError> {
        let limit = limit.to_string();
        self.call(self.request(Method::GET, "/v1/kv").query(&[("prefix", prefix), ("limit", &limit)])).await
    }

    /// Writes `value`; with `cas`, only if the key's mod revision is that
    /// (`Some(0)`: only if it does not exist), else `code() == Some(ErrorCode::CasFailed)`.
    pub async fn kv_put(&self, key: &str, value: &str, options: PutOptions) -> Result<WriteResult, ClientError> {
        let request = self.request(Method::PUT, &format!("/v1/kv/{}", encode_path(key))).body(value.to_string());
        self.call(options.apply(request)).await
    }

    /// Deletes a key; says how many keys went (0 or 1).
    pub async fn kv_delete(&self, key: &str) -> Result<DeleteResult, ClientError> {
        self.call(self.request(Method::DELETE, &format!("/v1/kv/{}", encode_path(key)))).await
    }

    // ---- Machines ----

    pub async fn put_machine(&self, machine: &Machine, options: PutOptions) -> Result<WriteResult, ClientError> {
        let request = self.request(Method::PUT, &format!("/v1/machines/{}", encode_path(&machine.id))).json(machine);
        self.call(options.apply(request)).await
    }

    pub async fn machines(&self) -> Result<Listing<Machine>, ClientError> {
        self.call(self.request(Method::GET, "/v1/machines")).await
    }

    pub async fn machine(&self, id: &str) -> Result<Machine, ClientError> {
        self.call(self.request(Method::GET, &format!("/v1/machines/{}", encode_path(id)))).await
    }

    /// Services on host `id`.
    pub async fn machine_instances(&self, id: &str) -> Result<Listing<Instance>, ClientError> {
        self.call(self.request(Method::GET, &format!("/v1/machines/{}/instances", encode_path(id)))).await
    }

    // ---- Groups and services ----

    pub async fn put_group(&self, group: &Group) -> Result<WriteResult, ClientError> {
        self.call(self.request(Method::PUT, &format!("/v1/groups/{}", encode_path(&group.name))).json(group)).await
    }

    /// The group, or `None` when no such group was applied.
    pub async fn group(&self, name: &str) -> Result<Option<Group>, ClientError> {
        match self.call(self.request(Method::GET, &format!("/v1/groups/{}", encode_path(name)))).await {
            Ok(group) => Ok(Some(group)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn groups(&self) -> Result<Listing<Group>, ClientError> {
        self.call(self.request(Method::GET, "/v1/groups")).await
    }

    pub async fn delete_group(&self, name: &str) -> Result<WriteResult, ClientError> {
        self.call(self.request(Method::DELETE, &format!("/v1/groups/{}", encode_path(name)))).await
    }

    /// Every service definition.
    pub async fn services(&self) -> Result<Listing<ServiceDefinition>, ClientError> {
        self.call(self.request(Method::GET, "/v1/services")).await
    }

    pub async fn delete_service(&self, id: &str) -> Result<WriteResult, ClientError> {
        self.call(self.request(Method::DELETE, &format!("/v1/services/{}", encode_path(id)))).await
    }

    pub async fn put_service(&self, definition: &ServiceDefinition) -> Result<WriteResult, ClientError> {
        let path = format!("/v1/services/{}", encode_path(&definition.id));
        self.call(self.request(Method::PUT, &path).json(definition)).await
    }

    pub async fn put_instance(&self, instance: &Instance, options: PutOptions) -> Result<WriteResult, ClientError> {
        let path = format!("/v1/services/{}/instances/{}", encode_path(&instance.service), encode_path(&instance.id));
        self.call(options.apply(self.request(Method::PUT, &path).json(instance))).await
    }

    pub async fn delete_instance(&self, service: &str, id: &str) -> Result<WriteResult, ClientError> {
        let path = format!("/v1/services/{}/instances/{}", encode_path(service), encode_path(id));
        self.call(self.request(Method::DELETE, &path)).await
    }

    /// Hosts for `service`, filtered by properties (`("master", "true")`).
    pub async fn service_instances(
        &self,
        service: &str,
        filters: &[(String, String)],
    ) -> Result<Listing<Instance>, ClientError> {
        let path = format!("/v1/services/{}/instances", encode_path(service));
        self.call(self.request(Method::GET, &path).query(filters)).await
    }

    /// Hosts with every property in `filters`, across services.
    pub async fn instances_with(&self, filters: &[(String, String)]) -> Result<Listing<Instance>, ClientError> {
        self.call(self.request(Method::GET, "/v1/instances").query(filters)).await
    }

    /// `get_host(service, **filters)`: one healthy instance.
    pub async fn lookup(&self, service: &str, filters: &[(String, String)]) -> Result<Instance, ClientError> {
        let path = format!("/v1/lookup/{}", encode_path(service));
        self.call(self.request(Method::GET, &path).query(filters)).await
    }

    // ---- Leases ----

    pub async fn grant_lease(&self, ttl: Duration) -> Result<LeaseGrant, ClientError> {
        let body = LeaseRequest { ttl_secs: ttl.as_secs().max(1) };
        self.call(self.request(Method::POST, "/v1/leases").json(&body)).await
    }

    pub async fn keep_alive(&self, lease: &str) -> Result<LeaseGrant, ClientError> {
        self.call(self.request(Method::PUT, &format!("/v1/leases/{}/keepalive", encode_path(lease)))).await
    }

    pub async fn revoke_lease(&self, lease: &str) -> Result<(), ClientError> {
        self.send(self.request(Method::DELETE, &format!("/v1/leases/{}", encode_path(lease)))).await.map(|_| ())
    }

    // ---- Watch ----

    /// Every change under `prefix` from `from` (a revision; 0: from now).
    /// `resume_after` (an event id) takes precedence and continues exactly
    /// after that event.
    pub async fn watch(
        &self,
        prefix: &str,
        from: u64,
        resume_after: Option<&str>,
    ) -> Result<impl Stream<Item = Result<WatchItem, ClientError>> + use<>, ClientError> {
        let mut request =
            self.request(Method::GET, "/v1/watch").query(&[("prefix", prefix), ("from", &from.to_string())]);
        if let Some(id) = resume_after {
            request = request.header("last-event-id", id);
        }
        let response = self.send(request).await?;
        let server = self.base().to_owned();
        let url = response.url().to_string();
        let bytes = response.bytes_stream();
        Ok(sse_items(bytes, server, url))
    }

    /// Whether anything is stored under the store prefix `prefix`
    /// (`machines/`, `instances/api/`, `kv/datastores/`; `""` is every key),
    /// and the revision that answer holds at: watching from the next one
    /// misses nothing. The API lists documents, not raw store keys, so this
    /// asks each listing whose keys the prefix can cover and builds their
    /// keys (`gantry_api::keys`); agents' control documents are looked for
    /// under the machines the server knows (registered, or publishing a status).
    pub async fn any_under(&self, prefix: &str) -> Result<Presence, ClientError> {
        let mut revision: Option<u64> = None;
        for namespace in Namespace::ALL {
            let root = namespace.prefix();
            if !(root.starts_with(prefix) || prefix.starts_with(root)) {
                continue;
            }
            let (read_at, found) = self.any_in(namespace, prefix).await?;
            let oldest = revision.map_or(read_at, |r| r.min(read_at));
            revision = Some(oldest);
            if found {
                return Ok(Presence { found, revision: oldest });
            }
        }
        let revision = match revision {
            Some(revision) => revision,
            // No kind of document lives under this prefix.
            None => self.health().await?.revision,
        };
        Ok(Presence { found: false, revision })
    }

    /// Whether one namespace has a key under `prefix`, and the revision read at.
    async fn any_in(&self, namespace: Namespace, prefix: &str) -> Result<(u64, bool), ClientError> {
        let under = |key: String| key.starts_with(prefix);
        Ok(match namespace {
            Namespace::Kv => {
                let listing = self.kv_list_limited(prefix.strip_prefix(keys::KV).unwrap_or(""), 1).await?;
                (listing.revision, !listing.entries.is_empty())
            }
            Namespace::Machines => {
                let listing = self.machines().await?;
                (listing.revision, listing.items.iter().any(|m| under(keys::machine(&m.id))))
            }
            Namespace::Groups => {
                let listing = self.groups().await?;
                (listing.revision, listing.items.iter().any(|g| under(keys::group(&g.name))))
            }
            Namespace::Services => {
                let listing = self.services().await?;
                (listing.revision, listing.items.iter().any(|d| under(keys::service(&d.id))))
            }
            Namespace::Instances => {
                let listing = self.instances_with(&[]).await?;
                (listing.revision, listing.items.iter().any(|i| under(keys::instance(&i.service, &i.id))))
            }
            Namespace::Agents => {
                let statuses = self.agent_statuses().await?;
                if statuses.items.iter().any(|s| under(AgentKey::Status.of(&s.machine))) {
                    return Ok((statuses.revision, true));
                }
                let usages = self.usages().await?;
                if usages.items.iter().any(|u| under(AgentKey::Usage.of(&u.machine))) {
                    return Ok((usages.revision, true));
                }
                let machines = self.machines().await?;
                let mut known: Vec<&str> = machines.items.iter().map(|m| m.id.as_str()).collect();
                known.extend(statuses.items.iter().map(|s| s.machine.as_str()));
                known.sort_unstable();
                known.dedup();
                let revision = statuses.revision.min(machines.revision);
                for machine in known {
                    let root = keys::agent(machine);
                    if !(root.starts_with(prefix) || prefix.starts_with(&root)) {
                        continue;
                    }
                    let control = self.agent_control(machine).await?;
                    let mut documents =
                        control.services.keys().map(|id| AgentKey::Service(id.clone())).collect::<Vec<_>>();
                    documents.extend(control.listener.map(|_| AgentKey::Listener));
                    documents.extend(control.deploy.map(|_| AgentKey::Deploy));
                    if documents.iter().any(|key| under(key.of(machine))) {
                        return Ok((revision, true));
                    }
                }
                (revision, false)
            }
        })
    }

    // ---- Access control ----

    /// Creates a token; the answer holds its secret, shown this once.
    pub async fn create_token(&self, request: &TokenRequest) -> Result<TokenCreated, ClientError> {
        self.call(self.request(Method::POST, "/v1/acl/tokens").json(request)).await
    }

    pub async fn tokens(&self) -> Result<Vec<Token>, ClientError> {
        self.call(self.request(Method::GET, "/v1/acl/tokens")).await
    }

    pub async fn revoke_token(&self, accessor: &str) -> Result<DeleteResult, ClientError> {
        self.call(self.request(Method::DELETE, &format!("/v1/acl/tokens/{}", encode_path(accessor)))).await
    }

    /// Every scrape target of the fleet, as Prometheus' HTTP service
    /// discovery reads it (`GET /v1/prometheus/targets`).
    pub async fn prometheus_targets(&self) -> Result<Vec<gantry_api::TargetGroup>, ClientError> {
        self.call(self.request(Method::GET, "/v1/prometheus/targets")).await
    }

    /// The token this client sends.
    pub async fn whoami(&self) -> Result<Whoami, ClientError> {
        self.call(self.request(Method::GET, "/v1/acl/self")).await
    }

    pub async fn put_policy(&self, policy: &Policy) -> Result<WriteResult, ClientError> {
        let path = format!("/v1/acl/policies/{}", encode_path(&policy.name));
        self.call(self.request(Method::PUT, &path).json(policy)).await
    }

    pub async fn policies(&self) -> Result<Listing<Policy>, ClientError> {
        self.call(self.request(Method::GET, "/v1/acl/policies")).await
    }

    /// The policy, or `None` when there is none of that name.
    pub async fn policy(&self, name: &str) -> Result<Option<Policy>, ClientError> {
        match self.call(self.request(Method::GET, &format!("/v1/acl/policies/{}", encode_path(name)))).await {
            Ok(policy) => Ok(Some(policy)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    // ---- Agents ----

    /// Every connected agent's published status.
    pub async fn agent_statuses(&self) -> Result<Listing<AgentStatus>, ClientError> {
        self.call(self.request(Method::GET, "/v1/agents")).await
    }

    /// Machine `machine`'s agent's status, or `None` when no agent of that machine is connected.
    pub async fn agent_status(&self, machine: &str) -> Result<Option<AgentStatus>, ClientError> {
        match self.call(self.request(Method::GET, &format!("/v1/agents/{}", encode_path(machine)))).await {
            Ok(status) => Ok(Some(status)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What every connected node and its processes use (`gantry nodes:usage`).
    pub async fn usages(&self) -> Result<Listing<NodeUsage>, ClientError> {
        self.call(self.request(Method::GET, "/v1/usage")).await
    }

    /// Publishes what a node uses (under its agent's lease).
    pub async fn put_usage(&self, usage: &NodeUsage, options: PutOptions) -> Result<WriteResult, ClientError> {
        let path = format!("/v1/agents/{}/usage", encode_path(&usage.machine));
        self.call(options.apply(self.request(Method::PUT, &path).json(usage))).await
    }

    // ---- Scheduling ----

    /// Every allocation, on every node (`gantry alloc:list`).
    pub async fn allocations(&self) -> Result<Listing<Allocation>, ClientError> {
        self.call(self.request(Method::GET, "/v1/allocations")).await
    }

    /// The allocations placed on one node: what its agent runs.
    pub async fn node_allocations(&self, machine: &str) -> Result<Listing<Allocation>, ClientError> {
        self.call(self.request(Method::GET, &format!("/v1/nodes/{}/allocations", encode_path(machine)))).await
    }

    /// Writes an allocation as is (the scheduler writes them; an operator may).
    pub async fn put_allocation(&self, alloc: &Allocation) -> Result<WriteResult, ClientError> {
        let path = format!("/v1/nodes/{}/allocations/{}", encode_path(&alloc.machine), encode_path(&alloc.id));
        self.call(self.request(Method::PUT, &path).json(alloc)).await
    }

    /// What writing `definition` would make the scheduler do (nothing is written).
    pub async fn plan_job(&self, definition: &ServiceDefinition) -> Result<JobPlan, ClientError> {
        let path = format!("/v1/jobs/{}/plan", encode_path(&definition.id));
        self.call(self.request(Method::POST, &path).json(definition)).await
    }

    /// Each scheduled service's latest evaluation.
    pub async fn jobs(&self) -> Result<Listing<JobStatus>, ClientError> {
        self.call(self.request(Method::GET, "/v1/jobs")).await
    }

    /// Every node's eligibility record (nodes without one are eligible).
    pub async fn eligibilities(&self) -> Result<Listing<NodeEligibility>, ClientError> {
        self.call(self.request(Method::GET, "/v1/eligibility")).await
    }

    /// Sets a node's eligibility (`gantry node:drain`, `node:eligible`).
    pub async fn put_eligibility(&self, eligibility: &NodeEligibility) -> Result<WriteResult, ClientError> {
        let path = format!("/v1/nodes/{}/eligibility", encode_path(&eligibility.machine));
        self.call(self.request(Method::PUT, &path).json(eligibility)).await
    }

    /// Publishes an agent's status (under its lease, so it leaves with the agent).
    pub async fn put_agent_status(
        &self,
        status: &AgentStatus,
        options: PutOptions,
    ) -> Result<WriteResult, ClientError> {
        let path = format!("/v1/agents/{}/status", encode_path(&status.machine));
        self.call(options.apply(self.request(Method::PUT, &path).json(status))).await
    }

    /// Every control document of machine `machine`'s agent.
    pub async fn agent_control(&self, machine: &str) -> Result<AgentControl, ClientError> {
        self.call(self.request(Method::GET, &format!("/v1/agents/{}/control", encode_path(machine)))).await
    }

    /// Turns machine `machine`'s listener on or off.
    pub async fn set_listener(&self, machine: &str, switch: ListenerSwitch) -> Result<WriteResult, ClientError> {
        let path = format!("/v1/agents/{}/listener", encode_path(machine));
        self.call(self.request(Method::PUT, &path).json(&switch)).await
    }

    /// Asks machine `machine`'s agent to re-run provisioning.
    pub async fn request_deploy(&self, machine: &str, request: &DeployRequest) -> Result<WriteResult, ClientError> {
        let path = format!("/v1/agents/{}/deploy", encode_path(machine));
        self.call(self.request(Method::PUT, &path).json(request)).await
    }

    /// What was last asked of `service` on `machine`, if anything.
    pub async fn service_control(&self, machine: &str, service: &str) -> Result<Option<ServiceControl>, ClientError> {
        let path = format!("/v1/agents/{}/services/{}", encode_path(machine), encode_path(service));
        match self.call(self.request(Method::GET, &path)).await {
            Ok(control) => Ok(Some(control)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Asks `machine`'s agent to stop, start or restart `service`.
    pub async fn put_service_control(
        &self,
        machine: &str,
        service: &str,
        control: &ServiceControl,
    ) -> Result<WriteResult, ClientError> {
        let path = format!("/v1/agents/{}/services/{}", encode_path(machine), encode_path(service));
        self.call(self.request(Method::PUT, &path).json(control)).await
    }

    /// Service `service`'s log on machine `machine` (through the server,
    /// which asks that machine's agent): the last `tail` bytes, then with
    /// `follow` everything written after, as it comes.
    pub async fn agent_logs(
        &self,
        machine: &str,
        service: &str,
        tail: Option<u64>,
        follow: bool,
    ) -> Result<impl Stream<Item = Result<bytes::Bytes, ClientError>> + use<>, ClientError> {
        let path = format!("/v1/agents/{}/logs/{}", encode_path(machine), encode_path(service));
        let mut request = self.request(Method::GET, &path);
        if let Some(tail) = tail {
            request = request.query(&[("tail", tail)]);
        }
        if follow {
            request = request.query(&[("follow", "true")]);
        }
        let response = self.send(request).await?;
        let server = self.base().to_owned();
        Ok(response.bytes_stream().map(move |chunk| chunk.map_err(|source| Client::unreachable(&server, source))))
    }
}

/// Points `request` at `server` (scheme, host and port), keeping its path
/// and query.
fn on_server(request: &mut reqwest::Request, server: &str) {
    let Ok(base) = reqwest::Url::parse(server) else { return };
    let url = request.url_mut();
    let _ = url.set_scheme(base.scheme());
    let _ = url.set_host(base.host_str());
    let _ = url.set_port(base.port());
}

/// What [`Client::any_under`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presence {
    /// Something is stored under the prefix.
    pub found: bool,
    /// The store's revision the answer holds at (the oldest of the reads it took).
    pub revision: u64,
}

/// The kinds of documents in the store, each under its own key prefix.
#[derive(Debug, Clone, Copy)]
enum Namespace {
    Kv,
    Machines,
    Groups,
    Services,
    Instances,
    Agents,
}

impl Namespace {
    const ALL: [Namespace; 6] = [
        Namespace::Kv,
        Namespace::Machines,
        Namespace::Groups,
        Namespace::Services,
        Namespace::Instances,
        Namespace::Agents,
    ];

    fn prefix(self) -> &'static str {
        match self {
            Namespace::Kv => keys::KV,
            Namespace::Machines => keys::MACHINES,
            Namespace::Groups => keys::GROUPS,
            Namespace::Services => keys::SERVICES,
            Namespace::Instances => keys::INSTANCES,
            Namespace::Agents => keys::AGENTS,
        }
    }
}

/// Options of a write.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Compare-and-set on the key's mod revision (0: must not exist).
    pub cas: Option<u64>,
    /// Attach the key to this lease.
    pub lease: Option<String>,
}

impl PutOptions {
    fn apply(&self, mut request: RequestBuilder) -> RequestBuilder {
        if let Some(cas) = self.cas {
            request = request.query(&[("cas", cas.to_string())]);
        }
        if let Some(lease) = &self.lease {
            request = request.query(&[("lease", lease)]);
        }
        request
    }
}

/// Splits an SSE byte stream into events (`id:`, `event:`, `data:` lines up
/// to a blank line); keep-alive comments are skipped.
fn sse_items(
    bytes: impl Stream<Item = reqwest::Result<bytes::Bytes>> + Send + 'static,
    server: String,
    url: String,
) -> impl Stream<Item = Result<WatchItem, ClientError>> {
    struct State<S> {
        bytes: std::pin::Pin<Box<S>>,
        buffer: BytesMut,
        id: String,
        event: String,
        data: String,
        done: bool,
    }
    let state = State {
        bytes: Box::pin(bytes),
        buffer: BytesMut::new(),
        id: String::new(),
        event: String::new(),
        data: String::new(),
        done: false,
    };
    futures::stream::unfold(state, move |mut st| {
        let server = server.clone();
        let url = url.clone();
        async move {
            loop {
                if st.done {
                    return None;
                }
                if let Some(pos) = st.buffer.iter().position(|&b| b == b'\n') {
                    let line = st.buffer.split_to(pos + 1);
                    let line = String::from_utf8_lossy(&line[..pos]).trim_end_matches('\r').to_string();
                    if line.is_empty() {
                        if st.data.is_empty() {
                            continue;
                        }
                        let (event, data, id) =
                            (std::mem::take(&mut st.event), std::mem::take(&mut st.data), std::mem::take(&mut st.id));
                        let item = if event == WATCH_RESET_EVENT {
                            serde_json::from_str(&data).map(WatchItem::Reset)
                        } else {
                            serde_json::from_str(&data).map(|event| WatchItem::Event { id, event })
                        };
                        let item = item.map_err(|e| ClientError::Decode { url: url.clone(), source: Box::new(e) });
                        return Some((item, st));
                    }
                    if let Some((field, value)) = line.split_once(':') {
                        let value = value.strip_prefix(' ').unwrap_or(value);
                        match field {
                            "id" => st.id = value.to_string(),
                            "event" => st.event = value.to_string(),
                            "data" => {
                                if !st.data.is_empty() {
                                    st.data.push('\n');
                                }
                                st.data.push_str(value);
                            }
                            _ => {}
                        }
                    }
                    continue;
                }
                match st.bytes.next().await {
                    Some(Ok(chunk)) => st.buffer.extend_from_slice(chunk.chunk()),
                    Some(Err(source)) => {
                        st.done = true;
                        return Some((Err(Client::unreachable(&server, source)), st));
                    }
                    None => return None,
                }
            }
        }
    })
}

/// Percent-encodes a path (keeping `/` between key segments).
fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
