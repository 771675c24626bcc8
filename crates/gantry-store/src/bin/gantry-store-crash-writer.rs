//! Test helper for the crash-safety test: writes to an embedded store from
//! many concurrent tasks and prints each key on stdout once its write is
//! acknowledged, until killed (or a bounded number of writes is done).
//!
//! Usage: `gantry-store-crash-writer STORE_FILE RUN_ID [CHECKPOINT_BYTES]`
//!
//! With `CHECKPOINT_BYTES`, the store checkpoints once its log is past that
//! size, keeps little history, and every task also overwrites a scratch key
//! of its own with 1 KiB after each acknowledged write: the log then grows
//! much faster than the live data, so checkpoints keep happening and the
//! kill may land in the middle of one.

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use gantry_store::{EmbeddedConfig, Store};

const TASKS: usize = 64;
const WRITES_PER_TASK: usize = 2_000;
/// History kept when checkpointing: small, so checkpoints are small too.
const CHURN_HISTORY_REVISIONS: u64 = 1_000;
const CHURN_VALUE_BYTES: usize = 1024;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(run)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: gantry-store-crash-writer STORE_FILE RUN_ID [CHECKPOINT_BYTES]");
    };
    let checkpoint_bytes: Option<u64> =
        args.next().map(|bytes| bytes.parse().context("CHECKPOINT_BYTES must be a number")).transpose()?;
    let mut config = EmbeddedConfig::new(&path);
    if let Some(bytes) = checkpoint_bytes {
        config.checkpoint_bytes = bytes;
        config.history_revisions = CHURN_HISTORY_REVISIONS;
    }
    let store = Store::open_embedded(config).await.with_context(|| format!("opening {path}"))?;
    let stdout = Arc::new(Mutex::new(std::io::stdout()));
    println!("ready");
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (store, stdout, run) = (store.clone(), stdout.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..WRITES_PER_TASK {
                let key = format!("crash/{run}/{task}/{i}");
                store.put(&key, key.clone().into_bytes()).await?;
                // Only now is the write acknowledged: print it.
                {
                    let mut out = stdout.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    writeln!(out, "{key}")?;
                    out.flush()?;
                }
                if checkpoint_bytes.is_some() {
                    let churn = format!("churn/{task}");
                    store.put(&churn, vec![b'c'; CHURN_VALUE_BYTES]).await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}
