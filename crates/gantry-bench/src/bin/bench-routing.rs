//! Benchmark of issue 6: how soon traffic reaches an instance that turns
//! healthy, through a real haproxy on another node.
//!
//! Starts a `gantry server` (embedded store) and two agents in this process:
//! node A (127.0.0.2) runs `api`, checked over HTTP with the default check
//! settings except `fall 1` (so withdrawing between trials is quick), node B
//! (127.0.0.3) runs `www`, which requires `api`, with `--lb haproxy`. The
//! backend is this program's own HTTP server, so it decides when `/status`
//! passes. Each trial fails the check, waits until B's haproxy no longer
//! reaches A, makes the check pass, and times:
//! - published: until the agent publishes the instance as passing (the
//!   check's rise x interval is in here);
//! - routed: from published until a request through B's frontend reaches A
//!   (watch, plan, `haproxy -c`, reload), with the part spent in haproxy's
//!   check and reload reported by B's agent.
//!
//! Run: `cargo run --release -p gantry-bench --bin bench-routing [-- --trials 100]`
//! (about 2.5 s a trial with the default 1 s check interval).
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use gantry_agent::agent::{AgentConfig, AgentEvent, run};
use gantry_agent::lb::LbKind;
use gantry_api::{Health, Instance, WatchKind, keys};
use gantry_bench::{ms, percentile};
use gantry_client::{Client, WatchItem};
use gantry_store::{EmbeddedConfig, Store, StoreConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const API_PORT: u16 = 18701;
const FRONTEND: &str = "127.0.0.3:18700";
const TRIAL_TIMEOUT: Duration = Duration::from_secs(15);

fn main() -> anyhow::Result<()> {
    let Some(trials) = gantry_bench::trials_argument("bench-routing", 100, 10_000)? else { return Ok(()) };
    if gantry_agent::lb::haproxy::Haproxy::find_binary().is_none() {
        bail!("haproxy is not installed: run scripts/install-test-deps (or `apt-get install haproxy`)");
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(bench(trials))
}

async fn bench(trials: usize) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("gantry-bench-routing-").tempdir()?;
    let store = Store::open(StoreConfig::Embedded(EmbeddedConfig::in_dir(dir.path().join("server")))).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(gantry_server::serve(listener, store, gantry_server::Acl::off(), std::future::pending()));
    let client = Client::new(&url);
    client
        .put_service(&serde_json::from_value(serde_json::json!({
            "id": "api", "command": true, "environment": {"PORT": API_PORT},
            "provides": {"API_URL": "http://{HOST}:{PORT}"}, "local_port": 18700,
            "check": {"type": "http", "path": "/status", "fall": 1}
        }))?)
        .await?;
    client
        .put_service(&serde_json::from_value(serde_json::json!({
            "id": "www", "command": true, "environment": {"PORT": 18702}, "requires": {"API": "{API_URL}"}
        }))?)
        .await?;

    let healthy = Arc::new(AtomicBool::new(true));
    let backend =
        tokio::net::TcpListener::bind(("127.0.0.2", API_PORT)).await.context("binding the api backend on 127.0.0.2")?;
    tokio::spawn(serve_backend(backend, healthy.clone()));

    let (events_tx, mut events) = mpsc::unbounded_channel();
    for (name, address, service, lb) in
        [("api-node", [127, 0, 0, 2], "api", LbKind::Off), ("www-node", [127, 0, 0, 3], "www", LbKind::Haproxy)]
    {
        let mut config = AgentConfig::new(url.clone(), dir.path().join(name));
        config.machine_id = Some(name.into());
        config.services = vec![service.into()];
        config.address = Some(address.into());
        config.lb = lb;
        config.log = false;
        config.events = Some(events_tx.clone());
        tokio::spawn(async move {
            if let Err(e) = run(config, std::future::pending()).await {
                eprintln!("agent {name}: {e}");
            }
        });
    }
    let mut passing = health_watch(&client).await?;
    wait_until("the frontend reaches api", || async { reaches_api().await }).await?;
    println!(
        "gantry bench-routing: api on 127.0.0.2 (check: http, interval 1s, timeout 500ms, rise 2, fall 1), www on 127.0.0.3 with haproxy; {trials} trials"
    );

    let (mut published, mut routed, mut haproxy) = (Vec::new(), Vec::new(), Vec::new());
    for trial in 0..trials {
        healthy.store(false, Ordering::SeqCst);
        wait_until("api leaves the backend", || async { !reaches_api().await })
            .await
            .with_context(|| format!("trial {trial}"))?;
        while events.try_recv().is_ok() {}
        while passing.try_recv().is_ok() {}
        let ready = Instant::now();
        healthy.store(true, Ordering::SeqCst);
        let published_at = tokio::time::timeout(TRIAL_TIMEOUT, passing.recv())
            .await
            .context("api never published as passing")?
            .context("watch ended")?;
        wait_until("api is reached through haproxy", || async { reaches_api().await })
            .await
            .with_context(|| format!("trial {trial}"))?;
        let routed_at = Instant::now();
        // The new worker serves before the agent has confirmed the reload:
        // B's report of this apply may come a little after the first request.
        let spent = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(event) = events.recv().await {
                if let AgentEvent::LbApplied { machine, plan, applied } = event
                    && machine == "www-node"
                    && plan.frontends.iter().any(|f| !f.backends.is_empty())
                {
                    return Duration::from_micros(applied.check_us + applied.reload_us);
                }
            }
            Duration::ZERO
        })
        .await
        .context("www-node never reported applying the plan with api in it")?;
        published.push(published_at - ready);
        routed.push(routed_at.saturating_duration_since(published_at));
        haproxy.push(spent);
    }
    for v in [&mut published, &mut routed, &mut haproxy] {
        v.sort_unstable();
    }
    println!();
    println!("{:<56} {:>8} {:>8} {:>8}", "", "p50 ms", "p99 ms", "target");
    let row = |what: &str, v: &[Duration], target: &str| {
        println!("{what:<56} {:>8.1} {:>8.1} {target:>8}", ms(percentile(v, 0.5)), ms(percentile(v, 0.99)));
    };
    row("check passes -> instance published (rise 2 x 1 s)", &published, "-");
    row("published -> first request through haproxy on B", &routed, "< 1000");
    row("  haproxy -c + reload (confirmed) on B", &haproxy, "-");
    let total: Vec<Duration> = {
        let mut t: Vec<Duration> = published.iter().zip(&routed).map(|(a, b)| *a + *b).collect();
        t.sort_unstable();
        t
    };
    row("check passes -> first request through haproxy (total)", &total, "-");
    let share =
        haproxy.iter().sum::<Duration>().as_secs_f64() / routed.iter().sum::<Duration>().as_secs_f64().max(1e-9);
    println!(
        "\nhaproxy -c + confirmed reload, summed, is {:.0}% of published -> routed (the confirmation ends after the new worker already serves)",
        share * 100.0
    );
    Ok(())
}

