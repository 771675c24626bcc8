//! The listener with real processes: bursts fold into few runs that never
//! overlap, the throttle survives a restart, timeouts kill the whole process
//! group, outcomes and output are recorded, and the switch works.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use gantry_agent::listener::{Listener, ListenerConfig, RunState, STATE_FILE, SavedState, Throttle};

use crate::alive;

/// A listener config for tests: `throttle_ms` apart, no window limit that
/// a test could reach, a 10 s timeout.
fn config(dir: &Path, command: &str, min_interval_ms: u64) -> ListenerConfig {
    let mut config = ListenerConfig::new(command, dir.join("data"));
    config.throttle = Throttle {
        min_interval: Duration::from_millis(min_interval_ms),
        max_runs: 100,
        window: Duration::from_secs(60),
    };
    config.timeout = Duration::from_secs(10);
    config.kill_grace = Duration::from_millis(300);
    config
}

/// `future`, or a failure after 10 s.
async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future).await.expect("the listener did not get there in 10 s")
}

/// A command that logs `start NANOS` and `end NANOS` around a sleep.
fn logging_command(log: &Path, sleep: &str) -> String {
    let log = log.display();
    format!("echo start $(date +%s%N) >> {log}; sleep {sleep}; echo end $(date +%s%N) >> {log}")
}

/// The (start, end) nanosecond pairs of a log written by [`logging_command`].
fn runs_in_log(log: &Path) -> Vec<(u128, u128)> {
    let text = std::fs::read_to_string(log).unwrap();
    let lines: Vec<(&str, u128)> = text
        .lines()
        .map(|l| {
            let (what, at) = l.split_once(' ').unwrap();
            (what, at.parse().unwrap())
        })
        .collect();
    lines
        .chunks(2)
        .map(|pair| match pair {
            [("start", s), ("end", e)] => (*s, *e),
            other => panic!("runs overlapped or broke off: {other:?} in\n{text}"),
        })
        .collect()
}

#[tokio::test]
async fn a_burst_of_triggers_makes_two_runs_that_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let listener = Listener::start(config(dir.path(), &logging_command(&log, "0.2"), 1000)).unwrap();
    let mut status = listener.subscribe();
    listener.trigger("change 0");
    let first_start =
        within(status.wait_for(|s| s.running_since_ms.is_some())).await.unwrap().running_since_ms.unwrap();
    for i in 1..100 {
        listener.trigger(format!("change {i}"));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let status = within(listener.wait_for_runs(2)).await;
    assert_eq!((status.state, status.queued_triggers), (RunState::Idle, 0), "{status:?}");
    let last = status.last_run.unwrap();
    assert_eq!(last.triggers, 99, "the first trigger started a run; the rest folded into one");
    assert!(last.succeeded(), "{last:?}");

    let runs = runs_in_log(&log);
    assert_eq!(runs.len(), 2);
    assert!(runs[0].1 <= runs[1].0, "runs overlapped: {runs:?}");
    // The log's times are taken by `date` inside each run, some
    // milliseconds after the listener started it: allow for that jitter.
    assert!(runs[1].0 - runs[0].0 >= 900_000_000, "starts closer than the minimum interval: {runs:?}");
    assert!(last.started_at_ms >= first_start + 1000, "{last:?} started within 1 s of {first_start}");
}

#[tokio::test]
async fn the_throttle_holds_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "true", 1000);
    let first = Listener::start(config.clone()).unwrap();
    first.trigger("first");
    let first_start = within(first.wait_for_runs(1)).await.last_run.unwrap().started_at_ms;
    drop(first);

    let second = Listener::start(config).unwrap();
    assert_eq!(second.status().runs_total, 1, "history comes from {STATE_FILE}");
    second.trigger("agent restarted");
    let throttled = within(second.wait_for(|s| s.state == RunState::Throttled)).await;
    assert_eq!(throttled.next_allowed_at_ms, first_start + 1000);
    let run = within(second.wait_for_runs(2)).await.last_run.unwrap();
    assert!(run.started_at_ms >= first_start + 1000, "{run:?} started within 1 s of {first_start}");
    assert_eq!(run.reasons, ["agent restarted"]);
    assert_eq!(run.last_trigger, 2, "trigger numbers go on across the restart");
}

