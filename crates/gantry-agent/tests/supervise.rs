//! The supervisor with real processes: a killed process comes back after
//! the backoff delay, a crash loop backs off and costs little CPU, the
//! environment is exactly the one given, output lands in rotated logs that
//! `read_tail` and `follow` read back, stopping kills the whole process
//! group (SIGKILL for one that ignores SIGTERM), and services run as
//! another user.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gantry_agent::supervise::{
    ProcState, ProcessStatus, Program, RestartPolicy, Supervisor, SupervisorConfig, follow, log_path, read_tail,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn shell(line: &str) -> Program {
    Program::Shell(line.to_owned())
}

/// A config for tests: restarts after `initial_ms` (doubling to 10 s), a
/// 300 ms stop grace, logs in `dir`.
fn config(dir: &Path, program: Program, initial_ms: u64) -> SupervisorConfig {
    let mut config = SupervisorConfig::new("web", program, dir);
    config.policy = RestartPolicy { initial: ms(initial_ms), factor: 2.0, max: ms(10_000), reset_after: ms(60_000) };
    config.stop_grace = ms(300);
    config
}

/// `future`, or a failure naming `what` after 5 s.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), future).await.unwrap_or_else(|_| panic!("no {what} within 5 s"))
}

/// Waits (at most 5 s) for a status that satisfies `done`.
async fn wait_for(supervisor: &Supervisor, what: &str, done: impl FnMut(&ProcessStatus) -> bool) -> ProcessStatus {
    let mut status = supervisor.subscribe();
    within(what, status.wait_for(done)).await.expect("the supervisor is running").clone()
}

async fn running(supervisor: &Supervisor) -> u32 {
    wait_for(supervisor, "running process", |s| s.state == ProcState::Running).await.pid.expect("a running pid")
}

/// Starts `config`, whose program starts a child, and waits until both
/// run; returns the supervisor and the process's pid (its group's id).
async fn start_with_a_child(config: SupervisorConfig) -> (Supervisor, u32) {
    let supervisor = Supervisor::start(config);
    let pid = running(&supervisor).await;
    eventually("a child in the group", ms(2000), || group_members(pid).len() >= 2).await;
    (supervisor, pid)
}

/// Polls `condition` every 10 ms until it holds, failing after `limit`.
async fn eventually(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(ms(10)).await;
    }
}

/// The live (not zombie) processes in process group `group`, from /proc.
fn group_members(group: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // A process may be gone by the time its stat is read.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
            // After the command's closing parenthesis: state, ppid, pgrp.
            let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().collect();
            fields[0] != "Z" && fields[2] == group.to_string()
        })
        .collect()
}

fn log_text(dir: &Path) -> String {
    std::fs::read_to_string(log_path(dir, "web")).unwrap_or_default()
}

