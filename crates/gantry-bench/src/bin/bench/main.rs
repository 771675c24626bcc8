//! `bench`: Gantry's source of truth against etcd on this machine, side by
//! side in one run: durable writes (1 and 64 clients, 256 B values) and
//! watch fan-out (1,000 watchers of one prefix, one write).
//!
//! It starts its own etcd (Debian's etcd-server) and two Gantry servers on
//! loopback ports — one on the embedded store, one on that etcd — each in a
//! process of its own, as etcd is, and drives them through the HTTP API as
//! users do. Rows for the store API called in this process, without HTTP,
//! show what the API layer costs. The security part ([`security`]) prices
//! access control and mutual TLS: the same rows against servers with
//! ACLs off, on, and on with mutual TLS, and etcd without and with TLS.
//! Every loop is bounded in count and time.
//!
//! The embedded engine runs twice: on its own log, and on a redb file
//! (`--store redb`), for issue 20's side by side. The engine part
//! ([`engine`]) measures both at a million keys: filling, opening
//! (replay), resident memory, checkpoint.
//!
//! Run: `cargo run --release -p gantry-bench --bin bench [-- --seconds 3 --watchers 1000 --rounds 200 --only writes|fan-out|security|engine]`

mod engine;
mod security;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use gantry_bench::{ms, percentile};
use gantry_client::{Client, WatchItem};
use gantry_server::{Acl, AclMode, ServeOptions, ServerTls};
use gantry_store::local_etcd::LocalEtcd;
use gantry_store::{Bytes, EmbeddedConfig, EtcdConfig, Store, StoreConfig};
use gantry_tls::config::{ClientAuth, ClientTls, Identity, TrustedCa};
use hyper_util::rt::TokioIo;
use tokio_rustls::rustls;

/// The value every put writes (issue 4: 256 B).
/// Fan-out rounds run before the timed ones.
const WARM_UP_ROUNDS: usize = 5;
const VALUE_BYTES: usize = 256;
/// Most operations one measurement makes, whatever its duration.
const MAX_OPS: u64 = 500_000;
/// The multiplexed fan-out rows spread the watchers over this many
/// connections (etcd's `benchmark watch-latency` runs its watchers as
/// streams over few connections too).
const MUX_CONNECTIONS: usize = 10;
/// Longest wait for every watcher to see one write.
const FAN_OUT_TIMEOUT: Duration = Duration::from_secs(10);

/// One operation of client `usize`, the `u64`th it makes; shared by the
/// clients' loops (and by the passes of an interleaved measurement).
type Op = Arc<dyn Fn(usize, u64) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send + Sync>;

struct Options {
    seconds: f64,
    watchers: usize,
    rounds: usize,
    /// Keys the engine part fills each engine with.
    keys: u64,
    /// Run only one part: `writes`, `fan-out`, `security` or `engine`.
    only: Option<String>,
    /// Print every fan-out round's time, in order, to stderr (periodic
    /// stalls show there; a 50 ms one was Nagle against delayed ACKs).
    print_rounds: bool,
}

/// The hidden argument that makes this binary serve instead of measure.
const SERVE: &str = "__serve";

fn main() -> anyhow::Result<()> {
    // reqwest's rustls has no crypto provider of its own in this build.
    gantry_tls::config::install_crypto_provider();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Runtime::new()?;
    if args.first().map(String::as_str) == Some(SERVE) {
        return runtime.block_on(serve_child(&args[1..]));
    }
    if args.first().map(String::as_str) == Some(engine::CHILD) {
        return runtime.block_on(engine::child(&args[1..]));
    }
    runtime.block_on(run(parse_args(args)?))
}

/// The server certificate's and key's files in the directory `--tls` names
/// (beside gantry-tls's `ca.pem`).
const SERVER_CERT_FILE: &str = "server.pem";
const SERVER_KEY_FILE: &str = "server-key.pem";

