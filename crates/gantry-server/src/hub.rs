//! Watch coalescing: every watcher of one prefix follows one store watch
//! (a *hub*), whose events are encoded once and broadcast as ready-made
//! SSE frames. A thousand agents watching `instances/` cost one store watch
//! (on etcd: one etcd watch instead of a thousand) and one encoding per
//! event; each watcher's own work is a reference-count bump and a socket
//! write. (etcd's gRPC proxy coalesces watchers the same way.)
//!
//! Exactly-once across the hand-over: a watcher that starts from an older
//! revision reads that history from a private store watch first. It
//! subscribes to the hub before anything else, noting the position `L` of
//! the last frame the hub had broadcast: its receiver then holds every frame
//! after `L`. The private watch delivers up to and including `L`; the first
//! event it yields after `L` is dropped (the receiver has it) and the
//! watcher switches to the hub. A watcher too slow for the broadcast buffer
//! goes back to a private catch-up from the last event it delivered, the
//! same way: it never misses an event silently.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use gantry_store::{Event, Store, StoreError, Watch};
use tokio::sync::broadcast;

/// Frames a hub keeps for watchers that are behind; one further behind
/// catches up from the store's history instead.
const BUFFERED_FRAMES: usize = 1024;

/// The position of an event in a watch: its revision and its index among
/// the prefix's events of that revision (a transaction changes several keys
/// in one revision). SSE ids are `REVISION.INDEX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub revision: u64,
    pub index: u64,
}

impl Position {
    /// The position right after this one.
    pub fn next(self) -> Position {
        match self.index.checked_add(1) {
            Some(index) => Position { revision: self.revision, index },
            None => Position { revision: self.revision + 1, index: 0 },
        }
    }
}

/// Numbers a watch's events: the index restarts at each revision.
#[derive(Debug, Default)]
struct Counter {
    last: Option<Position>,
}

impl Counter {
    fn position(&mut self, revision: u64) -> Position {
        let position = match self.last {
            Some(last) if last.revision == revision => last.next(),
            _ => Position { revision, index: 0 },
        };
        self.last = Some(position);
        position
    }
}

/// One event, encoded, with what access control needs to decide who may
/// see it (read once from the value, for every watcher).
#[derive(Debug)]
pub struct Frame {
    pub position: Position,
    pub bytes: Bytes,
    /// The event's store key.
    pub key: Box<str>,
    pub owner: FrameOwner,
}

/// Whom an event's document belongs to (see `access::Owner`).
#[derive(Debug, Default)]
pub struct FrameOwner {
    pub machine: Option<Box<str>>,
    pub federation: Option<Box<str>>,
    pub address: Option<Box<str>>,
}

/// What a watcher receives: an event's frame, or the end of the watch.
pub enum Item {
    Frame(Arc<Frame>),
    /// The watch cannot go on (history compacted, store closed): the
    /// watcher is told to re-read, and the stream ends.
    End(StoreError),
}

/// How events become frames (the SSE encoding lives with the route).
pub type Encode = fn(&Event, Position) -> Frame;

/// The running hubs, one per watched prefix.
pub struct Hubs {
    store: Store,
    encode: Encode,
    /// Prefix -> its hub, while anyone follows it. An async lock: starting
    /// a hub awaits the store, and two watchers of a new prefix must not
    /// start two.
    hubs: tokio::sync::Mutex<HashMap<String, Weak<Hub>>>,
    /// Hubs running now (for /metrics).
    running: Arc<AtomicI64>,
}

impl std::fmt::Debug for Hubs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hubs").field("running", &self.running()).finish_non_exhaustive()
    }
}

struct Hub {
    /// The last frame broadcast; a watcher subscribes under this lock, so
    /// it knows exactly which frames its receiver will hold.
    last: Mutex<Position>,
    /// A receiver kept only to subscribe new ones from (it is never read;
    /// the channel drops what it holds past the buffer).
    template: broadcast::Receiver<Arc<Frame>>,
    /// Why the hub's store watch ended, once it has.
    ended: OnceLock<StoreError>,
    /// The broadcasting task, stopped with the hub.
    task: OnceLock<tokio::task::AbortHandle>,
    running: Arc<AtomicI64>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
        self.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Hub {
    /// A receiver of every frame after the returned position.
    fn subscribe(&self) -> (broadcast::Receiver<Arc<Frame>>, Position) {
        let last = self.last.lock().expect("hub lock");
        (self.template.resubscribe(), *last)
    }
}

impl Hubs {
    pub fn new(store: Store, encode: Encode) -> Hubs {
        Hubs { store, encode, hubs: tokio::sync::Mutex::default(), running: Arc::default() }
    }

