//! `gantry agent` and the commands that look at or steer agents:
//! `resolve`, `listener:status`, `listener:on` / `listener:off`,
//! `instance:deploy`.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gantry_agent::agent::{AgentConfig, run};
use gantry_agent::lb::LbKind;
use gantry_agent::listener::Throttle;
use gantry_agent::resolve;
use gantry_api::{AgentStatus, DeployRequest, ListenerSwitch, keys, now_ms};
use gantry_client::Client;

use crate::BadInput;
use crate::remote::{ServerArgs, explain, key_values, print_json, runtime, shutdown_signal};

/// `gantry agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The gantry server's URL
    #[arg(long = "server", env = "GANTRY_SERVER", default_value = gantry_api::DEFAULT_SERVER, value_name = "URL")]
    pub server: String,
    /// The agent's own state: machine id, assigned ports, listener state
    #[arg(long, default_value = ".gantry/agent", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The node group whose services this machine runs (see `gantry apply`)
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// A service to run besides the group's (repeatable)
    #[arg(long = "service", value_name = "SERVICE")]
    pub services: Vec<String>,
    /// The address instances are published with [default: the first private address]
    #[arg(long, value_name = "IP")]
    pub address: Option<IpAddr>,
    /// A machine label, also each instance's property (repeatable): --label region=us-east-1
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Where env files are written [default: DATA_DIR/env]
    #[arg(long, value_name = "DIR")]
    pub env_dir: Option<PathBuf>,
    /// The provision command the listener runs on changes (`sh -c`): chef-solo, a script
    #[arg(long = "provision-cmd", value_name = "COMMAND")]
    pub provision_command: Option<String>,
    /// How long a provision run may take
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub provision_timeout: Duration,
    /// Fewest time between two provision runs
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub min_interval: Duration,
    /// Most provision runs per --window
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub max_runs: u32,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub window: Duration,
    /// The machine id [default: saved in DATA_DIR, else HOSTNAME-RANDOM]
    #[arg(long, value_name = "ID")]
    pub machine_id: Option<String>,
    /// Lease time to live: how soon a dead agent leaves the inventory
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub lease_ttl: Duration,
    /// Between withdrawing a departing service and stopping it
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub drain: Duration,
    /// The local load balancer: a frontend on each required service's local_port
    /// (auto: haproxy if installed, else the built-in proxy)
    #[arg(long, value_enum, default_value_t = Lb::Off)]
    pub lb: Lb,
    /// This node is an external load balancer: it also fronts the public services of its federation
    #[arg(long)]
    pub external_lb: bool,
    /// The working directory of service commands [default: the agent's]
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// First delay before restarting a service that exited; doubles up to --restart-max-delay
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub restart_delay: Duration,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub restart_max_delay: Duration,
    /// The port of the agent's own API (service logs) on --address; 0: any free port
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    pub api_port: u16,
    /// Run services' command checks and on_delete hooks (off by default:
    /// otherwise whoever may write a service definition runs commands here)
    #[arg(long)]
    pub enable_script_checks: bool,
}

/// `--lb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lb {
    Auto,
    Haproxy,
    Builtin,
    Off,
}

pub fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let labels: BTreeMap<String, String> = key_values(&args.labels, "KEY=VALUE", "--label region=us-east-1")?;
    if args.lease_ttl < Duration::from_secs(1) {
        return Err(BadInput("error: --lease-ttl must be at least 1s".into()).into());
    }
    let mut config = AgentConfig::new(args.server, args.data_dir);
    config.machine_id = args.machine_id;
    config.group = args.group;
    config.services = args.services;
    config.address = args.address;
    config.labels = labels;
    config.env_dir = args.env_dir;
    config.provision_command = args.provision_command;
    config.provision_timeout = args.provision_timeout;
    config.throttle = Throttle { min_interval: args.min_interval, max_runs: args.max_runs.max(1), window: args.window };
    config.lease_ttl = args.lease_ttl;
    config.drain = args.drain;
    config.lb = match args.lb {
        Lb::Auto => LbKind::Auto,
        Lb::Haproxy => LbKind::Haproxy,
        Lb::Builtin => LbKind::Builtin,
        Lb::Off => LbKind::Off,
    };
    config.external_lb = args.external_lb;
    config.workdir = args.workdir;
    config.restart_policy.initial = args.restart_delay;
    config.restart_policy.max = args.restart_max_delay.max(args.restart_delay);
    config.api_port = Some(args.api_port);
    config.enable_script_checks = args.enable_script_checks;
    runtime()?.block_on(run(config, shutdown_signal()))?;
    Ok(())
}

