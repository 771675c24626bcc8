//! One health probe: an HTTP GET, a TCP connect or a command, never longer
//! than its timeout. A command runs as `sh -c` in its own process group,
//! killed as a whole group at the timeout.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::pin::pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use gantry_spec::CheckKind;
use http_body_util::Empty;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::process_group::signal_group;

/// What a check probes: one instance of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckTarget {
    pub address: IpAddr,
    pub port: u16,
    /// The environment of a command check (the service's own, so a check
    /// script sees the same `PORT` and requirements); `PATH` is the
    /// agent's unless this sets one. HTTP and TCP checks ignore it.
    pub env: BTreeMap<String, String>,
    /// The user a command check runs as (the service's `user`); `None`:
    /// the agent's own.
    pub user: Option<String>,
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub passed: bool,
    /// Short and for people: "HTTP 200", "connection refused",
    /// "exit code 1: <first line of output>", "timed out after 500ms".
    pub output: String,
    pub took: Duration,
}

/// Longest [`Probe::output`], in characters; it is published with the status.
const MAX_OUTPUT_CHARS: usize = 200;

/// How much of each of a command's stdout and stderr is read into memory:
/// only the first line is reported.
const COMMAND_OUTPUT_KEPT: usize = 1024;

/// After a command exits, how long its output is still read: a background
/// process it started may hold the pipe open for good.
const OUTPUT_DRAIN: Duration = Duration::from_millis(100);

/// How long to wait for a killed command's shell to be reaped.
const REAP_WAIT: Duration = Duration::from_secs(1);

/// `PATH` for a command check when the agent itself has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `kind` against `target`, done within `timeout` whatever the target
/// does (a server that accepts and never answers fails at the timeout).
pub async fn probe(kind: &CheckKind, target: &CheckTarget, timeout: Duration) -> Probe {
    let began = Instant::now();
    let deadline = began + timeout;
    let socket = SocketAddr::new(target.address, target.port);
    let outcome = match kind {
        CheckKind::Http { path, status } => within(deadline, timeout, http(socket, path, *status)).await,
        CheckKind::Tcp => within(deadline, timeout, tcp(socket)).await,
        CheckKind::Command { command } => {
            run_command(command, &target.env, target.user.as_deref(), deadline, timeout).await
        }
    };
    let (passed, output) = match outcome {
        Ok(output) => (true, output),
        Err(output) => (false, output),
    };
    Probe { passed, output: shorten(output), took: began.elapsed() }
}

/// `Ok(output)` when the probe passed, `Err(output)` when it failed.
type Outcome = Result<String, String>;

async fn within(deadline: Instant, timeout: Duration, probe: impl Future<Output = Outcome>) -> Outcome {
    timeout_at(deadline, probe).await.unwrap_or_else(|_| Err(timed_out(timeout)))
}

fn timed_out(timeout: Duration) -> String {
    format!("timed out after {timeout:?}")
}

async fn tcp(socket: SocketAddr) -> Outcome {
    TcpStream::connect(socket).await.map_err(|e| describe_io(&e))?;
    Ok("connected".to_string())
}

/// A GET with `Connection: close`; only the status line and headers are
/// read, the body never.
async fn http(socket: SocketAddr, path: &str, (lowest, highest): (u16, u16)) -> Outcome {
    let target = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    let request = hyper::Request::get(target)
        .header(HOST, socket.to_string())
        .header(CONNECTION, "close")
        .header(USER_AGENT, "gantry-health-check")
        .body(Empty::<&'static [u8]>::new())
        .map_err(|e| format!("the check's path {path:?} is not a valid request target: {e}"))?;
    let stream = TcpStream::connect(socket).await.map_err(|e| describe_io(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| describe_http(&e))?;
    // Drive the connection here rather than in a spawned task, so that
    // nothing of this probe outlives it (a body that never ends included).
    let mut connection = pin!(connection);
    let mut response = pin!(sender.send_request(request));
    let response = tokio::select! {
        response = &mut response => response,
        // The connection ended first; the request says how.
        _ = &mut connection => response.await,
    }
    .map_err(|e| describe_http(&e))?;
    let code = response.status().as_u16();
    let output = format!("HTTP {code}");
    if (lowest..=highest).contains(&code) { Ok(output) } else { Err(output) }
}

fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        io::ErrorKind::ConnectionReset => "connection reset".to_string(),
        _ => e.to_string(),
    }
}

