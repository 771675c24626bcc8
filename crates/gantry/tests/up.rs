//! `gantry up` / `status` / `down` on the example repositories, as a new
//! user runs them: the page through the public URL comes from www and api,
//! recovers when api is killed, a second `up` converges, `down` leaves no
//! process behind; broken repositories fail naming the service and leave
//! nothing running. The stack is the secure configuration: its API is
//! HTTPS for holders of its certificates only, each node has its own
//! certificate and token, its secrets are private files, and the commands
//! run inside the repository need no flag for any of it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gantry_tls::config::ClientTls;

use super::{Run, Scratch, alive, block_on, eventually, run_in};

const FEDERATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/federations");

fn gantry(dir: &Path, args: &[&str]) -> Run {
    run_in(dir, args)
}

/// Runs `gantry down` when dropped, so a test that fails half way leaves
/// no stack running (declare it after the scratch directory).
struct DownOnDrop<'a>(&'a Path);

impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        let _ = run_in(self.0, &["down"]);
    }
}

/// The body of a GET, when it answers 200.
fn page(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (address, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect_timeout(&address.parse().ok()?, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    use std::io::{Read, Write};
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1)? == "200").then(|| body.to_owned())
}

/// Processes that belong to the stack in `dir`: their command line or their
/// working directory is in it.
fn processes_in(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let cwd =
            std::fs::read_link(entry.path().join("cwd")).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        if alive(pid.parse().unwrap_or(0)) && (cmdline.contains(&dir) || cwd.starts_with(&dir)) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

fn api_pid(dir: &Path) -> Option<u64> {
    let status: serde_json::Value = serde_json::from_str(&gantry(dir, &["status", "--json"]).ok()).ok()?;
    let agent = status["agents"].as_array()?.iter().find(|a| a["machine"] == "12_04-api-1")?;
    let process = &agent["processes"]["api"]["process"];
    (process["state"] == "running").then(|| process["pid"].as_u64()).flatten()
}

fn node_pids(dir: &Path) -> Vec<u64> {
    let status: serde_json::Value = serde_json::from_str(&gantry(dir, &["status", "--json"]).ok()).unwrap();
    status["nodes"].as_array().unwrap().iter().filter_map(|n| n["process"]["pid"].as_u64()).collect()
}

#[test]
fn up_serves_the_page_through_www_and_api_recovers_converges_and_down_leaves_nothing() {
    let scratch = Scratch::example();
    let dir = scratch.dir.path();
    let _down = DownOnDrop(dir);
    let up = gantry(dir, &["up", "--detach", "--timeout", "60s"]);
    assert_eq!(up.code, 0, "{}\n{}", up.stdout, up.stderr);
    let url = up.stdout.lines().last().unwrap().trim().to_owned();
    assert!(
        url.starts_with("http://127.") && url.ends_with(":8080/"),
        "the last line is the public URL: {}",
        up.stdout
    );

    let body = page(&url).expect("the public URL answers");
    assert!(body.contains("Upcoming events") && body.contains("Mets at Yankees"), "{body}");
    assert!(body.contains("events from api at") && body.contains(":1100"), "www fetched them from api: {body}");

    let server = only_holders_of_its_certificates_reach_the_server(dir);
    commands_in_the_repository_need_no_flags(dir);
    secrets_are_private_files(dir);
    every_node_has_its_own_certificate_and_token(dir, &server);

    // api killed: restarted by its agent, and the page comes back.
    let pid = api_pid(dir).expect("api runs");
    crate::kill_group(pid);
    eventually("api runs again", Duration::from_secs(10), || api_pid(dir).filter(|p| *p != pid));
    eventually("the page is served again", Duration::from_secs(10), || {
        page(&url).filter(|b| b.contains("Mets at Yankees"))
    });

    let status = gantry(dir, &["status"]).ok();
    assert!(status.contains("external load balancer") && status.contains("passing"), "{status}");

    // A second up converges: the same node processes and certificates, nothing duplicated.
    let before = node_pids(dir);
    let certificates = tls_files(dir);
    let again = gantry(dir, &["up", "-d"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.stdout.lines().last().unwrap().trim(), url);
    assert_eq!(node_pids(dir), before);
    assert_eq!(tls_files(dir), certificates, "the CA and the certificates were kept");

    // Without its CA the stack cannot be converged: up makes a new CA and
    // restarts it, and the store (and its management token) carry over.
    std::fs::remove_dir_all(dir.join(".gantry/tls")).unwrap();
    let renewed = gantry(dir, &["up", "-d"]);
    assert_eq!(renewed.code, 0, "{}\n{}", renewed.stdout, renewed.stderr);
    assert!(renewed.stdout.contains("restarting the stack"), "{}", renewed.stdout);
    assert_ne!(tls_files(dir), certificates);
    assert!(page(&url).is_some_and(|b| b.contains("Mets at Yankees")));
    assert_eq!(gantry(dir, &["kv:get", "notes/probe"]).ok(), "over mutual TLS\n");

    // Issue 17: up released v1; an edit of bin/api.py deployed is served within seconds.
    let history = gantry(dir, &["deploy:history", "api"]).ok();
    assert!(history.contains("v1 (stable)") && history.contains("gantry up"), "{history}");
    std::fs::write(
        dir.join("bin/api.py"),
        std::fs::read_to_string(dir.join("bin/api.py")).unwrap().replace("Mets at Yankees", "Mets at Red Sox"),
    )
    .unwrap();
    let deployed = Instant::now();
    let out = gantry(dir, &["deploy", "api", "-m", "the Red Sox"]).ok();
    assert!(out.contains("api v2 succeeded"), "{out}");
    eventually("the new code serves", Duration::from_secs(10), || page(&url).filter(|b| b.contains("Mets at Red Sox")));
    assert!(deployed.elapsed() < Duration::from_secs(20), "took {:?}", deployed.elapsed());

    let down = gantry(dir, &["down"]).ok();
    assert!(down.contains("stopped 5 node(s)"), "{down}");
    assert!(processes_in(dir).is_empty(), "left behind: {:?}", processes_in(dir));
    assert!(page(&url).is_none(), "nothing answers on {url} any more");
    gantry(dir, &["down", "--purge"]).ok();
    assert!(!dir.join(".gantry").exists());
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// Every file in `dir` (not below), sorted.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// `.gantry/tls/`'s files and their bytes.
fn tls_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_in(&dir.join(".gantry/tls")).into_iter().map(|p| (p.clone(), std::fs::read(p).unwrap())).collect()
}

/// The stack's server is HTTPS, refuses plain HTTP, and refuses at the
/// handshake a client that trusts its CA but has no certificate of it.
/// Its URL.
fn only_holders_of_its_certificates_reach_the_server(dir: &Path) -> String {
    let status: serde_json::Value = serde_json::from_str(&gantry(dir, &["status", "--json"]).ok()).unwrap();
    let server = status["server"].as_str().unwrap().to_owned();
    assert!(server.starts_with("https://127.0.0.1:"), "{server}");

    let plain = server.replacen("https://", "http://", 1);
    assert!(page(&format!("{plain}/v1/health")).is_none(), "{plain} answers plain HTTP");
    let refused = gantry(dir, &["kv:get", "datastores/PRIMARY_DATABASE_URL", "--server", &plain]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("did not answer in plain HTTP"), "{}", refused.stderr);

    let ca = dir.join(".gantry/tls/ca.pem");
    let args = ["kv:get", "datastores/PRIMARY_DATABASE_URL", "--server", &server, "--ca-cert", ca.to_str().unwrap()];
    let no_certificate = gantry(dir, &args);
    assert_eq!(no_certificate.code, 1, "{no_certificate:?}");
    assert!(
        no_certificate.stderr.contains("the server requires a client certificate"),
        "refused at the handshake: {}",
        no_certificate.stderr
    );
    server
}

/// Inside the repository the CLI finds the stack's server, management
/// token, CA and operator certificate by itself.
fn commands_in_the_repository_need_no_flags(dir: &Path) {
    assert_eq!(gantry(dir, &["kv:put", "notes/probe", "over mutual TLS"]).ok(), "");
    assert_eq!(gantry(dir, &["kv:get", "notes/probe"]).ok(), "over mutual TLS\n");
    // Read from api's node through the server, which reaches the agent's API over TLS.
    let logs = gantry(dir, &["logs", "api"]).ok();
    assert!(logs.contains("GET /status 200"), "{logs}");
    let machines = gantry(dir, &["machine:list", "--json"]).ok();
    assert!(machines.contains("12_04-api-1") && machines.contains("lb-seatgeek"), "{machines}");
    let status = gantry(dir, &["status"]).ok();
    assert!(status.contains("server  https://127.0.0.1:") && status.contains("(running)"), "{status}");
}

/// `.gantry/` and the directories of secrets are 0700; keys, tokens and
/// the store's files 0600.
fn secrets_are_private_files(dir: &Path) {
    let state = dir.join(".gantry");
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("tls")), 0o700);
    let keys: Vec<PathBuf> =
        files_in(&state.join("tls")).into_iter().filter(|p| p.to_string_lossy().ends_with("-key.pem")).collect();
    // The CA's, the server's, the operator's, Prometheus', and the five nodes'.
    assert_eq!(keys.len(), 9, "{keys:?}");
    for key in &keys {
        assert_eq!(mode(key), 0o600, "{}", key.display());
    }
    for node in std::fs::read_dir(state.join("nodes")).unwrap() {
        let node = node.unwrap().path();
        assert_eq!(mode(&node), 0o700, "{}", node.display());
        assert_eq!(mode(&node.join("token")), 0o600, "{}", node.display());
    }
    // Prometheus' token (when Prometheus is installed, which the tests need).
    assert_eq!(mode(&state.join("prometheus")), 0o700);
    assert_eq!(mode(&state.join("prometheus/token")), 0o600);
    assert_eq!(mode(&state.join("server")), 0o700);
    assert_eq!(mode(&state.join("server/bootstrap-token")), 0o600);
    let store = files_in(&state.join("server"));
    assert!(store.len() >= 2, "the store's files and the token: {store:?}");
    for file in &store {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
}

/// Each node's agent runs with its own certificate, naming its machine
/// and address, and its own agent token; the server takes the pair as
/// that machine, and the agent's API presents the same certificate.
fn every_node_has_its_own_certificate_and_token(dir: &Path, server: &str) {
    let status: serde_json::Value = serde_json::from_str(&gantry(dir, &["status", "--json"]).ok()).unwrap();
    let tls = dir.join(".gantry/tls");
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 5, "{nodes:?}");
    for node in nodes {
        let name = node["name"].as_str().unwrap();
        let address: std::net::IpAddr = node["address"].as_str().unwrap().parse().unwrap();
        let pid = node["process"]["pid"].as_u64().unwrap();
        let cmdline = String::from_utf8(std::fs::read(format!("/proc/{pid}/cmdline")).unwrap()).unwrap();
        let args: Vec<&str> = cmdline.split('\0').collect();
        let arg = |flag: &str| Path::new(args[args.iter().position(|a| *a == flag).unwrap() + 1]).to_path_buf();
        let (cert, key, token) = (arg("--client-cert"), arg("--client-key"), arg("--token-file"));
        assert!(cert.ends_with(format!(".gantry/tls/{name}.pem")), "{name}: {cmdline}");
        assert!(key.ends_with(format!(".gantry/tls/{name}-key.pem")), "{name}: {cmdline}");
        assert!(token.ends_with(format!(".gantry/nodes/{name}/token")), "{name}: {cmdline}");
        assert!(arg("--ca-cert").ends_with(".gantry/tls/ca.pem"), "{name}: {cmdline}");
        assert!(arg("--server") == Path::new(server), "{name}: {cmdline}");

        let (cert, key, token) =
            (tls.join(format!("{name}.pem")), tls.join(format!("{name}-key.pem")), dir.join(&token));
        let holder = gantry_tls::holder_of_pem(&std::fs::read_to_string(&cert).unwrap()).unwrap();
        assert_eq!((holder.role, holder.name.as_str()), (Some(gantry_tls::Role::Agent), name));
        assert!(holder.ips.contains(&address), "{name}: {holder:?}");

        let own = ClientTls::load(&tls.join("ca.pem"), Some((&cert, &key))).unwrap();
        let secret = std::fs::read_to_string(dir.join(format!(".gantry/nodes/{name}/token"))).unwrap();
        let whoami = block_on(gantry_client::Client::with_tls(server, &own).unwrap().with_token(&secret).whoami())
            .unwrap_or_else(|e| panic!("{name}'s certificate and token: {e}"));
        assert_eq!(whoami.token.agent.map(|a| a.machine).as_deref(), Some(name), "{}", token.display());

        let agent = status["agents"].as_array().unwrap().iter().find(|a| a["machine"] == name).unwrap();
        let api = agent["api"].as_str().unwrap();
        assert!(api.starts_with(&format!("https://{address}:")), "{name}: {api}");
        assert_eq!(presented_by(api, &tls).name, name, "the certificate {name}'s agent API presents");
    }
}

