//! Integration tests of the agent's building blocks against real files,
//! real shells, real processes and real sockets.

mod envfile;
mod facts;
mod health;
mod lb_builtin;
mod lb_haproxy;
mod listener;
mod resolve;
mod supervise;

/// Whether `pid` is a live process (a zombie waiting for its reaper is dead).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}
