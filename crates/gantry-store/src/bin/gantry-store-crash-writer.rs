//! Test helper for the crash-safety test: writes to an embedded store from
//! many concurrent tasks and prints each key on stdout once its write is
//! acknowledged, until killed (or a bounded number of writes is done).
//!
//! Usage: `gantry-store-crash-writer STORE_FILE RUN_ID`

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use gantry_store::{EmbeddedConfig, Store};

const TASKS: usize = 64;
const WRITES_PER_TASK: usize = 2_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(run)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: gantry-store-crash-writer STORE_FILE RUN_ID");
    };
    let store = Store::open_embedded(EmbeddedConfig::new(&path))
        .await
        .with_context(|| format!("opening {path}"))?;
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
                let mut out = stdout
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                writeln!(out, "{key}")?;
                out.flush()?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}
