//! `gantry server` as a process: the client commands against it, `gantry
//! watch` on KV and store prefixes and across a server restart, and
//! acknowledged writes surviving SIGKILL.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gantry_client::PutOptions;

use super::{ServerProcess, eventually, gantry, run_in};

#[test]
fn client_commands_against_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), "127.0.0.1:0");
    assert_eq!(gantry(&server, &["kv:put", "datastores/PRIMARY_DATABASE_URL", "mysql://db:3306/x"]).ok(), "");
    assert_eq!(gantry(&server, &["kv:get", "datastores/PRIMARY_DATABASE_URL"]).ok(), "mysql://db:3306/x\n");
    let missing = gantry(&server, &["kv:get", "datastores/NOPE"]);
    assert_eq!((missing.code, missing.stdout.as_str()), (1, ""));
    assert!(missing.stderr.contains("no key \"datastores/NOPE\""), "{}", missing.stderr);
    // compare-and-set: 0 means "must not exist".
    let lost = gantry(&server, &["kv:put", "datastores/PRIMARY_DATABASE_URL", "other", "--cas", "0"]);
    assert_eq!(lost.code, 1, "{lost:?}");
    assert_eq!(gantry(&server, &["kv:del", "datastores/PRIMARY_DATABASE_URL"]).ok(), "");
    // An invalid key is bad input.
    let bad = gantry(&server, &["kv:put", "a//b", "x"]).bad_input();
    assert!(bad.contains("invalid key"), "{bad}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = server.client();
    rt.block_on(async {
        let m = gantry_api::Machine {
            id: "m1".into(),
            hostname: "api-1".into(),
            address: "127.0.0.2".into(),
            facts: Default::default(),
            labels: BTreeMap::from([("group".into(), "12_04-api".into())]),
            updated_at: 0,
            capacity: None,
        };
        client.put_machine(&m, PutOptions::default()).await.unwrap();
        let i = gantry_api::Instance {
            service: "mysql".into(),
            id: "m1-mysql".into(),
            machine: "m1".into(),
            address: "127.0.0.2".into(),
            port: 3306,
            properties: BTreeMap::from([("mysql.master".into(), "true".into())]),
            health: gantry_api::Health::Passing,
            federation: "default".into(),
            public: false,
            provides: BTreeMap::new(),
        };
        client.put_instance(&i, PutOptions::default()).await.unwrap();
    });
    let machines: serde_json::Value = serde_json::from_str(&gantry(&server, &["machine:list", "--json"]).ok()).unwrap();
    assert_eq!(machines[0]["id"], "m1");
    assert_eq!(machines[0]["labels"]["group"], "12_04-api");
    assert!(gantry(&server, &["machine:show", "m1"]).ok().contains("\"hostname\": \"api-1\""));
    assert_eq!(gantry(&server, &["machine:show", "m9"]).code, 2);
    assert_eq!(gantry(&server, &["lookup", "mysql", "master=true"]).ok(), "127.0.0.2:3306\n");
    assert_eq!(gantry(&server, &["lookup", "mysql", "master=false"]).code, 1);
    let hosts = gantry(&server, &["service:hosts", "mysql", "--where", "master=true"]).ok();
    assert!(hosts.lines().nth(1).is_some_and(|l| l.contains("m1-mysql")), "{hosts}");
    let on: serde_json::Value = serde_json::from_str(&gantry(&server, &["service:on", "m1", "--json"]).ok()).unwrap();
    assert_eq!(on[0]["service"], "mysql");
}

