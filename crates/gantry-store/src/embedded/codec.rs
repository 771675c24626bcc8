//! How the embedded engine lays out records in redb values: a fixed header of
//! little-endian integers, then the bytes. Plain and versionless on purpose:
//! the table names carry the format version.

use bytes::Bytes;

use crate::{Event, EventKind, KeyValue, LeaseId};

const HEADER: usize = 32;

/// A key's metadata as stored in front of its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
    /// 0 for no lease.
    pub lease: i64,
}

pub(crate) fn encode_kv(meta: Meta, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + value.len());
    out.extend_from_slice(&meta.create_revision.to_le_bytes());
    out.extend_from_slice(&meta.mod_revision.to_le_bytes());
    out.extend_from_slice(&meta.version.to_le_bytes());
    out.extend_from_slice(&meta.lease.to_le_bytes());
    out.extend_from_slice(value);
    out
}

pub(crate) fn decode_meta(record: &[u8]) -> Option<Meta> {
    let header = record.get(..HEADER)?;
    let word = |i: usize| -> [u8; 8] { header[i * 8..i * 8 + 8].try_into().expect("8 bytes") };
    Some(Meta {
        create_revision: u64::from_le_bytes(word(0)),
        mod_revision: u64::from_le_bytes(word(1)),
        version: u64::from_le_bytes(word(2)),
        lease: i64::from_le_bytes(word(3)),
    })
}

pub(crate) fn decode_kv(key: &str, record: &[u8]) -> Option<KeyValue> {
    let meta = decode_meta(record)?;
    Some(KeyValue {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(&record[HEADER..]),
        create_revision: meta.create_revision,
        mod_revision: meta.mod_revision,
        version: meta.version,
        lease: (meta.lease != 0).then_some(LeaseId(meta.lease)),
    })
}

/// The events of one revision, in the order they happened.
pub(crate) fn encode_events(events: &[Event]) -> Vec<u8> {
    let size: usize = events.iter().map(|e| 9 + e.key.len() + e.value.len()).sum();
    let mut out = Vec::with_capacity(4 + size);
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for event in events {
        out.push(match event.kind {
            EventKind::Put => 1,
            EventKind::Delete => 2,
        });
        out.extend_from_slice(&(event.key.len() as u32).to_le_bytes());
        out.extend_from_slice(event.key.as_bytes());
        out.extend_from_slice(&(event.value.len() as u32).to_le_bytes());
        out.extend_from_slice(&event.value);
    }
    out
}

/// Decodes the events of `revision`, keeping those whose key starts with
/// `prefix`.
pub(crate) fn decode_events(
    revision: u64,
    record: &[u8],
    prefix: &str,
    out: &mut Vec<Event>,
) -> Option<()> {
    let mut reader = Reader(record);
    let count = reader.u32()?;
    for _ in 0..count {
        let kind = match reader.take(1)?[0] {
            1 => EventKind::Put,
            2 => EventKind::Delete,
            _ => return None,
        };
        let key_len = reader.u32()? as usize;
        let key = std::str::from_utf8(reader.take(key_len)?).ok()?;
        let value_len = reader.u32()? as usize;
        let value = reader.take(value_len)?;
        if key.starts_with(prefix) {
            out.push(Event {
                kind,
                key: key.to_owned(),
                value: Bytes::copy_from_slice(value),
                mod_revision: revision,
            });
        }
    }
    reader.0.is_empty().then_some(())
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

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_round_trip() {
        let meta = Meta {
            create_revision: 3,
            mod_revision: 9,
            version: 4,
            lease: 77,
        };
        let record = encode_kv(meta, b"{\"a\":1}");
        assert_eq!(decode_meta(&record), Some(meta));
        let kv = decode_kv("k/1", &record).unwrap();
        assert_eq!(kv.value, Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(kv.lease, Some(LeaseId(77)));
        assert_eq!(decode_meta(&record[..10]), None);
    }

    #[test]
    fn events_round_trip_and_filter_by_prefix() {
        let events = vec![
            Event {
                kind: EventKind::Put,
                key: "a/1".into(),
                value: Bytes::from_static(b"x"),
                mod_revision: 5,
            },
            Event {
                kind: EventKind::Delete,
                key: "b/1".into(),
                value: Bytes::new(),
                mod_revision: 5,
            },
        ];
        let record = encode_events(&events);
        let mut all = Vec::new();
        decode_events(5, &record, "", &mut all).unwrap();
        assert_eq!(all, events);
        let mut only_b = Vec::new();
        decode_events(5, &record, "b/", &mut only_b).unwrap();
        assert_eq!(only_b, events[1..]);
        assert!(decode_events(5, &record[..record.len() - 1], "", &mut Vec::new()).is_none());
    }
}
