//! The limits' bookkeeping on its own: the rate limit's arithmetic on a
//! clock the test sets, and the key accounts through writes, overwrites,
//! deletes and lease ends that arrive out of order.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gantry_api::ErrorCode;
use gantry_store::LeaseId;

use super::{Limits, Usage};

fn usage(limits: Limits) -> Usage {
    Usage::new(limits)
}

#[test]
fn a_burst_passes_then_requests_come_at_the_rate_and_the_refusal_says_when() {
    let u = usage(Limits { requests_per_second_per_token: 10, request_burst_per_token: 3, ..Limits::default() });
    let held = u.token("a1", "ci");
    let t0 = u.epoch + Duration::from_secs(5);
    for _ in 0..3 {
        u.admit_request(&held, t0).unwrap();
    }
    let refused = u.admit_request(&held, t0).unwrap_err();
    assert_eq!(refused.code, ErrorCode::TooManyRequests);
    assert_eq!(refused.retry_after, Some(1), "100 ms rounds up to a second");
    assert!(refused.message.contains("token a1 (ci)"), "{}", refused.message);
    assert!(refused.message.contains("--max-requests-per-second-per-token"), "{}", refused.message);
    // One interval later, one more; not two.
    let later = t0 + Duration::from_millis(100);
    u.admit_request(&held, later).unwrap();
    assert!(u.admit_request(&held, later).is_err());
    // After a long pause, a whole burst again, never more.
    let rested = t0 + Duration::from_secs(60);
    for _ in 0..3 {
        u.admit_request(&held, rested).unwrap();
    }
    assert!(u.admit_request(&held, rested).is_err());
    assert_eq!(u.refused[6].load(Ordering::Relaxed), 3);
}

/// `Limits::out_of_reach()` (benches) limits nothing, even requests that
/// arrive out of order, as concurrent ones do.
#[test]
fn out_of_reach_admits_every_request_in_any_order() {
    let u = usage(Limits::out_of_reach());
    let held = u.token("a1", "bench");
    let t0 = u.epoch + Duration::from_secs(5);
    for step in [3u64, 1, 2, 0, 3, 3] {
        u.admit_request(&held, t0 + Duration::from_nanos(step)).unwrap();
    }
}

#[test]
fn holders_are_their_own_and_idle_ones_are_swept() {
    let u = usage(Limits { requests_per_second_per_token: 1, request_burst_per_token: 1, ..Limits::default() });
    let now = Instant::now();
    u.admit_request(&u.token("a1", ""), now).unwrap();
    // Another token, and an address, have buckets of their own.
    u.admit_request(&u.token("b2", ""), now).unwrap();
    u.admit_request(&u.address("127.0.0.1".parse().unwrap()), now).unwrap();
    assert!(u.admit_request(&u.token("a1", ""), now).is_err());
    // Thousands of addresses seen once do not stay: idle holders go when
    // a shard grows (the recent ones, whose buckets are not full yet, stay).
    for n in 0..20_000u32 {
        u.address(std::net::Ipv4Addr::from(0x0a00_0000 + n).into());
    }
    let held: usize = u.shards.iter().map(|s| s.read().unwrap().addresses.len()).sum();
    assert!(held < 20_000 / 2, "{held} addresses kept");
}

#[test]
fn watches_and_connections_count_while_their_slots_live() {
    let u = Arc::new(usage(Limits { watches_per_token: 2, connections_per_ip: 1, ..Limits::default() }));
    let held = u.token("a1", "");
    let first = u.open_watch(&held).unwrap();
    let _second = u.open_watch(&held).unwrap();
    let refused = u.open_watch(&held).unwrap_err();
    assert_eq!(refused.code, ErrorCode::LimitExceeded);
    assert!(refused.message.contains("2 watches") && refused.message.contains("--max-watches-per-token"));
    drop(first);
    let _third = u.open_watch(&held).unwrap();

    let ip = "10.0.0.1".parse().unwrap();
    let connection = u.admit_connection(ip).unwrap();
    assert!(u.admit_connection(ip).is_none());
    assert!(u.admit_connection("10.0.0.2".parse().unwrap()).is_some());
    drop(connection);
    assert!(u.admit_connection(ip).is_some());
}

