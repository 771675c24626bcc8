//! The haproxy process: started at the first apply (master-worker, in a
//! process group of its own), reloaded for each new plan, and confirmed
//! through the master's CLI before a plan counts as applied.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use gantry_generate::write::write_atomic;
use rustix::process::Signal;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::master::{self, Processes};
use super::{LOG_CAP_BYTES, LOG_FILE, MASTER_SOCKET, NEW_CONFIG_FILE, PID_FILE, Settings, render};
use crate::lb::{Applied, LbError, Plan};
use crate::process_group::signal_group;

/// A local haproxy serving one [`Plan`] at a time. Dropping it stops
/// haproxy without waiting; [`Haproxy::stop`] waits until it is gone.
#[derive(Debug)]
pub struct Haproxy {
    binary: PathBuf,
    settings: Settings,
    /// The plan in force.
    plan: Plan,
    /// The configuration in force (none before the first apply), put back
    /// on disk when a new one fails to load.
    config: Option<String>,
    master: Option<Master>,
    /// A master that a previous agent left running on this directory; it is
    /// retired once our own serves (see [`Haproxy::start`]).
    leftover: Option<u32>,
}

impl Haproxy {
    /// The haproxy binary: the first `haproxy` on `PATH`, else
    /// `/usr/sbin/haproxy` (where Debian puts it, often not on a user's PATH).
    pub fn find_binary() -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join("haproxy"))
            .chain([PathBuf::from("/usr/sbin/haproxy")])
            .find(|candidate| is_executable(candidate))
    }

    /// A manager for haproxy in `settings.dir` (created if missing); haproxy
    /// itself starts at the first [`Haproxy::apply`], as there is nothing to
    /// serve before. A haproxy that a previous agent started on the same
    /// directory and left running (the agent crashed) keeps serving until
    /// ours serves, then leaves gracefully: an agent restart drops nothing.
    pub async fn start(binary: PathBuf, settings: Settings) -> Result<Haproxy, LbError> {
        check_dir(&settings.dir)?;
        fs::create_dir_all(&settings.dir).map_err(|e| io_error(format!("creating {}", settings.dir.display()), e))?;
        let leftover = leftover_master(&settings);
        Ok(Haproxy { binary, settings, plan: Plan::default(), config: None, master: None, leftover })
    }

    /// Makes haproxy serve `plan`: render, check with `haproxy -c`, swap the
    /// file in atomically, then start haproxy or reload it and wait until
    /// the master reports a new worker that answers. On any failure the
    /// previous plan keeps being served and its file is put back. An
    /// unchanged plan costs nothing while haproxy runs, and starts it again
    /// when it died: call this on every reconcile.
    pub async fn apply(&mut self, plan: &Plan) -> Result<Applied, LbError> {
        self.forget_dead_master();
        let running = self.master.is_some();
        if running && self.config.is_some() && *plan == self.plan {
            return Ok(Applied::default());
        }
        let text = render(plan, &self.settings);
        if running && self.config.as_deref() == Some(text.as_str()) {
            // Another order of the same frontends and backends.
            self.plan = plan.clone();
            return Ok(Applied::default());
        }
        let check_us = self.check(&text).await?;
        let began = Instant::now();
        self.swap_in()?;
        let outcome = if running { self.reload().await } else { self.launch().await };
        if let Err(e) = outcome {
            self.put_back();
            return Err(e);
        }
        let reload_us = micros(began.elapsed());
        self.plan = plan.clone();
        self.config = Some(text);
        Ok(Applied { changed: true, check_us, reload_us })
    }

    /// The plan in force: the last one applied successfully.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// What it was started with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The master's pid while haproxy runs (as of the last apply).
    pub fn pid(&self) -> Option<u32> {
        self.master.as_ref().map(|m| m.pid)
    }

    /// Stops haproxy (master and every worker, old ones included) and waits
    /// until it is gone: SIGTERM, SIGKILL if it is still there after a grace.
    pub async fn stop(mut self) {
        if let Some(master) = self.master.take() {
            master.stop().await;
        }
        let _ = fs::remove_file(self.settings.dir.join(PID_FILE));
    }

    /// Writes `text` to the new-config file and has haproxy check it;
    /// returns how long the check took. A file that fails is removed.
    async fn check(&self, text: &str) -> Result<u64, LbError> {
        let new = self.settings.dir.join(NEW_CONFIG_FILE);
        write_atomic(&new, text.as_bytes()).map_err(|e| io_error(format!("writing {}", new.display()), e))?;
        let verdict = self.haproxy_check(&new).await;
        if verdict.is_err() {
            let _ = fs::remove_file(&new);
        }
        verdict
    }

    /// `haproxy -c -f FILE`, timed.
    async fn haproxy_check(&self, file: &Path) -> Result<u64, LbError> {
        let began = Instant::now();
        let output =
            Command::new(&self.binary).arg("-c").arg("-f").arg(file).stdin(Stdio::null()).kill_on_drop(true).output();
        let output = tokio::time::timeout(CHECK_TIMEOUT, output)
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no verdict within 10 s")))
            .map_err(|e| io_error(format!("running `{} -c`", self.binary.display()), e))?;
        let check_us = micros(began.elapsed());
        if output.status.success() {
            return Ok(check_us);
        }
        let text = format!("{}{}", String::from_utf8_lossy(&output.stderr), String::from_utf8_lossy(&output.stdout));
        Err(LbError::Rejected(findings(&text)))
    }

    /// Renames the checked file over the configuration and syncs the
    /// directory, so the swap survives a crash.
    fn swap_in(&self) -> Result<(), LbError> {
        let dir = &self.settings.dir;
        let config = self.settings.config_path();
        fs::rename(dir.join(NEW_CONFIG_FILE), &config)
            .and_then(|()| fs::File::open(dir)?.sync_all())
            .map_err(|e| io_error(format!("replacing {}", config.display()), e))
    }

    /// After a failure: the file in force goes back on disk (best effort:
    /// haproxy runs from memory, and the next apply writes the file again).
    fn put_back(&self) {
        let config = self.settings.config_path();
        let _ = match &self.config {
            Some(text) => write_atomic(&config, text.as_bytes()).map(drop),
            None => fs::remove_file(&config),
        };
    }

    /// Starts haproxy on the swapped-in configuration and waits until its
    /// first worker answers; then a leftover master is told to leave.
    async fn launch(&mut self) -> Result<(), LbError> {
        let dir = &self.settings.dir;
        let log = Log::new(dir);
        let mark = log.mark();
        let _ = fs::remove_file(dir.join(MASTER_SOCKET));
        let stderr = log.open().map_err(|e| io_error(format!("opening {}", log.path.display()), e))?;
        let stdout = stderr.try_clone().map_err(|e| io_error(format!("opening {}", log.path.display()), e))?;
        let mut master_socket = dir.join(MASTER_SOCKET).into_os_string();
        master_socket.push(",mode,600");
        let child = Command::new(&self.binary)
            .arg("-W")
            .arg("-f")
            .arg(self.settings.config_path())
            .arg("-S")
            .arg(master_socket)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Its own group, so a stop reaches every worker it forked.
            .process_group(0)
            .spawn()
            .map_err(|e| io_error(format!("starting {}", self.binary.display()), e))?;
        let Some(pid) = child.id() else {
            return Err(io_error("starting haproxy".into(), io::Error::other("it exited at once")));
        };
        let mut master = Master { child, pid };
        match master.first_worker(&dir.join(MASTER_SOCKET), &log, mark).await {
            Ok(()) => {
                self.master = Some(master);
                self.retire_leftover();
                Ok(())
            }
            Err(e) => {
                master.stop().await;
                Err(e)
            }
        }
    }

    /// Has the master load the swapped-in configuration (SIGUSR2) and waits
    /// until `show proc` counts one more reload and lists a new worker that
    /// answers. A failed reload leaves the old worker serving.
    async fn reload(&mut self) -> Result<(), LbError> {
        let socket = self.settings.dir.join(MASTER_SOCKET);
        let log = Log::new(&self.settings.dir);
        let Some(master) = self.master.as_mut() else {
            return Err(io_error("reloading haproxy".into(), io::Error::other("it is not running")));
        };
        let before = master::processes(&socket).await.map_err(|e| io_error("asking haproxy's master".into(), e))?;
        let mark = log.mark();
        master.signal(Signal::USR2).map_err(|e| io_error("signalling haproxy's master".into(), e))?;
        let outcome = master.reloaded(&socket, &before, &log, mark).await;
        self.forget_dead_master();
        outcome
    }

    /// Drops a master that exited since the last look, so the next apply starts one.
    fn forget_dead_master(&mut self) {
        if self.master.as_mut().is_some_and(|m| !matches!(m.child.try_wait(), Ok(None))) {
            self.master = None;
        }
    }

    /// Tells a leftover master (still that process: it serves our
    /// configuration and is not ours) to leave gracefully: it passes
    /// SIGUSR1 to its workers, which stop accepting, finish what they
    /// serve and exit, and the master after them.
    fn retire_leftover(&mut self) {
        let config = self.settings.config_path();
        if let Some(pid) = self.leftover.take().filter(|&pid| Some(pid) != self.pid() && serves(pid, &config)) {
            let _ = signal_process(pid, Signal::USR1);
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(master) = &self.master {
            signal_group(Some(master.pid), Signal::TERM);
        }
    }
}

