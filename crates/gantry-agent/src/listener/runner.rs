//! The listener's tokio task: feeds events and the wall clock to
//! [`ListenerState`], performs its actions (start a run, set a wake-up),
//! saves what must survive a restart, and publishes the status.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_generate::write::write_atomic_with_mode;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::process::{self, Launch};
use super::state::{Action, ListenerState, ListenerStatus, RunRecord, RunRequest, SavedState, Throttle};
use gantry_api::now_ms;

/// The state file's name under the data directory.
pub const STATE_FILE: &str = "listener.json";

/// How a listener runs its provision command.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Run as `sh -c COMMAND`: `chef-solo -j /etc/chef/dna.json`, any script.
    pub command: String,
    /// Where `listener.json` lives; created if missing.
    pub data_dir: PathBuf,
    /// How long a run may take before its process group gets SIGTERM.
    pub timeout: Duration,
    /// How long after SIGTERM the group gets SIGKILL.
    pub kill_grace: Duration,
    pub throttle: Throttle,
}

impl ListenerConfig {
    /// A run may take 30 minutes (a first chef-solo run installs packages),
    /// then gets 10 seconds to stop; [`Throttle::default`].
    pub fn new(command: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        ListenerConfig {
            command: command.into(),
            data_dir: data_dir.into(),
            timeout: Duration::from_secs(30 * 60),
            kill_grace: Duration::from_secs(10),
            throttle: Throttle::default(),
        }
    }
}

/// A running listener. Clones share it; when the last clone is dropped the
/// listener lets a run in progress finish, records it, and stops.
#[derive(Debug, Clone)]
pub struct Listener {
    events: mpsc::UnboundedSender<Event>,
    status: watch::Receiver<ListenerStatus>,
    runs: broadcast::Sender<RunRecord>,
}

#[derive(Debug)]
enum Event {
    /// A trigger, and where to send its number, if anyone asks.
    Trigger(String, Option<oneshot::Sender<u64>>),
    SetEnabled(bool),
}

/// Finished runs kept for a subscriber that is behind.
const RUNS_BACKLOG: usize = 16;

