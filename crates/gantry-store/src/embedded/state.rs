//! The embedded engine's in-memory state: every key, every lease, and the
//! recent watch history. Built by replaying the log at open and changed
//! afterwards only by the writer, with the same [`State::apply`], after the
//! entries are durable in the log.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;

use bytes::Bytes;

use super::codec::{self, Entry, Mutation, Stored};
use crate::{Event, EventKind};

/// How much watch history to keep.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HistoryLimits {
    /// At most this many revisions...
    pub revisions: u64,
    /// ...and about this many bytes of keys and values.
    pub bytes: usize,
}

/// The events of one revision.
#[derive(Debug)]
pub(crate) struct PastRevision {
    pub revision: u64,
    pub events: Vec<Event>,
    bytes: usize,
}

#[derive(Debug)]
pub(crate) struct State {
    pub kv: BTreeMap<String, Stored>,
    /// Live leases: id → TTL in seconds.
    pub leases: HashMap<i64, u64>,
    /// (lease, key) for every key attached to a lease.
    pub lease_keys: BTreeSet<(i64, String)>,
    /// Revisions `oldest..=revision`, each with its events.
    pub history: VecDeque<PastRevision>,
    /// The last revision.
    pub revision: u64,
    /// The oldest revision a watcher can still start from.
    pub oldest: u64,
    /// Unused since lease ids are drawn at random (`LeaseId::random`):
    /// kept, as read, so checkpoints keep their format.
    pub next_lease: i64,
    /// About how many bytes a checkpoint of the keys takes.
    pub kv_bytes: usize,
    /// About how many bytes the history holds.
    pub history_bytes: usize,
    limits: HistoryLimits,
}

/// Per-event overhead counted against the history's byte budget.
const EVENT_OVERHEAD: usize = 64;

impl State {
    pub(crate) fn new(limits: HistoryLimits) -> State {
        State {
            kv: BTreeMap::new(),
            leases: HashMap::new(),
            lease_keys: BTreeSet::new(),
            history: VecDeque::new(),
            revision: 0,
            oldest: 1,
            next_lease: 1,
            kv_bytes: 0,
            history_bytes: 0,
            limits,
        }
    }

    /// Applies one entry, adding the events of a new revision to `emitted`
    /// when given. Refuses an entry that cannot follow the state (a replayed
    /// log with a gap).
    pub(crate) fn apply(&mut self, entry: Entry, emitted: Option<&mut Vec<Event>>) -> Result<(), String> {
        match entry {
            Entry::Revision { revision, mutations } => {
                if revision != self.revision + 1 {
                    return Err(format!("revision {revision} follows revision {}", self.revision));
                }
                let mut events = Vec::with_capacity(mutations.len());
                for mutation in mutations {
                    events.push(match mutation {
                        Mutation::Put { key, stored } => {
                            let event = Event {
                                kind: EventKind::Put,
                                key: key.clone(),
                                value: stored.value.clone(),
                                mod_revision: revision,
                            };
                            self.insert(key, stored);
                            event
                        }
                        Mutation::Delete { key } => {
                            self.remove(&key);
                            Event { kind: EventKind::Delete, key, value: Bytes::new(), mod_revision: revision }
                        }
                    });
                }
                self.revision = revision;
                if let Some(emitted) = emitted {
                    emitted.extend(events.iter().cloned());
                }
                self.remember(revision, events);
                self.trim_history();
            }
            Entry::Lease { id, ttl_secs } => {
                self.leases.insert(id, ttl_secs);
            }
            Entry::EndLease { id } => {
                self.leases.remove(&id);
            }
            Entry::Compact { oldest } => {
                if oldest > self.revision + 1 {
                    return Err(format!("compaction to {oldest} beyond revision {}", self.revision));
                }
                self.oldest = self.oldest.max(oldest);
                self.trim_history();
            }
            Entry::Checkpoint { revision, oldest, next_lease } => {
                *self = State { revision, oldest, next_lease, ..State::new(self.limits) };
            }
            Entry::Key { key, stored } => self.insert(key, stored),
            Entry::History { revision, events } => {
                let expected = self.history.back().map_or(self.oldest, |p| p.revision + 1);
                if revision != expected || revision > self.revision {
                    return Err(format!("history of revision {revision} where {expected} was expected"));
                }
                self.remember(revision, events);
                self.trim_history();
            }
        }
        Ok(())
    }

