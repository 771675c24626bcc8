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
    options: LocalEtcdOptions,
}

/// How a [`LocalEtcd`] is secured; the default is plaintext, no auth.
#[derive(Debug, Clone, Default)]
pub struct LocalEtcdOptions {
    /// Serve TLS and require client certificates signed by its CA.
    pub tls: Option<LocalEtcdTls>,
    /// Enable etcd's authentication with a `root` user of this password.
    pub root_password: Option<String>,
}

/// Certificates (PEM) for a TLS etcd: its own, and a client's for its
/// health check.
#[derive(Clone)]
pub struct LocalEtcdTls {
    /// The CA etcd trusts for clients and that signed its certificate.
    pub ca_pem: String,
    /// etcd's certificate (it must name 127.0.0.1) and key.
    pub server_cert_pem: String,
    /// etcd's private key.
    pub server_key_pem: String,
    /// A client certificate signed by the CA, for the health check.
    pub client_cert_pem: String,
    /// Its private key.
    pub client_key_pem: String,
}

impl std::fmt::Debug for LocalEtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalEtcdTls { .. }")
    }
}

impl LocalEtcd {
    /// Starts a plaintext etcd without auth and waits until it serves requests.
    pub async fn start() -> Result<LocalEtcd, LocalEtcdError> {
        LocalEtcd::start_with(LocalEtcdOptions::default()).await
    }

    /// Starts etcd as `options` say and waits until it serves requests.
    pub async fn start_with(options: LocalEtcdOptions) -> Result<LocalEtcd, LocalEtcdError> {
        // Ports are picked by binding to port 0 and releasing it; another
        // process may take one in between, so try a few times.
        let mut last_error = None;
        for _ in 0..3 {
            match LocalEtcd::start_once(&options).await {
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

    async fn start_once(options: &LocalEtcdOptions) -> Result<LocalEtcd, LocalEtcdError> {
        let io = |action| move |source| LocalEtcdError::Io { action, source };
        let dir = unique_dir();
        std::fs::create_dir_all(&dir).map_err(io("create the data directory"))?;
        let (client_port, peer_port) = free_ports().map_err(io("find free ports"))?;
        let scheme = if options.tls.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.join("etcd.log")).map_err(io("create the log file"))?;
        let log_err = log.try_clone().map_err(io("create the log file"))?;
        let mut command = Command::new("etcd");
        if let Some(tls) = &options.tls {
            for (name, pem) in
                [("ca.pem", &tls.ca_pem), ("server.pem", &tls.server_cert_pem), ("server-key.pem", &tls.server_key_pem)]
            {
                std::fs::write(dir.join(name), pem).map_err(io("write a certificate"))?;
            }
            command
                .arg(format!("--trusted-ca-file={}", dir.join("ca.pem").display()))
                .arg(format!("--cert-file={}", dir.join("server.pem").display()))
                .arg(format!("--key-file={}", dir.join("server-key.pem").display()))
                .arg("--client-cert-auth");
        }
        let spawned = command
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
        let mut etcd = LocalEtcd { child, dir, endpoint, options: options.clone() };
        etcd.wait_healthy(false).await?;
        if let Some(password) = &options.root_password {
            etcd.enable_auth(password).await?;
            etcd.wait_healthy(true).await?;
        }
        Ok(etcd)
    }

    /// A client's connect options for this etcd (its TLS; the root user's
    /// password once auth is on).
    fn connect_options(&self, with_auth: bool) -> etcd_client::ConnectOptions {
        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(500))
            .with_timeout(Duration::from_secs(2));
        if let Some(tls) = &self.options.tls {
            options = options.with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(&tls.ca_pem))
                    .identity(etcd_client::Identity::from_pem(&tls.client_cert_pem, &tls.client_key_pem)),
            );
        }
        if let (true, Some(password)) = (with_auth, &self.options.root_password) {
            options = options.with_user("root", password.clone());
        }
        options
    }

    /// `root` with its role, then auth on: from now on every request needs a user.
    async fn enable_auth(&self, password: &str) -> Result<(), LocalEtcdError> {
        let fail = |source: etcd_client::Error| LocalEtcdError::Io {
            action: "enable etcd's authentication",
            source: std::io::Error::other(source.to_string()),
        };
        let mut client =
            etcd_client::Client::connect([&self.endpoint], Some(self.connect_options(false))).await.map_err(fail)?;
        client.user_add("root", password, None).await.map_err(fail)?;
        client.user_grant_role("root", "root").await.map_err(fail)?;
        client.auth_enable().await.map_err(fail)?;
        Ok(())
    }

    async fn wait_healthy(&mut self, with_auth: bool) -> Result<(), LocalEtcdError> {
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            let options = self.connect_options(with_auth);
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
