//! The conformance suite: what every engine must do, one function per
//! behaviour, each taking a fresh `Store`.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use gantry_store::{Event, EventKind, MAX_VALUE_BYTES, Store, StoreError, Txn};

use crate::support::{assert_quiet, keys_under, next_error, next_event, next_events};

pub async fn crud(store: &Store) {
    let empty = store.get("kv/a").await.unwrap();
    assert_eq!(empty.kv, None);

    let first = store.put("kv/a", "one").await.unwrap();
    assert!(first > empty.revision);
    let got = store.get("kv/a").await.unwrap();
    let kv = got.kv.unwrap();
    assert_eq!((kv.key.as_str(), &kv.value[..]), ("kv/a", &b"one"[..]));
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version, kv.lease), (first, first, 1, None));
    assert!(got.revision >= first);

    let second = store.put("kv/a", "two").await.unwrap();
    assert!(second > first);
    let kv = store.get("kv/a").await.unwrap().kv.unwrap();
    assert_eq!((&kv.value[..], kv.create_revision, kv.mod_revision, kv.version), (&b"two"[..], first, second, 2));

    let deleted = store.delete("kv/a").await.unwrap();
    assert_eq!(deleted.deleted, 1);
    assert!(deleted.revision > second);
    assert_eq!(store.get("kv/a").await.unwrap().kv, None);

    // Deleting nothing changes nothing, not even the revision.
    let nothing = store.delete("kv/a").await.unwrap();
    assert_eq!((nothing.deleted, nothing.revision), (0, deleted.revision));
    assert_eq!(store.revision().await.unwrap(), deleted.revision);

    // A key created again starts over.
    let again = store.put("kv/a", "three").await.unwrap();
    let kv = store.get("kv/a").await.unwrap().kv.unwrap();
    assert_eq!((kv.create_revision, kv.version), (again, 1));
}

pub async fn range_is_sorted_by_key_and_limited(store: &Store) {
    for key in ["r/c", "r/a", "r/b/2", "r/b/1", "q/x", "rz"] {
        store.put(key, key).await.unwrap();
    }
    let all = store.range("r/", None).await.unwrap();
    let keys: Vec<&str> = all.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["r/a", "r/b/1", "r/b/2", "r/c"]);
    assert!(!all.more);
    assert_eq!(all.revision, store.revision().await.unwrap());
    assert_eq!(&all.kvs[0].value[..], b"r/a");

    let first_two = store.range("r/", Some(2)).await.unwrap();
    let keys: Vec<&str> = first_two.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["r/a", "r/b/1"]);
    assert!(first_two.more);

    let exact = store.range("r/", Some(4)).await.unwrap();
    assert_eq!((exact.kvs.len(), exact.more), (4, false));

    let none = store.range("r/", Some(0)).await.unwrap();
    assert_eq!((none.kvs.len(), none.more), (0, true));

    let everything = store.range("", None).await.unwrap();
    assert_eq!(everything.kvs.len(), 6);
    assert!(everything.kvs.windows(2).all(|pair| pair[0].key < pair[1].key));

    assert!(store.range("nothing/", None).await.unwrap().kvs.is_empty());
}

pub async fn revisions_only_grow(store: &Store) {
    let start = store.revision().await.unwrap();
    let mut tasks = Vec::new();
    for task in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..20 {
                revisions.push(store.put(&format!("rev/{task}/{i}"), "x").await.unwrap());
            }
            revisions
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let revisions = task.await.unwrap();
        assert!(revisions.windows(2).all(|pair| pair[0] < pair[1]), "{revisions:?}");
        all.extend(revisions);
    }
    // Concurrent writes may share a revision (the etcd engine commits
    // concurrent puts as one transaction, as etcd itself numbers the puts of
    // a transaction), but every write is past the start and the store's
    // revision is the newest write's.
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    assert!(*distinct.first().unwrap() > start);
    assert_eq!(store.revision().await.unwrap(), *distinct.last().unwrap());
}

