//! High availability end to end (issue 19): three `gantry server`
//! processes on a real 3-member etcd, agents given all three
//! (`--server URL1,URL2,URL3`). One server is SIGKILLed while agents are
//! attached: every agent moves to another server and says so in its
//! status, keeps its lease (it never registers again), its watches resume
//! (a datastore changed after the kill reaches its env file), and the CLI
//! given the list answers with the dead server first in it.

use std::collections::BTreeSet;
use std::time::Duration;

use gantry_store::local_etcd::{LocalEtcdCluster, LocalEtcdOptions};

use super::{AgentProcess, Scratch, ServerProcess, block_on, eventually, run_with_token};

#[test]
fn agents_carry_on_when_one_of_three_servers_dies() {
    let cluster = block_on(LocalEtcdCluster::start(3, LocalEtcdOptions::default())).unwrap_or_else(|e| {
        panic!("{e} (install etcd with `apt-get install etcd-server`, or run scripts/install-test-deps)")
    });
    let store = cluster.store_url();
    let work = tempfile::tempdir().unwrap();
    let mut servers: Vec<ServerProcess> = (0..3)
        .map(|n| ServerProcess::start_with(&work.path().join(format!("server{n}")), "127.0.0.1:0", &store))
        .collect();
    // The first server created the management token in etcd; all share it.
    let token = servers.iter().find_map(|s| s.token.clone()).expect("a server wrote the bootstrap token");
    let urls = servers.iter().map(|s| s.url.clone()).collect::<Vec<_>>().join(",");
    let client = gantry_client::Client::new(&urls).with_token(&token);

    let scratch = Scratch::example_registered_only();
    let repo = scratch.dir.path().to_str().unwrap().to_owned();
    run_with_token(work.path(), &["apply", "--repo", &repo, "--server", &urls], Some(&token)).ok();

    let nodes = [
        ("api1", "12_04-api", "127.0.0.2"),
        ("api2", "12_04-api", "127.0.0.4"),
        ("www1", "12_04-www", "127.0.0.3"),
        ("www2", "12_04-www", "127.0.0.5"),
    ];
    let agents: Vec<AgentProcess> = nodes
        .iter()
        .map(|(name, group, address)| {
            let args = ["--machine-id", name, "--group", group, "--address", address, "--lease-ttl", "6s"];
            AgentProcess::start_at(&urls, Some(&token), &work.path().join(name), &args)
        })
        .collect();
    let using = |client: &gantry_client::Client| -> Option<Vec<(String, String)>> {
        let statuses = block_on(client.agent_statuses()).ok()?.items;
        let pairs: Vec<(String, String)> =
            statuses.into_iter().filter_map(|s| Some((s.machine.clone(), s.server.clone()?))).collect();
        (pairs.len() == nodes.len()).then_some(pairs)
    };
    let before = eventually("every agent reports the server it uses", Duration::from_secs(30), || using(&client));
    for (machine, server) in &before {
        assert!(servers.iter().any(|s| s.url == *server), "{machine} reports {server}, not one of {urls}");
    }
    eventually("www's env file has the database", Duration::from_secs(20), || {
        Some(()).filter(|()| agents[2].env_file("app-www").contains("DATABASE_URL='mysql://"))
    });

    // Kill the server the first agent uses (SIGKILL: no goodbye).
    let victim = servers.iter().position(|s| s.url == before[0].1).expect("the server in use");
    let dead = servers[victim].url.clone();
    servers[victim].kill();
    let moved: BTreeSet<&str> = before.iter().filter(|(_, s)| *s == dead).map(|(m, _)| m.as_str()).collect();

    // Every agent that used it reports another one (its status writes go on).
    let after = eventually("the agents of the dead server report another", Duration::from_secs(20), || {
        using(&client).filter(|pairs| pairs.iter().all(|(_, server)| *server != dead))
    });
    for (machine, server) in &after {
        assert!(servers.iter().any(|s| s.url == *server && *server != dead), "{machine}: {server}");
    }

    // Watches resumed on another server: a datastore changed now reaches www.
    run_with_token(
        work.path(),
        &["kv:put", "datastores/PRIMARY_DATABASE_URL", "mysql://after-failover:3306/db", "--server", &urls],
        Some(&token),
    )
    .ok();
    for www in &agents[2..] {
        eventually("a www agent sees the datastore written after the kill", Duration::from_secs(20), || {
            Some(()).filter(|()| www.env_file("app-www").contains("after-failover"))
        });
    }

    // No agent lost its lease: each registered once, none registered again.
    for (agent, (name, _, _)) in agents.iter().zip(nodes) {
        let log = agent.log();
        assert_eq!(log.matches("registered at").count(), 1, "{name} registered again:\n{log}");
        assert!(!log.contains("lease expired"), "{name} lost its lease:\n{log}");
        if moved.contains(name) {
            assert!(log.contains("now using server"), "{name} moved silently:\n{log}");
        }
    }
    let machines = block_on(client.machines()).unwrap().items;
    assert_eq!(machines.len(), nodes.len(), "every machine is still registered under its lease");

    // The CLI given the list with the dead server first still answers.
    let list = format!(
        "{dead},{}",
        servers.iter().filter(|s| s.url != dead).map(|s| s.url.as_str()).collect::<Vec<_>>().join(",")
    );
    let read =
        run_with_token(work.path(), &["kv:get", "datastores/PRIMARY_DATABASE_URL", "--server", &list], Some(&token))
            .ok();
    assert_eq!(read, "mysql://after-failover:3306/db\n");
    drop(agents);
    drop(servers);
    drop(cluster);
}

