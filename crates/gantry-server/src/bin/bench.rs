//! `bench`: Gantry's source of truth against etcd on this machine, side by
//! side in one run: durable writes (1 and 64 clients, 256 B values) and
//! watch fan-out (1,000 watchers of one prefix, one write).
//!
//! It starts its own etcd (Debian's etcd-server) and two Gantry servers on
//! loopback ports — one on the embedded store, one on that etcd — each in a
//! process of its own, as etcd is, and drives them through the HTTP API as
//! users do. Rows for the store API called in this process, without HTTP,
//! show what the API layer costs. Every loop is bounded in count and time.
//!
//! Run: `cargo run --release -p gantry-server --bin bench [-- --seconds 3 --watchers 1000 --rounds 200]`

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use gantry_client::{Client, WatchItem};
use gantry_store::local_etcd::LocalEtcd;
use gantry_store::{Bytes, EmbeddedConfig, EtcdConfig, Store, StoreConfig};

/// The value every put writes (issue 4: 256 B).
/// Fan-out rounds run before the timed ones.
const WARM_UP_ROUNDS: usize = 5;
const VALUE_BYTES: usize = 256;
/// Most operations one measurement makes, whatever its duration.
const MAX_OPS: u64 = 500_000;
/// Longest wait for every watcher to see one write.
const FAN_OUT_TIMEOUT: Duration = Duration::from_secs(10);

type Op = Box<dyn Fn(usize, u64) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send + Sync>;

struct Options {
    seconds: f64,
    watchers: usize,
    rounds: usize,
}

/// The hidden argument that makes this binary serve instead of measure.
const SERVE: &str = "__serve";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Runtime::new()?;
    if args.first().map(String::as_str) == Some(SERVE) {
        return runtime.block_on(serve_child(&args[1..]));
    }
    runtime.block_on(run(parse_args(args)?))
}

