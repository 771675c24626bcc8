//! `bench`: Gantry's source of truth against etcd on this machine, side by
//! side in one run: durable writes (1 and 64 clients, 256 B values) and
//! watch fan-out (1,000 watchers of one prefix, one write).
//!
//! It starts its own etcd (Debian's etcd-server) and three Gantry servers
//! on loopback ports — two on the embedded store (without access control,
//! and with it: writes then carry a token, and count against its quotas),
//! one on that etcd — each in a process of its own, as etcd is, and drives
//! them through the HTTP API as users do. Rows for the store API called in this process, without HTTP,
//! show what the API layer costs. Every loop is bounded in count and time.
//!
//! Run: `cargo run --release -p gantry-bench --bin bench [-- --seconds 3 --watchers 1000 --rounds 200 --only writes|fan-out]`

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use gantry_bench::{ms, percentile};
use gantry_client::{Client, WatchItem};
use gantry_store::local_etcd::LocalEtcd;
use gantry_store::{Bytes, EmbeddedConfig, EtcdConfig, Store, StoreConfig};

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

type Op = Box<dyn Fn(usize, u64) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send + Sync>;

struct Options {
    seconds: f64,
    watchers: usize,
    rounds: usize,
    /// Run only one part: `writes` or `fan-out`.
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
    runtime.block_on(run(parse_args(args)?))
}

