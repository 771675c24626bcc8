//! Helpers shared by the test modules: bounded waits on watches.

use std::time::Duration;

use gantry_store::{Event, Store, StoreError, Watch};

/// Longest wait for one watch event before a test fails.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The next event, failing the test on an error, an end or a timeout.
pub async fn next_event(watch: &mut Watch) -> Event {
    match tokio::time::timeout(EVENT_TIMEOUT, watch.next_event()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(error))) => panic!("watch failed: {error}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {EVENT_TIMEOUT:?}"),
    }
}

/// The next `n` events.
pub async fn next_events(watch: &mut Watch, n: usize) -> Vec<Event> {
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(next_event(watch).await);
    }
    events
}

/// The next item, which must be an error.
pub async fn next_error(watch: &mut Watch) -> StoreError {
    match tokio::time::timeout(EVENT_TIMEOUT, watch.next_event()).await {
        Ok(Some(Err(error))) => error,
        Ok(Some(Ok(event))) => panic!("expected an error, got {event:?}"),
        Ok(None) => panic!("expected an error, the watch ended"),
        Err(_) => panic!("no watch error within {EVENT_TIMEOUT:?}"),
    }
}

/// Asserts that nothing arrives for a short while.
pub async fn assert_quiet(watch: &mut Watch) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(200), watch.next_event()).await {
        panic!("expected no event, got {item:?}");
    }
}

/// The keys under `prefix`, in order.
pub async fn keys_under(store: &Store, prefix: &str) -> Vec<String> {
    store.range(prefix, None).await.unwrap().kvs.into_iter().map(|kv| kv.key).collect()
}