#[tokio::test]
async fn a_hanging_command_and_its_child_are_killed_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child.pid");
    // The shell and its child ignore SIGTERM, so only SIGKILL ends them.
    let command = format!("trap '' TERM; sleep 30 & echo $! > {}; echo started; wait", pid_file.display());
    let mut config = config(dir.path(), &command, 0);
    config.timeout = Duration::from_millis(300);
    let listener = Listener::start(config).unwrap();
    listener.trigger("hang");
    let run = within(listener.wait_for_runs(1)).await.last_run.unwrap();
    assert!(run.timed_out, "{run:?}");
    assert_eq!((run.exit_code, run.signal), (None, Some(9)), "{run:?}");
    assert_eq!(run.output_tail, "started\n");
    assert!((600..5000).contains(&run.duration_ms), "timeout 300 ms + grace 300 ms: {run:?}");
    assert!(!run.succeeded());

    let child: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    within(async {
        while alive(child) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_failing_command_records_its_exit_code_reason_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let command = r#"echo "reason=$GANTRY_PROVISION_REASON triggers=$GANTRY_PROVISION_TRIGGERS"; echo oops >&2; echo out; exit 3"#;
    let listener = Listener::start(config(dir.path(), command, 0)).unwrap();
    listener.trigger("kv/datastores/DB changed");
    let run = within(listener.wait_for_runs(1)).await.last_run.unwrap();
    assert_eq!((run.exit_code, run.signal, run.timed_out, run.error.as_deref()), (Some(3), None, false, None));
    assert_eq!(run.output_tail, "reason=kv/datastores/DB changed triggers=1\noops\nout\n");
    assert!(!run.succeeded());

    // The record is saved with the history.
    let saved: SavedState =
        serde_json::from_slice(&std::fs::read(dir.path().join("data").join(STATE_FILE)).unwrap()).unwrap();
    assert_eq!((saved.runs_total, saved.last_run.as_ref()), (1, Some(&run)));
}

#[tokio::test]
async fn long_output_keeps_its_last_4_kib() {
    let dir = tempfile::tempdir().unwrap();
    let command = "head -c 100000 /dev/zero | tr '\\0' x; echo; echo last line";
    let listener = Listener::start(config(dir.path(), command, 0)).unwrap();
    listener.trigger("t");
    let run = within(listener.wait_for_runs(1)).await.last_run.unwrap();
    assert!(run.succeeded(), "{run:?}");
    assert_eq!(run.output_tail.len(), gantry_agent::listener::OUTPUT_TAIL_BYTES);
    assert!(run.output_tail.ends_with("xxx\nlast line\n"), "{:?}", &run.output_tail[4000..]);
}

#[tokio::test]
async fn off_remembers_triggers_and_on_queues_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::start(config(dir.path(), "true", 0)).unwrap();
    listener.set_enabled(false);
    listener.trigger("a");
    listener.trigger("b");
    let off = within(listener.wait_for(|s| s.queued_triggers == 2)).await;
    assert_eq!((off.enabled, off.state, off.runs_total), (false, RunState::Queued, 0));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(listener.status().runs_total, 0, "nothing runs while off");

    listener.set_enabled(true);
    let on = within(listener.wait_for_runs(1)).await;
    assert!(on.enabled);
    assert_eq!(on.last_run.unwrap().reasons, ["a", "b", "listener turned on"]);
}

#[tokio::test]
async fn an_unreadable_state_file_is_reported_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join(STATE_FILE), "{not json").unwrap();
    let listener = Listener::start(config(dir.path(), "true", 0)).unwrap();
    let problem = listener.status().problem.unwrap();
    assert!(problem.contains(STATE_FILE) && problem.contains("no run history"), "{problem}");

    listener.trigger("t");
    let status = within(listener.wait_for_runs(1)).await;
    assert_eq!(status.problem, None, "a good write clears the problem");
    let saved: SavedState = serde_json::from_slice(&std::fs::read(data.join(STATE_FILE)).unwrap()).unwrap();
    assert_eq!(saved.runs_total, 1);
}

#[tokio::test]
async fn trigger_and_wait_returns_the_run_that_answers_the_trigger() {
    let dir = tempfile::tempdir().unwrap();
    let command = r#"sleep 0.3; echo "$GANTRY_PROVISION_REASON""#;
    let listener = Listener::start(config(dir.path(), command, 0)).unwrap();
    let mut runs = listener.subscribe_runs();
    listener.trigger("already running");
    within(listener.wait_for(|s| s.state == RunState::Running)).await;
    // The run in progress started before this trigger: it does not answer it.
    let answer = within(listener.trigger_and_wait("deploy d-1")).await.unwrap();
    assert_eq!((answer.reasons.as_slice(), answer.last_trigger), (&["deploy d-1".to_string()][..], 2));
    assert_eq!(answer.output_tail, "deploy d-1\n");
    assert_eq!(listener.status().runs_total, 2, "announced once counted");

    let seen: Vec<u64> =
        [runs.recv().await.unwrap(), runs.recv().await.unwrap()].iter().map(|r| r.last_trigger).collect();
    assert_eq!(seen, [1, 2]);
}
