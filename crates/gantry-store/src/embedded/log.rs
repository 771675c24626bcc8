//! The embedded engine's file: a fixed header, then framed records, each one
//! checksummed, appended and never rewritten in place.
//!
//! ```text
//! file   := header record*  (then zeros, where the file was preallocated)
//! header := "GANTRYLG" version:u32le reserved:u32le        (16 bytes)
//! record := len:u32le payload_crc:u32le header_crc:u32le payload[len]
//! ```
//!
//! `payload_crc` is the CRC-32 of the payload and `header_crc` the CRC-32 of
//! the first eight bytes of the record header. The header's own checksum lets
//! [`read`] test any offset cheaply for "a record starts here", which is how
//! it tells a torn last record (a crash during an append: never
//! acknowledged, cut off) from damage in the middle (a typed error, never
//! silently dropped data). What payloads contain is [`super::codec`]'s
//! business.

use std::ops::Range;

/// The first bytes of every log file.
const MAGIC: &[u8; 8] = b"GANTRYLG";
/// Bumped on any incompatible change of the record or entry layout.
const FORMAT_VERSION: u32 = 1;
/// Length of the file header.
pub(crate) const FILE_HEADER_BYTES: usize = 16;
/// Length of a record header.
const RECORD_HEADER_BYTES: usize = 12;
/// Largest payload a record may have. The writer's batches stay well below
/// (one batch is at most about 64 MiB plus one request of at most
/// 128 × 1 MiB), so a larger length can only be damage.
pub(crate) const MAX_PAYLOAD_BYTES: usize = 256 << 20;

/// The header a new log file starts with.
pub(crate) fn file_header() -> [u8; FILE_HEADER_BYTES] {
    let mut header = [0; FILE_HEADER_BYTES];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header
}

/// Appends `payload` to `out` as one record.
pub(crate) fn frame(payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(payload.len() <= MAX_PAYLOAD_BYTES);
    let mut header = [0; RECORD_HEADER_BYTES];
    header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[4..8].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let header_crc = crc32fast::hash(&header[..8]);
    header[8..].copy_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// What [`read`] found after the last good record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    /// The records end at the end of the file or where the preallocated
    /// zeros start.
    Clean,
    /// The last record was cut short or garbled by a crash during its
    /// append; it was never acknowledged and must be cut off.
    Torn,
}

/// Why a log cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Damage {
    /// Not a Gantry log, or a format this version does not know.
    Header(String),
    /// A record that fails its checksum, with intact records after it.
    Record { offset: usize },
    /// A record that checks out but whose content the caller refused.
    Content { offset: usize, reason: String },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Header(reason) => write!(f, "file header: {reason}"),
            Damage::Record { offset } => {
                write!(f, "record at byte {offset} fails its checksum but later records are intact")
            }
            Damage::Content { offset, reason } => write!(f, "record at byte {offset}: {reason}"),
        }
    }
}

/// Reads every record of `data` (a whole log file) in order, handing each
/// payload to `apply`. Returns the logical end of the log (where the next
/// record goes) and whether a torn last record lies beyond it.
pub(crate) fn read(data: &[u8], mut apply: impl FnMut(&[u8]) -> Result<(), String>) -> Result<(usize, Tail), Damage> {
    check_header(data)?;
    let mut offset = FILE_HEADER_BYTES;
    while offset < data.len() {
        let Some(payload) = record_at(data, offset) else {
            return classify_bad_record(data, offset).map(|tail| (offset, tail));
        };
        apply(&data[payload.clone()]).map_err(|reason| Damage::Content { offset, reason })?;
        offset = payload.end;
    }
    Ok((offset, Tail::Clean))
}

pub(crate) fn check_header(data: &[u8]) -> Result<(), Damage> {
    let header =
        data.get(..FILE_HEADER_BYTES).ok_or_else(|| Damage::Header(format!("only {} bytes long", data.len())))?;
    if &header[..8] != MAGIC {
        return Err(Damage::Header("not a Gantry store log".into()));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(Damage::Header(format!("format version {version}, this Gantry reads version {FORMAT_VERSION}")));
    }
    Ok(())
}

/// The payload of the record at `offset`, if a whole, intact one starts
/// there.
fn record_at(data: &[u8], offset: usize) -> Option<Range<usize>> {
    let header = data.get(offset..offset.checked_add(RECORD_HEADER_BYTES)?)?;
    let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
    if crc32fast::hash(&header[..8]) != word(8) {
        return None;
    }
    let len = word(0) as usize;
    if len > MAX_PAYLOAD_BYTES {
        return None;
    }
    let start = offset + RECORD_HEADER_BYTES;
    let payload = start..start.checked_add(len)?;
    let bytes = data.get(payload.clone())?;
    (crc32fast::hash(bytes) == word(4)).then_some(payload)
}

