//! The listener's rules under a fake clock: one run at a time, one queued,
//! folding, the throttle (also across a restart and a clock set back), and
//! the on/off switch.

use super::*;

const SECOND: u64 = 1000;

fn throttle(min_interval_ms: u64, max_runs: u32, window_ms: u64) -> Throttle {
    Throttle {
        min_interval: Duration::from_millis(min_interval_ms),
        max_runs,
        window: Duration::from_millis(window_ms),
    }
}

fn fresh(throttle: Throttle) -> ListenerState {
    ListenerState::new(throttle, SavedState::default())
}

fn started(action: Action) -> RunRequest {
    match action {
        Action::Start(request) => request,
        other => panic!("expected a run to start, got {other:?}"),
    }
}

/// The record of `request` finishing successfully at `end_ms`.
fn finished(request: &RunRequest, end_ms: u64) -> RunRecord {
    RunRecord {
        reasons: request.reasons.clone(),
        triggers: request.triggers,
        last_trigger: request.last_trigger,
        started_at_ms: request.started_at_ms,
        duration_ms: end_ms - request.started_at_ms,
        exit_code: Some(0),
        signal: None,
        timed_out: false,
        error: None,
        output_tail: String::new(),
    }
}

#[test]
fn a_trigger_starts_a_run_at_once_and_later_ones_fold_into_one_queued_run() {
    let mut l = fresh(throttle(SECOND, 10, 60 * SECOND));
    let first = started(l.trigger("kv/datastores/DB changed", 0));
    assert_eq!(
        (first.reasons.as_slice(), first.triggers, first.started_at_ms),
        (&["kv/datastores/DB changed".to_string()][..], 1, 0)
    );
    assert_eq!(l.status(0).state, RunState::Running);

    for (i, t) in (10..=50).step_by(10).enumerate() {
        assert_eq!(l.trigger(&format!("change {i}"), t), Action::Idle, "never two runs at once");
    }
    let status = l.status(60);
    assert_eq!((status.state, status.queued_triggers, status.running_since_ms), (RunState::Running, 5, Some(0)));

    // The run ends before the minimum interval: the queued run waits for it.
    assert_eq!(l.run_finished(finished(&first, 300), 300), Action::WakeAt(SECOND));
    assert_eq!(l.status(300).state, RunState::Throttled);
    assert_eq!(l.tick(999), Action::WakeAt(SECOND), "an early wake-up is harmless");
    let second = started(l.tick(SECOND));
    assert_eq!(second.triggers, 5);
    assert_eq!(second.reasons, ["change 0", "change 1", "change 2", "change 3", "change 4"]);
    assert_eq!(l.run_finished(finished(&second, 1500), 1500), Action::Idle);
    let status = l.status(1500);
    assert_eq!((status.state, status.runs_total, status.queued_triggers), (RunState::Idle, 2, 0));
    assert_eq!(status.last_run.unwrap().started_at_ms, SECOND);
}

#[test]
fn a_queued_run_starts_as_soon_as_the_running_one_ends_when_the_interval_has_passed() {
    let mut l = fresh(throttle(SECOND, 10, 60 * SECOND));
    let first = started(l.trigger("a", 0));
    assert_eq!(l.trigger("b", 100), Action::Idle);
    let second = started(l.run_finished(finished(&first, 5 * SECOND), 5 * SECOND));
    assert_eq!((second.reasons, second.started_at_ms), (vec!["b".to_string()], 5 * SECOND));
}

