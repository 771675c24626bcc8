//! Releases on this node (issue 17): the server tells the agent which
//! release each service runs (`agents/<machine>/release/<service>`); the
//! agent fetches its artifact (SHA-256 and length verified: a mismatch or
//! a cut download is an error, never a half release), unpacks it into
//! `<data-dir>/services/<service>/releases/v<N>/`, runs `deploy.pre`
//! there, withdraws the service's instances from every balancer and waits
//! `shutdown_delay`, restarts the process from the new directory, holds it
//! out of rotation until its checks have passed for `min_healthy_time`
//! (within `healthy_deadline`), runs `deploy.post`, and puts it back. Each
//! step is reported in the agent's status (`releases`), which the server's
//! release controller follows. The last [`AgentConfig::keep_releases`]
//! release directories are kept.
//!
//! [`AgentConfig::keep_releases`]: super::AgentConfig::keep_releases

use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_api::{Health, NodePhase, ReleaseTarget, UnitRelease};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Agent;
use crate::envfile;

/// The file written last into an unpacked release: without it the
/// directory is not a release (an unpack that died half way).
pub(super) const COMPLETE: &str = ".gantry-release";

/// One service's release here.
pub(super) struct ReleaseRun {
    pub target: ReleaseTarget,
    pub phase: NodePhase,
    pub message: Option<String>,
    /// The unpacked release.
    dir: Option<PathBuf>,
    /// Fetch, unpack and `deploy.pre`; then `deploy.post`.
    task: Option<JoinHandle<Result<PathBuf, String>>>,
    /// When the current phase began.
    at: Instant,
    /// Since when every instance has passed, while starting.
    healthy_since: Option<Instant>,
}

impl ReleaseRun {
    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }
}

/// Where a service's releases live.
pub(super) fn releases_dir(data_dir: &Path, service: &str) -> PathBuf {
    data_dir.join("services").join(service).join("releases")
}

/// The directory of `service`'s release `version`, if it is unpacked whole.
pub(super) fn unpacked(data_dir: &Path, service: &str, version: u64) -> Option<PathBuf> {
    let dir = releases_dir(data_dir, service).join(format!("v{version}"));
    dir.join(COMPLETE).is_file().then_some(dir)
}

impl Agent {
    /// Whether `service`'s instances are held out of rotation: withdrawn
    /// for a switch, or started from a new release that has not passed yet.
    pub(super) fn held_out(&self, service: &str) -> bool {
        self.releases.get(service).is_some_and(|r| matches!(r.phase, NodePhase::Draining | NodePhase::Starting))
    }

    /// The directory a service's process runs from: the release it was
    /// switched to, else the one it is told to run if it is unpacked
    /// (a restarted agent), else none (the agent's working directory).
    pub(super) fn release_cwd(&mut self, service: &str) -> Option<PathBuf> {
        if let Some(dir) = self.running_release.get(service) {
            return Some(dir.1.clone());
        }
        let target = self.world.releases.get(service)?;
        let dir = unpacked(&self.config.data_dir, service, target.version)?;
        self.running_release.insert(service.to_owned(), (target.version, dir.clone()));
        Some(dir)
    }

    /// What the status reports.
    pub(super) fn release_reports(&self) -> std::collections::BTreeMap<String, UnitRelease> {
        self.releases
            .iter()
            .map(|(service, run)| {
                (
                    service.clone(),
                    UnitRelease { version: run.target.version, phase: run.phase, message: run.message.clone() },
                )
            })
            .collect()
    }