impl Listener {
    /// Starts the listener task on the current tokio runtime, with the
    /// throttle history and switch saved in `<data_dir>/listener.json`. A
    /// state file that cannot be read is reported in the status's `problem`
    /// and the listener starts without history; only a data directory that
    /// cannot be created is an error.
    pub fn start(config: ListenerConfig) -> io::Result<Listener> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", config.data_dir.display())))?;
        let path = config.data_dir.join(STATE_FILE);
        let (saved, problem) = load(&path);
        let state = ListenerState::new(config.throttle, saved.clone());
        let mut first = state.status(now_ms());
        first.problem = problem.clone();
        let (status_tx, status_rx) = watch::channel(first);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (runs, _) = broadcast::channel(RUNS_BACKLOG);
        let launch = Launch { command: config.command, timeout: config.timeout, kill_grace: config.kill_grace };
        let task = Task { state, launch, path, written: saved, problem, status: status_tx, runs: runs.clone() };
        tokio::spawn(task.drive(events_rx));
        Ok(Listener { events: events_tx, status: status_rx, runs })
    }

    /// Something the service listens to changed; `reason` says what (it
    /// reaches the command as `GANTRY_PROVISION_REASON`).
    pub fn trigger(&self, reason: impl Into<String>) {
        // Fails only when the task is gone, i.e. the runtime is shutting down.
        let _ = self.events.send(Event::Trigger(reason.into(), None));
    }

    /// Triggers, then waits for the run that answers this trigger (which
    /// may answer others folded into it) and returns its record; `None` if
    /// the listener stopped first. While the listener is off this waits
    /// until it is turned on and the run finishes.
    pub async fn trigger_and_wait(&self, reason: impl Into<String>) -> Option<RunRecord> {
        // Subscribe first: the answering run cannot start before the trigger
        // is handled, so its record cannot be missed.
        let mut runs = self.runs.subscribe();
        let (tx, rx) = oneshot::channel();
        self.events.send(Event::Trigger(reason.into(), Some(tx))).ok()?;
        let number = rx.await.ok()?;
        loop {
            match runs.recv().await {
                Ok(record) if record.last_trigger >= number => return Some(record),
                // Lagged: the answering run may have been skipped; a later
                // one answers this trigger too.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Every finished run's record, as it finishes.
    pub fn subscribe_runs(&self) -> broadcast::Receiver<RunRecord> {
        self.runs.subscribe()
    }

    /// The on/off switch (saved across restarts). On from off queues a run.
    pub fn set_enabled(&self, enabled: bool) {
        let _ = self.events.send(Event::SetEnabled(enabled));
    }

    /// The status as of the last event the task handled (a trigger sent
    /// just now may not show yet; [`Listener::subscribe`] to follow it).
    pub fn status(&self) -> ListenerStatus {
        self.status.borrow().clone()
    }

    /// Every status change, for a caller that publishes or waits for them.
    pub fn subscribe(&self) -> watch::Receiver<ListenerStatus> {
        self.status.clone()
    }

    /// Waits until `n` runs have finished in total (counting runs of earlier
    /// listeners on the same data directory); returns the status then.
    pub async fn wait_for_runs(&self, n: u64) -> ListenerStatus {
        self.wait_for(|s| s.runs_total >= n).await
    }

    /// Waits until the status satisfies `done`; returns it. If the task has
    /// stopped, returns the last status whatever it is.
    pub async fn wait_for(&self, done: impl FnMut(&ListenerStatus) -> bool) -> ListenerStatus {
        let mut status = self.status.clone();
        let result = status.wait_for(done).await.map(|s| s.clone());
        result.unwrap_or_else(|_| status.borrow().clone())
    }
}

/// The task's own data.
struct Task {
    state: ListenerState,
    launch: Launch,
    path: PathBuf,
    /// What the state file holds, to write it only when that changes.
    written: SavedState,
    problem: Option<String>,
    status: watch::Sender<ListenerStatus>,
    runs: broadcast::Sender<RunRecord>,
}

impl Task {
    async fn drive(mut self, mut events: mpsc::UnboundedReceiver<Event>) {
        let mut run: Option<(JoinHandle<RunRecord>, RunRequest)> = None;
        let mut wake: Option<u64> = None;
        let mut open = true;
        while open || run.is_some() {
            let mut finished_run = None;
            let sleep = tokio::time::sleep(Duration::from_millis(wake.unwrap_or(0).saturating_sub(now_ms())));
            let action = tokio::select! {
                event = events.recv(), if open => match event {
                    Some(Event::Trigger(reason, reply)) => {
                        let action = self.state.trigger(&reason, now_ms());
                        if let Some(reply) = reply {
                            let _ = reply.send(self.state.saved().triggers_total);
                        }
                        action
                    }
                    Some(Event::SetEnabled(enabled)) => self.state.set_enabled(enabled, now_ms()),
                    None => {
                        // Every handle is gone: finish the run in progress, start no other.
                        open = false;
                        self.state.stop()
                    }
                },
                finished = async { (&mut run.as_mut().expect("guarded by run.is_some()").0).await }, if run.is_some() => {
                    let (_, request) = run.take().expect("guarded by run.is_some()");
                    let record = finished.unwrap_or_else(|e| lost_run(&request, &e));
                    finished_run = Some(record.clone());
                    self.state.run_finished(record, now_ms())
                },
                () = sleep, if wake.is_some() => self.state.tick(now_ms()),
            };
            wake = None;
            match action {
                Action::Start(request) => {
                    let (launch, started) = (self.launch.clone(), request.clone());
                    run = Some((tokio::spawn(async move { process::run(&launch, &started).await }), request));
                }
                Action::WakeAt(at) => wake = Some(at),
                Action::Idle => {}
            }
            self.save().await;
            let mut status = self.state.status(now_ms());
            status.problem = self.problem.clone();
            self.status.send_replace(status);
            // Announced once saved and in the status, so a subscriber that
            // then reads the status or the file sees the run counted.
            if let Some(record) = finished_run {
                // No subscriber is fine.
                let _ = self.runs.send(record);
            }
        }
    }

    /// Writes the state file if what it must hold changed. The trigger
    /// counter alone is not worth a write per trigger: it is saved with the
    /// next start or finish, which keeps it at or above the saved last run's
    /// `last_trigger`, all that numbering across restarts needs. A failure
    /// is kept as the status's problem; the listener goes on from memory.
    async fn save(&mut self) {
        let saved = self.state.saved();
        if (SavedState { triggers_total: self.written.triggers_total, ..saved.clone() }) == self.written {
            return;
        }
        let bytes = serde_json::to_vec_pretty(saved).expect("the saved state serializes");
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || write_atomic_with_mode(&path, &bytes, Some(0o640))).await;
        let failure = match written {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        match failure {
            None => {
                self.written = saved.clone();
                self.problem = None;
            }
            Some(e) => self.problem = Some(format!("writing {}: {e}", self.path.display())),
        }
    }
}

/// The record of a run whose task panicked or was cancelled.
fn lost_run(request: &RunRequest, e: &tokio::task::JoinError) -> RunRecord {
    RunRecord {
        reasons: request.reasons.clone(),
        triggers: request.triggers,
        last_trigger: request.last_trigger,
        started_at_ms: request.started_at_ms,
        duration_ms: now_ms().saturating_sub(request.started_at_ms),
        exit_code: None,
        signal: None,
        timed_out: false,
        error: Some(format!("the run's task ended without a result: {e}")),
        output_tail: String::new(),
    }
}

/// The saved state, or the default with the reason it could not be read.
fn load(path: &Path) -> (SavedState, Option<String>) {
    let unreadable = |e: &dyn std::fmt::Display| {
        (SavedState::default(), Some(format!("reading {}: {e}; starting with no run history", path.display())))
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(|s| (s, None)).unwrap_or_else(|e| unreadable(&e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (SavedState::default(), None),
        Err(e) => unreadable(&e),
    }
}
