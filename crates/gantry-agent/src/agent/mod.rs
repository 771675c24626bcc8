//! `gantry agent`: the node's side of the factory (seed 001). It registers
//! the machine under a lease it keeps renewing, registers an instance of
//! each service its group runs, resolves every service's requirements into
//! an env file, and re-runs provisioning through the [`Listener`] when a
//! resolved value changes.
//!
//! The loop is list-then-watch: one read of everything it follows, then
//! watches from that revision of just the prefixes it needs (groups,
//! services, datastores, its control keys, its providers' instances; the set
//! grows and shrinks with its requirements), applied to a [`World`].
//! When the lease is lost, the watch cannot resume, or the server goes away,
//! the session starts over (after a backoff); the machine id and assigned
//! ports are kept on disk, so the same keys come back, never duplicates.

mod api;
pub mod balance;
mod fetch;
mod local;
mod mask;
mod releases;
mod runtime;
mod services;
pub mod world;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use gantry_api::{
    AgentStatus, CapacitySource, DeployOutcome, Instance, LbStatus, Machine, NodeCapacity, Resources, WatchKind, keys,
    now_ms,
};
use gantry_client::{Client, ClientError, PutOptions, WatchItem};
use gantry_tls::config::{ClientAuth, ClientTls};
use tokio::task::JoinHandle;

/// The agent's fetch of a release (download, SHA-256 and length checked,
/// unpacked), public so `bench-deploy` times the very path agents run.
pub use fetch::fetch as fetch_release;
pub use local::{MACHINE_ID_FILE, PORT_RANGE, PORTS_FILE, Started};
use world::{Touched, World};

use crate::facts;
use crate::lb::{Balancer, LbKind};
use crate::listener::{Listener, ListenerConfig, RunRecord, Throttle};
use crate::supervise::RestartPolicy;
use crate::usage::Meter;
use runtime::Local;
pub use runtime::RunSettings;

/// How an agent runs. [`AgentConfig::new`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub server: String,
    pub data_dir: PathBuf,
    /// The machine's id; default: saved in the data dir, else `<hostname>-<random>`.
    pub machine_id: Option<String>,
    /// The node group whose services this machine runs (`gantry apply` uploads groups).
    pub group: Option<String>,
    /// Services to run besides the group's.
    pub services: Vec<String>,
    /// The address instances are published with; default: the first
    /// private address, else the first public one, else 127.0.0.1.
    pub address: Option<IpAddr>,
    /// Machine labels (region, rack, ...); also each instance's properties.
    pub labels: BTreeMap<String, String>,
    /// Where env files go; default `<data_dir>/env`.
    pub env_dir: Option<PathBuf>,
    /// The provision command the listener runs (`sh -c`); none: changes
    /// only rewrite env files.
    pub provision_command: Option<String>,
    pub provision_timeout: Duration,
    pub throttle: Throttle,
    /// The lease's time to live: a dead agent's machine and instances leave
    /// the inventory this long after its last renewal. Renewed every third.
    pub lease_ttl: Duration,
    /// Between withdrawing a departing service's instance and stopping it.
    pub drain: Duration,
    /// How often facts are collected again (published when they change).
    pub facts_interval: Duration,
    /// Where the agent reports what it does, for a program that embeds it
    /// (a live view, a benchmark); nothing is sent when `None`.
    pub events: Option<tokio::sync::mpsc::UnboundedSender<AgentEvent>>,
    /// Log lines on stderr (default true).
    pub log: bool,
    /// The local load balancer (default off).
    pub lb: LbKind,
    /// This node is an external balancer: it also fronts the public
    /// services of its federation (label `federation`, else "default").
    pub external_lb: bool,
    /// The working directory of service commands (default: the agent's).
    pub workdir: Option<PathBuf>,
    /// How crashed service processes are restarted.
    pub restart_policy: RestartPolicy,
    /// The port of the agent's own HTTP API on its address (`gantry logs`
    /// reads through it; 0: any free port); `None`: no API.
    pub api_port: Option<u16>,
    /// Run services' command checks and `on_delete` hooks (default off):
    /// `gantry agent --enable-script-checks`.
    pub enable_script_checks: bool,
    /// The token sent with every request (an agent's token: its machine's).
    pub token: Option<gantry_client::Secret>,
    /// TLS (`--ca-cert`, `--client-cert`, `--client-key`): the servers are
    /// reached over HTTPS, trusting this CA only; with a certificate (of
    /// role agent, naming the agent's address), the agent presents it to
    /// the servers and serves its own API over TLS with it, answering only
    /// clients with a certificate of role server from the same CA.
    pub tls: Option<ClientTls>,
    /// The node's whole capacity for the scheduler (`--capacity`); `None`:
    /// measured, the machine's CPUs and memory.
    pub capacity: Option<Resources>,
    /// Kept for the system, never scheduled (`--reserve`).
    pub reserve: Resources,
    /// How often the node's usage is measured and published.
    pub usage_interval: Duration,
    /// Release directories kept per service (`--keep-releases`, default 5).
    pub keep_releases: usize,
    /// The port of haproxy's Prometheus exporter on the agent's address
    /// (`--lb-metrics-port`); `None`: haproxy exports nothing.
    pub lb_metrics_port: Option<u16>,
}