    fn wake_in(&self, after: Duration, service: &str) {
        let (wake, service) = (self.wake.clone(), service.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = wake.send(service);
        });
    }

    /// Moves every service's release one step on. Returns whether the
    /// services must be reconciled (a process to restart, an instance to
    /// publish again).
    pub(super) async fn advance_releases(&mut self) -> bool {
        let mut reconcile = false;
        let here: std::collections::BTreeSet<String> = self.locals.values().map(|l| l.service.id.clone()).collect();
        self.releases.retain(|service, _| here.contains(service));
        let targets: Vec<ReleaseTarget> =
            self.world.releases.values().filter(|t| here.contains(&t.service)).cloned().collect();
        for target in targets {
            let service = target.service.clone();
            let fresh = self.releases.get(&service).is_none_or(|r| r.target != target);
            if fresh {
                if let Some(old) = self.releases.remove(&service).and_then(|r| r.task) {
                    old.abort();
                }
                let running = self.running_release.get(&service).map(|(v, _)| *v);
                let (phase, message) = if running == Some(target.version) {
                    (NodePhase::Healthy, None)
                } else {
                    (NodePhase::Fetching, Some("fetching".to_owned()))
                };
                let task = (phase == NodePhase::Fetching).then(|| self.spawn_fetch(&target));
                self.log(&format!("{service}: release v{} ({})", target.version, phase.word()));
                self.releases.insert(
                    service.clone(),
                    ReleaseRun {
                        target: target.clone(),
                        phase,
                        message,
                        dir: None,
                        task,
                        at: Instant::now(),
                        healthy_since: None,
                    },
                );
            }
            reconcile |= self.step_release(&service).await;
        }
        reconcile
    }

    /// Fetch, verify, unpack, `deploy.pre`, off the event loop; wakes the agent when done.
    fn spawn_fetch(&self, target: &ReleaseTarget) -> JoinHandle<Result<PathBuf, String>> {
        let (client, target, data_dir) = (self.client.clone(), target.clone(), self.config.data_dir.clone());
        let service = self.world.services.get(&target.service).cloned();
        let hook = service.as_ref().and_then(|s| s.deploy.pre.clone());
        let user = service.as_ref().and_then(|s| s.user.clone());
        let env_file = envfile::conf_path(&self.env_dir, &target.service);
        let scripts = self.run_settings.script_checks;
        let wake = self.wake.clone();
        tokio::spawn(async move {
            let result = async {
                let dir = super::fetch::fetch(&client, &data_dir, &target).await?;
                if let Some(hook) = hook {
                    if !scripts {
                        return Err(
                            "deploy.pre not run: the agent runs without --enable-script-checks (hooks are off)"
                                .to_owned(),
                        );
                    }
                    run_hook("deploy.pre", &hook, &env_file, user.as_deref(), Some(&dir)).await?;
                }
                Ok(dir)
            }
            .await;
            let _ = wake.send(target.service.clone());
            result
        })
    }

    /// One step of `service`'s release; whether the services must be reconciled.
    async fn step_release(&mut self, service: &str) -> bool {
        // Out of the map while it steps, so the agent's other parts can be used.
        let Some(mut run) = self.releases.remove(service) else { return false };
        let reconcile = self.step_run(service, &mut run).await;
        self.releases.insert(service.to_owned(), run);
        reconcile
    }

    async fn step_run(&mut self, service: &str, run: &mut ReleaseRun) -> bool {
        let finished = match &mut run.task {
            Some(task) if task.is_finished() => {
                let outcome = task.await.unwrap_or_else(|e| Err(format!("the release task failed: {e}")));
                run.task = None;
                Some(outcome)
            }
            _ => None,
        };
        let now = Instant::now();
        let version = run.target.version;
        match run.phase {
            NodePhase::Fetching => match finished {
                Some(Ok(dir)) => {
                    run.dir = Some(dir);
                    run.phase = NodePhase::Draining;
                    run.message = None;
                    run.at = now;
                    let delay = ReleaseRun::ms(run.target.shutdown_delay_ms);
                    self.withdraw(service).await;
                    self.log(&format!("{service}: v{version} unpacked; withdrawn, switching in {delay:?}"));
                    self.wake_in(delay, service);
                    false
                }
                Some(Err(why)) => {
                    self.log(&format!("{service}: release v{version} failed: {why}"));
                    run.phase = NodePhase::Failed;
                    run.message = Some(why);
                    false
                }
                None => false,
            },
            NodePhase::Draining if now.duration_since(run.at) >= ReleaseRun::ms(run.target.shutdown_delay_ms) => {
                let dir = run.dir.clone().expect("a draining release is unpacked");
                run.phase = NodePhase::Starting;
                run.at = now;
                run.healthy_since = None;
                self.running_release.insert(service.to_owned(), (version, dir.clone()));
                for local in self.locals.values_mut().filter(|l| l.service.id == service) {
                    local.shutdown().await;
                    local.cwd = Some(dir.clone());
                }
                self.log(&format!("{service}: starting v{version} from {}", dir.display()));
                self.wake_in(ReleaseRun::ms(run.target.healthy_deadline_ms), service);
                true
            }
            NodePhase::Starting => {
                if let Some(outcome) = finished {
                    // deploy.post ended.
                    match outcome {
                        Ok(_) => self.healthy(service, run),
                        Err(why) => {
                            run.phase = NodePhase::Failed;
                            run.message = Some(why);
                        }
                    }
                    return true;
                }
                if run.task.is_some() {
                    return false;
                }
                let passing =
                    self.locals.values().filter(|l| l.service.id == service).all(|l| l.health() == Health::Passing);
                let min = ReleaseRun::ms(run.target.min_healthy_ms);
                if passing {
                    let since = *run.healthy_since.get_or_insert(now);
                    if now.duration_since(since) >= min {
                        let post = self.world.services.get(service).and_then(|s| s.deploy.post.clone());
                        return self.start_post(service, run, post);
                    }
                    let left = min.saturating_sub(now.duration_since(since));
                    self.wake_in(left + Duration::from_millis(5), service);
                    return false;
                }
                run.healthy_since = None;
                let deadline = ReleaseRun::ms(run.target.healthy_deadline_ms);
                if now.duration_since(run.at) >= deadline {
                    let why = self.why_unhealthy(service);
                    run.phase = NodePhase::Failed;
                    run.message = Some(format!(
                        "not healthy for {min:?} within healthy_deadline {deadline:?}{}",
                        why.map(|w| format!(": {w}")).unwrap_or_default()
                    ));
                    self.log(&format!("{service}: v{version} failed its checks"));
                    return true;
                }
                false
            }
            _ => false,
        }
    }

    /// The switch is done: back in rotation, old release directories pruned.
    fn healthy(&self, service: &str, run: &mut ReleaseRun) {
        run.phase = NodePhase::Healthy;
        run.message = None;
        self.log(&format!("{service}: v{} healthy, back in rotation", run.target.version));
        self.prune_releases(service, run.target.version);
    }

    /// Runs `deploy.post` (if any); the switch finishes when it ends.
    fn start_post(&mut self, service: &str, run: &mut ReleaseRun, post: Option<String>) -> bool {
        let Some(hook) = post else {
            self.healthy(service, run);
            return true;
        };
        if !self.run_settings.script_checks {
            run.phase = NodePhase::Failed;
            run.message =
                Some("deploy.post not run: the agent runs without --enable-script-checks (hooks are off)".into());
            return true;
        }
        run.message = Some("deploy.post".into());
        let dir = run.dir.clone();
        let user = self.world.services.get(service).and_then(|s| s.user.clone());
        let env_file = envfile::conf_path(&self.env_dir, service);
        let (wake, name) = (self.wake.clone(), service.to_owned());
        run.task = Some(tokio::spawn(async move {
            let result = run_hook("deploy.post", &hook, &env_file, user.as_deref(), dir.as_deref()).await;
            let _ = wake.send(name);
            result.map(|()| dir.unwrap_or_default())
        }));
        false
    }

    /// What the service's check or process says, for a failure's message.
    fn why_unhealthy(&self, service: &str) -> Option<String> {
        self.locals.values().filter(|l| l.service.id == service).find_map(|l| {
            let state = l.state();
            state
                .check
                .and_then(|c| c.last_output.filter(|o| !o.is_empty()))
                .or_else(|| state.process.and_then(|p| p.problem.or(p.last_exit.map(|e| format!("last exit: {e}")))))
        })
    }

    /// Takes `service`'s instances out of every balancer (their records go).
    async fn withdraw(&mut self, service: &str) {
        let ids: Vec<(String, String)> = self
            .locals
            .values()
            .filter(|l| l.service.id == service)
            .map(|l| (l.name.clone(), l.instance.clone()))
            .collect();
        for (name, instance) in ids {
            if let Err(e) = self.client.delete_instance(service, &instance).await {
                self.log(&format!("withdrawing {name}: {e}"));
            }
            self.registered.remove(&name);
            self.world.instances.remove(&gantry_api::keys::instance(service, &instance));
        }
    }

    /// Keeps the newest [`super::AgentConfig::keep_releases`] release
    /// directories of `service` (and `current`).
    fn prune_releases(&self, service: &str, current: u64) {
        let dir = releases_dir(&self.config.data_dir, service);
        let Ok(entries) = std::fs::read_dir(&dir) else { return };
        let mut versions: Vec<u64> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix('v')?.parse().ok()))
            .collect();
        versions.sort_unstable_by(|a, b| b.cmp(a));
        for old in versions.into_iter().filter(|v| *v != current).skip(self.config.keep_releases.saturating_sub(1)) {
            let _ = std::fs::remove_dir_all(dir.join(format!("v{old}")));
        }
    }
}

/// Runs a service's hook (`on_delete`, `deploy.pre`, `deploy.post`) with
/// `sh -c`, its env file sourced, as the service's user, in `cwd`.
pub(super) async fn run_hook(
    what: &str,
    hook: &str,
    env_file: &Path,
    user: Option<&str>,
    cwd: Option<&Path>,
) -> Result<(), String> {
    let script = format!("[ -f '{0}' ] && . '{0}'; {hook}", env_file.display());
    let mut sh = tokio::process::Command::new("sh");
    sh.arg("-c").arg(script);
    if let Some(cwd) = cwd {
        sh.current_dir(cwd);
    }
    // As the service's user, never with the agent's rights.
    if let Some(user) = user {
        crate::supervise::as_user(&mut sh, user, &Default::default()).map_err(|e| format!("{what}: {e}"))?;
    }
    let out = sh.output().await.map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let tail: String = String::from_utf8_lossy(&out.stderr)
        .trim()
        .chars()
        .rev()
        .take(300)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(format!("{what} failed ({}){}", out.status, if tail.is_empty() { String::new() } else { format!(": {tail}") }))
}
