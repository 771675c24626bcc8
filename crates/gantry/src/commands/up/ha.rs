//! `gantry up --ha` (issue 19): the stack on a 3-member etcd with three
//! `gantry server` processes, so anyone can watch it survive `kill -9` of
//! any one member or server. Secure like the rest of `up`: etcd serves
//! TLS only and requires client certificates of the stack's CA (its
//! members use the stack's server certificate; the servers present the
//! operator's), with etcd's authentication on (user `root`, a random
//! password in `.gantry/etcd/root-password`, 0600, handed to the servers
//! as `--etcd-password-file`). Members talk to each other over loopback.
//! Each `up --ha` that starts the cluster starts it empty (the repository
//! is uploaded again): `.gantry/etcd/` holds it while it runs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::{Proc, StackTls, logged_command, private_dir, start_server};

/// Members of the etcd cluster, and gantry servers.
pub const SIZE: usize = 3;
/// The directory under `.gantry/`.
const ETCD_DIR: &str = "etcd";
const PASSWORD_FILE: &str = "root-password";
/// How long the cluster gets to elect a leader and serve.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What `up --ha` runs beside the first server (`Stack::server`).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Ha {
    pub etcd: Vec<Member>,
    /// Every server, the first included.
    pub servers: Vec<Server>,
}

/// One etcd member.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    pub name: String,
    /// Its client URL (`https://127.0.0.1:PORT`).
    pub url: String,
    pub process: Option<Proc>,
}

/// One gantry server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Server {
    pub url: String,
    pub process: Option<Proc>,
}

impl Ha {
    /// Every process, servers first (the order `down` stops them in).
    pub fn processes(&self) -> impl Iterator<Item = &Proc> {
        self.servers
            .iter()
            .filter_map(|s| s.process.as_ref())
            .chain(self.etcd.iter().filter_map(|m| m.process.as_ref()))
    }
}

/// Starts the etcd cluster (empty), turns its authentication on, then the
/// three servers on it; returns them and the servers' URLs joined by commas
/// (what agents and the CLI are given).
pub fn start(state: &Path, tls: &StackTls, runtime: &tokio::runtime::Runtime) -> anyhow::Result<(Ha, String)> {
    let dir = state.join(ETCD_DIR);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing the old cluster in {}", dir.display()))?;
    }
    private_dir(&dir)?;
    let password = random_password()?;
    let password_file = dir.join(PASSWORD_FILE);
    gantry_tls::write_private(&password_file, format!("{password}\n").as_bytes())?;
    let mut ports = Vec::new();
    for _ in 0..SIZE * 2 {
        ports.push(std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?);
    }
    let listeners = ports;
    let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?;
    // Released just before etcd binds them.
    drop(listeners);
    let peers: Vec<String> = (0..SIZE).map(|n| format!("m{n}=http://127.0.0.1:{}", ports[SIZE + n])).collect();
    let mut ha = Ha::default();
    for n in 0..SIZE {
        let url = format!("https://127.0.0.1:{}", ports[n]);
        let process = start_member(state, tls, n, &url, ports[SIZE + n], &peers.join(","))?;
        ha.etcd.push(Member { name: format!("m{n}"), url, process: Some(process) });
    }
    let endpoints: Vec<String> = ha.etcd.iter().map(|m| m.url.clone()).collect();
    runtime.block_on(enable_auth(&endpoints, tls, &password)).context("setting up etcd's authentication")?;

    let store =
        format!("etcd://{}", endpoints.iter().map(|u| u.trim_start_matches("https://")).collect::<Vec<_>>().join(","));
    let (ca, cert, key) = tls.etcd_client_files();
    let mut urls = Vec::new();
    for n in 0..SIZE {
        // The first keeps `.gantry/server`: it starts alone and so creates
        // the management token there, where `up` and the CLI read it.
        let data_dir = if n == 0 { state.join("server") } else { state.join(format!("server-{}", n + 1)) };
        let mut args: Vec<std::ffi::OsString> =
            vec!["--store".into(), store.clone().into(), "--etcd-ca".into(), ca.clone().into()];
        args.extend(["--etcd-cert".into(), cert.clone().into(), "--etcd-key".into(), key.clone().into()]);
        args.extend(["--etcd-user".into(), "root".into(), "--etcd-password-file".into(), password_file.clone().into()]);
        let log =
            state.join("logs").join(if n == 0 { "server.log".to_owned() } else { format!("server-{}.log", n + 1) });
        let (process, url) = start_server(&log, &data_dir, tls, &args)?;
        urls.push(url.clone());
        ha.servers.push(Server { url, process: Some(process) });
    }
    Ok((ha, urls.join(",")))
}

fn start_member(
    state: &Path,
    tls: &StackTls,
    n: usize,
    url: &str,
    peer_port: u16,
    cluster: &str,
) -> anyhow::Result<Proc> {
    let log = state.join("logs").join(format!("etcd-m{n}.log"));
    let mut command = logged_command("etcd", &log)?;
    let (ca, cert, key) = tls.etcd_server_files();
    let peer = format!("http://127.0.0.1:{peer_port}");
    command
        .arg(format!("--name=m{n}"))
        .arg(format!("--data-dir={}", state.join(ETCD_DIR).join(format!("m{n}")).display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster={cluster}"))
        .arg("--initial-cluster-token=gantry-up")
        .arg(format!("--trusted-ca-file={}", ca.display()))
        .arg(format!("--cert-file={}", cert.display()))
        .arg(format!("--key-file={}", key.display()))
        .arg("--client-cert-auth");
    let child = match command.spawn() {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "`etcd` is not installed (not found on PATH)\n = help: install it with `apt-get install etcd-server`, or run `gantry up` without --ha"
            )
        }
        Err(error) => return Err(error).context("starting etcd"),
    };
    Proc::of(child.id()).with_context(|| format!("etcd m{n} exited at once: see {}", log.display()))
}

/// Waits until the cluster serves a write, then adds `root` and turns
/// authentication on.
async fn enable_auth(endpoints: &[String], tls: &StackTls, password: &str) -> anyhow::Result<()> {
    let (ca, cert, key) = tls.etcd_client_files();
    let read = |path: &Path| std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()));
    let tls_options = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read(&ca)?))
        .identity(etcd_client::Identity::from_pem(read(&cert)?, read(&key)?));
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(3))
        .with_tls(tls_options);
    let began = Instant::now();
    let mut client = loop {
        let attempt = async {
            let mut client = etcd_client::Client::connect(endpoints, Some(options.clone())).await?;
            client.put("gantry-up", "ready", None).await?;
            Ok::<_, etcd_client::Error>(client)
        };
        match attempt.await {
            Ok(client) => break client,
            Err(error) if began.elapsed() > START_TIMEOUT => {
                bail!(
                    "the etcd cluster did not serve within {START_TIMEOUT:?}: {error} (logs: .gantry/logs/etcd-m*.log)"
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    client.user_add("root", password, None).await?;
    client.user_grant_role("root", "root").await?;
    client.auth_enable().await?;
    Ok(())
}

/// 32 hex digits from the kernel's random source.
fn random_password() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
