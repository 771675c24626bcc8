//! What a log record's payload holds: a sequence of [`Entry`]s, each a tag
//! byte and little-endian fields. The file header carries the format
//! version, so the layout here has none of its own.

use bytes::Bytes;

use crate::{Event, EventKind};

/// A key as the engine keeps it: its value and metadata (the key itself is
/// the map key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    pub value: Bytes,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
    /// 0 for no lease.
    pub lease: i64,
}

/// One change of a revision, with its outcome already computed (metadata
/// included), so that replaying the log cannot decide differently from the
/// writer that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Mutation {
    Put { key: String, stored: Stored },
    Delete { key: String },
}

/// One step of the log. A batch record holds the entries of one group
/// commit; a checkpoint holds [`Entry::Checkpoint`] followed by the whole
/// state as [`Entry::Lease`], [`Entry::Key`] and [`Entry::History`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A new revision: these keys were written or deleted.
    Revision { revision: u64, mutations: Vec<Mutation> },
    /// A lease was granted (or, in a checkpoint, is alive).
    Lease { id: i64, ttl_secs: u64 },
    /// A lease ended; its keys' deletes are the revision before.
    EndLease { id: i64 },
    /// Watch history before this revision was discarded.
    Compact { oldest: u64 },
    /// Starts a checkpoint: forget everything, these are the counters.
    Checkpoint { revision: u64, oldest: u64, next_lease: i64 },
    /// A key that exists at the checkpoint.
    Key { key: String, stored: Stored },
    /// The events of one past revision, kept for watchers.
    History { revision: u64, events: Vec<Event> },
}

const REVISION: u8 = 1;
const LEASE: u8 = 2;
const END_LEASE: u8 = 3;
const COMPACT: u8 = 4;
const CHECKPOINT: u8 = 5;
const KEY: u8 = 6;
const HISTORY: u8 = 7;

const PUT: u8 = 1;
const DELETE: u8 = 2;

/// Appends `entry` to `out`.
pub(crate) fn encode(entry: &Entry, out: &mut Vec<u8>) {
    match entry {
        Entry::Revision { revision, mutations } => {
            out.push(REVISION);
            put_u64(out, *revision);
            put_u32(out, mutations.len());
            for mutation in mutations {
                match mutation {
                    Mutation::Put { key, stored } => {
                        out.push(PUT);
                        put_str(out, key);
                        put_stored(out, stored);
                    }
                    Mutation::Delete { key } => {
                        out.push(DELETE);
                        put_str(out, key);
                    }
                }
            }
        }
        Entry::Lease { id, ttl_secs } => {
            out.push(LEASE);
            put_u64(out, *id as u64);
            put_u64(out, *ttl_secs);
        }
        Entry::EndLease { id } => {
            out.push(END_LEASE);
            put_u64(out, *id as u64);
        }
        Entry::Compact { oldest } => {
            out.push(COMPACT);
            put_u64(out, *oldest);
        }
        Entry::Checkpoint { revision, oldest, next_lease } => {
            out.push(CHECKPOINT);
            put_u64(out, *revision);
            put_u64(out, *oldest);
            put_u64(out, *next_lease as u64);
        }
        Entry::Key { key, stored } => {
            out.push(KEY);
            put_str(out, key);
            put_stored(out, stored);
        }
        Entry::History { revision, events } => {
            out.push(HISTORY);
            put_u64(out, *revision);
            put_u32(out, events.len());
            for event in events {
                out.push(match event.kind {
                    EventKind::Put => PUT,
                    EventKind::Delete => DELETE,
                });
                put_str(out, &event.key);
                put_bytes(out, &event.value);
            }
        }
    }
}

/// Decodes every entry of one record's payload.
pub(crate) fn decode(payload: &[u8]) -> Result<Vec<Entry>, String> {
    let mut reader = Reader(payload);
    let mut entries = Vec::new();
    while !reader.0.is_empty() {
        entries.push(reader.entry().ok_or("an entry is cut short or garbled")?);
    }
    Ok(entries)
}

/// A stored key's value and metadata alone (the redb engine's table rows).
pub(crate) fn encode_stored(stored: &Stored, out: &mut Vec<u8>) {
    put_stored(out, stored);
}

/// Reads what [`encode_stored`] wrote.
pub(crate) fn decode_stored(bytes: &[u8]) -> Option<Stored> {
    let mut reader = Reader(bytes);
    let stored = reader.stored()?;
    reader.0.is_empty().then_some(stored)
}

