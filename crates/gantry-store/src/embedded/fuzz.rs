//! Hostile bytes: property tests (proptest, a bounded number of cases per
//! `cargo test`; `PROPTEST_CASES` for more) of the record parser
//! ([`log::read`]), the entry decoder ([`codec::decode`]) and the whole
//! replay of a log or checkpoint file ([`file::replay`]):
//!
//! - arbitrary bytes never panic (nor loop: every case ends);
//! - what is read is exactly a run of intact records from the file's start:
//!   never bytes that were not written as a record;
//! - a log cut anywhere (a torn append) gives back the records before the
//!   cut, and a checkpoint followed by records, cut anywhere, rebuilds the
//!   same state as the records before the cut;
//! - a flipped bit gives back a prefix of the records or an error, never
//!   other data, and is an error when intact records follow it.

use bytes::Bytes;
use proptest::prelude::*;

use super::codec::{self, Entry, Mutation, Stored};
use super::file;
use super::log::{self, Damage, Tail};
use super::state::{HistoryLimits, State};
use super::writer;
use crate::{Event, EventKind};

const LIMITS: HistoryLimits = HistoryLimits { revisions: 50, bytes: 1 << 20 };

fn log_of(payloads: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
    let mut data = log::file_header().to_vec();
    let mut ends = vec![data.len()];
    for payload in payloads {
        log::frame(payload, &mut data);
        ends.push(data.len());
    }
    (data, ends)
}

/// Reads `data`, returning the payloads handed out.
fn read_all(data: &[u8]) -> Result<(Vec<Vec<u8>>, usize, Tail), Damage> {
    let mut seen = Vec::new();
    let (end, tail) = log::read(data, |payload| {
        seen.push(payload.to_vec());
        Ok(())
    })?;
    Ok((seen, end, tail))
}

/// The payloads read are exactly the records `data` starts with.
fn assert_framed(data: &[u8], seen: &[Vec<u8>], end: usize) {
    let (framed, _) = log_of(seen);
    let header = log::FILE_HEADER_BYTES;
    assert!(data[header..end] == framed[header..], "what was read is not the file's leading records");
}

fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 1..8)
}

fn stored() -> impl Strategy<Value = Stored> {
    (prop::collection::vec(any::<u8>(), 0..40), 1..1000u64, 0..3i64).prop_map(|(value, revision, lease)| Stored {
        value: Bytes::from(value),
        create_revision: revision,
        mod_revision: revision,
        version: 1,
        lease,
    })
}

fn key() -> impl Strategy<Value = String> {
    "[a-z]{1,3}/[a-z0-9]{1,6}"
}

fn entry() -> impl Strategy<Value = Entry> {
    let mutation = prop_oneof![
        (key(), stored()).prop_map(|(key, stored)| Mutation::Put { key, stored }),
        key().prop_map(|key| Mutation::Delete { key }),
    ];
    let event = (any::<bool>(), key(), prop::collection::vec(any::<u8>(), 0..20)).prop_map(|(put, key, value)| Event {
        kind: if put { EventKind::Put } else { EventKind::Delete },
        key,
        value: Bytes::from(value),
        mod_revision: 4,
    });
    prop_oneof![
        (any::<u64>(), prop::collection::vec(mutation, 0..4))
            .prop_map(|(revision, mutations)| Entry::Revision { revision, mutations }),
        (any::<i64>(), any::<u64>()).prop_map(|(id, ttl_secs)| Entry::Lease { id, ttl_secs }),
        any::<i64>().prop_map(|id| Entry::EndLease { id }),
        any::<u64>().prop_map(|oldest| Entry::Compact { oldest }),
        (any::<u64>(), any::<u64>(), any::<i64>()).prop_map(|(revision, oldest, next_lease)| Entry::Checkpoint {
            revision,
            oldest,
            next_lease
        }),
        (key(), stored()).prop_map(|(key, stored)| Entry::Key { key, stored }),
        prop::collection::vec(event, 0..3).prop_map(|events| Entry::History { revision: 4, events }),
    ]
}

/// A checkpoint of a state built from `writes`, then the records of
/// `later` writes, as an installed checkpoint looks; with every record's
/// end.
fn checkpoint_then_records(writes: &[(String, Vec<u8>)], later: &[(String, Vec<u8>)]) -> (Vec<u8>, Vec<usize>) {
    let mut state = State::new(LIMITS);
    let mut revision = 0;
    let mut next = |key: &String, value: &Vec<u8>| {
        revision += 1;
        let stored = Stored {
            value: Bytes::from(value.clone()),
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            lease: 0,
        };
        Entry::Revision { revision, mutations: vec![Mutation::Put { key: key.clone(), stored }] }
    };
    for (key, value) in writes {
        state.apply(next(key, value), None).unwrap();
    }
    let mut data = log::file_header().to_vec();
    let mut ends = vec![data.len()];
    data.extend(writer::encode_checkpoint(&state));
    ends.push(data.len());
    for (key, value) in later {
        let mut payload = Vec::new();
        codec::encode(&next(key, value), &mut payload);
        log::frame(&payload, &mut data);
        ends.push(data.len());
    }
    (data, ends)
}