/// A server whose etcd lost its quorum says so: `GET /v1/health` is a 503
/// with the reason (so a balancer routes around it), `/metrics` shows the
/// members up, the endpoint in use and the failovers; once a member is
/// back, health is 200 again.
#[test]
fn health_is_503_with_the_reason_when_etcd_loses_its_quorum() {
    let mut cluster = block_on(LocalEtcdCluster::start(3, LocalEtcdOptions::default()))
        .unwrap_or_else(|e| panic!("{e} (install etcd with `apt-get install etcd-server`)"));
    let work = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(&work.path().join("server"), "127.0.0.1:0", &cluster.store_url());
    let client = server.client();
    assert_eq!(block_on(client.health()).unwrap().status, "ok");

    cluster.kill(0);
    cluster.kill(1);
    let refused =
        eventually("health says etcd lost its quorum", Duration::from_secs(15), || match block_on(client.health()) {
            Err(gantry_client::ClientError::Api { status: 503, code, message })
                if message.contains("no usable leader") =>
            {
                Some((code, message))
            }
            _ => None,
        });
    assert_eq!(refused.0, gantry_api::ErrorCode::Unavailable);
    assert!(refused.1.contains("etcd has no usable leader: 1 of 3 members answer (quorum needs 2)"), "{}", refused.1);
    let metrics = metrics_of(&server);
    for line in ["gantry_etcd_members 3", "gantry_etcd_members_up 1", "gantry_etcd_leader 0"] {
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in /metrics:\n{metrics}");
    }
    assert!(metrics.contains("gantry_etcd_endpoint_in_use{endpoint=\"http://127.0.0.1:"), "{metrics}");

    block_on(cluster.restart(1)).unwrap();
    eventually("health is 200 again with two members", Duration::from_secs(20), || {
        block_on(client.health()).ok().filter(|h| h.status == "ok")
    });
    let metrics = metrics_of(&server);
    let failovers = metrics.lines().find_map(|l| l.strip_prefix("gantry_etcd_failovers_total ")).unwrap();
    assert!(failovers.parse::<u64>().unwrap() >= 1, "the server moved off the dead members: {failovers}");
}

/// `/metrics` with the server's management token.
fn metrics_of(server: &ServerProcess) -> String {
    // reqwest's rustls has no crypto provider of its own in this build.
    gantry_tls::config::install_crypto_provider();
    block_on(async {
        let request = reqwest::Client::new().get(format!("{}/metrics", server.url));
        request.bearer_auth(server.token.as_deref().unwrap()).send().await.unwrap().text().await.unwrap()
    })
}

