//! Benchmark of issue 18: what observing the fleet costs.
//!
//! - render: an agent's `/metrics` with 50 services (each with a process,
//!   a check, usage), as its handler builds it: /proc read, text rendered;
//!   time per scrape and size, against the targets of 5 ms and 100 KiB.
//! - targets: `GET /v1/prometheus/targets` of a `gantry server` (embedded
//!   store, in this process, over HTTP) holding 10,000 passing instances
//!   of 100 services that declare `metrics` on 100 machines; against 50 ms.
//! - scraped: Debian's real Prometheus discovering targets from that
//!   server every 5 s and scraping every 5 s: from an instance written as
//!   passing to Prometheus' first scrape of it, p50/p99 against refresh +
//!   scrape interval + 1 s.
//! - cpu: the agent's CPU time per scrape (render, measured as this
//!   thread's CPU time) over a 15 s scrape interval, as a share of one
//!   core, against 0.5%.
//!
//! Run: `cargo run --release -p gantry-bench --bin bench-metrics [-- --trials 20]`
//! (needs `prometheus`: scripts/install-test-deps).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gantry_agent::metrics::{NodeSample, View, render};
use gantry_api::{Health, Instance, Machine};
use gantry_bench::{ms, percentile};
use gantry_client::{Client, PutOptions};
use gantry_store::{EmbeddedConfig, Store, StoreConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVICES: usize = 50;
const INSTANCES: usize = 10_000;
const REFRESH: Duration = Duration::from_secs(5);

fn main() -> anyhow::Result<()> {
    let Some(trials) = gantry_bench::trials_argument("bench-metrics", 20, 1000)? else { return Ok(()) };
    let (render_time, size, cpu) = bench_render();
    println!("{:<44} {:>12} {:>12} {:>8}", "what", "measured", "target", "ratio");
    row("agent /metrics, 50 services: render (p50)", ms(render_time), 5.0, "ms");
    row("agent /metrics, 50 services: size", size as f64 / 1024.0, 100.0, "KiB");
    let scrape_cpu = cpu.as_secs_f64() / 15.0 * 100.0;
    row("agent CPU, scraped every 15 s (% of a core)", scrape_cpu, 0.5, "%");
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(bench_server(trials))
}

fn row(what: &str, measured: f64, target: f64, unit: &str) {
    println!(
        "{what:<44} {:>12} {:>12} {:>7.2}x",
        format!("{measured:.3} {unit}"),
        format!("{target} {unit}"),
        measured / target
    );
}

/// A view of an agent running [`SERVICES`] services, each checked and measured.
fn fifty_services() -> View {
    let mut processes = serde_json::Map::new();
    let mut usage = BTreeMap::new();
    let mut services = BTreeMap::new();
    for i in 0..SERVICES {
        let name = format!("service-{i:02}");
        processes.insert(
            name.clone(),
            serde_json::json!({"port": 20000 + i, "health": "passing",
                "process": {"state": "running", "pid": 1000 + i, "restarts": i % 3, "last_exit": null,
                            "started_at_ms": 1_700_000_000_000u64, "next_start_in_ms": null, "problem": null},
                "check": {"healthy": true, "consecutive_failures": 0, "consecutive_passes": 40,
                          "last_output": "HTTP 200", "last_checked_ms": 1_700_000_009_000u64, "checks": 400,
                          "last_duration_ms": 2}}),
        );
        usage.insert(
            name.clone(),
            gantry_api::ProcessUsage { cpu_seconds: 12.5 + i as f64, cpu: 0.01, rss_mb: 40.0, processes: 1 },
        );
        services.insert(name.clone(), name);
    }
    let status = serde_json::json!({"machine": "bench-1", "group": "bench", "services": [], "problems": [],
        "processes": processes, "updated_at_ms": 0});
    View {
        status: Some(serde_json::from_value(status).expect("a status")),
        usage: Some(gantry_api::NodeUsage {
            machine: "bench-1".into(),
            cpu: 0.5,
            memory_mb: 1000,
            memory_total_mb: 4000,
            cpus: 2,
            load1: 0.5,
            processes: usage,
            measured_at_ms: 0,
        }),
        services,
        ..View::default()
    }
}

/// This thread's time on a CPU, in nanoseconds from the scheduler
/// (`/proc/thread-self/schedstat`: finer than the clock ticks of `stat`).
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(text.split_whitespace().next().and_then(|ns| ns.parse().ok()).unwrap_or(0))
}

/// p50 of the handler's work (read the node, render), the size, and the CPU per scrape.
fn bench_render() -> (Duration, usize, Duration) {
    let view = fifty_services();
    let data = std::env::temp_dir();
    let runs = 2000u32;
    let mut times = Vec::with_capacity(runs as usize);
    let mut size = 0;
    let cpu_before = thread_cpu();
    for _ in 0..runs {
        let started = Instant::now();
        let node = NodeSample::read(Path::new("/proc"), &data);
        let text = render(&view.now(), &node, gantry_api::now_ms());
        times.push(started.elapsed());
        size = text.len();
    }
    let cpu = (thread_cpu() - cpu_before) / runs;
    times.sort();
    (percentile(&times, 0.5), size, cpu)
}

