//! Commands in a process group of their own, so that everything they start
//! can be signalled at once: the listener's provision runs and the
//! supervisor's services both spawn and stop their children this way.

use std::io;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep_until};

/// Spawns `command` as the leader of a new process group, stdin from
/// /dev/null, stdout and stderr into one pipe (so a reader sees them
/// interleaved as written); returns the child and the pipe's read end.
pub(crate) fn spawn_in_group(mut command: Command) -> io::Result<(Child, pipe::Receiver)> {
    let (reader, writer) = io::pipe()?;
    let writer_too = writer.try_clone()?;
    command.stdin(Stdio::null()).stdout(writer).stderr(writer_too).process_group(0);
    let child = command.spawn()?;
    // The command holds our copies of the write end: drop them, or the
    // output never reaches end of file.
    drop(command);
    let output = pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?;
    Ok((child, output))
}

/// Sends `signal` to the process group led by `leader` (a pid from
/// [`spawn_in_group`], which leads its own group). Never to pid 0 or 1:
/// `kill(-1)` would signal every process we may signal.
///
/// Safe after the leader was reaped: Linux does not reuse a pid while a
/// group still carries its number, so the group is either ours or empty.
pub(crate) fn signal_group(leader: Option<u32>, signal: Signal) {
    let pid = leader.and_then(|p| i32::try_from(p).ok()).filter(|&p| p > 1).and_then(Pid::from_raw);
    if let Some(pid) = pid {
        // ESRCH: the whole group is gone already.
        let _ = kill_process_group(pid, signal);
    }
}

/// Reads what is left in `output` after its writer exited, handing each
/// chunk to `sink`, until end of file or `within` has passed: a background
/// process that left the group may hold the pipe open for good.
pub(crate) async fn drain(output: &mut pipe::Receiver, within: Duration, mut sink: impl FnMut(&[u8])) {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 8192];
    loop {
        tokio::select! {
            read = output.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => sink(&buf[..n]),
            },
            () = sleep_until(deadline) => return,
        }
    }
}
