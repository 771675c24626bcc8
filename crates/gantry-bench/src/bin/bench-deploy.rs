//! Benchmark of deploys (issue 17's Performance section), in parts:
//!
//! - `fetch`: one artifact (`--size-mb`, 50) fetched at once by `--fetchers`
//!   (100) agents' fetch path (`gantry_agent::agent::fetch_release`: the
//!   download through a `gantry server` process's artifact route, length and
//!   SHA-256 checked and the archive unpacked as it arrives), each with
//!   its own agent token (`acl:token:create --agent`). Their aggregate
//!   throughput is printed beside `cp` of the same file on the same disk in
//!   the same run (the physical limit), as a ratio; target >= 0.5x.
//! - `rollout`: a rolling deploy (`gantry deploy`) of `--instances` (20)
//!   `gantry agent` processes, each running a small Python HTTP service,
//!   fronted by haproxy on a `www` agent, with `max_parallel` 1, 5 and 20.
//!   Each rollout's time (the release's `created_ms` to `finished_ms`) is
//!   printed beside its floor, the waits the stanza configures:
//!   `batches * (shutdown_delay + min_healthy_time)`, batches of
//!   `max_parallel` nodes but never all of them (one keeps serving: 20 of
//!   20 move as 19, then 1), and beside the nominal floor of
//!   `ceil(instances / max_parallel)` batches
//!   (each batch is withdrawn for `shutdown_delay`, then must pass its check
//!   for `min_healthy_time`; the fetch, the process start, the first check
//!   and the reports to the server are the overhead measured); target
//!   within 1.2x. A request loop through the balancer counts the requests
//!   that failed during each rollout; target 0.
//!
//! Runs the `gantry` binary built beside this one, or `$GANTRY_BIN`
//! (`cargo build --release -p gantry -p gantry-bench` first).
//!
//! Run: `cargo run --release -p gantry-bench --bin bench-deploy [-- --only fetch|rollout --size-mb 50 --fetchers 100 --instances 20 --shutdown-delay-ms 1000 --min-healthy-ms 1000]`
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gantry_api::{AgentIdentity, ReleaseStatus, ReleaseTarget, TokenRequest};
use gantry_bench::processes::{Agent, Server, gantry_binary, until};
use gantry_bench::{ms, percentile};
use gantry_client::Client;
use gantry_spec::Update;

#[derive(Debug, Clone)]
struct Options {
    only: Option<String>,
    size_mb: u64,
    fetchers: usize,
    instances: usize,
    shutdown_delay_ms: u64,
    min_healthy_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let options = parse_args(std::env::args().skip(1).collect())?;
    let wants = |part: &str| options.only.as_deref().is_none_or(|o| o == part);
    gantry_tls::config::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new()?;
    if wants("fetch") {
        runtime.block_on(fetch(&options))?;
    }
    if wants("rollout") {
        runtime.block_on(rollout(&options))?;
    }
    Ok(())
}

