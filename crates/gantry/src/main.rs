//! The `gantry` binary: parses the command line and dispatches to the library crates.
//!
//! Exit codes: 0 success, 1 failure, 2 bad input (a spec problem, an unknown
//! group, a usage error).
#![forbid(unsafe_code)]

mod agents;
mod apply;
mod aws;
mod cli;
mod generate;
mod remote;
mod repo;
mod running;
mod show;
mod up;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// An error in what the user gave us (exit code 2), already rendered for a terminal.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.trim_end())
    }
}

impl std::error::Error for BadInput {}

fn main() -> ExitCode {
    let args = cli::Args::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut stderr = std::io::stderr().lock();
            if let Some(bad) = e.downcast_ref::<BadInput>() {
                let _ = writeln!(stderr, "{bad}");
                return ExitCode::from(2);
            }
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(stderr, "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `gantry nodes:list | head` must not end in an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    let broken = Some(std::io::ErrorKind::BrokenPipe);
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| Some(io.kind()) == broken)
            // `--json | head`: serde_json wraps the write error.
            || c.downcast_ref::<serde_json::Error>().is_some_and(|j| j.io_error_kind() == broken)
    })
}