/// Decides what a record that does not check out at `offset` is.
///
/// The writer has at most one record in flight (it appends, syncs, and only
/// then appends again), and everything after the logical end is zeros (the
/// file is extended with zeros and a torn tail is cut off before the next
/// append). So a crash can only garble the last record: if nothing but
/// zeros follows, the log simply ends here; if the non-zero bytes left
/// could be one record and none of them starts an intact record, it is a
/// torn append; anything else is damage.
fn classify_bad_record(data: &[u8], offset: usize) -> Result<Tail, Damage> {
    let written_end = data.iter().rposition(|&byte| byte != 0).map_or(0, |i| i + 1);
    if written_end <= offset {
        return Ok(Tail::Clean);
    }
    if written_end - offset > RECORD_HEADER_BYTES + MAX_PAYLOAD_BYTES {
        return Err(Damage::Record { offset });
    }
    let intact_later = (offset + 1..written_end).any(|candidate| record_at(data, candidate).is_some());
    if intact_later {
        return Err(Damage::Record { offset });
    }
    Ok(Tail::Torn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(payloads: &[&[u8]]) -> Vec<u8> {
        let mut data = file_header().to_vec();
        for payload in payloads {
            frame(payload, &mut data);
        }
        data
    }

    fn payloads(data: &[u8]) -> Result<(Vec<Vec<u8>>, usize, Tail), Damage> {
        let mut seen = Vec::new();
        let (end, tail) = read(data, |payload| {
            seen.push(payload.to_vec());
            Ok(())
        })?;
        Ok((seen, end, tail))
    }

    #[test]
    fn records_round_trip_and_zeros_end_the_log() {
        let mut data = log(&[b"one", b"two", b""]);
        let end = data.len();
        let (seen, read_end, tail) = payloads(&data).unwrap();
        assert_eq!(seen, [&b"one"[..], b"two", b""]);
        assert_eq!((read_end, tail), (end, Tail::Clean));
        // Preallocated space is zeros: the log still ends at the same place.
        data.resize(end + 4096, 0);
        let (seen, read_end, tail) = payloads(&data).unwrap();
        assert_eq!((seen.len(), read_end, tail), (3, end, Tail::Clean));
    }

    #[test]
    fn a_torn_last_record_is_reported_where_it_starts() {
        let data = log(&[b"one", b"two-two-two"]);
        let second = FILE_HEADER_BYTES + RECORD_HEADER_BYTES + 3;
        // Cut anywhere inside the last record, or garble its payload, or
        // leave zeros where its pages never reached the disk.
        for cut in second + 1..data.len() {
            let (seen, end, tail) = payloads(&data[..cut]).unwrap();
            assert_eq!((seen.len(), end, tail), (1, second, Tail::Torn), "cut {cut}");
        }
        let mut garbled = data.clone();
        *garbled.last_mut().unwrap() ^= 0xff;
        assert_eq!(payloads(&garbled).unwrap().2, Tail::Torn);
        let mut zeroed = data.clone();
        zeroed[second + RECORD_HEADER_BYTES..].fill(0);
        zeroed.resize(zeroed.len() + 100, 0);
        assert_eq!(payloads(&zeroed).unwrap().1, second);
    }

    #[test]
    fn damage_before_intact_records_is_an_error() {
        let data = log(&[b"one", b"two", b"three"]);
        let second = FILE_HEADER_BYTES + RECORD_HEADER_BYTES + 3;
        for flip in [second, second + 5, second + RECORD_HEADER_BYTES + 1] {
            let mut damaged = data.clone();
            damaged[flip] ^= 0x01;
            assert_eq!(payloads(&damaged).unwrap_err(), Damage::Record { offset: second }, "flipped byte {flip}");
        }
    }

    #[test]
    fn foreign_files_and_refused_content_are_errors() {
        assert!(matches!(payloads(b"short"), Err(Damage::Header(_))));
        assert!(matches!(
            payloads(&[b'x'; 64]),
            Err(Damage::Header(reason)) if reason.contains("not a Gantry")
        ));
        let mut future = log(&[]);
        future[8] = 9;
        assert!(matches!(payloads(&future), Err(Damage::Header(reason)) if reason.contains("version 9")));
        let error = read(&log(&[b"x"]), |_| Err("nonsense".into())).unwrap_err();
        assert_eq!(error.to_string(), "record at byte 16: nonsense");
    }
}
