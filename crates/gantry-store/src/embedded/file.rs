//! The log file on disk: opened under an exclusive lock and replayed into a
//! [`State`], appended to with one `fdatasync` per batch, and replaced
//! whole by a checkpoint (temporary file, fsync, rename, directory fsync).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::codec;
use super::disk::{self, Disk, DiskFile};
use super::log::{self, Tail};
use super::state::{HistoryLimits, State};
use crate::StoreError;

/// The open, locked log.
#[derive(Debug)]
pub(crate) struct LogFile {
    disk: Arc<dyn Disk>,
    path: PathBuf,
    file: Arc<dyn DiskFile>,
    /// Where the next record goes.
    end: u64,
    /// The file's length: `end` plus the zeros preallocated after it.
    allocated: u64,
}

/// A checkpoint written and synced beside the log, not yet in its place.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    file: Arc<dyn DiskFile>,
    end: u64,
}

/// Opens (creating if needed) and locks the log at `path`, and replays it.
/// A torn last record is cut off; any other damage is
/// [`StoreError::Corrupt`].
pub(crate) fn open(disk: Arc<dyn Disk>, path: &Path, limits: HistoryLimits) -> Result<(LogFile, State), StoreError> {
    let fail = |action: &'static str| move |source: io::Error| io_error(path, action, source);
    let file = disk.open_locked(path).map_err(fail("open"))?;
    // A checkpoint that was not renamed into place before a crash: the log
    // still has everything, and only the lock holder may touch the file.
    match disk.remove(&checkpoint_path(path)) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            return Err(fail("remove a stale checkpoint")(error));
        }
        _ => {}
    }
    let data = file.read_all().map_err(fail("read"))?;

    let unwritten = |bytes: &[u8]| bytes.iter().all(|&byte| byte == 0);
    let records = data.get(log::FILE_HEADER_BYTES..).unwrap_or_default();
    if unwritten(&data) || (unwritten(records) && log::check_header(&data).is_err()) {
        // New, or created by a crash before its header was synced (zeros,
        // or a torn header and nothing after it): nothing in it was ever
        // acknowledged.
        file.set_len(0).map_err(fail("create"))?;
        file.write_at(&log::file_header(), 0).map_err(fail("create"))?;
        file.sync_all().map_err(fail("create"))?;
        disk.sync_dir(disk::parent(path)).map_err(fail("create"))?;
        let end = log::FILE_HEADER_BYTES as u64;
        let log = LogFile { disk, path: path.to_owned(), file, end, allocated: end };
        return Ok((log, State::new(limits)));
    }

    let (state, end, tail) = replay(&data, limits)
        .map_err(|damage| StoreError::Corrupt { path: path.to_owned(), what: damage.to_string() })?;
    let (end, mut allocated) = (end as u64, data.len() as u64);
    if tail == Tail::Torn {
        file.set_len(end).map_err(fail("cut off a torn record"))?;
        file.sync_all().map_err(fail("cut off a torn record"))?;
        allocated = end;
    }
    let log = LogFile { disk, path: path.to_owned(), file, end, allocated };
    Ok((log, state))
}

/// Rebuilds the state from a whole log file's bytes (a log, or a
/// checkpoint and the records after it): the state, where the next record
/// goes, and whether a torn record lies there.
pub(crate) fn replay(data: &[u8], limits: HistoryLimits) -> Result<(State, usize, Tail), log::Damage> {
    let mut state = State::new(limits);
    let (end, tail) = log::read(data, |payload| {
        for entry in codec::decode(payload)? {
            state.apply(entry, None)?;
        }
        Ok(())
    })?;
    Ok((state, end, tail))
}

impl LogFile {
    /// How many bytes of records the log holds.
    pub(crate) fn len(&self) -> u64 {
        self.end
    }

    /// Appends framed records and waits until they are on disk.
    pub(crate) fn append(&mut self, records: &[u8]) -> io::Result<()> {
        let end = self.end + records.len() as u64;
        if end > self.allocated {
            let step = self.disk.preallocation();
            let allocated = end.div_ceil(step) * step;
            self.file.set_len(allocated)?;
            self.allocated = allocated;
        }
        self.file.write_at(records, self.end)?;
        self.file.sync_data()?;
        self.end = end;
        Ok(())
    }

    /// Puts `checkpoint` in the log's place, after appending `tail` (the
    /// records appended to the log since the checkpoint was taken). Any
    /// failure once the rename is done leaves the log in an unknown state:
    /// the caller must stop writing.
    pub(crate) fn install(&mut self, mut checkpoint: Checkpoint, tail: &[u8]) -> io::Result<()> {
        checkpoint.file.write_at(tail, checkpoint.end)?;
        checkpoint.end += tail.len() as u64;
        checkpoint.file.sync_data()?;
        self.disk.rename(&checkpoint_path(&self.path), &self.path)?;
        // The old file's lock goes with it; the new one is already locked.
        self.file = checkpoint.file;
        self.end = checkpoint.end;
        self.allocated = checkpoint.end;
        self.disk.sync_dir(disk::parent(&self.path))
    }

    /// Removes a checkpoint left beside the log (one that was being written
    /// when the store stopped).
    pub(crate) fn remove_checkpoint(&self) {
        let _ = self.disk.remove(&checkpoint_path(&self.path));
    }

    /// The disk the log is on, for [`write_checkpoint`].
    pub(crate) fn disk(&self) -> Arc<dyn Disk> {
        self.disk.clone()
    }
}

/// Writes `records` (framed, starting with a checkpoint entry) as a new log
/// beside the one at `path` and syncs it, from any thread. The log itself is
/// untouched: on failure, carry on with it.
pub(crate) fn write_checkpoint(disk: &dyn Disk, path: &Path, records: &[u8]) -> io::Result<Checkpoint> {
    let temporary = checkpoint_path(path);
    let result = (|| {
        // Locked before it becomes the log, so it is never unlocked there.
        let file = disk.create_locked(&temporary)?;
        let header = log::file_header();
        file.write_at(&header, 0)?;
        file.write_at(records, header.len() as u64)?;
        file.sync_all()?;
        Ok(Checkpoint { file, end: (header.len() + records.len()) as u64 })
    })();
    if result.is_err() {
        let _ = disk.remove(&temporary);
    }
    result
}

/// Where a checkpoint is written before it replaces the log.
pub(crate) fn checkpoint_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".checkpoint");
    PathBuf::from(name)
}

pub(crate) fn io_error(path: &Path, action: &'static str, source: io::Error) -> StoreError {
    StoreError::Embedded { path: path.to_owned(), action, source: std::sync::Arc::new(source) }
}
