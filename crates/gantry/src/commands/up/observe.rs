//! Prometheus and Alertmanager beside a `gantry up` stack (issue 18):
//! when Debian's `prometheus` (and `prometheus-alertmanager`) are
//! installed, `up` writes the generated setup into `.gantry/prometheus/`
//! and runs both on free loopback ports, so the stack observes itself.
//!
//! Prometheus reads the server's discovery with a token of its own (the
//! `prometheus` policy: `prometheus/targets` and `metrics`, nothing else),
//! in `.gantry/prometheus/token` (0600), and scrapes agents with its own
//! certificate (role metrics). A second `up` rewrites the files and has the
//! running Prometheus read them again (SIGHUP).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use gantry_client::Client;
use serde::{Deserialize, Serialize};

use super::{Proc, StackTls, private_dir};
use crate::context::explain;
use crate::repo::Opened;

/// Under `.gantry/`: the setup, Prometheus' token and both data directories.
pub const DIR: &str = "prometheus";
/// The policy Prometheus' token has.
pub const POLICY: &str = "prometheus";
/// Scrapes and target refreshes of the local stack: often, so a change
/// shows within seconds.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// What runs to observe the stack, saved in `up.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Observer {
    pub prometheus: Proc,
    /// Prometheus' own URL (its UI and API).
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<Proc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager_url: Option<String>,
}

/// A program on the PATH.
fn find(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(program)).find(|p| p.is_file())
}

/// Prometheus, if installed, and Alertmanager, if installed too.
pub fn installed() -> Option<(PathBuf, Option<PathBuf>)> {
    Some((find("prometheus")?, find("prometheus-alertmanager").or_else(|| find("alertmanager"))))
}

/// The generated setup of a stack whose server is at `url`.
pub fn setup(state: &Path, url: &str, tls: &StackTls, alertmanager: &str) -> gantry_generate::prometheus::Setup {
    let (cert, key) = tls.prometheus();
    let https = url.starts_with("https://");
    let path = |p: PathBuf| Some(p.display().to_string());
    let seconds = u32::try_from(INTERVAL.as_secs()).unwrap_or(15);
    gantry_generate::prometheus::Setup {
        server: url.to_owned(),
        token_file: path(state.join(DIR).join("token")),
        ca_file: if https { path(tls.ca_file()) } else { None },
        cert_file: if https { path(cert) } else { None },
        key_file: if https { path(key) } else { None },
        alertmanager: alertmanager.to_owned(),
        scrape_interval_s: seconds,
        refresh_interval_s: seconds,
    }
}

/// Prometheus' token in `.gantry/prometheus/token`: the one there if the
/// server still knows it, else a new one of the [`POLICY`] (made if missing).
async fn token(client: &Client, state: &Path) -> anyhow::Result<PathBuf> {
    let path = state.join(DIR).join("token");
    if let Ok(secret) = crate::context::read_token(&path)
        && client.clone().with_token(&secret).whoami().await.is_ok()
    {
        return Ok(path);
    }
    let policy = gantry_api::Policy {
        name: POLICY.into(),
        description: "Prometheus: service discovery of the fleet and the server's metrics".into(),
        rules: ["prometheus/targets", "metrics"]
            .into_iter()
            .map(|prefix| gantry_api::Rule { prefix: prefix.into(), access: gantry_api::Access::Read })
            .collect(),
        federations: Vec::new(),
    };
    if client.policy(POLICY).await.map_err(explain)?.as_ref() != Some(&policy) {
        client.put_policy(&policy).await.map_err(explain)?;
    }
    let request =
        gantry_api::TokenRequest { name: "prometheus".into(), policies: vec![POLICY.into()], ..Default::default() };
    let created = client.create_token(&request).await.map_err(explain)?;
    gantry_tls::write_private(&path, format!("{}\n", created.secret).as_bytes())?;
    Ok(path)
}

/// A loopback port free now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Writes the setup for `opened`'s services and starts Prometheus and
/// Alertmanager, or has the running ones read it again.
pub async fn start(
    opened: &Opened,
    state: &Path,
    url: &str,
    client: &Client,
    tls: &StackTls,
    running: Option<&Observer>,
    (prometheus, alertmanager): (PathBuf, Option<PathBuf>),
) -> anyhow::Result<Observer> {
    let dir = state.join(DIR);
    private_dir(&dir)?;
    token(client, state).await?;
    let running = running.filter(|o| o.prometheus.running());
    let am_address = match running.and_then(|o| o.alertmanager_url.as_deref()) {
        Some(am) => am.trim_start_matches("http://").to_owned(),
        None => format!("127.0.0.1:{}", free_port()?),
    };
    let setup = setup(state, url, tls, &am_address);
    let services: Vec<&gantry_spec::Service> = opened.repo.services.values().collect();
    for output in gantry_generate::prometheus::files(&setup, &services) {
        gantry_generate::write::write_atomic(&dir.join(&output.path), &output.bytes)?;
    }
    if let Some(running) = running {
        let pid = rustix::process::Pid::from_raw(running.prometheus.pid as i32).context("a pid")?;
        rustix::process::kill_process(pid, rustix::process::Signal::HUP).context("reloading Prometheus")?;
        return Ok(running.clone());
    }
    let (am_proc, am_url) = match alertmanager {
        Some(binary) => {
            let proc = spawn(
                &binary,
                &state.join("logs/alertmanager.log"),
                &[
                    format!("--config.file={}", dir.join(gantry_generate::prometheus::ALERTMANAGER_FILE).display()),
                    format!("--storage.path={}", dir.join("alertmanager-data").display()),
                    format!("--web.listen-address={am_address}"),
                    // One Alertmanager, no cluster (it would listen on 9094).
                    "--cluster.listen-address=".into(),
                ],
            )?;
            let am_url = format!("http://{am_address}");
            (Some(proc), Some(am_url))
        }
        None => (None, None),
    };
    let listen = format!("127.0.0.1:{}", free_port()?);
    let proc = spawn(
        &prometheus,
        &state.join("logs/prometheus.log"),
        &[
            format!("--config.file={}", dir.join(gantry_generate::prometheus::PROMETHEUS_FILE).display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={listen}"),
        ],
    )?;
    let observer =
        Observer { prometheus: proc, url: format!("http://{listen}"), alertmanager: am_proc, alertmanager_url: am_url };
    let ready = async {
        ready(&observer.url, &observer.prometheus).await?;
        if let (Some(url), Some(proc)) = (&observer.alertmanager_url, &observer.alertmanager) {
            ready(url, proc).await?;
        }
        anyhow::Ok(())
    };
    if let Err(e) = ready.await {
        stop(Some(&observer));
        return Err(e);
    }
    Ok(observer)
}

fn spawn(binary: &Path, log: &Path, args: &[String]) -> anyhow::Result<Proc> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Proc::of(child.id()).with_context(|| format!("{} exited at once", binary.display()))
}

/// Waits (up to 30 s) until `url`'s `/-/ready` answers 200.
async fn ready(url: &str, proc: &Proc) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if http.get(format!("{url}/-/ready")).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if !proc.running() {
            bail!("{url} exited before it was ready (its log is in .gantry/logs/)");
        }
        if Instant::now() > deadline {
            bail!("{url} was not ready within 30 s (its log is in .gantry/logs/)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops Prometheus and Alertmanager.
pub fn stop(observer: Option<&Observer>) {
    let Some(observer) = observer else { return };
    super::stop_process(Some(&observer.prometheus), Duration::from_secs(10));
    super::stop_process(observer.alertmanager.as_ref(), Duration::from_secs(10));
}
