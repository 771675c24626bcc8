//! Deploys (issue 17) with a real server, real agents and a real haproxy:
//! a rolling deploy of 4 instances under a continuous request loop through
//! the balancer (no request fails; every instance serves the new code), a
//! release that fails its checks (the rollout stops, auto-revert brings the
//! stable release back, the history records both), canary then promote,
//! rollback, a corrupted artifact refused by every agent, a server
//! restarted in the middle of a rollout, and the artifact store in an S3
//! bucket of a real moto server.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gantry_api::{ReleaseHistory, ReleaseStatus};

use super::{AgentProcess, ServerProcess, block_on, eventually, gantry};

/// The service's code: answers `VERSION HOST` on `/`, and `/status` 200
/// unless a file `dist/api/BROKEN` is in its working directory (the
/// repository, or a release: the artifact keeps its path).
const APP: &str = include_str!("fixtures/release_app.py");

/// Each test's stack on addresses of its own (`127.0.NET.1` the balancer,
/// `.2` to `.5` the api nodes), so the tests run side by side.
#[derive(Debug, Clone, Copy)]
struct Net(u8);

impl Net {
    fn frontend(self) -> String {
        format!("127.0.{}.1:{}", self.0, LOCAL_PORT)
    }
    fn api_nodes(self) -> Vec<String> {
        (2..=5).map(|n| format!("127.0.{}.{n}", self.0)).collect()
    }
}

const LOCAL_PORT: u16 = 18600;
/// Where each api node serves, on its own address.
const API_PORT: u16 = 18700;

/// The repository: `api` (the app above, from its artifact `dist/api`)
/// and `www`, which requires it through the balancer. `update` is the
/// api's rollout stanza.
fn write_repo(dir: &Path, update: serde_json::Value) {
    let api = serde_json::json!({
        "id": "api",
        "command": ["python3", "dist/api/app.py"],
        "artifact": {"path": "dist/api"},
        "provides": {"API_URL": "http://{HOST}:{PORT}"},
        "local_port": LOCAL_PORT,
        "environment": {"PORT": API_PORT},
        "shutdown_delay": "1s",
        "update": update,
        "check": {"type": "http", "path": "/status", "interval": "200ms", "timeout": "150ms", "rise": 1, "fall": 1}
    });
    let files = [
        (
            "nodes.json",
            r#"{"__base__": {"run_list": []}, "api": {"run_list": ["recipe[services::api]"]}, "www": {"run_list": ["recipe[services::www]"]}}"#
                .to_owned(),
        ),
        ("data_bags/service/api.json", serde_json::to_string_pretty(&api).unwrap()),
        ("data_bags/service/www.json", r#"{"id": "www", "command": true, "requires": {"API": "{API_URL}"}}"#.to_owned()),
        ("dist/api/app.py", APP.to_owned()),
        ("dist/api/VERSION", "repo\n".to_owned()),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

fn default_update() -> serde_json::Value {
    serde_json::json!({"max_parallel": 1, "min_healthy_time": "1s", "healthy_deadline": "6s"})
}

/// One HTTP/1.0 GET of `/`: the body, or None when anything failed.
fn get(address: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&address.parse().ok()?, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    stream.write_all(format!("GET / HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1)? == "200").then(|| body.trim().to_owned())
}

/// What each api node serves, read from the nodes directly.
fn versions(net: Net, port: u16) -> Vec<Option<String>> {
    net.api_nodes()
        .iter()
        .map(|ip| get(&format!("{ip}:{port}")).and_then(|b| b.split_whitespace().next().map(str::to_owned)))
        .collect()
}

/// Requests through the balancer in a loop until stopped (bounded: at
/// most `limit`); counts of answered and failed.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(net: Net, limit: Duration) -> Load {
        let frontend = net.frontend();
        let (stop, ok, failed) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            let until = Instant::now() + limit;
            let mut seen = Vec::new();
            while !s.load(Ordering::Relaxed) && Instant::now() < until {
                match get(&frontend) {
                    Some(body) => {
                        o.fetch_add(1, Ordering::Relaxed);
                        if !seen.contains(&body) {
                            seen.push(body);
                        }
                    }
                    None => {
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            seen
        });
        Load { stop, ok, failed, thread: Some(thread) }
    }

    /// Stops it: (answered, failed, distinct bodies).
    fn finish(mut self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let seen = self.thread.take().unwrap().join().unwrap();
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed), seen)
    }
}

struct Stack {
    work: tempfile::TempDir,
    server: ServerProcess,
    _agents: Vec<AgentProcess>,
    port: u16,
    net: Net,
}

impl Stack {
    fn repo(&self) -> std::path::PathBuf {
        self.work.path().join("repo")
    }

    /// `gantry ARGS --repo REPO --server URL`.
    fn deploy(&self, args: &[&str]) -> super::Run {
        let repo = self.repo();
        let mut full = args.to_vec();
        full.extend(["--repo", repo.to_str().unwrap()]);
        gantry(&self.server, &full)
    }

    fn history(&self) -> ReleaseHistory {
        serde_json::from_str(&gantry(&self.server, &["deploy:history", "api", "--json"]).ok()).unwrap()
    }

    fn versions(&self) -> Vec<Option<String>> {
        versions(self.net, self.port)
    }

    fn set_version(&self, version: &str) {
        std::fs::write(self.repo().join("dist/api/VERSION"), format!("{version}\n")).unwrap();
    }
}

/// A server, four api nodes (run from the repository until the first
/// release), and a www node fronting api with haproxy; everything passing.
fn stack(net: Net, update: serde_json::Value) -> Stack {
    stack_on(net, update, |data_dir| ServerProcess::start(data_dir, "127.0.0.1:0"))
}

/// The same with the server `start` starts in a data directory.
fn stack_on(net: Net, update: serde_json::Value, start: impl FnOnce(&Path) -> ServerProcess) -> Stack {
    let work = tempfile::tempdir().unwrap();
    write_repo(&work.path().join("repo"), update);
    let server = start(&work.path().join("server"));
    gantry(&server, &["apply", "--repo", work.path().join("repo").to_str().unwrap()]).ok();
    let from = work.path().join("repo");
    let mut agents: Vec<AgentProcess> = net
        .api_nodes()
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let args = [
                "--group",
                "api",
                "--address",
                ip,
                "--machine-id",
                &format!("api{i}"),
                "--workdir",
                from.to_str().unwrap(),
                "--lease-ttl",
                "3s",
            ];
            AgentProcess::start(&server, &work.path().join(format!("api{i}")), &args)
        })
        .collect();
    agents.push(AgentProcess::start(
        &server,
        &work.path().join("www"),
        &["--group", "www", "--address", &format!("127.0.{}.1", net.0), "--machine-id", "www", "--lb", "haproxy"],
    ));
    let port = eventually("four api instances pass", Duration::from_secs(30), || {
        let instances = block_on(server.client().service_instances("api", &[])).ok()?.items;
        (instances.len() == 4 && instances.iter().all(|i| i.health == gantry_api::Health::Passing))
            .then(|| instances[0].port)
    });
    eventually("the balancer answers", Duration::from_secs(15), || get(&net.frontend()));
    Stack { work, server, _agents: agents, port, net }
}