/// How long `haproxy -c` may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a start or a reload may take until a new worker answers.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Between two looks at the master while it starts or reloads.
const POLL: Duration = Duration::from_millis(5);
/// After SIGTERM, how long the master may take to stop its workers and exit.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The master process, our child.
#[derive(Debug)]
struct Master {
    child: Child,
    pid: u32,
}

impl Master {
    /// Waits until the master lists a worker that answers, or exits (the
    /// configuration did not load: its output says why).
    async fn first_worker(&mut self, socket: &Path, log: &Log, mark: u64) -> Result<(), LbError> {
        self.watch("start", log, mark, || {
            let socket = socket.to_path_buf();
            async move {
                let processes = master::processes(&socket).await.ok()?;
                let &worker = processes.workers.first()?;
                master::worker_answers(&socket, worker).await.then_some(Ok(()))
            }
        })
        .await
    }

    /// Waits until `show proc` counts the reload that `before` precedes: a
    /// failed one is a rejection (the output says why), a good one must
    /// have forked a worker that answers.
    async fn reloaded(&mut self, socket: &Path, before: &Processes, log: &Log, mark: u64) -> Result<(), LbError> {
        self.watch("reload", log, mark, || {
            let (socket, before, log_path) = (socket.to_path_buf(), before.clone(), log.path.clone());
            async move {
                // While the master re-executes itself, its socket does not answer.
                let now = master::processes(&socket).await.ok().filter(|now| now.reloads > before.reloads)?;
                if now.failed > 0 {
                    return Some(Err(LbError::Rejected(Log { path: log_path }.since(mark))));
                }
                let &worker = now.workers.iter().find(|w| !before.workers.contains(w))?;
                master::worker_answers(&socket, worker).await.then_some(Ok(()))
            }
        })
        .await
    }