#[test]
fn a_hundred_triggers_within_a_second_make_two_runs() {
    /// The runner's part: perform an action.
    fn perform(action: Action, runs: &mut Vec<RunRequest>, running: &mut Option<RunRequest>, wake: &mut Option<u64>) {
        *wake = None;
        match action {
            Action::Start(r) => {
                runs.push(r.clone());
                *running = Some(r);
            }
            Action::WakeAt(t) => *wake = Some(t),
            Action::Idle => {}
        }
    }
    let mut l = fresh(Throttle::default());
    let (mut runs, mut running, mut wake) = (Vec::new(), None, None);
    // A 10 ms clock for three seconds; a trigger every tick of the first
    // second; each run takes 300 ms.
    for now in (0..3 * SECOND).step_by(10) {
        if let Some(r) = running.take_if(|r: &mut RunRequest| r.started_at_ms + 300 <= now) {
            perform(l.run_finished(finished(&r, now), now), &mut runs, &mut running, &mut wake);
        }
        if wake.is_some_and(|w| w <= now) {
            perform(l.tick(now), &mut runs, &mut running, &mut wake);
        }
        if now < SECOND {
            perform(l.trigger(&format!("t{now}"), now), &mut runs, &mut running, &mut wake);
        }
    }
    let starts: Vec<(u64, u64)> = runs.iter().map(|r| (r.started_at_ms, r.triggers)).collect();
    assert_eq!(starts, [(0, 1), (SECOND, 99)]);
    assert_eq!(l.status(3 * SECOND).state, RunState::Idle);
}

#[test]
fn at_most_max_runs_start_within_the_window() {
    let mut l = fresh(throttle(SECOND, 3, 60 * SECOND));
    for t in [0, SECOND, 2 * SECOND] {
        let r = started(l.trigger("failing service", t));
        assert_eq!(l.run_finished(finished(&r, t + 10), t + 10), Action::Idle);
    }
    // The fourth waits until the first start leaves the window.
    assert_eq!(l.trigger("failing service", 3 * SECOND), Action::WakeAt(60 * SECOND));
    let status = l.status(3 * SECOND);
    assert_eq!((status.state, status.next_allowed_at_ms), (RunState::Throttled, 60 * SECOND));
    assert_eq!(l.tick(59 * SECOND), Action::WakeAt(60 * SECOND));
    let fourth = started(l.tick(60 * SECOND));
    assert_eq!(fourth.started_at_ms, 60 * SECOND);
    // Only the latest max_runs starts are kept.
    assert_eq!(l.saved().recent_starts_ms, [SECOND, 2 * SECOND, 60 * SECOND]);
}

#[test]
fn zero_max_runs_counts_as_one() {
    let mut l = fresh(throttle(0, 0, 10 * SECOND));
    let r = started(l.trigger("a", 0));
    assert_eq!(l.run_finished(finished(&r, 1), 1), Action::Idle);
    assert_eq!(l.trigger("b", 2), Action::WakeAt(10 * SECOND));
}

#[test]
fn the_throttle_holds_across_a_restart() {
    let t = throttle(10 * SECOND, 10, 60 * SECOND);
    let mut before = fresh(t);
    let r = started(before.trigger("a", 100 * SECOND));
    before.run_finished(finished(&r, 101 * SECOND), 101 * SECOND);
    // What the runner writes to listener.json and reads back.
    let json = serde_json::to_string(before.saved()).unwrap();
    let saved: SavedState = serde_json::from_str(&json).unwrap();
    let mut after = ListenerState::new(t, saved);
    assert_eq!(after.status(102 * SECOND).runs_total, 1);
    assert_eq!(after.trigger("agent restarted", 102 * SECOND), Action::WakeAt(110 * SECOND));
}

#[test]
fn a_clock_set_back_does_not_block_runs() {
    let saved = SavedState { recent_starts_ms: vec![1_000_000 * SECOND], ..SavedState::default() };
    let mut l = ListenerState::new(throttle(SECOND, 10, 60 * SECOND), saved);
    // The recorded start is in the future: it counts as now.
    assert_eq!(l.trigger("a", 5 * SECOND), Action::WakeAt(6 * SECOND));
    let r = started(l.tick(6 * SECOND));
    assert_eq!(r.started_at_ms, 6 * SECOND);
}