pub async fn delete_prefix_is_one_revision(store: &Store) {
    for key in ["p/a", "p/b", "p/c/d", "pq", "other"] {
        store.put(key, "x").await.unwrap();
    }
    let before = store.revision().await.unwrap();
    let mut watch = store.watch("", before + 1).await.unwrap();
    let deleted = store.delete_prefix("p/").await.unwrap();
    assert_eq!((deleted.deleted, deleted.revision), (3, before + 1));
    let events = next_events(&mut watch, 3).await;
    let keys: Vec<&str> = events.iter().map(|event| event.key.as_str()).collect();
    assert_eq!(keys, ["p/a", "p/b", "p/c/d"]);
    assert!(events.iter().all(|event| event.kind == EventKind::Delete && event.mod_revision == before + 1));
    let left: Vec<String> = keys_under(store, "").await;
    assert_eq!(left, ["other", "pq"]);

    let err = store.delete_prefix("").await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidKey { .. }), "{err}");
    assert_eq!(store.range("", None).await.unwrap().kvs.len(), 2);
}

pub async fn compare_and_set_race_has_exactly_one_winner(store: &Store) {
    // Round 1: everyone tries to create the key.
    let winners = race(store, 0).await;
    assert_eq!(winners.len(), 1, "creators that won: {winners:?}");
    let current = store.get("cas/leader").await.unwrap().kv.unwrap();
    assert_eq!(current.value, winners[0].to_string());

    // Round 2: everyone read the same mod_revision and tries to replace it.
    let winners = race(store, current.mod_revision).await;
    assert_eq!(winners.len(), 1, "updaters that won: {winners:?}");
    let updated = store.get("cas/leader").await.unwrap().kv.unwrap();
    assert_eq!(updated.version, 2);

    // A stale compare-and-delete fails and leaves the key; a fresh one wins.
    let stale = store.compare_and_delete("cas/leader", current.mod_revision).await.unwrap();
    assert!(!stale.succeeded);
    assert_eq!(stale.revision, updated.mod_revision);
    assert!(store.get("cas/leader").await.unwrap().kv.is_some());
    let fresh = store.compare_and_delete("cas/leader", updated.mod_revision).await.unwrap();
    assert!(fresh.succeeded);
    assert!(store.get("cas/leader").await.unwrap().kv.is_none());
}

/// 32 tasks compare-and-put `cas/leader` expecting `expected`; returns the
/// winners.
async fn race(store: &Store, expected: u64) -> Vec<usize> {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(32));
    let mut tasks = Vec::new();
    for contender in 0..32 {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let response = store.compare_and_put("cas/leader", contender.to_string(), expected).await.unwrap();
            response.succeeded.then_some(contender)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        winners.extend(task.await.unwrap());
    }
    winners
}

pub async fn txn_applies_all_or_nothing(store: &Store) {
    let base = store.put("t/a", "1").await.unwrap();
    let failed =
        store.txn(Txn::new().when_mod_revision("t/a", base + 100).put("t/b", "2").delete("t/a")).await.unwrap();
    assert!(!failed.succeeded);
    assert_eq!(failed.revision, base);
    assert!(store.get("t/b").await.unwrap().kv.is_none());
    assert!(store.get("t/a").await.unwrap().kv.is_some());

    let applied = store
        .txn(
            Txn::new()
                .when_mod_revision("t/a", base)
                .when_mod_revision("t/new", 0)
                .put("t/new", "n")
                .put("t/b", "2")
                .delete("t/a"),
        )
        .await
        .unwrap();
    assert!(applied.succeeded);
    assert_eq!(applied.revision, base + 1, "one transaction is one revision");
    let b = store.get("t/b").await.unwrap().kv.unwrap();
    let new = store.get("t/new").await.unwrap().kv.unwrap();
    assert_eq!((b.mod_revision, new.mod_revision), (applied.revision, applied.revision));
    assert!(store.get("t/a").await.unwrap().kv.is_none());

    let twice = store.txn(Txn::new().put("t/x", "1").delete("t/x")).await.unwrap_err();
    assert!(matches!(twice, StoreError::InvalidTxn { .. }), "{twice}");
    let mut huge = Txn::new();
    for i in 0..=gantry_store::MAX_TXN_OPS {
        huge = huge.put(format!("t/many/{i}"), "x");
    }
    assert!(matches!(store.txn(huge).await.unwrap_err(), StoreError::InvalidTxn { .. }));
    assert_eq!(store.revision().await.unwrap(), applied.revision);
}