fn describe_http(e: &hyper::Error) -> String {
    match e.source() {
        Some(source) => format!("HTTP: {e}: {source}"),
        None => format!("HTTP: {e}"),
    }
}

/// `sh -c command`, passing on exit 0; at `deadline` its whole process
/// group is killed. Background processes it leaves after a timely exit are
/// left alone, as they would be in a shell.
async fn run_command(
    command: &str,
    env: &BTreeMap<String, String>,
    user: Option<&str>,
    deadline: Instant,
    timeout: Duration,
) -> Outcome {
    let mut child = spawn(command, env, user).map_err(|e| format!("cannot start `sh -c`: {e}"))?;
    let mut group = GroupGuard(child.id());
    let mut output = pin!(futures::future::join(keep_start(child.stdout.take()), keep_start(child.stderr.take())));
    let mut read = None;
    let status = loop {
        tokio::select! {
            status = child.wait() => break Some(status),
            // Read while waiting, or a chatty command blocks on a full pipe.
            both = &mut output, if read.is_none() => read = Some(both),
            () = sleep_until(deadline) => break None,
        }
    };
    let Some(status) = status else {
        group.kill();
        let _ = tokio::time::timeout(REAP_WAIT, child.wait()).await;
        return Err(timed_out(timeout));
    };
    // The shell has been reaped: its pid, and so its group's id, may be
    // reused by an unrelated process from now on.
    group.disarm();
    let status = status.map_err(|e| format!("waiting for `sh -c`: {e}"))?;
    let (stdout, stderr) = match read {
        Some(both) => both,
        None => timeout_at(deadline.min(Instant::now() + OUTPUT_DRAIN), output).await.unwrap_or_default(),
    };
    let described = describe_exit(status, first_line(&stdout).or_else(|| first_line(&stderr)));
    if status.success() { Ok(described) } else { Err(described) }
}

fn spawn(command: &str, env: &BTreeMap<String, String>, user: Option<&str>) -> io::Result<Child> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(command)
        .env_clear()
        .env("PATH", path)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a timeout kills everything it started.
        .process_group(0);
    if let Some(user) = user {
        crate::supervise::as_user(&mut sh, user, env).map_err(io::Error::other)?;
    }
    sh.spawn()
}

/// Kills a command's process group when dropped armed: at the timeout, and
/// when the probe is cancelled (its checker stopped) mid-command.
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn kill(&mut self) {
        signal_group(self.0.take(), rustix::process::Signal::KILL);
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The first [`COMMAND_OUTPUT_KEPT`] bytes of `stream`, read to its end.
async fn keep_start(stream: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut stream) = stream else { return kept };
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = COMMAND_OUTPUT_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

fn first_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_string)
}

fn describe_exit(status: ExitStatus, line: Option<String>) -> String {
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    };
    match line {
        Some(line) => format!("{how}: {line}"),
        None => how,
    }
}

fn shorten(mut output: String) -> String {
    if let Some((cut, _)) = output.char_indices().nth(MAX_OUTPUT_CHARS) {
        output.truncate(cut);
        output.push('…');
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_cut_at_a_character_boundary() {
        assert_eq!(shorten("HTTP 200".into()), "HTTP 200");
        let long = "é".repeat(MAX_OUTPUT_CHARS + 5);
        let short = shorten(long);
        assert_eq!(short.chars().count(), MAX_OUTPUT_CHARS + 1);
        assert!(short.ends_with("é…"));
    }

    #[test]
    fn the_first_non_blank_line_is_reported() {
        assert_eq!(first_line(b"\n  \n  down: db unreachable \nmore"), Some("down: db unreachable".into()));
        assert_eq!(first_line(b" \n"), None);
    }
}
