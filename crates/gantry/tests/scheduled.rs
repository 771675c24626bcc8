//! Scheduled services (issue 16) with real agents: a service with a
//! `count` is placed by the server's scheduler on the nodes with room for
//! it, runs there on ports of its own, is replaced elsewhere when its node
//! dies, and is not doubled when the node comes back; one that fits
//! nowhere stays pending with the reason.

use std::path::Path;
use std::time::{Duration, Instant};

use gantry_api::{Allocation, DesiredState, Health, JobStatus};

use super::{AgentProcess, ServerProcess, alive, block_on, eventually, gantry, kill_group};

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

/// An agent of `server` named `name` at `address` with no group (scheduled
/// work only), its data dir under `work`, with `more` arguments.
fn node(server: &ServerProcess, work: &Path, name: &str, address: &str, more: &[&str]) -> AgentProcess {
    let mut args = vec!["--machine-id", name, "--address", address];
    args.extend_from_slice(more);
    AgentProcess::start(server, &work.join(name), &args)
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

/// Whether three running workers are exactly the passing instances.
fn settled(server: &ServerProcess) -> Option<Vec<Allocation>> {
    settled_at(server, 3)
}

/// Whether `count` running workers are exactly the passing instances.
fn settled_at(server: &ServerProcess, count: usize) -> Option<Vec<Allocation>> {
    let allocs = running(server, "worker");
    let mut ids: Vec<String> = allocs.iter().map(|a| a.id.clone()).collect();
    ids.sort();
    (allocs.len() == count && passing_workers(server) == ids).then_some(allocs)
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
        node(
            &server,
            work.path(),
            name,
            address,
            &["--capacity", &capacity, "--lease-ttl", "3s", "--restart-delay", "300ms"],
        )
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
        kill_group(*pid);
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

    // job:plan shows what a change would do, and writes nothing.
    let repo = work.path().join("repo");
    let file = repo.join("data_bags/service/worker.json");
    std::fs::write(&file, std::fs::read_to_string(&file).unwrap().replace("\"count\":3", "\"count\":4")).unwrap();
    let before = allocations(&server);
    let planned = gantry(&server, &["job:plan", "worker", "--repo", repo.to_str().unwrap()]).ok();
    assert!(planned.contains("differs") && planned.contains("+ place worker[3] on"), "{planned}");
    let json: serde_json::Value = serde_json::from_str(
        &gantry(&server, &["job:plan", "worker", "--repo", repo.to_str().unwrap(), "--json"]).ok(),
    )
    .unwrap();
    assert_eq!(json["place"].as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(allocations(&server), before, "job:plan wrote nothing");
    let static_service = gantry(&server, &["job:plan", "nope", "--repo", repo.to_str().unwrap()]);
    assert_eq!(static_service.code, 2, "{}", static_service.stderr);

    // node:drain moves a node's workers off it, then leaves it ineligible.
    let busiest = {
        let mut count = std::collections::BTreeMap::<String, u32>::new();
        for a in running(&server, "worker") {
            *count.entry(a.machine).or_default() += 1;
        }
        count.into_iter().max_by_key(|(_, n)| *n).unwrap().0
    };
    let drained = gantry(&server, &["node:drain", &busiest]).ok();
    assert!(drained.contains("drained; ineligible"), "{drained}");
    let after = eventually("the drained workers run and pass elsewhere", Duration::from_secs(20), || settled(&server));
    assert!(after.iter().all(|a| a.machine != busiest && a.machine != "small"), "{after:?}");
    let records = block_on(server.client().eligibilities()).unwrap().items;
    assert!(records.iter().any(|e| e.machine == busiest && !e.eligible && !e.drain), "{records:?}");
    gantry(&server, &["node:eligible", &busiest]).ok();
    let records = block_on(server.client().eligibilities()).unwrap().items;
    assert!(records.iter().any(|e| e.machine == busiest && e.eligible), "{records:?}");
}

/// Two servers on one etcd: one schedules; SIGKILLed, the other takes over
/// within the leader lease's few seconds, and no slot is ever placed twice.
#[test]
fn scheduling_moves_to_another_server_when_the_leader_dies_and_nothing_is_placed_twice() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let etcd = rt
        .block_on(gantry_store::local_etcd::LocalEtcd::start())
        .unwrap_or_else(|e| panic!("{e} (install etcd with `apt-get install etcd-server`, or run scripts/test)"));
    let store = format!("etcd://{}", etcd.endpoint().trim_start_matches("http://"));
    let work = tempfile::tempdir().unwrap();
    write_repo(&work.path().join("repo"));
    let repo = work.path().join("repo");
    // The first server leads (it campaigns alone); the second waits.
    let mut leader = ServerProcess::start_with(&work.path().join("server"), "127.0.0.1:0", &store);
    gantry(&leader, &["apply", "--repo", repo.to_str().unwrap()]).ok();
    let standby = ServerProcess::start_with(&work.path().join("server"), "127.0.0.1:0", &store);
    // The nodes talk to the standby, so the leader's death is not theirs.
    let node =
        |name: &str, address: &str| node(&standby, work.path(), name, address, &["--capacity", "cpu=2,memory_mb=450"]);
    let _agents = [node("n1", "127.0.0.21"), node("n2", "127.0.0.22")];
    eventually("three workers run and pass", Duration::from_secs(30), || settled(&standby));

    leader.kill();
    let killed = Instant::now();
    // A change only a scheduler can act on: a fourth worker (it fits: 4 x 200 MB on 2 x 450).
    let file = repo.join("data_bags/service/worker.json");
    std::fs::write(&file, std::fs::read_to_string(&file).unwrap().replace("\"count\":3", "\"count\":4")).unwrap();
    gantry(&standby, &["apply", "--repo", repo.to_str().unwrap()]).ok();
    let four = eventually("the standby schedules the fourth worker", Duration::from_secs(20), || {
        let allocs = running(&standby, "worker");
        (allocs.len() == 4).then_some(allocs)
    });
    eprintln!("leader killed to the fourth worker placed by the standby: {:?}", killed.elapsed());
    let mut indexes: Vec<u32> = four.iter().map(|a| a.index).collect();
    indexes.sort_unstable();
    assert_eq!(indexes, [0, 1, 2, 3], "each slot placed once: {four:?}");
    // And it stays so: nothing more is placed, every one of them passes.
    std::thread::sleep(Duration::from_secs(1));
    let all = allocations(&standby);
    assert_eq!(all.iter().filter(|a| a.desired == DesiredState::Run).count(), 4, "{all:?}");
    eventually("four workers pass", Duration::from_secs(15), || (passing_workers(&standby).len() == 4).then_some(()));
}

/// One HTTP/1.0 GET; whether it answered 200.
fn get_ok(address: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&address.parse().unwrap(), Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(format!("GET / HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

/// A node drained under traffic through haproxy: its workers move one at a
/// time, each replacement passing before the next moves, and not one
/// request fails.
#[test]
fn a_drain_under_traffic_through_haproxy_fails_no_request() {
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    write_repo(&repo);
    // The workers are fronted on port 18610 for `client`, a static service
    // of group `front` that requires them.
    let file = repo.join("data_bags/service/worker.json");
    let text = std::fs::read_to_string(&file).unwrap().replace("\"count\":3", "\"count\":2");
    let mut worker: serde_json::Value = serde_json::from_str(&text).unwrap();
    worker["local_port"] = 18610.into();
    std::fs::write(&file, worker.to_string()).unwrap();
    std::fs::remove_file(repo.join("data_bags/service/big.json")).unwrap();
    std::fs::write(
        repo.join("data_bags/service/client.json"),
        r#"{"id": "client", "command": true, "environment": {"PORT": 18611}, "requires": {"WORKER": "{WORKER_URL}"}}"#,
    )
    .unwrap();
    std::fs::write(
        repo.join("nodes.json"),
        r#"{"__base__": {"run_list": []}, "front": {"run_list": ["recipe[services::client]"]}}"#,
    )
    .unwrap();
    let server = ServerProcess::start(&work.path().join("server"), "127.0.0.1:0");
    gantry(&server, &["apply", "--repo", repo.to_str().unwrap()]).ok();
    // Room for one worker each: a drained worker must go to the spare.
    let node = |name: &str, address: &str| {
        node(&server, work.path(), name, address, &["--capacity", "cpu=2,memory_mb=250", "--drain", "2s"])
    };
    let _workers = [node("w1", "127.0.0.31"), node("w2", "127.0.0.32")];
    let front_args = ["--machine-id", "front", "--group", "front", "--address", "127.0.0.33", "--lb", "haproxy"];
    let _front = AgentProcess::start(&server, &work.path().join("front"), &front_args);
    let frontend = "127.0.0.33:18610";
    eventually("both workers pass and answer through haproxy", Duration::from_secs(30), || {
        (settled_at(&server, 2).is_some() && get_ok(frontend)).then_some(())
    });
    let _spare = node("w3", "127.0.0.34");
    eventually("the spare node registers", Duration::from_secs(10), || block_on(server.client().machine("w3")).ok());

    // Traffic throughout the drain.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, 0u32);
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                if get_ok(frontend) {
                    ok += 1
                } else {
                    failed += 1
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (ok, failed)
        })
    };
    let drained = gantry(&server, &["node:drain", "w1"]).ok();
    assert!(drained.contains("drained"), "{drained}");
    eventually("the moved worker passes on the spare", Duration::from_secs(20), || {
        let allocs = settled_at(&server, 2)?;
        allocs.iter().all(|a| a.machine != "w1").then_some(())
    });
    // Past the old worker's drain delay, so its stop is under traffic too.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = traffic.join().unwrap();
    assert!(ok > 100, "only {ok} requests were made");
    assert_eq!(failed, 0, "{failed} of {} requests failed during the drain", ok + failed);
}

/// An allocation whose process keeps exiting is restarted in place, then,
/// failed past its restarts, rescheduled on another node after its delay.
#[test]
fn an_allocation_that_keeps_failing_is_rescheduled_elsewhere() {
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    let fail_dir = work.path().join("fail");
    std::fs::create_dir_all(&fail_dir).unwrap();
    write_repo(&repo);
    std::fs::remove_file(repo.join("data_bags/service/big.json")).unwrap();
    // Exits at once on a host that has a file in FAIL_DIR.
    let worker = serde_json::json!({
        "id": "worker",
        "command": format!("[ -e \"$FAIL_DIR/$HOST\" ] && exit 3; exec python3 {STATUS_SERVER}"),
        "environment": {"FAIL_DIR": fail_dir.to_str().unwrap()},
        "count": 1,
        "resources": {"cpu": 0.25, "memory_mb": 200},
        "reschedule": {"attempts": 2, "interval_s": 600, "delay_s": 1, "max_delay_s": 4},
        "check": {"type": "http", "path": "/status", "interval": "200ms", "timeout": "150ms", "rise": 1, "fall": 2}
    });
    std::fs::write(repo.join("data_bags/service/worker.json"), worker.to_string()).unwrap();
    std::fs::write(fail_dir.join("127.0.0.41"), "").unwrap();
    let server = ServerProcess::start(&work.path().join("server"), "127.0.0.1:0");
    gantry(&server, &["apply", "--repo", repo.to_str().unwrap()]).ok();
    let node = |name: &str, address: &str| {
        node(&server, work.path(), name, address, &["--capacity", "cpu=2,memory_mb=450", "--restart-delay", "200ms"])
    };
    // Alone at first, the failing node gets the allocation.
    let _bad = node("bad", "127.0.0.41");
    let first = eventually("the worker is placed on the only node", Duration::from_secs(15), || {
        running(&server, "worker").into_iter().next()
    });
    assert_eq!(first.machine, "bad");
    let _good = node("good", "127.0.0.42");
    let moved = eventually("the failing worker is rescheduled and passes elsewhere", Duration::from_secs(30), || {
        let allocs = running(&server, "worker");
        (allocs.len() == 1 && allocs[0].machine == "good" && passing_workers(&server) == [allocs[0].id.clone()])
            .then(|| allocs[0].clone())
    });
    assert_eq!(moved.placement.reason, "rescheduled", "{moved:?}");
    assert_eq!(moved.replaces.as_deref(), Some(first.id.as_str()));
    assert_eq!(moved.reschedules.len(), 1, "{moved:?}");
    let old = allocations(&server).into_iter().find(|a| a.id == first.id).unwrap();
    assert_eq!((old.desired, old.stop_reason.as_deref()), (DesiredState::Stop, Some("failed, rescheduled")));
}
