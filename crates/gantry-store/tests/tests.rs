//! Integration tests of gantry-store: one conformance suite run against the
//! embedded engine (on its log and on redb) and against a real etcd, plus engine-specific and
//! crash-safety tests. One test binary, one module per concern.

mod crash;
mod embedded;
mod etcd;
mod failover;
mod log_file;
mod redb;
mod suite;
mod support;

/// Generates one `#[tokio::test]` per suite case, each on a fresh store made
/// by `$fixture` (which keeps whatever the store needs alive).
macro_rules! conformance {
    ($fixture:path => $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture = $fixture().await;
                crate::suite::$case(&fixture.store).await;
            }
        )*
    };
}
pub(crate) use conformance;

/// Every case of the suite, for `conformance!`.
macro_rules! all_cases {
    ($fixture:path) => {
        crate::conformance!($fixture =>
            crud,
            range_is_sorted_by_key_and_limited,
            revisions_only_grow,
            delete_prefix_is_one_revision,
            compare_and_set_race_has_exactly_one_winner,
            txn_applies_all_or_nothing,
            lease_expiry_deletes_keys_with_events,
            keep_alive_keeps_keys,
            revoke_deletes_keys_with_events,
            lease_ids_are_random,
            watch_delivers_every_event_in_order_exactly_once,
            watch_resumes_from_a_revision_after_a_disconnect,
            watch_from_zero_sees_only_new_changes,
            watch_from_a_compacted_revision_fails_with_compacted,
            many_watchers_of_one_prefix_all_see_a_write,
            invalid_input_is_rejected_and_nothing_is_stored,
        );
    };
}
pub(crate) use all_cases;