#[test]
fn a_lease_over_the_longest_ttl_or_the_count_is_refused() {
    let u = usage(Limits { leases_per_token: 2, lease_ttl: Duration::from_secs(60), ..Limits::default() });
    let held = u.token("a1", "");
    u.admit_lease(&held, 1, Duration::from_secs(60)).unwrap();
    let long = u.admit_lease(&held, 0, Duration::from_secs(61)).unwrap_err();
    assert_eq!(long.code, ErrorCode::InvalidTtl);
    assert!(long.message.contains("60 s") && long.message.contains("--max-lease-ttl"), "{}", long.message);
    let many = u.admit_lease(&held, 2, Duration::from_secs(10)).unwrap_err();
    assert_eq!(many.code, ErrorCode::LimitExceeded);
}

fn holding(u: &Usage, accessor: &str) -> (u64, u64) {
    let held = u.token(accessor, "");
    (held.keys.load(Ordering::Relaxed), held.bytes.load(Ordering::Relaxed))
}

#[test]
fn keys_belong_to_their_last_writer_until_deleted_or_their_lease_ends() {
    let u = usage(Limits::default());
    let (a, b) = (u.token("a", ""), u.token("b", ""));
    u.wrote(&a, "kv/x", 10, None, 1);
    u.wrote(&a, "kv/y", 20, Some(LeaseId(7)), 2);
    assert_eq!(holding(&u, "a"), (2, 30));
    // Rewritten smaller by a, then taken over by b.
    u.wrote(&a, "kv/x", 4, None, 3);
    assert_eq!(holding(&u, "a"), (2, 24));
    u.wrote(&b, "kv/x", 8, None, 4);
    assert_eq!((holding(&u, "a"), holding(&u, "b")), ((1, 20), (1, 8)));
    // A write that finishes after a later one changes nothing.
    u.wrote(&a, "kv/x", 100, None, 3);
    assert_eq!(holding(&u, "b"), (1, 8));
    // Deletes: one older than the write is ignored.
    u.deleted("kv/x", 2);
    assert_eq!(holding(&u, "b"), (1, 8));
    u.deleted("kv/x", 5);
    assert_eq!(holding(&u, "b"), (0, 0));
    // The lease ends: its keys go.
    u.lease_ended(LeaseId(7));
    assert_eq!(holding(&u, "a"), (0, 0));
    // A key moved off a lease stays when the lease ends.
    u.wrote(&a, "kv/z", 5, Some(LeaseId(8)), 6);
    u.wrote(&a, "kv/z", 5, None, 7);
    u.lease_ended(LeaseId(8));
    assert_eq!(holding(&u, "a"), (1, 5));
    u.wrote(&a, "kv/p/1", 1, None, 8);
    u.wrote(&b, "kv/p/2", 1, None, 9);
    u.deleted_prefix("kv/p/", 10);
    assert_eq!((holding(&u, "a"), holding(&u, "b")), ((1, 5), (0, 0)));
}

#[test]
fn a_write_is_refused_only_when_it_adds_past_a_quota() {
    let u = usage(Limits { keys_per_token: 2, bytes_per_token: 100, ..Limits::default() });
    let a = u.token("a", "");
    u.admit_write(&a, "k1", 60).unwrap();
    u.wrote(&a, "k1", 60, None, 1);
    u.wrote(&a, "k2", 30, None, 2);
    let keys = u.admit_write(&a, "k3", 1).unwrap_err();
    assert_eq!(keys.code, ErrorCode::QuotaExceeded);
    assert!(keys.message.contains("2 keys") && keys.message.contains("--max-keys-per-token"), "{}", keys.message);
    // Rewriting a key it holds adds no key, and within the bytes left.
    u.admit_write(&a, "k1", 70).unwrap();
    let bytes = u.admit_write(&a, "k2", 50).unwrap_err();
    assert!(bytes.message.contains("would add 20") && bytes.message.contains("--max-bytes-per-token"));
    // Shrinking is always allowed, even over a quota lowered since.
    u.admit_write(&a, "k1", 1).unwrap();
}
