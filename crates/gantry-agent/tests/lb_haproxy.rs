//! haproxy as the local load balancer, with the real haproxy: the rendered
//! configurations (golden files, each accepted by `haproxy -c`), reloads
//! that drop no request, rejected plans that change nothing, the request
//! id, a dead master started again, and a stop that leaves no process.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use expect_test::expect_file;
use gantry_agent::lb::haproxy::{Haproxy, Settings, render};
use gantry_agent::lb::{Backend, Frontend, LbError, Mode, Plan};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The haproxy binary, or a failure that says how to install it: these
/// tests never pass by skipping.
fn binary() -> PathBuf {
    Haproxy::find_binary()
        .expect("haproxy is not installed: `apt-get install haproxy` (or run scripts/install-test-deps)")
}

fn frontend(service: &str, bind: &str, mode: Mode, backends: &[(&str, &str)]) -> Frontend {
    Frontend {
        service: service.to_owned(),
        bind: bind.parse().unwrap(),
        mode,
        public: false,
        backends: backends
            .iter()
            .map(|(id, address)| Backend { id: (*id).to_owned(), address: address.parse().unwrap() })
            .collect(),
    }
}

/// Renders `plan` against its golden file and has `haproxy -c` check it.
fn check_golden(plan: &Plan, golden: expect_test::ExpectFile) {
    // The same bytes whoever runs the test (as root, workers drop to an account).
    let settings = Settings { run_as: None, ..Settings::new("/run/gantry/lb") };
    check_golden_with(plan, &settings, golden);
}

fn check_golden_with(plan: &Plan, settings: &Settings, golden: expect_test::ExpectFile) {
    let config = render(plan, settings);
    golden.assert_eq(&config);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("haproxy.cfg");
    std::fs::write(&file, &config).unwrap();
    let output = std::process::Command::new(binary()).arg("-c").arg("-f").arg(&file).output().unwrap();
    assert!(
        output.status.success(),
        "haproxy -c refused the golden configuration:\n{}\n{config}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn rendered_configurations_match_their_golden_files_and_pass_haproxy_check() {
    check_golden(&Plan::default(), expect_file!["golden/haproxy/empty.cfg"]);
    // An agent running as root: haproxy's workers run as an unprivileged account.
    let unprivileged = Settings { run_as: Some((65534, 65534)), ..Settings::new("/run/gantry/lb") };
    check_golden_with(&Plan::default(), &unprivileged, expect_file!["golden/haproxy/unprivileged.cfg"]);
    let web =
        frontend("web", "127.0.0.1:8080", Mode::Http, &[("web-2", "10.0.0.12:31002"), ("web-1", "10.0.0.11:31001")]);
    check_golden(&Plan { frontends: vec![web] }, expect_file!["golden/haproxy/http.cfg"]);
    let mut www =
        frontend("www", "0.0.0.0:80", Mode::Http, &[("edge/1", "10.0.0.21:8000"), ("edge_1", "[fd00::21]:8000")]);
    www.public = true;
    let plan = Plan {
        frontends: vec![
            www,
            frontend("queue", "127.0.0.1:5672", Mode::Tcp, &[]),
            frontend("db", "127.0.0.1:5432", Mode::Tcp, &[("db-1", "10.0.0.31:5432")]),
            frontend("api", "127.0.0.1:8081", Mode::Http, &[("api-1", "10.0.0.41:31010")]),
        ],
    };
    check_golden(&plan, expect_file!["golden/haproxy/mixed.cfg"]);
    // haproxy's Prometheus exporter on the node's address (issue 18).
    let exporting =
        Settings { run_as: None, exporter: Some("10.0.0.5:8405".parse().unwrap()), ..Settings::new("/run/gantry/lb") };
    let web = frontend("web", "127.0.0.1:8080", Mode::Http, &[("web-1", "10.0.0.11:31001")]);
    check_golden_with(&Plan { frontends: vec![web] }, &exporting, expect_file!["golden/haproxy/exporter.cfg"]);
}

// -- The real thing -------------------------------------------------------

/// A backend: an HTTP/1.1 server (keep-alive) answering its name, with the
/// `X-Request-ID` values it received in a `seen-request-id` header.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| async move {
                    let ids: Vec<&str> =
                        request.headers().get_all("x-request-id").iter().map(|v| v.to_str().unwrap_or("?")).collect();
                    let response =
                        Response::builder().header("seen-request-id", ids.join(",")).body(Full::new(Bytes::from(name)));
                    Ok::<_, Infallible>(response.unwrap())
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    address
}