#[tokio::test]
async fn a_killed_process_is_started_again_after_the_initial_delay() {
    let dir = tempfile::tempdir().unwrap();
    // A background child too: it must not outlive the main process.
    let (supervisor, first) = start_with_a_child(config(dir.path(), shell("sleep 1000 & exec sleep 1000"), 200)).await;

    let killed_at = Instant::now();
    let pid = rustix::process::Pid::from_raw(first as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    let status = wait_for(&supervisor, "new pid", |s| s.pid.is_some_and(|p| p != first)).await;
    let took = killed_at.elapsed();

    assert!((ms(200)..ms(2000)).contains(&took), "restarted {took:?} after the kill; the delay is 200 ms");
    let outcome = (status.state, status.restarts, status.last_exit.as_deref());
    assert_eq!(outcome, (ProcState::Running, 1, Some("killed by signal 9")));
    assert!(group_members(first).is_empty(), "the background child of {first} was killed with it");
    let second = status.pid.unwrap();
    assert!(log_text(dir.path()).contains(&format!("--- gantry: started pid {second} (restart 1) ---\n")));
    supervisor.shutdown().await;
    assert!(group_members(second).is_empty(), "shutdown leaves nothing of group {second}");
}

/// utime + stime of this thread (the test's current-thread runtime runs
/// the supervisor), in clock ticks. Children are left out: the process's
/// cutime counts every test's children (haproxy checks, servers) and made
/// this flaky under a full run; what the crash loop's own children cost is
/// bounded by the number of starts, which the test asserts.
fn cpu_ticks() -> u64 {
    let fields = |path: &str, range: std::ops::Range<usize>| -> u64 {
        let stat = std::fs::read_to_string(path).unwrap();
        // Fields from 3 (state) on, after the command's closing parenthesis.
        let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().collect();
        range.map(|field| rest[field - 3].parse::<u64>().unwrap()).sum()
    };
    fields("/proc/thread-self/stat", 14..16)
}

#[tokio::test]
async fn a_crash_loop_backs_off_to_the_cap_and_costs_little_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), shell("exit 1"), 50);
    config.policy.max = ms(400);
    let window = ms(3000);
    let ticks_before = cpu_ticks();
    let began = Instant::now();
    let supervisor = Supervisor::start(config);

    // Every start's time, by its number: the status keeps the latest start
    // while it waits out the delay, so no start goes unseen.
    let mut starts = BTreeMap::new();
    let mut status = supervisor.subscribe();
    while let Ok(Ok(())) = tokio::time::timeout_at((began + window).into(), status.changed()).await {
        let s = status.borrow_and_update().clone();
        if let Some(at) = s.started_at_ms {
            starts.entry(s.restarts).or_insert(at);
        }
    }
    let cpu = Duration::from_millis((cpu_ticks() - ticks_before) * 10); // 100 ticks a second
    let last = supervisor.status();
    supervisor.shutdown().await;

    // Delays 50, 100, 200, 400, 400 ...: starts at 0, 50, 150, 350, 750,
    // 1150 ... 2750 ms, 10 in 3 s (fewer, as each run takes some time).
    assert!((6..=11).contains(&starts.len()), "{} starts in 3 s: {starts:?}", starts.len());
    assert_eq!(last.last_exit.as_deref(), Some("exit code 1"));
    let gaps: Vec<(u64, u64)> = starts
        .iter()
        .zip(starts.iter().skip(1))
        .filter(|((a, _), (b, _))| *b - *a == 1)
        .map(|((n, at), (_, next))| (*n, next - at))
        .collect();
    for &(n, gap) in &gaps {
        let delay = (50u64 << n.min(4)).min(400);
        let expected = delay.saturating_sub(2)..delay + 300;
        assert!(expected.contains(&gap), "start {n} to {}: {gap} ms, delay {delay} ms: {gaps:?}", n + 1);
    }
    assert!(gaps.iter().filter(|(n, _)| *n >= 3).count() >= 2, "the delay reached its cap: {gaps:?}");
    assert!(cpu < window / 10, "the crash loop used {cpu:?} of CPU in {window:?}");
}

#[tokio::test]
async fn the_environment_is_exactly_the_one_given_plus_path() {
    assert!(std::env::var_os("CARGO_PKG_NAME").is_some(), "the agent (this test) has variables of its own");
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), Program::Argv(vec!["env".into()]), 60_000);
    config.env = BTreeMap::from([("FOO".into(), "bar baz".into()), ("PATH".into(), "/usr/bin:/bin".into())]);
    let given = Supervisor::start(config.clone());
    // No PATH given: the agent's.
    config.service = "nopath".into();
    config.env.remove("PATH");
    let inherited = Supervisor::start(config);

    for supervisor in [&given, &inherited] {
        wait_for(supervisor, "exit", |s| s.state == ProcState::Backoff).await;
    }
    let printed = |service: &str| -> BTreeSet<String> {
        let log = std::fs::read_to_string(log_path(dir.path(), service)).unwrap();
        log.lines().filter(|l| !l.starts_with("--- gantry: ")).map(str::to_owned).collect()
    };
    assert_eq!(printed("web"), BTreeSet::from(["FOO=bar baz".into(), "PATH=/usr/bin:/bin".into()]));
    let agent_path = std::env::var("PATH").unwrap();
    assert_eq!(printed("nopath"), BTreeSet::from(["FOO=bar baz".into(), format!("PATH={agent_path}")]));
}

