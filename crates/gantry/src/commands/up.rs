//! `gantry up`, `gantry status`, `gantry down`: the whole stack of a
//! repository on this machine, in one command and without SSH (seed 000,
//! Rule #1). `up` starts a `gantry server` (embedded store), uploads the
//! repository, starts one `gantry agent` per node (each group's
//! `node_min`, at least 1) on its own loopback address, plus an external
//! balancer per federation with public services, waits until every service
//! passes its check and every public URL answers, and prints the URLs.
//!
//! It is the secure configuration (DESIGN.md "Trust boundary"), not a
//! demo mode: the server bootstraps access control and serves HTTPS to
//! clients with a certificate of the stack's own CA only (`pki`); each
//! node's agent presents its own certificate and its own agent token;
//! `up`, `status` and the commands run inside the repository use the
//! operator's certificate and the management token. Only the public URLs,
//! the services' own traffic through the external balancers, are plain
//! HTTP.
//!
//! Everything lives under `<repo>/.gantry/` (0700): the server's store
//! and management token, the certificates (`tls/`), each node's data dir
//! and token, the logs, and `up.json` (what runs, with pids and start
//! times, so `down` stops exactly that and a second `up` converges).
//! Each stack gets its own `127.N.0.0/16` (N from the repository's path),
//! so two stacks on one machine do not clash.

mod ha;
pub mod observe;
mod pki;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use gantry_agent::agent::Started;
use gantry_api::{AgentStatus, Health, Instance, ProcState};
use gantry_client::Client;
use serde::{Deserialize, Serialize};

use crate::context::{Context, explain};
use crate::output::print_json;
use crate::repo::{Opened, open_dir};
pub use pki::StackTls;

pub const STATE_DIR: &str = ".gantry";
const STATE_FILE: &str = "up.json";

/// What `gantry up` started, saved in `.gantry/up.json`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Stack {
    pub server: Option<Proc>,
    /// The server's URL; with `--ha` every server's, comma-separated.
    pub url: String,
    /// With `--ha`: the etcd members and every server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<ha::Ha>,
    pub nodes: Vec<Node>,
    /// Where public services answer, through the external balancers.
    pub public: Vec<String>,
    /// Prometheus and Alertmanager, when installed (issue 18).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observer: Option<observe::Observer>,
}

/// A process `up` started: its pid and start time (see [`Started::running`]).
pub type Proc = Started;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Node {
    /// Also its machine id: `<group>-<n>`, or `lb-<federation>`.
    pub name: String,
    pub group: Option<String>,
    pub address: String,
    /// `Some(federation)` for an external balancer.
    pub external: Option<String>,
    pub process: Option<Proc>,
}

pub(super) fn state_dir(opened: &Opened) -> PathBuf {
    opened.dir.join(STATE_DIR)
}

/// The stack `gantry up` runs for the repository around the current
/// directory: where its server is, its management token, and its TLS
/// files (for an HTTPS server).
#[derive(Debug)]
pub struct FoundStack {
    pub url: String,
    pub token_file: Option<PathBuf>,
    pub tls: Option<StackTls>,
}

/// The nearest `.gantry/up.json` from the current directory upwards.
pub fn stack_around_cwd() -> Option<FoundStack> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors().find_map(|dir| {
        let state = dir.join(STATE_DIR);
        let stack = load_stack(&state)?;
        let token = state.join("server").join(gantry_server::BOOTSTRAP_TOKEN_FILE);
        let tls = Some(StackTls::of(&state)).filter(|tls| stack.url.starts_with("https://") && tls.exists());
        Some(FoundStack { url: stack.url, token_file: token.exists().then_some(token), tls })
    })
}

/// A client of the stack's server with its management token (the server
/// wrote it when it first started) and, over HTTPS, the operator's
/// certificate.
fn stack_client(state: &Path, url: &str) -> anyhow::Result<Client> {
    let token = crate::context::read_token(&state.join("server").join(gantry_server::BOOTSTRAP_TOKEN_FILE))?;
    let client = if url.starts_with("https://") {
        Client::with_tls(url, &StackTls::of(state).operator()?)?
    } else {
        Client::new(url)
    };
    Ok(client.with_token(&token))
}

/// Creates `dir` 0700, or narrows it to 0700 when it exists (`packer:run`
/// keeps its logs in `.gantry/` too), before anything secret is put in it.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    super::tls::create_dir(dir)?;
    let mode = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (0700)", dir.display()))?;
    }
    Ok(())
}