#[test]
fn unreachable_server_says_how_to_fix_it() {
    let run = run_in(Path::new("."), &["kv:get", "x", "--server", "http://127.0.0.1:9"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("start one with `gantry server`"), "{}", run.stderr);
    assert!(run.stderr.contains("cannot reach the gantry server at http://127.0.0.1:9"), "{}", run.stderr);
}

/// Reads lines from a child's stdout on a thread, so the test can wait with a bound.
fn line_reader(child: &mut Child) -> Receiver<String> {
    lines_of(child.stdout.take().unwrap())
}

/// The lines of a pipe, read on a thread.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A running `gantry watch ARGS`: its stdout and stderr, line by line.
pub(crate) struct Watching {
    child: Child,
    stdout: Receiver<String>,
    pub stderr: Receiver<String>,
}

impl Watching {
    pub fn start(server: &ServerProcess, args: &[&str]) -> Watching {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .env("GANTRY_TOKEN", server.token.as_deref().unwrap_or_default())
            .arg("watch")
            .args(args)
            .args(["--server", &server.url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        Watching { child, stdout, stderr }
    }

    /// The next event printed, as (kind, key, value).
    pub fn next_event(&self) -> (String, String, Option<String>) {
        parse_event(&self.stdout.recv_timeout(Duration::from_secs(10)).expect("an event within 10 s"))
    }

    /// The first event after it started, when nothing tells when it has
    /// (no notice: there are keys already): writes with `write(n)` until
    /// one is seen, at most 20 times.
    fn first_event(&self, mut write: impl FnMut(usize)) -> (String, String, Option<String>) {
        for n in 0..20 {
            write(n);
            if let Ok(line) = self.stdout.recv_timeout(Duration::from_millis(500)) {
                return parse_event(&line);
            }
        }
        panic!("no event after 20 writes");
    }

    /// Stops it; everything it wrote on stderr.
    pub fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The pipe is closed now: the reader ends after the last line.
        self.stderr.iter().collect()
    }
}

/// A line of `gantry watch` as (kind, key, value).
fn parse_event(line: &str) -> (String, String, Option<String>) {
    let event: serde_json::Value = serde_json::from_str(line).unwrap();
    let text = |field: &str| event[field].as_str().map(str::to_owned);
    (text("kind").unwrap(), text("key").unwrap(), text("value"))
}

pub(crate) fn event(kind: &str, key: &str, value: Option<&str>) -> (String, String, Option<String>) {
    (kind.to_owned(), key.to_owned(), value.map(str::to_owned))
}

#[test]
fn watch_follows_kv_keys_as_kv_commands_name_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), "127.0.0.1:0");
    let watch = Watching::start(&server, &["bars/"]);
    // Nothing there yet: said once, so a silent wait is not mistaken for a hang.
    let notice = watch.stderr.recv_timeout(Duration::from_secs(10)).expect("a notice");
    assert_eq!(notice, "no keys under bars/ yet; waiting for changes");
    gantry(&server, &["kv:put", "bars/x", "1"]).ok();
    assert_eq!(watch.next_event(), event("put", "bars/x", Some("1")));
    // Only what is under the prefix, with KV keys.
    gantry(&server, &["kv:put", "foo/y", "2"]).ok();
    gantry(&server, &["kv:put", "bars/z", "3"]).ok();
    gantry(&server, &["kv:del", "bars/x"]).ok();
    assert_eq!(watch.next_event(), event("put", "bars/z", Some("3")));
    assert_eq!(watch.next_event(), event("delete", "bars/x", None));
    assert_eq!(watch.stop(), Vec::<String>::new(), "the notice came once, and nothing else");

    // A prefix that has keys: no notice; a store-looking prefix gets a hint.
    let watch = Watching::start(&server, &["bars/"]);
    let hinted = Watching::start(&server, &["kv/bars/"]);
    let hint = hinted.stderr.recv_timeout(Duration::from_secs(10)).expect("a notice");
    assert!(hint.starts_with("no keys under kv/bars/ yet; waiting for changes"), "{hint}");
    let help = hinted.stderr.recv_timeout(Duration::from_secs(10)).expect("its help line");
    assert!(help.contains("run `gantry watch --store kv/bars/`"), "{help}");
    let (kind, key, _) = watch.first_event(|n| {
        gantry(&server, &["kv:put", &format!("bars/w{n}"), "4"]).ok();
    });
    assert_eq!(kind, "put");
    assert!(key.starts_with("bars/w"), "{key}");
    assert_eq!(watch.stop(), Vec::<String>::new());
    hinted.stop();
}