pub async fn lease_expiry_deletes_keys_with_events(store: &Store) {
    let lease = store.grant_lease(Duration::from_secs(1)).await.unwrap();
    assert!(lease.ttl >= Duration::from_secs(1));
    let first = store.put_with_lease("machines/m1", "facts", lease.id).await.unwrap();
    store.put_with_lease("instances/web/m1", "up", lease.id).await.unwrap();
    store.put("machines/m2", "no lease").await.unwrap();
    assert_eq!(store.get("machines/m1").await.unwrap().kv.unwrap().lease, Some(lease.id));

    let mut watch = store.watch("", first).await.unwrap();
    let events = next_events(&mut watch, 3).await;
    assert!(events.iter().all(|event| event.kind == EventKind::Put));
    // etcd ends an expired lease within about a second of its TTL.
    let deletes = next_events(&mut watch, 2).await;
    let keys: BTreeSet<&str> = deletes.iter().map(|event| event.key.as_str()).collect();
    assert_eq!(keys, BTreeSet::from(["instances/web/m1", "machines/m1"]));
    assert!(deletes.iter().all(|event| event.kind == EventKind::Delete));
    assert_eq!(deletes[0].mod_revision, deletes[1].mod_revision, "a lease ends in one revision");

    assert!(store.get("machines/m1").await.unwrap().kv.is_none());
    assert!(store.get("machines/m2").await.unwrap().kv.is_some());
    let err = store.keep_alive(lease.id).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseNotFound { .. }), "{err}");
    let before = store.revision().await.unwrap();
    let err = store.put_with_lease("machines/m3", "late", lease.id).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseNotFound { .. }), "{err}");
    assert!(store.get("machines/m3").await.unwrap().kv.is_none());
    assert_eq!(store.revision().await.unwrap(), before);
}

pub async fn keep_alive_keeps_keys(store: &Store) {
    let lease = store.grant_lease(Duration::from_secs(2)).await.unwrap();
    store.put_with_lease("machines/alive", "x", lease.id).await.unwrap();
    // Keep it alive for twice its TTL, renewing ten times per TTL so that a
    // loaded test machine cannot make a renewal late.
    let until = tokio::time::Instant::now() + lease.ttl * 2;
    while tokio::time::Instant::now() < until {
        let ttl = store.keep_alive(lease.id).await.unwrap();
        assert_eq!(ttl, lease.ttl);
        tokio::time::sleep(lease.ttl / 10).await;
    }
    assert!(store.get("machines/alive").await.unwrap().kv.is_some());
    store.revoke_lease(lease.id).await.unwrap();
    assert!(store.get("machines/alive").await.unwrap().kv.is_none());
}

pub async fn revoke_deletes_keys_with_events(store: &Store) {
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    let other = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    assert_ne!(lease.id, other.id);
    store.put_with_lease("l/a", "x", lease.id).await.unwrap();
    store.put_with_lease("l/b", "x", lease.id).await.unwrap();
    store.put_with_lease("l/c", "x", other.id).await.unwrap();
    // Rewritten without a lease: detached, survives the revoke.
    let detached = store.put("l/b", "mine now").await.unwrap();
    let mut watch = store.watch("l/", detached + 1).await.unwrap();

    store.revoke_lease(lease.id).await.unwrap();
    let event = next_event(&mut watch).await;
    assert_eq!((event.kind, event.key.as_str()), (EventKind::Delete, "l/a"));
    assert_quiet(&mut watch).await;
    let left: Vec<String> = keys_under(store, "l/").await;
    assert_eq!(left, ["l/b", "l/c"]);

    let err = store.revoke_lease(lease.id).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseNotFound { .. }), "{err}");
    store.revoke_lease(other.id).await.unwrap();
    assert_eq!(next_event(&mut watch).await.key, "l/c");
}

