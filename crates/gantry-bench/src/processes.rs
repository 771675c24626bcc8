//! The `gantry server` and `gantry agent` child processes the cluster
//! benchmarks (`bench-scheduler`'s endtoend and nodeloss, `bench-deploy`)
//! start, a bounded poll, and a process-group kill that only hits groups a
//! bench started.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gantry_client::Client;

/// SIGKILLs the process group `leader` leads, only if it is one: a pid
/// above 1 whose group id (`/proc/PID/stat`) is its own and is not ours.
/// Never `kill -1`, nor a group this bench is in.
pub fn kill_group(leader: u32) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{leader}/stat")) else { return };
    // Fields after the command's closing parenthesis: state, ppid, pgrp.
    let group = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<u32>().ok());
    let ours = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| s.rsplit_once(')')?.1.split_whitespace().nth(2)?.parse::<u32>().ok());
    if leader > 1 && group == Some(leader) && ours != Some(leader) {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{leader}")]).status();
    }
}

/// The `gantry` binary built beside this one, or `$GANTRY_BIN`.
pub fn gantry_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("GANTRY_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("the bench's directory")?.join("gantry");
    if !path.exists() {
        bail!("{} is missing: build it first (`cargo build --release -p gantry`)", path.display());
    }
    Ok(path)
}

/// A `gantry server` child process (access control on), killed on drop.
pub struct Server {
    child: Child,
    pub url: String,
    /// The management token it wrote at its first start.
    pub token: String,
}

impl Server {
    pub fn start(data_dir: &Path, store: &str) -> anyhow::Result<Server> {
        let mut child = Command::new(gantry_binary()?)
            .args(["server", "--listen", "127.0.0.1:0", "--store", store, "--data-dir"])
            .arg(data_dir)
            // The bench's client is one token writing thousands of nodes.
            .args(["--max-requests-per-second-per-token", "1000000", "--max-request-burst-per-token", "1000000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning gantry server")?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().context("server stdout")?).read_line(&mut line)?;
        let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("gantry server printed no URL: {line:?}");
        };
        let token = std::fs::read_to_string(data_dir.join("bootstrap-token")).context("the bootstrap token")?;
        Ok(Server { url: url.to_owned(), token: token.trim().to_owned(), child })
    }

    /// A client with the management token.
    pub fn client(&self) -> Client {
        Client::new(&self.url).with_token(&self.token)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `gantry agent` child process (`--machine-id NAME`, data in
/// `DIR/NAME`, its log in `DIR/NAME.log`), SIGKILLed on drop.
pub struct Agent {
    child: Child,
}

impl Agent {
    /// Sends the server's management token unless `token` names another.
    pub fn start(server: &Server, dir: &Path, name: &str, token: Option<&str>, args: &[&str]) -> anyhow::Result<Agent> {
        let data_dir = dir.join(name);
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = Command::new(gantry_binary()?)
            .env("GANTRY_TOKEN", token.unwrap_or(&server.token))
            .args(["agent", "--server", &server.url, "--data-dir"])
            .arg(&data_dir)
            .args(["--machine-id", name])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning gantry agent")?;
        Ok(Agent { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERMs every agent at once, so each stops what it started
    /// (services, haproxy), as an init system would; SIGKILLs those still
    /// running 10 s later.
    pub fn stop_all(mut agents: Vec<Agent>) {
        for agent in &agents {
            let _ = Command::new("kill").arg("-TERM").arg(agent.child.id().to_string()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while agents.iter_mut().any(|a| matches!(a.child.try_wait(), Ok(None))) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(agents);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `done` every 20 ms until it answers `Some`, for at most `limit`.
pub async fn until<T, F, Fut>(what: &str, limit: Duration, mut done: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = done().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