/// What an embedded agent reports through [`AgentConfig::events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// A service's env file was written with new content.
    EnvWritten { machine: String, service: String },
    /// The load balancer was given a new plan and applied it.
    LbApplied { machine: String, plan: crate::lb::Plan, applied: crate::lb::Applied },
}

impl AgentConfig {
    /// Defaults: lease 10 s, drain 5 s, facts every 60 s, provision timeout
    /// 30 min, the listener's default throttle.
    pub fn new(server: impl Into<String>, data_dir: impl Into<PathBuf>) -> AgentConfig {
        AgentConfig {
            server: server.into(),
            data_dir: data_dir.into(),
            machine_id: None,
            group: None,
            services: Vec::new(),
            address: None,
            labels: BTreeMap::new(),
            env_dir: None,
            provision_command: None,
            provision_timeout: Duration::from_secs(30 * 60),
            throttle: Throttle::default(),
            lease_ttl: Duration::from_secs(5),
            drain: Duration::from_secs(5),
            facts_interval: Duration::from_secs(60),
            events: None,
            log: true,
            lb: LbKind::Off,
            external_lb: false,
            workdir: None,
            restart_policy: RestartPolicy::default(),
            api_port: None,
            capacity: None,
            reserve: Resources::ZERO,
            usage_interval: Duration::from_secs(10),
            keep_releases: gantry_api::release::defaults::KEEP_ON_NODE,
            lb_metrics_port: None,
            enable_script_checks: false,
            token: None,
            tls: None,
        }
    }
}

/// Why an agent could not start (a session that fails is retried, not an error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AgentError(String);

/// The agent API's TLS: its certificate, which must be an agent's naming
/// `address` (the server checks the name), and servers' certificates only
/// from its CA. `None` without a certificate (the API is plain HTTP).
fn api_tls(
    tls: Option<&ClientTls>,
    address: IpAddr,
) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, AgentError> {
    let Some((tls, identity)) = tls.and_then(|tls| Some((tls, tls.identity.as_ref()?))) else { return Ok(None) };
    let holder = identity.holder();
    let how = format!("make one with `gantry tls:cert:create --agent {} --ip {address}`", holder.name);
    if holder.role != Some(gantry_tls::Role::Agent) {
        return Err(AgentError(format!(
            "the agent's certificate (--client-cert) is not an agent's ({}): {how}",
            holder.role.map_or("no role", gantry_tls::Role::as_str)
        )));
    }
    if !holder.ips.contains(&address) {
        return Err(AgentError(format!(
            "the agent's certificate (--client-cert) does not name its address {address}, where servers reach its API: {how}"
        )));
    }
    let clients =
        ClientAuth::Required { ca: tls.ca.clone(), roles: vec![gantry_tls::Role::Server, gantry_tls::Role::Metrics] };
    gantry_tls::config::server_config(identity, &clients).map(Some).map_err(|e| AgentError(e.to_string()))
}

