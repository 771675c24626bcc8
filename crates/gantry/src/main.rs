//! The `gantry` binary: parses the command line (`cli`), builds what the
//! command runs with once (`context`: output mode, client, runtime), and
//! runs it (`commands`, one module per namespace, thin over the library
//! crates).
//!
//! Exit codes: 0 success, 1 failure, 2 bad input (a spec problem, an unknown
//! group, a usage error).
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod context;
mod output;
mod repo;

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
    // For the reqwest clients built without a TLS configuration of ours
    // (`gantry up`'s probes of public URLs): reqwest needs a provider.
    gantry_tls::config::install_crypto_provider();
    let ran = context::Context::new(&args.command).and_then(|ctx| commands::run(&ctx, args.command));
    match ran {
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
