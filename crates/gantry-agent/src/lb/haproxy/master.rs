//! The haproxy master's CLI (the `-S` socket): one command a connection,
//! and `show proc` read into [`Processes`], which says whether a reload
//! happened, failed, and which worker serves now.

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// A command that takes longer than this is taken as unanswered.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// What `show proc` says about the master and its workers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Processes {
    /// Reloads since the master started, failed ones included.
    pub reloads: u64,
    /// Failed reloads since the last one that worked.
    pub failed: u64,
    /// The workers serving the current configuration.
    pub workers: Vec<u32>,
}

/// Sends `command` and returns the whole answer. The master answers one
/// command and closes the connection once our side is shut for writing.
pub(super) async fn command(socket: &Path, command: &str) -> io::Result<String> {
    let exchange = async {
        let mut stream = UnixStream::connect(socket).await?;
        stream.write_all(format!("{command}\n").as_bytes()).await?;
        stream.shutdown().await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok(answer)
    };
    tokio::time::timeout(COMMAND_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, format!("`{command}` got no answer"))))
}

/// `show proc`, read.
pub(super) async fn processes(socket: &Path) -> io::Result<Processes> {
    let answer = command(socket, "show proc").await?;
    parse_processes(&answer)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("unexpected `show proc` answer: {answer:?}")))
}

/// Whether worker `pid` answers on its CLI (through the master): then it
/// has finished starting and serves.
pub(super) async fn worker_answers(socket: &Path, pid: u32) -> bool {
    let answer = command(socket, &format!("@!{pid} show info")).await.unwrap_or_default();
    answer.lines().any(|line| line.strip_prefix("Pid: ").is_some_and(|p| p.trim() == pid.to_string()))
}

/// Reads `show proc`:
///
/// ```text
/// #<PID>          <type>          <reloads>       <uptime>        <version>
/// 1162            master          5 [failed: 0]   0d00h02m07s     2.6.12
/// # workers
/// 1271            worker          1               0d00h00m00s     2.6.12
/// # old workers
/// 1233            worker          3               0d00h00m43s     2.6.12
/// # programs
/// ```
fn parse_processes(answer: &str) -> Option<Processes> {
    let mut processes = None;
    let mut section = "";
    for line in answer.lines() {
        if let Some(header) = line.strip_prefix("# ") {
            section = header.trim();
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_pid, "master", reloads, "[failed:", failed, ..] => {
                processes = Some(Processes {
                    reloads: reloads.parse().ok()?,
                    failed: failed.trim_end_matches(']').parse().ok()?,
                    workers: Vec::new(),
                });
            }
            [pid, "worker", ..] if section == "workers" => {
                processes.as_mut()?.workers.push(pid.parse().ok()?);
            }
            _ => {}
        }
    }
    processes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_proc_is_read() {
        let answer = "#<PID>          <type>          <reloads>       <uptime>        <version>      \n\
            21393           master          2 [failed: 1]   0d00h10m24s     2.6.12-1+deb12u4\n\
            # workers\n\
            4524            worker          1               0d00h00m10s     2.6.12-1+deb12u4\n\
            # old workers\n\
            4400            worker          3               0d00h00m43s     2.6.12-1+deb12u4\n\
            # programs\n\n";
        assert_eq!(parse_processes(answer), Some(Processes { reloads: 2, failed: 1, workers: vec![4524] }));
        assert_eq!(parse_processes("Unknown command.\n"), None);
    }
}