/// The server process: `__serve embedded DIR | redb DIR | etcd URL`, then `--acl
/// TOKEN_DIR` (access control on, the bootstrap token's secret written to
/// TOKEN_DIR/bootstrap-token) and `--tls TLS_DIR` (HTTPS requiring client
/// certificates of TLS_DIR/ca.pem). Prints its URL once it serves.
async fn serve_child(args: &[String]) -> anyhow::Result<()> {
    let usage =
        || anyhow::anyhow!("usage: bench {SERVE} embedded DIR | redb DIR | etcd URL [--acl TOKEN_DIR] [--tls TLS_DIR]");
    let (config, flags) = match args {
        [kind, dir, flags @ ..] if kind == "embedded" => (StoreConfig::Embedded(EmbeddedConfig::in_dir(dir)), flags),
        [kind, dir, flags @ ..] if kind == "redb" => (StoreConfig::Redb(EmbeddedConfig::redb_in_dir(dir)), flags),
        [kind, endpoint, flags @ ..] if kind == "etcd" => {
            (StoreConfig::Etcd(EtcdConfig::new([endpoint.clone()])), flags)
        }
        _ => return Err(usage()),
    };
    let (mut token_dir, mut tls_dir) = (None, None);
    let mut flags = flags.iter();
    while let Some(flag) = flags.next() {
        match flag.as_str() {
            "--acl" => token_dir = Some(Path::new(flags.next().ok_or_else(usage)?)),
            "--tls" => tls_dir = Some(Path::new(flags.next().ok_or_else(usage)?)),
            _ => return Err(usage()),
        }
    }
    let store = Store::open(config).await?;
    // Without `--acl`, as `gantry server --acl off` serves: the store rows
    // compare the store and its HTTP layer with etcd's.
    let acl = match token_dir {
        Some(dir) => {
            let acl = Acl::open(&store, AclMode::On).await?;
            gantry_server::bootstrap(&acl, &store, dir).await?;
            acl
        }
        None => Acl::off(),
    };
    // As `gantry server --tls-cert --tls-key --tls-ca --verify-incoming`.
    let tls = match tls_dir {
        Some(dir) => {
            let identity = Identity::load(&dir.join(SERVER_CERT_FILE), &dir.join(SERVER_KEY_FILE))?;
            let ca = TrustedCa::load(&dir.join(gantry_tls::CA_FILE))?;
            Some(ServerTls::new(identity, &ClientAuth::Required { ca, roles: Vec::new() })?)
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("{scheme}://{}", listener.local_addr()?);
    // The limits count as always (the ACL rows pay for the per-token
    // accounting), out of the load's reach: 64 clients on one address,
    // 1,000 watchers, tens of thousands of writes a second.
    let limits = gantry_server::Limits::out_of_reach();
    let options = ServeOptions { threads: gantry_server::DEFAULT_EVENT_LOOPS, tls, acl, limits, artifacts: None };
    gantry_server::serve_with(listener, store, options, std::future::pending()).await?;
    Ok(())
}

/// A Gantry server in a child process; killed on drop.
struct ServerProcess {
    child: std::process::Child,
    url: String,
}

impl ServerProcess {
    /// `bench __serve ARGS...` (see [`serve_child`]), once it serves.
    fn start(args: &[&str]) -> anyhow::Result<ServerProcess> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .arg(SERVE)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut url = String::new();
        std::io::BufReader::new(child.stdout.take().context("server stdout")?).read_line(&mut url)?;
        let url = url.trim().to_string();
        if !url.starts_with("http") {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the server `{}` did not start", args.join(" "));
        }
        Ok(ServerProcess { child, url })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Gantry server as the load generator reaches it: its URL, the token
/// it sends (`Authorization: Bearer`), the TLS it speaks.
#[derive(Clone)]
struct Endpoint {
    url: String,
    token: Option<String>,
    tls: Option<EndpointTls>,
}

/// A client's mutual TLS with a Gantry server: the CA and client
/// certificate (for gantry-client), and the raw connections' rustls
/// configurations, one per ALPN protocol, built once (each holds the
/// session cache its connections resume from).
#[derive(Clone)]
struct EndpointTls {
    client: ClientTls,
    http1: Arc<rustls::ClientConfig>,
    http2: Arc<rustls::ClientConfig>,
}

/// The protocol a raw connection speaks (offered by ALPN over TLS).
#[derive(Clone, Copy)]
enum Protocol {
    Http1,
    Http2,
}

/// A client connection: plain TCP, or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

impl Endpoint {
    /// The server at `url` over plain HTTP, without a token.
    fn plain(url: &str) -> Endpoint {
        Endpoint { url: url.to_string(), token: None, tls: None }
    }

    /// The same server, over mutual TLS with `tls`'s CA and certificate.
    fn with_tls(self, tls: ClientTls) -> anyhow::Result<Endpoint> {
        let config = |protocol: &[u8]| -> anyhow::Result<Arc<rustls::ClientConfig>> {
            let mut config = tls.config()?;
            config.alpn_protocols = vec![protocol.to_vec()];
            Ok(Arc::new(config))
        };
        let (http1, http2) = (config(b"http/1.1")?, config(b"h2")?);
        Ok(Endpoint { tls: Some(EndpointTls { client: tls, http1, http2 }), ..self })
    }

    /// `127.0.0.1:PORT`.
    fn authority(&self) -> &str {
        self.url.split_once("://").map_or(&self.url, |(_, authority)| authority)
    }

    /// A gantry-client client of the server (its own connection pool).
    fn client(&self) -> anyhow::Result<Client> {
        let client = match &self.tls {
            Some(tls) => Client::with_tls(&self.url, &tls.client)?,
            None => Client::new(&self.url),
        };
        Ok(match &self.token {
            Some(token) => client.with_token(token),
            None => client,
        })
    }

    /// `request` with the token, if any.
    fn authorize(&self, request: hyper::http::request::Builder) -> hyper::http::request::Builder {
        match &self.token {
            Some(token) => request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}")),
            None => request,
        }
    }

    /// A new connection to the server, without Nagle (a request's last
    /// segment would wait for the previous one's delayed ACK), its TLS
    /// handshake done.
    async fn connect(&self, protocol: Protocol) -> anyhow::Result<TokioIo<Box<dyn Io>>> {
        let stream = tokio::net::TcpStream::connect(self.authority()).await?;
        stream.set_nodelay(true)?;
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(stream),
            Some(tls) => {
                let config = match protocol {
                    Protocol::Http1 => &tls.http1,
                    Protocol::Http2 => &tls.http2,
                };
                let host = self.authority().rsplit_once(':').map_or(self.authority(), |(host, _)| host);
                let name = rustls::pki_types::ServerName::try_from(host.to_string())?;
                Box::new(tokio_rustls::TlsConnector::from(Arc::clone(config)).connect(name, stream).await?)
            }
        };
        Ok(TokioIo::new(io))
    }
}

/// What the measurements run against.
struct Targets {
    etcd: LocalEtcd,
    /// Gantry servers: on the embedded store (its log, redb), on etcd.
    server_embedded: Endpoint,
    server_redb: Endpoint,
    server_etcd: Endpoint,
    /// Their process ids.
    embedded_pid: u32,
    redb_pid: u32,
    on_etcd_pid: u32,
    /// The store API in this process: embedded (its log, redb), on etcd.
    embedded: Store,
    redb: Store,
    on_etcd: Store,
    direct: etcd_client::Client,
}

async fn run(options: Options) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("gantry-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!(
        "gantry bench: {VALUE_BYTES} B values, {} s per measurement, every write fsynced before it is acknowledged; {} cores",
        options.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let measured = async {
        if matches!(options.only.as_deref(), None | Some("writes" | "fan-out")) {
            store_rows(&options, &dir).await?;
        }
        if matches!(options.only.as_deref(), None | Some("engine")) {
            engine::rows(&options, &dir).await?;
        }
        if matches!(options.only.as_deref(), None | Some("security")) {
            security::rows(&options, &dir).await?;
        }
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    measured
}

/// The store's rows: Gantry's servers (embedded, on etcd) and the store
/// API against etcd direct, each serving process started here and
/// stopped when done.
async fn store_rows(options: &Options, dir: &Path) -> anyhow::Result<()> {
    let etcd = LocalEtcd::start().await.context("starting etcd (apt-get install etcd-server)")?;
    let server_dir = dir.join("server");
    let store_dir = dir.join("store");
    std::fs::create_dir_all(&server_dir)?;
    std::fs::create_dir_all(&store_dir)?;
    let embedded_process = ServerProcess::start(&["embedded", &server_dir.to_string_lossy()])?;
    let redb_dir = dir.join("server-redb");
    std::fs::create_dir_all(&redb_dir)?;
    let redb_process = ServerProcess::start(&["redb", &redb_dir.to_string_lossy()])?;
    let etcd_process = ServerProcess::start(&["etcd", etcd.endpoint()])?;
    let (server_embedded, server_etcd) = (Endpoint::plain(&embedded_process.url), Endpoint::plain(&etcd_process.url));
    let server_redb = Endpoint::plain(&redb_process.url);
    let embedded = Store::open(StoreConfig::Embedded(EmbeddedConfig::in_dir(&store_dir))).await?;
    let redb = Store::open(StoreConfig::Redb(EmbeddedConfig::redb_in_dir(&store_dir))).await?;
    let on_etcd = Store::open(StoreConfig::Etcd(EtcdConfig::new([etcd.endpoint().to_string()]))).await?;
    let direct = etcd_client::Client::connect([etcd.endpoint()], None).await?;

    println!(
        "etcd {} | gantry server (embedded) {} | gantry server (on etcd) {}",
        etcd.endpoint(),
        server_embedded.url,
        server_etcd.url
    );
    println!();
    let (embedded_pid, redb_pid, on_etcd_pid) = (embedded_process.pid(), redb_process.pid(), etcd_process.pid());
    let targets = Targets {
        etcd,
        server_embedded,
        server_redb,
        server_etcd,
        embedded_pid,
        redb_pid,
        on_etcd_pid,
        embedded,
        redb,
        on_etcd,
        direct,
    };
    if options.only.as_deref() != Some("fan-out") {
        write_rows(options, &targets).await?;
    }
    if options.only.as_deref() != Some("writes") {
        fan_out_rows(options, &targets).await?;
    }
    println!();
    println!(
        "writes: ratio of writes/s to etcd direct (higher is better); fan-out: ratio of p99 to etcd's (lower is better)."
    );
    println!("fan-out is timed from just before the write is sent until the last watcher has the event. conns: the");
    println!(
        "watchers' connections: one each (as separate agents have), or {MUX_CONNECTIONS} carrying them as streams (HTTP/2, gRPC),"
    );
    println!("as etcd's own watch benchmark runs them; the store API row has no network. CPU: the serving processes'");
    println!("user + system time (gantry server, etcd under it, or etcd) per write or per round; watchers': this");
    println!("process's (the watchers' and the writer's) per round.");
    drop((targets, embedded_process, redb_process, etcd_process));
    Ok(())
}

/// Durable writes with 1 and 64 clients, each row against etcd direct.
async fn write_rows(options: &Options, t: &Targets) -> anyhow::Result<()> {
    let duration = Duration::from_secs_f64(options.seconds);
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    print_writes_header("durable writes", "vs etcd");
    for clients in [1usize, 64] {
        let http = reqwest::Client::builder().pool_max_idle_per_host(clients + 8).tcp_nodelay(true).build()?;
        let (embedded, on_etcd, etcd) = ([t.embedded_pid], [t.on_etcd_pid, t.etcd.pid()], [t.etcd.pid()]);
        let redb = [t.redb_pid];
        let rows: Vec<(&str, &[u32], Op)> = vec![
            ("gantry server, embedded (HTTP)", &embedded, http_put(&t.server_embedded, "he", clients, &value).await?),
            ("gantry server, redb (HTTP)", &redb, http_put(&t.server_redb, "hr", clients, &value).await?),
            ("gantry server, on etcd (HTTP)", &on_etcd, http_put(&t.server_etcd, "hg", clients, &value).await?),
            ("gantry store API, embedded", &[], store_put(&t.embedded, "se", &value)),
            ("gantry store API, redb", &[], store_put(&t.redb, "sr", &value)),
            ("gantry store API, on etcd", &etcd, store_put(&t.on_etcd, "sg", &value)),
            ("etcd direct (gRPC, etcd-client)", &etcd, etcd_put(&t.direct, &value)),
        ];
        let mut results = Vec::new();
        // The API's own cost: a request that writes nothing.
        let health =
            measure(clients, duration, &embedded, &http_get(&http, &format!("{}/v1/health", t.server_embedded.url)))
                .await?;
        for (name, serving, op) in rows {
            results.push((name, measure(clients, duration, serving, &op).await.with_context(|| name.to_string())?));
        }
        let etcd_rate = results.last().map_or(1.0, |(_, m)| m.per_second);
        print_writes("(gantry server, GET /v1/health)", clients, &health, None);
        for (name, m) in &results {
            print_writes(name, clients, m, Some(m.per_second / etcd_rate));
        }
    }
    Ok(())
}

/// The writes table's header; `ratio` names the ratio's column.
fn print_writes_header(title: &str, ratio: &str) {
    println!(
        "{:<36} {:>7} {:>10} {:>8} {:>8} {:>9} {:>10}",
        title, "clients", "writes/s", "p50 ms", "p99 ms", ratio, "CPU us/op"
    );
}

/// One row of the writes table; `ratio` of its writes/s to the reference row's.
fn print_writes(name: &str, clients: usize, m: &Measured, ratio: Option<f64>) {
    let ratio = ratio.map_or("-".to_string(), |r| format!("{r:.2}x"));
    let cpu = m.serving_cpu.map_or("-".to_string(), |cpu| format!("{:.0}", cpu.as_secs_f64() * 1e6));
    println!(
        "{:<36} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>9} {:>10}",
        name,
        clients,
        m.per_second,
        ms(m.p50),
        ms(m.p99),
        ratio,
        cpu
    );
}

/// 1,000 watchers (by default) of one prefix, one write, each row against etcd's own watches.
async fn fan_out_rows(options: &Options, t: &Targets) -> anyhow::Result<()> {
    let w = options.watchers;
    let (embedded, on_etcd) = ([t.embedded_pid], [t.on_etcd_pid, t.etcd.pid()]);
    println!();
    print_fan_out_header("watch fan-out (write to all notified)", "vs etcd");
    // A connection per watcher, as separate agents have.
    let own = vec![
        ("gantry server, embedded (SSE)", w, sse_fan_out(&t.server_embedded, &embedded, options).await?),
        ("gantry server, on etcd (SSE)", w, sse_fan_out(&t.server_etcd, &on_etcd, options).await?),
        ("gantry store API, embedded", 0, store_fan_out(&t.embedded, options).await?),
        ("etcd direct (gRPC watch)", w, etcd_fan_out(t, options, w).await?),
    ];
    print_fan_out(options, &own, own[own.len() - 1].2.p99);
    // Watchers as streams multiplexed over a few connections.
    let mux = vec![
        (
            "gantry server, embedded (HTTP/2 SSE)",
            MUX_CONNECTIONS,
            http2_fan_out(&t.server_embedded, &embedded, options, MUX_CONNECTIONS).await?,
        ),
        (
            "gantry server, on etcd (HTTP/2 SSE)",
            MUX_CONNECTIONS,
            http2_fan_out(&t.server_etcd, &on_etcd, options, MUX_CONNECTIONS).await?,
        ),
        ("etcd direct (gRPC watch streams)", MUX_CONNECTIONS, etcd_fan_out(t, options, MUX_CONNECTIONS).await?),
    ];
    print_fan_out(options, &mux, mux[mux.len() - 1].2.p99);
    Ok(())
}

/// The fan-out table's header; `ratio` names the ratio's column.
fn print_fan_out_header(title: &str, ratio: &str) {
    println!(
        "{:<36} {:>8} {:>6} {:>7} {:>8} {:>8} {:>9} {:>10} {:>10}",
        title, "watchers", "conns", "rounds", "p50 ms", "p99 ms", ratio, "CPU ms/rnd", "watchers'"
    );
}

/// Rows of (name, connections, measurement), each with its p99's ratio
/// to `reference` (lower is better).
fn print_fan_out(options: &Options, rows: &[(&str, usize, FanOut)], reference: Duration) {
    for (name, connections, m) in rows {
        let cpu = m.serving_cpu.map_or("-".to_string(), |cpu| format!("{:.1}", ms(cpu)));
        println!(
            "{:<36} {:>8} {:>6} {:>7} {:>8.2} {:>8.2} {:>8.2}x {:>10} {:>10.1}",
            name,
            options.watchers,
            connections,
            options.rounds,
            ms(m.p50),
            ms(m.p99),
            m.p99.as_secs_f64() / reference.as_secs_f64().max(f64::EPSILON),
            cpu,
            ms(m.watchers_cpu)
        );
    }
}

fn parse_args(args: Vec<String>) -> anyhow::Result<Options> {
    let mut options =
        Options { seconds: 3.0, watchers: 1000, rounds: 200, keys: 1_000_000, only: None, print_rounds: false };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--seconds" => options.seconds = value("--seconds")?.parse().context("--seconds takes a number")?,
            "--watchers" => options.watchers = value("--watchers")?.parse().context("--watchers takes a number")?,
            "--rounds" => options.rounds = value("--rounds")?.parse().context("--rounds takes a number")?,
            "--print-rounds" => options.print_rounds = true,
            "--keys" => options.keys = value("--keys")?.parse().context("--keys takes a number")?,
            "--only" => match value("--only")?.as_str() {
                part @ ("writes" | "fan-out" | "security" | "engine") => options.only = Some(part.to_string()),
                other => bail!("--only takes writes, fan-out, security or engine, not {other:?}"),
            },
            "--help" | "-h" => {
                println!(
                    "usage: bench [--seconds N (3)] [--watchers N (1000)] [--rounds N (200)] [--keys N (1000000)] [--only writes|fan-out|security|engine] [--print-rounds]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; see --help"),
        }
    }
    if !(0.1..=600.0).contains(&options.seconds)
        || options.watchers == 0
        || options.watchers > 10_000
        || options.rounds == 0
        || options.rounds > 10_000
        || !(1..=10_000_000).contains(&options.keys)
    {
        bail!("--seconds 0.1..600, --watchers 1..10000, --rounds 1..10000, --keys 1..10000000");
    }
    Ok(options)
}

type Http2Sender = hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>;

/// One HTTP/2 connection to a Gantry server (cleartext with prior
/// knowledge, or h2 by ALPN over TLS).
async fn http2_connect(server: &Endpoint) -> anyhow::Result<Http2Sender> {
    let io = server.connect(Protocol::Http2).await?;
    let (sender, connection) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// PUTs through one keep-alive HTTP/1.1 connection per client (raw hyper:
/// the lightest load generator, as etcd-client is for etcd).
async fn http_put(server: &Endpoint, tag: &'static str, clients: usize, value: &Bytes) -> anyhow::Result<Op> {
    type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>;
    let mut senders = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (sender, connection) =
            hyper::client::conn::http1::handshake(server.connect(Protocol::Http1).await?).await?;
        tokio::spawn(connection);
        senders.push(Arc::new(tokio::sync::Mutex::new(sender)));
    }
    let senders: Arc<Vec<Arc<tokio::sync::Mutex<Sender>>>> = Arc::new(senders);
    let (server, value) = (Arc::new(server.clone()), value.clone());
    Ok(Arc::new(move |client, i| {
        let (senders, server, value) = (senders.clone(), server.clone(), value.clone());
        Box::pin(async move {
            let request = hyper::Request::put(format!("/v1/kv/bench/{tag}/{client}/{i}"))
                .header(hyper::header::HOST, server.authority());
            let request = server.authorize(request).body(http_body_util::Full::new(value))?;
            let response = senders[client].lock().await.send_request(request).await?;
            let status = response.status();
            http_body_util::BodyExt::collect(response.into_body()).await?;
            if !status.is_success() {
                bail!("HTTP {status}");
            }
            Ok(())
        })
    }))
}

fn http_get(http: &reqwest::Client, url: &str) -> Op {
    let (http, url) = (http.clone(), url.to_string());
    Arc::new(move |_, _| {
        let request = http.get(&url);
        Box::pin(async move {
            request.send().await?.error_for_status()?.bytes().await?;
            Ok(())
        })
    })
}

fn store_put(store: &Store, tag: &'static str, value: &Bytes) -> Op {
    let (store, value) = (store.clone(), value.clone());
    Arc::new(move |client, i| {
        let (store, value) = (store.clone(), value.clone());
        Box::pin(async move {
            store.put(&format!("bench/{tag}/{client}/{i}"), value).await?;
            Ok(())
        })
    })
}

fn etcd_put(direct: &etcd_client::Client, value: &Bytes) -> Op {
    let (kv, value) = (direct.kv_client(), value.to_vec());
    Arc::new(move |client, i| {
        let (mut kv, value) = (kv.clone(), value.clone());
        Box::pin(async move {
            kv.put(format!("bench/direct/{client}/{i}"), value, None).await?;
            Ok(())
        })
    })
}

struct Measured {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    /// CPU time the serving processes spent per operation (user + system).
    serving_cpu: Option<Duration>,
}

/// A measurement's raw results, before they are summed up (an interleaved
/// measurement adds up its passes').
struct Samples {
    latencies: Vec<Duration>,
    elapsed: Duration,
    /// CPU time the serving processes spent (user + system); `None` when
    /// nothing serves (the store API in this process).
    serving_cpu: Option<Duration>,
}

impl Samples {
    fn summary(mut self) -> Measured {
        let count = self.latencies.len();
        self.latencies.sort_unstable();
        Measured {
            per_second: count as f64 / self.elapsed.as_secs_f64(),
            p50: percentile(&self.latencies, 0.50),
            p99: percentile(&self.latencies, 0.99),
            serving_cpu: self.serving_cpu.filter(|_| count > 0).map(|cpu| cpu.div_f64(count as f64)),
        }
    }
}

/// `clients` concurrent loops of `op` for `duration` (or [`MAX_OPS`] in all), timing each call.
async fn measure(clients: usize, duration: Duration, serving: &[u32], op: &Op) -> anyhow::Result<Measured> {
    Ok(sample(clients, duration, serving, op, 0).await?.summary())
}

/// [`measure`]'s raw results; each client numbers its operations from
/// `first` (so the passes of one row write new keys, as one long pass would).
async fn sample(clients: usize, duration: Duration, serving: &[u32], op: &Op, first: u64) -> anyhow::Result<Samples> {
    let cpu_before = cpu_time(serving)?;
    let started = Instant::now();
    let deadline = started + duration;
    let budget = MAX_OPS / clients as u64;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let op = Arc::clone(op);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in first..first + budget {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let before = Instant::now();
                    op(client, i).await?;
                    latencies.push(before.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    let cpu = cpu_time(serving)?.saturating_sub(cpu_before);
    Ok(Samples { latencies, elapsed, serving_cpu: (!serving.is_empty()).then_some(cpu) })
}

/// Which rounds a call of [`time_rounds`] makes: `rounds` timed ones,
/// numbered within pass `number` (the values written stay distinct across
/// the passes over one set of watchers).
#[derive(Clone, Copy)]
struct Pass {
    number: usize,
    rounds: usize,
}

impl Pass {
    /// All of `--rounds` at once.
    fn whole(options: &Options) -> Pass {
        Pass { number: 0, rounds: options.rounds }
    }
}

/// Times `pass.rounds` rounds of one write (after [`WARM_UP_ROUNDS`]
/// untimed ones), each until every watcher's notification of it arrived on
/// `seen`; `write` writes the value it is given.
async fn time_rounds<W, Fut>(
    options: &Options,
    pass: Pass,
    serving: &[u32],
    seen: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    mut write: W,
) -> anyhow::Result<RoundTimes>
where
    W: FnMut(String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut times = Vec::with_capacity(pass.rounds);
    let (mut cpu_before, mut watchers_before) = (Duration::ZERO, Duration::ZERO);
    let this_process = [std::process::id()];
    // The first rounds wake a thousand fresh tasks and connections for the
    // first time (or again, after another server's pass); they are not timed.
    for round in 0..WARM_UP_ROUNDS + pass.rounds {
        if round == WARM_UP_ROUNDS {
            cpu_before = cpu_time(serving)?;
            watchers_before = cpu_time(&this_process)?;
        }
        let marker = format!("round-{}.{round}", pass.number);
        let sent = Instant::now();
        write(marker.clone()).await?;
        let mut notified = 0;
        let mut last = sent;
        while notified < options.watchers {
            let (value, at) = tokio::time::timeout(FAN_OUT_TIMEOUT, seen.recv())
                .await
                .context("watchers were not all notified in time")?
                .context("the watchers stopped")?;
            if value == marker {
                notified += 1;
                last = last.max(at);
            }
        }
        if round >= WARM_UP_ROUNDS {
            times.push(last - sent);
        }
    }
    let cpu = cpu_time(serving)?.saturating_sub(cpu_before);
    let watchers_cpu = cpu_time(&this_process)?.saturating_sub(watchers_before);
    if options.print_rounds {
        let all: Vec<String> = times.iter().map(|t| format!("{:.1}", ms(*t))).collect();
        eprintln!("rounds in order (ms): {}", all.join(" "));
    }
    Ok(RoundTimes { times, serving_cpu: (!serving.is_empty()).then_some(cpu), watchers_cpu })
}

/// Fan-out rounds' raw results, before they are summed up.
struct RoundTimes {
    times: Vec<Duration>,
    /// CPU time the serving processes spent (user + system).
    serving_cpu: Option<Duration>,
    /// CPU time this process (the watchers and the writer) spent.
    watchers_cpu: Duration,
}

impl RoundTimes {
    fn summary(mut self) -> FanOut {
        let rounds = u32::try_from(self.times.len()).unwrap_or(u32::MAX).max(1);
        self.times.sort_unstable();
        FanOut {
            p50: percentile(&self.times, 0.50),
            p99: percentile(&self.times, 0.99),
            serving_cpu: self.serving_cpu.map(|cpu| cpu / rounds),
            watchers_cpu: self.watchers_cpu / rounds,
        }
    }
}

/// One fan-out measurement.
struct FanOut {
    p50: Duration,
    p99: Duration,
    /// CPU time the serving processes spent per round (user + system).
    serving_cpu: Option<Duration>,
    /// CPU time this process (the watchers and the writer) spent per round.
    watchers_cpu: Duration,
}

/// Watchers that report each event's value, and when it arrived, on
/// `seen`; stopped when dropped.
struct Watchers {
    seen: tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Watchers {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

/// User + system CPU time the processes `pids` have used so far.
fn cpu_time(pids: &[u32]) -> anyhow::Result<Duration> {
    // Clock ticks per second as Linux reports them in /proc (USER_HZ).
    const TICKS_PER_SECOND: u64 = 100;
    let mut ticks = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command (which may hold spaces) end at its ')'.
        let fields: Vec<&str> = stat.rsplit_once(')').context("/proc stat")?.1.split_whitespace().collect();
        // utime and stime: fields 14 and 15 of stat, 12 and 13 after the command.
        for field in &fields[11..13] {
            ticks += field.parse::<u64>()?;
        }
    }
    Ok(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

/// `options.watchers` SSE watchers of one prefix on a Gantry server.
async fn sse_fan_out(server: &Endpoint, serving: &[u32], options: &Options) -> anyhow::Result<FanOut> {
    let prefix = format!("fan/{}/", std::process::id());
    let mut watchers = sse_watchers(server, &prefix, options.watchers).await?;
    Ok(write_rounds(server, &prefix, options, Pass::whole(options), serving, &mut watchers).await?.summary())
}

/// `count` watchers of `prefix` on a Gantry server, each on a connection of
/// its own, as separate agents have.
async fn sse_watchers(server: &Endpoint, prefix: &str, count: usize) -> anyhow::Result<Watchers> {
    let (tx, seen) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        // One client (one connection) per watcher.
        let stream = server.client()?.watch(&format!("kv/{prefix}"), 0, None).await?;
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(Ok(WatchItem::Event { event, .. })) = stream.next().await {
                if tx.send((event.value.unwrap_or_default(), Instant::now())).is_err() {
                    return;
                }
            }
        }));
    }
    Ok(Watchers { seen, tasks })
}

/// The store's own fan-out, in this process: what the engine costs without the network.
async fn store_fan_out(store: &Store, options: &Options) -> anyhow::Result<FanOut> {
    let prefix = format!("fan-store/{}/", std::process::id());
    let (tx, seen) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut tasks = Vec::with_capacity(options.watchers);
    for _ in 0..options.watchers {
        let mut watch = store.watch(&prefix, 0).await?;
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(event)) = watch.next_event().await {
                if tx.send((String::from_utf8_lossy(&event.value).into_owned(), Instant::now())).is_err() {
                    return;
                }
            }
        }));
    }
    drop(tx);
    let mut watchers = Watchers { seen, tasks };
    let times = time_rounds(options, Pass::whole(options), &[], &mut watchers.seen, |marker| {
        let (store, key) = (store.clone(), format!("{prefix}key"));
        async move {
            store.put(&key, marker).await?;
            Ok(())
        }
    })
    .await?;
    Ok(times.summary())
}

