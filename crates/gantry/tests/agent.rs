//! `gantry agent` as processes beside a real `gantry server`: requirement
//! resolution into env files, listeners re-provisioning on provider
//! changes, coalescing, leases on SIGKILL, federations, deploys, bad input.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gantry_api::{Health, Instance, RunState};
use gantry_client::PutOptions;

use super::{AgentProcess, Scratch, ServerProcess, block_on, eventually, gantry, run_in, runs_total, status_of};

const FEDERATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/federations");

#[test]
fn www_resolves_api_and_follows_it_when_it_moves() {
    let scratch = Scratch::example_registered_only();
    let work = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&work.path().join("server"), "127.0.0.1:0");
    gantry(&server, &["apply", "--repo", scratch.dir.path().to_str().unwrap()]).ok();

    let mut api =
        AgentProcess::start(&server, &work.path().join("api1"), &["--group", "12_04-api", "--address", "127.0.0.2"]);
    let seen = work.path().join("seen.conf");
    let provision = format!("cp env/app-www.conf {}; echo run >> runs.log", seen.display());
    let www_dir = work.path().join("www");
    std::fs::create_dir_all(&www_dir).unwrap();
    // The provision command runs in the agent's working directory.
    let www_child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .env("GANTRY_TOKEN", server.token.as_deref().unwrap_or_default())
        .args(["agent", "--server", &server.url, "--data-dir", ".", "--group", "12_04-www", "--address", "127.0.0.3"])
        .args(["--provision-cmd", &provision, "--min-interval", "100ms"])
        .current_dir(&www_dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.path().join("www.log")).unwrap())
        .spawn()
        .unwrap();
    let www = AgentProcess { child: www_child, data_dir: www_dir.clone() };

    let conf = eventually("www's env file names the api", Duration::from_secs(20), || {
        Some(www.env_file("app-www")).filter(|c| c.contains("API_URL='http://127.0.0.2:1100'"))
    });
    assert!(conf.contains("DATABASE_URL='mysql://user:password@host:3306/database'"), "{conf}");
    assert!(conf.contains("export HOST='127.0.0.3'") && conf.contains("export PORT='8080'"), "{conf}");
    let mode = std::fs::metadata(www_dir.join("env/app-www.conf")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "env files hold secrets");
    // The JSON twin is written right after the .conf file: wait for it too.
    eventually("www's env JSON names the api", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(www_dir.join("env/app-www.json")).ok()?;
        serde_json::from_str::<serde_json::Value>(&text).ok().filter(|j| j["API_URL"] == "http://127.0.0.2:1100")
    });
    let www_id = www.machine_id();
    let first = eventually("www's first provision run", Duration::from_secs(10), || {
        status_of(&server, &www_id).filter(|s| runs_total(s) >= 1)
    });
    assert_eq!(first.group.as_deref(), Some("12_04-www"));
    assert!(std::fs::read_to_string(&seen).unwrap().contains("127.0.0.2"), "the run saw the env file");

    // `gantry resolve` from anywhere: the same answer, the password masked.
    let resolved = gantry(&server, &["resolve", "app-www", "--machine", &www_id]).ok();
    assert!(resolved.contains("API_URL=http://127.0.0.2:1100"), "{resolved}");
    assert!(resolved.contains("DATABASE_URL=mysql://user:****@host:3306/database"), "{resolved}");
    let shown = gantry(&server, &["resolve", "app-www", "--show-secrets", "--json"]).ok();
    assert!(shown.contains("mysql://user:password@host"), "{shown}");

    // The api goes away: www reports the unresolved requirement and keeps its file.
    api.stop();
    let status = eventually("www reports the missing provider", Duration::from_secs(10), || {
        status_of(&server, &www_id).filter(|s| s.problems.iter().any(|p| p.contains("READONLY_API_URL")))
    });
    assert!(status.problems[0].contains("seatgeek"), "{:?}", status.problems);
    assert!(www.env_file("app-www").contains("127.0.0.2"), "the previous env file is kept");

    // The api comes back elsewhere: www re-provisions with the new address.
    let _api2 =
        AgentProcess::start(&server, &work.path().join("api2"), &["--group", "12_04-api", "--address", "127.0.0.4"]);
    eventually("www's env file follows the api", Duration::from_secs(20), || {
        Some(()).filter(|()| www.env_file("app-www").contains("API_URL='http://127.0.0.4:1100'"))
    });
    eventually("a provision run sees the new address", Duration::from_secs(20), || {
        std::fs::read_to_string(&seen).ok().filter(|s| s.contains("127.0.0.4"))
    });
    // The run wrote `seen` while it ran; its end is published a moment later.
    eventually("the second run is published, with no problem", Duration::from_secs(10), || {
        status_of(&server, &www_id).filter(|s| s.problems.is_empty() && runs_total(s) >= 2)
    });
    drop(api);
}

