//! `gantry up` / `status` / `down` on the example repositories, as a new
//! user runs them: the page through the public URL comes from www and api,
//! recovers when api is killed, a second `up` converges, `down` leaves no
//! process behind; broken repositories fail naming the service and leave
//! nothing running.

use std::path::Path;
use std::time::Duration;

use super::{Run, Scratch, alive, eventually, run_in};

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

    // api killed: restarted by its agent, and the page comes back.
    let pid = api_pid(dir).expect("api runs");
    std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    eventually("api runs again", Duration::from_secs(10), || api_pid(dir).filter(|p| *p != pid));
    eventually("the page is served again", Duration::from_secs(10), || {
        page(&url).filter(|b| b.contains("Mets at Yankees"))
    });

    let status = gantry(dir, &["status"]).ok();
    assert!(status.contains("external load balancer") && status.contains("passing"), "{status}");

    // A second up converges: the same node processes, nothing duplicated.
    let before = node_pids(dir);
    let again = gantry(dir, &["up", "-d"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.stdout.lines().last().unwrap().trim(), url);
    assert_eq!(node_pids(dir), before);

    let down = gantry(dir, &["down"]).ok();
    assert!(down.contains("stopped 5 node(s)"), "{down}");
    assert!(processes_in(dir).is_empty(), "left behind: {:?}", processes_in(dir));
    assert!(page(&url).is_none(), "nothing answers on {url} any more");
    gantry(dir, &["down", "--purge"]).ok();
    assert!(!dir.join(".gantry").exists());
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