fn parse_args(args: Vec<String>) -> anyhow::Result<Options> {
    let mut options = Options {
        only: None,
        size_mb: 50,
        fetchers: 100,
        instances: 20,
        shutdown_delay_ms: 1000,
        min_healthy_ms: 1000,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut number = |name: &str, min: u64| -> anyhow::Result<u64> {
            let value: u64 = args
                .next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name} takes a number"))?;
            anyhow::ensure!(value >= min, "{name} takes a number of at least {min}");
            Ok(value)
        };
        match arg.as_str() {
            "--only" => match args.next().context("--only needs a value")?.as_str() {
                part @ ("fetch" | "rollout") => options.only = Some(part.to_owned()),
                other => bail!("--only takes fetch or rollout, not {other:?}"),
            },
            "--size-mb" => options.size_mb = number("--size-mb", 1)?,
            "--fetchers" => options.fetchers = number("--fetchers", 1)? as usize,
            // Addresses 127.0.90.2 and up, one per node.
            "--instances" => options.instances = number("--instances", 1)?.min(250) as usize,
            "--shutdown-delay-ms" => options.shutdown_delay_ms = number("--shutdown-delay-ms", 0)?,
            "--min-healthy-ms" => options.min_healthy_ms = number("--min-healthy-ms", 0)?,
            "--help" | "-h" => {
                println!(
                    "usage: bench-deploy [--only fetch|rollout] [--size-mb N (50)] [--fetchers N (100)] \
                     [--instances N (20, at most 250)] [--shutdown-delay-ms MS (1000)] [--min-healthy-ms MS (1000)]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(options)
}

/// Runs `program args`, failing with its stderr unless it succeeds.
fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} {}: {}: {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// CPU seconds (user and system, with its waited-for children's) of
/// process `pid` (or `self`), from `/proc/PID/stat`.
fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    proc_cpu(pid, 4)
}

/// CPU seconds of process `pid` itself, without its children's.
fn own_cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    proc_cpu(pid, 2)
}

/// The first `fields` of utime, stime, cutime, cstime of `pid`, in seconds.
fn proc_cpu(pid: &str, fields: usize) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command's closing parenthesis start at field 3
    // (state); utime, stime, cutime, cstime are fields 14 to 17.
    let rest = stat.rsplit_once(')').context("a /proc stat line")?.1;
    let ticks: f64 = rest.split_whitespace().skip(11).take(fields).filter_map(|f| f.parse::<f64>().ok()).sum();
    Ok(ticks / clock_ticks()?)
}

/// Clock ticks per second (`getconf CLK_TCK`), asked once: the CPU
/// readings are taken around each deploy for every agent, and a process
/// per reading would be CPU of this bench's own in what they measure.
fn clock_ticks() -> anyhow::Result<f64> {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    if let Some(ticks) = TICKS.get() {
        return Ok(*ticks);
    }
    let ticks: f64 = run("getconf", &["CLK_TCK"])?.trim().parse().context("CLK_TCK")?;
    Ok(*TICKS.get_or_init(|| ticks))
}

/// The shortest of `rounds` runs of `step`.
fn best_of(rounds: usize, mut step: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let start = Instant::now();
        step()?;
        best = best.min(start.elapsed());
    }
    Ok(best)
}