#[test]
fn watch_follows_store_prefixes_with_store() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), "127.0.0.1:0");
    let watch = Watching::start(&server, &["--store", "machines/"]);
    let notice = watch.stderr.recv_timeout(Duration::from_secs(10)).expect("a notice");
    assert_eq!(notice, "no keys under machines/ yet; waiting for changes");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = server.client();
    let machine = |id: &str| gantry_api::Machine {
        id: id.into(),
        hostname: id.into(),
        address: "127.0.0.2".into(),
        facts: Default::default(),
        labels: BTreeMap::new(),
        updated_at: 0,
        capacity: None,
    };
    rt.block_on(client.put_machine(&machine("m1"), PutOptions::default())).unwrap();
    let (kind, key, value) = watch.next_event();
    assert_eq!((kind.as_str(), key.as_str()), ("put", "machines/m1"));
    assert!(value.unwrap().contains("\"hostname\":\"m1\""));
    // KV writes are under kv/ in the store, and shown as store keys here.
    let all_kv = Watching::start(&server, &["--store", "kv/"]);
    let _ = all_kv.stderr.recv_timeout(Duration::from_secs(10)).expect("a notice: no KV key yet");
    gantry(&server, &["kv:put", "datastores/DB", "mysql://db"]).ok();
    assert_eq!(all_kv.next_event(), event("put", "kv/datastores/DB", Some("mysql://db")));
    // A store prefix with keys under it: no notice.
    rt.block_on(client.put_machine(&machine("m2"), PutOptions::default())).unwrap();
    assert_eq!(watch.next_event().1, "machines/m2");
    let again = Watching::start(&server, &["--store", "machines/"]);
    let (_, key, _) = again.first_event(|n| {
        rt.block_on(client.put_machine(&machine(&format!("n{n}")), PutOptions::default())).unwrap();
    });
    assert!(key.starts_with("machines/n"), "{key}");
    assert_eq!(again.stop(), Vec::<String>::new());
    assert_eq!(watch.stop(), Vec::<String>::new(), "the notice came once");
    all_kv.stop();
}

