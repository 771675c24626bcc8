//! The conformance suite against the embedded engine, plus what only the
//! embedded engine does: reopening, persisted history, lease TTLs restarted
//! on open, slow watchers, the file lock.

use std::time::Duration;

use gantry_store::{EmbeddedConfig, EventKind, Store, StoreError};
use tempfile::TempDir;

use crate::support::{next_error, next_event, next_events};

pub struct Fixture {
    pub store: Store,
    _dir: TempDir,
}

pub async fn fixture() -> Fixture {
    let dir = TempDir::new().unwrap();
    let store = Store::open_embedded(EmbeddedConfig::in_dir(dir.path())).await.unwrap();
    Fixture { store, _dir: dir }
}

crate::all_cases!(fixture);

/// A value cut from a larger buffer (as an HTTP body is cut from the
/// connection's read buffer) is stored as a copy of its own: keeping the
/// caller's buffer would pin all of it (8 KiB or more per write) for as long
/// as the key and its history live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_value_does_not_keep_the_callers_buffer() {
    let f = fixture().await;
    let buffer = gantry_store::Bytes::from(vec![b'v'; 8192]);
    let value = buffer.slice(100..356);
    f.store.put("kv/one", value.clone()).await.unwrap();
    let stored = f.store.get("kv/one").await.unwrap().kv.unwrap().value;
    assert_eq!(stored, value);
    let inside = buffer.as_ptr_range();
    assert!(!inside.contains(&stored.as_ptr()), "the stored value points into the caller's 8 KiB buffer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_data_revision_and_history() {
    let dir = TempDir::new().unwrap();
    let config = EmbeddedConfig::in_dir(dir.path());
    let store = Store::open_embedded(config.clone()).await.unwrap();
    let first = store.put("machines/a", "1").await.unwrap();
    store.put("machines/b", "2").await.unwrap();
    store.delete("machines/a").await.unwrap();
    let last = store.revision().await.unwrap();
    store.close().await.unwrap();

    let store = Store::open_embedded(config).await.unwrap();
    assert_eq!(store.revision().await.unwrap(), last);
    assert!(store.get("machines/a").await.unwrap().kv.is_none());
    assert_eq!(&store.get("machines/b").await.unwrap().kv.unwrap().value[..], b"2");
    let mut watch = store.watch("machines/", first).await.unwrap();
    let kinds: Vec<(String, EventKind)> =
        next_events(&mut watch, 3).await.into_iter().map(|event| (event.key, event.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("machines/a".to_owned(), EventKind::Put),
            ("machines/b".to_owned(), EventKind::Put),
            ("machines/a".to_owned(), EventKind::Delete)
        ]
    );
    assert!(store.put("machines/c", "3").await.unwrap() > last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_store_restarts_lease_ttls_then_expires_them() {
    let dir = TempDir::new().unwrap();
    let config = EmbeddedConfig::in_dir(dir.path());
    let store = Store::open_embedded(config.clone()).await.unwrap();
    let lease = store.grant_lease(Duration::from_secs(1)).await.unwrap();
    store.put_with_lease("machines/m", "x", lease.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    store.close().await.unwrap();

    let store = Store::open_embedded(config).await.unwrap();
    let reopened = tokio::time::Instant::now();
    // Less than a full TTL after the restart the lease is still alive...
    assert_eq!(store.keep_alive(lease.id).await.unwrap(), Duration::from_secs(1));
    assert!(store.get("machines/m").await.unwrap().kv.is_some());
    let mut watch = store.watch("machines/", 0).await.unwrap();
    // ...and without keep-alives it ends one TTL later.
    let event = next_event(&mut watch).await;
    assert_eq!((event.key.as_str(), event.kind), ("machines/m", EventKind::Delete));
    assert!(reopened.elapsed() >= Duration::from_millis(900));
    // A new lease does not reuse the old id.
    assert_ne!(store.grant_lease(Duration::from_secs(5)).await.unwrap().id, lease.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_catches_up_from_the_history() {
    let dir = TempDir::new().unwrap();
    let mut config = EmbeddedConfig::in_dir(dir.path());
    config.watch_buffer = 2;
    let store = Store::open_embedded(config).await.unwrap();
    let mut watch = store.watch("slow/", 0).await.unwrap();
    for i in 0..50 {
        store.put(&format!("slow/{i}"), i.to_string()).await.unwrap();
    }
    // The broadcast buffer overflowed long ago; the history has it all.
    let events = next_events(&mut watch, 50).await;
    let keys: Vec<String> = events.into_iter().map(|event| event.key).collect();
    let expected: Vec<String> = (0..50).map(|i| format!("slow/{i}")).collect();
    assert_eq!(keys, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_behind_the_history_is_told_to_re_read() {
    let dir = TempDir::new().unwrap();
    let mut config = EmbeddedConfig::in_dir(dir.path());
    config.watch_buffer = 4;
    config.history_revisions = 10;
    let store = Store::open_embedded(config).await.unwrap();
    let start = store.revision().await.unwrap() + 1;
    let mut watch = store.watch("behind/", 0).await.unwrap();
    for i in 0..50 {
        store.put(&format!("behind/{i}"), "x").await.unwrap();
    }
    let last = store.revision().await.unwrap();
    match next_error(&mut watch).await {
        StoreError::Compacted { requested, oldest_available } => {
            assert_eq!((requested, oldest_available), (start, last - 9));
        }
        other => panic!("expected Compacted, got {other}"),
    }
    assert!(watch.next_event().await.is_none());

    // The re-read the error asks for, then a watch from its revision.
    let read = store.range("behind/", None).await.unwrap();
    assert_eq!(read.kvs.len(), 50);
    let mut watch = store.watch("behind/", read.revision + 1).await.unwrap();
    let revision = store.put("behind/new", "y").await.unwrap();
    assert_eq!(next_event(&mut watch).await.mod_revision, revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_is_locked_while_open() {
    let dir = TempDir::new().unwrap();
    let config = EmbeddedConfig::in_dir(dir.path());
    let store = Store::open_embedded(config.clone()).await.unwrap();
    let error = Store::open_embedded(config.clone()).await.unwrap_err();
    assert!(matches!(error, StoreError::Embedded { action: "open", .. }), "{error}");
    assert!(error.to_string().contains("store.log"), "{error}");
    store.close().await.unwrap();
    Store::open_embedded(config).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_store_refuses_writes() {
    let fixture = fixture().await;
    let clone = fixture.store.clone();
    fixture.store.close().await.unwrap();
    assert!(matches!(clone.put("k", "v").await.unwrap_err(), StoreError::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_commits_and_lose_nothing() {
    let fixture = fixture().await;
    let mut tasks = Vec::new();
    for task in 0..64 {
        let store = fixture.store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                store.put(&format!("group/{task}/{i}"), vec![7u8; 256]).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let all = fixture.store.range("group/", None).await.unwrap();
    assert_eq!(all.kvs.len(), 64 * 20);
    assert_eq!(all.revision, 64 * 20);
}

/// The store holds datastore passwords: its directory and files are
/// created private (not narrowed afterwards), and a checkpoint that
/// replaces the log is private too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_private_from_its_creation() {
    use std::os::unix::fs::PermissionsExt;
    let parent = TempDir::new().unwrap();
    let dir = parent.path().join("server");
    let mut config = EmbeddedConfig::in_dir(&dir);
    config.checkpoint_bytes = 4096;
    let store = Store::open_embedded(config).await.unwrap();
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "data directory");
    assert_eq!(mode(&dir.join("store.log")), 0o600, "log");
    // Enough writes for several checkpoints to replace the log.
    for i in 0..200 {
        store.put(&format!("kv/datastores/K{}", i % 10), vec![b'x'; 256]).await.unwrap();
    }
    store.close().await.unwrap();
    assert_eq!(mode(&dir.join("store.log")), 0o600, "log after checkpoints");
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["store.log"]);
}

/// `checkpoint` rewrites the log as the live state now: the file shrinks
/// to about the live data, and everything reads back after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_checkpoint_shrinks_the_log_and_keeps_everything() {
    let dir = TempDir::new().unwrap();
    let config = EmbeddedConfig { history_revisions: 10, ..EmbeddedConfig::in_dir(dir.path()) };
    let store = Store::open_embedded(config.clone()).await.unwrap();
    for round in 0..50 {
        for key in 0..20 {
            store.put(&format!("kv/{key}"), format!("{round:0>200}")).await.unwrap();
        }
    }
    let written_end = |path: &std::path::Path| {
        let data = std::fs::read(path).unwrap();
        data.iter().rposition(|&byte| byte != 0).map_or(0, |i| i + 1)
    };
    let before = written_end(&config.path);
    store.checkpoint().await.unwrap();
    let after = written_end(&config.path);
    assert!(after * 10 < before, "the log went from {before} to {after} bytes");
    store.put("kv/after", "yes").await.unwrap();
    store.close().await.unwrap();
    let store = Store::open_embedded(config).await.unwrap();
    assert_eq!(store.range("kv/", None).await.unwrap().kvs.len(), 21);
    assert_eq!(store.get("kv/7").await.unwrap().kv.unwrap().value, format!("{:0>200}", 49));
    store.close().await.unwrap();
}

/// Everything is in memory, so the data has a bound: a write past it is
/// refused whole with `Full`, deletes still work and make room, and the
/// file stays whole (it reopens with every accepted write, also under a
/// bound lowered below what it holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_the_memory_bound_are_refused_and_the_file_stays_whole() {
    let dir = TempDir::new().unwrap();
    // Ten keys of 1,000 B (each counts its name, its value and 48 B).
    let config = EmbeddedConfig { max_data_bytes: 10 * (6 + 1000 + 48), ..EmbeddedConfig::in_dir(dir.path()) };
    let store = Store::open_embedded(config.clone()).await.unwrap();
    let value = vec![b'v'; 1000];
    for i in 0..10 {
        store.put(&format!("kv/{i:03}"), value.clone()).await.unwrap();
    }
    let error = store.put("kv/010", value.clone()).await.unwrap_err();
    assert!(matches!(error, StoreError::Full { limit: 10_540 }), "{error:?}");
    assert!(error.to_string().contains("the embedded store is full"), "{error}");
    // A transaction that would grow past it is refused whole.
    let txn = gantry_store::Txn::new().put("kv/000", "small").put("kv/011", value.clone());
    assert!(matches!(store.txn(txn).await, Err(StoreError::Full { .. })));
    assert_eq!(store.get("kv/000").await.unwrap().kv.unwrap().value.len(), 1000);
    // Overwriting in place does not grow it; deleting makes room.
    store.put("kv/001", value.clone()).await.unwrap();
    store.delete("kv/002").await.unwrap();
    store.put("kv/010", value.clone()).await.unwrap();
    store.close().await.unwrap();

    let lower = EmbeddedConfig { max_data_bytes: 5_000, ..config };
    let store = Store::open_embedded(lower).await.unwrap();
    assert_eq!(store.range("kv/", None).await.unwrap().kvs.len(), 10);
    assert!(matches!(store.put("kv/100", "x").await, Err(StoreError::Full { .. })));
    store.delete_prefix("kv/00").await.unwrap();
    store.put("kv/100", "x").await.unwrap();
    store.close().await.unwrap();
}