/// The same with etcd's own watches: watcher `w` is a watch stream on
/// client connection `w % connections`.
async fn etcd_fan_out(t: &Targets, options: &Options, connections: usize) -> anyhow::Result<FanOut> {
    let (endpoint, direct) = (t.etcd.endpoint(), &t.direct);
    let prefix = format!("fan-direct/{}/{connections}/", std::process::id());
    let (tx, seen) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections.min(options.watchers) {
        clients.push(etcd_client::Client::connect([endpoint], None).await?);
    }
    let mut tasks = Vec::with_capacity(options.watchers);
    for w in 0..options.watchers {
        let mut watch_client = clients[w % clients.len()].watch_client();
        let mut stream =
            watch_client.watch(prefix.clone(), Some(etcd_client::WatchOptions::new().with_prefix())).await?;
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let _keep = watch_client;
            while let Some(Ok(response)) = stream.next().await {
                for event in response.events() {
                    let value =
                        event.kv().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()).unwrap_or_default();
                    if tx.send((value, Instant::now())).is_err() {
                        return;
                    }
                }
            }
        }));
    }
    drop(tx);
    let mut watchers = Watchers { seen, tasks };
    let kv = direct.kv_client();
    let times = time_rounds(options, Pass::whole(options), &[t.etcd.pid()], &mut watchers.seen, |marker| {
        let key = format!("{prefix}key");
        let mut kv = kv.clone();
        async move {
            kv.put(key, marker, None).await?;
            Ok(())
        }
    })
    .await?;
    Ok(times.summary())
}

