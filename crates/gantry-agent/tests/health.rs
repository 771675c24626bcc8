//! Health checks against real sockets on 127.0.0.1 and real shells: HTTP
//! status ranges and timeouts, TCP connects, commands killed with their
//! process group, and a checker's rise and fall as its server flips.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gantry_agent::health::{CheckStatus, CheckTarget, Checker, probe};
use gantry_spec::{Check, CheckKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::alive;

/// `future`, or a failure after 5 s.
async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), future).await.expect("not there within 5 s")
}

fn target(address: SocketAddr) -> CheckTarget {
    CheckTarget { address: address.ip(), port: address.port(), env: BTreeMap::new(), user: None }
}

fn http_check(status: (u16, u16)) -> CheckKind {
    CheckKind::Http { path: "/status".into(), status }
}

/// An HTTP server that answers each request with the status in `status`;
/// `heads` gets each request's head.
struct HttpServer {
    address: SocketAddr,
    status: Arc<AtomicU16>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl HttpServer {
    async fn start(status: u16) -> HttpServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let server = HttpServer {
            address: listener.local_addr().unwrap(),
            status: Arc::new(AtomicU16::new(status)),
            heads: Arc::default(),
        };
        let (status, heads) = (server.status.clone(), server.heads.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (status, heads) = (status.clone(), heads.clone());
                tokio::spawn(async move {
                    let Some(head) = read_head(&mut stream).await else { return };
                    heads.lock().unwrap().push(head);
                    let code = status.load(Ordering::SeqCst);
                    let answer =
                        format!("HTTP/1.1 {code} Whatever\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi");
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        server
    }

    fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }
}

async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok().filter(|&n| n > 0)?;
        head.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

#[tokio::test]
async fn http_check_passes_within_its_status_range_and_fails_outside() {
    let server = HttpServer::start(200).await;
    let passed = probe(&http_check((200, 399)), &target(server.address), Duration::from_secs(2)).await;
    assert_eq!((passed.passed, passed.output.as_str()), (true, "HTTP 200"));

    server.set_status(500);
    let failed = probe(&http_check((200, 399)), &target(server.address), Duration::from_secs(2)).await;
    assert_eq!((failed.passed, failed.output.as_str()), (false, "HTTP 500"));
    let exact = probe(&http_check((500, 500)), &target(server.address), Duration::from_secs(2)).await;
    assert!(exact.passed, "the range is inclusive: {exact:?}");

    let head = server.heads.lock().unwrap()[0].to_lowercase();
    assert!(head.starts_with("get /status http/1.1\r\n"), "{head}");
    assert!(head.contains(&format!("host: {}\r\n", server.address)), "{head}");
    assert!(head.contains("connection: close\r\n"), "{head}");
}

#[tokio::test]
async fn http_check_times_out_on_a_server_that_never_answers() {
    // Accepts (the kernel does, from its backlog) and never reads or writes.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let probed =
        probe(&http_check((200, 399)), &target(silent.local_addr().unwrap()), Duration::from_millis(300)).await;
    assert_eq!((probed.passed, probed.output.as_str()), (false, "timed out after 300ms"));
    assert!(probed.took >= Duration::from_millis(300) && probed.took < Duration::from_secs(1), "{probed:?}");
}

#[tokio::test]
async fn tcp_check_passes_on_an_open_port_and_fails_on_a_closed_one() {
    let open = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let passed = probe(&CheckKind::Tcp, &target(open.local_addr().unwrap()), Duration::from_secs(1)).await;
    assert_eq!((passed.passed, passed.output.as_str()), (true, "connected"));

    let closed = open.local_addr().unwrap();
    drop(open);
    let failed = probe(&CheckKind::Tcp, &target(closed), Duration::from_secs(1)).await;
    assert_eq!((failed.passed, failed.output.as_str()), (false, "connection refused"));
}

fn command_check(command: &str) -> CheckKind {
    CheckKind::Command { command: command.into() }
}

fn command_target(env: &[(&str, &str)]) -> CheckTarget {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    CheckTarget { address: Ipv4Addr::LOCALHOST.into(), port: 0, env, user: None }
}

/// A command check of a service that names a user runs as that user, not
/// with the agent's rights (the tests run as root, as agents on nodes do).
#[tokio::test]
async fn a_command_check_runs_as_the_services_user() {
    let mut target = command_target(&[]);
    target.user = Some("nobody".into());
    let passed = probe(&command_check("echo \"uid $(id -u)\""), &target, Duration::from_secs(2)).await;
    let nobody = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("nobody:").map(|rest| rest.split(':').nth(1).unwrap().to_owned()))
        .expect("a nobody user");
    assert!(passed.passed, "{passed:?}");
    assert_eq!(passed.output, format!("exit code 0: uid {nobody}"));
    target.user = Some("no-such-user-here".into());
    let refused = probe(&command_check("true"), &target, Duration::from_secs(2)).await;
    assert!(!refused.passed && refused.output.contains("no-such-user-here"), "{refused:?}");
}

#[tokio::test]
async fn command_check_passes_on_exit_0_and_reports_a_failure_with_its_first_line() {
    let env = command_target(&[("PORT", "8080")]);
    // Only the given environment (and PATH) reaches the command.
    let passed = probe(&command_check(r#"test -z "$HOME" && echo "up on $PORT""#), &env, Duration::from_secs(2)).await;
    assert_eq!((passed.passed, passed.output.as_str()), (true, "exit code 0: up on 8080"));

    let failed =
        probe(&command_check("echo 'db unreachable' >&2; echo more >&2; exit 1"), &env, Duration::from_secs(2)).await;
    assert_eq!((failed.passed, failed.output.as_str()), (false, "exit code 1: db unreachable"));

    let silent = probe(&command_check("exit 3"), &env, Duration::from_secs(2)).await;
    assert_eq!((silent.passed, silent.output.as_str()), (false, "exit code 3"));
}

/// Waits until the pid written to `file` is written and returns it.
async fn pid_in(file: &Path) -> u32 {
    within(async {
        loop {
            if let Some(pid) = std::fs::read_to_string(file).ok().and_then(|t| t.trim().parse().ok()) {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

async fn until_dead(pid: u32) {
    within(async {
        while alive(pid) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// A shell that starts a child, writes the child's pid and waits for it;
/// both ignore SIGTERM, so only SIGKILL to the group ends them.
fn hanging_command(pid_file: &Path) -> String {
    format!("trap '' TERM; sleep 30 & echo $! > {}; wait", pid_file.display())
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed_with_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child.pid");
    let began = Instant::now();
    let probed =
        probe(&command_check(&hanging_command(&pid_file)), &command_target(&[]), Duration::from_millis(300)).await;
    assert_eq!((probed.passed, probed.output.as_str()), (false, "timed out after 300ms"));
    assert!(began.elapsed() < Duration::from_secs(2), "{probed:?}");
    until_dead(pid_in(&pid_file).await).await;
}

#[tokio::test]
async fn stopping_a_checker_kills_its_command_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child.pid");
    let check = Check {
        kind: command_check(&hanging_command(&pid_file)),
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(30),
        rise: 1,
        fall: 1,
        restart_after: 0,
    };
    let checker = Checker::start(check, command_target(&[]));
    let child = pid_in(&pid_file).await;
    checker.stop();
    until_dead(child).await;
}

/// The first status that satisfies `done`, within 5 s.
async fn until(status: &mut watch::Receiver<CheckStatus>, done: impl FnMut(&CheckStatus) -> bool) -> CheckStatus {
    within(status.wait_for(done)).await.expect("the checker is running").clone()
}

#[tokio::test]
async fn a_checker_rises_and_falls_with_its_server() {
    const INTERVAL: Duration = Duration::from_millis(100);
    // Scheduling jitter on a shared machine, beyond the probes' own timing.
    const SLACK: Duration = Duration::from_millis(500);
    let server = HttpServer::start(200).await;
    let check = Check {
        kind: http_check((200, 299)),
        interval: INTERVAL,
        timeout: INTERVAL,
        rise: 2,
        fall: 2,
        restart_after: 0,
    };
    let checker = Checker::start(check, target(server.address));
    let mut status = checker.subscribe();

    let first = until(&mut status, |s| s.checks >= 1).await;
    assert_eq!(first.last_output.as_deref(), Some("HTTP 200"));
    assert!(!first.healthy || first.checks >= 2, "healthy after one pass: {first:?}");
    let healthy = until(&mut status, |s| s.healthy).await;
    assert!(healthy.checks >= 2 && healthy.consecutive_passes >= 2, "{healthy:?}");

    server.set_status(500);
    let flipped = Instant::now();
    let down = until(&mut status, |s| !s.healthy).await;
    assert!(flipped.elapsed() < 2 * INTERVAL + SLACK, "unhealthy {:?} after the flip", flipped.elapsed());
    assert!(down.consecutive_failures >= 2 && down.consecutive_passes == 0, "{down:?}");
    assert_eq!(down.last_output.as_deref(), Some("HTTP 500"));

    server.set_status(200);
    let flipped = Instant::now();
    let up = until(&mut status, |s| s.healthy).await;
    assert!(flipped.elapsed() < 2 * INTERVAL + SLACK, "healthy {:?} after the flip back", flipped.elapsed());
    assert!(up.consecutive_failures == 0 && up.consecutive_passes >= 2, "{up:?}");
    assert!(up.last_checked_ms.is_some() && up.checks >= 6, "{up:?}");
    assert!(checker.status().checks >= up.checks);
}

#[tokio::test]
async fn a_starting_instance_is_seen_passing_long_before_its_next_interval() {
    // Failing (a process still starting), then passing after 150 ms: with
    // a 30 s interval the next regular probe is far off; the startup
    // probes between them see the pass, and their failures are not counted.
    let server = HttpServer::start(503).await;
    let check = Check {
        kind: http_check((200, 299)),
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(1),
        rise: 1,
        fall: 1,
        restart_after: 3,
    };
    let checker = Checker::start(check, target(server.address));
    let mut status = checker.subscribe();
    let first = until(&mut status, |s| s.checks >= 1).await;
    assert_eq!((first.healthy, first.consecutive_failures), (false, 1), "{first:?}");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(checker.status().checks, 1, "a failed startup probe is not counted: {:?}", checker.status());
    assert!(server.heads.lock().unwrap().len() >= 2, "probed between the regular probes");
    server.set_status(200);
    let passing = Instant::now();
    let up = until(&mut status, |s| s.healthy).await;
    assert!(passing.elapsed() < Duration::from_secs(5), "healthy {:?} after it began to pass", passing.elapsed());
    assert_eq!((up.checks, up.consecutive_passes), (2, 1), "{up:?}");
    let probes = server.heads.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.heads.lock().unwrap().len(), probes, "no startup probes after the first pass");
}