/// `gantry resolve SERVICE`: what the service's requirements resolve to,
/// as an agent on `machine` would see them.
pub fn resolve_cmd(
    server: &ServerArgs,
    service: &str,
    machine: Option<&str>,
    show_secrets: bool,
) -> anyhow::Result<()> {
    let client = Client::new(&server.url);
    let rt = runtime()?;
    let (definition, instances, datastores) = rt
        .block_on(async {
            let definition = client.services().await?.items.into_iter().find(|d| d.id == service);
            let instances = client.instances_with(&[]).await?.items;
            let datastores = client.kv_list(keys::DATASTORES_KV).await?;
            Ok::<_, gantry_client::ClientError>((definition, instances, datastores))
        })
        .map_err(explain)?;
    let Some(definition) = definition else {
        return Err(BadInput(format!(
            "error: no service {service:?} on {}\n = help: run `gantry apply` in the repository",
            server.url
        ))
        .into());
    };
    let parsed = gantry_spec::parse_service_json(service, &serde_json::to_string(&definition)?)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let datastores: BTreeMap<String, String> = datastores
        .entries
        .into_iter()
        .map(|e| (e.key.strip_prefix(keys::DATASTORES_KV).unwrap_or(&e.key).to_owned(), e.value))
        .collect();
    let consumer = machine.unwrap_or("");
    let shown = |v: &str| if show_secrets { v.to_owned() } else { mask_secret(v) };
    match resolve::resolve(&parsed, consumer, &instances, &datastores) {
        Ok(resolution) => {
            if server.json {
                let values: BTreeMap<&String, String> = resolution.values.iter().map(|(k, v)| (k, shown(v))).collect();
                return print_json(
                    &serde_json::json!({"service": service, "values": values, "sources": resolution.sources}),
                );
            }
            let mut out = std::io::stdout().lock();
            for (key, value) in &resolution.values {
                let from: Vec<String> = resolution.sources[key]
                    .iter()
                    .map(|s| match &s.origin {
                        resolve::Origin::Instance { service, id, .. } => {
                            format!("{} from {service}/{id}", s.placeholder)
                        }
                        resolve::Origin::Datastore => format!("{} from datastore", s.placeholder),
                        resolve::Origin::Frontend { service, address } => {
                            format!("{} from the {service} frontend at {address}", s.placeholder)
                        }
                    })
                    .collect();
                writeln!(out, "{key}={}\t# {}", shown(value), from.join(", "))?;
            }
            if machine.is_none()
                && resolution.sources.values().flatten().any(|s| matches!(s.origin, resolve::Origin::Instance { .. }))
            {
                writeln!(out, "# with several providers each machine gets its own: --machine ID shows one machine's")?;
            }
            Ok(())
        }
        Err(unresolved) => {
            let lines: Vec<String> = unresolved.iter().map(|u| format!("error: {u}")).collect();
            if server.json {
                print_json(&serde_json::json!({"service": service, "unresolved": unresolved}))?;
            }
            anyhow::bail!("{}", lines.join("\n"))
        }
    }
}

/// `mysql://user:secret@host/db` -> `mysql://user:****@host/db`: passwords
/// in URLs are not printed unless asked for (--show-secrets).
pub fn mask_secret(value: &str) -> String {
    let Some(scheme_end) = value.find("://") else { return value.to_owned() };
    let rest = &value[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{}{}:****{}", &value[..scheme_end + 3], &authority[..colon], &value[scheme_end + 3 + at..])
        }
        _ => value.to_owned(),
    }
}

/// Every agent's published status.
pub(crate) async fn statuses(client: &Client) -> Result<Vec<AgentStatus>, gantry_client::ClientError> {
    Ok(client.agent_statuses().await?.items)
}

pub fn listener_status(server: &ServerArgs, machine: Option<&str>) -> anyhow::Result<()> {
    let client = Client::new(&server.url);
    let mut all = runtime()?.block_on(statuses(&client)).map_err(explain)?;
    all.retain(|s| machine.is_none_or(|m| s.machine == m));
    if server.json {
        return print_json(&all);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<28} {:<12} {:<8} {:<10} {:<28} PROBLEMS", "MACHINE", "GROUP", "LISTENER", "STATE", "LAST RUN")?;
    for s in &all {
        let switch = match &s.listener {
            Some(l) if l.enabled => "on",
            Some(_) => "off",
            None => "-",
        };
        let last = match s.listener.as_ref().and_then(|l| l.last_run.as_ref()) {
            Some(run) => {
                let outcome = match (run.exit_code, run.timed_out) {
                    (_, true) => "timed out".to_owned(),
                    (Some(code), _) => format!("exit {code}"),
                    _ => "failed".to_owned(),
                };
                format!("{outcome}, {} ms, {}", run.duration_ms, ago(run.started_at_ms))
            }
            None => "never".to_owned(),
        };
        writeln!(
            out,
            "{:<28} {:<12} {:<8} {:<10} {:<28} {}",
            s.machine,
            s.group.as_deref().unwrap_or("-"),
            switch,
            s.listener.as_ref().map_or("-", |l| l.state.as_str()),
            last,
            s.problems.len()
        )?;
        for p in &s.problems {
            writeln!(out, "    {p}")?;
        }
    }
    Ok(())
}