    /// How many store watches the hubs hold open.
    pub fn running(&self) -> i64 {
        self.running.load(Ordering::Relaxed)
    }

    /// Follows `prefix` from `start` (`None`: from now): each event once,
    /// in order, as frames.
    pub async fn follow(&self, prefix: &str, start: Option<Position>) -> Result<Follower, StoreError> {
        let hub = self.hub(prefix).await?;
        let (receiver, last) = hub.subscribe();
        let mut follower = Follower {
            store: self.store.clone(),
            encode: self.encode,
            prefix: prefix.to_string(),
            hub,
            receiver,
            next: last.next(),
            catch_up: None,
        };
        match start {
            // Behind the hub: the history up to `last` first.
            Some(start) if start <= last => {
                follower.next = start;
                follower.catch_up = Some(follower.private(last).await?);
            }
            Some(start) => follower.next = start,
            None => {}
        }
        Ok(follower)
    }

    async fn hub(&self, prefix: &str) -> Result<Arc<Hub>, StoreError> {
        let mut hubs = self.hubs.lock().await;
        if let Some(hub) = hubs.get(prefix).and_then(Weak::upgrade)
            && hub.ended.get().is_none()
        {
            return Ok(hub);
        }
        hubs.retain(|_, hub| hub.strong_count() > 0);
        let from = self.store.revision().await? + 1;
        let watch = self.store.watch(prefix, from).await?;
        let (sender, template) = broadcast::channel(BUFFERED_FRAMES);
        self.running.fetch_add(1, Ordering::Relaxed);
        let hub = Arc::new(Hub {
            // Nothing before `from` is broadcast, everything after is.
            last: Mutex::new(Position { revision: from - 1, index: u64::MAX }),
            template,
            ended: OnceLock::new(),
            task: OnceLock::new(),
            running: Arc::clone(&self.running),
        });
        let task = tokio::spawn(broadcast_events(watch, sender, Arc::downgrade(&hub), self.encode));
        let _ = hub.task.set(task.abort_handle());
        hubs.insert(prefix.to_string(), Arc::downgrade(&hub));
        Ok(hub)
    }
}

/// The hub's task: encodes each event of the store watch once and
/// broadcasts it. Ends with the watch (its error is kept for the
/// followers), or when the last follower has gone.
async fn broadcast_events(mut watch: Watch, sender: broadcast::Sender<Arc<Frame>>, hub: Weak<Hub>, encode: Encode) {
    let mut counter = Counter::default();
    loop {
        let item = watch.next().await;
        let Some(hub) = hub.upgrade() else { return };
        match item {
            Some(Ok(event)) => {
                let position = counter.position(event.mod_revision);
                let frame = Arc::new(encode(&event, position));
                let mut last = hub.last.lock().expect("hub lock");
                // No receiver is not an error: followers come and go.
                let _ = sender.send(frame);
                *last = position;
            }
            Some(Err(error)) => {
                let _ = hub.ended.set(error);
                return;
            }
            None => {
                let _ = hub.ended.set(StoreError::Closed);
                return;
            }
        }
    }
}

/// One watcher: a private catch-up while it is behind the hub, then the
/// hub's frames.
pub struct Follower {
    store: Store,
    encode: Encode,
    prefix: String,
    hub: Arc<Hub>,
    receiver: broadcast::Receiver<Arc<Frame>>,
    /// The first position not delivered yet.
    next: Position,
    catch_up: Option<CatchUp>,
}

/// A private store watch delivering history up to `until`, the last
/// position the hub had broadcast when the follower subscribed.
struct CatchUp {
    watch: Watch,
    counter: Counter,
    until: Position,
}

impl Follower {
    /// The next frame, or the end.
    pub async fn next(&mut self) -> Item {
        loop {
            let step = match &mut self.catch_up {
                Some(catch_up) => match catch_up.watch.next().await {
                    Some(Ok(event)) => {
                        let position = catch_up.counter.position(event.mod_revision);
                        if position > catch_up.until {
                            // The hub's receiver holds this one and all after.
                            self.catch_up = None;
                            continue;
                        }
                        if position < self.next {
                            continue;
                        }
                        if position == catch_up.until {
                            // Caught up: the receiver holds what follows.
                            self.catch_up = None;
                        }
                        self.next = position.next();
                        return Item::Frame(Arc::new((self.encode)(&event, position)));
                    }
                    Some(Err(error)) => Err(error),
                    None => Err(StoreError::Closed),
                },
                None => match self.receiver.recv().await {
                    Ok(frame) if frame.position < self.next => continue,
                    Ok(frame) => {
                        self.next = frame.position.next();
                        return Item::Frame(frame);
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => self.fall_back().await,
                    Err(broadcast::error::RecvError::Closed) => {
                        Err(self.hub.ended.get().map_or(StoreError::Closed, StoreError::copy_for_another_caller))
                    }
                },
            };
            if let Err(error) = step {
                return Item::End(error);
            }
        }
    }

    /// Behind the broadcast buffer: subscribe anew and read what was missed
    /// from the store's history.
    async fn fall_back(&mut self) -> Result<(), StoreError> {
        let (receiver, last) = self.hub.subscribe();
        self.receiver = receiver;
        if self.next <= last {
            self.catch_up = Some(self.private(last).await?);
        }
        Ok(())
    }

    /// A catch-up from `self.next` to `until` (the future holds no
    /// reference to the follower, whose watch is not `Sync`).
    fn private(&self, until: Position) -> impl Future<Output = Result<CatchUp, StoreError>> + Send + use<> {
        let (store, prefix, from) = (self.store.clone(), self.prefix.clone(), self.next.revision);
        async move {
            let watch = store.watch(&prefix, from).await?;
            Ok(CatchUp { watch, counter: Counter::default(), until })
        }
    }
}

/// How often an idle watch stream carries an SSE comment, so that proxies
/// and clients see it alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use gantry_store::{EmbeddedConfig, StoreConfig};