#[test]
fn a_burst_of_a_hundred_provider_changes_makes_at_most_two_runs_that_never_overlap() {
    let scratch = Scratch::example_registered_only();
    let work = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&work.path().join("server"), "127.0.0.1:0");
    gantry(&server, &["apply", "--repo", scratch.dir.path().to_str().unwrap()]).ok();
    let client = server.client();
    let fake_api = |port: u16| Instance {
        service: "api".into(),
        id: "fake".into(),
        machine: "fake".into(),
        address: "127.0.0.9".into(),
        port,
        properties: Default::default(),
        health: Health::Passing,
        federation: "seatgeek".into(),
        public: false,
        provides: [("READONLY_API_URL".to_owned(), format!("http://127.0.0.9:{port}"))].into(),
    };
    block_on(client.put_instance(&fake_api(2000), PutOptions::default())).unwrap();
    let log = work.path().join("runs.log");
    let provision = format!("echo start $(date +%s%N) >> {0}; sleep 2; echo end $(date +%s%N) >> {0}", log.display());
    let www = AgentProcess::start(
        &server,
        &work.path().join("www"),
        &["--group", "12_04-www", "--address", "127.0.0.3", "--provision-cmd", &provision, "--min-interval", "200ms"],
    );
    let id = www.machine_id();
    let before = eventually("the first run ends", Duration::from_secs(20), || {
        status_of(&server, &id)
            .filter(|s| runs_total(s) >= 1 && s.listener.as_ref().is_some_and(|l| l.state == RunState::Idle))
    });

    let started = Instant::now();
    block_on(async {
        for i in 1..=100 {
            client.put_instance(&fake_api(2000 + i), PutOptions::default()).await.unwrap();
        }
    });
    // The first change starts a 2 s run; every later one folds into the one
    // queued run, as long as the burst is shorter than that run (even on a
    // machine loaded by a parallel test run).
    assert!(started.elapsed() < Duration::from_secs(2), "the 100 changes took {:?}", started.elapsed());
    eventually("www's env file has the last change", Duration::from_secs(10), || {
        Some(()).filter(|()| www.env_file("app-www").contains("127.0.0.9:2100"))
    });
    // Let any queued run start and finish.
    std::thread::sleep(Duration::from_millis(2500));
    let after = eventually("the listener is idle", Duration::from_secs(20), || {
        status_of(&server, &id).filter(|s| s.listener.as_ref().is_some_and(|l| l.state == RunState::Idle))
    });
    let runs = runs_total(&after) - runs_total(&before);
    assert!((1..=2).contains(&runs), "{runs} runs for 100 changes");

    let lines: Vec<(String, u128)> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            let (what, at) = l.split_once(' ').unwrap();
            (what.to_owned(), at.parse().unwrap())
        })
        .collect();
    assert_eq!(lines.len() as u64, 2 * runs_total(&after), "{lines:?}");
    for pair in lines.chunks(2) {
        assert_eq!((pair[0].0.as_str(), pair[1].0.as_str()), ("start", "end"), "runs overlapped: {lines:?}");
    }
}

