//! `bench-ha`: what an etcd member fault costs (issue 19). A real 3-member
//! etcd on loopback; two load loops run side by side against it, each 16
//! writers putting new keys: Gantry's store (`--store etcd://A,B,C`, its
//! member pool and retry rule) and etcd's own Rust client (`etcd-client`
//! given all three endpoints, as an application would use it). Under the
//! same fault, for each: throughput before, the error window (first to
//! last failed request, from the fault), the time until throughput is back
//! to 80% of before, and throughput after.
//!
//! Faults, in order on one cluster: kill a follower, restart it, kill the
//! leader, restart it, SIGSTOP the leader for 5 s then SIGCONT.
//!
//! `cargo run --release -p gantry-bench --bin bench-ha [-- --writers N --observe SECONDS]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use gantry_store::local_etcd::{LocalEtcdCluster, LocalEtcdOptions};
use gantry_store::{EtcdConfig, Store};

/// Width of one throughput bucket.
const BUCKET: Duration = Duration::from_millis(100);
/// Throughput is judged over sliding windows this wide.
const WINDOW_BUCKETS: usize = 5;

/// Outcomes of one load loop, by bucket since the loop began.
#[derive(Default, Clone)]
struct Timeline {
    ok: Vec<u32>,
    failed: Vec<u32>,
    /// Instants of failures, for the error window.
    failures: Vec<Instant>,
}

impl Timeline {
    fn record(&mut self, start: Instant, ok: bool) {
        let now = Instant::now();
        let bucket = (now.duration_since(start).as_millis() / BUCKET.as_millis()) as usize;
        for list in [&mut self.ok, &mut self.failed] {
            if list.len() <= bucket {
                list.resize(bucket + 1, 0);
            }
        }
        if ok {
            self.ok[bucket] += 1;
        } else {
            self.failed[bucket] += 1;
            self.failures.push(now);
        }
    }

    fn merge(&mut self, other: &Timeline) {
        for (mine, theirs) in [(&mut self.ok, &other.ok), (&mut self.failed, &other.failed)] {
            if mine.len() < theirs.len() {
                mine.resize(theirs.len(), 0);
            }
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a += b;
            }
        }
        self.failures.extend(&other.failures);
    }
}

/// Who is writing.
#[derive(Clone)]
enum Subject {
    Gantry(Store),
    EtcdClient(Box<etcd_client::Client>),
}

impl Subject {
    async fn put(&mut self, key: String, value: String) -> bool {
        let attempt = async {
            match self {
                Subject::Gantry(store) => store.put(&key, value).await.is_ok(),
                Subject::EtcdClient(client) => client.put(key, value, None).await.is_ok(),
            }
        };
        // A request that hangs counts as failed after 10 s (the loop must go on).
        tokio::time::timeout(Duration::from_secs(10), attempt).await.unwrap_or(false)
    }
}

async fn load(subject: Subject, name: &'static str, writers: usize, start: Instant, stop: Arc<AtomicBool>) -> Timeline {
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (mut subject, stop) = (subject.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut timeline = Timeline::default();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(600) {
                    n += 1;
                    let ok = subject.put(format!("bench/{name}/{w}/{n}"), format!("v{n}")).await;
                    timeline.record(start, ok);
                }
                timeline
            })
        })
        .collect();
    let mut all = Timeline::default();
    for task in tasks {
        if let Ok(timeline) = task.await {
            all.merge(&timeline);
        }
    }
    all
}