    use super::*;

    /// The revision in a frame's `id: REVISION.INDEX` line.
    fn revision_of(frame: &Frame) -> u64 {
        let frame = &frame.bytes;
        let text = std::str::from_utf8(frame).unwrap();
        let id = text.strip_prefix("id: ").unwrap().split('\n').next().unwrap();
        id.split_once('.').unwrap().0.parse().unwrap()
    }

    async fn put_many(store: &Store, prefix: &str, n: usize) -> Vec<u64> {
        let mut revisions = Vec::with_capacity(n);
        let keys: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
        for chunk in keys.chunks(64) {
            let puts = chunk.iter().map(|key| store.put(key, "v"));
            for written in futures::future::join_all(puts).await {
                revisions.push(written.unwrap());
            }
        }
        revisions.sort_unstable();
        revisions
    }

    /// A follower that does not read while more than the broadcast buffer
    /// goes by reads the rest from the history: every event once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_behind_the_buffer_catches_up_from_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::Embedded(EmbeddedConfig::in_dir(dir.path()))).await.unwrap();
        let hubs = Hubs::new(store.clone(), crate::watch::encode);
        let mut slow = hubs.follow("kv/lag/", None).await.unwrap();
        let mut reading = hubs.follow("kv/lag/", None).await.unwrap();
        assert_eq!(hubs.running(), 1);
        let written = put_many(&store, "kv/lag/", BUFFERED_FRAMES + 300).await;
        for follower in [&mut reading, &mut slow] {
            let mut seen = Vec::with_capacity(written.len());
            while seen.len() < written.len() {
                match tokio::time::timeout(Duration::from_secs(10), follower.next()).await.expect("a frame in time") {
                    Item::Frame(frame) => seen.push(revision_of(&frame)),
                    Item::End(error) => panic!("the watch ended: {error}"),
                }
            }
            assert_eq!(seen, written);
        }
        // Both are live again: the next write reaches them at once.
        let revision = store.put("kv/lag/after", "v").await.unwrap();
        for follower in [&mut reading, &mut slow] {
            match tokio::time::timeout(Duration::from_secs(10), follower.next()).await.expect("the live event in time")
            {
                Item::Frame(frame) => assert_eq!(revision_of(&frame), revision),
                Item::End(error) => panic!("the watch ended: {error}"),
            }
        }
        drop((slow, reading));
        // The broadcasting task may hold the hub for the event it is
        // handing out on another thread; the hub stops when it lets go.
        let started = std::time::Instant::now();
        while hubs.running() != 0 && started.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(hubs.running(), 0, "the hub stops with its last follower");
    }

    /// A follower starting at a revision the history no longer holds is
    /// told so (the route turns it into a `reset` event).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_start_before_the_history_is_refused_as_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::Embedded(EmbeddedConfig::in_dir(dir.path()))).await.unwrap();
        let hubs = Hubs::new(store.clone(), crate::watch::encode);
        let written = put_many(&store, "kv/old/", 5).await;
        store.compact(written[3]).await.unwrap();
        let start = Some(Position { revision: written[0], index: 0 });
        // Engines say so when the watch starts (etcd) or at its first event
        // (embedded).
        let refused = match hubs.follow("kv/old/", start).await {
            Err(error) => error,
            Ok(mut follower) => match follower.next().await {
                Item::End(error) => error,
                Item::Frame(frame) => panic!("expected Compacted, got {frame:?}"),
            },
        };
        assert!(matches!(refused, StoreError::Compacted { .. }), "{refused}");
    }
}