/// Changes that arrive within this of each other are handled together.
const DEBOUNCE: Duration = Duration::from_millis(10);
/// Backoff between sessions: from the first to the last, doubling.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// The merged watches: each item tagged with its prefix; `None` when that
/// prefix's stream ended.
type Watches =
    futures::stream::SelectAll<Pin<Box<dyn Stream<Item = (String, Option<Result<WatchItem, ClientError>>)> + Send>>>;

/// Runs the agent until `shutdown` completes; then revokes its lease, so
/// its machine and instances leave the inventory at once.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let (wake, mut woken) = tokio::sync::mpsc::unbounded_channel();
    let mut agent = Agent::start(config, wake).await?;
    tokio::pin!(shutdown);
    let mut backoff = BACKOFF.0;
    loop {
        let outcome = tokio::select! {
            _ = &mut shutdown => break,
            outcome = agent.session(&mut woken) => outcome,
        };
        if let Err(e) = outcome {
            agent.log(&format!("{e}; retrying in {backoff:?}"));
        }
        if agent.session_was_healthy {
            backoff = BACKOFF.0;
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF.1);
    }
    if let Some(lease) = agent.lease.take() {
        let _ = tokio::time::timeout(Duration::from_secs(2), agent.client.revoke_lease(&lease)).await;
    }
    agent.stop_everything().await;
    agent.log("stopped");
    Ok(())
}

struct Agent {
    config: AgentConfig,
    client: Client,
    machine: Machine,
    address: IpAddr,
    env_dir: PathBuf,
    listener: Option<Listener>,
    world: World,
    lease: Option<String>,
    /// Service id -> the instance this agent last published.
    registered: BTreeMap<String, Instance>,
    /// Service id -> the service running here: process, check, health.
    locals: BTreeMap<String, Local>,
    draining: BTreeMap<String, JoinHandle<()>>,
    /// Cuts departing services' drains short when the agent stops.
    hurry: std::sync::Arc<tokio::sync::Notify>,
    /// Supervisors and checks send their service's id here when they change.
    wake: tokio::sync::mpsc::UnboundedSender<String>,
    run_settings: RunSettings,
    balancer: Option<Balancer>,
    last_good: balance::LastGood,
    /// The balancer's state for `gantry lb:status`.
    lb_status: Option<LbStatus>,
    /// When the current session registered (backends do not empty while it settles).
    session_started: tokio::time::Instant,
    /// The service processes last saved to [`local::PROCESSES_FILE`].
    saved_processes: BTreeMap<String, local::Started>,
    /// The agent API's URL and task, once it listens.
    api_url: Option<String>,
    api_task: Option<JoinHandle<()>>,
    /// What the last reconcile found it must watch ([`Agent::watch_prefixes`]).
    prefixes: BTreeSet<String>,
    problems: Vec<String>,
    /// The deploy request last acted on, and the run count before it.
    deploy_started: Option<(String, u64)>,
    last_deploy: Option<DeployOutcome>,
    published_status: Option<AgentStatus>,
    /// Whether the current session got as far as watching.
    session_was_healthy: bool,
    /// Measures the node's usage; out while a measurement runs.
    meter: Option<Meter>,
    /// Each service's release here, by service id.
    releases: BTreeMap<String, releases::ReleaseRun>,
    /// The release (version, directory) each service's processes run from.
    running_release: BTreeMap<String, (u64, PathBuf)>,
    /// What `/metrics` shows of the agent's work (see [`Agent::observe`]).
    view: std::sync::Arc<std::sync::Mutex<crate::metrics::View>>,
}

