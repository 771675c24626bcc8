//! What a command runs with, built once after the command line is parsed
//! (ripgrep's LowArgs -> HiArgs): how it prints, the client of the server
//! it talks to, and the async runtime — only for the commands that need
//! one, so that `nodes:list` starts no threads.

use std::future::Future;

use anyhow::Context as _;
use gantry_client::{Client, ClientError};

use crate::BadInput;
use crate::cli::{Command, ServerArgs};
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
        let client = command.server().map(connect).transpose()?;
        Ok(Context { output: command.output(), client, runtime })
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

/// Where a client command finds its server and token.
///
/// The server: `--server`/`GANTRY_SERVER`; else, inside a repository that
/// `gantry up` runs, that stack's server; else the local default. The
/// token: `--token`/`GANTRY_TOKEN`; else `--token-file`/`GANTRY_TOKEN_FILE`;
/// else, only when the server is that stack's, the stack's management
/// token (`.gantry/server/bootstrap-token`) — never sent to a server named
/// on the command line.
pub fn connect(server: &ServerArgs) -> anyhow::Result<Client> {
    let stack = if server.url.is_none() { crate::commands::stack_around_cwd() } else { None };
    let url = match (&server.url, &stack) {
        (Some(url), _) => url.clone(),
        (None, Some(stack)) => stack.url.clone(),
        (None, None) => gantry_api::DEFAULT_SERVER.to_owned(),
    };
    let token = match (&server.token, &server.token_file, &stack) {
        (Some(token), _, _) => Some(token.clone()),
        (None, Some(file), _) => Some(read_token(file)?),
        (None, None, Some(stack)) => stack.token_file.as_deref().map(read_token).transpose()?,
        (None, None, None) => None,
    };
    let client = Client::new(&url);
    Ok(match token {
        Some(token) => client.with_token(&token),
        None => client,
    })
}

/// The first line of a token file.
pub fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::Error::from(BadInput(format!(
            "error: cannot read the token file {}: {e}\n = help: give --token-file FILE (or GANTRY_TOKEN_FILE) a file holding a token",
            path.display()
        )))
    })?;
    let token = text.lines().next().unwrap_or_default().trim().to_owned();
    if token.is_empty() {
        return Err(BadInput(format!("error: the token file {} is empty", path.display())).into());
    }
    Ok(token)
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
