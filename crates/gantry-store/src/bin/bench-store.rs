//! `bench-store`: durable write throughput and latency, and watch fan-out,
//! for Gantry's embedded engine, Gantry on etcd, and etcd itself, side by
//! side on this machine. Starts its own etcd; every loop is bounded.
//!
//! Run: `cargo run --release -p gantry-store --bin bench-store [-- --seconds N]`

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gantry_store::local_etcd::LocalEtcd;
use gantry_store::{Bytes, EmbeddedConfig, EtcdConfig, Store};

/// The value written by every put, as the issue asks: 256 bytes.
const VALUE_BYTES: usize = 256;
/// Most puts one measurement makes, whatever its duration.
const MAX_PUTS: u64 = 500_000;
const WATCHERS: usize = 1_000;
const FAN_OUT_ROUNDS: usize = 50;
/// Longest wait for all watchers to see one write.
const FAN_OUT_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let seconds = parse_seconds()?;
    let duration = Duration::from_secs_f64(seconds);
    let etcd = LocalEtcd::start().await?;
    let dir = scratch_dir()?;
    let embedded = Store::open_embedded(EmbeddedConfig::in_dir(&dir)).await?;
    let on_etcd = Store::connect_etcd(EtcdConfig::new([etcd.endpoint()])).await?;
    let direct = etcd_client::Client::connect([etcd.endpoint()], None).await?;
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);

    println!(
        "bench-store: {VALUE_BYTES} B values, {seconds} s per measurement, fsync on every commit"
    );
    println!(
        "etcd {} (data in {}), embedded file in {}",
        etcd.endpoint(),
        std::env::temp_dir().display(),
        dir.display()
    );
    println!();
    println!(
        "{:<28} {:>8} {:>12} {:>10} {:>10} {:>9}",
        "durable puts", "clients", "puts/s", "p50 ms", "p99 ms", "vs etcd"
    );
    for clients in [1, 64] {
        let gantry = measure(clients, duration, store_put(&embedded, "e", &value)).await?;
        let gantry_etcd = measure(clients, duration, store_put(&on_etcd, "g", &value)).await?;
        let kv = direct.kv_client();
        let value_d = value.to_vec();
        let etcd_direct = measure(clients, duration, move |client, i| {
            let (mut kv, value) = (kv.clone(), value_d.clone());
            async move {
                kv.put(format!("bench/d/{client}/{i}"), value, None)
                    .await
                    .map(drop)
                    .map_err(Into::into)
            }
        })
        .await?;
        for (name, result) in [
            ("gantry embedded", &gantry),
            ("gantry on etcd", &gantry_etcd),
            ("etcd direct (etcd-client)", &etcd_direct),
        ] {
            println!(
                "{:<28} {:>8} {:>12.0} {:>10.2} {:>10.2} {:>8.2}x",
                name,
                clients,
                result.per_second,
                millis(result.p50),
                millis(result.p99),
                result.per_second / etcd_direct.per_second
            );
        }
    }

    println!();
    println!(
        "{:<28} {:>8} {:>12} {:>10} {:>10}",
        "watch fan-out", "watchers", "rounds", "p50 ms", "p99 ms"
    );
    for (name, store) in [("gantry embedded", &embedded), ("gantry on etcd", &on_etcd)] {
        let (rounds, p50, p99) = fan_out(store).await?;
        println!(
            "{:<28} {:>8} {:>12} {:>10.2} {:>10.2}",
            name,
            WATCHERS,
            rounds,
            millis(p50),
            millis(p99)
        );
    }
    println!();
    println!(
        "fan-out: time from the write's acknowledgement until all {WATCHERS} watchers of the prefix got the event"
    );

    embedded.close().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// One put through the store API, under `bench/<tag>/`.
fn store_put(
    store: &Store,
    tag: &'static str,
    value: &Bytes,
) -> impl Fn(usize, u64) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>
+ Clone
+ Send
+ 'static {
    let (store, value) = (store.clone(), value.clone());
    move |client, i| {
        let (store, value) = (store.clone(), value.clone());
        Box::pin(async move {
            store
                .put(&format!("bench/{tag}/{client}/{i}"), value)
                .await?;
            Ok(())
        })
    }
}

struct Measured {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// Runs `clients` concurrent loops of `put` for `duration` (or
/// [`MAX_PUTS`] in all), each timing every call.
async fn measure<F, Fut>(clients: usize, duration: Duration, put: F) -> anyhow::Result<Measured>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let deadline = started + duration;
    let budget = MAX_PUTS / clients as u64;
    let mut tasks = Vec::new();
    for client in 0..clients {
        let put = put.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in 0..budget {
                if Instant::now() >= deadline {
                    break;
                }
                let before = Instant::now();
                put(client, i).await?;
                latencies.push(before.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(Measured {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
    })
}

/// [`WATCHERS`] watchers on one prefix; each round writes one key and times
/// until every watcher has it. Returns (rounds, p50, p99).
async fn fan_out(store: &Store) -> anyhow::Result<(usize, Duration, Duration)> {
    let prefix = format!("fan/{}/", std::process::id());
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let mut watch = store.watch(&prefix, 0).await?;
        let seen_tx = seen_tx.clone();
        watchers.push(tokio::spawn(async move {
            while let Some(Ok(event)) = watch.next_event().await {
                if seen_tx.send((event.mod_revision, Instant::now())).is_err() {
                    return;
                }
            }
        }));
    }
    drop(seen_tx);
    let mut times = Vec::new();
    for round in 0..FAN_OUT_ROUNDS {
        let revision = store
            .put(&format!("{prefix}key"), round.to_string())
            .await?;
        let acknowledged = Instant::now();
        let mut last = acknowledged;
        let mut notified = 0;
        while notified < WATCHERS {
            let (event_revision, at) = tokio::time::timeout(FAN_OUT_TIMEOUT, seen.recv())
                .await
                .context("watchers were not all notified in time")?
                .context("the watchers stopped")?;
            if event_revision == revision {
                notified += 1;
                last = last.max(at);
            }
        }
        times.push(last - acknowledged);
    }
    for watcher in watchers {
        watcher.abort();
    }
    times.sort_unstable();
    Ok((
        times.len(),
        percentile(&times, 0.50),
        percentile(&times, 0.99),
    ))
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn parse_seconds() -> anyhow::Result<f64> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(3.0),
        [flag, value] if flag == "--seconds" => {
            let seconds: f64 = value.parse().context("--seconds takes a number")?;
            anyhow::ensure!(
                (0.1..=60.0).contains(&seconds),
                "--seconds must be between 0.1 and 60"
            );
            Ok(seconds)
        }
        _ => anyhow::bail!("usage: bench-store [--seconds N]"),
    }
}

fn scratch_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("gantry-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