/// A loopback port nothing listens on (as far as anyone can tell).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The plan of one http frontend on `port` over `backends` (name, address).
fn web_plan(port: u16, backends: &[(&str, SocketAddr)]) -> Plan {
    let bind = format!("127.0.0.1:{port}");
    let backends: Vec<(&str, String)> = backends.iter().map(|(name, a)| (*name, a.to_string())).collect();
    let backends: Vec<(&str, &str)> = backends.iter().map(|(name, a)| (*name, a.as_str())).collect();
    Plan { frontends: vec![frontend("web", &bind, Mode::Http, &backends)] }
}

/// A balancer serving [`web_plan`] over backend `b0` on a free loopback
/// port, in a directory whose name has a space and a `#` (which the
/// configuration must escape).
struct Serving {
    /// Bind it (not `..`): dropping it deletes haproxy's directory.
    temp: tempfile::TempDir,
    dir: PathBuf,
    lb: Haproxy,
    port: u16,
    /// Where clients connect: the frontend.
    address: SocketAddr,
    b0: SocketAddr,
    plan: Plan,
}

async fn serving_b0() -> Serving {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("load balancer #1");
    let b0 = backend("b0").await;
    let port = free_port();
    let mut lb = Haproxy::start(binary(), Settings::new(&dir)).await.unwrap();
    let plan = web_plan(port, &[("b0", b0)]);
    assert!(lb.apply(&plan).await.unwrap().changed);
    // The admin sockets (the master's and the worker's) are the owner's alone.
    for socket in ["master.sock", "haproxy.sock"] {
        let mode = std::fs::metadata(dir.join(socket)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{socket}");
    }
    Serving { temp, dir, lb, port, address: ([127, 0, 0, 1], port).into(), b0, plan }
}

/// What a request got back.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
    request_id: String,
    /// The balancer said it will close this connection.
    closing: bool,
}

/// One HTTP/1.1 connection, with no retry of its own.
async fn connect(address: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, String> {
    let stream = TcpStream::connect(address).await.map_err(|e| format!("connect: {e}"))?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends `GET /` (with `request_id`, if any) and reads the whole answer, in at most 5 s.
async fn get(sender: &mut SendRequest<Empty<Bytes>>, request_id: Option<&str>) -> Result<Answer, String> {
    let exchange = async {
        let mut request = Request::get("/").header("host", "web");
        if let Some(id) = request_id {
            request = request.header("x-request-id", id);
        }
        let response = sender.send_request(request.body(Empty::new()).unwrap()).await.map_err(|e| e.to_string())?;
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let (request_id, closing) = (header("seen-request-id"), header("connection").eq_ignore_ascii_case("close"));
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Answer { status, body: String::from_utf8_lossy(&body).into_owned(), request_id, closing })
    };
    tokio::time::timeout(Duration::from_secs(5), exchange).await.unwrap_or_else(|_| Err("no answer in 5 s".into()))
}

/// One request over a new connection.
async fn get_once(address: SocketAddr, request_id: Option<&str>) -> Result<Answer, String> {
    get(&mut connect(address).await?, request_id).await
}

/// What a client saw: answers and failures (a failure is a request that
/// was sent and got no 200).
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    failures: Vec<String>,
    /// Answers that said `Connection: close` (a reload retired the worker).
    closes: usize,
    /// Kept connections found closed before a request was sent on them.
    reconnects: usize,
}

