//! The log file on disk: opened under an exclusive lock and replayed into a
//! [`State`], appended to with one `fdatasync` per batch, and replaced
//! whole by a checkpoint (temporary file, fsync, rename, directory fsync).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::codec;
use super::log::{self, Tail};
use super::state::{HistoryLimits, State};
use crate::StoreError;

/// The file is extended in steps of this much (zeros, read back as "no
/// record here"), so that most appends do not change its size and the
/// `fdatasync` after them has no size change to journal.
const PREALLOCATE_BYTES: u64 = 64 << 20;

/// How many times `open` retries when a checkpoint of another process
/// replaced the file between opening and locking it.
const OPEN_ATTEMPTS: usize = 3;

/// The open, locked log.
#[derive(Debug)]
pub(crate) struct LogFile {
    path: PathBuf,
    file: File,
    /// Where the next record goes.
    end: u64,
    /// The file's length: `end` plus the zeros preallocated after it.
    allocated: u64,
}

/// A checkpoint written and synced beside the log, not yet in its place.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    file: File,
    end: u64,
}

/// Opens (creating if needed) and locks the log at `path`, and replays it.
/// A torn last record is cut off; any other damage is
/// [`StoreError::Corrupt`].
pub(crate) fn open(path: &Path, limits: HistoryLimits) -> Result<(LogFile, State), StoreError> {
    let fail = |action: &'static str| move |source: io::Error| io_error(path, action, source);
    let file = open_locked(path)?;
    // A checkpoint that was not renamed into place before a crash: the log
    // still has everything, and only the lock holder may touch the file.
    match std::fs::remove_file(checkpoint_path(path)) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            return Err(fail("remove a stale checkpoint")(error));
        }
        _ => {}
    }
    let mut data = Vec::new();
    (&file).read_to_end(&mut data).map_err(fail("read"))?;

    let mut state = State::new(limits);
    if data.iter().all(|&byte| byte == 0) {
        // New, or created by a crash before its header was synced: nothing
        // in it was ever acknowledged.
        file.set_len(0).map_err(fail("create"))?;
        file.write_all_at(&log::file_header(), 0).map_err(fail("create"))?;
        file.sync_all().map_err(fail("create"))?;
        sync_dir(path).map_err(fail("create"))?;
        let end = log::FILE_HEADER_BYTES as u64;
        let log = LogFile { path: path.to_owned(), file, end, allocated: end };
        return Ok((log, state));
    }

    let (end, tail) = log::read(&data, |payload| {
        for entry in codec::decode(payload)? {
            state.apply(entry, None)?;
        }
        Ok(())
    })
    .map_err(|damage| StoreError::Corrupt { path: path.to_owned(), what: damage.to_string() })?;
    let (end, mut allocated) = (end as u64, data.len() as u64);
    if tail == Tail::Torn {
        file.set_len(end).map_err(fail("cut off a torn record"))?;
        file.sync_all().map_err(fail("cut off a torn record"))?;
        allocated = end;
    }
    let log = LogFile { path: path.to_owned(), file, end, allocated };
    Ok((log, state))
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
            let allocated = end.div_ceil(PREALLOCATE_BYTES) * PREALLOCATE_BYTES;
            self.file.set_len(allocated)?;
            self.allocated = allocated;
        }
        self.file.write_all_at(records, self.end)?;
        self.file.sync_data()?;
        self.end = end;
        Ok(())
    }

    /// Puts `checkpoint` in the log's place, after appending `tail` (the
    /// records appended to the log since the checkpoint was taken). Any
    /// failure once the rename is done leaves the log in an unknown state:
    /// the caller must stop writing.
    pub(crate) fn install(&mut self, mut checkpoint: Checkpoint, tail: &[u8]) -> io::Result<()> {
        checkpoint.file.write_all_at(tail, checkpoint.end)?;
        checkpoint.end += tail.len() as u64;
        checkpoint.file.sync_data()?;
        std::fs::rename(checkpoint_path(&self.path), &self.path)?;
        // The old file's lock goes with it; the new one is already locked.
        self.file = checkpoint.file;
        self.end = checkpoint.end;
        self.allocated = checkpoint.end;
        sync_dir(&self.path)
    }
}

/// Writes `records` (framed, starting with a checkpoint entry) as a new log
/// beside the one at `path` and syncs it, from any thread. The log itself is
/// untouched: on failure, carry on with it.
pub(crate) fn write_checkpoint(path: &Path, records: &[u8]) -> io::Result<Checkpoint> {
    let temporary = checkpoint_path(path);
    let result = (|| {
        // Private from its first byte (it holds every secret in the store).
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(PRIVATE_FILE)
            .open(&temporary)?;
        // Locked before it becomes the log, so it is never unlocked there.
        lock(&file)?;
        let header = log::file_header();
        file.write_all_at(&header, 0)?;
        file.write_all_at(records, header.len() as u64)?;
        file.sync_all()?;
        Ok(Checkpoint { file, end: (header.len() + records.len()) as u64 })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// The mode of the store's files, set when they are created (not narrowed
/// afterwards, which would leave a window): only the server's user reads
/// them, since datastore passwords and tokens' hashes are in them.
pub(crate) const PRIVATE_FILE: u32 = 0o600;
/// The mode of the directory the store creates for its files.
pub(crate) const PRIVATE_DIR: u32 = 0o700;

/// Where a checkpoint is written before it replaces the log.
pub(crate) fn checkpoint_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".checkpoint");
    PathBuf::from(name)
}

/// Opens the file at `path` and takes its exclusive lock, making sure the
/// locked file is still the one at `path` (a checkpoint of the process that
/// held the lock may have replaced it meanwhile).
fn open_locked(path: &Path) -> Result<File, StoreError> {
    let fail = |source| io_error(path, "open", source);
    for _ in 0..OPEN_ATTEMPTS {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(PRIVATE_FILE)
            .open(path)
            .map_err(fail)?;
        lock(&file).map_err(fail)?;
        let locked = file.metadata().map_err(fail)?;
        match std::fs::metadata(path) {
            Ok(current) if (current.dev(), current.ino()) == (locked.dev(), locked.ino()) => {
                return Ok(file);
            }
            Ok(_) => continue,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(fail(error)),
        }
    }
    Err(fail(io::Error::other("the file kept being replaced while opening it")))
}

fn lock(file: &File) -> io::Result<()> {
    file.try_lock().map_err(|error| match error {
        TryLockError::WouldBlock => io::Error::new(
            io::ErrorKind::WouldBlock,
            "another store has it open (a running gantry server?): stop it first",
        ),
        TryLockError::Error(error) => error,
    })
}

/// Makes the file's directory entry durable (after creating or renaming).
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

pub(crate) fn io_error(path: &Path, action: &'static str, source: io::Error) -> StoreError {
    StoreError::Embedded { path: path.to_owned(), action, source: std::sync::Arc::new(source) }
}
