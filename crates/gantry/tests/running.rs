//! Services run by `gantry agent` beside a real `gantry server`: supervised
//! processes, health checks that take instances out of rotation, service
//! control and logs through the server, and a real haproxy fronting a
//! required service, which keeps routing while the server is away.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use gantry_api::{AgentStatus, Health, Instance, ProcState, ProcessStatus};

use super::{AgentProcess, ServerProcess, alive, block_on, eventually, gantry, status_of};

const STATUS_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/status_server.py");

/// A repository with a group `api` running the test status server as `api`
/// (on `local_port` 18500 for balancers; failing while `<fail_dir>/<HOST>`
/// exists) and a group `www` whose `www` requires `API_URL`.
fn write_repo(dir: &Path, fail_dir: &Path) {
    let files = [
        (
            "nodes.json",
            r#"{"__base__": {"run_list": []},
                "api": {"run_list": ["recipe[services::api]"]},
                "www": {"run_list": ["recipe[services::www]"]}}"#
                .to_owned(),
        ),
        (
            "data_bags/service/api.json",
            serde_json::json!({
                "id": "api",
                "command": ["python3", STATUS_SERVER],
                "environment": {"FAIL_DIR": fail_dir.to_str().unwrap()},
                "provides": {"API_URL": "http://{HOST}:{PORT}"},
                "local_port": 18500,
                "check": {"type": "http", "path": "/status", "interval": "200ms", "timeout": "150ms", "rise": 1, "fall": 2, "restart_after": 8}
            })
            .to_string(),
        ),
        (
            "data_bags/service/www.json",
            r#"{"id": "www", "command": true, "environment": {"PORT": 18080}, "requires": {"API": "{API_URL}"}}"#.to_owned(),
        ),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

fn api_instances(server: &ServerProcess) -> Vec<Instance> {
    block_on(server.client().service_instances("api", &[])).map(|l| l.items).unwrap_or_default()
}

fn health_of(server: &ServerProcess, machine: &str) -> Option<Health> {
    api_instances(server).into_iter().find(|i| i.machine == machine).map(|i| i.health)
}

fn process(status: &AgentStatus) -> Option<ProcessStatus> {
    status.processes.get("api").and_then(|p| p.process.clone())
}

/// Whether `api` on `machine` is published with `health` and its check's
/// last probe said `output` (so a state left over from before is not taken
/// for the one a test waits for).
fn checked(server: &ServerProcess, machine: &str, health: Health, output: &str) -> Option<()> {
    let status = status_of(server, machine)?;
    let api = status.processes.get("api")?;
    let last = api.check.as_ref().and_then(|c| c.last_output.as_deref()).unwrap_or_default();
    (health_of(server, machine) == Some(health) && api.health == health && last.contains(output)).then_some(())
}

/// The pid of `api` on `machine` once it runs.
fn running_pid(server: &ServerProcess, machine: &str) -> Option<u64> {
    let p = process(&status_of(server, machine)?)?;
    (p.state == ProcState::Running).then_some(p.pid.map(u64::from)).flatten()
}

/// One HTTP/1.0 GET; the body, or None when anything failed.
fn get(address: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&address.parse().ok()?, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(format!("GET / HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_owned())
}

#[test]
fn a_killed_service_comes_back_and_a_failing_check_takes_it_out_of_rotation() {
    let work = tempfile::tempdir().unwrap();
    let fail_dir = work.path().join("fail");
    std::fs::create_dir_all(&fail_dir).unwrap();
    write_repo(&work.path().join("repo"), &fail_dir);
    let server = ServerProcess::start(&work.path().join("server"), "127.0.0.1:0");
    gantry(&server, &["apply", "--repo", work.path().join("repo").to_str().unwrap()]).ok();
    let args = ["--group", "api", "--address", "127.0.0.2", "--restart-delay", "300ms"];
    let mut agent = AgentProcess::start(&server, &work.path().join("a"), &args);
    let machine = agent.machine_id();

    eventually("api passes its check", Duration::from_secs(15), || {
        (health_of(&server, &machine) == Some(Health::Passing)).then_some(())
    });
    let pid = eventually("api runs", Duration::from_secs(5), || running_pid(&server, &machine));

    // Killed: back after the 300 ms restart delay.
    let killed = Instant::now();
    crate::kill_group(pid);
    let again =
        eventually("api runs again", Duration::from_secs(5), || running_pid(&server, &machine).filter(|p| *p != pid));
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "restarted after {took:?} (delay 300 ms)"
    );
    assert_ne!(again, pid);

    // Failing twice (fall 2, every 200 ms): out of rotation; then back after one pass (rise 1).
    eventually("api passes again", Duration::from_secs(5), || checked(&server, &machine, Health::Passing, "200"));
    std::fs::write(fail_dir.join("127.0.0.2"), "").unwrap();
    let failing = Instant::now();
    eventually("api is withdrawn", Duration::from_secs(3), || checked(&server, &machine, Health::Failing, "500"));
    assert!(failing.elapsed() < Duration::from_millis(1500), "withdrawn after {:?}", failing.elapsed());
    assert!(gantry(&server, &["lookup", "api"]).code != 0, "a failing instance is not looked up");
    std::fs::remove_file(fail_dir.join("127.0.0.2")).unwrap();
    eventually("api is back", Duration::from_secs(3), || checked(&server, &machine, Health::Passing, "200"));
    assert_eq!(
        gantry(&server, &["lookup", "api"]).ok().trim(),
        format!("127.0.0.2:{}", api_instances(&server)[0].port)
    );

    // A check that keeps failing (restart_after 8: 1.6 s of failures) restarts the process.
    let before = eventually("api runs", Duration::from_secs(5), || running_pid(&server, &machine));
    std::fs::write(fail_dir.join("127.0.0.2"), "").unwrap();
    eventually("a process that keeps failing its check is restarted", Duration::from_secs(8), || {
        running_pid(&server, &machine).filter(|p| *p != before)
    });
    std::fs::remove_file(fail_dir.join("127.0.0.2")).unwrap();
    eventually("api passes after its restart", Duration::from_secs(5), || {
        checked(&server, &machine, Health::Passing, "200")
    });

    // Its output and its restarts, through the server.
    let logs = gantry(&server, &["logs", "api"]).ok();
    assert!(logs.contains("GET /status 200"), "{logs}");
    assert!(logs.contains("GET /status 500"), "{logs}");

    // service:stop holds it (and it leaves rotation), service:start brings it back, service:restart gives a new process.
    let stopped = gantry(&server, &["service:stop", "api"]).ok();
    assert!(stopped.contains("done") && stopped.contains("stopped"), "{stopped}");
    eventually("a stopped api is withdrawn", Duration::from_secs(3), || {
        (health_of(&server, &machine) != Some(Health::Passing)).then_some(())
    });
    gantry(&server, &["service:start", "api"]).ok();
    let started = eventually("api runs after service:start", Duration::from_secs(5), || running_pid(&server, &machine));
    let restarted = gantry(&server, &["service:restart", "api", "--machine", &machine]).ok();
    assert!(restarted.contains("done"), "{restarted}");
    assert_ne!(running_pid(&server, &machine), Some(started));
    let missing = gantry(&server, &["service:restart", "nope"]);
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(missing.stderr.contains("no agent runs service \"nope\""), "{}", missing.stderr);

    // An agent killed outright leaves its service running; the next run of
    // the agent stops that one before starting its own (never two).
    let orphan = eventually("api runs", Duration::from_secs(5), || running_pid(&server, &machine));
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    assert!(alive(orphan), "the service outlives a SIGKILLed agent");
    let _again = AgentProcess::start(&server, &work.path().join("a"), &args);
    eventually("the leftover process is stopped", Duration::from_secs(10), || (!alive(orphan)).then_some(()));
    eventually("api runs under the new agent", Duration::from_secs(10), || {
        running_pid(&server, &machine).filter(|p| *p != orphan)
    });
}

#[test]
fn haproxy_fronts_a_required_service_and_keeps_routing_while_the_server_is_down() {
    let work = tempfile::tempdir().unwrap();
    let fail_dir = work.path().join("fail");
    std::fs::create_dir_all(&fail_dir).unwrap();
    write_repo(&work.path().join("repo"), &fail_dir);
    let server_dir = work.path().join("server");
    let mut server = ServerProcess::start(&server_dir, "127.0.0.1:0");
    gantry(&server, &["apply", "--repo", work.path().join("repo").to_str().unwrap()]).ok();
    let _a = AgentProcess::start(&server, &work.path().join("a"), &["--group", "api", "--address", "127.0.0.2"]);
    let _b = AgentProcess::start(&server, &work.path().join("b"), &["--group", "api", "--address", "127.0.0.3"]);
    let www = AgentProcess::start(
        &server,
        &work.path().join("w"),
        &["--group", "www", "--address", "127.0.0.4", "--lb", "haproxy"],
    );
    let www_id = www.machine_id();

    // www's requirement resolves to its own frontend, which stays put while api's instances move.
    eventually("www's env names the local frontend", Duration::from_secs(15), || {
        www.env_file("www").contains("export API='http://127.0.0.4:18500'").then_some(())
    });
    let frontend = "127.0.0.4:18500";
    let seen = eventually("both api instances answer through haproxy", Duration::from_secs(15), || {
        let bodies: Vec<String> = (0..10).filter_map(|_| get(frontend)).collect();
        (bodies.iter().any(|b| b.starts_with("127.0.0.2:")) && bodies.iter().any(|b| b.starts_with("127.0.0.3:")))
            .then_some(bodies)
    });
    // haproxy gave every request an id the service could log.
    assert!(seen.iter().all(|b| !b.contains("request-id=-")), "{seen:?}");

    let lb = gantry(&server, &["lb:status", "--machine", &www_id]).ok();
    assert!(lb.contains("haproxy") && lb.contains("api") && lb.contains(frontend), "{lb}");

    // A failing node leaves the backend; it comes back when it passes again.
    std::fs::write(fail_dir.join("127.0.0.2"), "").unwrap();
    eventually("only 127.0.0.3 answers", Duration::from_secs(5), || {
        (0..10).map(|_| get(frontend)).all(|b| b.is_some_and(|b| b.starts_with("127.0.0.3:"))).then_some(())
    });
    std::fs::remove_file(fail_dir.join("127.0.0.2")).unwrap();
    eventually("127.0.0.2 is back in the backend", Duration::from_secs(5), || {
        (0..10).filter_map(|_| get(frontend)).any(|b| b.starts_with("127.0.0.2:")).then_some(())
    });

    // The server goes away for 10 s: haproxy keeps routing to what it knew.
    let port = server.port().to_owned();
    server.kill();
    let until = Instant::now() + Duration::from_secs(10);
    let (mut ok, mut failed) = (0, 0);
    while Instant::now() < until {
        match get(frontend) {
            Some(_) => ok += 1,
            None => failed += 1,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(failed, 0, "{failed} of {} requests failed while the server was down", ok + failed);
    let server = ServerProcess::start(&server_dir, &format!("127.0.0.1:{port}"));
    eventually("the agents are back and the frontend still routes", Duration::from_secs(20), || {
        let status = status_of(&server, &www_id)?;
        (status.lb?.frontends.first().map(|f| f.backends.len()) == Some(2) && get(frontend).is_some()).then_some(())
    });
    // Each api node logged the ids haproxy gave its requests.
    let api_machine = api_instances(&server)[0].machine.clone();
    let logs = gantry(&server, &["logs", "api", "--machine", &api_machine]).ok();
    assert!(logs.lines().any(|l| l.starts_with("GET / 200 request-id=") && !l.ends_with("=-")), "{logs}");
}