/// Requests until `stop` (at most 100 000): each over a new connection, or
/// all over one keep-alive connection, reconnecting when the balancer says
/// `Connection: close` or closed it before a request was sent.
async fn client(address: SocketAddr, keep_alive: bool, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut kept: Option<SendRequest<Empty<Bytes>>> = None;
    for _ in 0..100_000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut reusable = kept.take();
        if let Some(sender) = reusable.as_mut()
            && sender.ready().await.is_err()
        {
            // Closed before anything was sent on it: not a failure.
            reusable = None;
            tally.reconnects += 1;
        }
        let mut sender = match reusable {
            Some(sender) => sender,
            None => match connect(address).await {
                Ok(sender) => sender,
                Err(e) => {
                    tally.failures.push(e);
                    continue;
                }
            },
        };
        match get(&mut sender, None).await {
            Ok(answer) if answer.status == 200 => {
                tally.ok += 1;
                tally.closes += usize::from(answer.closing);
                if keep_alive && !answer.closing {
                    kept = Some(sender);
                }
            }
            Ok(answer) => tally.failures.push(format!("status {} ({})", answer.status, answer.body)),
            Err(e) => tally.failures.push(e),
        }
    }
    tally
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_traffic_drop_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["b0", "b1", "b2"];
    let mut servers = Vec::new();
    for name in names {
        servers.push((name, backend(name).await));
    }
    let port = free_port();
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    // Each plan a different non-empty subset of the three, as bit masks.
    let subsets = [0b011, 0b110, 0b101, 0b111, 0b100, 0b001, 0b010];
    let plan_of = |mask: usize| {
        let chosen: Vec<(&str, SocketAddr)> = (0..3).filter(|i| mask & (1 << i) != 0).map(|i| servers[i]).collect();
        web_plan(port, &chosen)
    };
    let mut lb = Haproxy::start(binary(), Settings::new(dir.path())).await.unwrap();
    lb.apply(&plan_of(0b111)).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let fresh = tokio::spawn(client(address, false, stop.clone()));
    let kept = tokio::spawn(client(address, true, stop.clone()));
    let (mut checks, mut reloads) = (Vec::new(), Vec::new());
    for i in 0..20 {
        let applied = lb.apply(&plan_of(subsets[i % subsets.len()])).await.unwrap();
        assert!(applied.changed, "plan {i} was a change");
        checks.push(applied.check_us);
        reloads.push(applied.reload_us);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (fresh, kept) = (fresh.await.unwrap(), kept.await.unwrap());
    eprintln!(
        "haproxy -c: median {} µs; reload: median {} µs; requests: {} new-connection, {} keep-alive \
         ({} closes announced, {} found closed)",
        median(checks),
        median(reloads),
        fresh.ok,
        kept.ok,
        kept.closes,
        kept.reconnects
    );
    assert!(fresh.failures.is_empty() && kept.failures.is_empty(), "failed requests: {fresh:?} {kept:?}");
    assert!(fresh.ok >= 20 && kept.ok >= 20, "too little traffic to tell: {fresh:?} {kept:?}");
    // Reloads did reach the keep-alive connection: its worker was retired
    // and said so (without `idle-close-on-response`, some are cut instead).
    assert!(kept.closes > 0, "the keep-alive connection never saw a reload: {kept:?}");

    // The last plan (subsets[19 % 7] = 0b001) has b0 alone.
    for _ in 0..10 {
        assert_eq!(get_once(address, None).await.unwrap().body, "b0");
    }
    lb.stop().await;
}

#[tokio::test]
async fn a_plan_that_does_not_load_leaves_the_old_config_and_routing() {
    let Serving { temp: _temp, dir, mut lb, port, address, b0, plan: good } = serving_b0().await;
    let config = std::fs::read_to_string(dir.join("haproxy.cfg")).unwrap();
    let pid = lb.pid();

    // Port 0: `haproxy -c` refuses it.
    let mut bad = web_plan(port, &[("b0", b0)]);
    bad.frontends.push(frontend("zero", "127.0.0.1:0", Mode::Tcp, &[]));
    let refused = lb.apply(&bad).await.unwrap_err();
    assert!(matches!(&refused, LbError::Rejected(why) if why.contains("invalid port '0'")), "{refused}");
    // An address that is not this machine's: `haproxy -c` does not bind, so
    // only the reload finds out.
    let mut bad = web_plan(port, &[("b0", b0)]);
    bad.frontends.push(frontend("away", "192.0.2.1:8080", Mode::Tcp, &[]));
    let failed = lb.apply(&bad).await.unwrap_err();
    assert!(matches!(&failed, LbError::Rejected(why) if why.contains("cannot bind")), "{failed}");

    for _ in 0..5 {
        assert_eq!(get_once(address, None).await.unwrap().body, "b0");
    }
    assert_eq!(lb.plan(), &good);
    assert_eq!(lb.pid(), pid);
    assert_eq!(std::fs::read_to_string(dir.join("haproxy.cfg")).unwrap(), config);
    assert!(!dir.join("haproxy.cfg.new").exists());
    // The master recovers from the failed reload: the next good plan loads.
    let b1 = backend("b1").await;
    assert!(lb.apply(&web_plan(port, &[("b1", b1)])).await.unwrap().changed);
    assert_eq!(get_once(address, None).await.unwrap().body, "b1");
    lb.stop().await;
}

