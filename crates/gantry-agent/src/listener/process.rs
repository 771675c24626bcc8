//! One provision run: `sh -c COMMAND` in its own process group, its stdout
//! and stderr read through one pipe (so the tail interleaves them as
//! written), killed as a whole group when it outlives its timeout.

use std::collections::VecDeque;
use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep_until};

use super::state::{RunRecord, RunRequest};
use crate::process_group::{drain, signal_group, spawn_in_group};

/// How much of a run's output its record keeps.
pub const OUTPUT_TAIL_BYTES: usize = 4096;

/// After the command exits, how long output is still read: a background
/// process it started may hold the pipe open for good.
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);

/// How to run the provision command.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub command: String,
    pub timeout: Duration,
    pub kill_grace: Duration,
}

/// Runs `request` to the end and says how it went; never fails (a command
/// that cannot start is a record with `error`).
pub(crate) async fn run(launch: &Launch, request: &RunRequest) -> RunRecord {
    let began = Instant::now();
    let mut record = RunRecord {
        reasons: request.reasons.clone(),
        triggers: request.triggers,
        last_trigger: request.last_trigger,
        started_at_ms: request.started_at_ms,
        duration_ms: 0,
        exit_code: None,
        signal: None,
        timed_out: false,
        error: None,
        output_tail: String::new(),
    };
    match spawn(launch, request) {
        Ok((child, output)) => {
            let finished = supervise(launch, child, output).await;
            record.timed_out = finished.timed_out;
            record.output_tail = finished.tail.into_text();
            match finished.status {
                Ok(status) => {
                    use std::os::unix::process::ExitStatusExt;
                    record.exit_code = status.code();
                    record.signal = status.signal();
                }
                Err(e) => record.error = Some(format!("waiting for the provision command: {e}")),
            }
        }
        Err(e) => record.error = Some(format!("starting `sh -c {}`: {e}", launch.command)),
    }
    // Monotonic, so a clock change during the run does not skew it.
    record.duration_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
    record
}

fn spawn(launch: &Launch, request: &RunRequest) -> io::Result<(Child, pipe::Receiver)> {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(&launch.command)
        .env("GANTRY_PROVISION_REASON", request.reasons.join("; "))
        .env("GANTRY_PROVISION_TRIGGERS", request.triggers.to_string());
    // Its own group, so a timeout kills everything it started.
    spawn_in_group(command)
}

struct Finished {
    status: io::Result<ExitStatus>,
    timed_out: bool,
    tail: Tail,
}

/// Waits for the command while reading its output; at the timeout sends
/// SIGTERM to its group, and SIGKILL `kill_grace` later.
async fn supervise(launch: &Launch, mut child: Child, mut output: pipe::Receiver) -> Finished {
    let group = child.id();
    let mut tail = Tail::new(OUTPUT_TAIL_BYTES);
    let mut buf = vec![0u8; 8192];
    let mut open = true;
    let mut timed_out = false;
    let mut deadline = Instant::now() + launch.timeout;
    let status = loop {
        tokio::select! {
            read = output.read(&mut buf), if open => match read {
                Ok(0) | Err(_) => open = false,
                Ok(n) => tail.push(&buf[..n]),
            },
            status = child.wait() => break status,
            () = sleep_until(deadline) => {
                if timed_out {
                    signal_group(group, rustix::process::Signal::KILL);
                    // Wait for the exit now; nothing survives SIGKILL.
                    deadline = Instant::now() + Duration::from_secs(3600);
                } else {
                    timed_out = true;
                    signal_group(group, rustix::process::Signal::TERM);
                    deadline = Instant::now() + launch.kill_grace;
                }
            }
        }
    };
    if timed_out {
        // The shell may have died of SIGTERM while a child that ignores it lives on.
        signal_group(group, rustix::process::Signal::KILL);
    }
    if open {
        drain(&mut output, OUTPUT_DRAIN, |bytes| tail.push(bytes)).await;
    }
    Finished { status, timed_out, tail }
}

/// The last `cap` bytes of a stream.
struct Tail {
    cap: usize,
    bytes: VecDeque<u8>,
    cut: bool,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Tail { cap, bytes: VecDeque::with_capacity(cap), cut: false }
    }

    fn push(&mut self, data: &[u8]) {
        let data = if data.len() > self.cap {
            self.cut = true;
            &data[data.len() - self.cap..]
        } else {
            data
        };
        let overflow = (self.bytes.len() + data.len()).saturating_sub(self.cap);
        if overflow > 0 {
            self.cut = true;
            self.bytes.drain(..overflow);
        }
        self.bytes.extend(data);
    }

    /// The text, lossily decoded; when the start was cut mid-character,
    /// the broken character's remaining bytes are dropped.
    fn into_text(self) -> String {
        let bytes: Vec<u8> = self.bytes.into();
        let start = if self.cut { bytes.iter().take(3).take_while(|&&b| b & 0xc0 == 0x80).count() } else { 0 };
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_bytes_at_a_character_boundary() {
        let mut tail = Tail::new(8);
        tail.push(b"abc");
        tail.push(b"def");
        assert_eq!(tail.into_text(), "abcdef");

        let mut tail = Tail::new(8);
        tail.push(b"0123456789");
        tail.push(b"ab");
        assert_eq!(tail.into_text(), "456789ab");

        // "é" is two bytes; cutting through it drops its second half.
        let mut tail = Tail::new(5);
        tail.push("aé1234".as_bytes());
        assert_eq!(tail.into_text(), "1234");
        let mut tail = Tail::new(6);
        tail.push("aé1234".as_bytes());
        assert_eq!(tail.into_text(), "é1234");
    }
}