/// Lease ids cannot be guessed from one another: revoking a lease deletes
/// its keys, so a counted id would let anyone who can revoke take other
/// machines out of the inventory.
pub async fn lease_ids_are_random(store: &Store) {
    let mut ids = Vec::new();
    for _ in 0..16 {
        ids.push(store.grant_lease(Duration::from_secs(60)).await.unwrap().id.0);
    }
    for pair in ids.windows(2) {
        assert!(pair[1].abs_diff(pair[0]) > 1 << 20, "neighbouring ids {pair:?}");
    }
    // 63 random bits: with 16 draws, every one below 2^40 happens about
    // once in 2^(23*16).
    assert!(ids.iter().any(|&id| id > 1 << 40), "{ids:?}");
    assert!(ids.iter().all(|&id| id > 0));
    for id in ids {
        store.revoke_lease(gantry_store::LeaseId(id)).await.unwrap();
    }
}

pub async fn watch_delivers_every_event_in_order_exactly_once(store: &Store) {
    let start = store.revision().await.unwrap() + 1;
    let mut watch = store.watch("w/", start).await.unwrap();
    let mut tasks = Vec::new();
    for task in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut written = Vec::new();
            for i in 0..40 {
                let key = format!("w/{task}/{}", i % 5);
                if i % 7 == 6 {
                    let deleted = store.delete(&key).await.unwrap();
                    if deleted.deleted == 1 {
                        written.push((key, deleted.revision, EventKind::Delete));
                    }
                } else {
                    let revision = store.put(&key, format!("{task}-{i}")).await.unwrap();
                    written.push((key, revision, EventKind::Put));
                }
                // Noise outside the prefix.
                store.put(&format!("noise/{task}"), "x").await.unwrap();
            }
            written
        }));
    }
    let mut expected = Vec::new();
    for task in tasks {
        expected.extend(task.await.unwrap());
    }
    // Within one revision (writes committed together) keys are distinct;
    // order them by key on both sides.
    expected.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));

    let events = next_events(&mut watch, expected.len()).await;
    assert_quiet(&mut watch).await;
    assert!(events.windows(2).all(|pair| pair[0].mod_revision <= pair[1].mod_revision), "events out of revision order");
    let mut seen: Vec<(String, u64, EventKind)> =
        events.iter().map(|event| (event.key.clone(), event.mod_revision, event.kind)).collect();
    seen.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    assert_eq!(seen, expected);
}

pub async fn watch_resumes_from_a_revision_after_a_disconnect(store: &Store) {
    let start = store.put("resume/0", "0").await.unwrap();
    for i in 1..10 {
        store.put(&format!("resume/{i}"), i.to_string()).await.unwrap();
    }
    // Watch from before the first write: history first.
    let mut watch = store.watch("resume/", start).await.unwrap();
    let first_half = next_events(&mut watch, 5).await;
    let last_seen = first_half.last().unwrap().mod_revision;
    drop(watch); // the client disconnects...

    for i in 10..20 {
        store.put(&format!("resume/{i}"), i.to_string()).await.unwrap();
    }
    // ...and comes back from the revision after the last one it saw.
    let mut watch = store.watch("resume/", last_seen + 1).await.unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 20..30 {
                store.put(&format!("resume/{i}"), i.to_string()).await.unwrap();
            }
        })
    };
    let rest = next_events(&mut watch, 25).await;
    writer.await.unwrap();
    assert_quiet(&mut watch).await;
    let values: Vec<String> =
        first_half.iter().chain(&rest).map(|event| String::from_utf8(event.value.to_vec()).unwrap()).collect();
    let expected: Vec<String> = (0..30).map(|i| i.to_string()).collect();
    assert_eq!(values, expected);
}

pub async fn watch_from_zero_sees_only_new_changes(store: &Store) {
    store.put("now/old", "old").await.unwrap();
    let mut watch = store.watch("now/", 0).await.unwrap();
    let revision = store.put("now/new", "new").await.unwrap();
    let event = next_event(&mut watch).await;
    assert_eq!((event.key.as_str(), event.mod_revision, event.kind), ("now/new", revision, EventKind::Put));
    assert_eq!(&event.value[..], b"new");
    assert_quiet(&mut watch).await;
}

