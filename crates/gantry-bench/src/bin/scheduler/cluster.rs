//! The parts of `bench-scheduler` that run a real cluster: `endtoend`
//! (placements per second through a `gantry server` process, on its
//! embedded store and on etcd) and `nodeloss` (a node SIGKILLed to its
//! work's replacement passing its check, with real `gantry agent`
//! processes). Both run the `gantry` binary built beside this one
//! (`cargo build --release -p gantry`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use gantry_api::{CapacitySource, DesiredState, Health, Machine, NodeCapacity, Resources, ServiceDefinition};
use gantry_bench::processes::{Agent, Server, kill_group, until};
use gantry_bench::{ms, percentile};
use gantry_client::{Client, PutOptions};
use gantry_store::local_etcd::LocalEtcd;

use crate::{K8S_HIGH, K8S_LOW, NOMAD_C2M};

const STATUS_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../gantry/tests/fixtures/status_server.py");

/// A simulated node: a machine record with a configured capacity, no agent.
fn simulated(i: usize) -> Machine {
    Machine {
        id: format!("sim-{i:05}"),
        hostname: format!("sim-{i:05}"),
        address: format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
        facts: Default::default(),
        labels: BTreeMap::from([("rack".to_owned(), format!("rack-{:02}", i % 50))]),
        updated_at: 0,
        capacity: Some(NodeCapacity {
            total: Resources { cpu: 4.0, memory_mb: 8192 },
            source: CapacitySource::Configured,
            reserved: Resources::ZERO,
            scheduled_only: true,
        }),
    }
}

fn service(value: serde_json::Value) -> anyhow::Result<ServiceDefinition> {
    serde_json::from_value(value).context("a service definition")
}

/// One row of part 2: services of `counts` PUT at once; the time from the
/// first PUT until every one's evaluation says all placed.
struct Row {
    services: usize,
    allocs: u32,
    took: Duration,
    /// Whether GET /v1/allocations listed them all (or why it failed).
    listed: Result<(), String>,
}