#[test]
fn off_remembers_triggers_and_on_queues_a_run_at_once() {
    let mut l = fresh(throttle(SECOND, 10, 60 * SECOND));
    assert_eq!(l.set_enabled(false, 0), Action::Idle);
    assert_eq!(l.trigger("a", 10), Action::Idle);
    assert_eq!(l.trigger("b", 20), Action::Idle);
    let status = l.status(30);
    assert_eq!((status.enabled, status.state, status.queued_triggers), (false, RunState::Queued, 2));
    assert!(!l.saved().enabled, "the switch is saved");

    let r = started(l.set_enabled(true, 40));
    assert_eq!((r.reasons.as_slice(), r.triggers), (["a", "b", "listener turned on"].map(String::from).as_slice(), 3));

    // On while on queues nothing.
    assert_eq!(l.run_finished(finished(&r, 50), 50), Action::Idle);
    assert_eq!(l.set_enabled(true, 60), Action::Idle);
    assert_eq!(l.status(60).state, RunState::Idle);

    // On from off with nothing remembered still runs.
    l.set_enabled(false, 2 * SECOND);
    let r = started(l.set_enabled(true, 2 * SECOND));
    assert_eq!(r.reasons, ["listener turned on"]);
}

#[test]
fn off_lets_the_running_run_finish_and_starts_nothing_after_it() {
    let mut l = fresh(throttle(0, 10, 60 * SECOND));
    let r = started(l.trigger("a", 0));
    assert_eq!(l.set_enabled(false, 1), Action::Idle);
    assert_eq!(l.trigger("b", 2), Action::Idle);
    assert_eq!(l.run_finished(finished(&r, 3), 3), Action::Idle);
    let status = l.status(4);
    assert_eq!((status.state, status.runs_total, status.queued_triggers), (RunState::Queued, 1, 1));
}

#[test]
fn reasons_are_capped_and_cut_but_every_trigger_is_counted() {
    let mut l = fresh(throttle(0, 10, 60 * SECOND));
    l.set_enabled(false, 0);
    for i in 0..100 {
        l.trigger(&format!("change {i}"), i);
    }
    l.trigger(&"é".repeat(150), 100);
    let r = started(l.set_enabled(true, 200));
    assert_eq!(r.triggers, 102);
    assert_eq!(r.reasons.len(), MAX_REASONS);
    assert_eq!(r.reasons[0], "change 86");
    // 150 two-byte characters cut to 200 bytes: 100 characters.
    assert_eq!(r.reasons[MAX_REASONS - 2], "é".repeat(100));
    assert_eq!(r.reasons[MAX_REASONS - 1], "listener turned on");
}

#[test]
fn saved_state_reads_old_or_partial_files() {
    let saved: SavedState = serde_json::from_str("{}").unwrap();
    assert_eq!(saved, SavedState::default());
    assert!(saved.enabled, "a listener with no file is on");
    let saved: SavedState = serde_json::from_str(r#"{"enabled": false, "recent_starts_ms": [5]}"#).unwrap();
    assert_eq!((saved.enabled, saved.recent_starts_ms, saved.runs_total), (false, vec![5], 0));
}

#[test]
fn runs_say_which_triggers_they_answer() {
    let mut l = fresh(throttle(0, 10, 60 * SECOND));
    let first = started(l.trigger("a", 0));
    assert_eq!((first.last_trigger, l.saved().triggers_total), (1, 1));
    l.trigger("b", 1);
    l.trigger("c", 2);
    let second = started(l.run_finished(finished(&first, 3), 3));
    assert_eq!((second.triggers, second.last_trigger), (2, 3));
}

#[test]
fn outcomes_in_a_few_words() {
    let request = RunRequest { reasons: vec![], triggers: 1, last_trigger: 1, started_at_ms: 0 };
    let ok = finished(&request, 5);
    assert_eq!((ok.succeeded(), ok.outcome().as_str()), (true, "exit code 0"));
    let failed = RunRecord { exit_code: Some(3), ..ok.clone() };
    assert_eq!((failed.succeeded(), failed.outcome().as_str()), (false, "exit code 3"));
    let killed = RunRecord { exit_code: None, signal: Some(9), ..ok.clone() };
    assert_eq!(killed.outcome(), "killed by signal 9");
    let timed_out = RunRecord { timed_out: true, duration_ms: 1500, ..killed };
    assert_eq!(
        (timed_out.succeeded(), timed_out.outcome().as_str()),
        (false, "timed out after 1500 ms (killed by signal 9)")
    );
    let broken = RunRecord { exit_code: None, error: Some("starting `sh -c x`: no such file".to_string()), ..ok };
    assert_eq!(broken.outcome(), "starting `sh -c x`: no such file");
}
