//! The embedded engine's log file on disk: a torn last record is cut off,
//! damage before intact records is an error that changes nothing,
//! checkpoints keep everything (keys, leases, history, the lock).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use gantry_store::{EmbeddedConfig, EventKind, Store, StoreError};
use tempfile::TempDir;

use crate::support::{next_error, next_events};

/// The file without the zeros preallocated after its last record.
fn written_part(path: &Path) -> Vec<u8> {
    let mut data = std::fs::read(path).unwrap();
    let end = data.iter().rposition(|&byte| byte != 0).unwrap() + 1;
    data.truncate(end);
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_record_is_cut_off_and_writing_goes_on() {
    let dir = TempDir::new().unwrap();
    let config = EmbeddedConfig::in_dir(dir.path());
    let store = Store::open_embedded(config.clone()).await.unwrap();
    store.put("torn/a", "1").await.unwrap();
    let last = store.put("torn/b", "2").await.unwrap();
    store.close().await.unwrap();

    // A crash during the next append: part of a record, then the zeros of
    // the pages that never reached the disk.
    let mut data = written_part(&config.path);
    let partial = data[data.len() - 20..].to_vec();
    data.extend_from_slice(&partial);
    data.resize(data.len() + 4096, 0);
    std::fs::write(&config.path, &data).unwrap();

    let store = Store::open_embedded(config.clone()).await.unwrap();
    assert_eq!(store.revision().await.unwrap(), last);
    assert_eq!(store.range("torn/", None).await.unwrap().kvs.len(), 2);
    let next = store.put("torn/c", "3").await.unwrap();
    assert_eq!(next, last + 1);
    store.close().await.unwrap();

    let store = Store::open_embedded(config).await.unwrap();
    let kv = store.get("torn/c").await.unwrap().kv.unwrap();
    assert_eq!((&kv.value[..], kv.mod_revision), (&b"3"[..], next));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_before_intact_records_is_corrupt_and_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let config = EmbeddedConfig::in_dir(dir.path());
    let store = Store::open_embedded(config.clone()).await.unwrap();
    for i in 0..3 {
        store.put(&format!("bad/{i}"), "x").await.unwrap();
    }
    store.close().await.unwrap();

    // One flipped bit in the first record's payload (after the 16-byte file
    // header and the 12-byte record header).
    let mut data = std::fs::read(&config.path).unwrap();
    data[16 + 12 + 3] ^= 0x04;
    std::fs::write(&config.path, &data).unwrap();

    let error = Store::open_embedded(config.clone()).await.unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("record at byte 16"), "{error}");
    assert_eq!(std::fs::read(&config.path).unwrap(), data, "the file was changed");

    // Not a Gantry log at all.
    std::fs::write(&config.path, b"SQLite format 3\0 and more").unwrap();
    let error = Store::open_embedded(config).await.unwrap_err();
    assert!(matches!(&error, StoreError::Corrupt { what, .. } if what.contains("not a Gantry store log")), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_keep_keys_leases_history_and_the_lock() {
    let dir = TempDir::new().unwrap();
    let mut config = EmbeddedConfig::in_dir(dir.path());
    config.checkpoint_bytes = 16 << 10;
    config.history_revisions = 100;
    let store = Store::open_embedded(config.clone()).await.unwrap();
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    store.put_with_lease("cp/leased", "l", lease.id).await.unwrap();
    store.put("cp/deleted", "d").await.unwrap();
    store.delete("cp/deleted").await.unwrap();

    // Overwrite a few keys until the log has been replaced by a checkpoint
    // (a new file in its place) at least twice.
    let first_file = std::fs::metadata(&config.path).unwrap().ino();
    let mut files = vec![first_file];
    let mut writes = 0;
    while files.len() < 3 {
        assert!(writes < 20_000, "no checkpoint after {writes} writes");
        store.put(&format!("cp/{}", writes % 10), vec![b'v'; 200]).await.unwrap();
        writes += 1;
        let file = std::fs::metadata(&config.path).unwrap().ino();
        if files.last() != Some(&file) {
            files.push(file);
        }
    }
    // The replaced file is locked as the original was.
    let error = Store::open_embedded(config.clone()).await.unwrap_err();
    assert!(matches!(error, StoreError::Embedded { action: "open", .. }), "{error}");
    let revision = store.revision().await.unwrap();
    let before = store.range("", None).await.unwrap();
    store.close().await.unwrap();

    let store = Store::open_embedded(config.clone()).await.unwrap();
    assert_eq!(store.revision().await.unwrap(), revision);
    assert_eq!(store.range("", None).await.unwrap().kvs, before.kvs);
    assert_eq!(before.kvs.len(), 11);
    assert!(store.get("cp/deleted").await.unwrap().kv.is_none());
    // The lease is alive (with a fresh TTL) and still owns its key.
    assert_eq!(store.keep_alive(lease.id).await.unwrap(), Duration::from_secs(60));
    // The last 100 revisions of history are there, and no more.
    let mut watch = store.watch("cp/", revision - 99).await.unwrap();
    let events = next_events(&mut watch, 100).await;
    assert_eq!(events.last().unwrap().mod_revision, revision);
    assert!(events.iter().all(|event| event.kind == EventKind::Put));
    let mut watch = store.watch("cp/", revision - 100).await.unwrap();
    assert!(matches!(
        next_error(&mut watch).await,
        StoreError::Compacted { oldest_available, .. } if oldest_available == revision - 99
    ));
    store.revoke_lease(lease.id).await.unwrap();
    assert!(store.get("cp/leased").await.unwrap().kv.is_none());
    // A new lease gets a new (random) id.
    let new = store.grant_lease(Duration::from_secs(5)).await.unwrap();
    assert_ne!(new.id, lease.id);
    // No checkpoint is left lying beside the log.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["store.log"]);
}
