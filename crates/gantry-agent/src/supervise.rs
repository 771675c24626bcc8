//! The process supervisor (seed 003: "a parent process that monitors these
//! processes all the time, ensuring they're running and restarts them when
//! they die"): the agent runs each service's command under a [`Supervisor`].
//!
//! - Each process leads its own process group. Stopping it sends SIGTERM to
//!   the group and SIGKILL after a grace period; when its main process
//!   exits, whatever it left in the group is SIGKILLed, so nothing leaks. (A
//!   program that daemonizes into a group of its own escapes this: services
//!   must run in the foreground.)
//! - A process that exits is started again after a [`Backoff`] delay that
//!   grows while it keeps failing and resets after a run that lasted, so a
//!   crash loop costs almost nothing.
//! - Its environment is exactly the one configured, plus PATH.
//! - Its stdout and stderr, interleaved as written, go to
//!   `<log_dir>/<service>.log`, rotated by size, with the supervisor's
//!   notes (started, exited, restart requested) in between; [`read_tail`]
//!   and [`follow`] serve `gantry logs`.
//!
//! [`Backoff`] and the passwd parser are pure; the task around them
//! (`task.rs`) is tested with real processes.

mod backoff;
mod launch;
pub(crate) use launch::as_user;
pub(crate) use user::{PASSWD, resolve_in as resolve_user};
mod logs;
mod task;
mod user;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

pub use backoff::{Backoff, RestartPolicy};
pub use logs::{FOLLOW_POLL, follow, log_path, read_tail};
use task::{Command, Task};

/// What a supervisor runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// `/bin/sh -c LINE`: pipes, redirections, `exec` — what a service's
    /// `command` in the spec is.
    Shell(String),
    /// The program and its arguments, run directly (looked up in the
    /// child's PATH unless it contains a `/`).
    Argv(Vec<String>),
}

/// How to run one service's process. [`SupervisorConfig::new`] gives the
/// documented defaults.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// The service's id: names the log file and appears in messages.
    pub service: String,
    pub program: Program,
    /// The complete environment of the process: nothing of the agent's own
    /// leaks in (its secrets, its `GANTRY_*` settings) except PATH, which
    /// is the agent's when this has none (or a standard one when the agent
    /// has none either).
    pub env: BTreeMap<String, String>,
    /// Run as this user (a name in /etc/passwd, or a numeric uid), with the
    /// user's primary group and no supplementary groups; HOME, USER and
    /// LOGNAME are set from its entry unless `env` has them. Switching to
    /// another user needs the agent to run as root. `None`: as the agent.
    pub user: Option<String>,
    /// The working directory; `None`: the agent's.
    pub cwd: Option<PathBuf>,
    /// Where `<service>.log` and its rotated files go; created if missing.
    pub log_dir: PathBuf,
    /// The live log file is rotated before it would grow past this.
    pub log_max_bytes: u64,
    /// How many rotated files (`<service>.log.1` the newest) are kept
    /// besides the live one.
    pub log_files: u32,
    pub policy: RestartPolicy,
    /// How long a stopping process has between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
}

impl SupervisorConfig {
    /// An empty environment (plus PATH), the agent's user and working
    /// directory, logs rotated at 10 MiB keeping 3 old files (at most 40 MiB
    /// a service), [`RestartPolicy::default`], and 5 s between SIGTERM and
    /// SIGKILL (Nomad's `kill_timeout`).
    pub fn new(service: impl Into<String>, program: Program, log_dir: impl Into<PathBuf>) -> Self {
        SupervisorConfig {
            service: service.into(),
            program,
            env: BTreeMap::new(),
            user: None,
            cwd: None,
            log_dir: log_dir.into(),
            log_max_bytes: 10 * 1024 * 1024,
            log_files: 3,
            policy: RestartPolicy::default(),
            stop_grace: Duration::from_secs(5),
        }
    }
}

/// Where a supervised process is in its life, and what the agent reports
/// about it: wire types, defined with the other agent documents.
pub use gantry_api::{ProcState, ProcessStatus};

/// A handle to the task that supervises one process. Clones share it; when
/// the last clone is dropped the process is stopped (as by
/// [`Supervisor::shutdown`], without waiting for it).
#[derive(Debug, Clone)]
pub struct Supervisor {
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<ProcessStatus>,
}

impl Supervisor {
    /// Starts supervising on the current tokio runtime; the process starts
    /// at once. Never fails: a process that cannot start is state `failed`.
    pub fn start(config: SupervisorConfig) -> Supervisor {
        let first = ProcessStatus {
            state: ProcState::Starting,
            pid: None,
            restarts: 0,
            last_exit: None,
            started_at_ms: None,
            next_start_in_ms: None,
            problem: None,
        };
        let (status_tx, status_rx) = watch::channel(first);
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        tokio::spawn(Task::new(config, status_tx).run(commands_rx));
        Supervisor { commands: commands_tx, status: status_rx }
    }

    /// Stops the process: SIGTERM to its group, SIGKILL after `stop_grace`;
    /// it is not restarted until [`Supervisor::start_again`] or
    /// [`Supervisor::restart`]. A pending restart is cancelled.
    pub fn stop(&self) {
        self.send(Command::Stop);
    }

    /// The opposite of [`Supervisor::stop`]: the process should run again.
    /// Starts it at once if it is stopped, or waiting to restart (an
    /// operator starting a crash-looping service wants it now), with the
    /// backoff reset; a stopping process starts as soon as it has exited.
    /// Nothing happens to a running process.
    pub fn start_again(&self) {
        self.send(Command::Start);
    }

    /// Stops the process (as [`Supervisor::stop`]) and starts it again as
    /// soon as it has exited, with no backoff delay; a process that is not
    /// running starts at once. `reason` goes to the log.
    pub fn restart(&self, reason: &str) {
        self.send(Command::Restart(reason.to_owned()));
    }

    /// The environment for the next start (see [`SupervisorConfig::env`]);
    /// the running process keeps its own. Call [`Supervisor::restart`] to
    /// apply it now.
    pub fn set_env(&self, env: BTreeMap<String, String>) {
        self.send(Command::SetEnv(env));
    }

    /// The status as of the last event the task handled.
    pub fn status(&self) -> ProcessStatus {
        self.status.borrow().clone()
    }

    /// Every status change, for a caller that publishes or waits for them.
    pub fn subscribe(&self) -> watch::Receiver<ProcessStatus> {
        self.status.clone()
    }

    /// Stops the process (SIGTERM, grace, SIGKILL) and waits until it has
    /// exited and the task has ended. Other clones of this handle go inert.
    pub async fn shutdown(self) {
        self.send(Command::Shutdown);
        let mut status = self.status;
        // The task drops its sender when it ends.
        while status.changed().await.is_ok() {}
    }

    fn send(&self, command: Command) {
        // Fails only when the task has ended (shut down, or the runtime is
        // going away): there is nothing left to command.
        let _ = self.commands.send(command);
    }
}