/// The holder of the certificate the HTTPS server at `url` presents to
/// the stack's server certificate (agents' APIs answer servers only).
fn presented_by(url: &str, tls: &Path) -> gantry_tls::Holder {
    let server = ClientTls::load(&tls.join("ca.pem"), Some((&tls.join("server.pem"), &tls.join("server-key.pem"))));
    let config = server.unwrap().config().unwrap();
    let http = reqwest::Client::builder().tls_backend_preconfigured(config).tls_info(true).build().unwrap();
    let response = block_on(http.get(format!("{url}/v1/logs/api")).send()).unwrap();
    let info = response.extensions().get::<reqwest::tls::TlsInfo>().expect("TLS information");
    gantry_tls::holder_of_der(info.peer_certificate().expect("a certificate")).unwrap()
}

#[test]
fn a_command_that_does_not_exist_fails_up_naming_the_service_and_leaves_nothing() {
    let scratch = Scratch::example();
    scratch.edit("data_bags/service/api.json", "exec python3 bin/api.py", "exec no-such-program --serve");
    let dir = scratch.dir.path();
    let up = gantry(dir, &["up", "--detach", "--timeout", "30s"]);
    assert_eq!(up.code, 1, "{}", up.stdout);
    assert!(up.stderr.contains("service api on node 12_04-api-1 does not start"), "{}", up.stderr);
    assert!(up.stderr.contains("no-such-program"), "the log's end says why: {}", up.stderr);
    assert!(processes_in(dir).is_empty(), "left behind: {:?}", processes_in(dir));
}