#[test]
fn a_killed_agent_leaves_lookups_within_its_lease_and_comes_back_without_duplicates() {
    let scratch = Scratch::example_registered_only();
    let work = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&work.path().join("server"), "127.0.0.1:0");
    gantry(&server, &["apply", "--repo", scratch.dir.path().to_str().unwrap()]).ok();
    let args = ["--group", "12_04-api", "--address", "127.0.0.2", "--lease-ttl", "2s"];
    let mut api = AgentProcess::start(&server, &work.path().join("api"), &args);
    let id = api.machine_id();
    eventually("the api is looked up", Duration::from_secs(10), || {
        gantry(&server, &["lookup", "api", "--json"]).stdout.contains(&id).then_some(())
    });
    let machine: serde_json::Value =
        serde_json::from_str(&gantry(&server, &["machine:show", &id, "--json"]).ok()).unwrap();
    assert!(machine["facts"]["cpu_count"].as_u64().unwrap() >= 1, "{machine}");
    assert!(machine["facts"]["memory_bytes"].as_u64().unwrap() > 0, "{machine}");
    assert_eq!(machine["labels"]["group"], "12_04-api");

    let _ = api.child.kill();
    let _ = api.child.wait();
    let killed = Instant::now();
    eventually("the killed agent's instance leaves lookups", Duration::from_secs(10), || {
        (gantry(&server, &["lookup", "api"]).code == 1).then_some(())
    });
    // TTL 2 s; the store checks expiry at least every second.
    assert!(killed.elapsed() < Duration::from_millis(3500), "took {:?}", killed.elapsed());
    assert!(gantry(&server, &["machine:show", &id]).code != 0, "the machine left too");

    let _again = AgentProcess::start(&server, &work.path().join("api"), &args);
    eventually("the restarted agent is back", Duration::from_secs(10), || {
        gantry(&server, &["lookup", "api", "--json"]).stdout.contains(&id).then_some(())
    });
    let hosts: Vec<Instance> =
        serde_json::from_str(&gantry(&server, &["service:hosts", "api", "--json"]).ok()).unwrap();
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert_eq!(hosts[0].id, id, "the same machine id, from its data dir");
}

#[test]
fn a_federation_never_resolves_another_federations_provider() {
    let work = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&work.path().join("server"), "127.0.0.1:0");
    gantry(&server, &["apply", "--repo", FEDERATIONS]).ok();
    let _blue =
        AgentProcess::start(&server, &work.path().join("blue"), &["--group", "blue-db", "--address", "127.0.0.2"]);
    // blue-db is registered before green-app starts: green-app sees it in its
    // first read and still does not take it.
    eventually("blue-db is registered", Duration::from_secs(10), || {
        gantry(&server, &["lookup", "blue-db"]).stdout.contains("5432").then_some(())
    });
    let app =
        AgentProcess::start(&server, &work.path().join("app"), &["--group", "green-app", "--address", "127.0.0.3"]);
    let id = app.machine_id();
    let status = eventually("green-app reports DB_URL unresolved", Duration::from_secs(10), || {
        status_of(&server, &id).filter(|s| s.problems.iter().any(|p| p.contains("DB_URL")))
    });
    assert!(status.problems[0].contains("federation \"green\""), "{:?}", status.problems);
    assert!(!status.problems[0].contains("5432"), "nothing of blue's values crosses: {:?}", status.problems);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!app.env_file("green-app").contains("blue"), "{}", app.env_file("green-app"));
    assert!(gantry(&server, &["resolve", "green-app"]).code != 0);

    let _green =
        AgentProcess::start(&server, &work.path().join("green"), &["--group", "green-db", "--address", "127.0.0.4"]);
    let conf = eventually("green-app gets green's database", Duration::from_secs(10), || {
        Some(app.env_file("green-app")).filter(|c| c.contains("DATABASE_URL="))
    });
    assert!(conf.contains("DATABASE_URL='postgres://127.0.0.4:5433/green'"), "{conf}");
}