fn ago(ms: u64) -> String {
    let secs = now_ms().saturating_sub(ms) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

/// `listener:on` / `listener:off` for one machine or all.
pub fn listener_switch(server: &ServerArgs, machine: Option<&str>, all: bool, enabled: bool) -> anyhow::Result<()> {
    let client = Client::new(&server.url);
    let machines: Vec<String> = match (machine, all) {
        (Some(m), false) => vec![m.to_owned()],
        (None, true) => {
            runtime()?.block_on(client.machines()).map_err(explain)?.items.into_iter().map(|m| m.id).collect()
        }
        _ => {
            return Err(
                BadInput("error: name one machine with --machine ID, or every machine with --all".into()).into()
            );
        }
    };
    runtime()?
        .block_on(async {
            for m in &machines {
                client.set_listener(m, ListenerSwitch { enabled }).await?;
            }
            Ok::<_, gantry_client::ClientError>(())
        })
        .map_err(explain)?;
    if !server.json {
        let word = if enabled { "on (a run is queued)" } else { "off" };
        for m in &machines {
            println!("listener {word}: {m}");
        }
    }
    Ok(())
}

/// `gantry instance:deploy [GROUP] [-n N]`: every agent of the group (or
/// every agent) re-runs provisioning, at most N at a time.
pub fn instance_deploy(
    server: &ServerArgs,
    group: Option<&str>,
    batch: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let client = Client::new(&server.url);
    let rt = runtime()?;
    let machines: Vec<String> = rt
        .block_on(client.machines())
        .map_err(explain)?
        .items
        .into_iter()
        .filter(|m| group.is_none_or(|g| m.labels.get("group").is_some_and(|l| l == g)))
        .map(|m| m.id)
        .collect();
    if machines.is_empty() {
        let what =
            group.map_or("no agents are registered".to_owned(), |g| format!("no agent of group {g:?} is registered"));
        return Err(BadInput(format!("error: {what}\n = help: start agents with `gantry agent --group GROUP`")).into());
    }
    let id = format!("{:x}", now_ms());
    let mut results = Vec::new();
    let mut failed = 0;
    for chunk in machines.chunks(batch.max(1)) {
        let outcomes = rt.block_on(deploy_batch(&client, chunk, &id, timeout)).map_err(explain)?;
        for (machine, outcome) in outcomes {
            let (ok, detail, ms) = match &outcome {
                Some(o) => (o.ok, o.detail.clone(), o.duration_ms),
                None => (false, format!("no answer within {timeout:?}"), 0),
            };
            failed += usize::from(!ok);
            if !server.json {
                let word = if ok { "ok" } else { "FAILED" };
                println!("{machine:<28} {word:<7} {ms:>7} ms  {detail}");
            }
            results.push(serde_json::json!({"machine": machine, "ok": ok, "detail": detail, "duration_ms": ms}));
        }
    }
    if server.json {
        print_json(&results)?;
    }
    if failed > 0 {
        anyhow::bail!("deploy {id}: {failed} of {} node(s) failed", machines.len());
    }
    Ok(())
}

async fn deploy_batch(
    client: &Client,
    machines: &[String],
    id: &str,
    timeout: Duration,
) -> Result<Vec<(String, Option<gantry_api::DeployOutcome>)>, gantry_client::ClientError> {
    let request = DeployRequest { id: id.to_owned(), requested_at_ms: now_ms() };
    for m in machines {
        client.request_deploy(m, &request).await?;
    }
    let deadline = Instant::now() + timeout;
    let mut done: BTreeMap<String, gantry_api::DeployOutcome> = BTreeMap::new();
    while done.len() < machines.len() && Instant::now() < deadline {
        for status in statuses(client).await? {
            if let Some(outcome) = status.last_deploy.filter(|d| d.id == id && machines.contains(&status.machine)) {
                done.insert(status.machine, outcome);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(machines.iter().map(|m| (m.clone(), done.remove(m))).collect())
}