#[test]
fn broken_repositories_fail_before_anything_starts() {
    // A requirement nothing provides.
    let scratch = Scratch::example();
    scratch.edit("data_bags/service/app-www.json", "{READONLY_API_URL}", "{NOBODY_PROVIDES_THIS}");
    let run = gantry(scratch.dir.path(), &["up", "-d"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("NOBODY_PROVIDES_THIS") && run.stderr.contains("app-www.json"), "{}", run.stderr);
    assert!(!scratch.dir.path().join(".gantry").exists(), "nothing started");

    // Two services on one local_port.
    let scratch = Scratch::example();
    scratch.edit("data_bags/service/app-www.json", "\"local_port\": 8080", "\"local_port\": 1100");
    let run = gantry(scratch.dir.path(), &["up", "-d"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("1100"), "{}", run.stderr);
    assert!(!scratch.dir.path().join(".gantry").exists(), "nothing started");
}

#[test]
fn two_federations_never_see_each_other() {
    let work = tempfile::tempdir().unwrap();
    for rel in [
        "nodes.json",
        "data_bags/service/blue-db.json",
        "data_bags/service/green-db.json",
        "data_bags/service/green-app.json",
    ] {
        let to = work.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(Path::new(FEDERATIONS).join(rel), to).unwrap();
    }
    let dir = work.path();
    let _down = DownOnDrop(dir);
    let up = gantry(dir, &["up", "-d"]);
    assert_eq!(up.code, 0, "{}\n{}", up.stdout, up.stderr);
    let env = std::fs::read_to_string(dir.join(".gantry/nodes/green-app-1/env/green-app.conf")).unwrap();
    assert!(env.contains("/green'") && !env.contains("blue"), "green-app resolved green's DB_URL only: {env}");
    gantry(dir, &["down", "--purge"]).ok();
    assert!(processes_in(dir).is_empty(), "left behind: {:?}", processes_in(dir));
}

#[test]
fn in_the_foreground_ctrl_c_stops_the_stack() {
    use std::io::{BufRead, BufReader};
    let scratch = Scratch::example();
    let dir = scratch.dir.path();
    let _down = DownOnDrop(dir);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["up", "--timeout", "60s"])
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("http://"))
        .expect("the foreground up prints the public URL once ready");
    assert!(page(&url).is_some_and(|b| b.contains("Upcoming events")));
    // Ctrl-C at the terminal: SIGINT to `up` (its nodes are in their own process groups).
    std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(processes_in(dir).is_empty(), "left behind: {:?}", processes_in(dir));
}