/// The server process: `__serve embedded DIR`, `__serve embedded-acl DIR`
/// or `__serve etcd URL`; prints its URL.
async fn serve_child(args: &[String]) -> anyhow::Result<()> {
    let config = match args {
        [kind, dir] if kind == "embedded" || kind == "embedded-acl" => {
            StoreConfig::Embedded(EmbeddedConfig::in_dir(dir))
        }
        [kind, endpoint] if kind == "etcd" => StoreConfig::Etcd(EtcdConfig::new([endpoint.clone()])),
        _ => bail!("usage: bench {SERVE} embedded DIR | embedded-acl DIR | etcd URL"),
    };
    let store = Store::open(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    // As `gantry server` serves by default, but without access control
    // (except `embedded-acl`): the rows compare the store and its HTTP
    // layer with etcd's. The limits count as always, out of the load's
    // reach (64 clients on one address, 1,000 watchers, tens of thousands
    // of writes a second).
    let acl = match kind_of(args) {
        // Its management token is in DIR/bootstrap-token.
        "embedded-acl" => {
            let acl = gantry_server::Acl::open(&store, gantry_server::AclMode::On).await?;
            gantry_server::bootstrap(&acl, &store, std::path::Path::new(&args[1])).await?;
            acl
        }
        _ => gantry_server::Acl::off(),
    };
    // Once its token file is written: the parent reads it on this line.
    println!("http://{}", listener.local_addr()?);
    let options = gantry_server::ServeOptions {
        threads: gantry_server::DEFAULT_EVENT_LOOPS,
        tls: None,
        acl,
        limits: gantry_server::Limits::out_of_reach(),
    };
    gantry_server::serve_with(listener, store, options, std::future::pending()).await?;
    Ok(())
}

/// The kind of server `__serve` was asked for.
fn kind_of(args: &[String]) -> &str {
    args.first().map_or("", String::as_str)
}

/// A Gantry server in a child process; killed on drop.
struct ServerProcess {
    child: std::process::Child,
    url: String,
}

impl ServerProcess {
    fn start(kind: &str, target: &str) -> anyhow::Result<ServerProcess> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args([SERVE, kind, target])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut url = String::new();
        std::io::BufReader::new(child.stdout.take().context("server stdout")?).read_line(&mut url)?;
        let url = url.trim().to_string();
        if !url.starts_with("http://") {
            bail!("the {kind} server did not start");
        }
        Ok(ServerProcess { child, url })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the measurements run against.
struct Targets {
    etcd: LocalEtcd,
    /// Gantry servers' URLs: on the embedded store, on etcd.
    server_embedded: String,
    server_etcd: String,
    /// On the embedded store with access control, and its management token.
    server_acl: String,
    acl_token: String,
    /// Their process ids.
    embedded_pid: u32,
    on_etcd_pid: u32,
    acl_pid: u32,
    /// The store API in this process: embedded, on etcd.
    embedded: Store,
    on_etcd: Store,
    direct: etcd_client::Client,
}

async fn run(options: Options) -> anyhow::Result<()> {
    let etcd = LocalEtcd::start().await.context("starting etcd (apt-get install etcd-server)")?;
    let dir = std::env::temp_dir().join(format!("gantry-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let server_dir = dir.join("server");
    let store_dir = dir.join("store");
    std::fs::create_dir_all(&server_dir)?;
    std::fs::create_dir_all(&store_dir)?;
    let embedded_process = ServerProcess::start("embedded", &server_dir.to_string_lossy())?;
    let acl_dir = dir.join("server-acl");
    std::fs::create_dir_all(&acl_dir)?;
    let acl_process = ServerProcess::start("embedded-acl", &acl_dir.to_string_lossy())?;
    let acl_token = std::fs::read_to_string(acl_dir.join("bootstrap-token"))?.trim().to_owned();
    let etcd_process = ServerProcess::start("etcd", etcd.endpoint())?;
    let (server_embedded, server_etcd) = (embedded_process.url.clone(), etcd_process.url.clone());
    let embedded = Store::open(StoreConfig::Embedded(EmbeddedConfig::in_dir(&store_dir))).await?;
    let on_etcd = Store::open(StoreConfig::Etcd(EtcdConfig::new([etcd.endpoint().to_string()]))).await?;
    let direct = etcd_client::Client::connect([etcd.endpoint()], None).await?;

    println!(
        "gantry bench: {VALUE_BYTES} B values, {} s per measurement, every write fsynced before it is acknowledged; {} cores",
        options.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "etcd {} | gantry server (embedded) {} | gantry server (on etcd) {}",
        etcd.endpoint(),
        server_embedded,
        server_etcd
    );
    println!();
    let (embedded_pid, on_etcd_pid) = (embedded_process.child.id(), etcd_process.child.id());
    let (server_acl, acl_pid) = (acl_process.url.clone(), acl_process.child.id());
    let targets = Targets {
        etcd,
        server_embedded,
        server_etcd,
        server_acl,
        acl_token,
        embedded_pid,
        on_etcd_pid,
        acl_pid,
        embedded,
        on_etcd,
        direct,
    };
    if options.only.as_deref() != Some("fan-out") {
        write_rows(&options, &targets).await?;
    }
    if options.only.as_deref() != Some("writes") {
        fan_out_rows(&options, &targets).await?;
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

    drop((targets, embedded_process, etcd_process, acl_process));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Durable writes with 1 and 64 clients, each row against etcd direct.
async fn write_rows(options: &Options, t: &Targets) -> anyhow::Result<()> {
    let duration = Duration::from_secs_f64(options.seconds);
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    println!(
        "{:<36} {:>7} {:>10} {:>8} {:>8} {:>9} {:>10}",
        "durable writes", "clients", "writes/s", "p50 ms", "p99 ms", "vs etcd", "CPU us/op"
    );
    for clients in [1usize, 64] {
        let http = reqwest::Client::builder().pool_max_idle_per_host(clients + 8).tcp_nodelay(true).build()?;
        let (embedded, on_etcd, etcd) = ([t.embedded_pid], [t.on_etcd_pid, t.etcd.pid()], [t.etcd.pid()]);
        let acl = [t.acl_pid];
        let token = Some(t.acl_token.as_str());
        let rows: Vec<(&str, &[u32], Op)> = vec![
            (
                "gantry server, embedded (HTTP)",
                &embedded,
                http_put(&t.server_embedded, "he", clients, &value, None).await?,
            ),
            ("gantry server, embedded, ACL on", &acl, http_put(&t.server_acl, "ha", clients, &value, token).await?),
            ("gantry server, on etcd (HTTP)", &on_etcd, http_put(&t.server_etcd, "hg", clients, &value, None).await?),
            ("gantry store API, embedded", &[], store_put(&t.embedded, "se", &value)),
            ("gantry store API, on etcd", &etcd, store_put(&t.on_etcd, "sg", &value)),
            ("etcd direct (gRPC, etcd-client)", &etcd, etcd_put(&t.direct, &value)),
        ];
        let mut results = Vec::new();
        // The API's own cost: a request that writes nothing.
        let health =
            measure(clients, duration, &embedded, http_get(&http, &format!("{}/v1/health", t.server_embedded))).await?;
        for (name, serving, op) in rows {
            results.push((name, measure(clients, duration, serving, op).await.with_context(|| name.to_string())?));
        }
        let etcd_rate = results.last().map_or(1.0, |(_, m)| m.per_second);
        print_writes("(gantry server, GET /v1/health)", clients, &health, None);
        for (name, m) in &results {
            print_writes(name, clients, m, Some(m.per_second / etcd_rate));
        }
    }
    Ok(())
}

/// One row of the writes table; `ratio` to etcd direct.
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
    println!(
        "{:<36} {:>8} {:>6} {:>7} {:>8} {:>8} {:>9} {:>10} {:>10}",
        "watch fan-out (write to all notified)",
        "watchers",
        "conns",
        "rounds",
        "p50 ms",
        "p99 ms",
        "vs etcd",
        "CPU ms/rnd",
        "watchers'"
    );
    // A connection per watcher, as separate agents have.
    let own = vec![
        ("gantry server, embedded (SSE)", w, sse_fan_out(&t.server_embedded, &embedded, options).await?),
        ("gantry server, on etcd (SSE)", w, sse_fan_out(&t.server_etcd, &on_etcd, options).await?),
        ("gantry store API, embedded", 0, store_fan_out(&t.embedded, options).await?),
        ("etcd direct (gRPC watch)", w, etcd_fan_out(t, options, w).await?),
    ];
    print_fan_out(options, &own);
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
    print_fan_out(options, &mux);
    Ok(())
}

/// Rows of (name, connections, measurement); the last row is etcd's, the reference.
fn print_fan_out(options: &Options, rows: &[(&str, usize, FanOut)]) {
    let etcd_p99 = rows.last().map_or(Duration::ZERO, |(_, _, m)| m.p99);
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
            m.p99.as_secs_f64() / etcd_p99.as_secs_f64().max(f64::EPSILON),
            cpu,
            ms(m.watchers_cpu)
        );
    }
}

fn parse_args(args: Vec<String>) -> anyhow::Result<Options> {
    let mut options = Options { seconds: 3.0, watchers: 1000, rounds: 200, only: None, print_rounds: false };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--seconds" => options.seconds = value("--seconds")?.parse().context("--seconds takes a number")?,
            "--watchers" => options.watchers = value("--watchers")?.parse().context("--watchers takes a number")?,
            "--rounds" => options.rounds = value("--rounds")?.parse().context("--rounds takes a number")?,
            "--print-rounds" => options.print_rounds = true,
            "--only" => match value("--only")?.as_str() {
                part @ ("writes" | "fan-out") => options.only = Some(part.to_string()),
                other => bail!("--only takes writes or fan-out, not {other:?}"),
            },
            "--help" | "-h" => {
                println!(
                    "usage: bench [--seconds N (3)] [--watchers N (1000)] [--rounds N (200)] [--only writes|fan-out] [--print-rounds]"
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
    {
        bail!("--seconds 0.1..600, --watchers 1..10000, --rounds 1..10000");
    }
    Ok(options)
}

type Http2Sender = hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>;

/// One HTTP/2 connection (cleartext, prior knowledge) to a Gantry server.
async fn http2_connect(server: &str) -> anyhow::Result<Http2Sender> {
    let stream = tokio::net::TcpStream::connect(server.trim_start_matches("http://")).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// PUTs through one keep-alive HTTP/1.1 connection per client (raw hyper:
/// the lightest load generator, as etcd-client is for etcd), with `token`
/// when the server checks them.
async fn http_put(
    server: &str,
    tag: &'static str,
    clients: usize,
    value: &Bytes,
    token: Option<&str>,
) -> anyhow::Result<Op> {
    type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>;
    let authority = server.trim_start_matches("http://").to_string();
    let mut senders = Vec::with_capacity(clients);
    for _ in 0..clients {
        let stream = tokio::net::TcpStream::connect(&authority).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        senders.push(std::sync::Arc::new(tokio::sync::Mutex::new(sender)));
    }
    let senders: std::sync::Arc<Vec<std::sync::Arc<tokio::sync::Mutex<Sender>>>> = std::sync::Arc::new(senders);
    let (authority, value) = (std::sync::Arc::new(authority), value.clone());
    let bearer = token.map(|token| std::sync::Arc::<str>::from(format!("Bearer {token}")));
    Ok(Box::new(move |client, i| {
        let (senders, authority, value, bearer) = (senders.clone(), authority.clone(), value.clone(), bearer.clone());
        Box::pin(async move {
            let mut request = hyper::Request::put(format!("/v1/kv/bench/{tag}/{client}/{i}"))
                .header(hyper::header::HOST, authority.as_str());
            if let Some(bearer) = bearer.as_deref() {
                request = request.header(hyper::header::AUTHORIZATION, bearer);
            }
            let request = request.body(http_body_util::Full::new(value))?;
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
    Box::new(move |_, _| {
        let request = http.get(&url);
        Box::pin(async move {
            request.send().await?.error_for_status()?.bytes().await?;
            Ok(())
        })
    })
}

fn store_put(store: &Store, tag: &'static str, value: &Bytes) -> Op {
    let (store, value) = (store.clone(), value.clone());
    Box::new(move |client, i| {
        let (store, value) = (store.clone(), value.clone());
        Box::pin(async move {
            store.put(&format!("bench/{tag}/{client}/{i}"), value).await?;
            Ok(())
        })
    })
}

fn etcd_put(direct: &etcd_client::Client, value: &Bytes) -> Op {
    let (kv, value) = (direct.kv_client(), value.to_vec());
    Box::new(move |client, i| {
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

/// `clients` concurrent loops of `op` for `duration` (or [`MAX_OPS`] in all), timing each call.
async fn measure(clients: usize, duration: Duration, serving: &[u32], op: Op) -> anyhow::Result<Measured> {
    let op = std::sync::Arc::new(op);
    let cpu_before = cpu_time(serving)?;
    let started = Instant::now();
    let deadline = started + duration;
    let budget = MAX_OPS / clients as u64;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let op = std::sync::Arc::clone(&op);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in 0..budget {
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
    latencies.sort_unstable();
    Ok(Measured {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        serving_cpu: (!serving.is_empty() && !latencies.is_empty()).then(|| cpu.div_f64(latencies.len() as f64)),
    })
}

/// Times rounds of one write until `expected` notifications of it arrived on `seen`.
async fn time_rounds<W, Fut>(
    options: &Options,
    serving: &[u32],
    seen: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    mut write: W,
) -> anyhow::Result<FanOut>
where
    W: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut times = Vec::with_capacity(options.rounds);
    let (mut cpu_before, mut watchers_before) = (Duration::ZERO, Duration::ZERO);
    let this_process = [std::process::id()];
    // The first rounds wake a thousand fresh tasks and connections for the
    // first time; they are not timed.
    for round in 0..WARM_UP_ROUNDS + options.rounds {
        if round == WARM_UP_ROUNDS {
            cpu_before = cpu_time(serving)?;
            watchers_before = cpu_time(&this_process)?;
        }
        let marker = format!("round-{round}");
        let sent = Instant::now();
        write(round).await?;
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
    times.sort_unstable();
    Ok(FanOut {
        p50: percentile(&times, 0.50),
        p99: percentile(&times, 0.99),
        serving_cpu: (!serving.is_empty()).then(|| cpu / options.rounds as u32),
        watchers_cpu: watchers_cpu / options.rounds as u32,
    })
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
async fn sse_fan_out(server: &str, serving: &[u32], options: &Options) -> anyhow::Result<FanOut> {
    let prefix = format!("fan/{}/", std::process::id());
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut tasks = Vec::with_capacity(options.watchers);
    for _ in 0..options.watchers {
        // One client (one connection) per watcher, as separate agents have.
        let stream = Client::new(server).watch(&format!("kv/{prefix}"), 0, None).await?;
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
    drop(tx);
    write_rounds(server, &prefix, options, serving, &mut seen, tasks).await
}

/// The store's own fan-out, in this process: what the engine costs without the network.
async fn store_fan_out(store: &Store, options: &Options) -> anyhow::Result<FanOut> {
    let prefix = format!("fan-store/{}/", std::process::id());
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
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
    let result = time_rounds(options, &[], &mut seen, |round| {
        let (store, key) = (store.clone(), format!("{prefix}key"));
        async move {
            store.put(&key, format!("round-{round}")).await?;
            Ok(())
        }
    })
    .await;
    tasks.iter().for_each(tokio::task::JoinHandle::abort);
    result
}

/// The same with etcd's own watches: watcher `w` is a watch stream on
/// client connection `w % connections`.
async fn etcd_fan_out(t: &Targets, options: &Options, connections: usize) -> anyhow::Result<FanOut> {
    let (endpoint, direct) = (t.etcd.endpoint(), &t.direct);
    let prefix = format!("fan-direct/{}/{connections}/", std::process::id());
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
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
    let kv = direct.kv_client();
    let result = time_rounds(options, &[t.etcd.pid()], &mut seen, |round| {
        let key = format!("{prefix}key");
        let mut kv = kv.clone();
        async move {
            kv.put(key, format!("round-{round}"), None).await?;
            Ok(())
        }
    })
    .await;
    tasks.iter().for_each(tokio::task::JoinHandle::abort);
    result
}

/// Gantry's watches as HTTP/2 streams: watcher `w` is a stream on
/// connection `w % connections`, as for etcd's gRPC watches.
async fn http2_fan_out(server: &str, serving: &[u32], options: &Options, connections: usize) -> anyhow::Result<FanOut> {
    let prefix = format!("fan-h2/{}/", std::process::id());
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections.min(options.watchers) {
        senders.push(http2_connect(server).await?);
    }
    let authority = server.trim_start_matches("http://");
    let mut tasks = Vec::with_capacity(options.watchers);
    for w in 0..options.watchers {
        let mut sender = senders[w % senders.len()].clone();
        let request = hyper::Request::get(format!("http://{authority}/v1/watch?prefix=kv/{prefix}"))
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
    drop(tx);
    write_rounds(server, &prefix, options, serving, &mut seen, tasks).await
}

/// Times the rounds of writes to `PREFIXkey` through the Gantry server
/// whose watchers (`tasks`) report on `seen`, then stops the watchers.
async fn write_rounds(
    server: &str,
    prefix: &str,
    options: &Options,
    serving: &[u32],
    seen: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<FanOut> {
    let writer = Client::new(server);
    let result = time_rounds(options, serving, seen, |round| {
        let (writer, key) = (writer.clone(), format!("{prefix}key"));
        async move {
            writer.kv_put(&key, &format!("round-{round}"), Default::default()).await?;
            Ok(())
        }
    })
    .await;
    tasks.iter().for_each(tokio::task::JoinHandle::abort);
    result
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
