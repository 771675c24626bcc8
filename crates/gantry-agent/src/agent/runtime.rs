//! One service running on this node: its definition, port and resolved
//! environment, its supervised process (when the agent runs its command)
//! and its health check, and from those the health its instance is
//! published with (seed 000: "ensure service x is healthy, and if not,
//! remove it from rotation").

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use gantry_api::{AllocReport, AllocState, Health, ProcessStatus, ServiceControl, ServiceState};
use gantry_spec::{CheckKind, Command, Service};
use tokio::sync::mpsc::UnboundedSender;

use crate::health::{CheckTarget, Checker};
use crate::supervise::{ProcState, Program, RestartPolicy, Supervisor, SupervisorConfig};

/// How the agent runs services' commands.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Where each service's output goes (`<dir>/<service>.log`, rotated).
    pub log_dir: PathBuf,
    /// The working directory of service commands (default: the agent's).
    pub workdir: Option<PathBuf>,
    pub policy: RestartPolicy,
    /// Whether command checks and `on_delete` hooks may run here
    /// (`gantry agent --enable-script-checks`; off by default, as Consul's
    /// `enable_local_script_checks`): whoever may write a service
    /// definition must not thereby run commands on every node.
    pub script_checks: bool,
}

/// Why a command check does not run on an agent without script checks.
pub(crate) fn script_checks_off(service: &str) -> String {
    format!(
        "service {service}: its command check does not run here (start the agent with --enable-script-checks to allow it); \
         its instance stays unchecked and out of rotation"
    )
}

/// Restarts in place after which an allocation still exiting is reported
/// failed (the scheduler's `reschedule` takes it from there).
pub const FAILED_AFTER_RESTARTS: u64 = 3;

pub(crate) struct Local {
    /// The service id, or the allocation id for scheduled work: its
    /// process and log are named after it.
    pub name: String,
    /// The id its instance is registered under.
    pub instance: String,
    /// The allocation it runs, for scheduled work.
    pub allocation: Option<String>,
    pub service: Service,
    pub port: u16,
    /// The environment the process was last given (None until every
    /// requirement resolved once: the command does not start before).
    pub env: Option<BTreeMap<String, String>>,
    pub supervisor: Option<Supervisor>,
    pub checker: Option<Checker>,
    /// The check failure count at which the process was last restarted for it.
    restarted_at_failures: u32,
    /// The last restart request acted on (`gantry service:restart`).
    restart_seen: Option<String>,
    /// The allocation's state as last reported, and since when (Unix ms).
    reported: Option<(AllocState, u64)>,
    /// The release directory its process runs from (issue 17); `None`:
    /// the agent's working directory.
    pub cwd: Option<PathBuf>,
}

impl Local {
    /// `control`: the service's control key as the agent found it; a
    /// restart request already there was for an earlier process.
    pub fn new(
        unit: &super::services::Running,
        port: u16,
        control: Option<&ServiceControl>,
        cwd: Option<PathBuf>,
    ) -> Local {
        let restart_seen = control.and_then(|c| c.restart.clone());
        Local {
            name: unit.name.clone(),
            instance: unit.instance.clone(),
            allocation: unit.allocation.clone(),
            service: unit.service.clone(),
            port,
            env: None,
            supervisor: None,
            checker: None,
            restarted_at_failures: 0,
            restart_seen,
            reported: None,
            cwd,
        }
    }

    /// How its allocation is doing, for the agent's status: running once
    /// its process runs and its check passes (or, without a process, once it
    /// passes); failed when it
    /// cannot be started, or keeps exiting ([`FAILED_AFTER_RESTARTS`]
    /// restarts in place and waiting for the next), which lets the
    /// scheduler move it elsewhere.
    pub fn alloc_report(&mut self, now_ms: u64) -> AllocReport {
        let health = self.health();
        let process = self.supervisor.as_ref().map(Supervisor::status);
        let state = match &process {
            // Running means serving: its check passes (a drain waits for that).
            Some(p) if p.state == ProcState::Running && health == Health::Passing => AllocState::Running,
            Some(p) if p.state == ProcState::Failed => AllocState::Failed,
            Some(p) if p.state == ProcState::Backoff && p.restarts >= FAILED_AFTER_RESTARTS => AllocState::Failed,
            None if !self.runs_command() && health == Health::Passing => AllocState::Running,
            _ => AllocState::Pending,
        };
        let since = match self.reported {
            Some((was, since)) if was == state => since,
            _ => now_ms,
        };
        self.reported = Some((state, since));
        AllocReport {
            state,
            restarts: process.as_ref().map_or(0, |p| p.restarts),
            healthy: health == Health::Passing,
            since_ms: since,
            message: process.and_then(|p| p.problem.or(p.last_exit.map(|e| format!("last exit: {e}")))),
        }
    }

    /// What the instance is published with: the check's verdict when there
    /// is a check; else whether the supervised process runs; else (the
    /// provision run starts it) passing.
    pub fn health(&self) -> Health {
        if let Some(checker) = &self.checker {
            let status = checker.status();
            return if status.healthy {
                Health::Passing
            } else if status.checks == 0 || (status.consecutive_failures == 0 && status.consecutive_passes > 0) {
                // Not checked yet, or passing but not `rise` times yet.
                Health::Unknown
            } else {
                Health::Failing
            };
        }
        if self.service.check.is_some() {
            // A check that is not running (a command check where script
            // checks are off) has passed nothing: not in rotation.
            return Health::Unknown;
        }
        match &self.supervisor {
            Some(supervisor) if supervisor.status().state == ProcState::Running => Health::Passing,
            Some(_) => Health::Failing,
            None if self.runs_command() => Health::Unknown,
            None => Health::Passing,
        }
    }

