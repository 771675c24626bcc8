//! A real single-node etcd on free loopback ports with a throw-away data
//! directory, for tests and benchmarks. It is killed when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long etcd gets to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a local etcd did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalEtcdError {
    /// There is no `etcd` binary on `PATH`.
    #[error("`etcd` is not installed (not found on PATH): install it with `apt-get install etcd-server`")]
    NotInstalled,
    /// Something on this machine failed (temp dir, ports, spawning).
    #[error("cannot start etcd: {action} failed")]
    Io {
        /// What failed.
        action: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// etcd started but did not answer in time, or exited.
    #[error("etcd did not become healthy within {timeout:?}; its log ends with:\n{log_tail}")]
    Unhealthy {
        /// How long it was given.
        timeout: Duration,
        /// The end of its log.
        log_tail: String,
    },
}

/// A running etcd; dropped, it is killed and its data removed.
#[derive(Debug)]
pub struct LocalEtcd {
    child: Child,
    dir: PathBuf,
    endpoint: String,
}

impl LocalEtcd {
    /// Starts etcd and waits until it serves requests.
    pub async fn start() -> Result<LocalEtcd, LocalEtcdError> {
        // Ports are picked by binding to port 0 and releasing it; another
        // process may take one in between, so try a few times.
        let mut last_error = None;
        for _ in 0..3 {
            match LocalEtcd::start_once().await {
                Ok(etcd) => return Ok(etcd),
                Err(error @ LocalEtcdError::Unhealthy { .. }) => last_error = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last_error.expect("three attempts were made"))
    }

    /// The client URL, such as `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The etcd process's id (benchmarks read its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn start_once() -> Result<LocalEtcd, LocalEtcdError> {
        let io = |action| move |source| LocalEtcdError::Io { action, source };
        let dir = unique_dir();
        std::fs::create_dir_all(&dir).map_err(io("create the data directory"))?;
        let (client_port, peer_port) = free_ports().map_err(io("find free ports"))?;
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.join("etcd.log")).map_err(io("create the log file"))?;
        let log_err = log.try_clone().map_err(io("create the log file"))?;
        let spawned = Command::new("etcd")
            .arg("--name=default")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(LocalEtcdError::NotInstalled);
            }
            Err(error) => return Err(io("spawn etcd")(error)),
        };
        let mut etcd = LocalEtcd { child, dir, endpoint };
        etcd.wait_healthy().await?;
        Ok(etcd)
    }

    async fn wait_healthy(&mut self) -> Result<(), LocalEtcdError> {
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            let options = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_millis(500))
                .with_timeout(Duration::from_secs(2));
            if let Ok(mut client) = etcd_client::Client::connect([&self.endpoint], Some(options)).await {
                // A write goes through raft: it succeeds once there is a leader.
                if client.put("gantry-health", "ok", None).await.is_ok() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let log_tail = lines[lines.len().saturating_sub(15)..].join("\n");
        Err(LocalEtcdError::Unhealthy { timeout: START_TIMEOUT, log_tail })
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unique_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.subsec_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("gantry-etcd-{}-{n}-{nanos}", std::process::id()))
}

/// Two distinct free loopback ports.
fn free_ports() -> std::io::Result<(u16, u16)> {
    let first = TcpListener::bind("127.0.0.1:0")?;
    let second = TcpListener::bind("127.0.0.1:0")?;
    Ok((first.local_addr()?.port(), second.local_addr()?.port()))
}