pub(super) fn load_stack(dir: &Path) -> Option<Stack> {
    serde_json::from_slice(&std::fs::read(dir.join(STATE_FILE)).ok()?).ok()
}

fn save_stack(dir: &Path, stack: &Stack) -> anyhow::Result<()> {
    gantry_generate::write::write_atomic(&dir.join(STATE_FILE), &serde_json::to_vec_pretty(stack)?)?;
    Ok(())
}

/// The second octet of this repository's loopback network: 2..=254 from its path.
fn network(dir: &Path) -> u8 {
    let path = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    (gantry_agent::resolve::stable_hash(path.as_os_str().as_encoded_bytes()) % 253) as u8 + 2
}

/// The nodes the repository asks for, with their addresses.
fn plan_nodes(opened: &Opened) -> Vec<Node> {
    let net = network(&opened.dir);
    let mut nodes = Vec::new();
    for group in opened.repo.groups.values() {
        let count = group.autoscale.as_ref().map_or(1, |a| a.node_min.max(1));
        for n in 1..=count {
            nodes.push(Node {
                name: format!("{}-{n}", group.name),
                group: Some(group.name.clone()),
                address: String::new(),
                external: None,
                process: None,
            });
        }
    }
    let mut federations: Vec<&str> = opened
        .repo
        .services
        .values()
        .filter(|s| s.public && s.local_port.is_some())
        .map(|s| s.federation.as_str())
        .collect();
    federations.dedup();
    federations.sort_unstable();
    federations.dedup();
    for federation in federations {
        nodes.push(Node {
            name: format!("lb-{federation}"),
            group: None,
            address: String::new(),
            external: Some(federation.to_owned()),
            process: None,
        });
    }
    for (i, node) in nodes.iter_mut().enumerate() {
        node.address = format!("127.{net}.{}.{}", (i + 1) / 250, (i + 1) % 250 + 1);
    }
    nodes
}

fn public_urls(opened: &Opened, nodes: &[Node]) -> Vec<String> {
    let mut urls = Vec::new();
    for node in nodes {
        let Some(federation) = &node.external else { continue };
        for service in opened.repo.services.values().filter(|s| s.public && &s.federation == federation) {
            if let Some(port) = service.local_port {
                urls.push(format!("http://{}:{port}/", node.address));
            }
        }
    }
    urls
}