    /// The entries of a checkpoint: everything [`State::apply`] needs to
    /// rebuild this state from nothing, in order.
    pub(crate) fn checkpoint(&self) -> impl Iterator<Item = Entry> + '_ {
        let counters = Entry::Checkpoint { revision: self.revision, oldest: self.oldest, next_lease: self.next_lease };
        let leases = self.leases.iter().map(|(&id, &ttl_secs)| Entry::Lease { id, ttl_secs });
        let keys = self.kv.iter().map(|(key, stored)| Entry::Key { key: key.clone(), stored: stored.clone() });
        let history =
            self.history.iter().map(|past| Entry::History { revision: past.revision, events: past.events.clone() });
        std::iter::once(counters).chain(leases).chain(keys).chain(history)
    }

    /// The keys under `prefix`, in order.
    pub(crate) fn range<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a Stored)> + 'a {
        self.kv
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(key, _)| key.starts_with(prefix))
    }

    /// The keys attached to lease `id`, in order.
    pub(crate) fn keys_of_lease(&self, id: i64) -> impl Iterator<Item = &str> + '_ {
        self.lease_keys
            .range((id, String::new())..)
            .take_while(move |(lease, _)| *lease == id)
            .map(|(_, key)| key.as_str())
    }

    fn insert(&mut self, key: String, stored: Stored) {
        self.kv_bytes += codec::stored_size(&key, &stored);
        if stored.lease != 0 {
            self.lease_keys.insert((stored.lease, key.clone()));
        }
        if let Some(old) = self.kv.insert(key.clone(), stored) {
            self.forget(&key, &old);
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.kv.remove(key) {
            self.forget(key, &old);
        }
    }

    /// Drops the accounting and lease index of a key's previous version.
    fn forget(&mut self, key: &str, old: &Stored) {
        self.kv_bytes -= codec::stored_size(key, old);
        if old.lease != 0 {
            let current = self.kv.get(key).map_or(0, |stored| stored.lease);
            if current != old.lease {
                self.lease_keys.remove(&(old.lease, key.to_owned()));
            }
        }
    }

    fn remember(&mut self, revision: u64, events: Vec<Event>) {
        let bytes = events.iter().map(|event| event.key.len() + event.value.len() + EVENT_OVERHEAD).sum();
        self.history_bytes += bytes;
        self.history.push_back(PastRevision { revision, events, bytes });
    }

    /// Drops history older than the limits or the last compaction.
    fn trim_history(&mut self) {
        let keep_from = self.revision.saturating_sub(self.limits.revisions) + 1;
        self.oldest = self.oldest.max(keep_from);
        while let Some(front) = self.history.front() {
            if front.revision >= self.oldest && self.history_bytes <= self.limits.bytes {
                break;
            }
            self.oldest = self.oldest.max(front.revision + 1);
            self.history_bytes -= front.bytes;
            self.history.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(value: &'static str, revision: u64, lease: i64) -> Stored {
        Stored {
            value: Bytes::from_static(value.as_bytes()),
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            lease,
        }
    }

    fn put(revision: u64, key: &str, lease: i64) -> Entry {
        Entry::Revision {
            revision,
            mutations: vec![Mutation::Put { key: key.into(), stored: stored("v", revision, lease) }],
        }
    }

    #[test]
    fn a_checkpoint_rebuilds_the_same_state() {
        let limits = HistoryLimits { revisions: 3, bytes: 1 << 20 };
        let mut state = State::new(limits);
        state.apply(Entry::Lease { id: 7, ttl_secs: 5 }, None).unwrap();
        for revision in 1..=5 {
            state.apply(put(revision, &format!("k/{revision}"), 7), None).unwrap();
        }
        state.apply(put(6, "k/1", 0), None).unwrap();
        assert_eq!((state.oldest, state.history.len()), (4, 3));
        assert_eq!(state.keys_of_lease(7).collect::<Vec<_>>(), ["k/2", "k/3", "k/4", "k/5"]);

        let mut rebuilt = State::new(limits);
        for entry in state.checkpoint() {
            rebuilt.apply(entry, None).unwrap();
        }
        assert_eq!(rebuilt.kv, state.kv);
        assert_eq!(rebuilt.leases, state.leases);
        assert_eq!(rebuilt.lease_keys, state.lease_keys);
        assert_eq!((rebuilt.revision, rebuilt.oldest, rebuilt.next_lease), (6, 4, state.next_lease));
        assert_eq!((rebuilt.kv_bytes, rebuilt.history_bytes), (state.kv_bytes, state.history_bytes));
        let revisions: Vec<u64> = rebuilt.history.iter().map(|p| p.revision).collect();
        assert_eq!(revisions, [4, 5, 6]);
    }

    #[test]
    fn gaps_are_refused_and_the_byte_budget_trims_history() {
        let mut state = State::new(HistoryLimits { revisions: 100, bytes: 2 * (3 + 1 + EVENT_OVERHEAD) });
        assert!(state.apply(put(2, "k/a", 0), None).is_err());
        for revision in 1..=4 {
            state.apply(put(revision, "k/a", 0), None).unwrap();
        }
        assert_eq!((state.oldest, state.history.len()), (3, 2));
        assert!(state.apply(Entry::Compact { oldest: 9 }, None).is_err());
        state.apply(Entry::Compact { oldest: 4 }, None).unwrap();
        assert_eq!((state.oldest, state.history.len()), (4, 1));
    }
}
