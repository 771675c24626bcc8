//! Benchmark of the agent's built-in TCP proxy against haproxy: the same
//! backend (a minimal keep-alive HTTP/1.1 responder in this process) reached
//! directly, through the built-in proxy (its own process, as in an agent),
//! and through one haproxy with a `mode tcp` and a `mode http` frontend.
//! The load is N concurrent keep-alive HTTP/1.1 connections (hyper), each
//! sending GETs back to back until the time or the request budget is spent.
//!
//! Run: `cargo run --release -p gantry-bench --bin bench-lb [-- --connections 64 --seconds 5]`
//!
//! Needs haproxy on PATH (`apt-get install haproxy`); it fails rather than
//! skip the comparison.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use gantry_agent::lb::builtin::Builtin;
use gantry_agent::lb::{Backend, Frontend, Mode, Plan};
use gantry_bench::percentile;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// argv[1] of the child process that runs the built-in proxy.
const PROXY_MODE: &str = "__builtin-proxy";

/// Every answer of the backend: small, so the proxies' per-request cost shows.
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";

/// Load before each measured run, not counted: connections, caches, CPU clocks.
const WARM_UP: Duration = Duration::from_millis(500);

/// How long a proxy may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct Options {
    connections: usize,
    /// Per target, in all rounds.
    duration: Duration,
    rounds: u32,
    /// Requests in all, at most, per target and round.
    requests: u64,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if args.first().map(String::as_str) == Some(PROXY_MODE) {
        return runtime.block_on(serve_builtin(&args[1..]));
    }
    let options = parse_args(args)?;
    let haproxy = haproxy_version()?;
    runtime.block_on(bench(options, &haproxy))
}

fn parse_args(args: Vec<String>) -> anyhow::Result<Options> {
    let mut options = Options { connections: 64, duration: Duration::from_secs(5), rounds: 3, requests: 5_000_000 };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--connections" => {
                options.connections = value("--connections")?.parse().context("--connections takes a number")?
            }
            "--seconds" => {
                let seconds: f64 = value("--seconds")?.parse().context("--seconds takes a number")?;
                ensure!((0.1..=600.0).contains(&seconds), "--seconds 0.1..600");
                options.duration = Duration::from_secs_f64(seconds);
            }
            "--rounds" => options.rounds = value("--rounds")?.parse().context("--rounds takes a number")?,
            "--requests" => options.requests = value("--requests")?.parse().context("--requests takes a number")?,
            "--help" | "-h" => {
                println!(
                    "usage: bench-lb [--connections N (64)] [--seconds S (5)] [--requests N in all per run (5000000)]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; see --help"),
        }
    }
    ensure!((1..=10_000).contains(&options.connections), "--connections 1..10000");
    ensure!((1..=100).contains(&options.rounds), "--rounds 1..100");
    ensure!(options.requests >= options.connections as u64, "--requests must be at least --connections");
    Ok(options)
}

/// `haproxy -v`'s first line; a clear error when haproxy is not installed.
fn haproxy_version() -> anyhow::Result<String> {
    let output = std::process::Command::new("haproxy").arg("-v").output().map_err(|e| {
        anyhow::anyhow!(
            "cannot run haproxy ({e}): this benchmark compares the built-in proxy with haproxy; \
             install it with `apt-get install haproxy`"
        )
    })?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.lines().next().unwrap_or("haproxy (unknown version)").to_string())
}

async fn bench(options: Options, haproxy_version: &str) -> anyhow::Result<()> {
    let backend = start_backend().await?;
    let dir = tempfile::Builder::new().prefix("gantry-bench-lb-").tempdir()?;
    let (builtin_at, tcp_at, http_at) = (free_address()?, free_address()?, free_address()?);
    let mut builtin = start_builtin(builtin_at, backend)?;
    let mut haproxy = start_haproxy(dir.path(), tcp_at, http_at, backend)?;
    wait_listening(&mut builtin, builtin_at, "the built-in proxy").await?;
    for at in [tcp_at, http_at] {
        wait_listening(&mut haproxy, at, "haproxy").await.with_context(|| haproxy_log(dir.path()))?;
    }

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "gantry bench-lb: {} keep-alive HTTP/1.1 connections, {:?} per target in {} interleaved rounds \
         (each after a {WARM_UP:?} warm-up), {cores} cores, {haproxy_version}",
        options.connections, options.duration, options.rounds
    );
    let targets = [
        ("direct", backend),
        ("builtin (tcp)", builtin_at),
        ("haproxy (mode tcp)", tcp_at),
        ("haproxy (mode http)", http_at),
    ];
    // Rounds alternate the targets, so that load from outside (a shared
    // machine) weighs on each alike.
    let mut samples: Vec<Samples> = targets.iter().map(|_| Samples::default()).collect();
    let per_round = options.duration / options.rounds;
    for _ in 0..options.rounds {
        for ((name, address), samples) in targets.iter().zip(&mut samples) {
            load(*address, options, WARM_UP).await.with_context(|| format!("warming up {name}"))?;
            let round = load(*address, options, per_round).await.with_context(|| format!("loading {name}"))?;
            samples.add(round);
        }
    }
    println!();
    println!("{:<22} {:>12} {:>10} {:>10} {:>10}", "target", "requests/s", "p50 µs", "p99 µs", "requests");
    let results: Vec<Measured> = samples.into_iter().map(Samples::measured).collect();
    for ((name, _), measured) in targets.iter().zip(&results) {
        println!(
            "{:<22} {:>12.0} {:>10} {:>10} {:>10}",
            name, measured.per_second, measured.p50_us, measured.p99_us, measured.requests
        );
    }
    let (ours, theirs) = (&results[1], &results[2]);
    println!();
    println!(
        "builtin / haproxy (mode tcp): {:.2}× the requests/s, {:.2}× the p50, {:.2}× the p99",
        ours.per_second / theirs.per_second,
        ours.p50_us as f64 / theirs.p50_us.max(1) as f64,
        ours.p99_us as f64 / theirs.p99_us.max(1) as f64,
    );
    println!("(the load generator and the backend share this machine's cores with the proxy under test)");
    for child in [&mut builtin, &mut haproxy] {
        let _ = child.kill().await;
    }
    Ok(())
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_address() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?)
}

