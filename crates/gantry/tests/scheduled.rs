//! Scheduled services (issue 16) with real agents: a service with a
//! `count` is placed by the server's scheduler on the nodes with room for
//! it, runs there on ports of its own, is replaced elsewhere when its node
//! dies, and is not doubled when the node comes back; one that fits
//! nowhere stays pending with the reason.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gantry_api::{Allocation, DesiredState, Health, JobStatus};

use super::{AgentProcess, ServerProcess, alive, block_on, eventually, gantry};

const STATUS_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/status_server.py");

/// A repository with no static services: `worker` (count 3, 200 MB each,
/// checked) and `big` (needs more memory than any node has).
fn write_repo(dir: &Path) {
    let worker = serde_json::json!({
        "id": "worker",
        "command": ["python3", STATUS_SERVER],
        "count": 3,
        "resources": {"cpu": 0.25, "memory_mb": 200},
        "provides": {"WORKER_URL": "http://{HOST}:{PORT}"},
        "check": {"type": "http", "path": "/status", "interval": "200ms", "timeout": "150ms", "rise": 1, "fall": 2}
    });
    let big = serde_json::json!({
        "id": "big",
        "command": ["python3", STATUS_SERVER],
        "count": 1,
        "resources": {"cpu": 0.5, "memory_mb": 1000}
    });
    let files = [
        ("nodes.json", r#"{"__base__": {"run_list": []}, "base": {"run_list": []}}"#.to_owned()),
        ("data_bags/service/worker.json", worker.to_string()),
        ("data_bags/service/big.json", big.to_string()),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

fn allocations(server: &ServerProcess) -> Vec<Allocation> {
    let out = gantry(server, &["alloc:list", "--all", "--json"]).ok();
    let views: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    views
        .into_iter()
        .map(|mut v| {
            v.as_object_mut().unwrap().remove("report");
            serde_json::from_value(v).unwrap()
        })
        .collect()
}

fn running(server: &ServerProcess, service: &str) -> Vec<Allocation> {
    allocations(server).into_iter().filter(|a| a.service == service && a.desired == DesiredState::Run).collect()
}

/// The worker instances that pass their checks, by instance id.
fn passing_workers(server: &ServerProcess) -> Vec<String> {
    let instances = block_on(server.client().service_instances("worker", &[])).unwrap().items;
    let mut ids: Vec<String> = instances.into_iter().filter(|i| i.health == Health::Passing).map(|i| i.id).collect();
    ids.sort();
    ids
}

/// Whether the three running allocations are exactly the passing instances.
fn settled(server: &ServerProcess) -> Option<Vec<Allocation>> {
    let allocs = running(server, "worker");
    let mut ids: Vec<String> = allocs.iter().map(|a| a.id.clone()).collect();
    ids.sort();
    (allocs.len() == 3 && passing_workers(server) == ids).then_some(allocs)
}

#[test]
fn scheduled_work_goes_where_memory_is_free_and_moves_off_a_dead_node() {
    let work = tempfile::tempdir().unwrap();
    write_repo(&work.path().join("repo"));
    let server = ServerProcess::start(&work.path().join("server"), "127.0.0.1:0");
    gantry(&server, &["apply", "--repo", work.path().join("repo").to_str().unwrap()]).ok();
    // Three nodes with room for two workers each, one with room for none;
    // no --group: they run scheduled work only.
    let node = |name: &str, address: &str, memory: u32| {
        let capacity = format!("cpu=2,memory_mb={memory}");
        let args = [
            "--machine-id",
            name,
            "--address",
            address,
            "--capacity",
            &capacity,
            "--lease-ttl",
            "3s",
            "--restart-delay",
            "300ms",
        ];
        AgentProcess::start(&server, &work.path().join(name), &args)
    };
    let mut agents = [
        node("n1", "127.0.0.11", 450),
        node("n2", "127.0.0.12", 450),
        node("n3", "127.0.0.13", 450),
        node("small", "127.0.0.14", 150),
    ];

    let placed = eventually("three workers run and pass", Duration::from_secs(30), || settled(&server));
    assert!(placed.iter().all(|a| a.machine != "small"), "no room on small: {placed:?}");
    // Binpack: the fullest node that fits, so two share a node.
    let mut per_node = std::collections::BTreeMap::<&str, u32>::new();
    for a in &placed {
        *per_node.entry(a.machine.as_str()).or_default() += 1;
    }
    assert_eq!(per_node.values().max(), Some(&2), "{per_node:?}");
    // Each its own port, in its environment as PORT and in its instance.
    let instances = block_on(server.client().service_instances("worker", &[])).unwrap().items;
    for a in &placed {
        let instance = instances.iter().find(|i| i.id == a.id).unwrap();
        assert_eq!((instance.machine.as_str(), instance.port), (a.machine.as_str(), a.port));
        assert_eq!(instance.provides["WORKER_URL"], format!("http://{}:{}", instance.address, a.port));
    }

    // `big` fits nowhere: pending, with the reason.
    let job = eventually("big is evaluated", Duration::from_secs(5), || {
        let jobs: Vec<JobStatus> = block_on(server.client().jobs()).unwrap().items;
        jobs.into_iter().find(|j| j.service == "big")
    });
    assert_eq!((job.desired, job.placed, job.pending), (1, 0, 1), "{job:?}");
    let reason = job.reason.unwrap();
    assert!(reason.contains("lack memory (need 1000 MB, largest free"), "{reason}");
    let listed = gantry(&server, &["alloc:list"]).ok();
    assert!(listed.contains("big: 1 pending") && listed.contains("lack memory"), "{listed}");

    // nodes:usage: reserved is what was placed; the packing figure.
    let usage: serde_json::Value = serde_json::from_str(&gantry(&server, &["nodes:usage", "--json"]).ok()).unwrap();
    assert_eq!(usage["total"]["reserved"]["memory_mb"], 600, "{usage}");
    assert_eq!(usage["packing"]["nodes_in_use"], 2, "{usage}");
    assert_eq!(usage["packing"]["lower_bound"], 2, "{usage}");
    let text = gantry(&server, &["nodes:usage"]).ok();
    assert!(text.contains("small") && text.contains("TOTAL"), "{text}");

    // The node with two workers dies (agent and services, as a power cut).
    let (&doomed, _) = per_node.iter().find(|(_, n)| **n == 2).unwrap();
    let victims: Vec<u64> = super::status_of(&server, doomed)
        .unwrap()
        .processes
        .values()
        .filter_map(|p| p.process.as_ref()?.pid.map(u64::from))
        .collect();
    let index = agents.iter().position(|a| a.data_dir.ends_with(doomed)).unwrap();
    let died = Instant::now();
    agents[index].child.kill().unwrap();
    agents[index].child.wait().unwrap();
    for pid in &victims {
        let _ = Command::new("kill").args(["-KILL", &format!("-{pid}")]).status();
    }
    let moved = eventually("the dead node's workers run and pass elsewhere", Duration::from_secs(20), || {
        settled(&server).filter(|allocs| allocs.iter().all(|a| a.machine != doomed))
    });
    eprintln!("node loss to replacements passing: {:?}", died.elapsed());
    assert!(moved.iter().all(|a| a.machine != "small"));
    let stopped: Vec<Allocation> =
        allocations(&server).into_iter().filter(|a| a.machine == doomed && a.desired == DesiredState::Stop).collect();
    assert_eq!(stopped.len(), 2, "the lost ones are stopped: {stopped:?}");
    assert!(stopped.iter().all(|a| a.stop_reason.as_deref() == Some("node lost")));
    let shown = gantry(&server, &["alloc:show", &moved.iter().find(|a| a.replaces.is_some()).unwrap().id]).ok();
    assert!(shown.contains("placed:     lost"), "{shown}");

    // It comes back: its stale allocations stay stopped, nothing doubles.
    agents[index] = node(doomed, &format!("127.0.0.{}", 11 + index), 450);
    eventually("the returned node is registered", Duration::from_secs(10), || {
        block_on(server.client().machine(doomed)).ok()
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(settled(&server).map(|a| a.len()), Some(3), "still exactly three workers");
    assert!(running(&server, "worker").iter().all(|a| a.machine != doomed));
    for pid in victims {
        assert!(!alive(pid), "a dead node's process came back");
    }
}