/// A GET's JSON body from Prometheus' API (`path` with its query, escaped).
fn prometheus_api(prometheus: &str, path: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&page(&format!("{prometheus}{path}"))?).ok()
}

/// `(job, machine, health)` of each of Prometheus' active targets.
fn active_targets(prometheus: &str) -> Option<Vec<(String, String, String)>> {
    let answer = prometheus_api(prometheus, "/api/v1/targets?state=active")?;
    let label = |t: &serde_json::Value, name: &str| t["labels"][name].as_str().unwrap_or_default().to_owned();
    Some(
        answer["data"]["activeTargets"]
            .as_array()?
            .iter()
            .map(|t| (label(t, "job"), label(t, "machine"), t["health"].as_str().unwrap_or_default().to_owned()))
            .collect(),
    )
}

/// Whether an instant query has a result.
fn query_has_data(prometheus: &str, promql: &str) -> bool {
    let escaped: String = promql
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_.-".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    prometheus_api(prometheus, &format!("/api/v1/query?query={escaped}"))
        .is_some_and(|a| a["data"]["result"].as_array().is_some_and(|r| !r.is_empty()))
}

/// Issue 18 against Debian's real Prometheus: `up` starts it with the
/// generated setup; within two target refreshes (5 s each) and a scrape
/// every agent, haproxy exporter and metrics-declaring instance is an
/// `up == 1` target; traffic through haproxy shows as a request rate;
/// `status` and `alerts` read it; a node whose agent is killed leaves the
/// targets when its lease ends.
#[test]
fn prometheus_scrapes_every_node_balancer_and_instance_and_forgets_a_dead_node() {
    let scratch = Scratch::example();
    let dir = scratch.dir.path();
    let _down = DownOnDrop(dir);
    assert!(
        std::process::Command::new("prometheus").arg("--version").output().is_ok(),
        "prometheus is not installed: install it with scripts/install-test-deps (Debian: apt-get install prometheus prometheus-alertmanager)"
    );
    let up = gantry(dir, &["up", "--detach", "--timeout", "60s"]);
    assert_eq!(up.code, 0, "{}\n{}", up.stdout, up.stderr);
    let returned = std::time::Instant::now();
    assert!(up.stdout.contains("prometheus  http://127.0.0.1:"), "{}", up.stdout);
    assert!(up.stdout.contains("alertmanager http://127.0.0.1:"), "{}", up.stdout);
    let public = up.stdout.lines().last().unwrap().trim().to_owned();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(".gantry/up.json")).unwrap()).unwrap();
    let prometheus = state["observer"]["url"].as_str().unwrap().to_owned();
    let status: serde_json::Value = serde_json::from_str(&gantry(dir, &["status", "--json"]).ok()).unwrap();
    let nodes: Vec<String> =
        status["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_owned()).collect();
    let api_instances = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["service"] == "api" && i["health"] == "passing")
        .count();
    assert!(api_instances >= 1 && nodes.len() >= 3, "{status}");

    // Two refresh intervals and a scrape interval (5 s each) after `up` returned.
    let targets = eventually("every agent, haproxy and api target is up", Duration::from_secs(15), || {
        let targets = active_targets(&prometheus)?;
        let up = |job: &str| targets.iter().filter(|t| t.0 == job && t.2 == "up").count();
        let all_up = targets.iter().all(|t| t.2 == "up");
        let every_agent = nodes.iter().all(|n| targets.iter().any(|t| t.0 == "gantry-agent" && &t.1 == n));
        (all_up && every_agent && up("gantry-haproxy") >= 1 && up("gantry-service") == api_instances).then_some(targets)
    });
    eprintln!("every target up {:.1} s after `up` returned: {targets:?}", returned.elapsed().as_secs_f64());
    assert!(targets.iter().any(|t| t.0 == "gantry-server" && t.2 == "up"), "{targets:?}");

    // Traffic through the balancers (the page is www's, which asks api through haproxy).
    for _ in 0..20 {
        assert!(page(&public).is_some_and(|b| b.contains("Mets at Yankees")));
    }
    eventually("api's request rate through haproxy", Duration::from_secs(30), || {
        query_has_data(&prometheus, "sum by (proxy) (rate(haproxy_backend_http_requests_total{proxy=\"api\"}[1m])) > 0")
            .then_some(())
    });
    // The application's own metrics, and the node's, are there too.
    assert!(query_has_data(&prometheus, "api_requests_total{path=\"/events\"}"));
    assert!(query_has_data(&prometheus, "gantry_node_memory_available_bytes"));

    let alerts: serde_json::Value = serde_json::from_str(&gantry(dir, &["alerts", "--json"]).ok()).unwrap();
    assert!(alerts.is_array(), "{alerts}");
    let shown = gantry(dir, &["status"]).ok();
    assert!(shown.contains(&format!("prometheus {prometheus}")) && shown.contains("alert"), "{shown}");
    // `prometheus:config` in the repository writes the stack's setup, which promtool accepts.
    let written = gantry(dir, &["prometheus:config", "--out", "observe"]).ok();
    assert!(written.contains("prometheus.yml") && written.contains("alertmanager.yml"), "{written}");
    let checked = std::process::Command::new("promtool")
        .args(["check", "config", "prometheus.yml"])
        .current_dir(dir.join("observe"))
        .output()
        .expect("promtool is not installed: scripts/install-test-deps (apt-get install prometheus)");
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stdout));
    let config = std::fs::read_to_string(dir.join("observe/prometheus.yml")).unwrap();
    let token = std::fs::read_to_string(dir.join(".gantry/prometheus/token")).unwrap();
    assert!(
        config.contains("credentials_file") && !config.contains(token.trim()),
        "the token is referred to, never copied"
    );

    // The external balancer's agent dies: its agent and haproxy targets go
    // once its lease ends and the targets are read again.
    let lb = status["nodes"].as_array().unwrap().iter().find(|n| n["external"].is_string()).unwrap();
    let (name, pid) = (lb["name"].as_str().unwrap(), lb["process"]["pid"].as_u64().unwrap());
    std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    eventually("the dead node's targets are gone", Duration::from_secs(40), || {
        let targets = active_targets(&prometheus)?;
        (!targets.iter().any(|t| t.1 == name) && !targets.is_empty()).then_some(())
    });
    // A second up brings the node back (its agent stops what the dead one left).
    let again = gantry(dir, &["up", "-d"]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    eventually("the node is a target again", Duration::from_secs(30), || {
        active_targets(&prometheus)?.iter().any(|t| t.1 == name && t.2 == "up").then_some(())
    });
}