/// The server process: `__serve embedded DIR` or `__serve etcd URL`; prints its URL.
async fn serve_child(args: &[String]) -> anyhow::Result<()> {
    let config = match args {
        [kind, dir] if kind == "embedded" => StoreConfig::Embedded(EmbeddedConfig::in_dir(dir)),
        [kind, endpoint] if kind == "etcd" => StoreConfig::Etcd(EtcdConfig::new([endpoint.clone()])),
        _ => bail!("usage: bench {SERVE} embedded DIR | etcd URL"),
    };
    let store = Store::open(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("http://{}", listener.local_addr()?);
    gantry_server::serve(listener, store, std::future::pending()).await?;
    Ok(())
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

async fn run(options: Options) -> anyhow::Result<()> {
    let duration = Duration::from_secs_f64(options.seconds);
    let etcd = LocalEtcd::start().await.context("starting etcd (apt-get install etcd-server)")?;
    let dir = std::env::temp_dir().join(format!("gantry-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let server_dir = dir.join("server");
    let store_dir = dir.join("store");
    std::fs::create_dir_all(&server_dir)?;
    std::fs::create_dir_all(&store_dir)?;
    let embedded_process = ServerProcess::start("embedded", &server_dir.to_string_lossy())?;
    let etcd_process = ServerProcess::start("etcd", etcd.endpoint())?;
    let (server_embedded, server_etcd) = (embedded_process.url.clone(), etcd_process.url.clone());
    let embedded = Store::open(StoreConfig::Embedded(EmbeddedConfig::in_dir(&store_dir))).await?;
    let on_etcd = Store::open(StoreConfig::Etcd(EtcdConfig::new([etcd.endpoint().to_string()]))).await?;
    let direct = etcd_client::Client::connect([etcd.endpoint()], None).await?;
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);

    println!(
        "gantry bench: {VALUE_BYTES} B values, {} s per measurement, every write fsynced before it is acknowledged; {} cores",
        options.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("etcd {} | gantry server (embedded) {} | gantry server (on etcd) {}", etcd.endpoint(), server_embedded, server_etcd);
    println!();
    println!("{:<36} {:>7} {:>10} {:>8} {:>8} {:>9}", "durable writes", "clients", "writes/s", "p50 ms", "p99 ms", "vs etcd");
    for clients in [1usize, 64] {
        let http = reqwest::Client::builder().pool_max_idle_per_host(clients + 8).tcp_nodelay(true).build()?;
        let rows: Vec<(&str, Op)> = vec![
            ("gantry server, embedded (HTTP)", http_put(&server_embedded, "he", clients, &value).await?),
            ("gantry server, on etcd (HTTP)", http_put(&server_etcd, "hg", clients, &value).await?),
            ("gantry store API, embedded", store_put(&embedded, "se", &value)),
            ("gantry store API, on etcd", store_put(&on_etcd, "sg", &value)),
            ("etcd direct (gRPC, etcd-client)", etcd_put(&direct, &value)),
        ];
        let mut results = Vec::new();
        // The API's own cost: a request that writes nothing.
        let health = measure(clients, duration, http_get(&http, &format!("{server_embedded}/v1/health"))).await?;
        for (name, op) in rows {
            results.push((name, measure(clients, duration, op).await.with_context(|| name.to_string())?));
        }
        let etcd_rate = results.last().map_or(1.0, |(_, m)| m.per_second);
        println!(
            "{:<36} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>9}",
            "(gantry server, GET /v1/health)",
            clients,
            health.per_second,
            ms(health.p50),
            ms(health.p99),
            "-"
        );
        for (name, m) in &results {
            println!(
                "{:<36} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>8.2}x",
                name,
                clients,
                m.per_second,
                ms(m.p50),
                ms(m.p99),
                m.per_second / etcd_rate
            );
        }
    }

    println!();
    println!(
        "{:<36} {:>8} {:>7} {:>8} {:>8} {:>9}",
        "watch fan-out (write to all notified)", "watchers", "rounds", "p50 ms", "p99 ms", "vs etcd"
    );
    let mut fan = Vec::new();
    fan.push(("gantry server, embedded (SSE)", sse_fan_out(&server_embedded, &options).await?));
    fan.push(("gantry server, on etcd (SSE)", sse_fan_out(&server_etcd, &options).await?));
    fan.push(("gantry store API, embedded", store_fan_out(&embedded, &options).await?));
    fan.push(("etcd direct (gRPC watch)", etcd_fan_out(etcd.endpoint(), &direct, &options).await?));
    let etcd_p99 = fan.last().map_or(Duration::ZERO, |(_, (_, p99))| *p99);
    for (name, (p50, p99)) in &fan {
        println!(
            "{:<36} {:>8} {:>7} {:>8.2} {:>8.2} {:>8.2}x",
            name,
            options.watchers,
            options.rounds,
            ms(*p50),
            ms(*p99),
            p99.as_secs_f64() / etcd_p99.as_secs_f64().max(f64::EPSILON)
        );
    }
    println!();
    println!("writes: ratio of writes/s to etcd direct (higher is better); fan-out: ratio of p99 to etcd's (lower is better).");
    println!("fan-out is timed from just before the write is sent until the last watcher has the event; every");
    println!("network watcher has its own connection, as separate agents do; the store API row has no network.");

    drop((embedded, embedded_process, etcd_process));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn parse_args(args: Vec<String>) -> anyhow::Result<Options> {
    let mut options = Options { seconds: 3.0, watchers: 1000, rounds: 200 };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--seconds" => options.seconds = value("--seconds")?.parse().context("--seconds takes a number")?,
            "--watchers" => options.watchers = value("--watchers")?.parse().context("--watchers takes a number")?,
            "--rounds" => options.rounds = value("--rounds")?.parse().context("--rounds takes a number")?,
            "--help" | "-h" => {
                println!("usage: bench [--seconds N (3)] [--watchers N (1000)] [--rounds N (200)]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; see --help"),
        }
    }
    if !(0.1..=600.0).contains(&options.seconds) || options.watchers == 0 || options.watchers > 10_000 || options.rounds == 0 || options.rounds > 10_000 {
        bail!("--seconds 0.1..600, --watchers 1..10000, --rounds 1..10000");
    }
    Ok(options)
}

/// PUTs through one keep-alive HTTP/1.1 connection per client (raw hyper:
/// the lightest load generator, as etcd-client is for etcd).
async fn http_put(server: &str, tag: &'static str, clients: usize, value: &Bytes) -> anyhow::Result<Op> {
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
    Ok(Box::new(move |client, i| {
        let (senders, authority, value) = (senders.clone(), authority.clone(), value.clone());
        Box::pin(async move {
            let request = hyper::Request::put(format!("/v1/kv/bench/{tag}/{client}/{i}"))
                .header(hyper::header::HOST, authority.as_str())
                .body(http_body_util::Full::new(value))?;
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
}

/// `clients` concurrent loops of `op` for `duration` (or [`MAX_OPS`] in all), timing each call.
async fn measure(clients: usize, duration: Duration, op: Op) -> anyhow::Result<Measured> {
    let op = std::sync::Arc::new(op);
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
    latencies.sort_unstable();
    Ok(Measured {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
    })
}

/// Times rounds of one write until `expected` notifications of it arrived on `seen`.
async fn time_rounds<W, Fut>(
    options: &Options,
    seen: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    mut write: W,
) -> anyhow::Result<(Duration, Duration)>
where
    W: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut times = Vec::with_capacity(options.rounds);
    // The first rounds wake a thousand fresh tasks and connections for the
    // first time; they are not timed.
    for round in 0..WARM_UP_ROUNDS + options.rounds {
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
    times.sort_unstable();
    Ok((percentile(&times, 0.50), percentile(&times, 0.99)))
}

/// `options.watchers` SSE watchers of one prefix on a Gantry server.
async fn sse_fan_out(server: &str, options: &Options) -> anyhow::Result<(Duration, Duration)> {
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
    let writer = Client::new(server);
    let result = time_rounds(options, &mut seen, |round| {
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

/// The store's own fan-out, in this process: what the engine costs without the network.
async fn store_fan_out(store: &Store, options: &Options) -> anyhow::Result<(Duration, Duration)> {
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
    let result = time_rounds(options, &mut seen, |round| {
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

/// The same with etcd's own watches, one client connection per watcher as
/// for the Gantry rows (separate agents each have their own).
async fn etcd_fan_out(endpoint: &str, direct: &etcd_client::Client, options: &Options) -> anyhow::Result<(Duration, Duration)> {
    let prefix = format!("fan-direct/{}/", std::process::id());
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut tasks = Vec::with_capacity(options.watchers);
    for _ in 0..options.watchers {
        let mut watch_client = etcd_client::Client::connect([endpoint], None).await?.watch_client();
        let mut stream = watch_client
            .watch(prefix.clone(), Some(etcd_client::WatchOptions::new().with_prefix()))
            .await?;
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let _keep = watch_client;
            while let Some(Ok(response)) = stream.next().await {
                for event in response.events() {
                    let value = event.kv().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()).unwrap_or_default();
                    if tx.send((value, Instant::now())).is_err() {
                        return;
                    }
                }
            }
        }));
    }
    drop(tx);
    let kv = direct.kv_client();
    let result = time_rounds(options, &mut seen, |round| {
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