#[tokio::test]
async fn output_is_rotated_by_size_and_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let program = shell("i=0; while [ $i -lt 200 ]; do echo \"line $i\"; i=$((i+1)); done; exec sleep 1000");
    let mut config = config(dir.path(), program, 60_000);
    (config.log_max_bytes, config.log_files) = (512, 2);
    let supervisor = Supervisor::start(config);
    eventually("line 199 in the log", ms(3000), || log_text(dir.path()).contains("line 199\n")).await;

    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().into_string().unwrap(), e.metadata().unwrap().len()))
        .collect();
    files.sort();
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["web.log", "web.log.1", "web.log.2"]);
    assert!(files.iter().all(|(_, len)| *len <= 512), "{files:?}");

    // The tail across the three files: the newest lines, whole and in order.
    let tail = String::from_utf8(read_tail(dir.path(), "web", u64::MAX).unwrap()).unwrap();
    let numbers: Vec<u32> = tail.lines().filter_map(|l| l.strip_prefix("line ")).map(|n| n.parse().unwrap()).collect();
    let first = numbers[0];
    assert!(first > 0, "the oldest lines were rotated away");
    assert_eq!(numbers, (first..200).collect::<Vec<_>>(), "{tail}");
    let last_100 = read_tail(dir.path(), "web", 100).unwrap();
    assert_eq!(last_100, tail.as_bytes()[tail.len() - 100..]);
    supervisor.shutdown().await;
}

#[tokio::test]
async fn follow_reads_on_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    // 30 lines over 1.5 s, a rotation every ~16 lines: slower than a poll.
    let program =
        shell("i=0; while [ $i -lt 30 ]; do echo \"line $i.......\"; i=$((i+1)); sleep 0.05; done; exec sleep 1000");
    let mut config = config(dir.path(), program, 60_000);
    (config.log_max_bytes, config.log_files) = (256, 1);
    let supervisor = Supervisor::start(config);
    let mut stream = Box::pin(follow(dir.path(), "web", 0));
    let mut seen = String::new();
    while !seen.contains("line 29") {
        let bytes = within("line 29 from follow", stream.next()).await.unwrap().unwrap();
        seen.push_str(std::str::from_utf8(&bytes).unwrap());
    }
    let lines: Vec<&str> = seen.lines().filter(|l| !l.starts_with("--- gantry: ")).collect();
    let expected: Vec<String> = (0..30).map(|i| format!("line {i}.......")).collect();
    assert_eq!(lines, expected);
    assert!(dir.path().join("web.log.1").exists(), "the log rotated while followed");
    supervisor.shutdown().await;
}

#[tokio::test]
async fn stop_start_again_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), shell("sleep 1000 & sleep 1000"), 10_000);
    config.stop_grace = ms(5000);
    let (supervisor, first) = start_with_a_child(config).await;

    // SIGTERM to the group ends both sleeps well before the grace is over.
    let asked = Instant::now();
    supervisor.stop();
    let stopped = wait_for(&supervisor, "stopped", |s| s.state == ProcState::Stopped).await;
    assert!(asked.elapsed() < ms(2000), "stopping took {:?}", asked.elapsed());
    assert_eq!((stopped.pid, stopped.last_exit.as_deref()), (None, Some("killed by signal 15")));
    eventually("an empty group", ms(2000), || group_members(first).is_empty()).await;

    supervisor.start_again();
    let second = wait_for(&supervisor, "running again", |s| s.pid.is_some_and(|p| p != first)).await;
    assert_eq!(second.restarts, 1);
    let second = second.pid.unwrap();

    // At once, not after the 10 s backoff delay.
    let asked = Instant::now();
    supervisor.restart("config changed");
    let third = wait_for(&supervisor, "a restart", |s| s.state == ProcState::Running && s.pid != Some(second)).await;
    assert!(asked.elapsed() < ms(2000), "restarting took {:?}", asked.elapsed());
    assert_eq!(third.restarts, 2);
    eventually("the old group gone", ms(2000), || group_members(second).is_empty()).await;
    let log = log_text(dir.path());
    let notes = "--- gantry: restart requested: config changed ---\n--- gantry: stopped: killed by signal 15 ---\n";
    assert!(log.contains(notes), "{log}");

    supervisor.shutdown().await;
    assert!(group_members(third.pid.unwrap()).is_empty());
}