#[test]
fn deploys_report_each_node_and_failures_say_why() {
    let scratch = Scratch::example_registered_only();
    let work = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&work.path().join("server"), "127.0.0.1:0");
    gantry(&server, &["apply", "--repo", scratch.dir.path().to_str().unwrap()]).ok();
    let flag = work.path().join("fail");
    let cmd = format!(
        "echo provisioning; if [ -f {0} ]; then echo broken >&2; exit 3; fi; if [ -f {0}.hang ]; then sleep 30; fi",
        flag.display()
    );
    let common = ["--provision-cmd", cmd.as_str(), "--min-interval", "100ms", "--provision-timeout", "1s"];
    let a = AgentProcess::start(
        &server,
        &work.path().join("a"),
        &[&["--group", "12_04-bee", "--address", "127.0.0.2"][..], &common].concat(),
    );
    let b = AgentProcess::start(
        &server,
        &work.path().join("b"),
        &[&["--group", "12_04-bee", "--address", "127.0.0.3"][..], &common].concat(),
    );
    let (a_id, b_id) = (a.machine_id(), b.machine_id());
    for id in [&a_id, &b_id] {
        eventually("the agents registered", Duration::from_secs(10), || status_of(&server, id));
    }

    let out = gantry(&server, &["instance:deploy", "12_04-bee", "-n", "1"]).ok();
    assert!(out.contains(&a_id) && out.contains(&b_id), "{out}");
    assert_eq!(out.matches(" ok ").count(), 2, "{out}");

    std::fs::write(&flag, "").unwrap();
    let failed = gantry(&server, &["instance:deploy", "12_04-bee", "-n", "2"]);
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(failed.stdout.contains("FAILED") && failed.stdout.contains("exit code 3"), "{failed:?}");
    let status = status_of(&server, &a_id).unwrap();
    assert!(
        status.listener.as_ref().and_then(|l| l.last_run.as_ref()).unwrap().output_tail.contains("broken"),
        "{status:?}"
    );
    let table = gantry(&server, &["listener:status"]).ok();
    assert!(table.contains("exit 3"), "{table}");

    std::fs::remove_file(&flag).unwrap();
    std::fs::write(flag.with_extension("hang"), "").unwrap();
    let hung = gantry(&server, &["instance:deploy", "12_04-bee", "-n", "2"]);
    assert!(hung.stdout.contains("timed out"), "{hung:?}");

    // Off: changes are noted, nothing runs; on queues a run at once.
    std::fs::remove_file(flag.with_extension("hang")).unwrap();
    gantry(&server, &["listener:off", "--all"]).ok();
    eventually("the listener is off", Duration::from_secs(10), || {
        status_of(&server, &a_id).filter(|s| s.listener.as_ref().is_some_and(|l| !l.enabled))
    });
    let runs = runs_total(&status_of(&server, &a_id).unwrap());
    gantry(&server, &["listener:on", "--machine", &a_id]).ok();
    eventually("turning it on runs it", Duration::from_secs(10), || {
        status_of(&server, &a_id).filter(|s| runs_total(s) > runs && s.listener.as_ref().is_some_and(|l| l.enabled))
    });
    assert!(gantry(&server, &["listener:on"]).bad_input().contains("--machine ID"));
}

#[test]
fn an_agent_waits_for_a_server_that_is_down_and_an_unwritable_env_dir_is_an_error() {
    let work = tempfile::tempdir().unwrap();
    // A free port with nobody on it yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    // A first start only to bootstrap its token; then it is down while the agent starts.
    let mut first = ServerProcess::start(&work.path().join("server"), &format!("127.0.0.1:{port}"));
    let token = first.token.clone();
    first.kill();
    let agent = AgentProcess::start_at(&url, token.as_deref(), &work.path().join("a"), &["--address", "127.0.0.2"]);
    let id = agent.machine_id();
    std::thread::sleep(Duration::from_millis(1500));
    let server = ServerProcess::start(&work.path().join("server"), &format!("127.0.0.1:{port}"));
    eventually("the agent registers once the server is up", Duration::from_secs(15), || {
        (gantry(&server, &["machine:show", &id]).code == 0).then_some(())
    });
    assert!(agent.log().contains("retrying"), "{}", agent.log());

    let file = work.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let bad = run_in(
        Path::new("."),
        &[
            "agent",
            "--server",
            &server.url,
            "--data-dir",
            work.path().join("b").to_str().unwrap(),
            "--env-dir",
            file.join("env").to_str().unwrap(),
        ],
    );
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("creating the env dir") && bad.stderr.contains("a-file/env"), "{}", bad.stderr);
}

