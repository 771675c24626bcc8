//! `gantry prometheus:config` and `gantry alerts` (issue 18).
//!
//! `prometheus:config` writes the generated Prometheus and Alertmanager
//! setup (gantry-generate's `prometheus`) for the repository's services:
//! inside a `gantry up` repository it points at that stack (its server,
//! Prometheus' token file, CA and certificate), elsewhere at what the
//! flags name. Paths are written absolute, since Prometheus reads relative
//! ones from its configuration's directory. The token is referred to by
//! its file, never copied into the configuration.
//!
//! `alerts` reads the running stack's Prometheus (`/api/v1/alerts`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::up;
use crate::BadInput;
use crate::context::Context;
use crate::repo::{Opened, open_dir};

/// What the command line said of the setup.
#[derive(Debug)]
pub struct Given {
    pub server: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub alertmanager: String,
    pub scrape_interval: Duration,
}

fn absolute(path: &Path) -> String {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned()).display().to_string()
}

/// `gantry prometheus:config [--out DIR]`.
pub fn config(ctx: &Context, opened: &Opened, out: &Path, given: Given) -> anyhow::Result<()> {
    let state = up::state_dir(opened);
    let stack = up::load_stack(&state);
    let mut setup = match (&given.server, &stack) {
        (None, Some(stack)) => up::observe::setup(&state, &stack.url, &up::StackTls::of(&state), &given.alertmanager),
        (None, None) => {
            return Err(BadInput(
                "error: no server to discover targets from\n = help: run it in a `gantry up` repository, or name the server with --server URL (and --token-file FILE with a token of a policy granting read on prometheus/targets)".into(),
            )
            .into());
        }
        (Some(server), _) => gantry_generate::prometheus::Setup {
            server: server.trim_end_matches('/').to_owned(),
            token_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            alertmanager: given.alertmanager.clone(),
            scrape_interval_s: 15,
            refresh_interval_s: 15,
        },
    };
    if let Some(file) = &given.token_file {
        setup.token_file = Some(absolute(file));
    }
    if let Some(ca) = &given.ca_cert {
        setup.ca_file = Some(absolute(ca));
    }
    if let Some((cert, key)) = &given.client_cert {
        setup.cert_file = Some(absolute(cert));
        setup.key_file = Some(absolute(key));
    }
    let seconds = u32::try_from(given.scrape_interval.as_secs()).unwrap_or(u32::MAX);
    if seconds == 0 {
        return Err(BadInput("error: --scrape-interval must be at least 1s".into()).into());
    }
    if given.server.is_some() || stack.is_none() || given.scrape_interval != Duration::from_secs(15) {
        setup.scrape_interval_s = seconds;
        setup.refresh_interval_s = seconds;
    }
    let services: Vec<&gantry_spec::Service> = opened.repo.services.values().collect();
    let outputs = gantry_generate::prometheus::files(&setup, &services);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    for output in &outputs {
        let path = out.join(&output.path);
        gantry_generate::write::write_atomic(&path, &output.bytes)?;
        written.push(path.display().to_string());
    }
    ctx.output().print(&Written { files: &written, server: &setup.server }, |o| {
        for file in &written {
            writeln!(o, "wrote {file}")?;
        }
        writeln!(
            o,
            "run: prometheus --config.file={}",
            out.join(gantry_generate::prometheus::PROMETHEUS_FILE).display()
        )?;
        Ok(())
    })
}

#[derive(Serialize)]
struct Written<'a> {
    files: &'a [String],
    server: &'a str,
}

/// One alert as Prometheus' `/api/v1/alerts` gives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// `firing` or `pending`.
    pub state: String,
    #[serde(default, rename = "activeAt", skip_serializing_if = "Option::is_none")]
    pub active_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl Alert {
    /// `firing  GantryNodeOutOfMemory  machine=web-1  summary (since ...)`.
    pub fn line(&self) -> String {
        let name = self.labels.get("alertname").map_or("?", String::as_str);
        let about: Vec<String> = ["service", "machine", "severity"]
            .iter()
            .filter_map(|key| Some(format!("{key}={}", self.labels.get(*key)?)))
            .collect();
        let summary = self.annotations.get("summary").map_or("", String::as_str);
        let since = self.active_at.as_deref().map(|at| format!(" (since {at})")).unwrap_or_default();
        format!("{:<8} {name:<32} {:<40} {summary}{since}", self.state, about.join(" "))
    }
}

#[derive(Deserialize)]
struct AlertsAnswer {
    data: AlertsData,
}

#[derive(Deserialize)]
struct AlertsData {
    alerts: Vec<Alert>,
}

/// Every alert of the Prometheus at `url`, firing or pending.
pub async fn firing(url: &str) -> anyhow::Result<Vec<Alert>> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let answer: AlertsAnswer = http
        .get(format!("{url}/api/v1/alerts"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("asking Prometheus at {url}"))?
        .json()
        .await
        .with_context(|| format!("reading Prometheus' alerts from {url}"))?;
    let mut alerts = answer.data.alerts;
    alerts.sort_by(|a, b| (&b.state, &a.labels).cmp(&(&a.state, &b.labels)));
    Ok(alerts)
}

/// `gantry alerts [DIR] [--json]`.
pub fn alerts(ctx: &Context, dir: Option<PathBuf>) -> anyhow::Result<()> {
    let opened = open_dir(dir.as_deref())?;
    let state = up::state_dir(&opened);
    let observer = up::load_stack(&state).and_then(|s| s.observer).filter(|o| o.prometheus.running());
    let Some(observer) = observer else {
        anyhow::bail!(
            "no Prometheus runs for {}: `gantry up` starts one when it is installed (apt-get install prometheus prometheus-alertmanager)",
            opened.dir.display()
        );
    };
    let alerts = ctx.block_on(firing(&observer.url))?;
    ctx.output().print(&alerts, |out| {
        if alerts.is_empty() {
            writeln!(out, "no alert is firing or pending ({})", observer.url)?;
        }
        for alert in &alerts {
            writeln!(out, "{}", alert.line())?;
        }
        Ok(())
    })
}
