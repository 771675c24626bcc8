//! Benchmark of issue 5: 1,000 agents' listeners in one process follow one
//! provider change. Starts a `gantry server` (embedded store) in this
//! process, applies the seed example, runs N real agents (the library's
//! `agent::run`, each with its own machine id, lease, watch connection and
//! env dir) for `app-www`, registers one `api` provider, then changes that
//! provider's port and times until every agent has rewritten its env file.
//! Also reports the resident memory of one idle agent process.
//!
//! Run: `cargo run --release -p gantry-bench --bin bench-agents [-- --agents 1000 --rounds 20]`
//!
//! The agents' env dirs are on /dev/shm when it exists: 1,000 simulated
//! nodes share this machine's one disk, where real nodes each sync their own.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gantry_agent::agent::{AgentConfig, AgentEvent, run};
use gantry_api::{Health, Instance};
use gantry_bench::{ms, percentile};
use gantry_client::{Client, PutOptions};
use gantry_store::{EmbeddedConfig, Store, StoreConfig};
use tokio::sync::mpsc;

const AGENT_MODE: &str = "__agent";
const WARM_UP_ROUNDS: usize = 2;
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if args.first().map(String::as_str) == Some(AGENT_MODE) {
        // One agent as `gantry agent` runs it, for the memory measurement.
        let mut config = AgentConfig::new(args[1].clone(), PathBuf::from(&args[2]));
        config.services = vec!["app-www".into()];
        config.address = Some([127, 0, 0, 3].into());
        config.log = false;
        runtime.block_on(run(config, std::future::pending()))?;
        return Ok(());
    }
    let (mut agents, mut rounds) = (1000usize, 20usize);
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> anyhow::Result<usize> {
            it.next()
                .with_context(|| format!("{name} needs a number"))?
                .parse()
                .with_context(|| format!("{name} takes a number"))
        };
        match arg.as_str() {
            "--agents" => agents = value("--agents")?,
            "--rounds" => rounds = value("--rounds")?,
            "--help" | "-h" => {
                println!("usage: bench-agents [--agents N (1000)] [--rounds N (20)]");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}; see --help"),
        }
    }
    if !(1..=5000).contains(&agents) || !(1..=1000).contains(&rounds) {
        bail!("--agents 1..5000, --rounds 1..1000");
    }
    runtime.block_on(bench(agents, rounds))
}

