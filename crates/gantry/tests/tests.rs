//! Integration tests of the `gantry` binary, run as a user runs it: a temp
//! copy of the seed example, the real binary, exit codes, stdout and stderr
//! checked against golden files (refresh with `UPDATE_EXPECT=1`).

mod agent;
mod aws;
mod deploy;
mod generate;
mod ha;
mod layering;
mod running;
mod scheduled;
mod server;
mod show;
mod tidy;
mod tls;
mod up;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gantry_api::AgentStatus;

pub(crate) const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/seatgeek");

/// A scratch copy of the example's inputs (no generated files).
pub(crate) struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn example() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        for rel in [
            "nodes.json",
            "configuration/datastores.json",
            "data_bags/service/api.json",
            "data_bags/service/app-www.json",
            "bin/api.py",
            "bin/www.py",
        ] {
            let to = dir.path().join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(Path::new(EXAMPLE).join(rel), to).unwrap();
        }
        Scratch { dir }
    }

    /// The example with its services started by the provision run
    /// (`"command": true`, no check): for tests of registration and
    /// resolution, where no process runs.
    pub fn example_registered_only() -> Scratch {
        let scratch = Scratch::example();
        for id in ["api", "app-www"] {
            let path = scratch.path(&format!("data_bags/service/{id}.json"));
            let mut definition: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            definition["command"] = true.into();
            definition.as_object_mut().unwrap().remove("check");
            std::fs::write(&path, serde_json::to_string_pretty(&definition).unwrap()).unwrap();
        }
        scratch
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
    }

    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let text = self.read(rel);
        assert!(text.contains(from), "{rel} has no {from:?}");
        std::fs::write(self.path(rel), text.replacen(from, to, 1)).unwrap();
    }

    /// Runs gantry in the scratch directory.
    pub fn gantry(&self, args: &[&str]) -> Run {
        run_in(self.dir.path(), args)
    }

    /// Every file under the scratch directory with its bytes, to prove nothing was written.
    pub fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push((path.clone(), std::fs::read(&path).unwrap()));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), &mut out);
        out.sort();
        out
    }
}

/// One finished run of the binary.
#[derive(Debug)]
pub(crate) struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts success and returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "gantry failed:\n{}{}", self.stdout, self.stderr);
        self.stdout
    }

    /// Asserts exit code 2 (bad input) with nothing on stdout, and returns stderr.
    pub fn bad_input(self) -> String {
        assert_eq!(self.code, 2, "expected exit code 2:\nstdout:\n{}stderr:\n{}", self.stdout, self.stderr);
        assert_eq!(self.stdout, "", "bad input prints nothing on stdout");
        self.stderr
    }
}

impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }
}

pub(crate) fn run_in(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100")
        .output()
        .expect("running gantry");
    Run::from(out)
}

/// A `gantry server` child process; killed on drop.
pub(crate) struct ServerProcess {
    pub child: Child,
    pub url: String,
    /// The management token it bootstrapped (`None` with `--acl off`).
    pub token: Option<String>,
}

impl ServerProcess {
    /// Starts a server on `listen` with its store in `data_dir`, and waits for its address.
    pub fn start(data_dir: &Path, listen: &str) -> ServerProcess {
        ServerProcess::start_with(data_dir, listen, "embedded")
    }

    /// The same with `--store STORE`.
    pub fn start_with(data_dir: &Path, listen: &str, store: &str) -> ServerProcess {
        ServerProcess::start_with_args(data_dir, listen, store, &[], &[])
    }