    /// Looks every [`POLL`] until `settled` has an outcome, the master
    /// exits (a rejection: its output says why) or [`READY_TIMEOUT`] passes.
    async fn watch<Fut>(
        &mut self,
        what: &str,
        log: &Log,
        mark: u64,
        // A closure returning an owned future, not an `AsyncFnMut`: a future
        // borrowing from its closure is not `Send` for every lifetime, and
        // the agent's future must be.
        mut settled: impl FnMut() -> Fut,
    ) -> Result<(), LbError>
    where
        Fut: Future<Output = Option<Result<(), LbError>>>,
    {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().ok().flatten() {
                return Err(LbError::Rejected(format!("haproxy exited ({status}): {}", log.since(mark))));
            }
            if let Some(outcome) = settled().await {
                return outcome;
            }
            tokio::time::sleep(POLL).await;
        }
        Err(not_ready(what))
    }

    fn signal(&self, signal: Signal) -> io::Result<()> {
        signal_process(self.pid, signal)
    }

    /// SIGTERM to the group (the master passes it on too, and reaps its
    /// workers before it exits); SIGKILL to the group after [`STOP_GRACE`].
    async fn stop(mut self) {
        let group = Some(self.pid);
        signal_group(group, Signal::TERM);
        if tokio::time::timeout(STOP_GRACE, self.child.wait()).await.is_err() {
            signal_group(group, Signal::KILL);
            let _ = self.child.wait().await;
        }
    }
}

/// haproxy's output file: what the master and its workers write to
/// stderr, read back from a mark to say why a start or reload failed.
struct Log {
    path: PathBuf,
}

impl Log {
    fn new(dir: &Path) -> Log {
        Log { path: dir.join(LOG_FILE) }
    }

    /// The file for haproxy's stdout and stderr, appended to (also after we
    /// empty it: O_APPEND writes go to the end as it is now).
    fn open(&self) -> io::Result<fs::File> {
        fs::OpenOptions::new().create(true).append(true).open(&self.path)
    }