/// `gantry up [DIR] [--detach] [--timeout D] [--ha]`.
pub fn up(ctx: &Context, dir: Option<PathBuf>, detach: bool, timeout: Duration, ha: bool) -> anyhow::Result<()> {
    let opened = open_dir(dir.as_deref())?;
    let state = state_dir(&opened);
    private_dir(&state)?;
    private_dir(&state.join("logs"))?;
    let began = Instant::now();
    let rt = ctx.runtime();
    let wanted = plan_nodes(&opened);
    let tls = StackTls::of(&state);
    let repo_name =
        std::path::absolute(&opened.dir).ok().and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
    let made = pki::ensure(&tls, repo_name.as_deref().unwrap_or("repository"), &wanted)?;
    if made.ca {
        say(
            began,
            &format!("tls         a CA and {} certificate(s) in {STATE_DIR}/{}", made.certificates.len(), pki::TLS_DIR),
        );
    } else if !made.certificates.is_empty() {
        say(began, &format!("tls         certificate(s) for {}", made.certificates.join(", ")));
    }
    let mut stack = load_stack(&state).unwrap_or_default();
    let mut server_alive = stack.server.as_ref().is_some_and(Proc::running);
    if server_alive && (made.ca || !stack.url.starts_with("https://")) {
        // Started without TLS (by an older gantry), or its certificates
        // are not of the CA just made: it cannot be converged, only restarted.
        say(began, &format!("server      {} does not run the stack's TLS: restarting the stack", stack.url));
        down_stack(&state, &stack);
        stack = Stack::default();
        server_alive = false;
    }
    if server_alive && stack.ha.is_some() != ha {
        let (from, to) = if ha { ("one server", "--ha") } else { ("--ha", "one server") };
        say(began, &format!("server      the stack runs {from}, {to} asked: restarting the stack"));
        down_stack(&state, &stack);
        stack = Stack::default();
        server_alive = false;
    }
    if !server_alive {
        // Whatever observed a stack that is gone goes with it.
        observe::stop(stack.observer.as_ref());
    }
    if !server_alive && ha {
        let (cluster, url) = ha::start(&state, &tls, rt)?;
        for member in &cluster.etcd {
            say(began, &format!("etcd        {} {} (TLS, client certificates, auth)", member.name, member.url));
        }
        for server in &cluster.servers {
            say(began, &format!("server      {} (store on the 3 etcd members)", server.url));
        }
        let first = cluster.servers.first().and_then(|s| s.process);
        stack = Stack { server: first, url, ha: Some(cluster), nodes: Vec::new(), public: Vec::new(), observer: None };
    } else if !server_alive {
        let (proc, url) = start_server(&state.join("logs/server.log"), &state.join("server"), &tls, &[])?;
        say(began, &format!("server      {url} (embedded store in {STATE_DIR}/server)"));
        stack = Stack { server: Some(proc), url, ha: None, nodes: Vec::new(), public: Vec::new(), observer: None };
    } else {
        say(began, &format!("server      {} (already running: converging)", stack.url));
    }
    save_stack(&state, &stack)?;
    let client = stack_client(&state, &stack.url)?;
    let changes = rt.block_on(super::apply::upload(&opened, &client))?;
    say(began, &format!("repository  {} change(s) uploaded", changes.len()));

    // Nodes no longer asked for go; the others are kept when they run.
    for old in stack.nodes.iter().filter(|o| !wanted.iter().any(|w| w.name == o.name)) {
        stop_process(old.process.as_ref(), Duration::from_secs(15));
    }
    let mut nodes = Vec::with_capacity(wanted.len());
    for mut node in wanted {
        match stack.nodes.iter().find(|o| o.name == node.name && o.address == node.address).and_then(|o| o.process) {
            Some(process) if process.running() => node.process = Some(process),
            _ => {
                let token = rt.block_on(agent_token(&client, &state, &opened, &node))?;
                node.process = Some(start_agent(&opened, &state, &stack.url, &node, &token, &tls)?);
                say(began, &format!("node        {:<16} {} started", node.name, node.address));
            }
        }
        nodes.push(node);
    }
    stack.public = public_urls(&opened, &nodes);
    stack.nodes = nodes;
    save_stack(&state, &stack)?;

    let ready = rt.block_on(wait_ready(&client, &stack, began, timeout));
    if let Err(e) = ready {
        eprintln!("gantry up: {e:#}");
        eprintln!("gantry up: stopping what it started (logs stay in {})", state.join("logs").display());
        down_stack(&state, &stack);
        std::process::exit(1);
    }
    // Each service with an artifact runs a release: v1 on the first `up`;
    // then ready again (balancers take the switched instances back).
    let released =
        super::release::first_releases(ctx, &client, &opened, |line| say(began, line)).and_then(|released| {
            match released {
                0 => Ok(()),
                _ => rt.block_on(wait_ready(&client, &stack, began, timeout)),
            }
        });
    if let Err(e) = released {
        eprintln!("gantry up: releasing the services: {e:#}");
        eprintln!("gantry up: stopping what it started (logs stay in {})", state.join("logs").display());
        down_stack(&state, &stack);
        std::process::exit(1);
    }
    match observe::installed() {
        Some(binaries) => {
            let started = rt.block_on(observe::start(
                &opened,
                &state,
                &stack.url,
                &client,
                &tls,
                stack.observer.as_ref(),
                binaries,
            ));
            match started {
                Ok(observer) => {
                    say(began, &format!("prometheus  {}", observer.url));
                    if let Some(url) = &observer.alertmanager_url {
                        say(began, &format!("alertmanager {url}"));
                    }
                    stack.observer = Some(observer);
                    save_stack(&state, &stack)?;
                }
                Err(e) => say(began, &format!("prometheus  not started: {e:#}")),
            }
        }
        None => say(
            began,
            "prometheus  not installed: nothing collects metrics (apt-get install prometheus prometheus-alertmanager)",
        ),
    }
    say(began, &format!("ready in {:.1} s", began.elapsed().as_secs_f64()));
    if !detach {
        // Listen before saying so: a Ctrl-C right after the URL must stop the stack, not kill `up`.
        let signals = {
            let _runtime = rt.enter();
            use tokio::signal::unix::{SignalKind, signal};
            (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?)
        };
        println!("press Ctrl-C to stop the stack");
        for url in &stack.public {
            println!("{url}");
        }
        rt.block_on(follow_until_signal(&client, &stack, began, signals));
        say(began, "stopping");
        down_stack(&state, &stack);
        return Ok(());
    }
    if stack.public.is_empty() {
        println!("no public service: `gantry status` shows the nodes and services");
    }
    for url in &stack.public {
        println!("{url}");
    }
    Ok(())
}

