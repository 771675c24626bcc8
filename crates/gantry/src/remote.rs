//! `gantry server` and the commands that talk to it: machine:*, service:hosts,
//! service:on, lookup, kv:*, watch.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use gantry_api::Instance;
use gantry_client::{Client, ClientError, PutOptions, WatchItem};
use gantry_store::{EmbeddedConfig, EtcdConfig, Store, StoreConfig};

use crate::BadInput;

/// Where the client finds the server.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The gantry server's URL
    #[arg(long = "server", env = "GANTRY_SERVER", default_value = gantry_api::DEFAULT_SERVER, value_name = "URL")]
    pub url: String,
    /// Print JSON for scripts instead of text for people.
    #[arg(long)]
    pub json: bool,
}

/// `gantry server`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port, printed at start)
    #[arg(long, default_value = "127.0.0.1:7400", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Directory of the embedded store
    #[arg(long, default_value = ".gantry/server", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// `embedded` (one crash-safe file in --data-dir) or `etcd://HOST:PORT[,HOST:PORT...]`
    #[arg(long, default_value = "embedded", value_name = "STORE")]
    pub store: String,
    /// HTTP event loops, each on a thread of its own (one serves about 35k
    /// requests/s on one core; more split a watch fan-out's writes)
    #[arg(long, value_name = "N", default_value_t = gantry_server::DEFAULT_EVENT_LOOPS as u16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: u16,
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = if args.store == "embedded" {
        StoreConfig::Embedded(EmbeddedConfig::in_dir(&args.data_dir))
    } else if let Some(etcd) = EtcdConfig::from_url(&args.store) {
        StoreConfig::Etcd(etcd)
    } else {
        return Err(BadInput(format!(
            "error: unknown store {:?}\n = help: use --store embedded, or --store etcd://HOST:PORT[,HOST:PORT...]",
            args.store
        ))
        .into());
    };
    let described = match &config {
        StoreConfig::Embedded(_) => format!("embedded in {}", args.data_dir.display()),
        StoreConfig::Etcd(_) => args.store.clone(),
    };
    runtime()?.block_on(async move {
        if matches!(config, StoreConfig::Embedded(_)) {
            std::fs::create_dir_all(&args.data_dir)
                .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
        }
        let store = Store::open(config).await.with_context(|| format!("opening the store ({described})"))?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {} (is another gantry server running?)", args.listen))?;
        let addr = listener.local_addr()?;
        // Scripts and tests read this line to learn the port.
        println!("gantry server listening on http://{addr} (store: {described})");
        std::io::stdout().flush()?;
        gantry_server::serve_threaded(listener, store.clone(), usize::from(args.threads), shutdown_signal())
            .await
            .context("serving")?;
        store.close().await.context("closing the store")?;
        Ok(())
    })
}

pub(crate) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// Adds the "how to fix" to a client error.
pub(crate) fn explain(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Connect { .. } => anyhow::Error::new(e)
            .context("start one with `gantry server`, or point --server / GANTRY_SERVER at a running one"),
        ClientError::Api { status, .. } if (400..500).contains(&status) && status != 404 => {
            BadInput(format!("error: {e}")).into()
        }
        other => other.into(),
    }
}

pub(crate) fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// `k=v` pairs from the command line.
fn filters(pairs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    key_values(pairs, "PROPERTY=VALUE", "master=true")
}

/// `KEY=VALUE` arguments; one without `=` is bad input showing `example`.
pub(crate) fn key_values<C: FromIterator<(String, String)>>(
    items: &[String],
    form: &str,
    example: &str,
) -> anyhow::Result<C> {
    items
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| BadInput(format!("error: {p:?} is not {form}\n = help: write {example}")).into())
        })
        .collect()
}

pub fn machine_list(server: &ServerArgs) -> anyhow::Result<()> {
    let client = Client::new(&server.url);
    let listing = runtime()?.block_on(client.machines()).map_err(explain)?;
    if server.json {
        return print_json(&listing.items);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<24} {:<20} {:<16} {:>4} {:>8}  LABELS", "ID", "HOSTNAME", "ADDRESS", "CPUS", "MEMORY")?;
    for m in &listing.items {
        let labels: Vec<String> = m.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(
            out,
            "{:<24} {:<20} {:<16} {:>4} {:>7}M  {}",
            m.id,
            m.hostname,
            m.address,
            m.facts.cpu_count,
            m.facts.memory_bytes / (1024 * 1024),
            labels.join(",")
        )?;
    }
    Ok(())
}

pub fn machine_show(server: &ServerArgs, id: &str) -> anyhow::Result<()> {
    let client = Client::new(&server.url);
    match runtime()?.block_on(client.machine(id)) {
        Ok(m) => print_json(&m),
        Err(e) if e.is_not_found() => {
            Err(BadInput(format!("error: no machine {id:?}\n = help: `gantry machine:list` shows the known ones"))
                .into())
        }
        Err(e) => Err(explain(e)),
    }
}