/// Gantry's watches as HTTP/2 streams: watcher `w` is a stream on
/// connection `w % connections`, as for etcd's gRPC watches.
async fn http2_fan_out(
    server: &Endpoint,
    serving: &[u32],
    options: &Options,
    connections: usize,
) -> anyhow::Result<FanOut> {
    let prefix = format!("fan-h2/{}/", std::process::id());
    let mut watchers = http2_watchers(server, &prefix, options.watchers, connections).await?;
    Ok(write_rounds(server, &prefix, options, Pass::whole(options), serving, &mut watchers).await?.summary())
}

/// `count` watchers of `prefix` on a Gantry server as HTTP/2 streams of
/// `connections` connections.
async fn http2_watchers(server: &Endpoint, prefix: &str, count: usize, connections: usize) -> anyhow::Result<Watchers> {
    let (tx, seen) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections.min(count) {
        senders.push(http2_connect(server).await?);
    }
    let mut tasks = Vec::with_capacity(count);
    for w in 0..count {
        let mut sender = senders[w % senders.len()].clone();
        let request = server
            .authorize(hyper::Request::get(format!("{}/v1/watch?prefix=kv/{prefix}", server.url)))
            .body(http_body_util::Full::new(Bytes::new()))?;
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        if !response.status().is_success() {
            bail!("watch: HTTP {}", response.status());
        }
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut body = response.into_body();
            let mut buffer = Vec::new();
            while let Some(Ok(frame)) = http_body_util::BodyExt::frame(&mut body).await {
                let Ok(data) = frame.into_data() else { continue };
                buffer.extend_from_slice(&data);
                for value in sse_values(&mut buffer) {
                    if tx.send((value, Instant::now())).is_err() {
                        return;
                    }
                }
            }
        }));
    }
    Ok(Watchers { seen, tasks })
}

/// Times one pass of writes to `PREFIXkey` through the Gantry server that
/// `watchers` watch.
async fn write_rounds(
    server: &Endpoint,
    prefix: &str,
    options: &Options,
    pass: Pass,
    serving: &[u32],
    watchers: &mut Watchers,
) -> anyhow::Result<RoundTimes> {
    let writer = server.client()?;
    time_rounds(options, pass, serving, &mut watchers.seen, |marker| {
        let (writer, key) = (writer.clone(), format!("{prefix}key"));
        async move {
            writer.kv_put(&key, &marker, Default::default()).await?;
            Ok(())
        }
    })
    .await
}

/// Takes the complete events out of `buffer` (SSE text) and returns their
/// values; a partial event stays for the next read.
fn sse_values(buffer: &mut Vec<u8>) -> Vec<String> {
    let mut values = Vec::new();
    while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
        let event: Vec<u8> = buffer.drain(..end + 2).collect();
        let text = String::from_utf8_lossy(&event);
        for data in text.lines().filter_map(|line| line.strip_prefix("data:")) {
            if let Ok(event) = serde_json::from_str::<gantry_api::WatchEvent>(data.trim_start()) {
                values.push(event.value.unwrap_or_default());
            }
        }
    }
    values
}