#[test]
fn watch_streams_json_lines_and_resumes_across_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), "127.0.0.1:0");
    let url = server.url.clone();
    let mut watch = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .env("GANTRY_TOKEN", server.token.as_deref().unwrap_or_default())
        .args(["watch", "app/", "--from", "1", "--server", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = line_reader(&mut watch);
    for i in 0..5 {
        gantry(&server, &["kv:put", &format!("app/k{i}"), &i.to_string()]).ok();
    }
    let mut seen = Vec::new();
    while seen.len() < 5 {
        seen.push(lines.recv_timeout(Duration::from_secs(10)).expect("watch output"));
    }
    // Kill the server hard and bring it back on the same port and data.
    let port = server.port().to_string();
    server.kill();
    let server = ServerProcess::start(dir.path(), &format!("127.0.0.1:{port}"));
    for i in 5..10 {
        gantry(&server, &["kv:put", &format!("app/k{i}"), &i.to_string()]).ok();
    }
    gantry(&server, &["kv:del", "app/k0"]).ok();
    while seen.len() < 11 {
        seen.push(lines.recv_timeout(Duration::from_secs(15)).expect("watch output after the restart"));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let events: Vec<serde_json::Value> = seen.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let keys: Vec<String> =
        events.iter().map(|e| format!("{} {}", e["kind"].as_str().unwrap(), e["key"].as_str().unwrap())).collect();
    let mut expected: Vec<String> = (0..10).map(|i| format!("put app/k{i}")).collect();
    expected.push("delete app/k0".into());
    assert_eq!(keys, expected, "every change exactly once, in order");
    let revisions: Vec<u64> = events.iter().map(|e| e["revision"].as_u64().unwrap()).collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    assert_eq!(events[3]["value"], "3");
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let acknowledged: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for round in 0..4u64 {
        let mut server = ServerProcess::start(dir.path(), "127.0.0.1:0");
        let client = server.client();
        let stop_at = Instant::now() + Duration::from_millis(150 + (round * 97) % 250);
        let writers: Vec<_> = (0..16)
            .map(|w| {
                let client = client.clone();
                let acknowledged = Arc::clone(&acknowledged);
                rt.spawn(async move {
                    // Bounded: at most 10,000 writes per writer and round.
                    for n in 0..10_000u32 {
                        let key = format!("crash/r{round}-w{w}-{n}");
                        let value = format!("{round}.{w}.{n}");
                        match client.kv_put(&key, &value, PutOptions::default()).await {
                            Ok(_) => {
                                acknowledged.lock().unwrap().insert(key, value);
                            }
                            Err(_) => return, // the server is gone
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(stop_at.saturating_duration_since(Instant::now()));
        // On a loaded machine the first writes may take longer than the
        // round's moment: kill once this round has had one acknowledged.
        let prefix = format!("crash/r{round}-");
        eventually("the round's first acknowledged write", Duration::from_secs(20), || {
            acknowledged.lock().unwrap().keys().any(|k| k.starts_with(&prefix)).then_some(())
        });
        server.kill();
        for w in writers {
            rt.block_on(w).unwrap();
        }
        // Restart and check every acknowledged write of every round so far.
        let server = ServerProcess::start(dir.path(), "127.0.0.1:0");
        let client = server.client();
        let stored = rt.block_on(client.kv_list("crash/")).unwrap();
        let stored: BTreeMap<String, String> = stored.entries.into_iter().map(|e| (e.key, e.value)).collect();
        let acked = acknowledged.lock().unwrap();
        assert!(!acked.is_empty(), "round {round} acknowledged nothing");
        eprintln!("round {round}: {} acknowledged writes so far, all present after SIGKILL", acked.len());
        for (key, value) in acked.iter() {
            assert_eq!(stored.get(key), Some(value), "round {round}: acknowledged write {key} lost");
        }
    }
}

#[test]
fn server_on_etcd_from_the_command_line() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let etcd = rt
        .block_on(gantry_store::local_etcd::LocalEtcd::start())
        .unwrap_or_else(|e| panic!("{e} (install etcd with `apt-get install etcd-server`, or run scripts/test)"));
    let store = format!("etcd://{}", etcd.endpoint().trim_start_matches("http://"));
    let dir = tempfile::tempdir().unwrap();
    let a = ServerProcess::start_with(dir.path(), "127.0.0.1:0", &store);
    let b = ServerProcess::start_with(dir.path(), "127.0.0.1:0", &store);
    gantry(&a, &["kv:put", "datastores/ES", "http://es:9200"]).ok();
    // A second server on the same cluster serves the same data.
    assert_eq!(gantry(&b, &["kv:get", "datastores/ES"]).ok(), "http://es:9200\n");
}

#[test]
fn unknown_store_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_in(dir.path(), &["server", "--store", "postgres://x"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("use --store embedded, --store redb, or --store etcd://HOST:PORT"), "{}", run.stderr);
}

/// Every limit is a flag of `gantry server`: each value reaches the
/// server (its `/metrics` shows them all), one over it is refused with
/// the flag to raise it named, and a value that is no limit is bad input.
#[test]
fn limits_are_flags_shown_in_metrics_and_named_when_hit() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        ("--max-connections-per-ip", "7", "connections_per_ip", "7"),
        ("--max-watches-per-token", "8", "watches_per_token", "8"),
        ("--max-leases-per-token", "9", "leases_per_token", "9"),
        ("--max-lease-ttl", "90s", "lease_ttl_seconds", "90"),
        ("--max-keys-per-token", "3", "keys_per_token", "3"),
        ("--max-bytes-per-token", "2MiB", "bytes_per_token", "2097152"),
        ("--max-requests-per-second-per-token", "500", "requests_per_second_per_token", "500"),
        ("--max-request-burst-per-token", "600", "request_burst_per_token", "600"),
    ];
    let args: Vec<&str> = flags.iter().flat_map(|(flag, value, _, _)| [*flag, *value]).collect();
    let server = ServerProcess::start_with_args(dir.path(), "127.0.0.1:0", "embedded", &args, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // reqwest's rustls has no crypto provider of its own in this build.
    gantry_tls::config::install_crypto_provider();
    let metrics = rt.block_on(async {
        let request = reqwest::Client::new().get(format!("{}/metrics", server.url));
        request.bearer_auth(server.token.as_deref().unwrap()).send().await.unwrap().text().await.unwrap()
    });
    for (flag, _, label, shown) in flags {
        let line = format!("gantry_limit{{limit=\"{label}\"}} {shown}\n");
        assert!(metrics.contains(&line), "{flag}: no {line:?} in\n{metrics}");
    }

    for key in ["a", "b", "c"] {
        gantry(&server, &["kv:put", key, "1"]).ok();
    }
    // Refused as every 4xx is: exit 2, the server's message.
    let over = gantry(&server, &["kv:put", "d", "1"]).bad_input();
    assert!(over.contains("holds 3 keys") && over.contains("--max-keys-per-token"), "{over}");

    for (flag, value) in
        [("--max-bytes-per-token", "12XB"), ("--max-lease-ttl", "400days"), ("--max-keys-per-token", "0")]
    {
        let refused = ServerProcess::try_start(dir.path(), &[flag, value]);
        assert!(refused.contains(flag), "{flag} {value}: {refused}");
    }
}
