//! The log engine's file operations behind one seam: [`Disk`] (names in a
//! directory) and [`DiskFile`] (one open file). [`RealDisk`] is the
//! operating system; the power-loss test runs the same engine over a
//! simulated disk that keeps only what was synced (`sim_disk.rs`).
//!
//! The seam is as small as the engine's needs: open a file under an
//! exclusive lock, create one, remove, rename, sync a directory; read a
//! whole file, write at an offset, set its length, sync its data or all of
//! it. Every durability promise the engine makes rests on these calls, so
//! the simulated disk can check each of them.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

/// The mode of the store's files, set when they are created (not narrowed
/// afterwards, which would leave a window): only the server's user reads
/// them, since datastore passwords and tokens' hashes are in them.
pub(crate) const PRIVATE_FILE: u32 = 0o600;
/// The mode of the directory the store creates for its files.
pub(crate) const PRIVATE_DIR: u32 = 0o700;

/// How many times [`RealDisk::open_locked`] retries when a checkpoint of
/// another process replaced the file between opening and locking it.
const OPEN_ATTEMPTS: usize = 3;

/// A directory tree the engine keeps its files in.
pub(crate) trait Disk: Send + Sync + std::fmt::Debug + 'static {
    /// Creates `dir` and its parents (private when new).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Opens the file at `path`, creating it (private, empty) if missing,
    /// and takes its exclusive lock; the locked file is the one at `path`.
    fn open_locked(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>>;
    /// Creates the file at `path` empty (replacing any), private and locked.
    fn create_locked(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>>;
    /// Removes the name `path`; `NotFound` if there is none.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` over `to`, atomically.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the entries of directory `dir` (creations, removals, renames)
    /// durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// How far ahead the log is extended with zeros, so that most appends
    /// do not change its size and their `fdatasync` has no size change to
    /// journal (64 MiB on a real disk; the simulated one copies its files
    /// at every sync and asks for less).
    fn preallocation(&self) -> u64 {
        64 << 20
    }
}

/// One open file. Writes go through `&self` (positioned writes), so one
/// handle can be shared.
pub(crate) trait DiskFile: Send + Sync + std::fmt::Debug {
    /// The whole file, as reads see it now.
    fn read_all(&self) -> io::Result<Vec<u8>>;
    /// Writes all of `bytes` at `offset`, extending the file if needed.
    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()>;
    /// Cuts or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's bytes and length durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's bytes and all its metadata durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;
}

/// The directory of the file at `path` (`.` for a bare name).
pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The operating system's file system.
#[derive(Debug, Default)]
pub(crate) struct RealDisk;

impl Disk for RealDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // Created private; an existing directory is the operator's choice.
        std::fs::DirBuilder::new().recursive(true).mode(PRIVATE_DIR).create(dir)
    }

    fn open_locked(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        for _ in 0..OPEN_ATTEMPTS {
            let file =
                OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(PRIVATE_FILE).open(path)?;
            lock(&file)?;
            let locked = file.metadata()?;
            match std::fs::metadata(path) {
                Ok(current) if (current.dev(), current.ino()) == (locked.dev(), locked.ino()) => {
                    return Ok(Arc::new(RealFile(file)));
                }
                Ok(_) => continue,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            }
        }
        Err(io::Error::other("the file kept being replaced while opening it"))
    }

    fn create_locked(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        // Private from its first byte (it holds every secret in the store).
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).mode(PRIVATE_FILE).open(path)?;
        lock(&file)?;
        Ok(Arc::new(RealFile(file)))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
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

#[derive(Debug)]
struct RealFile(File);

impl DiskFile for RealFile {
    fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut data = Vec::new();
        (&self.0).read_to_end(&mut data)?;
        Ok(data)
    }

    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(bytes, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}