impl Agent {
    async fn start(config: AgentConfig, wake: tokio::sync::mpsc::UnboundedSender<String>) -> Result<Agent, AgentError> {
        let fail = |what: &str, e: std::io::Error| AgentError(format!("{what}: {e}"));
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| fail(&format!("creating {}", config.data_dir.display()), e))?;
        let collected = facts::collect();
        let id = local::machine_id(&config.data_dir, config.machine_id.as_deref(), &collected.hostname)
            .map_err(|e| fail("saving the machine id", e))?;
        let address = config.address.unwrap_or_else(|| {
            collected
                .facts
                .private_ips
                .iter()
                .chain(&collected.facts.public_ips)
                .find_map(|ip| ip.parse().ok())
                .unwrap_or(IpAddr::from([127, 0, 0, 1]))
        });
        let mut labels = config.labels.clone();
        if let Some(group) = &config.group {
            labels.insert("group".into(), group.clone());
        }
        let leftovers = local::kill_leftovers(&config.data_dir);
        if !leftovers.is_empty() && config.log {
            eprintln!("gantry agent {id}: stopped what an earlier run left running: {}", leftovers.join(", "));
        }
        let env_dir = config.env_dir.clone().unwrap_or_else(|| config.data_dir.join("env"));
        std::fs::create_dir_all(&env_dir)
            .map_err(|e| fail(&format!("creating the env dir {}", env_dir.display()), e))?;
        let listener = match &config.provision_command {
            Some(command) => {
                let mut listener_config = ListenerConfig::new(command.clone(), config.data_dir.clone());
                listener_config.timeout = config.provision_timeout;
                listener_config.throttle = config.throttle;
                Some(Listener::start(listener_config).map_err(|e| fail("starting the listener", e))?)
            }
            None => None,
        };
        let balancer = Balancer::start(
            config.lb,
            &config.data_dir.join("lb"),
            config.lb_metrics_port.map(|port| (address, port).into()),
        )
        .await
        .map_err(|e| AgentError(e.to_string()))?;
        if let (Some(balancer), true) = (&balancer, config.log) {
            let why = match (config.lb, balancer) {
                (LbKind::Auto, Balancer::Builtin(_)) => {
                    " (haproxy is not installed; `apt-get install haproxy` for the production balancer)"
                }
                _ => "",
            };
            eprintln!("gantry agent {id}: local load balancer: {}{why}", balancer.name());
        }
        let api_tls = api_tls(config.tls.as_ref(), address)?;
        let view = std::sync::Arc::<std::sync::Mutex<crate::metrics::View>>::default();
        let (api_url, api_task) = match config.api_port {
            Some(port) => {
                let listen = std::net::SocketAddr::new(address, port);
                let state = api::ApiState {
                    log_dir: config.data_dir.join("logs"),
                    data_dir: config.data_dir.clone(),
                    view: std::sync::Arc::clone(&view),
                };
                let (url, task) = api::serve(listen, state, api_tls)
                    .await
                    .map_err(|e| fail(&format!("listening on {listen} for the agent API"), e))?;
                (Some(url), Some(task))
            }
            None => (None, None),
        };
        let client = match &config.tls {
            Some(tls) => Client::with_tls(&config.server, tls).map_err(|e| AgentError(e.to_string()))?,
            None => Client::new(&config.server),
        };
        let run_settings = RunSettings {
            log_dir: config.data_dir.join("logs"),
            workdir: config.workdir.clone(),
            policy: config.restart_policy,
            script_checks: config.enable_script_checks,
        };
        let capacity = capacity(&config, &collected.facts);
        let machine = Machine {
            id: id.clone(),
            hostname: collected.hostname,
            address: address.to_string(),
            facts: collected.facts,
            labels,
            updated_at: now_secs(),
            capacity: Some(capacity),
        };
        Ok(Agent {
            client: match &config.token {
                Some(token) => client.with_token(token.expose()),
                None => client,
            },
            world: World::new(&id),
            config,
            machine,
            address,
            env_dir,
            listener,
            lease: None,
            registered: BTreeMap::new(),
            locals: BTreeMap::new(),
            draining: BTreeMap::new(),
            hurry: std::sync::Arc::default(),
            wake,
            run_settings,
            lb_status: balancer.as_ref().map(|b| LbStatus {
                kind: b.kind(),
                frontends: Vec::new(),
                notes: Vec::new(),
                last_apply: None,
                error: None,
                exporter: None,
            }),
            balancer,
            last_good: balance::LastGood::default(),
            session_started: tokio::time::Instant::now(),
            api_url,
            api_task,
            saved_processes: BTreeMap::new(),
            prefixes: BTreeSet::new(),
            problems: Vec::new(),
            deploy_started: None,
            last_deploy: None,
            published_status: None,
            session_was_healthy: false,
            meter: Some(Meter::new()),
            releases: BTreeMap::new(),
            running_release: BTreeMap::new(),
            view,
        })
    }

    fn log(&self, message: &str) {
        if !self.config.log {
            return;
        }
        eprintln!("gantry agent {}: {message}", self.machine.id);
    }

    /// One session: register, read, watch, until something breaks.
    async fn session(&mut self, woken: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Result<(), String> {
        self.session_was_healthy = false;
        self.session_started = tokio::time::Instant::now();
        let server = self.client.servers().join(",");
        let unreachable = |e: ClientError| format!("server {server}: {e}");
        let grant = self.client.grant_lease(self.config.lease_ttl).await.map_err(unreachable)?;
        let lease = grant.id.clone();
        self.lease = Some(lease.clone());
        self.registered.clear();
        self.published_status = None;
        self.client
            .put_machine(&self.machine, PutOptions { lease: Some(lease.clone()), ..PutOptions::default() })
            .await
            .map_err(unreachable)?;
        let revision = self.read_world().await.map_err(unreachable)?;
        // Every watch starts at `base` unless it has seen an event: the read
        // above holds everything up to it, whichever prefixes are followed.
        let mut base = revision + 1;
        let mut resume: BTreeMap<String, String> = BTreeMap::new();
        let mut wanted = self.watch_prefixes();
        let mut watch = self.open_watches(&wanted, base, &resume).await.map_err(unreachable)?;
        self.log(&format!(
            "registered at {} (group {}), watching from revision {base}",
            self.machine.address,
            self.config.group.as_deref().unwrap_or("-")
        ));
        self.session_was_healthy = true;
        self.reconcile(Touched::ALL).await;

        let mut keep_alive = tokio::time::interval(self.config.lease_ttl / 3);
        keep_alive.reset();
        let mut facts_timer = tokio::time::interval(self.config.facts_interval);
        facts_timer.reset();
        let mut usage_timer = tokio::time::interval(self.config.usage_interval);
        usage_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut listener_status = self.listener.as_ref().map(Listener::subscribe);
        let mut pending = Touched::default();
        let mut due: Option<tokio::time::Instant> = None;
        loop {
            let debounce = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let status_changed = async {
                match listener_status.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                item = watch.next() => match item {
                    Some((prefix, Some(Ok(WatchItem::Event { id, event })))) => {
                        resume.insert(prefix, id);
                        let value = match event.kind {
                            WatchKind::Put => event.value.as_deref(),
                            WatchKind::Delete => None,
                        };
                        let touched = self.world.apply(&event.key, value);
                        if touched.any() {
                            pending.merge(touched);
                            due.get_or_insert_with(|| tokio::time::Instant::now() + DEBOUNCE);
                        }
                    }
                    Some((_, Some(Ok(WatchItem::Reset(_))))) => {
                        self.log("fell behind the server's history; reading everything again");
                        base = self.read_world().await.map_err(unreachable)? + 1;
                        resume.clear();
                        wanted = self.watch_prefixes();
                        watch = self.open_watches(&wanted, base, &resume).await.map_err(unreachable)?;
                        pending.merge(Touched::ALL);
                        due.get_or_insert_with(tokio::time::Instant::now);
                    }
                    // A broken stream ends right after its error.
                    Some((_, Some(Err(_)))) => {}
                    Some((_, None)) | None => {
                        // Each watch resumes exactly after the last event it saw.
                        watch = self
                            .open_watches(&wanted, base, &resume)
                            .await
                            .map_err(|e| format!("a watch broke and could not resume: {e}"))?;
                    }
                },
                _ = debounce => {
                    due = None;
                    self.reconcile(std::mem::take(&mut pending)).await;
                    // New requirements or providers: follow their instances too.
                    if self.prefixes != wanted {
                        wanted = self.prefixes.clone();
                        watch = self.open_watches(&wanted, base, &resume).await.map_err(unreachable)?;
                    }
                }
                Some(_) = woken.recv() => {
                    pending.merge(Touched { health: true, ..Touched::default() });
                    due.get_or_insert_with(|| tokio::time::Instant::now() + DEBOUNCE);
                }
                changed = status_changed => {
                    if changed {
                        self.note_listener_progress();
                        self.publish_status().await;
                    }
                }
                _ = keep_alive.tick() => {
                    if let Err(e) = self.client.keep_alive(&lease).await {
                        return Err(if e.is_not_found() { "the lease expired; registering again".to_owned() } else { unreachable(e) });
                    }
                    // Publishes only a change: such as the server in use,
                    // after the client moved to another.
                    self.publish_status().await;
                }
                _ = facts_timer.tick() => self.refresh_facts(&lease).await,
                _ = usage_timer.tick() => self.publish_usage(&lease).await,
            }
        }
    }

    /// The prefixes this agent follows: groups, service definitions,
    /// datastores, its own control keys, and the instances of every service
    /// that provides something its services require (in their federation).
    /// Not the whole keyspace: a thousand agents must not each hear every
    /// other agent's registration and status.
    fn watch_prefixes(&self) -> BTreeSet<String> {
        let mut prefixes: BTreeSet<String> = [
            keys::GROUPS.to_owned(),
            keys::SERVICES.to_owned(),
            keys::kv(keys::DATASTORES_KV),
            keys::agent(&self.machine.id),
            keys::allocs_of(&self.machine.id),
        ]
        .into();
        let (units, _) = self.world.local_units(self.config.group.as_deref(), &self.config.services);
        let local = world::distinct(units.iter().map(|u| u.service));
        if self.config.external_lb {
            let federation = self.config.labels.get("federation").map_or("default", String::as_str);
            for service in self.world.services.values().filter(|s| s.public && s.federation == federation) {
                prefixes.insert(keys::instances_of(&service.id));
            }
        }
        for service in local {
            for name in service.requires.values().flat_map(|t| t.placeholders()) {
                for provider in self.world.services.values() {
                    if provider.federation == service.federation && provider.provides.contains_key(name) {
                        prefixes.insert(keys::instances_of(&provider.id));
                    }
                }
            }
        }
        prefixes
    }

    /// One watch per prefix, merged; each from its last event, else from `base`.
    async fn open_watches(
        &self,
        prefixes: &BTreeSet<String>,
        base: u64,
        resume: &BTreeMap<String, String>,
    ) -> Result<Watches, ClientError> {
        let mut all = Vec::with_capacity(prefixes.len());
        for prefix in prefixes {
            let last = resume.get(prefix).map(String::as_str);
            let stream = self.client.watch(prefix, if last.is_some() { 0 } else { base }, last).await?;
            let tag = prefix.clone();
            let end = prefix.clone();
            let tagged = stream
                .map(move |item| (tag.clone(), Some(item)))
                .chain(futures::stream::once(async move { (end, None) }));
            all.push(tagged.boxed());
        }
        Ok(futures::stream::select_all(all))
    }

    /// Reads everything the agent follows into a fresh [`World`]; returns
    /// the oldest revision among the reads (watching from there + 1 misses nothing).
    async fn read_world(&mut self) -> Result<u64, ClientError> {
        let mut world = World::new(&self.machine.id);
        let groups = self.client.groups().await?;
        let services = self.client.services().await?;
        let instances = self.client.instances_with(&[]).await?;
        let datastores = self.client.kv_list(keys::DATASTORES_KV).await?;
        let control = self.client.agent_control(&self.machine.id).await?;
        let allocations = self.client.node_allocations(&self.machine.id).await?;
        for alloc in allocations.items {
            let text = serde_json::to_string(&alloc).unwrap_or_default();
            world.apply(&keys::alloc(&alloc.machine, &alloc.id), Some(&text));
        }
        for group in groups.items {
            world.groups.insert(group.name.clone(), group);
        }
        for definition in services.items {
            let text = serde_json::to_string(&definition).unwrap_or_default();
            world.apply(&keys::service(&definition.id), Some(&text));
        }
        for instance in instances.items {
            world.instances.insert(keys::instance(&instance.service, &instance.id), instance);
        }
        for entry in &datastores.entries {
            world.apply(&keys::kv(&entry.key), Some(&entry.value));
        }
        world.listener_enabled = control.listener.map(|s| s.enabled);
        world.deploy = control.deploy;
        world.service_control = control.services;
        world.releases = control.releases;
        self.world = world;
        Ok([
            groups.revision,
            services.revision,
            instances.revision,
            datastores.revision,
            control.revision,
            allocations.revision,
        ]
        .into_iter()
        .min()
        .unwrap_or(0))
    }

    /// Brings the node in line with the world: processes, checks,
    /// instances, env files, the load balancer, the listener's switch and
    /// deploy requests, then the published status.
    async fn reconcile(&mut self, touched: Touched) {
        if touched.world {
            self.reconcile_services().await;
        } else if touched.health {
            self.reconcile_health().await;
        }
        if touched.control {
            self.reconcile_control();
        }
        if self.advance_releases().await {
            self.reconcile_services().await;
        }
        self.publish_status().await;
    }

    fn reconcile_control(&mut self) {
        let Some(enabled) = self.world.listener_enabled else { return self.start_deploy() };
        if let Some(listener) = &self.listener
            && listener.status().enabled != enabled
        {
            self.log(if enabled { "listener on (a run is queued)" } else { "listener off" });
            listener.set_enabled(enabled);
        }
        self.start_deploy();
    }

    /// Acts on a deploy request it has not acted on yet.
    fn start_deploy(&mut self) {
        let Some(request) = self.world.deploy.clone() else { return };
        let seen = |id: &str| {
            self.deploy_started.as_ref().is_some_and(|(d, _)| d == id)
                || self.last_deploy.as_ref().is_some_and(|d| d.id == id)
        };
        if seen(&request.id) {
            return;
        }
        match &self.listener {
            Some(listener) => {
                self.log(&format!("deploy {} requested: provisioning", request.id));
                self.deploy_started = Some((request.id.clone(), listener.status().runs_total));
                listener.trigger(format!("deploy {}", request.id));
            }
            None => {
                self.last_deploy = Some(DeployOutcome {
                    id: request.id,
                    ok: true,
                    detail: "no provision command: the environment was resolved again".into(),
                    duration_ms: 0,
                });
            }
        }
    }

    /// Notices the run that carried a pending deploy request finishing.
    fn note_listener_progress(&mut self) {
        let (Some((id, before)), Some(listener)) = (&self.deploy_started, &self.listener) else { return };
        let status = listener.status();
        let reason = format!("deploy {id}");
        if let Some(run) =
            status.last_run.as_ref().filter(|r| status.runs_total > *before && r.reasons.contains(&reason))
        {
            self.last_deploy = Some(outcome(id, run));
            self.deploy_started = None;
        }
    }

    async fn publish_status(&mut self) {
        self.save_processes();
        let Some(lease) = self.lease.clone() else { return };
        let mut status = AgentStatus {
            machine: self.machine.id.clone(),
            group: self.config.group.clone(),
            services: {
                let ids: BTreeSet<String> = self.locals.values().map(|l| l.service.id.clone()).collect();
                ids.into_iter().collect()
            },
            listener: self.listener.as_ref().map(Listener::status),
            problems: self.problems.clone(),
            last_deploy: self.last_deploy.clone(),
            api: self.api_url.clone(),
            processes: self.locals.iter().map(|(id, local)| (id.clone(), local.state())).collect(),
            lb: self.lb_status.clone(),
            allocations: {
                let now = now_ms();
                self.locals
                    .values_mut()
                    .filter_map(|local| Some((local.allocation.clone()?, local.alloc_report(now))))
                    .collect()
            },
            releases: self.release_reports(),
            server: Some(self.client.base().to_owned()),
            updated_at_ms: 0,
        };
        // Commands' output leaves the node without the secrets it was given.
        mask::mask_status(&mut status, self.world.datastores.values().map(String::as_str));
        self.observe(&status);
        // Compared without its time stamp: only a change is published.
        if self.published_status.as_ref() == Some(&status) {
            return;
        }
        if let (Some(before), Some(now)) =
            (self.published_status.as_ref().and_then(|s| s.server.as_ref()), &status.server)
            && before != now
        {
            self.log(&format!("now using server {now} (was {before})"));
        }
        let stamped = AgentStatus { updated_at_ms: now_ms(), ..status.clone() };
        match self.client.put_agent_status(&stamped, PutOptions { lease: Some(lease), ..PutOptions::default() }).await {
            Ok(_) => self.published_status = Some(status),
            Err(e) => self.log(&format!("publishing status: {e}")),
        }
    }

    /// Measures the node and each supervised process tree (off the event
    /// loop: it reads /proc) and publishes it under the lease.
    async fn publish_usage(&mut self, lease: &str) {
        let Some(mut meter) = self.meter.take() else { return };
        let groups: BTreeMap<String, u32> = self
            .locals
            .iter()
            .filter_map(|(id, local)| Some((id.clone(), local.supervisor.as_ref()?.status().pid?)))
            .collect();
        let machine = self.machine.id.clone();
        let measured = tokio::task::spawn_blocking(move || {
            let usage = meter.measure(&machine, &groups);
            (meter, usage)
        })
        .await;
        let Ok((meter, usage)) = measured else { return self.meter = Some(Meter::new()) };
        self.meter = Some(meter);
        if let Ok(mut view) = self.view.lock() {
            view.usage = Some(usage.clone());
        }
        let options = PutOptions { lease: Some(lease.to_owned()), ..PutOptions::default() };
        if let Err(e) = self.client.put_usage(&usage, options).await {
            self.log(&format!("publishing usage: {e}"));
        }
    }

    /// Hands `/metrics` the status just built and each check, to read its
    /// latest result when scraped.
    fn observe(&self, status: &AgentStatus) {
        let live = self
            .locals
            .iter()
            .filter_map(|(name, local)| Some((name.clone(), local.checker.as_ref()?.subscribe())))
            .collect();
        let services = self.locals.iter().map(|(name, local)| (name.clone(), local.service.id.clone())).collect();
        if let Ok(mut view) = self.view.lock() {
            view.status = Some(status.clone());
            view.live = live;
            view.services = services;
        }
    }

    async fn refresh_facts(&mut self, lease: &str) {
        let collected = tokio::task::spawn_blocking(facts::collect).await;
        let Ok(collected) = collected else { return };
        if collected.facts == self.machine.facts && collected.hostname == self.machine.hostname {
            return;
        }
        self.machine.facts = collected.facts;
        self.machine.hostname = collected.hostname;
        self.machine.capacity = Some(capacity(&self.config, &self.machine.facts));
        self.machine.updated_at = now_secs();
        let options = PutOptions { lease: Some(lease.to_owned()), ..PutOptions::default() };
        if let Err(e) = self.client.put_machine(&self.machine, options).await {
            self.log(&format!("publishing new facts: {e}"));
        }
    }
}