/// Sends the instant of every change of api's instance to passing.
async fn health_watch(client: &Client) -> anyhow::Result<mpsc::UnboundedReceiver<Instant>> {
    let mut stream = Box::pin(client.watch(&keys::instances_of("api"), 0, None).await?);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut was = Health::Unknown;
        while let Some(Ok(item)) = stream.next().await {
            let WatchItem::Event { event, .. } = item else { continue };
            let now = match (event.kind, event.value.as_deref().and_then(|v| serde_json::from_str::<Instance>(v).ok()))
            {
                (WatchKind::Put, Some(instance)) => instance.health,
                _ => Health::Unknown,
            };
            if now == Health::Passing && was != Health::Passing && tx.send(Instant::now()).is_err() {
                break;
            }
            was = now;
        }
    });
    Ok(rx)
}

/// The api backend: `/status` answers 200 while `healthy`, else 500; `/` answers "api".
async fn serve_backend(listener: tokio::net::TcpListener, healthy: Arc<AtomicBool>) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let healthy = healthy.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let Ok(n) = stream.read(&mut buf).await else { return };
            let request = String::from_utf8_lossy(&buf[..n]);
            let ok = !request.starts_with("GET /status") || healthy.load(Ordering::SeqCst);
            let answer: &[u8] = if ok {
                b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\napi\n"
            } else {
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            };
            let _ = stream.write_all(answer).await;
        });
    }
}

/// One request through B's frontend: whether api answered it.
async fn reaches_api() -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(FRONTEND).await.ok()?;
        stream.write_all(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n").await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        Some(answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200"))
    };
    tokio::time::timeout(Duration::from_secs(1), attempt).await.ok().flatten().unwrap_or(false)
}

/// Polls `check` every 2 ms until it holds.
async fn wait_until<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + TRIAL_TIMEOUT;
    while !check().await {
        if Instant::now() > deadline {
            bail!("timed out after {TRIAL_TIMEOUT:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}