fn print_instances(server: &ServerArgs, instances: &[Instance]) -> anyhow::Result<()> {
    if server.json {
        return print_json(instances);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<12} {:<24} {:<20} {:<22} {:<8} {:<12} PROPERTIES",
        "SERVICE", "INSTANCE", "MACHINE", "ADDRESS", "HEALTH", "FEDERATION"
    )?;
    for i in instances {
        let props: Vec<String> = i.properties.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let health = serde_json::to_value(i.health)?.as_str().unwrap_or("").to_string();
        writeln!(
            out,
            "{:<12} {:<24} {:<20} {:<22} {:<8} {:<12} {}",
            i.service,
            i.id,
            i.machine,
            format!("{}:{}", i.address, i.port),
            health,
            i.federation,
            props.join(",")
        )?;
    }
    Ok(())
}

pub fn service_hosts(server: &ServerArgs, service: &str, wheres: &[String]) -> anyhow::Result<()> {
    let client = Client::new(&server.url);
    let listing = runtime()?.block_on(client.service_instances(service, &filters(wheres)?)).map_err(explain)?;
    print_instances(server, &listing.items)
}

pub fn service_on(server: &ServerArgs, machine: &str) -> anyhow::Result<()> {
    let client = Client::new(&server.url);
    let listing = runtime()?.block_on(client.machine_instances(machine)).map_err(explain)?;
    print_instances(server, &listing.items)
}

pub fn lookup(server: &ServerArgs, service: &str, wheres: &[String]) -> anyhow::Result<()> {
    let client = Client::new(&server.url);
    match runtime()?.block_on(client.lookup(service, &filters(wheres)?)) {
        Ok(i) if server.json => print_json(&i),
        Ok(i) => {
            println!("{}:{}", i.address, i.port);
            Ok(())
        }
        Err(e) if e.is_not_found() => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        Err(e) => Err(explain(e)),
    }
}

pub fn kv_get(server: &ServerArgs, key: &str) -> anyhow::Result<()> {
    let client = Client::new(&server.url);
    match runtime()?.block_on(client.kv_get(key)).map_err(explain)? {
        Some(entry) if server.json => print_json(&entry),
        Some(entry) => {
            let mut out = std::io::stdout().lock();
            out.write_all(entry.value.as_bytes())?;
            if !entry.value.ends_with('\n') {
                out.write_all(b"\n")?;
            }
            Ok(())
        }
        None => {
            eprintln!("error: no key {key:?}");
            std::process::exit(1);
        }
    }
}

pub fn kv_put(server: &ServerArgs, key: &str, value: &str, cas: Option<u64>) -> anyhow::Result<()> {
    let client = Client::new(&server.url);
    let result =
        runtime()?.block_on(client.kv_put(key, value, PutOptions { cas, lease: None })).map_err(|e| {
            match e.code() {
                Some(gantry_api::ErrorCode::CasFailed) => {
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
                _ => explain(e),
            }
        })?;
    if server.json {
        print_json(&result)?;
    }
    Ok(())
}

pub fn kv_del(server: &ServerArgs, key: &str) -> anyhow::Result<()> {
    let client = Client::new(&server.url);
    let deleted = runtime()?.block_on(client.kv_delete(key)).map_err(explain)?;
    if server.json {
        print_json(&deleted)?;
    }
    Ok(())
}

/// Follows a prefix, one JSON object per line; reconnects after a
/// disconnect and resumes exactly after the last event printed.
pub fn watch(server: &ServerArgs, prefix: &str, from: u64) -> anyhow::Result<()> {
    let client = Client::new(&server.url);
    runtime()?.block_on(async move {
        let mut last_id: Option<String> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            let stream = match client.watch(prefix, from, last_id.as_deref()).await {
                Ok(s) => s,
                Err(e @ ClientError::Connect { .. }) if last_id.is_some() => {
                    eprintln!("gantry watch: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                Err(e) => return Err(explain(e)),
            };
            backoff = Duration::from_millis(100);
            futures::pin_mut!(stream);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(WatchItem::Event { id, event }) => {
                        let mut out = std::io::stdout().lock();
                        serde_json::to_writer(&mut out, &event)?;
                        writeln!(out)?;
                        out.flush()?;
                        last_id = Some(id);
                    }
                    Ok(WatchItem::Reset(reset)) => {
                        anyhow::bail!("{}; run `gantry watch` again (from now) after re-reading", reset.message);
                    }
                    Err(e) => {
                        eprintln!("gantry watch: {e}; reconnecting");
                        break;
                    }
                }
            }
            // The server closed the stream (restart, shutdown): resume.
            if last_id.is_none() {
                tokio::time::sleep(backoff).await;
            }
        }
    })
}
