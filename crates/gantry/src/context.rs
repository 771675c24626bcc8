//! What a command runs with, built once after the command line is parsed
//! (ripgrep's LowArgs -> HiArgs): how it prints, the client of the server
//! it talks to, and the async runtime — only for the commands that need
//! one, so that `nodes:list` starts no threads.

use std::future::Future;

use anyhow::Context as _;
use gantry_client::{Client, ClientError};

use crate::BadInput;
use crate::cli::Command;
use crate::output::Output;

/// A command's expensive state, built once.
pub struct Context {
    output: Output,
    client: Option<Client>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Context {
    pub fn new(command: &Command) -> anyhow::Result<Context> {
        let runtime = if command.needs_runtime() {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build();
            Some(runtime.context("starting the async runtime")?)
        } else {
            None
        };
        Ok(Context { output: command.output(), client: command.server().map(|s| Client::new(&s.url)), runtime })
    }

    pub fn output(&self) -> Output {
        self.output
    }

    /// The client of `--server`. Only the commands that take `--server`
    /// call it ([`Command::server`]).
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("a command that talks to the server takes --server")
    }

    /// The async runtime. Only the commands [`Command::needs_runtime`]
    /// names call it.
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the command needs the async runtime")
    }

    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime().block_on(future)
    }
}

/// Adds the "how to fix" to a client error; a request the server refused
/// as malformed (4xx but 404) is bad input.
pub fn explain(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Connect { .. } => anyhow::Error::new(e)
            .context("start one with `gantry server`, or point --server / GANTRY_SERVER at a running one"),
        ClientError::Api { status, .. } if (400..500).contains(&status) && status != 404 => {
            BadInput(format!("error: {e}")).into()
        }
        other => other.into(),
    }
}