fn say(began: Instant, line: &str) {
    println!("[{:>5.1}s] {line}", began.elapsed().as_secs_f64());
    let _ = std::io::stdout().flush();
}

/// The variables through which a user's shell points the CLI at a
/// server: `up` hands each process it starts exactly its own server,
/// token and certificates instead (GANTRY_TOKEN would override an agent's
/// --token-file with the operator's token).
const CLIENT_ENV: [&str; 6] =
    ["GANTRY_SERVER", "GANTRY_TOKEN", "GANTRY_TOKEN_FILE", "GANTRY_CACERT", "GANTRY_CLIENT_CERT", "GANTRY_CLIENT_KEY"];

fn gantry_command(log: &Path) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("finding the gantry binary")?;
    logged_command(exe.as_os_str(), log)
}

/// `program` with its output appended to `log`, in a process group of its
/// own, without the variables that point a client at a server.
fn logged_command(program: impl AsRef<std::ffi::OsStr>, log: &Path) -> anyhow::Result<Command> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut command = Command::new(program);
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own group: a Ctrl-C at the terminal reaches `up`, which stops the stack in order.
        .process_group(0);
    for variable in CLIENT_ENV {
        command.env_remove(variable);
    }
    Ok(command)
}

fn start_server(
    log: &Path,
    data_dir: &Path,
    tls: &StackTls,
    extra: &[std::ffi::OsString],
) -> anyhow::Result<(Proc, String)> {
    let _ = std::fs::remove_file(log);
    let child = gantry_command(log)?
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(tls.server_args())
        .args(extra)
        .spawn()
        .context("starting gantry server")?;
    let proc = Proc::of(child.id()).context("gantry server exited at once")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(url) = text.split_whitespace().find(|w| w.starts_with("https://")) {
            return Ok((proc, url.to_owned()));
        }
        if !proc.running() || Instant::now() > deadline {
            bail!("gantry server did not start: {}", text.trim());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The node's own agent token (its machine, its services' federation),
/// in `.gantry/nodes/<node>/token` (0600): the one it had if the server
/// still knows it, else a new one. An agent never holds the management token.
/// A node's federation: its balancer's, or its group's services'.
fn node_federation(opened: &Opened, node: &Node) -> String {
    match (&node.external, &node.group) {
        (Some(federation), _) => federation.clone(),
        (None, Some(group)) => opened
            .repo
            .groups
            .get(group)
            .and_then(|g| opened.repo.services_of(g).first().map(|s| s.federation.clone()))
            .unwrap_or_else(|| gantry_api::DEFAULT_FEDERATION.to_owned()),
        (None, None) => gantry_api::DEFAULT_FEDERATION.to_owned(),
    }
}

async fn agent_token(client: &Client, state: &Path, opened: &Opened, node: &Node) -> anyhow::Result<PathBuf> {
    let dir = state.join("nodes").join(&node.name);
    let path = dir.join("token");
    if let Ok(secret) = crate::context::read_token(&path)
        && client.clone().with_token(&secret).whoami().await.is_ok()
    {
        return Ok(path);
    }
    let federation = node_federation(opened, node);
    let request = gantry_api::TokenRequest {
        name: format!("agent {}", node.name),
        agent: Some(gantry_api::AgentIdentity { machine: node.name.clone(), federation, services: vec![] }),
        ..Default::default()
    };
    let created = client.create_token(&request).await.map_err(explain)?;
    private_dir(&dir)?;
    gantry_tls::write_private(&path, format!("{}\n", created.secret).as_bytes())?;
    Ok(path)
}

fn start_agent(
    opened: &Opened,
    state: &Path,
    url: &str,
    node: &Node,
    token: &Path,
    tls: &StackTls,
) -> anyhow::Result<Proc> {
    let data_dir = state.join("nodes").join(&node.name);
    let mut command = gantry_command(&state.join("logs").join(format!("{}.log", node.name)))?;
    command
        .args([
            "agent",
            "--server",
            url,
            "--machine-id",
            &node.name,
            "--address",
            &node.address,
            "--lb",
            "auto",
            "--restart-delay",
            "500ms",
            // haproxy's Prometheus exporter on the node's own address.
            "--lb-metrics-port",
            LB_METRICS_PORT,
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--token-file")
        .arg(token)
        .args(tls.agent_args(&node.name))
        .arg("--workdir")
        .arg(std::path::absolute(&opened.dir).unwrap_or_else(|_| opened.dir.clone()));
    if let Some(group) = &node.group {
        command.args(["--group", group]);
    }
    // The local nodes share one machine: each offers the scheduler a slice
    // of it. A group node fits two 256 MB workers; the balancer none, so
    // placement is visibly decided by memory.
    command.args(["--capacity", if node.external.is_some() { LB_CAPACITY } else { NODE_CAPACITY }]);
    if node.external.is_some() {
        command.arg("--external-lb");
    }
    // Its federation, as its token says: the scheduler places a service
    // only on nodes of the service's federation.
    command.args(["--label", &format!("federation={}", node_federation(opened, node))]);
    let child = command.spawn().with_context(|| format!("starting the agent of node {}", node.name))?;
    Proc::of(child.id()).with_context(|| format!("the agent of node {} exited at once", node.name))
}

/// Where each node's haproxy exports its metrics (every node has an address of its own).
const LB_METRICS_PORT: &str = "8405";
/// What each local group node offers the scheduler (`gantry agent --capacity`).
const NODE_CAPACITY: &str = "cpu=1,memory_mb=600";
/// What the local external balancer offers: too little for a worker.
const LB_CAPACITY: &str = "cpu=0.5,memory_mb=128";

/// What one look at the stack found: a line per node and service, and
/// whether it is ready, or failed for good.
struct Look {
    lines: BTreeMap<String, String>,
    waiting: Vec<String>,
    failed: Option<String>,
}

async fn look(client: &Client, stack: &Stack) -> Look {
    let mut look = Look { lines: BTreeMap::new(), waiting: Vec::new(), failed: None };
    let all: Vec<AgentStatus> = client.agent_statuses().await.map(|l| l.items).unwrap_or_default();
    for node in &stack.nodes {
        let Some(status) = all.iter().find(|s| s.machine == node.name) else {
            look.waiting.push(format!("node {} has not registered", node.name));
            continue;
        };
        for problem in &status.problems {
            look.waiting.push(format!("node {}: {problem}", node.name));
        }
        if let Some(error) = status.lb.as_ref().and_then(|lb| lb.error.as_ref()) {
            look.failed = Some(format!("node {}: {error}", node.name));
        }
        for (service, state) in &status.processes {
            let p = state.process.as_ref();
            let mut line = format!("{:<10} {}", p.map_or("-", |p| p.state.as_str()), state.health.word());
            if let Some(pid) = p.and_then(|p| p.pid) {
                line.push_str(&format!(" pid {pid}"));
            }
            look.lines.insert(format!("{:<16} {service}", node.name), line);
            let restarts = p.map_or(0, |p| p.restarts);
            let failed = p.is_some_and(|p| p.state == ProcState::Failed);
            if failed || (restarts >= 3 && state.health != Health::Passing) {
                let why = p.and_then(|p| p.problem.as_deref().or(p.last_exit.as_deref())).unwrap_or("it keeps exiting");
                let tail = client.agent_logs(&node.name, service, Some(600), false).await;
                let tail = match tail {
                    Ok(stream) => {
                        use futures::StreamExt;
                        let chunks: Vec<_> = stream.collect().await;
                        chunks
                            .into_iter()
                            .filter_map(Result::ok)
                            .map(|b| String::from_utf8_lossy(&b).into_owned())
                            .collect::<String>()
                    }
                    Err(_) => String::new(),
                };
                look.failed = Some(format!(
                    "service {service} on node {} does not start: {why}\n--- the end of its log ---\n{}",
                    node.name,
                    tail.trim_end()
                ));
            }
            if state.health != Health::Passing {
                look.waiting.push(format!("{service} on {} is {}", node.name, state.health.word()));
            }
        }
    }
    // Scheduled work that could not be placed keeps the stack from being ready.
    for job in client.jobs().await.map(|l| l.items).unwrap_or_default() {
        if job.pending > 0 {
            look.waiting.push(format!(
                "{}: {} allocation(s) pending: {}",
                job.service,
                job.pending,
                job.reason.as_deref().unwrap_or("not placed yet")
            ));
        }
    }
    for url in &stack.public {
        if !answers(url).await {
            look.waiting.push(format!("{url} does not answer yet"));
        }
    }
    look
}

/// Whether `url` answers HTTP with a status below 500.
async fn answers(url: &str) -> bool {
    let Ok(client) = reqwest::Client::builder().timeout(Duration::from_secs(2)).build() else { return false };
    client.get(url).send().await.is_ok_and(|r| r.status().as_u16() < 500)
}

async fn wait_ready(client: &Client, stack: &Stack, began: Instant, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let look = look(client, stack).await;
        show_changes(&mut shown, &look, began);
        if let Some(failed) = look.failed {
            bail!("{failed}");
        }
        if look.waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not ready after {timeout:?}:\n  {}", look.waiting.join("\n  "));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn show_changes(shown: &mut BTreeMap<String, String>, look: &Look, began: Instant) {
    for (key, line) in &look.lines {
        if shown.get(key) != Some(line) {
            say(began, &format!("{key:<28} {line}"));
            shown.insert(key.clone(), line.clone());
        }
    }
}

/// Shows changes until SIGINT (Ctrl-C) or SIGTERM.
async fn follow_until_signal(
    client: &Client,
    stack: &Stack,
    began: Instant,
    (mut interrupt, mut terminate): (tokio::signal::unix::Signal, tokio::signal::unix::Signal),
) {
    let mut shown = BTreeMap::new();
    loop {
        let look = look(client, stack).await;
        show_changes(&mut shown, &look, began);
        tokio::select! {
            _ = interrupt.recv() => return,
            _ = terminate.recv() => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// SIGTERM, then SIGKILL after `grace`; waits until the process is gone.
fn stop_process(process: Option<&Proc>, grace: Duration) {
    let Some(process) = process.filter(|p| p.running()) else { return };
    let Some(pid) = rustix::process::Pid::from_raw(process.pid as i32) else { return };
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let deadline = Instant::now() + grace;
    while process.running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if process.running() {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        while process.running() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Stops the nodes (each agent stops its services and balancer), then the server.
fn down_stack(state: &Path, stack: &Stack) {
    observe::stop(stack.observer.as_ref());
    std::thread::scope(|scope| {
        for node in &stack.nodes {
            scope.spawn(|| stop_process(node.process.as_ref(), Duration::from_secs(15)));
        }
    });
    stop_process(stack.server.as_ref(), Duration::from_secs(10));
    if let Some(ha) = &stack.ha {
        std::thread::scope(|scope| {
            for process in ha.processes() {
                scope.spawn(move || stop_process(Some(process), Duration::from_secs(10)));
            }
        });
    }
    let _ = std::fs::remove_file(state.join(STATE_FILE));
}

/// `gantry down [DIR] [--purge]`.
pub fn down(dir: Option<PathBuf>, purge: bool) -> anyhow::Result<()> {
    let opened = open_dir(dir.as_deref())?;
    let state = state_dir(&opened);
    let began = Instant::now();
    match load_stack(&state) {
        Some(stack) => {
            down_stack(&state, &stack);
            println!("stopped {} node(s) and the server in {:.1} s", stack.nodes.len(), began.elapsed().as_secs_f64());
        }
        None => println!("no stack is running in {}", opened.dir.display()),
    }
    if purge && state.exists() {
        std::fs::remove_dir_all(&state).with_context(|| format!("removing {}", state.display()))?;
        println!("removed {}", state.display());
    }
    Ok(())
}

/// `gantry status [DIR] [--json]`.
pub fn status(ctx: &Context, dir: Option<PathBuf>) -> anyhow::Result<()> {
    let opened = open_dir(dir.as_deref())?;
    let state = state_dir(&opened);
    let Some(stack) = load_stack(&state) else {
        let stopped = StackStatus {
            agents: None,
            instances: None,
            nodes: None,
            public: None,
            running: false,
            server: None,
            ha: None,
        };
        return ctx.output().print(&stopped, |out| {
            writeln!(out, "no stack is running in {}: start one with `gantry up`", opened.dir.display())?;
            Ok(())
        });
    };
    let client = stack_client(&state, &stack.url)?;
    let agents = ctx.block_on(client.agent_statuses()).map_err(explain)?.items;
    let instances: Vec<Instance> = ctx.block_on(client.instances_with(&[])).map_err(explain)?.items;
    if ctx.output().is_json() {
        return print_json(&StackStatus {
            agents: Some(&agents),
            instances: Some(&instances),
            nodes: Some(&stack.nodes),
            public: Some(&stack.public),
            running: true,
            server: Some(&stack.url),
            ha: stack.ha.as_ref(),
        });
    }
    let mut out = std::io::stdout().lock();
    let state_of = |process: Option<&Proc>| if process.is_some_and(Proc::running) { "running" } else { "NOT RUNNING" };
    match &stack.ha {
        Some(ha) => {
            for server in &ha.servers {
                writeln!(out, "server  {} ({})", server.url, state_of(server.process.as_ref()))?;
            }
            for member in &ha.etcd {
                let pid = member.process.map_or(0, |p| p.pid);
                writeln!(
                    out,
                    "etcd    {} {} pid {pid} ({})",
                    member.name,
                    member.url,
                    state_of(member.process.as_ref())
                )?;
            }
        }
        None => writeln!(out, "server  {} ({})", stack.url, state_of(stack.server.as_ref()))?,
    }
    for node in &stack.nodes {
        let alive = if node.process.as_ref().is_some_and(Proc::running) { "up" } else { "DOWN" };
        let role = node.group.as_deref().map_or_else(|| "external load balancer".to_owned(), |g| format!("group {g}"));
        writeln!(out, "node    {:<18} {:<14} {alive:<5} {role}", node.name, node.address)?;
        let Some(status) = agents.iter().find(|s| s.machine == node.name) else { continue };
        if let Some(server) = &status.server {
            writeln!(out, "  server  {server}")?;
        }
        for (service, state) in &status.processes {
            let p = state.process.as_ref();
            // Scheduled work is named by its allocation.
            let kind = if status.allocations.contains_key(service) { "alloc  " } else { "service" };
            writeln!(
                out,
                "  {kind} {:<12} :{:<6} {:<9} {:<8} restarts {}",
                service,
                state.port,
                p.map_or("-", |p| p.state.as_str()),
                state.health.word(),
                p.map_or(0, |p| p.restarts)
            )?;
        }
        // "none": the agent runs no provision command.
        writeln!(out, "  listener {}", status.listener.as_ref().map_or("none", |l| l.state.as_str()))?;
        for (lb, frontend) in status.lb.iter().flat_map(|lb| lb.frontends.iter().map(move |f| (lb, f))) {
            writeln!(
                out,
                "  lb      {:<12} {:<22} {} backend(s) ({})",
                frontend.service,
                frontend.bind.to_string(),
                frontend.backends.len(),
                lb.kind.as_str()
            )?;
        }
        for problem in &status.problems {
            writeln!(out, "  problem {problem}")?;
        }
    }
    let passing = instances.iter().filter(|i| i.health == Health::Passing).count();
    writeln!(out, "instances: {passing} of {} passing", instances.len())?;
    match stack.observer.as_ref().filter(|o| o.prometheus.running()) {
        Some(observer) => {
            writeln!(out, "prometheus {}", observer.url)?;
            match ctx.block_on(super::prometheus::firing(&observer.url)) {
                Ok(alerts) if alerts.is_empty() => writeln!(out, "alerts  none firing")?,
                Ok(alerts) => {
                    for alert in alerts.iter().filter(|a| a.state == "firing") {
                        writeln!(out, "alert   {}", alert.line())?;
                    }
                }
                Err(e) => writeln!(out, "alerts  cannot be read: {e:#}")?,
            }
        }
        None => writeln!(out, "prometheus not running (`gantry up` starts it when installed)")?,
    }
    for url in &stack.public {
        writeln!(out, "public  {url}")?;
    }
    Ok(())
}

/// What `status --json` prints: `{"running": false}` when no stack runs.
#[derive(Debug, Serialize)]
struct StackStatus<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    agents: Option<&'a [AgentStatus]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instances: Option<&'a [Instance]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<&'a [Node]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    public: Option<&'a [String]>,
    running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<&'a str>,
    /// With `--ha`: the etcd members and servers, with their pids.
    #[serde(skip_serializing_if = "Option::is_none")]
    ha: Option<&'a ha::Ha>,
}