#[tokio::test]
async fn a_connection_to_an_instance_that_went_away_is_retried_on_another() {
    let Serving { temp: _temp, mut lb, port, address, b0, .. } = serving_b0().await;
    // Listed as healthy, though nothing listens there any more.
    let gone: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    lb.apply(&web_plan(port, &[("b0", b0), ("gone", gone)])).await.unwrap();
    let began = Instant::now();
    for _ in 0..10 {
        let answer = get_once(address, None).await.unwrap();
        assert_eq!((answer.status, answer.body.as_str()), (200, "b0"));
    }
    // Redispatched at once, not after haproxy's turn-around delay (1 s) on the same server.
    assert!(began.elapsed() < Duration::from_secs(3), "retries took {:?}", began.elapsed());
    lb.stop().await;
}

#[tokio::test]
async fn the_request_id_reaches_the_backend_and_an_incoming_one_is_kept() {
    let Serving { temp: _temp, lb, address, .. } = serving_b0().await;

    let first = get_once(address, None).await.unwrap().request_id;
    let second = get_once(address, None).await.unwrap().request_id;
    for id in [&first, &second] {
        // A UUID, one value.
        assert!(id.len() == 36 && id.matches('-').count() == 4, "{id:?}");
    }
    assert_ne!(first, second);
    assert_eq!(get_once(address, Some("trace-42")).await.unwrap().request_id, "trace-42");
    lb.stop().await;
}

#[tokio::test]
async fn an_unchanged_plan_does_nothing_and_a_dead_master_is_started_again() {
    let Serving { temp: _temp, mut lb, address, plan, .. } = serving_b0().await;
    assert!(!lb.apply(&plan).await.unwrap().changed);

    let old = lb.pid().unwrap();
    kill("-KILL", &old.to_string());
    wait_until_dead(old).await;
    let applied = lb.apply(&plan).await.unwrap();
    assert!(applied.changed);
    assert_ne!(lb.pid(), Some(old));
    assert_eq!(get_once(address, None).await.unwrap().body, "b0");
    lb.stop().await;
}

/// haproxy's built-in exporter answers `/metrics` with the frontend's and
/// the backend's request counters, by status class, after traffic.
#[tokio::test]
async fn the_exporter_counts_requests_by_frontend_and_status_class() {
    let temp = tempfile::tempdir().unwrap();
    let b0 = backend("b0").await;
    let (port, exporter) = (free_port(), free_port());
    let settings = Settings { exporter: Some(([127, 0, 0, 1], exporter).into()), ..Settings::new(temp.path()) };
    let mut lb = Haproxy::start(binary(), settings).await.unwrap();
    lb.apply(&web_plan(port, &[("b0", b0)])).await.unwrap();
    for _ in 0..3 {
        assert_eq!(get_once(([127, 0, 0, 1], port).into(), None).await.unwrap().body, "b0");
    }
    let mut sender = connect(([127, 0, 0, 1], exporter).into()).await.unwrap();
    let request = Request::get("/metrics").header("host", "lb").body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let sample = |prefix: &str| {
        text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert_eq!(sample("haproxy_frontend_http_requests_total{proxy=\"web\"}"), Some(3.0), "{text}");
    assert_eq!(
        sample("haproxy_backend_http_responses_total{proxy=\"web\",code=\"2xx\"}"),
        Some(3.0),
        "{}",
        text.lines().filter(|l| l.contains("responses_total")).collect::<Vec<_>>().join("\n")
    );
    lb.stop().await;
}

#[tokio::test]
async fn stop_leaves_no_haproxy_process() {
    let Serving { temp: _temp, mut lb, port, address, .. } = serving_b0().await;
    let b1 = backend("b1").await;
    // A keep-alive connection keeps the first worker as an old one after the reload.
    let mut held = connect(address).await.unwrap();
    get(&mut held, None).await.unwrap();
    lb.apply(&web_plan(port, &[("b1", b1)])).await.unwrap();

    let master = lb.pid().unwrap();
    let group = group_members(master);
    assert!(group.len() >= 3, "a master, a worker and an old worker: {group:?}");
    lb.stop().await;
    for pid in group {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "haproxy process {pid} is still there");
    }
}