async fn place(client: &Client, round: usize, counts: &[u32]) -> anyhow::Result<Row> {
    let definitions = counts
        .iter()
        .enumerate()
        .map(|(i, count)| {
            service(serde_json::json!({
                "id": format!("bench-{round}-{i}"),
                "command": ["sleep", "3600"],
                "count": count,
                "resources": {"cpu": 0.1, "memory_mb": 64},
            }))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let wanted: BTreeMap<String, u32> = definitions.iter().map(|d| d.id.clone()).zip(counts.iter().copied()).collect();
    let start = Instant::now();
    futures::future::try_join_all(definitions.iter().map(|d| client.put_service(d))).await?;
    until("every allocation placed", Duration::from_secs(300), || async {
        let jobs = client.jobs().await?.items;
        let placed = wanted
            .iter()
            .all(|(id, count)| jobs.iter().any(|j| &j.service == id && j.placed == *count && j.desired == *count));
        Ok::<_, anyhow::Error>(placed.then_some(()))
    })
    .await?;
    let took = start.elapsed();
    // Counted in the store, not only as the evaluation says.
    let total: u32 = counts.iter().sum();
    let listed = match client.allocations().await {
        Ok(listing) => {
            let written = listing
                .items
                .iter()
                .filter(|a| wanted.contains_key(&a.service) && a.desired == DesiredState::Run)
                .count();
            anyhow::ensure!(written == total as usize, "{written} allocations written, {total} wanted");
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    };
    Ok(Row { services: counts.len(), allocs: total, took, listed })
}

/// Part 2: placements per second through a `gantry server`.
pub async fn endtoend(nodes: usize) -> anyhow::Result<()> {
    println!(
        "endtoend: a `gantry server` process (its scheduler, the API, the store); {nodes} simulated nodes \
         (machine records, 4 cores / 8 GB, written through the API); services of 0.1 core / 64 MB PUT at once, \
         timed until the jobs API says every allocation is placed (then counted in GET /v1/allocations)"
    );
    println!(
        "{:>9} {:>9} {:>8} {:>9} {:>13} {:>12} {:>16}",
        "store", "services", "allocs", "seconds", "placements/s", "x Nomad C2M", "x k8s sched_perf"
    );
    let mut worst = f64::INFINITY;
    for store in ["embedded", "etcd"] {
        let dir = tempfile::tempdir()?;
        let etcd = match store {
            "etcd" => Some(LocalEtcd::start().await.context("starting etcd (apt-get install etcd-server)")?),
            _ => None,
        };
        let store_arg = match &etcd {
            Some(etcd) => format!("etcd://{}", etcd.endpoint().trim_start_matches("http://")),
            None => "embedded".to_owned(),
        };
        let server = Server::start(&dir.path().join("server"), &store_arg)?;
        let client = server.client();
        let written = Instant::now();
        let mut puts = futures::stream::iter(0..nodes)
            .map(|i| {
                let client = &client;
                async move { client.put_machine(&simulated(i), PutOptions::default()).await }
            })
            .buffer_unordered(32);
        while let Some(result) = puts.next().await {
            result?;
        }
        drop(puts);
        eprintln!("  {store}: {nodes} machine records written in {:.1} s", written.elapsed().as_secs_f64());
        // Let the scheduler's evaluations of the new nodes finish.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let shapes: [&[u32]; 4] = [&[1000], &[5000], &[1000; 10], &[10_000]];
        for (round, counts) in shapes.iter().enumerate() {
            let row = place(&client, round, counts).await?;
            let rate = f64::from(row.allocs) / row.took.as_secs_f64();
            worst = worst.min(rate);
            println!(
                "{store:>9} {:>9} {:>8} {:>9.2} {rate:>13.0} {:>12.2} {:>16}",
                row.services,
                row.allocs,
                row.took.as_secs_f64(),
                rate / NOMAD_C2M,
                format!("{:.1}-{:.1}", rate / K8S_HIGH, rate / K8S_LOW),
            );
            if let Err(e) = row.listed {
                println!("{store:>9} placed as the jobs API says, but GET /v1/allocations failed: {e}; stopping");
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        drop(server);
        drop(etcd);
    }
    println!(
        "slowest row {worst:.0} placements/s: target >= 2,000 {}",
        if worst >= 2000.0 { "met" } else { "NOT met" }
    );
    println!(
        "anchors: Nomad C2M 1,500 containers/s (3 schedulers); k8s scheduler_perf 680-810 pods/s at 5,000 nodes\n"
    );
    Ok(())
}

/// A nodeloss agent's flags beside its machine id.
fn node_args(address: &str) -> [&str; 4] {
    ["--address", address, "--capacity", "cpu=2,memory_mb=450"]
}

/// The running worker allocation whose instance passes its check, as
/// (allocation id, machine), if exactly one runs and passes.
async fn passing_worker(client: &Client) -> anyhow::Result<Option<(String, String)>> {
    let running: Vec<_> = client
        .allocations()
        .await?
        .items
        .into_iter()
        .filter(|a| a.service == "worker" && a.desired == DesiredState::Run)
        .collect();
    let [alloc] = running.as_slice() else { return Ok(None) };
    let instances = client.service_instances("worker", &[]).await?.items;
    let passes = instances.iter().any(|i| i.id == alloc.id && i.health == Health::Passing);
    Ok(passes.then(|| (alloc.id.clone(), alloc.machine.clone())))
}

/// Part 4: node loss to a replacement passing its check.
pub async fn nodeloss(trials: usize) -> anyhow::Result<()> {
    println!(
        "nodeloss: one `gantry server` (embedded store), 3 `gantry agent` processes (--capacity cpu=2,memory_mb=450, \
         default lease TTL 5 s), one worker (count 1, HTTP check every 200 ms, rise 1); per trial the agent \
         holding it and the worker's process group are SIGKILLed, timed until a replacement passes elsewhere; \
         the dead agent is restarted between trials"
    );
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), "embedded")?;
    let client = server.client();
    client
        .put_service(&service(serde_json::json!({
            "id": "worker",
            "command": ["python3", STATUS_SERVER],
            "count": 1,
            "resources": {"cpu": 0.25, "memory_mb": 200},
            "check": {"type": "http", "path": "/status", "interval": "200ms", "timeout": "150ms", "rise": 1, "fall": 2}
        }))?)
        .await?;
    let names = ["n1", "n2", "n3"];
    let address = |i: usize| format!("127.0.0.{}", 51 + i);
    let mut agents = Vec::new();
    for (i, name) in names.iter().enumerate() {
        agents.push(Agent::start(&server, dir.path(), name, None, &node_args(&address(i)))?);
    }
    let mut times = Vec::new();
    for trial in 1..=trials {
        let (alloc, machine) =
            until("the worker runs and passes", Duration::from_secs(60), || passing_worker(&client)).await?;
        let index = names.iter().position(|n| *n == machine).context("the worker's node is one of ours")?;
        let victims: Vec<u32> = client
            .agent_status(&machine)
            .await?
            .map(|s| s.processes.values().filter_map(|p| p.process.as_ref()?.pid).collect())
            .unwrap_or_default();
        let died = Instant::now();
        agents[index].kill();
        for &pid in &victims {
            kill_group(pid);
        }
        let replaced = until("a replacement passes elsewhere", Duration::from_secs(60), || async {
            Ok::<_, anyhow::Error>(passing_worker(&client).await?.filter(|(id, node)| *id != alloc && *node != machine))
        })
        .await?;
        let took = died.elapsed();
        eprintln!(
            "  trial {trial:>2}: {machine} lost, {} passing on {} after {:.2} s",
            replaced.0,
            replaced.1,
            took.as_secs_f64()
        );
        times.push(took);
        agents[index] = Agent::start(&server, dir.path(), &machine, None, &node_args(&address(index)))?;
        until("the restarted node registers", Duration::from_secs(30), || async {
            Ok::<_, anyhow::Error>(client.machine(&machine).await.ok())
        })
        .await?;
    }
    // SIGTERM, so the agents stop the worker they run (SIGKILL would leave it).
    Agent::stop_all(agents);
    times.sort();
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    println!("{:>7} {:>9} {:>9} {:>9} {:>9}", "trials", "min ms", "p50 ms", "p99 ms", "max ms");
    println!(
        "{trials:>7} {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
        ms(times[0]),
        ms(p50),
        ms(p99),
        ms(*times.last().context("at least one trial")?)
    );
    println!(
        "p99 {:.1} s: target < 10 s {}\n",
        p99.as_secs_f64(),
        if p99 < Duration::from_secs(10) { "met" } else { "NOT met" }
    );
    Ok(())
}
