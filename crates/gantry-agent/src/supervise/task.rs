//! The supervisor's tokio task: one explicit state machine ([`Phase`])
//! driven by four kinds of events — a command from the handle, output from
//! the process, the process's exit, and a timer (the backoff delay or the
//! stop grace). It owns the process and the log file, so neither needs a
//! lock.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use rustix::process::Signal;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::Child;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

use super::backoff::Backoff;
use super::launch::launch;
use super::logs::LogFile;
use super::{ProcState, ProcessStatus, SupervisorConfig};
use crate::process_group::{drain, signal_group};
use gantry_api::now_ms;

/// After the process exits, how long its output is still read: a process
/// that escaped the group may hold the pipe open for good.
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);

/// What the handle asks of the task.
#[derive(Debug)]
pub(super) enum Command {
    Stop,
    Start,
    Restart(String),
    SetEnv(BTreeMap<String, String>),
    /// Stop, then end the task.
    Shutdown,
}

/// Where the process is; `Running` and `Stopping` have a [`Process`].
#[derive(Debug, Clone, Copy)]
enum Phase {
    Starting,
    Running,
    /// SIGTERM sent; SIGKILL at `kill_at` (`None` once sent).
    Stopping {
        kill_at: Option<Instant>,
        then: After,
    },
    /// Exited unasked, or could not start (`failed`); starts at `start_at`.
    Waiting {
        start_at: Instant,
        failed: bool,
    },
    Stopped,
}

/// What follows a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    StayStopped,
    Start,
}

/// The running process.
struct Process {
    child: Child,
    pid: u32,
    /// `None` once the process closed it.
    output: Option<pipe::Receiver>,
    started: Instant,
}

enum Event {
    /// `None`: every handle is gone.
    Command(Option<Command>),
    Output(usize),
    OutputClosed,
    Exited(io::Result<ExitStatus>),
    Timer,
}

pub(super) struct Task {
    config: SupervisorConfig,
    backoff: Backoff,
    log: LogFile,
    phase: Phase,
    process: Option<Process>,
    restarts: u64,
    started_once: bool,
    last_exit: Option<String>,
    started_at_ms: Option<u64>,
    /// Why the last start failed; cleared by a start that works.
    spawn_problem: Option<String>,
    shutting_down: bool,
    status: watch::Sender<ProcessStatus>,
}

impl Task {
    pub(super) fn new(config: SupervisorConfig, status: watch::Sender<ProcessStatus>) -> Self {
        Task {
            backoff: Backoff::new(config.policy),
            log: LogFile::new(&config.log_dir, &config.service, config.log_max_bytes, config.log_files),
            config,
            phase: Phase::Starting,
            process: None,
            restarts: 0,
            started_once: false,
            last_exit: None,
            started_at_ms: None,
            spawn_problem: None,
            shutting_down: false,
            status,
        }
    }