async fn bench_server(trials: usize) -> anyhow::Result<()> {
    // reqwest's rustls has no crypto provider of its own in this build.
    gantry_tls::config::install_crypto_provider();
    let dir = tempfile::Builder::new().prefix("gantry-bench-metrics-").tempdir()?;
    let store = Store::open(StoreConfig::Embedded(EmbeddedConfig::in_dir(dir.path().join("server")))).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    // Filling 10,000 instances from one address: the limits count it, out of
    // their reach.
    let limits = gantry_server::Limits::out_of_reach();
    tokio::spawn(gantry_server::serve_limited(
        listener,
        store,
        gantry_server::Acl::off(),
        limits,
        std::future::pending(),
    ));
    let client = Client::new(&url);
    fill(&client).await?;
    let http = reqwest::Client::new();
    let mut times = Vec::new();
    let mut count = 0;
    for _ in 0..30 {
        let started = Instant::now();
        let body = http.get(format!("{url}/v1/prometheus/targets")).send().await?.error_for_status()?.bytes().await?;
        times.push(started.elapsed());
        let groups: Vec<gantry_api::TargetGroup> = serde_json::from_slice(&body)?;
        count = groups.len();
    }
    times.sort();
    if count != INSTANCES {
        bail!("{count} targets, {INSTANCES} expected");
    }
    row("/v1/prometheus/targets, 10,000 instances (p50)", ms(percentile(&times, 0.5)), 50.0, "ms");
    row("/v1/prometheus/targets, 10,000 instances (p99)", ms(percentile(&times, 0.99)), 50.0, "ms");
    let latencies = scraped(&client, &url, dir.path(), trials).await?;
    let target = ms(REFRESH * 2) + 1000.0;
    row("passing to scraped (p50)", ms(percentile(&latencies, 0.5)), target, "ms");
    row("passing to scraped (p99)", ms(percentile(&latencies, 0.99)), target, "ms");
    Ok(())
}

/// 100 machines, 100 services declaring metrics, 10,000 passing instances.
async fn fill(client: &Client) -> anyhow::Result<()> {
    for m in 0..100 {
        let machine = Machine {
            id: format!("m{m:03}"),
            hostname: format!("m{m:03}"),
            address: format!("10.0.{}.{}", m / 250, m % 250 + 1),
            facts: Default::default(),
            labels: BTreeMap::from([("group".into(), "bench".into()), ("region".into(), "local".into())]),
            updated_at: 0,
            capacity: None,
        };
        client.put_machine(&machine, PutOptions::default()).await?;
    }
    for s in 0..100 {
        client
            .put_service(&serde_json::from_value(
                serde_json::json!({"id": format!("svc-{s:02}"), "metrics": {"path": "/metrics"}}),
            )?)
            .await?;
    }
    let mut writes = Vec::new();
    for i in 0..INSTANCES {
        let m = i % 100;
        let instance =
            instance(&format!("svc-{:02}", i / 100), &format!("i{i}"), &format!("m{m:03}"), "10.0.0.1", 20000);
        let client = client.clone();
        writes.push(async move { client.put_instance(&instance, PutOptions::default()).await });
        if writes.len() == 64 {
            for result in futures::future::join_all(std::mem::take(&mut writes)).await {
                result?;
            }
        }
    }
    for result in futures::future::join_all(writes).await {
        result?;
    }
    Ok(())
}

fn instance(service: &str, id: &str, machine: &str, address: &str, port: u16) -> Instance {
    Instance {
        service: service.into(),
        id: id.into(),
        machine: machine.into(),
        address: address.into(),
        port,
        properties: BTreeMap::new(),
        health: Health::Passing,
        federation: gantry_api::DEFAULT_FEDERATION.into(),
        public: false,
        provides: BTreeMap::new(),
    }
}

/// Trials of an instance turning passing until Prometheus first scrapes it:
/// each a tiny HTTP server on a port of its own that notes its first request.
async fn scraped(client: &Client, url: &str, dir: &Path, trials: usize) -> anyhow::Result<Vec<Duration>> {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: {s}s\nscrape_configs:\n  - job_name: \"bench\"\n    http_sd_configs:\n      - url: \"{url}/v1/prometheus/targets\"\n        refresh_interval: {s}s\n    relabel_configs:\n      - source_labels: [service]\n        regex: \"bench\"\n        action: keep\n",
            s = REFRESH.as_secs()
        ),
    )?;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut prometheus = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting prometheus (install it with scripts/install-test-deps)")?;
    let machine = Machine {
        id: "bench-node".into(),
        hostname: "bench-node".into(),
        address: "127.0.0.1".into(),
        facts: Default::default(),
        labels: BTreeMap::new(),
        updated_at: 0,
        capacity: None,
    };
    client.put_machine(&machine, PutOptions::default()).await?;
    client
        .put_service(&serde_json::from_value(serde_json::json!({"id": "bench", "metrics": {"path": "/metrics"}}))?)
        .await?;
    let mut latencies = Vec::with_capacity(trials);
    let mut pending = Vec::new();
    for trial in 0..trials {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let first: Arc<Mutex<Option<Instant>>> = Arc::default();
        let seen = Arc::clone(&first);
        let server = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                seen.lock().expect("a lock").get_or_insert_with(Instant::now);
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                let body = "bench_up 1\n";
                let answer =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        let passing = Instant::now();
        client
            .put_instance(
                &instance("bench", &format!("t{trial}"), "bench-node", "127.0.0.1", port),
                PutOptions::default(),
            )
            .await?;
        pending.push((passing, first, server));
        // Trials start a second apart, so they fall at every phase of the refresh.
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let deadline = Instant::now() + REFRESH * 4 + Duration::from_secs(10);
    for (passing, first, server) in pending {
        loop {
            if let Some(at) = *first.lock().expect("a lock") {
                latencies.push(at - passing);
                break;
            }
            if Instant::now() > deadline {
                bail!("Prometheus never scraped a target within {:?}", deadline - passing);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.abort();
    }
    prometheus.kill().await.ok();
    latencies.sort();
    Ok(latencies)
}