/// Under load through the API (16 writers putting new keys, 100 watchers,
/// each client given all three servers), one of three servers is
/// SIGKILLed: writes fail only within the window after the kill (a write
/// in flight on the dead server is not sent again), every acknowledged
/// write is there, and every watcher, resumed on another server after its
/// last event, saw exactly the history (once, in order).
#[test]
fn writers_and_watchers_carry_on_when_one_of_three_servers_dies() {
    use futures::StreamExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    const WRITERS: usize = 16;
    const WATCHERS: usize = 100;
    const WINDOW: Duration = Duration::from_secs(3);
    let cluster = block_on(LocalEtcdCluster::start(3, LocalEtcdOptions::default()))
        .unwrap_or_else(|e| panic!("{e} (install etcd with `apt-get install etcd-server`)"));
    let work = tempfile::tempdir().unwrap();
    let mut servers: Vec<ServerProcess> = (0..3)
        .map(|n| {
            ServerProcess::start_with(&work.path().join(format!("server{n}")), "127.0.0.1:0", &cluster.store_url())
        })
        .collect();
    let token = servers.iter().find_map(|s| s.token.clone()).expect("a server wrote the bootstrap token");
    let urls = servers.iter().map(|s| s.url.clone()).collect::<Vec<_>>().join(",");
    let client = || gantry_client::Client::new(&urls).with_token(&token);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let from = runtime.block_on(client().kv_put("load/start", "0", Default::default())).unwrap().revision + 1;
    let stop = Arc::new(AtomicBool::new(false));
    let watchers: Vec<_> = (0..WATCHERS).map(|_| runtime.spawn(follow(client(), from))).collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (client, stop) = (client(), Arc::clone(&stop));
            runtime.spawn(async move {
                let (mut acked, mut failed) = (Vec::new(), Vec::new());
                let began = Instant::now();
                for n in 0..100_000u32 {
                    if stop.load(Ordering::Relaxed) || began.elapsed() > Duration::from_secs(60) {
                        break;
                    }
                    let key = format!("load/w{w}/{n:06}");
                    match client.kv_put(&key, "v", Default::default()).await {
                        Ok(_) => acked.push(key),
                        Err(error) => failed.push((Instant::now(), error.to_string())),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (acked, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let killed_at = Instant::now();
    servers[0].kill();
    std::thread::sleep(WINDOW + Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let (mut acked, mut failures) = (Vec::new(), 0);
    for writer in writers {
        let (keys, failed) = runtime.block_on(writer).unwrap();
        failures += failed.len();
        for (at, error) in &failed {
            let after = at.saturating_duration_since(killed_at);
            assert!(
                *at >= killed_at && after <= WINDOW,
                "a write failed {after:?} after the kill (outside the window): {error}"
            );
        }
        acked.extend(keys);
    }
    eprintln!("{} writes acknowledged, {failures} failed (all within {WINDOW:?} of the kill)", acked.len());
    assert!(acked.len() > 200, "the load did too little: {} writes", acked.len());
    let end = runtime.block_on(client().kv_put("load/end", "1", Default::default())).unwrap();
    let listing = runtime.block_on(client().kv_list("load/")).unwrap();
    let present: BTreeSet<&str> = listing.entries.iter().map(|e| e.key.as_str()).collect();
    for key in &acked {
        assert!(present.contains(key.as_str()), "acknowledged {key} is missing");
    }
    let reference = runtime.block_on(follow(client(), from));
    assert_eq!(reference.last().map(|(revision, _)| *revision), Some(end.revision));
    for (n, watcher) in watchers.into_iter().enumerate() {
        let seen = runtime.block_on(watcher).unwrap();
        assert!(seen == reference, "watcher {n} saw {} events, the history has {}", seen.len(), reference.len());
    }

    /// Every (revision, key) under `kv/load/` from `from` until `load/end`,
    /// resuming after the last event when a stream breaks (on another
    /// server when its server died).
    async fn follow(client: gantry_client::Client, from: u64) -> Vec<(u64, String)> {
        let mut seen = Vec::new();
        let mut last: Option<String> = None;
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(90) {
            let Ok(stream) = client.watch("kv/load/", from, last.as_deref()).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut stream = std::pin::pin!(stream);
            while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
                match item {
                    Ok(gantry_client::WatchItem::Event { id, event }) => {
                        let end = event.key.ends_with("load/end");
                        seen.push((event.revision, event.key));
                        last = Some(id);
                        if end {
                            return seen;
                        }
                    }
                    Ok(gantry_client::WatchItem::Reset(reset)) => panic!("a watch was reset: {reset:?}"),
                    Err(_) => break,
                }
            }
        }
        panic!("a watcher did not see the end within 90 s ({} events)", seen.len());
    }
}