fn status_of(history: &ReleaseHistory, version: u64) -> ReleaseStatus {
    history.items.iter().find(|r| r.version == version).unwrap_or_else(|| panic!("no v{version}: {history:?}")).status
}

#[test]
fn rolling_deploys_drop_no_request_and_a_failing_release_is_reverted() {
    let stack = stack(Net(61), default_update());
    // v1: the nodes move from the repository onto release v1.
    stack.set_version("v1");
    let out = stack.deploy(&["deploy", "api", "-m", "first"]).ok();
    assert!(out.contains("api v1 succeeded"), "{out}");
    assert_eq!(stack.versions(), vec![Some("v1".to_owned()); 4]);

    // v2 under a continuous request loop through haproxy.
    stack.set_version("v2");
    let load = Load::start(stack.net, Duration::from_secs(120));
    let started = Instant::now();
    let out = stack.deploy(&["deploy", "api", "-m", "second"]).ok();
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failed, seen) = load.finish();
    assert!(out.contains("api v2 succeeded"), "{out}");
    assert_eq!(failed, 0, "{failed} of {} requests failed during the rollout ({took:?})", ok + failed);
    assert!(ok > 50, "the loop ran: {ok} requests");
    assert!(seen.iter().any(|b| b.starts_with("v1")) && seen.iter().any(|b| b.starts_with("v2")), "{seen:?}");
    assert_eq!(stack.versions(), vec![Some("v2".to_owned()); 4]);
    // Each node keeps its releases under its data dir; the process runs from v2's.
    for i in 0..4 {
        assert!(stack.work.path().join(format!("api{i}/services/api/releases/v2/dist/api/app.py")).is_file());
    }

    // v3 fails its checks: the rollout stops at the first node, which goes back to v2.
    std::fs::write(stack.repo().join("dist/api/BROKEN"), "").unwrap();
    stack.set_version("v3");
    let load = Load::start(stack.net, Duration::from_secs(120));
    let run = stack.deploy(&["deploy", "api", "-m", "broken"]);
    let (ok, failed, _) = load.finish();
    assert_eq!(run.code, 1, "a reverted release fails the command: {run:?}");
    assert!(run.stdout.contains("api v3 reverted"), "{run:?}");
    assert_eq!(failed, 0, "{failed} of {} requests failed during the failed rollout", ok + failed);
    let history = stack.history();
    assert_eq!(status_of(&history, 3), ReleaseStatus::Reverted);
    assert_eq!(status_of(&history, 2), ReleaseStatus::Succeeded);
    assert_eq!(history.stable, Some(2));
    let v3 = history.items.iter().find(|r| r.version == 3).unwrap();
    assert!(v3.reason.as_deref().is_some_and(|r| r.contains("not healthy")), "{v3:?}");
    assert_eq!(v3.nodes.iter().filter(|n| n.told_ms > 0).count(), 1, "one node at a time: {v3:?}");
    eventually("every node serves v2 again", Duration::from_secs(15), || {
        (stack.versions() == vec![Some("v2".to_owned()); 4]).then_some(())
    });

    // What the history, show and releases:on say.
    let text = gantry(&stack.server, &["deploy:history", "api"]).ok();
    assert!(text.contains("v3") && text.contains("reverted") && text.contains("v2 (stable)"), "{text}");
    let show = gantry(&stack.server, &["deploy:show", "api", "v2"]).ok();
    assert!(
        show.contains("api v2: succeeded") && show.contains("message:  second") && show.contains("api0 healthy"),
        "{show}"
    );
    let on = gantry(&stack.server, &["releases:on", "api0"]).ok();
    assert!(on.contains("api") && on.contains("v2") && on.contains("healthy"), "{on}");

    // Rollback to v1: a new release (v4) of v1's artifact.
    std::fs::remove_file(stack.repo().join("dist/api/BROKEN")).unwrap();
    let out = gantry(&stack.server, &["deploy:rollback", "api", "--to", "v1"]).ok();
    assert!(out.contains("api v4 succeeded"), "{out}");
    assert_eq!(stack.versions(), vec![Some("v1".to_owned()); 4]);
    let history = stack.history();
    assert_eq!(history.items[0].rollback_of, Some(1));
    assert_eq!(status_of(&history, 2), ReleaseStatus::RolledBack);
    assert_eq!(history.stable, Some(4));
}