    pub fn state(&self) -> ServiceState {
        ServiceState {
            port: self.port,
            health: self.health(),
            process: match &self.supervisor {
                Some(s) => Some(s.status()),
                None if self.runs_command() && self.env.is_some() => {
                    Some(ProcessStatus::not_running(ProcState::Stopped, None))
                }
                None if self.runs_command() => Some(ProcessStatus::not_running(
                    ProcState::Waiting,
                    Some("its requirements are not resolved yet".to_owned()),
                )),
                None => None,
            },
            check: self.checker.as_ref().map(|c| c.status()),
        }
    }

    /// Whether the agent supervises a process for this service.
    pub fn runs_command(&self) -> bool {
        !matches!(self.service.command, Command::External)
    }

    /// Starts the process with `env` (unless `gantry service:stop` holds it),
    /// or restarts it when `env` differs from what it was started with.
    /// Returns a note for the log when it acted.
    pub fn ensure_process(
        &mut self,
        env: &BTreeMap<String, String>,
        control: Option<&ServiceControl>,
        settings: &RunSettings,
        wake: &UnboundedSender<String>,
    ) -> Option<String> {
        let program = match &self.service.command {
            Command::External => return None,
            Command::Shell(line) => Program::Shell(line.clone()),
            Command::Argv(argv) => Program::Argv(argv.clone()),
        };
        let held = control.is_some_and(|c| !c.running);
        if (self.env.as_ref() == Some(env) && self.supervisor.is_some()) || (held && self.supervisor.is_none()) {
            self.env = Some(env.clone());
            return None;
        }
        self.env = Some(env.clone());
        if let Some(supervisor) = &self.supervisor {
            supervisor.set_env(env.clone());
            supervisor.restart("its environment changed");
            return Some(format!("{}: environment changed, restarting it", self.name));
        }
        let mut config = SupervisorConfig::new(self.name.clone(), program, settings.log_dir.clone());
        config.env = env.clone();
        config.user = self.service.user.clone();
        config.cwd = self.cwd.clone().or_else(|| settings.workdir.clone());
        config.policy = settings.policy;
        let supervisor = Supervisor::start(config);
        forward(&self.name, supervisor.subscribe(), wake);
        self.supervisor = Some(supervisor);
        Some(format!("{}: started", self.name))
    }

    /// Starts the health check if the service has one and it is not
    /// running. A command check starts only where `script_checks` allow it;
    /// otherwise the problem to report.
    pub fn ensure_checker(
        &mut self,
        address: IpAddr,
        settings: &RunSettings,
        wake: &UnboundedSender<String>,
    ) -> Option<String> {
        let Some(check) = &self.service.check else { return None };
        if self.checker.is_some() {
            return None;
        }
        if matches!(check.kind, CheckKind::Command { .. }) && !settings.script_checks {
            return Some(script_checks_off(&self.service.id));
        }
        let target = CheckTarget {
            address,
            port: self.port,
            env: self.env.clone().unwrap_or_default(),
            user: self.service.user.clone(),
        };
        let checker = Checker::start(check.clone(), target);
        forward(&self.name, checker.subscribe(), wake);
        self.checker = Some(checker);
        None
    }

    /// Restarts the process when its check has failed `restart_after` times
    /// in a row (again at every further multiple). Returns a note when it did.
    pub fn restart_if_failing(&mut self) -> Option<String> {
        let (Some(check), Some(checker), Some(supervisor)) = (&self.service.check, &self.checker, &self.supervisor)
        else {
            return None;
        };
        let failures = checker.status().consecutive_failures;
        if failures < self.restarted_at_failures {
            self.restarted_at_failures = 0;
        }
        if check.restart_after == 0
            || failures == 0
            || !failures.is_multiple_of(check.restart_after)
            || failures == self.restarted_at_failures
        {
            return None;
        }
        self.restarted_at_failures = failures;
        supervisor.restart("its health check kept failing");
        Some(format!("{}: health check failed {failures} times in a row, restarting it", self.name))
    }

    /// Acts on `gantry service:stop/start/restart`. Returns a note when it did.
    pub fn control(&mut self, control: &ServiceControl) -> Option<String> {
        let supervisor = self.supervisor.as_ref()?;
        let id = &self.name;
        let status = supervisor.status();
        let stopped = matches!(status.state, ProcState::Stopped | ProcState::Stopping);
        if let Some(request) = control.restart.as_ref().filter(|r| self.restart_seen.as_ref() != Some(*r)) {
            self.restart_seen = Some(request.clone());
            if control.running {
                supervisor.restart("gantry service:restart");
                return Some(format!("{id}: restarted on request"));
            }
        }
        match (control.running, stopped) {
            (false, false) => {
                supervisor.stop();
                Some(format!("{id}: stopped on request"))
            }
            (true, true) => {
                supervisor.start_again();
                Some(format!("{id}: started on request"))
            }
            _ => None,
        }
    }

    /// Stops the check and the process (TERM, then KILL after the grace).
    pub async fn shutdown(&mut self) {
        if let Some(checker) = self.checker.take() {
            checker.stop();
        }
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.shutdown().await;
        }
    }
}

/// Wakes the agent (with the service id) whenever `rx` changes, until its sender goes.
fn forward<T: Send + Sync + 'static>(
    id: &str,
    mut rx: tokio::sync::watch::Receiver<T>,
    wake: &UnboundedSender<String>,
) {
    let (id, wake) = (id.to_owned(), wake.clone());
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            if wake.send(id.clone()).is_err() {
                break;
            }
        }
    });
}
