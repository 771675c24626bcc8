//! The redb engine's file: the same writer, group commit and in-memory
//! state as the log engine, with each batch committed as one redb write
//! transaction (`Durability::Immediate`: synced before it returns, and so
//! before any caller is answered) instead of appended as one log record.
//! redb keeps the file compact itself, so there are no checkpoints.
//!
//! Tables: `kv` (key → value and metadata, [`codec::encode_stored`]),
//! `leases` (id → TTL in seconds), `history` (revision → that revision's
//! [`Entry::Revision`], for watchers resuming across restarts) and `meta`
//! (`revision`, `oldest`). Opening reads them all into a [`State`], as the
//! log engine's replay does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::codec::{self, Entry, Mutation};
use super::state::{HistoryLimits, State};
use crate::{Event, EventKind, StoreError};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const LEASES: TableDefinition<i64, u64> = TableDefinition::new("leases");
const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_OLDEST: &str = "oldest";

/// The open redb file.
pub(crate) struct RedbFile {
    db: Database,
    path: PathBuf,
    limits: HistoryLimits,
    /// The oldest revision of history kept in the file.
    oldest: u64,
}

impl std::fmt::Debug for RedbFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbFile").field("path", &self.path).finish_non_exhaustive()
    }
}

/// A redb error as the store reports it.
pub(crate) fn redb_error(path: &Path, action: &'static str, source: impl Into<redb::Error>) -> StoreError {
    let source = std::io::Error::other(source.into());
    StoreError::Embedded { path: path.to_owned(), action, source: Arc::new(source) }
}

/// Opens (creating if needed) the redb file at `path` and reads it into a
/// [`State`]. redb locks the file: a second open fails while it is open.
pub(crate) fn open(path: &Path, limits: HistoryLimits) -> Result<(RedbFile, State), StoreError> {
    let db = Database::create(path).map_err(|e| redb_error(path, "open", e))?;
    let corrupt = |what: String| StoreError::Corrupt { path: path.to_owned(), what };
    let read = || -> Result<Result<(State, u64), StoreError>, redb::Error> {
        // Create the tables, so that the reads below find them.
        let txn = db.begin_write()?;
        txn.open_table(KV)?;
        txn.open_table(HISTORY)?;
        txn.open_table(LEASES)?;
        txn.open_table(META)?;
        txn.commit()?;

        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        let revision = meta.get(META_REVISION)?.map_or(0, |guard| guard.value());
        let oldest = meta.get(META_OLDEST)?.map_or(1, |guard| guard.value());
        let mut state = State::new(limits);
        let mut apply = |entry: Entry| state.apply(entry, None);
        if let Err(reason) = apply(Entry::Checkpoint { revision, oldest, next_lease: 1 }) {
            return Ok(Err(corrupt(reason)));
        }
        for row in txn.open_table(LEASES)?.iter()? {
            let (id, ttl_secs) = row?;
            let _ = apply(Entry::Lease { id: id.value(), ttl_secs: ttl_secs.value() });
        }
        for row in txn.open_table(KV)?.iter()? {
            let (key, value) = row?;
            let key = key.value().to_owned();
            let Some(stored) = codec::decode_stored(value.value()) else {
                return Ok(Err(corrupt(format!("the row of key {key:?} does not decode"))));
            };
            let _ = apply(Entry::Key { key, stored });
        }
        for row in txn.open_table(HISTORY)?.range(oldest..)? {
            let (revision, bytes) = row?;
            let events = match codec::decode(bytes.value()).as_deref() {
                Ok([Entry::Revision { revision: r, mutations }]) if *r == revision.value() => events(*r, mutations),
                _ => return Ok(Err(corrupt(format!("history of revision {} does not decode", revision.value())))),
            };
            if let Err(reason) = apply(Entry::History { revision: revision.value(), events }) {
                return Ok(Err(corrupt(reason)));
            }
        }
        Ok(Ok((state, oldest)))
    };
    let (state, oldest) = read().map_err(|e| redb_error(path, "read", e))??;
    Ok((RedbFile { db, path: path.to_owned(), limits, oldest }, state))
}

/// A revision's mutations as the events a watcher sees.
fn events(revision: u64, mutations: &[Mutation]) -> Vec<Event> {
    mutations
        .iter()
        .map(|mutation| match mutation {
            Mutation::Put { key, stored } => {
                Event { kind: EventKind::Put, key: key.clone(), value: stored.value.clone(), mod_revision: revision }
            }
            Mutation::Delete { key } => {
                Event { kind: EventKind::Delete, key: key.clone(), value: bytes::Bytes::new(), mod_revision: revision }
            }
        })
        .collect()
}

impl RedbFile {
    /// Commits one batch's entries as one durable write transaction.
    pub(crate) fn commit(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        self.write(entries).map_err(|e| redb_error(&self.path, "commit", e))
    }

    /// Compacts the file (redb's own: free pages released).
    pub(crate) fn compact(&mut self) -> Result<(), StoreError> {
        self.db.compact().map(drop).map_err(|e| redb_error(&self.path, "compact", e))
    }

    fn write(&mut self, entries: &[Entry]) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        let mut oldest = self.oldest;
        {
            let mut kv = txn.open_table(KV)?;
            let mut leases = txn.open_table(LEASES)?;
            let mut history = txn.open_table(HISTORY)?;
            let mut meta = txn.open_table(META)?;
            let mut row = Vec::new();
            for entry in entries {
                match entry {
                    Entry::Revision { revision, mutations } => {
                        for mutation in mutations {
                            match mutation {
                                Mutation::Put { key, stored } => {
                                    row.clear();
                                    codec::encode_stored(stored, &mut row);
                                    kv.insert(key.as_str(), row.as_slice())?;
                                }
                                Mutation::Delete { key } => {
                                    kv.remove(key.as_str())?;
                                }
                            }
                        }
                        row.clear();
                        codec::encode(entry, &mut row);
                        history.insert(*revision, row.as_slice())?;
                        meta.insert(META_REVISION, *revision)?;
                        // The history the state keeps: the last `revisions`.
                        let keep_from = revision.saturating_sub(self.limits.revisions) + 1;
                        if keep_from > oldest {
                            history.retain_in(oldest..keep_from, |_, _| false)?;
                            oldest = keep_from;
                        }
                    }
                    Entry::Lease { id, ttl_secs } => {
                        leases.insert(*id, *ttl_secs)?;
                    }
                    Entry::EndLease { id } => {
                        leases.remove(*id)?;
                    }
                    Entry::Compact { oldest: compacted } => {
                        if *compacted > oldest {
                            history.retain_in(oldest..*compacted, |_, _| false)?;
                            oldest = *compacted;
                        }
                    }
                    // Only a log checkpoint holds these; the writer never
                    // commits them.
                    Entry::Checkpoint { .. } | Entry::Key { .. } | Entry::History { .. } => {}
                }
            }
            meta.insert(META_OLDEST, oldest)?;
        }
        // `Durability::Immediate` is redb's default: the commit is synced.
        txn.commit()?;
        self.oldest = oldest;
        Ok(())
    }
}