#[test]
fn a_service_leaving_a_node_is_withdrawn_first_then_deleted_after_the_drain() {
    let scratch = Scratch::example_registered_only();
    let work = tempfile::tempdir().unwrap();
    let deleted = work.path().join("deleted");
    // A service without PORT: the agent assigns one and keeps it.
    std::fs::write(
        scratch.path("data_bags/service/djjob.json"),
        format!(r#"{{"id": "djjob", "command": true, "on_delete": "echo $HOST > {}"}}"#, deleted.display()),
    )
    .unwrap();
    let server = ServerProcess::start(&work.path().join("server"), "127.0.0.1:0");
    let repo = scratch.dir.path().to_str().unwrap().to_owned();
    gantry(&server, &["apply", "--repo", &repo]).ok();
    let bee = AgentProcess::start(
        &server,
        &work.path().join("bee"),
        &["--group", "12_04-bee", "--address", "127.0.0.5", "--drain", "700ms", "--enable-script-checks"],
    );
    let hosts: Vec<Instance> = eventually("djjob is registered", Duration::from_secs(10), || {
        let hosts: Vec<Instance> =
            serde_json::from_str(&gantry(&server, &["service:hosts", "djjob", "--json"]).ok()).unwrap();
        (!hosts.is_empty()).then_some(hosts)
    });
    assert!(gantry_agent::agent::PORT_RANGE.contains(&hosts[0].port), "{hosts:?}");
    eventually("djjob's env file", Duration::from_secs(10), || {
        Some(()).filter(|()| bee.env_file("djjob").contains("export PORT="))
    });

    scratch.edit("nodes.json", "\"recipe[seatgeek-service::djjob]\"", "\"recipe[seatgeek-service::cronq-workers]\"");
    let applied = gantry(&server, &["apply", "--repo", &repo]).ok();
    assert!(applied.contains("group") && applied.contains("12_04-bee"), "{applied}");
    eventually("djjob is withdrawn", Duration::from_secs(10), || {
        gantry(&server, &["service:hosts", "djjob", "--json"]).ok().trim().eq("[]").then_some(())
    });
    let withdrawn = Instant::now();
    assert!(!deleted.exists(), "the hook waits for the drain");
    eventually("the on_delete hook ran", Duration::from_secs(10), || std::fs::read_to_string(&deleted).ok());
    assert!(withdrawn.elapsed() >= Duration::from_millis(500), "{:?}", withdrawn.elapsed());
    assert_eq!(
        std::fs::read_to_string(&deleted).unwrap().trim(),
        "127.0.0.5",
        "the hook ran with the service's environment"
    );
    eventually("its env files are removed", Duration::from_secs(5), || {
        Some(()).filter(|()| bee.env_file("djjob").is_empty())
    });
}

/// Without `--enable-script-checks` an agent runs no command a service
/// definition brings besides the service itself: its command check does not
/// run (the instance stays unchecked, out of rotation, and the agent says
/// why), and its `on_delete` hook does not run when it leaves.
#[test]
fn without_script_checks_a_definition_runs_no_check_or_hook_command() {
    let scratch = Scratch::example_registered_only();
    let work = tempfile::tempdir().unwrap();
    let (checked, deleted) = (work.path().join("checked"), work.path().join("deleted"));
    std::fs::write(
        scratch.path("data_bags/service/djjob.json"),
        format!(
            r#"{{"id": "djjob", "command": true, "on_delete": "touch {}",
                "check": {{"type": "command", "command": "touch {}", "interval": "100ms", "timeout": "100ms"}}}}"#,
            deleted.display(),
            checked.display()
        ),
    )
    .unwrap();
    let server = ServerProcess::start(&work.path().join("server"), "127.0.0.1:0");
    let repo = scratch.dir.path().to_str().unwrap().to_owned();
    gantry(&server, &["apply", "--repo", &repo]).ok();
    let bee = AgentProcess::start(
        &server,
        &work.path().join("bee"),
        &["--group", "12_04-bee", "--address", "127.0.0.6", "--drain", "200ms"],
    );
    let id = bee.machine_id();
    let status = eventually("the agent says why the check does not run", Duration::from_secs(10), || {
        status_of(&server, &id).filter(|s| s.problems.iter().any(|p| p.contains("--enable-script-checks")))
    });
    assert!(status.problems.iter().any(|p| p.contains("djjob")), "{status:?}");
    let hosts: Vec<Instance> =
        serde_json::from_str(&gantry(&server, &["service:hosts", "djjob", "--json"]).ok()).unwrap();
    assert_eq!(hosts.iter().map(|i| i.health).collect::<Vec<_>>(), [Health::Unknown], "{hosts:?}");

    scratch.edit("nodes.json", "\"recipe[seatgeek-service::djjob]\"", "\"recipe[seatgeek-service::cronq-workers]\"");
    gantry(&server, &["apply", "--repo", &repo]).ok();
    eventually("djjob is withdrawn", Duration::from_secs(10), || {
        gantry(&server, &["service:hosts", "djjob", "--json"]).ok().trim().eq("[]").then_some(())
    });
    // Past the drain, with time to spare for a hook that would have run.
    std::thread::sleep(Duration::from_millis(1200));
    assert!(!checked.exists(), "the command check ran");
    assert!(!deleted.exists(), "the on_delete hook ran");
}