#[test]
fn canaries_wait_for_promotion_and_a_corrupt_artifact_switches_nothing() {
    let stack = stack(
        Net(62),
        serde_json::json!({"max_parallel": 4, "canary": 1, "min_healthy_time": "500ms", "healthy_deadline": "6s"}),
    );
    // The first release stops after its canary.
    stack.set_version("v1");
    let out = stack.deploy(&["deploy", "api"]).ok();
    assert!(out.contains("awaiting promotion"), "{out}");
    assert_eq!(stack.versions().iter().filter(|v| v.as_deref() == Some("v1")).count(), 1);
    // A second deploy while the first waits is refused, naming who deploys what.
    let refused = stack.deploy(&["deploy", "api", "--detach"]);
    assert_eq!(refused.code, 2, "a 409 is the caller's to fix: {refused:?}");
    assert!(refused.stderr.contains("is deploying api v1"), "{}", refused.stderr);
    let out = gantry(&stack.server, &["deploy:promote", "api"]).ok();
    assert!(out.contains("promoted"), "{out}");
    eventually("v1 succeeds on every node", Duration::from_secs(30), || {
        (status_of(&stack.history(), 1) == ReleaseStatus::Succeeded).then_some(())
    });
    assert_eq!(stack.versions(), vec![Some("v1".to_owned()); 4]);

    // v2's artifact is corrupted in the store after its upload: every
    // agent refuses it and nothing switches.
    stack.set_version("v2");
    let client = stack.server.client();
    let bytes = {
        let out = std::process::Command::new("tar")
            .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "--format=gnu", "-C"])
            .arg(stack.repo())
            .args(["-cf", "-", "dist/api"])
            .output()
            .unwrap();
        out.stdout
    };
    let sha: String = {
        use sha2::Digest as _;
        sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
    };
    block_on(client.upload_artifact("api", &sha, bytes)).unwrap();
    let stored = stack.work.path().join(format!("server/artifacts/sha256/{sha}"));
    let mut corrupt = std::fs::read(&stored).unwrap();
    corrupt[600] ^= 0xff;
    std::fs::write(&stored, corrupt).unwrap();
    // No canary this time: max_parallel 4 on four nodes tells three at
    // once (one keeps serving while they switch).
    let mut definition: gantry_api::ServiceDefinition =
        serde_json::from_str(&std::fs::read_to_string(stack.repo().join("data_bags/service/api.json")).unwrap())
            .unwrap();
    definition.update.as_mut().unwrap().canary = Some(0);
    let request = gantry_api::ReleaseRequest {
        sha256: sha,
        git: None,
        message: None,
        os_user: None,
        definition: Some(definition),
    };
    let release = block_on(client.create_release("api", &request)).unwrap();
    let history = eventually("v2 is reverted", Duration::from_secs(40), || {
        let history = stack.history();
        (status_of(&history, release.version) == ReleaseStatus::Reverted).then_some(history)
    });
    let v2 = history.items.iter().find(|r| r.version == release.version).unwrap();
    assert!(v2.reason.as_deref().is_some_and(|r| r.contains("SHA-256")), "{v2:?}");
    assert_eq!(v2.nodes.len(), 4);
    let (told, untold): (Vec<_>, Vec<_>) = v2.nodes.iter().partition(|n| n.told_ms > 0);
    assert_eq!((told.len(), untold.len()), (3, 1), "three told at once, one kept serving: {v2:?}");
    assert!(told.iter().all(|n| n.phase == gantry_api::NodePhase::Reverted), "every agent told refused it: {v2:?}");
    assert_eq!(untold[0].phase, gantry_api::NodePhase::Pending, "{v2:?}");
    for i in 0..4 {
        assert!(
            !stack.work.path().join(format!("api{i}/services/api/releases/v2")).exists(),
            "no half release on api{i}"
        );
    }
    assert_eq!(stack.versions(), vec![Some("v1".to_owned()); 4]);
}