fn summary(state: &State) -> impl PartialEq + std::fmt::Debug {
    let history: Vec<u64> = state.history.iter().map(|past| past.revision).collect();
    (state.kv.clone(), state.leases.clone(), state.revision, state.oldest, history)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_or_read_garbage(bytes in prop::collection::vec(any::<u8>(), 0..600), header in any::<bool>()) {
        let data = if header { [&log::file_header()[..], &bytes].concat() } else { bytes };
        if let Ok((seen, end, _)) = read_all(&data) {
            assert_framed(&data, &seen, end);
        }
        let _ = codec::decode(&data);
        let _ = file::replay(&data, LIMITS);
    }

    #[test]
    fn records_with_garbage_among_them_never_read_as_data(
        payloads in payloads(),
        garbage in prop::collection::vec(any::<u8>(), 1..100),
        at in any::<prop::sample::Index>(),
    ) {
        let (data, ends) = log_of(&payloads);
        let at = ends[at.index(ends.len())];
        let hostile = [&data[..at], &garbage, &data[at..]].concat();
        if let Ok((seen, end, _)) = read_all(&hostile) {
            assert_framed(&hostile, &seen, end);
            // Nothing past the garbage: that would skip it silently.
            prop_assert!(end <= at + garbage.len());
        }
    }

    #[test]
    fn a_cut_anywhere_gives_back_the_records_before_it(
        payloads in payloads(),
        cut in any::<prop::sample::Index>(),
        zeros in 0..64usize,
        garbage in prop::collection::vec(1..=255u8, 0..16),
    ) {
        let (data, ends) = log_of(&payloads);
        let cut = log::FILE_HEADER_BYTES + cut.index(data.len() - log::FILE_HEADER_BYTES + 1);
        let whole = ends.iter().filter(|&&end| end <= cut).count() - 1;
        // The cut record's last bytes may be garbage, and preallocated zeros follow.
        let garbage = if cut < data.len() { &garbage[..garbage.len().min(data.len() - cut)] } else { &[][..] };
        let torn = [&data[..cut], garbage, &vec![0; zeros]].concat();
        let (seen, end, tail) = read_all(&torn).unwrap();
        prop_assert_eq!(&seen[..], &payloads[..whole]);
        prop_assert_eq!(end, ends[whole]);
        if cut == ends[whole] && garbage.is_empty() {
            prop_assert_eq!(tail, Tail::Clean);
        }
    }

    #[test]
    fn a_flipped_bit_gives_a_prefix_or_an_error(
        payloads in payloads(),
        at in any::<prop::sample::Index>(),
        bit in 0..8u8,
    ) {
        let (data, ends) = log_of(&payloads);
        let at = at.index(data.len());
        let mut damaged = data.clone();
        damaged[at] ^= 1 << bit;
        match read_all(&damaged) {
            Ok((seen, end, _)) => {
                prop_assert!(seen.len() <= payloads.len() && seen[..] == payloads[..seen.len()]);
                assert_framed(&damaged, &seen, end);
                // Only damage to the last record reads as a torn append (the
                // header's reserved bytes are not read at all).
                let reserved = 12..log::FILE_HEADER_BYTES;
                prop_assert!(
                    at >= ends[payloads.len() - 1] || reserved.contains(&at),
                    "damage at {} before the last record was read as a torn tail", at
                );
            }
            Err(Damage::Header(_)) => prop_assert!(at < log::FILE_HEADER_BYTES),
            Err(_) => {}
        }
    }

    #[test]
    fn entries_round_trip_and_cut_entries_never_decode_whole(entries in prop::collection::vec(entry(), 1..6)) {
        let mut payload = Vec::new();
        for entry in &entries {
            codec::encode(entry, &mut payload);
        }
        prop_assert_eq!(&codec::decode(&payload).unwrap(), &entries);
        for cut in 0..payload.len() {
            if let Ok(decoded) = codec::decode(&payload[..cut]) {
                prop_assert!(decoded.len() < entries.len());
                prop_assert_eq!(&decoded[..], &entries[..decoded.len()]);
            }
        }
    }

    #[test]
    fn a_checkpoint_cut_anywhere_rebuilds_the_state_before_the_cut(
        writes in prop::collection::vec((key(), prop::collection::vec(any::<u8>(), 0..64)), 0..40),
        later in prop::collection::vec((key(), prop::collection::vec(any::<u8>(), 0..64)), 0..10),
        cut in any::<prop::sample::Index>(),
    ) {
        let (data, ends) = checkpoint_then_records(&writes, &later);
        let (whole, whole_end, _) = file::replay(&data, LIMITS).unwrap();
        prop_assert_eq!(whole_end, data.len());
        prop_assert_eq!(whole.revision, (writes.len() + later.len()) as u64);
        let cut = log::FILE_HEADER_BYTES + cut.index(data.len() - log::FILE_HEADER_BYTES + 1);
        let before = *ends.iter().rfind(|&&end| end <= cut).unwrap();
        let (state, end, _) = file::replay(&data[..cut], LIMITS).unwrap();
        let (expected, _, _) = file::replay(&data[..before], LIMITS).unwrap();
        prop_assert_eq!(end, before);
        prop_assert_eq!(summary(&state), summary(&expected));
    }
}