    /// The same with more arguments and environment variables.
    pub fn start_with_args(
        data_dir: &Path,
        listen: &str,
        store: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> ServerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["server", "--listen", listen, "--store", store, "--data-dir"])
            .arg(data_dir)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning gantry server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no URL in the server's first line: {line:?}"))
            .to_string();
        // Written before the server listens, on its first start.
        let token = std::fs::read_to_string(data_dir.join("bootstrap-token")).ok().map(|t| t.trim().to_owned());
        ServerProcess { child, url, token }
    }

    /// A client of it with its management token.
    pub fn client(&self) -> gantry_client::Client {
        let client = gantry_client::Client::new(&self.url);
        match &self.token {
            Some(token) => client.with_token(token),
            None => client,
        }
    }

    /// Runs `gantry server ARGS` expecting it to refuse to start (exit 2);
    /// what it said.
    pub fn try_start(data_dir: &Path, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir.join("refused"))
            .args(args)
            .output()
            .expect("running gantry server");
        Run::from(out).bad_input()
    }

    pub fn port(&self) -> &str {
        self.url.rsplit(':').next().unwrap()
    }

    pub fn kill(&mut self) {
        // SIGKILL: no chance to flush anything.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---- agents ----

/// A `gantry agent` child process; SIGKILLed on drop.
pub(crate) struct AgentProcess {
    pub child: Child,
    pub data_dir: PathBuf,
}

impl AgentProcess {
    /// An agent of `server`, with its management token (the tests of
    /// access control give agents their own tokens).
    pub fn start(server: &ServerProcess, data_dir: &Path, args: &[&str]) -> AgentProcess {
        AgentProcess::start_at(&server.url, server.token.as_deref(), data_dir, args)
    }

    /// An agent of the server at `url`, sending `token`.
    pub fn start_at(url: &str, token: Option<&str>, data_dir: &Path, args: &[&str]) -> AgentProcess {
        let log = std::fs::File::create(data_dir.with_extension("log")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_gantry"));
        if let Some(token) = token {
            command.env("GANTRY_TOKEN", token);
        }
        let child = command
            .args(["agent", "--server", url, "--data-dir"])
            .arg(data_dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning gantry agent");
        AgentProcess { child, data_dir: data_dir.to_path_buf() }
    }

    /// The machine id it saved (waits for it).
    pub fn machine_id(&self) -> String {
        let path = self.data_dir.join("machine-id");
        eventually("the agent saves its machine id", Duration::from_secs(10), || std::fs::read_to_string(&path).ok());
        std::fs::read_to_string(path).unwrap().trim().to_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }

    pub fn env_file(&self, service: &str) -> String {
        std::fs::read_to_string(self.data_dir.join("env").join(format!("{service}.conf"))).unwrap_or_default()
    }

    /// SIGTERM, as an init system stops it; waits for it to exit.
    pub fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    /// SIGTERM, so the agent stops what it started (services, haproxy);
    /// SIGKILL if it has not exited 10 s later.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it gives a value, or panics saying what did not happen.
pub(crate) fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `gantry ARGS --server URL` with the server's management token.
pub(crate) fn gantry(server: &ServerProcess, args: &[&str]) -> Run {
    let mut full: Vec<&str> = args.to_vec();
    full.extend(["--server", server.url.as_str()]);
    run_with_token(Path::new("."), &full, server.token.as_deref())
}

/// `gantry ARGS` in `dir`, with GANTRY_TOKEN set to `token`.
pub(crate) fn run_with_token(dir: &Path, args: &[&str], token: Option<&str>) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gantry"));
    if let Some(token) = token {
        command.env("GANTRY_TOKEN", token);
    }
    let out = command
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100")
        .env_remove("GANTRY_TOKEN_FILE")
        .output()
        .expect("running gantry");
    Run::from(out)
}

pub(crate) fn status_of(server: &ServerProcess, machine: &str) -> Option<AgentStatus> {
    let out = gantry(server, &["listener:status", "--json", "--machine", machine]).ok();
    let all: Vec<AgentStatus> = serde_json::from_str(&out).unwrap();
    all.into_iter().next()
}

pub(crate) fn runs_total(status: &AgentStatus) -> u64 {
    status.listener.as_ref().map_or(0, |l| l.runs_total)
}

pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// Whether `pid` is a live process (a zombie is not).
pub(crate) fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])))
}

/// SIGKILLs the process group `leader` leads, only if it leads one: a pid
/// above 1 whose group id (`/proc/PID/stat`) is its own and not this
/// test's. A stale or wrong pid signals nothing.
pub(crate) fn kill_group(leader: u64) {
    let group_of = |stat: &str| -> Option<u64> {
        // After the command's closing parenthesis: state, ppid, pgrp.
        stat.rsplit_once(')')?.1.split_whitespace().nth(2)?.parse().ok()
    };
    let Some(group) = std::fs::read_to_string(format!("/proc/{leader}/stat")).ok().as_deref().and_then(group_of) else {
        return;
    };
    let ours = std::fs::read_to_string("/proc/self/stat").ok().as_deref().and_then(group_of);
    if leader > 1 && group == leader && ours != Some(group) {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{leader}")]).status();
    }
}