#[test]
fn a_rollout_survives_its_server_restarting() {
    let stack =
        stack(Net(63), serde_json::json!({"max_parallel": 1, "min_healthy_time": "1500ms", "healthy_deadline": "8s"}));
    let Stack { work, mut server, _agents, port, net } = stack;
    let repo = work.path().join("repo");
    std::fs::write(repo.join("dist/api/VERSION"), "v1\n").unwrap();
    gantry(&server, &["deploy", "api", "--detach", "--repo", repo.to_str().unwrap()]).ok();
    eventually("one node is on v1 and another is not yet", Duration::from_secs(30), || {
        let v = versions(net, port);
        (v.iter().any(|v| v.as_deref() == Some("v1")) && v.iter().any(|v| v.as_deref() != Some("v1"))).then_some(())
    });
    let listen = format!("127.0.0.1:{}", server.port());
    server.kill();
    std::thread::sleep(Duration::from_secs(1));
    let server = ServerProcess::start(&work.path().join("server"), &listen);
    let history = eventually("the restarted server finishes the rollout", Duration::from_secs(60), || {
        let out = gantry(&server, &["deploy:history", "api", "--json"]);
        let history: ReleaseHistory = serde_json::from_str(&out.stdout).ok()?;
        (history.items.first()?.status == ReleaseStatus::Succeeded).then_some(history)
    });
    assert_eq!(history.items[0].nodes.len(), 4);
    assert_eq!(versions(net, port), vec![Some("v1".to_owned()); 4]);
}