pub async fn watch_from_a_compacted_revision_fails_with_compacted(store: &Store) {
    let first = store.put("c/0", "x").await.unwrap();
    for i in 1..10 {
        store.put(&format!("c/{i}"), "x").await.unwrap();
    }
    let compact_at = first + 7;
    store.compact(compact_at).await.unwrap();
    // Compacting again, or lower, is harmless.
    store.compact(first).await.unwrap();
    let future = store.revision().await.unwrap() + 10;
    assert!(matches!(store.compact(future).await.unwrap_err(), StoreError::FutureRevision { .. }));

    let mut watch = store.watch("c/", first).await.unwrap();
    match next_error(&mut watch).await {
        StoreError::Compacted { requested, oldest_available } => {
            assert_eq!((requested, oldest_available), (first, compact_at));
        }
        other => panic!("expected Compacted, got {other}"),
    }
    assert!(watch.next_event().await.is_none(), "the stream ends after the error");

    // From the oldest available revision on, the history is complete.
    let mut watch = store.watch("c/", compact_at).await.unwrap();
    let events = next_events(&mut watch, 3).await;
    let keys: Vec<&str> = events.iter().map(|event| event.key.as_str()).collect();
    assert_eq!(keys, ["c/7", "c/8", "c/9"]);
}

pub async fn many_watchers_of_one_prefix_all_see_a_write(store: &Store) {
    let mut watches = Vec::new();
    for _ in 0..200 {
        watches.push(store.watch("fan/", 0).await.unwrap());
    }
    let revision = store.put("fan/x", "hello").await.unwrap();
    let mut checks = Vec::new();
    for mut watch in watches {
        checks.push(tokio::spawn(async move { next_event(&mut watch).await }));
    }
    for check in checks {
        let event: Event = check.await.unwrap();
        assert_eq!((event.key.as_str(), event.mod_revision), ("fan/x", revision));
    }
}

pub async fn invalid_input_is_rejected_and_nothing_is_stored(store: &Store) {
    let before = store.revision().await.unwrap();
    for key in ["", "/lead", "trail/", "a//b", "a/../b", "nul\0", "tab\tkey", &"k".repeat(1025)] {
        let err = store.put(key, "x").await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidKey { .. }), "{key:?}: {err}");
        assert!(err.is_bad_request());
        assert!(matches!(store.get(key).await.unwrap_err(), StoreError::InvalidKey { .. }));
    }
    let huge = vec![b'x'; MAX_VALUE_BYTES + 1];
    let err = store.put("big", huge.clone()).await.unwrap_err();
    assert!(matches!(err, StoreError::ValueTooLarge { size, .. } if size == MAX_VALUE_BYTES + 1), "{err}");
    // One bad operation spoils the whole transaction.
    let err = store.txn(Txn::new().put("fine", "x").put("bad//key", "x")).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidKey { .. }), "{err}");
    let err = store.txn(Txn::new().put("fine", "x").put("big", huge)).await.unwrap_err();
    assert!(matches!(err, StoreError::ValueTooLarge { .. }), "{err}");
    assert!(matches!(store.range("a//", None).await.unwrap_err(), StoreError::InvalidKey { .. }));
    assert!(matches!(store.watch("../", 0).await.unwrap_err(), StoreError::InvalidKey { .. }));
    assert!(matches!(store.grant_lease(Duration::ZERO).await.unwrap_err(), StoreError::InvalidTtl { .. }));

    assert_eq!(store.revision().await.unwrap(), before);
    assert!(store.range("", None).await.unwrap().kvs.is_empty());
    // The largest value allowed is stored whole.
    let max = vec![b'y'; MAX_VALUE_BYTES];
    store.put("big", max.clone()).await.unwrap();
    assert_eq!(store.get("big").await.unwrap().kv.unwrap().value.len(), max.len());
    let keys: HashSet<String> = keys_under(store, "").await.into_iter().collect();
    assert_eq!(keys, HashSet::from(["big".to_owned()]));
}