/// `gantry up --ha` (issue 19): a 3-member etcd (TLS with client
/// certificates, auth on) and 3 servers. `kill -9` of any one etcd member
/// and then any one server: the page still answers, commands inside the
/// repository still work, `status` says what died, and `down` stops it all.
#[test]
fn up_ha_survives_kill_9_of_an_etcd_member_and_a_server() {
    let scratch = Scratch::example();
    let dir = scratch.dir.path();
    let _down = DownOnDrop(dir);
    let up = gantry(dir, &["up", "--ha", "--detach", "--timeout", "90s"]);
    assert_eq!(up.code, 0, "{}\n{}", up.stdout, up.stderr);
    assert_eq!(up.stdout.matches("etcd        m").count(), 3, "{}", up.stdout);
    assert!(up.stdout.contains("(TLS, client certificates, auth)"), "{}", up.stdout);
    let url = up.stdout.lines().last().unwrap().trim().to_owned();
    assert!(page(&url).is_some_and(|b| b.contains("Mets at Yankees")), "the page answers");
    assert_eq!(mode(&dir.join(".gantry/etcd/root-password")), 0o600);

    let status: serde_json::Value = serde_json::from_str(&gantry(dir, &["status", "--json"]).ok()).unwrap();
    let pid_of = |list: &str, n: usize| status["ha"][list][n]["process"]["pid"].as_u64().unwrap();
    assert_eq!(status["server"].as_str().unwrap().split(',').count(), 3, "{status}");
    // Every agent reports which server it uses.
    for agent in status["agents"].as_array().unwrap() {
        assert!(agent["server"].as_str().is_some_and(|s| s.starts_with("https://127.0.0.1:")), "{agent}");
    }

    for (what, pid) in [("etcd member m1", pid_of("etcd", 1)), ("the first server", pid_of("servers", 0))] {
        std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
        eventually(&format!("{what} is gone"), Duration::from_secs(5), || (!alive(pid)).then_some(()));
        let key = format!("notes/after-{}", pid);
        eventually(&format!("a write after killing {what}"), Duration::from_secs(15), || {
            let put = gantry(dir, &["kv:put", &key, "still here"]);
            (put.code == 0).then_some(())
        });
        assert_eq!(gantry(dir, &["kv:get", &key]).ok(), "still here\n");
        eventually(&format!("the page after killing {what}"), Duration::from_secs(15), || {
            page(&url).filter(|b| b.contains("Mets at Yankees"))
        });
    }
    let text = gantry(dir, &["status"]).ok();
    assert!(text.contains("etcd    m1") && text.contains("NOT RUNNING"), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("server  https://")).count(), 3, "{text}");
    // Each node says which server its agent uses; none uses the dead one.
    let dead = status["ha"]["servers"][0]["url"].as_str().unwrap();
    let used: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("  server  ")).collect();
    assert_eq!(used.len(), 5, "{text}");
    eventually("no agent uses the dead server", Duration::from_secs(15), || {
        let text = gantry(dir, &["status"]).ok();
        (!text.lines().filter_map(|l| l.strip_prefix("  server  ")).any(|s| s == dead)).then_some(())
    });

    let down = gantry(dir, &["down"]).ok();
    assert!(down.contains("stopped 5 node(s)"), "{down}");
    assert!(processes_in(dir).is_empty(), "left behind: {:?}", processes_in(dir));
}
