//! Signals to a whole process group: a child started in a group of its own
//! (`process_group(0)`) is stopped with everything it started.

/// Sends `signal` to the process group `group` (the command's pid, as it
/// leads its own group). Never to pid 0 or 1: `kill(-1)` would signal every
/// process we may signal.
pub(crate) fn signal_group(group: Option<i32>, signal: rustix::process::Signal) {
    if let Some(pid) = group.filter(|&p| p > 1).and_then(rustix::process::Pid::from_raw) {
        // ESRCH: the whole group is gone already.
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}