fn outcome(id: &str, run: &RunRecord) -> DeployOutcome {
    let detail = if run.succeeded() {
        String::new()
    } else if run.timed_out {
        "timed out".into()
    } else if let Some(signal) = run.signal {
        format!("killed by signal {signal}")
    } else if let Some(error) = &run.error {
        error.clone()
    } else {
        format!("exit code {}", run.exit_code.unwrap_or(-1))
    };
    DeployOutcome { id: id.to_owned(), ok: run.succeeded(), detail, duration_ms: run.duration_ms }
}

/// What the node offers the scheduler: `--capacity`, else its CPUs and
/// memory, less `--reserve`.
fn capacity(config: &AgentConfig, facts: &gantry_api::Facts) -> NodeCapacity {
    let (total, source) = match config.capacity {
        Some(given) => (given, CapacitySource::Configured),
        None => (
            Resources { cpu: f64::from(facts.cpu_count), memory_mb: facts.memory_bytes / (1024 * 1024) },
            CapacitySource::Measured,
        ),
    };
    NodeCapacity { total, source, reserved: config.reserve, scheduled_only: config.group.is_none() }
}

fn now_secs() -> u64 {
    now_ms() / 1000
}

#[cfg(test)]
mod tests {
    /// An embedding program spawns the agent on a multi-threaded runtime:
    /// its future must stay `Send` (a borrowing async closure once broke it).
    #[test]
    fn the_agent_future_is_send() {
        fn send<T: Send>(_: &T) {}
        let config = super::AgentConfig::new("http://127.0.0.1:1", "/nonexistent");
        send(&super::run(config, std::future::pending::<()>()));
    }
}