/// MB/s of `bytes` moved in `took`.
fn rate(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

/// An agent token of machine `machine`, which may run `services`.
async fn agent_token(client: &Client, machine: &str, services: &[&str]) -> anyhow::Result<String> {
    let request = TokenRequest {
        name: format!("bench-{machine}"),
        policies: Vec::new(),
        agent: Some(AgentIdentity {
            machine: machine.to_owned(),
            federation: gantry_api::DEFAULT_FEDERATION.to_owned(),
            services: services.iter().map(|s| (*s).to_owned()).collect(),
        }),
        ttl_secs: None,
    };
    Ok(client.create_token(&request).await?.secret)
}

/// Part 1: one artifact fetched by many agents at once, against `cp`.
async fn fetch(options: &Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let work = dir.path();
    let size = options.size_mb * 1_000_000;
    // Incompressible bytes: nothing on the way may shrink them.
    let source = work.join("src/blob");
    std::fs::create_dir_all(&source)?;
    let mut random = std::fs::File::open("/dev/urandom")?.take(size);
    let mut data = std::fs::File::create(source.join("data"))?;
    std::io::copy(&mut random, &mut data)?;
    data.sync_all()?;
    drop(data);
    let archive = work.join("artifact.tar");
    let src = work.join("src");
    run("tar", &["--format=gnu", "-C", &src.to_string_lossy(), "-cf", &archive.to_string_lossy(), "blob"])?;
    let sha = run("sha256sum", &[&archive.to_string_lossy()])?;
    let sha = sha.split_whitespace().next().context("sha256sum's answer")?.to_owned();
    let archive_size = std::fs::metadata(&archive)?.len();

    // The reference: `cp` of the same file on this disk, best of 5; and
    // the work an agent's fetch must do besides, by coreutils: hash it,
    // unpack it.
    let file = archive.to_string_lossy().into_owned();
    let copy = work.join("copy").to_string_lossy().into_owned();
    let cp = best_of(5, || {
        run("cp", &[&file, &copy])?;
        Ok(std::fs::remove_file(&copy)?)
    })?;
    let cp_rate = rate(archive_size, cp);
    let unpacked = work.join("unpacked");
    let tools = best_of(5, || {
        std::fs::create_dir_all(&unpacked)?;
        run("cp", &[&file, &copy])?;
        run("sha256sum", &[&copy])?;
        run("tar", &["-xf", &copy, "-C", &unpacked.to_string_lossy()])?;
        std::fs::remove_file(&copy)?;
        Ok(std::fs::remove_dir_all(&unpacked)?)
    })?;
    let tools_rate = rate(archive_size, tools);
    // And the same bytes as the fetchers write: the file copied once per
    // fetcher, one `cp` per core at a time (page cache and writeback
    // included, as for the fetchers), each copy kept until the end.
    let copies = work.join("copies");
    std::fs::create_dir_all(&copies)?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..cores)
            .map(|core| {
                let (file, copies) = (&file, &copies);
                scope.spawn(move || -> anyhow::Result<()> {
                    for i in (core..options.fetchers).step_by(cores) {
                        run("cp", &[file, &copies.join(format!("copy-{i:03}")).to_string_lossy()])?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().map_err(|_| anyhow::anyhow!("a cp worker panicked"))?)
    })?;
    let cp_all = started.elapsed();
    std::fs::remove_dir_all(&copies)?;
    let cp_all_rate = rate(archive_size * options.fetchers as u64, cp_all);

    let server = Server::start(&work.join("server"), "embedded")?;
    let client = server.client();
    client.upload_artifact("blob", &sha, std::fs::read(&archive)?).await.context("uploading the artifact")?;
    let target = ReleaseTarget {
        service: "blob".to_owned(),
        version: 1,
        sha256: sha.clone(),
        size: archive_size,
        shutdown_delay_ms: 0,
        min_healthy_ms: 0,
        healthy_deadline_ms: 0,
    };
    // Who may not: an agent whose machine runs no `blob`.
    let stranger = Client::new(&server.url).with_token(&agent_token(&client, "stranger", &[]).await?);
    match gantry_agent::agent::fetch_release(&stranger, &work.join("stranger"), &target).await {
        Err(why) if why.contains("may not read") => println!("an agent that runs no blob is refused: {why}"),
        other => bail!("an agent that does not run blob was not refused: {other:?}"),
    }

    let mut clients = Vec::with_capacity(options.fetchers);
    for i in 0..options.fetchers {
        let token = agent_token(&client, &format!("fetch-{i:03}"), &["blob"]).await?;
        clients.push(Client::new(&server.url).with_token(&token));
    }
    println!(
        "fetch: one artifact (a {:.1} MB tar of random bytes) fetched at once by {} agents' fetch path \
         (gantry_agent::agent::fetch_release: GET /v1/artifacts/blob/SHA from a `gantry server` process with an \
         agent token each, unpacked as it arrives, SHA-256 and length checked) into {}; against `cp` of the \
         same file on the same disk (best of 5)",
        archive_size as f64 / 1e6,
        options.fetchers,
        work.display()
    );
    let server_pid = server.pid().to_string();
    let cpu_before = (cpu_seconds(&server_pid)?, cpu_seconds("self")?);
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let (target, data_dir) = (target.clone(), work.join(format!("fetch-{i:03}")));
            tokio::spawn(async move {
                let started = Instant::now();
                let dir = gantry_agent::agent::fetch_release(&client, &data_dir, &target).await;
                (dir, started.elapsed())
            })
        })
        .collect();
    let mut times = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (dir, took) = task.await?;
        let dir = dir.map_err(|e| anyhow::anyhow!("a fetch failed: {e}"))?;
        let got = std::fs::metadata(dir.join("blob/data"))?.len();
        anyhow::ensure!(got == size, "{} holds {got} bytes, not {size}", dir.display());
        times.push(took);
    }
    let wall = start.elapsed();
    let (server_cpu, fetchers_cpu) = (cpu_seconds(&server_pid)? - cpu_before.0, cpu_seconds("self")? - cpu_before.1);
    drop(server);
    times.sort();
    let total = archive_size * options.fetchers as u64;
    let aggregate = rate(total, wall);
    println!(
        "{:>9} {:>9} {:>9} {:>10} {:>10} {:>10} {:>9}",
        "fetchers", "GB", "wall s", "MB/s", "p50 ms", "max ms", "x cp"
    );
    println!(
        "{:>9} {:>9.2} {:>9.2} {aggregate:>10.0} {:>10.0} {:>10.0} {:>9.2}",
        options.fetchers,
        total as f64 / 1e9,
        wall.as_secs_f64(),
        ms(percentile(&times, 0.5)),
        ms(*times.last().context("a fetch")?),
        aggregate / cp_rate
    );
    let cp_all_name = format!("cp x{}", options.fetchers);
    let total_gb = total as f64 / 1e9;
    for (name, gb, took, rate) in [
        ("cp", archive_size as f64 / 1e9, cp, cp_rate),
        (cp_all_name.as_str(), total_gb, cp_all, cp_all_rate),
        ("cp+sha+tar", archive_size as f64 / 1e9, tools, tools_rate),
    ] {
        println!(
            "{name:>10} {gb:>8.2} {:>9.3} {rate:>10.0} {:>10} {:>10} {:>9.2}",
            took.as_secs_f64(),
            "-",
            "-",
            rate / cp_rate
        );
    }
    println!(
        "{cp_all_name}: the file copied once per fetcher, {cores} cp at a time, the same {total_gb:.2} GB written \
         as the fetchers write: the fetchers' aggregate is {:.2}x of it",
        aggregate / cp_all_rate
    );
    println!(
        "cp+sha+tar: one copy, `sha256sum` and `tar -xf` of it, one after another (the agent's work done by \
         coreutils, one fetch at a time): the fetchers' aggregate is {:.2}x of it",
        aggregate / tools_rate
    );
    println!(
        "CPU during the fetches: server {server_cpu:.1} s, fetchers {fetchers_cpu:.1} s (this process) in {:.1} s \
         of wall time on {} cores",
        wall.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let (ratio, ratio_all) = (aggregate / cp_rate, aggregate / cp_all_rate);
    let verdict = |r: f64| if r >= 0.5 { "met" } else { "NOT met" };
    println!(
        "aggregate {ratio_all:.2}x of {cp_all_name} (the same bytes copied): target >= 0.5x {}; {ratio:.2}x of one \
         cp of the file (a {:.0} MB copy that never leaves the page cache): {}\n",
        verdict(ratio_all),
        archive_size as f64 / 1e6,
        verdict(ratio)
    );
    Ok(())
}