#[tokio::test]
async fn a_haproxy_left_by_a_previous_agent_gives_way_to_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let (b0, b1) = (backend("b0").await, backend("b1").await);
    let port = free_port();
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    // A previous agent's haproxy, as it would have started it.
    let settings = Settings::new(dir.path());
    std::fs::write(settings.config_path(), render(&web_plan(port, &[("b0", b0)]), &settings)).unwrap();
    let mut leftover = std::process::Command::new(binary())
        .arg("-W")
        .arg("-f")
        .arg(settings.config_path())
        .current_dir(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while get_once(address, None).await.map(|a| a.body).ok().as_deref() != Some("b0") {
        assert!(Instant::now() < deadline, "the leftover haproxy did not serve");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut lb = Haproxy::start(binary(), settings).await.unwrap();
    lb.apply(&web_plan(port, &[("b1", b1)])).await.unwrap();
    // Its old worker finishes its connections first: on a loaded machine
    // (the whole suite on two cores) that took over 5 s once.
    let deadline = Instant::now() + Duration::from_secs(15);
    while leftover.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the leftover haproxy did not leave");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..5 {
        assert_eq!(get_once(address, None).await.unwrap().body, "b1");
    }
    lb.stop().await;
}

/// `kill SIGNAL PID`.
fn kill(signal: &str, pid: &str) {
    let status = std::process::Command::new("kill").args([signal, "--", pid]).status().unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// Waits (at most 5 s) until `pid` has exited: gone, or a zombie.
async fn wait_until_dead(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat_field(&stat, 0).starts_with('Z'))
    {
        assert!(Instant::now() < deadline, "{pid} did not die");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The processes in process group `group`, from /proc.
fn group_members(group: u32) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        if stat_field(&stat, 2) == group.to_string() {
            members.push(pid);
        }
    }
    members
}

/// Field `n` of /proc/PID/stat counted from the state (0), after the
/// command name, which may hold spaces.
fn stat_field(stat: &str, n: usize) -> &str {
    stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("").split(' ').nth(n).unwrap_or("")
}

/// Started by a root agent, haproxy's workers serve as an unprivileged
/// account: a proxy facing the network never runs as root.
#[tokio::test]
async fn haproxys_workers_do_not_run_as_root() {
    let me = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid_line = |status: &str| status.lines().find(|l| l.starts_with("Uid:")).unwrap().to_owned();
    if uid_line(&me).split_whitespace().nth(1).is_none_or(|uid| uid != "0") {
        panic!("this test needs root, as the agents on nodes run (scripts/test runs as root in CI)");
    }
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::new(dir.path());
    assert!(settings.run_as.is_some(), "as root, Settings::new picks an unprivileged account");
    let port = free_port();
    let b0 = backend("b0").await;
    let mut lb = Haproxy::start(binary(), settings).await.unwrap();
    lb.apply(&web_plan(port, &[("b0", b0)])).await.unwrap();
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    assert_eq!(get_once(address, None).await.unwrap().body, "b0", "it serves");
    // Every haproxy worker (a child of the master) runs with a non-zero uid.
    let master: u32 = std::fs::read_to_string(dir.path().join("haproxy.pid")).unwrap().trim().parse().unwrap();
    let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).unwrap();
    let workers: Vec<&str> = children.split_whitespace().collect();
    assert!(!workers.is_empty(), "no worker under master {master}");
    for worker in workers {
        let status = std::fs::read_to_string(format!("/proc/{worker}/status")).unwrap();
        let uid = uid_line(&status);
        assert!(!uid.split_whitespace().skip(1).any(|u| u == "0"), "worker {worker}: {uid}");
    }
    lb.stop().await;
}
