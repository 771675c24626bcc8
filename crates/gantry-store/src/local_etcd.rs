//! A real etcd on free loopback ports with a throw-away data directory, for
//! tests and benchmarks: one member ([`LocalEtcd`]) or a cluster of several
//! ([`LocalEtcdCluster`], whose members can be killed, hung with SIGSTOP,
//! resumed and restarted). Killed when dropped.

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
        let dir = unique_dir();
        std::fs::create_dir_all(&dir).map_err(io("create the data directory"))?;
        let (client_port, peer_port) = free_ports().map_err(io("find free ports"))?;
        let spec = MemberSpec::new(options, "default", client_port, peer_port);
        let initial_cluster = spec.initial_cluster_entry();
        let child = match spec.spawn(&dir, options, &initial_cluster) {
            Ok(child) => child,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(error);
            }
        };
        let mut etcd = LocalEtcd { child, dir, endpoint: spec.client_url, options: options.clone() };
        etcd.wait_healthy(false).await?;
        if let Some(password) = &options.root_password {
            enable_auth(&[etcd.endpoint.clone()], options, password).await?;
            etcd.wait_healthy(true).await?;
        }
        Ok(etcd)
    }

    async fn wait_healthy(&mut self, with_auth: bool) -> Result<(), LocalEtcdError> {
        let started = Instant::now();
        let endpoints = [self.endpoint.clone()];
        while started.elapsed() < START_TIMEOUT {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if serves(&endpoints, &self.options, with_auth).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(LocalEtcdError::Unhealthy { timeout: START_TIMEOUT, log_tail: log_tail(&self.dir.join("etcd.log")) })
    }
}

/// A client's connect options for a local etcd (its TLS; the root user's
/// password once auth is on).
fn connect_options(options: &LocalEtcdOptions, with_auth: bool) -> etcd_client::ConnectOptions {
    let mut connect = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(2));
    if let Some(tls) = &options.tls {
        connect = connect.with_tls(
            etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(&tls.ca_pem))
                .identity(etcd_client::Identity::from_pem(&tls.client_cert_pem, &tls.client_key_pem)),
        );
    }
    if let (true, Some(password)) = (with_auth, &options.root_password) {
        connect = connect.with_user("root", password.clone());
    }
    connect
}

/// Whether a write through `endpoints` succeeds (it goes through raft: it
/// succeeds once there is a leader).
async fn serves(endpoints: &[String], options: &LocalEtcdOptions, with_auth: bool) -> bool {
    let connect = connect_options(options, with_auth);
    match etcd_client::Client::connect(endpoints, Some(connect)).await {
        Ok(mut client) => client.put("gantry-health", "ok", None).await.is_ok(),
        Err(_) => false,
    }
}

/// `root` with its role, then auth on: from now on every request needs a user.
async fn enable_auth(endpoints: &[String], options: &LocalEtcdOptions, password: &str) -> Result<(), LocalEtcdError> {
    let fail = |source: etcd_client::Error| LocalEtcdError::Io {
        action: "enable etcd's authentication",
        source: std::io::Error::other(source.to_string()),
    };
    let mut client =
        etcd_client::Client::connect(endpoints, Some(connect_options(options, false))).await.map_err(fail)?;
    client.user_add("root", password, None).await.map_err(fail)?;
    client.user_grant_role("root", "root").await.map_err(fail)?;
    client.auth_enable().await.map_err(fail)?;
    Ok(())
}

fn io(action: &'static str) -> impl Fn(std::io::Error) -> LocalEtcdError {
    move |source| LocalEtcdError::Io { action, source }
}