/// Roughly how many bytes [`encode`] writes for a stored key: enough to
/// size buffers and compare the log with the live data.
pub(crate) fn stored_size(key: &str, stored: &Stored) -> usize {
    key.len() + stored.value.len() + STORED_OVERHEAD
}

/// What [`stored_size`] counts for a key besides its name and value.
pub(crate) const STORED_OVERHEAD: usize = 48;

fn put_u32(out: &mut Vec<u8>, n: usize) {
    // Keys, values and counts are bounded far below 4 GiB by the store's
    // limits, checked before anything reaches the writer.
    out.extend_from_slice(&u32::try_from(n).expect("bounded by the limits").to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_stored(out: &mut Vec<u8>, stored: &Stored) {
    put_u64(out, stored.create_revision);
    put_u64(out, stored.mod_revision);
    put_u64(out, stored.version);
    put_u64(out, stored.lease as u64);
    put_bytes(out, &stored.value);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<Bytes> {
        let len = self.u32()?;
        // Copied: a slice of the file buffer would keep all of it alive.
        Some(Bytes::copy_from_slice(self.take(len)?))
    }

    fn string(&mut self) -> Option<String> {
        let len = self.u32()?;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    fn stored(&mut self) -> Option<Stored> {
        Some(Stored {
            create_revision: self.u64()?,
            mod_revision: self.u64()?,
            version: self.u64()?,
            lease: self.u64()? as i64,
            value: self.bytes()?,
        })
    }

    /// A count of items that each take at least one byte: refuses counts
    /// the payload cannot hold, so garbage cannot ask for a huge allocation.
    fn count(&mut self) -> Option<usize> {
        let count = self.u32()?;
        (count <= self.0.len()).then_some(count)
    }

    fn entry(&mut self) -> Option<Entry> {
        Some(match self.u8()? {
            REVISION => {
                let revision = self.u64()?;
                let count = self.count()?;
                let mut mutations = Vec::with_capacity(count);
                for _ in 0..count {
                    mutations.push(match self.u8()? {
                        PUT => Mutation::Put { key: self.string()?, stored: self.stored()? },
                        DELETE => Mutation::Delete { key: self.string()? },
                        _ => return None,
                    });
                }
                Entry::Revision { revision, mutations }
            }
            LEASE => Entry::Lease { id: self.u64()? as i64, ttl_secs: self.u64()? },
            END_LEASE => Entry::EndLease { id: self.u64()? as i64 },
            COMPACT => Entry::Compact { oldest: self.u64()? },
            CHECKPOINT => {
                Entry::Checkpoint { revision: self.u64()?, oldest: self.u64()?, next_lease: self.u64()? as i64 }
            }
            KEY => Entry::Key { key: self.string()?, stored: self.stored()? },
            HISTORY => {
                let revision = self.u64()?;
                let count = self.count()?;
                let mut events = Vec::with_capacity(count);
                for _ in 0..count {
                    let kind = match self.u8()? {
                        PUT => EventKind::Put,
                        DELETE => EventKind::Delete,
                        _ => return None,
                    };
                    events.push(Event { kind, key: self.string()?, value: self.bytes()?, mod_revision: revision });
                }
                Entry::History { revision, events }
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(value: &'static [u8], lease: i64) -> Stored {
        Stored { value: Bytes::from_static(value), create_revision: 3, mod_revision: 9, version: 4, lease }
    }

    #[test]
    fn every_entry_round_trips() {
        let entries = vec![
            Entry::Revision {
                revision: 9,
                mutations: vec![
                    Mutation::Put { key: "machines/a".into(), stored: stored(b"{\"a\":1}", 77) },
                    Mutation::Delete { key: "machines/b".into() },
                ],
            },
            Entry::Lease { id: 77, ttl_secs: 10 },
            Entry::EndLease { id: 77 },
            Entry::Compact { oldest: 5 },
            Entry::Checkpoint { revision: 9, oldest: 5, next_lease: 78 },
            Entry::Key { key: "k".into(), stored: stored(b"", 0) },
            Entry::History {
                revision: 8,
                events: vec![Event {
                    kind: EventKind::Delete,
                    key: "k/old".into(),
                    value: Bytes::new(),
                    mod_revision: 8,
                }],
            },
        ];
        let mut payload = Vec::new();
        for entry in &entries {
            encode(entry, &mut payload);
        }
        assert_eq!(decode(&payload).unwrap(), entries);
        for cut in 1..payload.len() {
            // Either an error, or fewer entries if the cut fell between two.
            if let Ok(decoded) = decode(&payload[..cut]) {
                assert!(decoded.len() < entries.len(), "cut at {cut}");
            }
        }
        assert!(decode(&[99]).is_err());
    }
}
