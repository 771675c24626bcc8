//! What a command runs with, built once after the command line is parsed
//! (ripgrep's LowArgs -> HiArgs): how it prints, the client of the server
//! it talks to, and the async runtime — only for the commands that need
//! one, so that `nodes:list` starts no threads.

use std::future::Future;

use anyhow::Context as _;
use gantry_client::{Client, ClientError};
use gantry_tls::TlsError;
use gantry_tls::config::{ClientTls, Identity, TrustedCa};
use gantry_tls::problem::TlsProblem;

use crate::BadInput;
use crate::cli::{ClientTlsArgs, Command, ServerArgs};
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

/// Where a client command finds its server, token and certificates.
///
/// The server: `--server`/`GANTRY_SERVER`; else, inside a repository that
/// `gantry up` runs, that stack's server; else the local default. The
/// token: `--token`/`GANTRY_TOKEN`; else `--token-file`/`GANTRY_TOKEN_FILE`;
/// else, only when the server is that stack's, the stack's management
/// token (`.gantry/server/bootstrap-token`). TLS: `--ca-cert` and the
/// client certificate flags (`GANTRY_CACERT`...); else, only when the
/// server is that stack's, its CA and operator certificate
/// (`.gantry/tls/`). The stack's credentials are never sent to a server
/// named on the command line.
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
    let tls = match stack.as_ref().and_then(|stack| stack.tls.as_ref()) {
        Some(stack_tls) if server.tls.ca_cert.is_none() => Some(stack_tls.operator()?),
        _ => client_tls(&server.tls, &url)?,
    };
    let client = match tls {
        Some(tls) => Client::with_tls(&url, &tls).map_err(|e| tls_input("--client-cert", e))?,
        None => Client::new(&url),
    };
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

/// The TLS settings of a client of the server at `url` (`--ca-cert`,
/// `--client-cert`, `--client-key`), read from their files; `None` for a
/// plain HTTP server. Each file that cannot be used, and TLS settings that
/// do not fit the URL, are bad input.
pub fn client_tls(args: &ClientTlsArgs, url: &str) -> anyhow::Result<Option<ClientTls>> {
    let https = url.starts_with("https://");
    let Some(ca) = &args.ca_cert else {
        if https {
            return Err(BadInput(format!(
                "error: --server {url} is HTTPS, and no CA was given to check its certificate with\n = help: give --ca-cert FILE (or GANTRY_CACERT): the ca.pem of the CA that signed the server's certificate"
            ))
            .into());
        }
        return Ok(None);
    };
    if !https {
        return Err(BadInput(format!(
            "error: --ca-cert (or GANTRY_CACERT) is for an HTTPS server, and --server {url} is plain HTTP\n = help: use --server https://..., or leave out the TLS options"
        ))
        .into());
    }
    let ca = TrustedCa::load(ca).map_err(|e| tls_input("--ca-cert", e))?;
    let identity = match (&args.client_cert, &args.client_key) {
        (Some(cert), Some(key)) => {
            Some(Identity::load(cert, key).map_err(|e| tls_input("--client-cert/--client-key", e))?)
        }
        _ => None,
    };
    Ok(Some(ClientTls { ca, identity }))
}

/// A TLS file that cannot be used, as bad input saying where good ones come from.
pub fn tls_input(flags: &str, e: TlsError) -> anyhow::Error {
    BadInput(format!(
        "error: {flags}: {e}\n = help: `gantry tls:ca:create` makes a CA (ca.pem), `gantry tls:cert:create` the certificates it signs (NAME.pem, NAME-key.pem)"
    ))
    .into()
}

/// Adds the "how to fix" to a client error; a request the server refused
/// as malformed (4xx but 404) is bad input.
pub fn explain(e: ClientError) -> anyhow::Error {
    match e {
        // Bytes that are not HTTP: most likely TLS, from a server with --tls-cert.
        ClientError::Connect { ref server, ref source }
            if server.starts_with("http://") && answered_not_http(source) =>
        {
            anyhow::anyhow!(
                "the gantry server at {server} did not answer in plain HTTP\n = help: if it serves HTTPS (gantry server --tls-cert), use --server https://... with --ca-cert"
            )
        }
        ClientError::Connect { .. } => anyhow::Error::new(e)
            .context("start one with `gantry server`, or point --server / GANTRY_SERVER at a running one"),
        ClientError::Tls { server, problem, .. } => {
            let (what, fix) = tls_failure(&problem);
            anyhow::anyhow!("TLS with the gantry server at {server} failed: {what}\n = help: {fix}")
        }
        ClientError::Api { status, .. } if (400..500).contains(&status) && status != 404 => {
            BadInput(format!("error: {e}")).into()
        }
        other => other.into(),
    }
}

/// Whether the server answered, but not in HTTP.
fn answered_not_http(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_parse) {
            return true;
        }
        next = e.source();
    }
    false
}

/// A failed handshake with a server, said with the flags that fix it.
fn tls_failure(problem: &TlsProblem) -> (String, String) {
    let new_certificate = "give the server a new certificate: `gantry tls:cert:create --server NAME`";
    match problem {
        TlsProblem::UnknownIssuer => (
            "the server's certificate is not signed by --ca-cert".into(),
            "give --ca-cert (GANTRY_CACERT) the ca.pem of the CA that signed the server's certificate".into(),
        ),
        TlsProblem::NameMismatch { expected, presented } => (
            format!("the server's certificate does not name {expected} (it names {})", presented.join(", ")),
            format!(
                "connect by a name or address it has, or give the server a certificate that names {expected}: `gantry tls:cert:create --server NAME --ip ADDR --dns NAME`"
            ),
        ),
        TlsProblem::Expired => ("the server's certificate has expired".into(), new_certificate.into()),
        TlsProblem::NotValidYet => (
            "the server's certificate is not valid yet".into(),
            "check this machine's clock and the CA's".into(),
        ),
        TlsProblem::WrongPurpose => ("the server's certificate is not a server's".into(), new_certificate.into()),
        TlsProblem::CertificateRequired => (
            "the server requires a client certificate".into(),
            "give --client-cert and --client-key (GANTRY_CLIENT_CERT, GANTRY_CLIENT_KEY) signed by the server's CA: `gantry tls:cert:create --client NAME`".into(),
        ),
        TlsProblem::CertificateRefused { alert } => (
            format!("the server refused --client-cert ({alert})"),
            "present a certificate signed by the server's CA (its --tls-ca) that has not expired: `gantry tls:cert:create --client NAME`".into(),
        ),
        TlsProblem::NotTls => (
            "the server did not answer in TLS".into(),
            "it serves plain HTTP: use --server http://... without the TLS options".into(),
        ),
        TlsProblem::Other(message) => (message.clone(), "check the server's --tls-* options and this client's".into()),
    }
}
