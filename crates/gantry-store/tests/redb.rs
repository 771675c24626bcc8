//! The conformance suite against the embedded engine on a redb file
//! (`--store redb`), and what its file must keep across a reopen: keys,
//! leases, watch history.

use std::time::Duration;

use gantry_store::{EmbeddedConfig, Engine, EventKind, Store, StoreError};
use tempfile::TempDir;

use crate::support::next_events;

pub struct Fixture {
    pub store: Store,
    _dir: TempDir,
}

pub async fn fixture() -> Fixture {
    let dir = TempDir::new().unwrap();
    let store = Store::open_redb(EmbeddedConfig::redb_in_dir(dir.path())).await.unwrap();
    Fixture { store, _dir: dir }
}

crate::all_cases!(fixture);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_leases_and_history_survive_a_reopen() {
    let dir = TempDir::new().unwrap();
    let config = EmbeddedConfig { history_revisions: 3, ..EmbeddedConfig::redb_in_dir(dir.path()) };
    let store = Store::open_redb(config.clone()).await.unwrap();
    assert_eq!(store.engine(), Engine::Redb);
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    store.put_with_lease("machines/a", "a", lease.id).await.unwrap();
    for i in 0..5 {
        store.put("kv/x", format!("x{i}")).await.unwrap();
    }
    store.delete("kv/x").await.unwrap();
    let revision = store.revision().await.unwrap();
    // A second open of the same file is refused while it is open.
    let error = Store::open_redb(config.clone()).await.unwrap_err();
    assert!(matches!(error, StoreError::Embedded { .. }), "{error:?}");
    store.close().await.unwrap();

    let store = Store::open_redb(config.clone()).await.unwrap();
    assert_eq!(store.revision().await.unwrap(), revision);
    let kv = store.get("machines/a").await.unwrap().kv.unwrap();
    assert_eq!((kv.value.as_ref(), kv.lease), (&b"a"[..], Some(lease.id)));
    assert!(store.get("kv/x").await.unwrap().kv.is_none());
    store.keep_alive(lease.id).await.unwrap();
    // The last three revisions of history are kept, and no more.
    let mut watch = store.watch("kv/", revision - 2).await.unwrap();
    let events = next_events(&mut watch, 3).await;
    let kinds: Vec<_> = events.iter().map(|event| (event.kind, event.value.clone())).collect();
    assert_eq!(kinds, [(EventKind::Put, "x3".into()), (EventKind::Put, "x4".into()), (EventKind::Delete, "".into())]);
    let mut too_old = store.watch("kv/", revision - 3).await.unwrap();
    assert!(matches!(too_old.next_event().await, Some(Err(StoreError::Compacted { .. }))));
    store.revoke_lease(lease.id).await.unwrap();
    store.close().await.unwrap();

    let store = Store::open_redb(config).await.unwrap();
    assert!(store.get("machines/a").await.unwrap().kv.is_none());
    assert!(matches!(store.keep_alive(lease.id).await, Err(StoreError::LeaseNotFound { .. })));
    store.close().await.unwrap();
}