    /// Runs until shut down (by [`Command::Shutdown`] or every handle
    /// gone) and the process has exited.
    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        self.start();
        self.publish();
        let mut buf = vec![0u8; 8192];
        while !(self.shutting_down && matches!(self.phase, Phase::Stopped)) {
            let event = tokio::select! {
                command = commands.recv(), if !self.shutting_down => Event::Command(command),
                event = process_event(self.process.as_mut(), &mut buf) => event,
                () = sleep_until_some(self.phase.deadline()) => Event::Timer,
            };
            match event {
                Event::Command(command) => self.command(command.unwrap_or(Command::Shutdown)),
                // A synchronous append: the page cache takes it in
                // microseconds, and the task owns the file, so no lock.
                Event::Output(n) => self.log.write(&buf[..n]),
                Event::OutputClosed => {
                    if let Some(process) = &mut self.process {
                        process.output = None;
                    }
                }
                Event::Exited(status) => self.exited(status).await,
                Event::Timer => self.timer(),
            }
            self.publish();
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Stop => self.stop(),
            Command::Start => self.start_again(),
            Command::Restart(reason) => self.restart(&reason),
            Command::SetEnv(env) => self.config.env = env,
            Command::Shutdown => {
                self.shutting_down = true;
                self.stop();
            }
        }
    }

    fn stop(&mut self) {
        match &mut self.phase {
            Phase::Running => self.terminate(After::StayStopped),
            Phase::Stopping { then, .. } => *then = After::StayStopped,
            Phase::Starting | Phase::Waiting { .. } => self.phase = Phase::Stopped,
            Phase::Stopped => {}
        }
    }

    fn start_again(&mut self) {
        self.backoff.reset();
        match &mut self.phase {
            Phase::Running => {}
            Phase::Stopping { then, .. } => *then = After::Start,
            Phase::Starting | Phase::Waiting { .. } | Phase::Stopped => self.start(),
        }
    }

    fn restart(&mut self, reason: &str) {
        self.log.note(&format!("restart requested: {reason}"));
        match &mut self.phase {
            Phase::Running => self.terminate(After::Start),
            Phase::Stopping { then, .. } => *then = After::Start,
            Phase::Starting | Phase::Waiting { .. } | Phase::Stopped => self.start(),
        }
    }

    /// SIGTERM to the group; SIGKILL when the grace period is over.
    fn terminate(&mut self, then: After) {
        signal_group(self.pid(), Signal::TERM);
        self.phase = Phase::Stopping { kill_at: Some(Instant::now() + self.config.stop_grace), then };
    }

    fn timer(&mut self) {
        match &mut self.phase {
            Phase::Stopping { kill_at, .. } => {
                signal_group(self.process.as_ref().map(|p| p.pid), Signal::KILL);
                *kill_at = None;
            }
            Phase::Waiting { .. } => self.start(),
            Phase::Starting | Phase::Running | Phase::Stopped => {}
        }
    }

    /// Spawns the process: `running`, or `failed` with a retry scheduled.
    fn start(&mut self) {
        match launch(&self.config).and_then(|(child, output)| Process::new(child, output)) {
            Ok(process) => {
                if self.started_once {
                    self.restarts += 1;
                }
                self.started_once = true;
                self.started_at_ms = Some(now_ms());
                self.spawn_problem = None;
                let restart = if self.restarts > 0 { format!(" (restart {})", self.restarts) } else { String::new() };
                self.log.note(&format!("started pid {}{restart}", process.pid));
                self.process = Some(process);
                self.phase = Phase::Running;
            }
            Err(problem) => {
                let delay = self.backoff.on_exit(Duration::ZERO);
                self.log.note(&format!("{problem}; trying again in {}", human(delay)));
                self.spawn_problem = Some(problem);
                self.phase = Phase::Waiting { start_at: Instant::now() + delay, failed: true };
            }
        }
    }

    /// The main process exited: kill what it left in its group, log the
    /// rest of its output, and decide what comes next.
    async fn exited(&mut self, status: io::Result<ExitStatus>) {
        let Some(mut process) = self.process.take() else { return };
        let ran_for = process.started.elapsed();
        signal_group(Some(process.pid), Signal::KILL);
        if let Some(output) = &mut process.output {
            drain(output, OUTPUT_DRAIN, |bytes| self.log.write(bytes)).await;
        }
        let exit = describe(&status);
        match self.phase {
            Phase::Stopping { then, .. } => {
                self.log.note(&format!("stopped: {exit}"));
                self.last_exit = Some(exit);
                self.phase = Phase::Stopped;
                if then == After::Start {
                    self.start();
                }
            }
            Phase::Starting | Phase::Running | Phase::Waiting { .. } | Phase::Stopped => {
                let delay = self.backoff.on_exit(ran_for);
                self.log.note(&format!("exited: {exit} after {}; starting again in {}", human(ran_for), human(delay)));
                self.last_exit = Some(exit);
                self.phase = Phase::Waiting { start_at: Instant::now() + delay, failed: false };
            }
        }
    }

    fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.pid)
    }

    /// Publishes the status if it changed (output alone changes nothing).
    fn publish(&self) {
        let status = self.status();
        self.status.send_if_modified(|current| {
            let changed = *current != status;
            if changed {
                *current = status;
            }
            changed
        });
    }

    fn status(&self) -> ProcessStatus {
        let start_at = match self.phase {
            Phase::Waiting { start_at, .. } => Some(start_at),
            _ => None,
        };
        ProcessStatus {
            state: self.phase.state(),
            pid: self.pid(),
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
            started_at_ms: self.started_at_ms,
            next_start_in_ms: start_at.map(|at| millis(at.saturating_duration_since(Instant::now()))),
            problem: self.spawn_problem.clone().or_else(|| self.log.problem().map(str::to_owned)),
        }
    }
}

impl Phase {
    fn state(self) -> ProcState {
        match self {
            Phase::Starting => ProcState::Starting,
            Phase::Running => ProcState::Running,
            Phase::Stopping { .. } => ProcState::Stopping,
            Phase::Waiting { failed: false, .. } => ProcState::Backoff,
            Phase::Waiting { failed: true, .. } => ProcState::Failed,
            Phase::Stopped => ProcState::Stopped,
        }
    }

    /// When the timer fires: the backoff's end, or the stop grace's.
    fn deadline(self) -> Option<Instant> {
        match self {
            Phase::Stopping { kill_at, .. } => kill_at,
            Phase::Waiting { start_at, .. } => Some(start_at),
            Phase::Starting | Phase::Running | Phase::Stopped => None,
        }
    }
}

impl Process {
    fn new(child: Child, output: pipe::Receiver) -> Result<Process, String> {
        // A child that was never waited for always has its pid.
        let pid = child.id().ok_or("the process vanished as it started")?;
        Ok(Process { child, pid, output: Some(output), started: Instant::now() })
    }
}

/// The next thing the process does: write output, close it, or exit.
/// Output first, so the log has all of it before the exit's note.
async fn process_event(process: Option<&mut Process>, buf: &mut [u8]) -> Event {
    let Some(Process { child, output, .. }) = process else { return std::future::pending().await };
    tokio::select! {
        biased;
        read = read_output(output, buf) => match read {
            Ok(0) | Err(_) => Event::OutputClosed,
            Ok(n) => Event::Output(n),
        },
        status = child.wait() => Event::Exited(status),
    }
}

/// The next bytes of `output`; never, once it is closed.
async fn read_output(output: &mut Option<pipe::Receiver>, buf: &mut [u8]) -> io::Result<usize> {
    match output {
        Some(output) => output.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `exit code 3`, `killed by signal 9`.
fn describe(status: &io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => status.to_string(),
        },
        // The group was killed anyway; nothing is left to wait for.
        Err(e) => format!("lost track of it: {e}"),
    }
}

/// `250 ms`, `4.2 s`, for the log's notes.
fn human(d: Duration) -> String {
    if d < Duration::from_secs(10) { format!("{} ms", d.as_millis()) } else { format!("{:.1} s", d.as_secs_f64()) }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