fn log_tail(path: &std::path::Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// How to run one member: its name and URLs.
#[derive(Debug, Clone)]
struct MemberSpec {
    name: String,
    client_url: String,
    peer_url: String,
}

impl MemberSpec {
    fn new(options: &LocalEtcdOptions, name: &str, client_port: u16, peer_port: u16) -> MemberSpec {
        let scheme = if options.tls.is_some() { "https" } else { "http" };
        MemberSpec {
            name: name.to_owned(),
            client_url: format!("{scheme}://127.0.0.1:{client_port}"),
            peer_url: format!("http://127.0.0.1:{peer_port}"),
        }
    }

    fn initial_cluster_entry(&self) -> String {
        format!("{}={}", self.name, self.peer_url)
    }

    /// Starts etcd for this member in `dir` (its data in `dir/data`, its
    /// log in `dir/etcd.log`, appended to across restarts).
    fn spawn(
        &self,
        dir: &std::path::Path,
        options: &LocalEtcdOptions,
        initial_cluster: &str,
    ) -> Result<Child, LocalEtcdError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("etcd.log"))
            .map_err(io("create the log file"))?;
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
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={}", self.client_url))
            .arg(format!("--advertise-client-urls={}", self.client_url))
            .arg(format!("--listen-peer-urls={}", self.peer_url))
            .arg(format!("--initial-advertise-peer-urls={}", self.peer_url))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg("--initial-cluster-token=gantry-local")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn();
        match spawned {
            Ok(child) => Ok(child),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(LocalEtcdError::NotInstalled),
            Err(error) => Err(io("spawn etcd")(error)),
        }
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

/// A real etcd cluster of several members on loopback, for the tests and
/// benchmarks of failover. Members can be killed (SIGKILL), hung (SIGSTOP),
/// resumed and restarted on their data. Everything is killed and removed
/// when dropped.
#[derive(Debug)]
pub struct LocalEtcdCluster {
    dir: PathBuf,
    options: LocalEtcdOptions,
    initial_cluster: String,
    members: Vec<(MemberSpec, Option<Child>)>,
}

impl LocalEtcdCluster {
    /// Starts `size` members as `options` say (TLS and auth apply to all)
    /// and waits until the cluster serves writes.
    pub async fn start(size: usize, options: LocalEtcdOptions) -> Result<LocalEtcdCluster, LocalEtcdError> {
        let mut last_error = None;
        for _ in 0..3 {
            match LocalEtcdCluster::start_once(size, &options).await {
                Ok(cluster) => return Ok(cluster),
                Err(error @ LocalEtcdError::Unhealthy { .. }) => last_error = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last_error.expect("three attempts were made"))
    }

    async fn start_once(size: usize, options: &LocalEtcdOptions) -> Result<LocalEtcdCluster, LocalEtcdError> {
        let dir = unique_dir();
        let mut specs = Vec::new();
        for n in 0..size {
            let (client_port, peer_port) = free_ports().map_err(io("find free ports"))?;
            specs.push(MemberSpec::new(options, &format!("m{n}"), client_port, peer_port));
        }
        let initial_cluster = specs.iter().map(MemberSpec::initial_cluster_entry).collect::<Vec<_>>().join(",");
        let mut cluster = LocalEtcdCluster { dir, options: options.clone(), initial_cluster, members: Vec::new() };
        for spec in specs {
            cluster.members.push((spec, None));
        }
        for index in 0..size {
            cluster.spawn(index)?;
        }
        cluster.wait_serving(None, false).await?;
        if let Some(password) = &options.root_password {
            enable_auth(&cluster.endpoints(), options, password).await?;
            cluster.wait_serving(None, true).await?;
        }
        Ok(cluster)
    }

    fn member_dir(&self, index: usize) -> PathBuf {
        self.dir.join(&self.members[index].0.name)
    }

    fn spawn(&mut self, index: usize) -> Result<(), LocalEtcdError> {
        let dir = self.member_dir(index);
        std::fs::create_dir_all(&dir).map_err(io("create the data directory"))?;
        let child = self.members[index].0.spawn(&dir, &self.options, &self.initial_cluster)?;
        self.members[index].1 = Some(child);
        Ok(())
    }

    /// Waits until a write through `only` (or through any member) succeeds.
    async fn wait_serving(&mut self, only: Option<usize>, with_auth: bool) -> Result<(), LocalEtcdError> {
        let endpoints = match only {
            Some(index) => vec![self.members[index].0.client_url.clone()],
            None => self.endpoints(),
        };
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if serves(&endpoints, &self.options, with_auth).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let tails = (0..self.members.len())
            .map(|index| {
                format!("{}:\n{}", self.members[index].0.name, log_tail(&self.member_dir(index).join("etcd.log")))
            })
            .collect::<Vec<_>>()
            .join("\n");
        Err(LocalEtcdError::Unhealthy { timeout: START_TIMEOUT, log_tail: tails })
    }

    /// The members' client URLs, such as `http://127.0.0.1:41234`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|(spec, _)| spec.client_url.clone()).collect()
    }

    /// `--store etcd://HOST:PORT,...` for this cluster.
    pub fn store_url(&self) -> String {
        let hosts: Vec<String> =
            self.endpoints().iter().map(|url| url.split("://").nth(1).unwrap_or(url).to_owned()).collect();
        format!("etcd://{}", hosts.join(","))
    }

    /// A member's process id, while it runs.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.members[index].1.as_ref().map(Child::id)
    }

    /// SIGKILLs a member (its data stays, for [`LocalEtcdCluster::restart`]).
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].1.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to a running member.
    pub fn signal(&self, index: usize, signal: &str) -> Result<(), LocalEtcdError> {
        let Some(pid) = self.pid(index) else {
            return Err(io("signal a member")(std::io::Error::other("the member is not running")));
        };
        let status =
            Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().map_err(io("run kill"))?;
        if !status.success() {
            return Err(io("signal a member")(std::io::Error::other(format!("kill -{signal} {pid}: {status}"))));
        }
        Ok(())
    }

    /// Starts a killed member again on its data and waits until it serves.
    pub async fn restart(&mut self, index: usize) -> Result<(), LocalEtcdError> {
        self.kill(index);
        self.spawn(index)?;
        let with_auth = self.options.root_password.is_some();
        self.wait_serving(Some(index), with_auth).await
    }

    /// The index of the member that leads now, if one does (asks every
    /// running member's status: its own id and its leader's).
    pub async fn leader(&self) -> Option<usize> {
        let with_auth = self.options.root_password.is_some();
        let mut ids = Vec::new();
        let mut leader = 0;
        for (index, (spec, child)) in self.members.iter().enumerate() {
            if child.is_none() {
                continue;
            }
            let connect = connect_options(&self.options, with_auth);
            let status = tokio::time::timeout(Duration::from_secs(2), async {
                let mut client = etcd_client::Client::connect([spec.client_url.as_str()], Some(connect)).await?;
                client.status().await
            })
            .await;
            if let Ok(Ok(status)) = status {
                ids.push((index, status.header().map_or(0, |header| header.member_id())));
                if status.leader() != 0 {
                    leader = status.leader();
                }
            }
        }
        ids.into_iter().find(|(_, id)| *id == leader && leader != 0).map(|(index, _)| index)
    }
}

impl Drop for LocalEtcdCluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            // A stopped member must run again to die of SIGKILL cleanly.
            let _ = self.signal(index, "CONT");
            self.kill(index);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