#[tokio::test]
async fn a_process_that_ignores_sigterm_is_killed_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    // The shell and its child ignore SIGTERM.
    let config = config(dir.path(), shell("trap '' TERM; sleep 1000 & wait"), 10_000);
    let (supervisor, pid) = start_with_a_child(config).await;

    let asked = Instant::now();
    supervisor.stop();
    let stopped = wait_for(&supervisor, "stopped", |s| s.state == ProcState::Stopped).await;
    let took = asked.elapsed();
    assert!((ms(300)..ms(2000)).contains(&took), "stopped {took:?} after the request; the grace is 300 ms");
    assert_eq!(stopped.last_exit.as_deref(), Some("killed by signal 9"));
    eventually("an empty group", ms(2000), || group_members(pid).is_empty()).await;
}

/// `nobody`'s uid from /etc/passwd.
fn nobody_uid() -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd.lines().find(|l| l.starts_with("nobody:")).expect("a nobody user in /etc/passwd");
    line.split(':').nth(2).unwrap().to_owned()
}

#[tokio::test]
async fn a_service_runs_as_the_user_given() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), shell("echo \"uid=$(id -u) user=$USER home=$HOME\"; exec sleep 1000"), 60_000);
    config.user = Some("nobody".into());
    config.cwd = Some("/".into());
    let supervisor = Supervisor::start(config);
    let me = rustix::process::geteuid().as_raw();
    if me == 0 {
        running(&supervisor).await;
        eventually("the id in the log", ms(3000), || log_text(dir.path()).contains("uid=")).await;
        let log = log_text(dir.path());
        assert!(log.contains(&format!("uid={} user=nobody home=", nobody_uid())), "{log}");
    } else {
        let failed = wait_for(&supervisor, "failure", |s| s.state == ProcState::Failed).await;
        assert_eq!(failed.problem, Some(format!("running as nobody needs root; the agent runs as uid {me}")));
    }
    supervisor.shutdown().await;
}

#[tokio::test]
async fn what_cannot_start_fails_clearly_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let missing = Supervisor::start(config(dir.path(), Program::Argv(vec!["no-such-program-gantry".into()]), 50));
    let mut config = config(dir.path(), shell("true"), 50);
    config.service = "nouser".into();
    config.user = Some("no-such-user-gantry".into());
    let no_user = Supervisor::start(config);

    let failed = wait_for(&missing, "failure", |s| s.state == ProcState::Failed).await;
    let problem = failed.problem.unwrap();
    assert!(problem.starts_with("cannot start no-such-program-gantry: not found in PATH="), "{problem}");
    let failed = wait_for(&no_user, "failure", |s| s.state == ProcState::Failed).await;
    let problem = "no user `no-such-user-gantry` in /etc/passwd; create it, or give a numeric uid";
    assert_eq!(failed.problem.as_deref(), Some(problem));
    assert!(failed.next_start_in_ms.is_some_and(|ms| ms <= 50), "{failed:?}");

    // Retried with backoff: 50, 100 ms ...
    eventually("three tries", ms(3000), || log_text(dir.path()).matches("cannot start").count() >= 3).await;
    assert_eq!(missing.status().state, ProcState::Failed);
    missing.shutdown().await;
    no_user.shutdown().await;
}