/// The member that leads now (waits up to 5 s for one).
async fn leader_of(cluster: &LocalEtcdCluster) -> anyhow::Result<usize> {
    for _ in 0..50 {
        if let Some(leader) = cluster.leader().await {
            return Ok(leader);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("no leader for 5 s")
}

/// One subject's numbers for one fault.
struct Row {
    before: f64,
    error_window: Option<(Duration, Duration)>,
    back_to_80: Option<Duration>,
    after: f64,
    failed: u32,
}

fn rate(buckets: &[u32], from: usize, to: usize) -> f64 {
    let to = to.min(buckets.len());
    if to <= from {
        return 0.0;
    }
    buckets[from..to].iter().map(|&n| f64::from(n)).sum::<f64>() / ((to - from) as f64 * BUCKET.as_secs_f64())
}

fn judge(timeline: &Timeline, start: Instant, fault: Instant, steady: Duration, observe: Duration) -> Row {
    let at = |instant: Instant| (instant.duration_since(start).as_millis() / BUCKET.as_millis()) as usize;
    let fault_bucket = at(fault);
    let steady_buckets = (steady.as_millis() / BUCKET.as_millis()) as usize;
    let end_bucket = at(fault + observe);
    let before = rate(&timeline.ok, fault_bucket.saturating_sub(steady_buckets), fault_bucket);
    let failures: Vec<Instant> =
        timeline.failures.iter().copied().filter(|f| *f >= fault && *f <= fault + observe).collect();
    let error_window = failures
        .iter()
        .min()
        .zip(failures.iter().max())
        .map(|(first, last)| (first.duration_since(fault), last.duration_since(fault)));
    let back_to_80 = (fault_bucket..end_bucket.saturating_sub(WINDOW_BUCKETS))
        .find(|&b| rate(&timeline.ok, b, b + WINDOW_BUCKETS) >= 0.8 * before)
        .map(|b| BUCKET * (b + WINDOW_BUCKETS - fault_bucket) as u32);
    let after = rate(&timeline.ok, end_bucket.saturating_sub(steady_buckets), end_bucket);
    let failed =
        timeline.failed[fault_bucket.min(timeline.failed.len())..end_bucket.min(timeline.failed.len())].iter().sum();
    Row { before, error_window, back_to_80, after, failed }
}

fn show(row: &Row) -> String {
    let window =
        row.error_window.map_or("none".to_owned(), |(a, b)| format!("{:.2}-{:.2} s", a.as_secs_f64(), b.as_secs_f64()));
    let back = row.back_to_80.map_or("never".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
    format!("{:>7.0}/s {:>6} {:>13} {:>7} {:>7.0}/s", row.before, row.failed, window, back, row.after)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let mut writers = 16usize;
    let mut observe = Duration::from_secs(6);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--writers" => writers = args.next().context("--writers N")?.parse()?,
            "--observe" => observe = Duration::from_secs(args.next().context("--observe SECONDS")?.parse()?),
            other => anyhow::bail!("unknown argument {other:?}: use --writers N, --observe SECONDS"),
        }
    }
    let steady = Duration::from_secs(2);
    let mut cluster =
        LocalEtcdCluster::start(3, LocalEtcdOptions::default()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = Store::connect_etcd(EtcdConfig::new(cluster.endpoints())).await?;
    let options = etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
    let etcd = etcd_client::Client::connect(cluster.endpoints(), Some(options)).await?;

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let gantry_load = tokio::spawn(load(Subject::Gantry(store.clone()), "gantry", writers, start, Arc::clone(&stop)));
    let etcd_load = tokio::spawn(load(Subject::EtcdClient(Box::new(etcd)), "etcd", writers, start, Arc::clone(&stop)));

    let mut faults: Vec<(String, Instant)> = Vec::new();
    tokio::time::sleep(steady).await;
    let follower = (leader_of(&cluster).await? + 1) % 3;
    faults.push((format!("kill follower m{follower}"), Instant::now()));
    cluster.kill(follower);
    tokio::time::sleep(observe).await;
    faults.push((format!("restart m{follower}"), Instant::now()));
    cluster.restart(follower).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    tokio::time::sleep(observe).await;
    let killed = leader_of(&cluster).await?;
    faults.push((format!("kill leader m{killed}"), Instant::now()));
    cluster.kill(killed);
    tokio::time::sleep(observe).await;
    faults.push((format!("restart m{killed}"), Instant::now()));
    cluster.restart(killed).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    tokio::time::sleep(observe).await;
    let stopped = leader_of(&cluster).await?;
    faults.push((format!("SIGSTOP leader m{stopped} 5 s"), Instant::now()));
    cluster.signal(stopped, "STOP").map_err(|e| anyhow::anyhow!("{e}"))?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.signal(stopped, "CONT").map_err(|e| anyhow::anyhow!("{e}"))?;
    tokio::time::sleep(observe).await;
    stop.store(true, Ordering::Relaxed);
    let gantry = gantry_load.await?;
    let etcd = etcd_load.await?;

    println!("bench-ha: 3-member etcd on loopback, {writers} writers per client (new keys, plain puts), both at once");
    println!(
        "error window: first-last failed request after the fault; back to 80%: first {}-ms window at >= 80% of before",
        WINDOW_BUCKETS as u128 * BUCKET.as_millis()
    );
    println!(
        "{:<26} | {:<9} {:>6} {:>13} {:>7} {:>9} | {:<9} {:>6} {:>13} {:>7} {:>9}",
        "fault",
        "gantry",
        "failed",
        "error window",
        "80% at",
        "after",
        "etcd-cl",
        "failed",
        "error window",
        "80% at",
        "after"
    );
    for (what, at) in &faults {
        let observe = if what.starts_with("SIGSTOP") { observe + Duration::from_secs(5) } else { observe };
        let g = judge(&gantry, start, *at, steady, observe);
        let e = judge(&etcd, start, *at, steady, observe);
        println!("{what:<26} | {} | {}", show(&g), show(&e));
    }
    if let Some(stats) = store.etcd_stats() {
        println!(
            "gantry pool: {} failovers, {} retries, {} unknown outcomes",
            stats.failovers, stats.retries, stats.unknown_outcomes
        );
    }
    Ok(())
}
