//! The engine part (`--only engine`): the embedded engine on its own log and
//! on a redb file at a control plane's largest scale, a million keys of
//! 256 B (`--keys`). Each step runs in a child process of its own
//! (`bench __engine`), so that the memory measured is the engine's alone:
//!
//! - fill: the keys written by 16 concurrent transactions of 128 puts;
//! - open: the time to open the file (the log's replay; redb's read of its
//!   tables into the same in-memory state), then the resident memory and
//!   the peak of the process (`VmRSS`, `VmHWM`);
//! - checkpoint: `Store::checkpoint` (the log rewritten as the live state
//!   and its watch history; redb's compaction), with the file's size before
//!   and after.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use gantry_store::{Bytes, EmbeddedConfig, MAX_TXN_OPS, Store, StoreConfig, Txn};

use super::{Options, VALUE_BYTES};

/// The hidden argument that runs one step in this process.
pub const CHILD: &str = "__engine";

/// Concurrent writers while filling.
const FILL_WRITERS: u64 = 16;

/// Fills, opens and checkpoints each engine, one row each.
pub async fn rows(options: &Options, dir: &Path) -> anyhow::Result<()> {
    println!();
    println!(
        "embedded engine at {} keys of {VALUE_BYTES} B (each step a process of its own; history: the default 100,000 revisions / 256 MiB)",
        options.keys
    );
    println!(
        "{:<10} {:>8} {:>10} {:>8} {:>9} {:>9} {:>10} {:>8} {:>10}",
        "engine", "fill s", "keys/s", "file MB", "open s", "RSS MB", "peak MB", "ckpt s", "after MB"
    );
    for engine in ["log", "redb"] {
        let engine_dir = dir.join(format!("engine-{engine}"));
        std::fs::create_dir_all(&engine_dir)?;
        let dir_arg = engine_dir.to_string_lossy().to_string();
        let fill = run_child(&["fill", engine, &dir_arg, &options.keys.to_string()])?;
        let opened = run_child(&["open", engine, &dir_arg, &options.keys.to_string()])?;
        let fill_secs = *fill.first().context("the fill step printed nothing")?;
        let [open_secs, rss_kb, peak_kb, before, checkpoint_secs, after] = opened[..] else {
            bail!("the open step printed {opened:?}");
        };
        let mb = |bytes: f64| bytes / 1e6;
        println!(
            "{:<10} {:>8.1} {:>10.0} {:>8.0} {:>9.2} {:>9.0} {:>10.0} {:>8.2} {:>10.0}",
            engine,
            fill_secs,
            options.keys as f64 / fill_secs,
            mb(before),
            open_secs,
            rss_kb / 1e3,
            peak_kb / 1e3,
            checkpoint_secs,
            mb(after)
        );
        std::fs::remove_dir_all(&engine_dir)?;
    }
    println!("RSS: the process after opening (every key and the watch history in memory, for both engines);");
    println!(
        "peak: its high-water mark while opening. ckpt: Store::checkpoint (log: rewritten as the live state; redb: compact)."
    );
    Ok(())
}

/// `bench __engine STEP ENGINE DIR KEYS`: prints the step's numbers on one
/// line.
pub async fn child(args: &[String]) -> anyhow::Result<()> {
    let [step, engine, dir, keys] = args else {
        bail!("usage: bench {CHILD} fill|open|puts log|redb DIR KEYS");
    };
    let keys: u64 = keys.parse().context("KEYS")?;
    let config = match engine.as_str() {
        "log" => StoreConfig::Embedded(EmbeddedConfig::in_dir(dir)),
        "redb" => StoreConfig::Redb(EmbeddedConfig::redb_in_dir(dir)),
        other => bail!("unknown engine {other:?}"),
    };
    let file = match &config {
        StoreConfig::Embedded(config) | StoreConfig::Redb(config) => config.path.clone(),
        StoreConfig::Etcd(_) => unreachable!("an embedded engine"),
    };
    match step.as_str() {
        "fill" => {
            let store = Store::open(config).await?;
            let started = Instant::now();
            fill(&store, keys).await?;
            let elapsed = started.elapsed();
            store.close().await?;
            println!("{}", elapsed.as_secs_f64());
        }
        "open" => {
            let started = Instant::now();
            let store = Store::open(config).await?;
            let open = started.elapsed();
            let (rss, peak) = (status_kb("VmRSS")?, status_kb("VmHWM")?);
            let found = store.range("bench/", Some(1)).await?;
            if found.kvs.is_empty() || store.get(&key(keys - 1)).await?.kv.is_none() {
                bail!("the {engine} store lost its keys");
            }
            let before = std::fs::metadata(&file)?.len();
            let started = Instant::now();
            store.checkpoint().await?;
            let checkpoint = started.elapsed();
            let after = std::fs::metadata(&file)?.len();
            store.close().await?;
            println!("{} {rss} {peak} {before} {} {after}", open.as_secs_f64(), checkpoint.as_secs_f64());
        }
        "puts" => {
            // KEYS single-key puts from 64 concurrent clients, as the write
            // rows' 64 clients make them: what the profile in ARCHITECTURE.md
            // (Decisions) runs under valgrind and strace.
            let store = Store::open(config).await?;
            let started = Instant::now();
            puts(&store, keys, 64).await?;
            let elapsed = started.elapsed();
            store.close().await?;
            println!("{}", keys as f64 / elapsed.as_secs_f64());
        }
        other => bail!("unknown step {other:?}"),
    }
    Ok(())
}

fn key(i: u64) -> String {
    format!("bench/{i:08}")
}

/// Writes keys `0..keys` in transactions of [`MAX_TXN_OPS`] puts from
/// [`FILL_WRITERS`] concurrent writers.
async fn fill(store: &Store, keys: u64) -> anyhow::Result<()> {
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    let chunk = MAX_TXN_OPS as u64;
    let chunks = keys.div_ceil(chunk);
    let store = Arc::new(store.clone());
    let writers: Vec<_> = (0..FILL_WRITERS)
        .map(|writer| {
            let (store, value) = (store.clone(), value.clone());
            tokio::spawn(async move {
                for c in (writer..chunks).step_by(FILL_WRITERS as usize) {
                    let txn = (c * chunk..((c + 1) * chunk).min(keys))
                        .fold(Txn::new(), |txn, i| txn.put(key(i), value.clone()));
                    store.txn(txn).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for writer in writers {
        writer.await??;
    }
    Ok(())
}

/// `count` puts of one key each, from `clients` concurrent clients.
async fn puts(store: &Store, count: u64, clients: u64) -> anyhow::Result<()> {
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (store, value) = (store.clone(), value.clone());
            tokio::spawn(async move {
                for i in (client..count).step_by(clients as usize) {
                    store.put(&format!("puts/{i:08}"), value.clone()).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// A `/proc/self/status` field in KiB.
fn status_kb(field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line =
        status.lines().find(|line| line.starts_with(field)).with_context(|| format!("{field} in /proc/self/status"))?;
    line.split_whitespace().nth(1).context("a number")?.parse().context("a number")
}

/// Runs `bench __engine ARGS...` and reads the numbers it prints.
fn run_child(args: &[&str]) -> anyhow::Result<Vec<f64>> {
    let output = Command::new(std::env::current_exe()?).arg(CHILD).args(args).output()?;
    if !output.status.success() {
        bail!("bench {CHILD} {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    }
    let text = String::from_utf8(output.stdout)?;
    text.split_whitespace().map(|number| number.parse().with_context(|| format!("{number:?} from {CHILD}"))).collect()
}
