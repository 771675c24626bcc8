//! Crash safety of the embedded engine: a helper process writes from many
//! tasks and prints each acknowledged key; we SIGKILL it at a random moment,
//! reopen the file and check every acknowledged write is there. Every other
//! run makes the helper checkpoint all the time, so that some kills land in
//! the middle of a checkpoint.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use gantry_store::{EmbeddedConfig, Store};
use tempfile::TempDir;

const RUNS: u32 = 6;
/// What checkpointing runs pass the helper: a checkpoint about every
/// thousand writes.
const CHECKPOINT_BYTES: u64 = 256 << 10;

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("store.log");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut total = 0;
    for run in 0..RUNS {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gantry-store-crash-writer"));
        command.arg(&path).arg(run.to_string());
        if run % 2 == 1 {
            command.arg(CHECKPOINT_BYTES.to_string());
        }
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut ready = String::new();
        stdout.read_line(&mut ready).unwrap();
        assert_eq!(ready, "ready\n", "the writer did not start");
        let reader = std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            let mut line = Vec::new();
            loop {
                line.clear();
                match stdout.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    // A line cut by the kill has no newline: not acknowledged.
                    Ok(_) if line.ends_with(b"\n") => {
                        acknowledged.push(String::from_utf8(line[..line.len() - 1].to_vec()).unwrap());
                    }
                    Ok(_) => break,
                }
            }
            acknowledged
        });
        std::thread::sleep(random_delay(run));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acknowledged = reader.join().unwrap();
        total += acknowledged.len();

        runtime.block_on(async {
            let store = Store::open_embedded(EmbeddedConfig::new(&path)).await.unwrap();
            for key in &acknowledged {
                let kv = store.get(key).await.unwrap().kv;
                let kv = kv.unwrap_or_else(|| panic!("run {run}: acknowledged {key} is missing"));
                assert_eq!(kv.value, key.as_bytes(), "run {run}: {key} has the wrong value");
            }
            let prefix = format!("crash/{run}/");
            let stored = store.range(&prefix, None).await.unwrap().kvs.len();
            assert!(stored >= acknowledged.len());
            store.close().await.unwrap();
        });
    }
    assert!(total > 0, "the writer acknowledged nothing before being killed");
}

/// 50 to 400 ms, different every run.
fn random_delay(run: u32) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let spread = (u64::from(nanos) ^ u64::from(run).wrapping_mul(0x9e37_79b9)) % 350;
    Duration::from_millis(50 + spread)
}