    /// Where what is written from now on starts; empties the file first
    /// when it is past [`LOG_CAP_BYTES`].
    fn mark(&self) -> u64 {
        let len = fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if len <= LOG_CAP_BYTES {
            return len;
        }
        match fs::OpenOptions::new().write(true).open(&self.path).and_then(|f| f.set_len(0)) {
            Ok(()) => 0,
            Err(_) => len,
        }
    }

    /// What haproxy wrote since `mark`, boiled down by [`findings`].
    fn since(&self, mark: u64) -> String {
        let bytes = fs::read(&self.path).unwrap_or_default();
        let start = usize::try_from(mark).unwrap_or(usize::MAX).min(bytes.len());
        let tail = &bytes[start.max(bytes.len().saturating_sub(MAX_FINDINGS_BYTES))..];
        findings(&String::from_utf8_lossy(tail))
    }
}

/// At most this much of haproxy's output goes into an error.
const MAX_FINDINGS_BYTES: usize = 8192;

/// The alerts in haproxy's output (the reasons it refused or failed), else
/// all of it but its notices (version, executable path).
fn findings(output: &str) -> String {
    let lines: Vec<&str> = output.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
    let alerts: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("[ALERT]")).collect();
    if !alerts.is_empty() {
        return alerts.join("\n");
    }
    let rest: Vec<&str> = lines.iter().copied().filter(|l| !l.starts_with("[NOTICE]")).collect();
    if rest.is_empty() { "haproxy said nothing".to_owned() } else { rest.join("\n") }
}

/// The pid of a master that serves this directory's configuration though
/// we did not start it: the pid file names it and its command line holds
/// our configuration's path (so a recycled pid is not mistaken for it).
fn leftover_master(settings: &Settings) -> Option<u32> {
    let pid: u32 = fs::read_to_string(settings.dir.join(PID_FILE)).ok()?.trim().parse().ok()?;
    serves(pid, &settings.config_path()).then_some(pid)
}

/// Whether process `pid` runs with `config` as an argument (a process that
/// exited, a zombie, has an empty command line).
fn serves(pid: u32, config: &Path) -> bool {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    cmdline.split(|&b| b == 0).any(|arg| arg == config.as_os_str().as_bytes())
}

/// The master socket is given as `-S PATH,mode,600`, and a Unix socket path
/// holds at most 107 bytes: a directory that breaks either is refused now
/// rather than at the first apply.
fn check_dir(dir: &Path) -> Result<(), LbError> {
    let longest = dir.join(MASTER_SOCKET).as_os_str().len().max(dir.join(super::STATS_SOCKET).as_os_str().len());
    let problem = if dir.as_os_str().as_bytes().contains(&b',') {
        "it holds a comma, which haproxy's -S option takes for a separator"
    } else if longest > 107 {
        "its sockets' paths would pass the 107 bytes a Unix socket path may have"
    } else {
        return Ok(());
    };
    Err(io_error(format!("using {} for haproxy", dir.display()), io::Error::new(io::ErrorKind::InvalidInput, problem)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Sends `signal` to the one process `pid` (never 0 or 1).
fn signal_process(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = i32::try_from(pid).ok().filter(|&p| p > 1).and_then(rustix::process::Pid::from_raw);
    let pid = pid.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a process to signal"))?;
    rustix::process::kill_process(pid, signal).map_err(io::Error::from)
}

fn io_error(what: String, source: io::Error) -> LbError {
    LbError::Io { what, source }
}

fn not_ready(what: &str) -> LbError {
    io_error(
        format!("waiting for haproxy's {what}"),
        io::Error::new(io::ErrorKind::TimedOut, format!("no worker answered within {} s", READY_TIMEOUT.as_secs())),
    )
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_are_the_alerts() {
        let output = "[NOTICE]   (1) : haproxy version is 2.6.12\n\
            [ALERT]    (1) : config : parsing [x.cfg:32] : 'bind' : invalid port '0'\n\
            [ALERT]    (1) : config : Fatal errors found in configuration.\n";
        assert_eq!(
            findings(output),
            "[ALERT]    (1) : config : parsing [x.cfg:32] : 'bind' : invalid port '0'\n\
             [ALERT]    (1) : config : Fatal errors found in configuration."
        );
        assert_eq!(findings("[NOTICE] x\n[WARNING] y\n"), "[WARNING] y");
        assert_eq!(findings(""), "haproxy said nothing");
    }
}