async fn bench(agents: usize, rounds: usize) -> anyhow::Result<()> {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    let dir = tempfile::Builder::new().prefix("gantry-bench-agents-").tempdir_in(base)?;
    let store = Store::open(StoreConfig::Embedded(EmbeddedConfig::in_dir(dir.path().join("server")))).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    // A thousand agents on one address hold thousands of connections and
    // watches: the limits count them, out of their reach.
    let limits = gantry_server::Limits::out_of_reach();
    tokio::spawn(gantry_server::serve_limited(
        listener,
        store,
        gantry_server::Acl::off(),
        limits,
        std::future::pending(),
    ));
    let client = Client::new(&url);

    // The seed example's services and datastores, as `gantry apply` uploads them.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seatgeek");
    for id in ["api", "app-www"] {
        let text = std::fs::read_to_string(example.join(format!("data_bags/service/{id}.json")))?;
        let mut definition: gantry_api::ServiceDefinition = serde_json::from_str(&text)?;
        // Resolution is measured here, not 1,000 copies of the example's programs.
        definition.command = Some(gantry_api::CommandSpec::External(true));
        client.put_service(&definition).await?;
    }
    client.kv_put("datastores/PRIMARY_DATABASE_URL", "mysql://bench@db/bench", PutOptions::default()).await?;
    client.put_instance(&provider(1100), PutOptions::default()).await?;

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let started = Instant::now();
    for i in 0..agents {
        let mut config = AgentConfig::new(url.clone(), dir.path().join(format!("agent-{i}")));
        config.machine_id = Some(format!("www-{i:04}"));
        config.services = vec!["app-www".into()];
        config.address = Some([127, 0, (i / 250) as u8, (i % 250 + 3) as u8].into());
        config.events = Some(events_tx.clone());
        config.log = false;
        tokio::spawn(async move {
            if let Err(e) = run(config, std::future::pending()).await {
                eprintln!("agent {i}: {e}");
            }
        });
    }
    wait_for_all(&mut events, agents).await.context("agents starting")?;
    println!(
        "gantry bench-agents: {agents} agents for app-www in one process, 1 api provider; {rounds} rounds (+{WARM_UP_ROUNDS} warm-up)"
    );
    println!("all {agents} agents registered and wrote their first env file in {:.0} ms", ms(started.elapsed()));

    let mut all_times = Vec::new();
    let mut each_times = Vec::new();
    for round in 0..WARM_UP_ROUNDS + rounds {
        let sent = Instant::now();
        client.put_instance(&provider(2000 + round as u16), PutOptions::default()).await?;
        let arrivals = wait_for_all(&mut events, agents).await.with_context(|| format!("round {round}"))?;
        if round >= WARM_UP_ROUNDS {
            each_times.extend(arrivals.iter().map(|at| *at - sent));
            all_times.push(arrivals.iter().max().map_or(Duration::ZERO, |last| *last - sent));
        }
    }
    all_times.sort_unstable();
    each_times.sort_unstable();

    let memory = idle_agent_rss(&url, dir.path()).await;
    println!();
    println!("{:<52} {:>8} {:>8} {:>8}", "one provider change", "p50 ms", "p99 ms", "target");
    println!(
        "{:<52} {:>8.1} {:>8.1} {:>8}",
        format!("until all {agents} env files are rewritten (per round)"),
        ms(percentile(&all_times, 0.50)),
        ms(percentile(&all_times, 0.99)),
        "< 250"
    );
    println!(
        "{:<52} {:>8.1} {:>8.1} {:>8}",
        "until one agent's env file is rewritten (each agent)",
        ms(percentile(&each_times, 0.50)),
        ms(percentile(&each_times, 0.99)),
        "-"
    );
    match memory {
        Ok(kib) => println!(
            "\nidle agent process (app-www, registered, watching): RSS {:.1} MiB (target < 20 MiB)",
            kib as f64 / 1024.0
        ),
        Err(e) => println!("\nidle agent RSS: not measured ({e:#})"),
    }
    Ok(())
}

/// The fake `api` instance every agent resolves READONLY_API_URL from.
fn provider(port: u16) -> Instance {
    Instance {
        service: "api".into(),
        id: "api-1".into(),
        machine: "api-1".into(),
        address: "127.0.0.2".into(),
        port,
        properties: Default::default(),
        health: Health::Passing,
        federation: "seatgeek".into(),
        public: false,
        provides: [("READONLY_API_URL".to_owned(), format!("http://127.0.0.2:{port}"))].into(),
    }
}

/// Waits until each of `agents` agents has rewritten app-www's env file once; returns when each did.
async fn wait_for_all(events: &mut mpsc::UnboundedReceiver<AgentEvent>, agents: usize) -> anyhow::Result<Vec<Instant>> {
    let mut seen = BTreeSet::new();
    let mut arrivals = Vec::with_capacity(agents);
    while seen.len() < agents {
        let event = tokio::time::timeout(ROUND_TIMEOUT, events.recv())
            .await
            .with_context(|| {
                format!("only {} of {agents} agents rewrote their env file within {ROUND_TIMEOUT:?}", seen.len())
            })?
            .context("the agents stopped")?;
        let AgentEvent::EnvWritten { machine, .. } = event else { continue };
        if seen.insert(machine) {
            arrivals.push(Instant::now());
        }
    }
    Ok(arrivals)
}

/// Starts one agent as its own process, lets it settle, reads its VmRSS (KiB).
async fn idle_agent_rss(url: &str, dir: &Path) -> anyhow::Result<u64> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args([AGENT_MODE, url])
        .arg(dir.join("rss-agent"))
        .kill_on_drop(true)
        .spawn()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = child.id().context("the agent exited")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let _ = child.kill().await;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/PID/status")
}