/// The backend: answers every request head it reads with [`RESPONSE`],
/// keeping the connection open. Requests have no body (the load is GETs).
async fn start_backend() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(respond(stream));
        }
    });
    Ok(address)
}

async fn respond(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut pending = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&chunk[..n]);
        let mut answers = Vec::new();
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            pending.drain(..end + 4);
            answers.extend_from_slice(RESPONSE);
        }
        stream.write_all(&answers).await?;
    }
}

/// This program again, as the built-in proxy from `at` to `backend`; it
/// exits when its stdin closes, so it never outlives the benchmark.
fn start_builtin(at: SocketAddr, backend: SocketAddr) -> anyhow::Result<Child> {
    Command::new(std::env::current_exe()?)
        .args([PROXY_MODE, &at.to_string(), &backend.to_string()])
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the built-in proxy process")
}

/// The child process of [`start_builtin`].
async fn serve_builtin(args: &[String]) -> anyhow::Result<()> {
    let [bind, backend] = args else { bail!("usage: bench-lb {PROXY_MODE} BIND BACKEND") };
    let frontend = Frontend {
        service: "bench".into(),
        bind: bind.parse().context("BIND")?,
        mode: Mode::Tcp,
        public: false,
        backends: vec![Backend { id: "backend".into(), address: backend.parse().context("BACKEND")? }],
    };
    let mut proxy = Builtin::new();
    proxy.apply(&Plan { frontends: vec![frontend] }).await?;
    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink())).await??;
    proxy.stop().await;
    Ok(())
}

/// One haproxy, in the foreground, with a `mode tcp` frontend on `tcp_at`
/// and a `mode http` one on `http_at`, both to `backend`.
fn start_haproxy(dir: &Path, tcp_at: SocketAddr, http_at: SocketAddr, backend: SocketAddr) -> anyhow::Result<Child> {
    let config = format!(
        "global\n    maxconn 4096\n\n\
         defaults\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n    timeout http-keep-alive 30s\n\n\
         frontend tcp\n    mode tcp\n    bind {tcp_at}\n    default_backend tcp\n\n\
         backend tcp\n    mode tcp\n    server backend {backend}\n\n\
         frontend http\n    mode http\n    bind {http_at}\n    default_backend http\n\n\
         backend http\n    mode http\n    server backend {backend}\n"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config)?;
    let log = std::fs::File::create(dir.join("haproxy.log"))?;
    Command::new("haproxy")
        .arg("-f")
        .arg(&path)
        .arg("-db")
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting haproxy")
}

fn haproxy_log(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default();
    format!("haproxy did not start; its output:\n{log}")
}

/// Waits until `address` accepts connections; fails if `child` exits first.
async fn wait_listening(child: &mut Child, address: SocketAddr, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect(address).await.is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited ({status}) before listening on {address}");
        }
        ensure!(Instant::now() < deadline, "{what} did not listen on {address} within {START_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

struct Measured {
    requests: usize,
    per_second: f64,
    p50_us: u64,
    p99_us: u64,
}

/// Latencies of requests to one target, and the time they took in all.
#[derive(Default)]
struct Samples {
    latencies_us: Vec<u64>,
    elapsed: Duration,
}

impl Samples {
    fn add(&mut self, more: Samples) {
        self.latencies_us.extend(more.latencies_us);
        self.elapsed += more.elapsed;
    }

    fn measured(mut self) -> Measured {
        self.latencies_us.sort_unstable();
        let sorted = &self.latencies_us;
        Measured {
            requests: sorted.len(),
            per_second: sorted.len() as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
            p50_us: percentile(sorted, 0.50),
            p99_us: percentile(sorted, 0.99),
        }
    }
}

/// `options.connections` clients against `address` for `duration` (or
/// until the request budget is spent), timing every request.
async fn load(address: SocketAddr, options: Options, duration: Duration) -> anyhow::Result<Samples> {
    let started = Instant::now();
    let deadline = started + duration;
    let budget = options.requests / options.connections as u64;
    let clients: Vec<_> = (0..options.connections).map(|_| tokio::spawn(client(address, deadline, budget))).collect();
    let mut latencies_us = Vec::new();
    for client in clients {
        latencies_us.extend(client.await??);
    }
    Ok(Samples { latencies_us, elapsed: started.elapsed() })
}

/// One keep-alive connection sending GETs back to back; their latencies in µs.
async fn client(address: SocketAddr, deadline: Instant, budget: u64) -> anyhow::Result<Vec<u64>> {
    let stream = TcpStream::connect(address).await.with_context(|| format!("connecting to {address}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let host = address.to_string();
    let mut latencies_us = Vec::new();
    while (latencies_us.len() as u64) < budget && Instant::now() < deadline {
        let request =
            hyper::Request::get("/").header(hyper::header::HOST, host.as_str()).body(Empty::<&'static [u8]>::new())?;
        let began = Instant::now();
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        ensure!(status == hyper::StatusCode::OK, "{address} answered {status}");
        latencies_us.push(u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    drop(sender);
    connection.await??;
    Ok(latencies_us)
}