/// The service each node runs (the deploy tests' own): `VERSION HOST`
/// on every path.
const APP: &str = include_str!("../../../gantry/tests/fixtures/release_app.py");

/// The balancer's port on `127.0.90.1`, and each api node's on its own address.
const LOCAL_PORT: u16 = 18900;
const API_PORT: u16 = 18901;
const NET: &str = "127.0.90";

/// The repository: `api` (from its artifact `dist/api`), `www` requiring it
/// through the balancer. Rewritten before each deploy with its stanza.
fn write_repo(repo: &Path, options: &Options, max_parallel: usize, version: &str) -> anyhow::Result<()> {
    let api = serde_json::json!({
        "id": "api",
        "command": ["python3", "dist/api/app.py"],
        "artifact": {"path": "dist/api"},
        "provides": {"API_URL": "http://{HOST}:{PORT}"},
        "local_port": LOCAL_PORT,
        "environment": {"PORT": API_PORT},
        "shutdown_delay": format!("{}ms", options.shutdown_delay_ms),
        "update": {
            "max_parallel": max_parallel,
            "min_healthy_time": format!("{}ms", options.min_healthy_ms),
            "healthy_deadline": "60s"
        },
        "check": {"type": "http", "path": "/", "interval": "200ms", "timeout": "200ms", "rise": 1, "fall": 1}
    });
    let files = [
        (
            "nodes.json",
            r#"{"__base__": {"run_list": []}, "api": {"run_list": ["recipe[services::api]"]}, "www": {"run_list": ["recipe[services::www]"]}}"#
                .to_owned(),
        ),
        ("data_bags/service/api.json", serde_json::to_string_pretty(&api)?),
        ("data_bags/service/www.json", r#"{"id": "www", "command": true, "requires": {"API": "{API_URL}"}}"#.to_owned()),
        ("dist/api/app.py", APP.to_owned()),
        ("dist/api/VERSION", format!("{version}\n")),
    ];
    for (path, text) in files {
        let path = repo.join(path);
        std::fs::create_dir_all(path.parent().context("a parent")?)?;
        std::fs::write(path, text)?;
    }
    Ok(())
}

/// One HTTP/1.0 GET of `/` at `address`: the body when it answered 200.
fn get(address: &str) -> Option<String> {
    request(address).ok()
}

/// One HTTP/1.0 GET of `/` at `address`: the body of a 200, or what went wrong.
fn request(address: &str) -> Result<String, String> {
    let failed = |what: &'static str| move |e: std::io::Error| format!("{what}: {e}");
    let socket = address.parse().map_err(|e| format!("{address}: {e}"))?;
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(1)).map_err(failed("connect"))?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).map_err(failed("socket"))?;
    stream.write_all(format!("GET / HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes()).map_err(failed("send"))?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(failed("read"))?;
    let (head, body) = answer.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP answer: {answer:?}"))?;
    match head.split_whitespace().nth(1) {
        Some("200") => Ok(body.trim().to_owned()),
        _ => Err(head.lines().next().unwrap_or_default().to_owned()),
    }
}

/// What a request loop saw.
struct Seen {
    ok: u64,
    failed: u64,
    /// The first few failures: seconds since the loop started, and why.
    failures: Vec<(f64, String)>,
}

/// Requests through the balancer, one after another, until stopped (at
/// most `limit`).
fn request_loop(stop: Arc<AtomicBool>, limit: Duration) -> std::thread::JoinHandle<Seen> {
    let frontend = format!("{NET}.1:{LOCAL_PORT}");
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut seen = Seen { ok: 0, failed: 0, failures: Vec::new() };
        while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
            match request(&frontend) {
                Ok(_) => seen.ok += 1,
                Err(why) => {
                    seen.failed += 1;
                    if seen.failures.len() < 5 {
                        seen.failures.push((start.elapsed().as_secs_f64(), why));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        seen
    })
}

/// `gantry ARGS --server URL` with the management token; its stdout.
fn gantry(server: &Server, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(gantry_binary()?)
        .env("GANTRY_TOKEN", &server.token)
        .env("NO_COLOR", "1")
        .args(args)
        .args(["--server", &server.url])
        .output()?;
    if !out.status.success() {
        bail!(
            "gantry {}: {}: {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Machine-wide and per-process CPU seconds, for a deploy's share of each.
struct Cpu {
    cores: usize,
    machine: f64,
    server: f64,
    agents: f64,
}

impl Cpu {
    fn read(server: u32, agents: &[u32]) -> anyhow::Result<Cpu> {
        // The first line of /proc/stat: jiffies per state since boot;
        // busy is all but idle and iowait.
        let stat = std::fs::read_to_string("/proc/stat")?;
        let fields: Vec<f64> = stat
            .lines()
            .next()
            .context("/proc/stat")?
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let idle = fields.get(3).copied().unwrap_or(0.0) + fields.get(4).copied().unwrap_or(0.0);
        let per_second = clock_ticks()?;
        let mut agents_cpu = 0.0;
        for pid in agents {
            agents_cpu += own_cpu_seconds(&pid.to_string())?;
        }
        Ok(Cpu {
            cores: std::thread::available_parallelism().map_or(1, |c| c.get()),
            machine: (fields.iter().sum::<f64>() - idle) / per_second,
            server: cpu_seconds(&server.to_string())?,
            agents: agents_cpu,
        })
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            cores: self.cores,
            machine: self.machine - before.machine,
            server: self.server - before.server,
            agents: self.agents - before.agents,
        }
    }
}

/// The service's own start over a rollout's batches of `instances` at
/// `max_parallel`: [`app_starts`] of each batch's size, summed.
fn batches_start(repo: &Path, instances: usize, max_parallel: usize) -> anyhow::Result<Duration> {
    let at_once = at_once(instances, max_parallel);
    let (full, rest) = (instances / at_once, instances % at_once);
    let mut total = app_starts(repo, at_once)? * u32::try_from(full)?;
    if rest > 0 {
        total += app_starts(repo, rest)?;
    }
    Ok(total)
}

/// `count` copies of the service's app (from the repository, on ports
/// of their own) started at once, without gantry: how long until the last
/// one listens. The part of a batch's time that is the app's own start on
/// a machine shared by every node of the bench.
fn app_starts(repo: &Path, count: usize) -> anyhow::Result<Duration> {
    const BASE_PORT: u16 = 18700;
    let started = Instant::now();
    let mut apps = Vec::with_capacity(count);
    for i in 0..count {
        let port = BASE_PORT + u16::try_from(i)?;
        let app = Command::new("python3")
            .arg("dist/api/app.py")
            .current_dir(repo)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        apps.push((port, app));
    }
    let mut waiting: Vec<u16> = apps.iter().map(|(port, _)| *port).collect();
    while !waiting.is_empty() && started.elapsed() < Duration::from_secs(30) {
        waiting.retain(|port| TcpStream::connect(("127.0.0.1", *port)).is_err());
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = started.elapsed();
    for (_, mut app) in apps {
        let _ = app.kill();
        let _ = app.wait();
    }
    anyhow::ensure!(waiting.is_empty(), "the app did not listen on ports {waiting:?} within 30 s");
    Ok(took)
}

/// A rollout's floor: its batches, each waiting `wait_ms` (the
/// shutdown_delay and min_healthy_time), and nothing else. Batches as the server forms them:
/// `max_parallel` nodes at a time but never every node
/// ([`Update::moving_at_once`]: one keeps serving), so 20 of 20 is 19,
/// then 1.
fn floor(instances: usize, max_parallel: usize, wait_ms: u64) -> (u64, Duration) {
    let batches = instances.div_ceil(at_once(instances, max_parallel)) as u64;
    (batches, Duration::from_millis(batches * wait_ms))
}

/// How many of `instances` the server moves at once at `max_parallel`.
fn at_once(instances: usize, max_parallel: usize) -> usize {
    let update = Update { max_parallel: u32::try_from(max_parallel).unwrap_or(u32::MAX), ..Update::default() };
    update.moving_at_once(instances)
}

/// The floor if every node could leave rotation at once (`max_parallel`
/// taken as it is): what a rollout that drops requests could reach.
fn nominal_floor(instances: usize, max_parallel: usize, wait_ms: u64) -> Duration {
    Duration::from_millis(instances.div_ceil(max_parallel) as u64 * wait_ms)
}

/// Where a rollout's time beyond its waits went, from the release's
/// nodes: told to healthy less the waits (the agent's part: fetch, process
/// start, first check, report), and the rest (the release's creation to
/// the first node told, healthy nodes to the next told, the last healthy
/// to the end: the controller's part).
fn breakdown(release: &gantry_api::Release, wait_ms: u64) -> String {
    let mut agent: Vec<u64> =
        release.nodes.iter().map(|n| n.since_ms.saturating_sub(n.told_ms).saturating_sub(wait_ms)).collect();
    agent.sort();
    let total = release.finished_ms.unwrap_or(release.created_ms) - release.created_ms;
    // Time no node was switching: the controller's share.
    let mut busy = 0u64;
    let mut spans: Vec<(u64, u64)> = release.nodes.iter().map(|n| (n.told_ms, n.since_ms)).collect();
    spans.sort();
    let mut end = release.created_ms;
    for (from, to) in spans {
        busy += to.saturating_sub(from.max(end));
        end = end.max(to);
    }
    format!(
        "per node, told to healthy beyond the {wait_ms} ms of waits: p50 {} ms, max {} ms; no node switching \
         (controller, reports): {} ms of {total} ms",
        percentile(&agent, 0.5),
        agent.last().copied().unwrap_or_default(),
        total.saturating_sub(busy)
    )
}

/// Part 2 and 3: rolling deploys against their floor, requests failed.
async fn rollout(options: &Options) -> anyhow::Result<()> {
    let n = options.instances;
    let dir = tempfile::tempdir()?;
    let work = dir.path();
    let repo = work.join("repo");
    let repo_arg = repo.to_string_lossy().into_owned();
    write_repo(&repo, options, n, "repo")?;
    let server = Server::start(&work.join("server"), "embedded")?;
    gantry(&server, &["apply", "--repo", &repo_arg])?;
    let mut agents = Vec::with_capacity(n + 1);
    for i in 0..n {
        let address = format!("{NET}.{}", i + 2);
        let args = ["--group", "api", "--address", &address, "--workdir", &repo_arg, "--lease-ttl", "3s"];
        agents.push(Agent::start(&server, work, &format!("api{i:02}"), None, &args)?);
    }
    let www = format!("{NET}.1");
    agents.push(Agent::start(&server, work, "www", None, &["--group", "www", "--address", &www, "--lb", "haproxy"])?);
    let pids: Vec<u32> = agents.iter().map(Agent::pid).collect();
    let measured = measure(options, &server, &pids, &repo_arg).await;
    Agent::stop_all(agents);
    measured
}

/// The deploys of part 2 on the running nodes (the caller stops them).
async fn measure(options: &Options, server: &Server, agents: &[u32], repo_arg: &str) -> anyhow::Result<()> {
    let n = options.instances;
    let client = server.client();
    let repo = Path::new(repo_arg);
    let www = format!("{NET}.1");
    until("every api instance passes", Duration::from_secs(180), || async {
        let instances = client.service_instances("api", &[]).await?.items;
        Ok::<_, anyhow::Error>(
            (instances.len() == n && instances.iter().all(|i| i.health == gantry_api::Health::Passing)).then_some(()),
        )
    })
    .await?;
    let frontend = format!("{www}:{LOCAL_PORT}");
    until("the balancer answers", Duration::from_secs(60), || async { Ok::<_, anyhow::Error>(get(&frontend)) }).await?;
    // The nodes move from the repository onto their first release, untimed.
    write_repo(repo, options, n, "v1")?;
    gantry(server, &["deploy", "api", "-m", "first", "--repo", repo_arg])?;

    let wait = options.shutdown_delay_ms + options.min_healthy_ms;
    println!(
        "rollout: `gantry deploy` of {n} `gantry agent` nodes (a Python HTTP service each, HTTP check every \
         200 ms, rise 1) behind haproxy on a www agent; shutdown_delay {} ms, min_healthy_time {} ms; \
         floor = batches * (shutdown_delay + min_healthy_time), batches = ceil({n} / min(max_parallel, {n} - 1)) \
         (one node keeps serving); x nominal: against ceil({n} / max_parallel) batches, as if every node could \
         leave at once; rollout = the release's created_ms to finished_ms; a request loop through haproxy \
         during each deploy; app s: the service's own start, without gantry, in the same batches on this \
         machine (each batch's copies of app.py started at once until the last listens, summed over the \
         batches), and x floor+app against floor + app s",
        options.shutdown_delay_ms, options.min_healthy_ms
    );
    println!(
        "{:>12} {:>8} {:>8} {:>10} {:>10} {:>9} {:>10} {:>7} {:>12} {:>10} {:>9}",
        "max_parallel",
        "batches",
        "floor s",
        "rollout s",
        "command s",
        "x floor",
        "x nominal",
        "app s",
        "x floor+app",
        "requests",
        "failed"
    );
    let mut worst: f64 = 0.0;
    let mut worst_with_app: f64 = 0.0;
    let mut failed_total = 0;
    for (round, parallel) in [1, 5, 20].into_iter().map(|p: usize| p.min(n)).enumerate() {
        let version = round as u64 + 2;
        write_repo(repo, options, parallel, &format!("v{version}"))?;
        let app = batches_start(repo, n, parallel)?;
        let stop = Arc::new(AtomicBool::new(false));
        let load = request_loop(stop.clone(), Duration::from_secs(600));
        let cpu_before = Cpu::read(server.pid(), agents)?;
        let started = Instant::now();
        let deployed = gantry(server, &["deploy", "api", "-m", &format!("bench {parallel}"), "--repo", repo_arg]);
        let command = started.elapsed();
        let cpu = Cpu::read(server.pid(), agents)?.since(&cpu_before);
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let Seen { ok, failed, failures } = load.join().map_err(|_| anyhow::anyhow!("the request loop panicked"))?;
        for (at, why) in failures {
            eprintln!("  max_parallel {parallel}: a request failed {at:.2} s into the deploy: {why}");
        }
        deployed?;
        let history = client.release_history("api").await?;
        let release = history.items.iter().find(|r| r.version == version).context("the release")?;
        anyhow::ensure!(release.status == ReleaseStatus::Succeeded, "v{version}: {:?}", release.status);
        let took = Duration::from_millis(release.finished_ms.context("a finished release")? - release.created_ms);
        let serving = (0..n).filter(|i| {
            get(&format!("{NET}.{}:{API_PORT}", i + 2)).is_some_and(|b| b.starts_with(&format!("v{version} ")))
        });
        anyhow::ensure!(serving.count() == n, "not every node serves v{version}");
        let (batches, floor) = floor(n, parallel, wait);
        let ratio = took.as_secs_f64() / floor.as_secs_f64();
        let nominal = took.as_secs_f64() / nominal_floor(n, parallel, wait).as_secs_f64();
        let with_app = took.as_secs_f64() / (floor + app).as_secs_f64();
        worst = worst.max(ratio);
        worst_with_app = worst_with_app.max(with_app);
        failed_total += failed;
        println!(
            "{parallel:>12} {batches:>8} {:>8.1} {:>10.2} {:>10.2} {ratio:>9.2} {nominal:>10.2} {:>7.2} \
             {with_app:>12.2} {:>10} {failed:>9}",
            floor.as_secs_f64(),
            took.as_secs_f64(),
            command.as_secs_f64(),
            app.as_secs_f64(),
            ok + failed
        );
        eprintln!("  max_parallel {parallel}: {}", breakdown(release, wait));
        eprintln!(
            "  max_parallel {parallel}: CPU during the deploy: {:.1} s of {:.1} s on {} cores: server {:.1} s, \
             agents {:.1} s (their own, not the processes they run), the rest (the services' processes \
             starting and serving, haproxy, this bench's requests) {:.1} s",
            cpu.machine,
            command.as_secs_f64() * cpu.cores as f64,
            cpu.cores,
            cpu.server,
            cpu.agents,
            cpu.machine - cpu.server - cpu.agents
        );
    }
    println!(
        "worst {worst:.2}x of the floor: target <= 1.2x {} (of the floor and the service's own start: worst \
         {worst_with_app:.2}x); failed requests {failed_total}: target 0 {}\n",
        if worst <= 1.2 { "met" } else { "NOT met" },
        if failed_total == 0 { "met" } else { "NOT met" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_the_waits_of_every_batch() {
        assert_eq!(floor(20, 1, 2000), (20, Duration::from_secs(40)));
        assert_eq!(floor(20, 5, 2000), (4, Duration::from_secs(8)));
        assert_eq!(floor(20, 20, 2000), (2, Duration::from_secs(4)), "19, then the one that kept serving");
        assert_eq!(floor(20, 6, 1500), (4, Duration::from_secs(6)), "a last, partial batch waits too");
        assert_eq!(nominal_floor(20, 20, 2000), Duration::from_secs(2));
        assert_eq!(nominal_floor(20, 6, 1500), Duration::from_secs(6));
    }

    #[test]
    fn flags_are_checked() {
        let options = parse_args(["--only", "fetch", "--fetchers", "3"].map(String::from).to_vec()).unwrap();
        assert_eq!((options.only.as_deref(), options.fetchers, options.size_mb), (Some("fetch"), 3, 50));
        assert!(parse_args(vec!["--only".into(), "everything".into()]).is_err());
        assert!(parse_args(vec!["--fetchers".into(), "0".into()]).is_err());
    }

    #[test]
    fn cpu_seconds_reads_this_process() {
        let spent = cpu_seconds("self").unwrap();
        assert!(spent >= 0.0 && spent.is_finite(), "{spent}");
        let own = own_cpu_seconds("self").unwrap();
        assert!(own >= 0.0 && own <= spent, "{own} of {spent}");
    }
}