/// How many times an object was put under `prefix` (the bucket keeps
/// every version), and the keys there now.
fn s3_puts(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> (usize, Vec<String>) {
    let versions = block_on(s3.list_object_versions().bucket(bucket).prefix(prefix).send()).unwrap();
    let listed = block_on(s3.list_objects_v2().bucket(bucket).prefix(prefix).send()).unwrap();
    (versions.versions().len(), listed.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect())
}

#[test]
fn an_s3_artifact_store_uploads_once_and_its_corrupt_bytes_are_refused() {
    let moto = super::aws::Moto::start();
    let s3 = moto.s3();
    block_on(s3.create_bucket().bucket("releases").send()).unwrap();
    let versioning = aws_sdk_s3::types::VersioningConfiguration::builder()
        .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
        .build();
    block_on(s3.put_bucket_versioning().bucket("releases").versioning_configuration(versioning).send()).unwrap();
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // A bucket that does not exist: the server refuses to start, saying so.
    let scratch = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["server", "--listen", "127.0.0.1:0", "--artifacts", "s3://no-such-bucket/x", "--data-dir"])
        .arg(scratch.path())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let refused = super::Run::from(out).bad_input();
    assert!(refused.contains("S3 bucket no-such-bucket not found"), "{refused}");
    // No bucket name at all: refused before any AWS call, saying the form.
    let refused = ServerProcess::try_start(scratch.path(), &["--artifacts", "s3://Not_A_Bucket/x"]);
    assert!(refused.contains("is not an S3 bucket URL") && refused.contains("s3://BUCKET/PREFIX"), "{refused}");

    // Retention: with no node running api, each release succeeds at once;
    // after 22 of them the newest 20 are kept and the two oldest
    // artifacts are deleted from the bucket.
    let lone = ServerProcess::start_with_args(
        &scratch.path().join("lone"),
        "127.0.0.1:0",
        "embedded",
        &["--artifacts", "s3://releases/retention"],
        &env,
    );
    write_repo(&scratch.path().join("repo"), default_update());
    gantry(&lone, &["apply", "--repo", scratch.path().join("repo").to_str().unwrap()]).ok();
    let client = lone.client();
    let mut shas = Vec::new();
    for i in 0..22 {
        let bytes = format!("artifact {i}").into_bytes();
        let sha: String = {
            use sha2::Digest as _;
            sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
        };
        block_on(client.upload_artifact("api", &sha, bytes)).unwrap();
        let request = gantry_api::ReleaseRequest {
            sha256: sha.clone(),
            git: None,
            message: None,
            os_user: None,
            definition: None,
        };
        block_on(client.create_release("api", &request)).unwrap();
        shas.push(sha);
    }
    let (_, mut kept) = s3_puts(&s3, "releases", "retention/");
    kept.sort();
    let mut expected: Vec<String> = shas[2..].iter().map(|sha| format!("retention/sha256/{sha}")).collect();
    expected.sort();
    assert_eq!(kept, expected, "the two oldest artifacts are gone from the bucket");
    drop(lone);

    let stack = stack_on(
        Net(64),
        serde_json::json!({"max_parallel": 4, "min_healthy_time": "300ms", "healthy_deadline": "6s"}),
        |data_dir| {
            ServerProcess::start_with_args(
                data_dir,
                "127.0.0.1:0",
                "embedded",
                &["--artifacts", "s3://releases/gantry/"],
                &env,
            )
        },
    );
    // v1: uploaded once into the bucket, fetched by every agent through
    // the server (they have no AWS credentials) and verified.
    stack.set_version("v1");
    let out = stack.deploy(&["deploy", "api"]).ok();
    assert!(out.contains("uploaded") && out.contains("api v1 succeeded"), "{out}");
    assert_eq!(stack.versions(), vec![Some("v1".to_owned()); 4]);
    let (puts, keys) = s3_puts(&s3, "releases", "gantry/");
    let sha = stack.history().items[0].sha256.clone();
    assert_eq!((puts, keys), (1, vec![format!("gantry/sha256/{sha}")]));
    assert!(!stack.work.path().join("server/artifacts/sha256").exists(), "nothing is kept on the server's disk");

    // The same bytes again: a new release, no new upload.
    let out = stack.deploy(&["deploy", "api", "-m", "again"]).ok();
    assert!(out.contains("already stored") && out.contains("api v2 succeeded"), "{out}");
    assert_eq!(s3_puts(&s3, "releases", "gantry/").0, 1, "the second deploy put nothing");

    // Bytes flipped in the S3 object: every agent refuses the download and
    // nothing switches.
    let key = format!("gantry/sha256/{sha}");
    // One runtime for the request and its body (the connection lives in it).
    let mut bytes = block_on(async {
        let object = s3.get_object().bucket("releases").key(&key).send().await.unwrap();
        object.body.collect().await.unwrap().to_vec()
    });
    bytes[600] ^= 0xff;
    let body = aws_sdk_s3::primitives::ByteStream::from(bytes);
    block_on(s3.put_object().bucket("releases").key(&key).body(body).send()).unwrap();
    let out = stack.deploy(&["deploy", "api", "-m", "corrupt"]);
    assert!(out.stdout.contains("already stored"), "{out:?}");
    let history = stack.history();
    let v3 = history.items.iter().find(|r| r.version == 3).unwrap_or_else(|| panic!("{history:?}"));
    assert_eq!(v3.status, ReleaseStatus::Reverted, "{v3:?}");
    assert!(v3.reason.as_deref().is_some_and(|r| r.contains("SHA-256")), "{v3:?}");
    for i in 0..4 {
        assert!(
            !stack.work.path().join(format!("api{i}/services/api/releases/v3")).exists(),
            "no half release on api{i}"
        );
    }
    // v2 (stable) has v1's bytes.
    assert_eq!(stack.versions(), vec![Some("v1".to_owned()); 4]);
}
